"""The motion LLM: a Hugging Face Gemma2 causal LM whose vocabulary holds the VQ-VAE codes.

Spec: ``sft-and-inference.md`` sections 1.2 (vocabulary), 2.1-2.3 (model, LoRA, what is trained)
and ``api-contract.md`` ("The motion LLM checkpoint"). A motion LLM checkpoint is a plain Hugging
Face folder (``AutoModelForCausalLM``/``AutoTokenizer`` load it; safetensors; tied embeddings;
``config.vocab_size == len(tokenizer)``) plus ``motion_llm.json``, which names the base text
vocabulary size ``n_text``, the codebook size ``nb_code`` and the VQ-VAE checkpoint (path and
sha256) whose codes the model speaks.

* **Vocabulary.** :func:`add_motion_tokens` appends ``<Motion>``, ``</Motion>``, ``<Motion_0>`` ...
  ``<Motion_{K-1}>`` in that order as ordinary (non-special) added tokens, so ``<Motion_k>`` has id
  ``n_text + 2 + k`` and ``decode(ids, skip_special_tokens=True)`` keeps every motion token. With
  the real ``gemma-2`` tokenizer ``n_text`` must be 256000. Padding is on the left (batched
  generation relies on it; training pads on the right in its own collator).
* **Codes <-> ids.** :class:`MotionVocab` converts through ``data.motion_tokens`` (the one
  implementation of the rendering and parsing rules).
* **Loading.** :func:`load_motion_llm` loads any Gemma2 folder: a plain base (``gemma-2-2b-it`` or
  the tiny stand-in of ``prepare/build_tiny_llm.py``) gets the motion tokens and resized, tied
  embeddings; a motion LLM folder is checked against the configured codebook size and VQ-VAE, and
  refused (naming both) when they differ. Attention and dtype follow the device
  (:func:`pick_attention`, :func:`pick_dtype`).
* **LoRA.** :func:`apply_lora` wraps the model with one ``peft`` adapter named ``shared`` (spec
  section 2.2); :func:`merge_lora` folds it into the weights (``W <- W + B A alpha / r``) and returns
  the plain model, which is how stage 1 starts full tuning from Motion-Agent's adapter.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from data.motion_tokens import (
    DEFAULT_NB_CODE,
    MOTION_END,
    MOTION_START,
    motion_ids,
    motion_token_strings,
    parse_motion_ids,
)
from data.run_folder import OutputFolder, file_sha256

logger = logging.getLogger(__name__)

META_FILE = "motion_llm.json"
"""File beside the weights describing the motion vocabulary and its VQ-VAE."""
META_FORMAT = "motion-llm/1"
GEMMA2_N_TEXT = 256000
"""Size of the ``gemma-2-2b-it`` tokenizer; motion token ids start here with the real model."""
ADAPTER_NAME = "shared"
"""The one LoRA adapter of the reference (spec section 2.2)."""
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Modules the reference's LoRA wraps in every decoder layer."""


class MotionLLMError(ValueError):
    """A motion LLM folder or tokenizer does not fit what is configured; the message names both sides."""


# --------------------------------------------------------------------------------------------------
# Vocabulary


@dataclass(frozen=True)
class MotionVocab:
    """Where the motion tokens sit in a vocabulary: ``<Motion>`` = ``n_text``, ``<Motion_k>`` = ``n_text + 2 + k``."""

    n_text: int
    """Size of the base (text) tokenizer."""
    nb_code: int = DEFAULT_NB_CODE
    """Codebook size K of the VQ-VAE."""

    @property
    def start_id(self) -> int:
        """Id of ``<Motion>``."""
        return self.n_text

    @property
    def end_id(self) -> int:
        """Id of ``</Motion>``."""
        return self.n_text + 1

    @property
    def size(self) -> int:
        """Full vocabulary size ``n_text + 2 + nb_code`` (256514 with gemma-2 and K = 512)."""
        return self.n_text + 2 + self.nb_code

    def is_motion_id(self, token_id: int) -> bool:
        """True for the tags and the code tokens (the reference's "motion tokens": ids >= n_text)."""
        return self.n_text <= token_id < self.size

    def span_ids(self, codes: Sequence[int]) -> list[int]:
        """Ids of ``<Motion><Motion_c1>...</Motion>`` for codes ``(N,)``."""
        return motion_ids(codes, self.n_text, self.nb_code)

    def codes_to_ids(self, codes: Sequence[int]) -> list[int]:
        """Ids ``n_text + 2 + c`` of the code tokens alone (no tags)."""
        return self.span_ids(codes)[1:-1]

    def ids_to_codes(self, ids: Sequence[int]) -> list[int]:
        """Codes of code-token ids, with or without the surrounding tags.

        Raises:
            MotionLLMError: an id is neither a tag nor a code token.
        """
        ids = [int(i) for i in ids]
        if not ids or ids[0] != self.start_id:
            ids = [self.start_id, *ids, self.end_id]
        parse = parse_motion_ids(ids, self.n_text, self.nb_code, select="first")
        if parse.dropped_tokens or len(parse.spans) != 1:
            bad = [i for i in ids if not self.is_motion_id(i)]
            raise MotionLLMError(f"ids {bad[:5]} are not motion code tokens (n_text={self.n_text})")
        return parse.codes


def _token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int | None]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def check_motion_tokenizer(tokenizer: Any, vocab: MotionVocab, where: str = "tokenizer") -> None:
    """The tokenizer holds the motion tokens at the spec's ids, non-special, and pads on the left.

    Raises:
        MotionLLMError: naming the first token at the wrong id, a special motion token or the padding side.
    """
    strings = motion_token_strings(vocab.nb_code)
    if len(tokenizer) != vocab.size:
        raise MotionLLMError(
            f"{where}: {len(tokenizer)} tokens, expected n_text + 2 + nb_code = {vocab.n_text} + 2 + "
            f"{vocab.nb_code} = {vocab.size} (another codebook size or base tokenizer?)"
        )
    for k, (tok, got) in enumerate(zip(strings, _token_ids(tokenizer, strings), strict=True)):
        if got != vocab.n_text + k:
            raise MotionLLMError(
                f"{where}: {tok} has id {got}, expected {vocab.n_text + k} (spec section 1.2)"
            )
    special = set(tokenizer.all_special_tokens)
    if MOTION_START in special or MOTION_END in special or strings[2] in special:
        raise MotionLLMError(f"{where}: motion tokens must be ordinary added tokens, not special ones")
    if tokenizer.padding_side != "left":
        raise MotionLLMError(
            f"{where}: padding_side={tokenizer.padding_side!r}; the motion LLM pads on the left"
        )


def add_motion_tokens(
    tokenizer: Any, nb_code: int = DEFAULT_NB_CODE, expected_n_text: int | None = None
) -> MotionVocab:
    """Append the ``nb_code + 2`` motion tokens to a base tokenizer (spec section 1.2) and pad on the left.

    Args:
        tokenizer: a Hugging Face tokenizer without motion tokens.
        nb_code: codebook size K.
        expected_n_text: required base size; ``None`` requires 256000 for a tokenizer loaded from a
            ``gemma-2`` path and accepts any size otherwise.

    Raises:
        MotionLLMError: the tokenizer already holds motion tokens, or its size is not the expected one.
    """
    if tokenizer.convert_tokens_to_ids(MOTION_START) not in (None, tokenizer.unk_token_id):
        raise MotionLLMError(
            f"tokenizer {tokenizer.name_or_path!r} already holds {MOTION_START}; load it as a motion LLM"
        )
    n_text = len(tokenizer)
    if expected_n_text is None and "gemma-2" in str(tokenizer.name_or_path).lower():
        expected_n_text = GEMMA2_N_TEXT
    if expected_n_text is not None and n_text != expected_n_text:
        raise MotionLLMError(
            f"tokenizer {tokenizer.name_or_path!r} has {n_text} tokens, expected n_text={expected_n_text}: "
            "released checkpoints need the gemma-2-2b-it tokenizer (motion ids start at 256000)"
        )
    added = tokenizer.add_tokens(motion_token_strings(nb_code), special_tokens=False)
    if added != nb_code + 2:
        raise MotionLLMError(
            f"tokenizer added {added} of the {nb_code + 2} motion tokens (some already exist?)"
        )
    tokenizer.padding_side = "left"
    vocab = MotionVocab(n_text, nb_code)
    check_motion_tokenizer(tokenizer, vocab, where=f"tokenizer {tokenizer.name_or_path!r}")
    return vocab


# --------------------------------------------------------------------------------------------------
# The VQ-VAE a model's codes belong to, and motion_llm.json


@dataclass(frozen=True)
class VQIdentity:
    """A VQ-VAE checkpoint by path and content hash."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> VQIdentity:
        """Hash the checkpoint at ``path``.

        Raises:
            FileNotFoundError: naming the path.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"VQ-VAE checkpoint not found: {p} (set vq_checkpoint)")
        return cls(str(p), file_sha256(p))


@dataclass
class MotionLLMMeta:
    """Contents of ``motion_llm.json``."""

    n_text: int
    """Base text vocabulary size (motion token ids start here)."""
    nb_code: int
    """Codebook size K."""
    vq_checkpoint: str = ""
    """Path of the VQ-VAE checkpoint the codes belong to (as given when the model was built)."""
    vq_sha256: str = ""
    """sha256 of that checkpoint; empty = unknown (an imported model whose VQ-VAE was not given)."""
    base_model: str = ""
    """The folder the weights started from."""
    format: str = META_FORMAT
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (stage, source checkpoint, ...)."""

    @property
    def vocab(self) -> MotionVocab:
        return MotionVocab(self.n_text, self.nb_code)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / META_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> MotionLLMMeta:
        path = Path(folder) / META_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise MotionLLMError(f"{path}: cannot read the motion LLM description: {err}") from err

    def check(self, where: str, nb_code: int, vq: VQIdentity | None) -> None:
        """Refuse a model whose codebook size or VQ-VAE differs from the configured one.

        Raises:
            MotionLLMError: naming the model's and the configured value.
        """
        if self.nb_code != nb_code:
            raise MotionLLMError(
                f"{where}: the model speaks nb_code={self.nb_code} codes, the config says nb_code={nb_code}; "
                "use the VQ-VAE the model was trained with, or start from a base model"
            )
        if vq is None:
            return
        if not self.vq_sha256:
            logger.warning("%s: records no VQ-VAE hash; assuming %s is its VQ-VAE", where, vq.path)
        elif self.vq_sha256 != vq.sha256:
            raise MotionLLMError(
                f"{where}: the model's codes belong to the VQ-VAE {self.vq_checkpoint} (sha256 "
                f"{self.vq_sha256[:16]}...), the config names {vq.path} (sha256 {vq.sha256[:16]}...); "
                "its motion tokens would mean other motions. Configure that VQ-VAE or start from a base model"
            )


def is_motion_llm(folder: str | Path) -> bool:
    """The folder holds a motion LLM (``motion_llm.json``), not a plain base model."""
    return (Path(folder) / META_FILE).is_file()


# --------------------------------------------------------------------------------------------------
# Device-dependent choices


def flash_attention_installed() -> bool:
    """``flash_attn`` is importable (a GPU extra in requirements-gpu.txt)."""
    return importlib.util.find_spec("flash_attn") is not None


FUSED_ATTENTION = "fused_nocap"
"""A registered ``attn_implementation``: torch's fused ``scaled_dot_product_attention`` for Gemma-2
configs without attention soft-capping (``attn_logit_softcapping: null``, the tiny models), where
transformers refuses ``sdpa`` for the whole Gemma-2 class. Same numbers as ``eager`` to float
rounding; 1.4x faster training at 650 tokens on one CPU thread, more on GPUs."""


def _fused_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA with the masks transformers builds for ``sdpa`` (causal, padding, sliding window)."""
    if softcap is not None:
        raise MotionLLMError(
            f"attn_implementation={FUSED_ATTENTION} cannot apply attn_logit_softcapping={softcap}: "
            "use attn_implementation=eager (or flash_attention_2 on a GPU), or a config without soft-capping"
        )
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)  # fmt: skip


AttentionInterface.register(FUSED_ATTENTION, _fused_attention)
AttentionMaskInterface.register(FUSED_ATTENTION, sdpa_mask)


def pick_attention(device: torch.device | str, requested: str = "auto", config: Any = None) -> str:
    """Attention implementation for ``auto``: ``flash_attention_2`` on CUDA when installed; otherwise
    :data:`FUSED_ATTENTION` when ``config`` has no attention soft-capping, else ``eager`` (the only
    other implementation transformers runs Gemma-2's soft-capping with).

    ``requested`` other than ``auto`` is returned as is (``flash_attention_2`` without the package
    raises here, naming the fix).
    """
    dev = torch.device(device)
    if requested != "auto":
        if requested == "flash_attention_2" and not flash_attention_installed():
            raise MotionLLMError(
                "attn_implementation=flash_attention_2 but flash_attn is not installed "
                "(pip install -r requirements-gpu.txt), or use attn_implementation=auto"
            )
        return requested
    if dev.type == "cuda" and flash_attention_installed():
        return "flash_attention_2"
    if config is not None and getattr(config, "attn_logit_softcapping", 50.0) is None:
        return FUSED_ATTENTION
    return "eager"


def pick_dtype(device: torch.device | str, requested: str = "auto", training: bool = False) -> torch.dtype:
    """Weight dtype: float32 for training (fp32 master weights; bf16 comes from autocast) and on CPU, bf16 for GPU inference."""
    if requested != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
        except KeyError:
            raise MotionLLMError(f"dtype={requested!r}: use auto, float32, bfloat16 or float16") from None
    if training or torch.device(device).type == "cpu":
        return torch.float32
    return torch.bfloat16


# --------------------------------------------------------------------------------------------------
# Loading and saving


def embeddings_tied(model: PreTrainedModel) -> bool:
    """Input embedding and LM head share one matrix."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def resize_tied(model: PreTrainedModel, new_size: int) -> None:
    """Resize the embedding to ``new_size`` rows (the reference's mean resizing, seeded) and check it stays tied.

    Raises:
        MotionLLMError: the model's embeddings are not tied after resizing.
    """
    # Mean resizing samples the new rows; a fixed seed makes them a function of the old matrix only,
    # so every load of one base gives the same start (whatever the global RNG state).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.resize_token_embeddings(new_size)
    model.tie_weights()
    if not embeddings_tied(model):
        raise MotionLLMError(
            "input embedding and lm_head are not tied after resizing (expected tie_word_embeddings)"
        )


@dataclass
class LoadedMotionLLM:
    """A model with its tokenizer, vocabulary and description."""

    model: PreTrainedModel
    tokenizer: Any
    meta: MotionLLMMeta

    @property
    def vocab(self) -> MotionVocab:
        return self.meta.vocab


def load_motion_llm(
    path: str | Path,
    *,
    nb_code: int = DEFAULT_NB_CODE,
    vq: VQIdentity | None = None,
    device: torch.device | str = "cpu",
    attn_implementation: str = "auto",
    dtype: str = "auto",
    training: bool = False,
    expected_n_text: int | None = None,
) -> LoadedMotionLLM:
    """Load a Gemma2 folder as a motion LLM.

    A plain base folder (no ``motion_llm.json``) gets the motion tokens (:func:`add_motion_tokens`)
    and a resized, tied embedding; a motion LLM folder is checked: same ``nb_code`` and (when ``vq``
    is given) the same VQ-VAE hash, tokenizer ids as the spec says, ``config.vocab_size ==
    len(tokenizer)``.

    Args:
        path: the folder.
        nb_code: configured codebook size.
        vq: configured VQ-VAE (recorded for a base, checked for a motion LLM).
        device: where the model goes; also picks attention and dtype.
        attn_implementation: ``auto`` or a transformers name.
        dtype: ``auto`` (:func:`pick_dtype`) or ``float32``/``bfloat16``/``float16``.
        training: weights for training (float32 master weights).
        expected_n_text: required base tokenizer size (see :func:`add_motion_tokens`).

    Raises:
        FileNotFoundError: the folder or its weights are missing.
        MotionLLMError: a vocabulary, codebook or VQ-VAE mismatch (both sides named).
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no model at {folder}: expected a Hugging Face folder with config.json (build the tiny base "
            "with python -m prepare.build_tiny_llm, import a .pth with python -m prepare.convert_checkpoint, "
            "or point model_path at gemma-2-2b-it)"
        )
    dev = torch.device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    attn = pick_attention(dev, attn_implementation, AutoConfig.from_pretrained(folder))
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=pick_dtype(dev, dtype, training), attn_implementation=attn
    )
    if model.config.model_type != "gemma2":
        logger.warning("%s: model_type %s, not gemma2; continuing", folder, model.config.model_type)
    if is_motion_llm(folder):
        meta = MotionLLMMeta.load(folder)
        meta.check(str(folder), nb_code, vq)
        tokenizer.padding_side = "left"
        check_motion_tokenizer(tokenizer, meta.vocab, where=f"{folder} tokenizer")
        if expected_n_text is not None and meta.n_text != expected_n_text:
            raise MotionLLMError(f"{folder}: n_text={meta.n_text}, the config expects {expected_n_text}")
        if model.config.vocab_size != len(tokenizer):
            raise MotionLLMError(
                f"{folder}: config.vocab_size={model.config.vocab_size} but the tokenizer has {len(tokenizer)} "
                "tokens; the folder is inconsistent"
            )
    else:
        vocab = add_motion_tokens(tokenizer, nb_code, expected_n_text)
        resize_tied(model, vocab.size)
        meta = MotionLLMMeta(
            n_text=vocab.n_text,
            nb_code=nb_code,
            vq_checkpoint=vq.path if vq else "",
            vq_sha256=vq.sha256 if vq else "",
            base_model=str(folder),
        )
    if not embeddings_tied(model):
        raise MotionLLMError(
            f"{folder}: input embedding and lm_head are not tied (tie_word_embeddings=false?)"
        )
    logger.info(
        "loaded %s: %.1fM parameters, vocab %d (n_text %d, nb_code %d), %s, %s attention",
        folder, model.num_parameters() / 1e6, meta.vocab.size, meta.n_text, nb_code, model.dtype, attn,
    )  # fmt: skip
    return LoadedMotionLLM(model.to(dev), tokenizer, meta)


def save_motion_llm(
    model: PreTrainedModel,
    tokenizer: Any,
    meta: MotionLLMMeta,
    folder: str | Path,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Write the folder: safetensors weights, config, tokenizer (with the motion tokens), ``motion_llm.json``.

    Args:
        dtype: cast the saved weights (e.g. ``torch.bfloat16`` for the released precision); ``None`` keeps them.

    Returns:
        The written file names, relative to ``folder``.

    Raises:
        MotionLLMError: the model still carries a LoRA adapter (merge it first) or is not tied.
    """
    if hasattr(model, "peft_config"):
        raise MotionLLMError("save_motion_llm needs a plain model; merge the LoRA adapter first (merge_lora)")
    if not embeddings_tied(model):
        raise MotionLLMError("refusing to save a motion LLM whose embedding and lm_head are not tied")
    check_motion_tokenizer(tokenizer, meta.vocab)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if dtype is not None and model.dtype != dtype:
        model = model.to(dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta.save(out)
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def save_motion_llm_into(
    run: OutputFolder,
    model: PreTrainedModel,
    tokenizer: Any,
    meta: MotionLLMMeta,
    subdir: str = "",
    dtype: torch.dtype | None = None,
) -> list[str]:
    """:func:`save_motion_llm` into a run folder (``run.root / subdir``): each file is written beside it
    and moved in with ``os.replace`` (atomic), then recorded in the manifest. Only the main process writes.

    Returns the written paths relative to ``run.root``.
    """
    if not run.main_process:
        return []
    run.begin()
    written = []
    with tempfile.TemporaryDirectory(dir=run.root, prefix=".save-") as tmp:
        for rel in save_motion_llm(model, tokenizer, meta, tmp, dtype=dtype):
            target_rel = f"{subdir}/{rel}" if subdir else rel
            target = run.path(target_rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / rel, target)
            run.record(target_rel)
            written.append(target_rel)
    return written


# --------------------------------------------------------------------------------------------------
# LoRA


def lora_config(
    r: int = 64,
    alpha: int = 64,
    dropout: float = 0.1,
    targets: Sequence[str] = LORA_TARGETS,
    trainable_token_ids: Sequence[int] | None = None,
) -> LoraConfig:
    """The reference's ``LoraConfig`` (spec section 2.2): bias none, causal LM.

    ``trainable_token_ids`` also trains those embedding rows (e.g. the motion tokens when only the
    adapter is trained); the tied LM head follows them.
    """
    kwargs: dict[str, Any] = {}
    if trainable_token_ids:
        kwargs["trainable_token_indices"] = {"embed_tokens": list(trainable_token_ids)}
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none",
        task_type="CAUSAL_LM", **kwargs,
    )  # fmt: skip


def apply_lora(model: PreTrainedModel, config: Any, adapter_name: str = ADAPTER_NAME) -> Any:
    """Wrap ``model`` with one LoRA adapter (default name ``shared``); only the adapter (and any trainable token rows) train."""
    return get_peft_model(model, config, adapter_name=adapter_name)


def merge_lora(model: Any) -> PreTrainedModel:
    """Fold every adapter into the weights and return the plain model (full tuning starts from it)."""
    if not hasattr(model, "merge_and_unload"):
        return model
    merged = model.merge_and_unload()
    merged.tie_weights()
    return merged
