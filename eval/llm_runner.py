"""A motion LLM and its VQ-VAE as one object: prompts -> batched generation -> codes -> motions.

``MotionLLMRunner`` holds the model, its tokenizer and motion vocabulary, the VQ-VAE whose codes it
speaks and that VQ's normalisation, and the decoding options (``TaskOptions``). ``load_runner``
builds one from a motion LLM folder: the VQ-VAE is the one ``motion_llm.json`` names (its sha256 is
checked), its normalisation the ``meta/`` folder beside it (``resolve_model_vq``). ``Step`` and
``SampleTrace`` record what one sample went through; the eval tasks (``eval.tasks``), captioning,
the judge and ``eval.generate`` all run on a runner.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.normalization import FeatureNorm
from data.specs import get_dataset_spec
from models.generation import (
    BatchedGenerator,
    DecodeConfig,
    Generation,
    LogitsHook,
    RowState,
    decode_config_for_task,
)
from models.motion_llm import (
    MotionLLMError,
    MotionLLMMeta,
    MotionVocab,
    VQIdentity,
    is_motion_llm,
    load_motion_llm,
)
from models.vqvae import MotionVQVAE

logger = logging.getLogger(__name__)

END_OF_TURN = "<end_of_turn>"


# --------------------------------------------------------------------------------------------------
# Options, traces and the model runner


@dataclass(frozen=True)
class TaskOptions:
    """Decoding and loop settings shared by every task."""

    do_sample: bool = False
    """``--do-sample``: sample instead of greedy (forced-greedy tasks stay greedy)."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_k: int | None = 50
    """Top-k when sampling (None = off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
    max_refine_round: int = 5
    """Most refinement rounds (``--max-refine-round``); also the span ``..._w_max_rounds`` scores."""
    chain_rounds: int = 5
    """Rows of a reasoning-chain task (stage-2 chains hold at most 4 failed attempts + the goal)."""
    batch_size: int = 32
    """Rows per generate forward."""
    reuse_cache: bool = True
    """Reuse each sample's cached prompt prefix across the calls of a multi-call task."""
    max_new_tokens: int = 0
    """Cap on the tokens of each generate call on top of the task's ``max_length`` (0 = none; quick
    runs of untrained models, which rarely stop on their own)."""

    def __post_init__(self) -> None:
        if self.max_refine_round < 1:
            raise ValueError(f"max_refine_round={self.max_refine_round} must be >= 1")
        if self.chain_rounds < 1:
            raise ValueError(f"chain_rounds={self.chain_rounds} must be >= 1")
        if self.batch_size < 1 or self.max_new_tokens < 0:
            raise ValueError(
                f"batch_size={self.batch_size} must be >= 1, max_new_tokens={self.max_new_tokens} >= 0"
            )


@dataclass
class Step:
    """One generate call of one sample (or an injected motion)."""

    round: int
    """Row the call's motion feeds (0 for the first generation)."""
    kind: str
    """Prompt kind: ``t2m``, ``prompt_analysis``, ``refine_instruction``, ``cot``, ``cot_pass1``, ..."""
    prompt: str
    completion: str
    """Decoded completion (special tokens skipped, motion tokens kept)."""
    codes: list[int] | None = None
    """Parsed motion of this call (fallback applied), when it produced one."""


@dataclass
class SampleTrace:
    """Everything one sample went through."""

    caption: str
    steps: list[Step]
    motions: list[list[int]]
    """Codes of every row (``len == rounds``)."""
    rounds_used: int = 0
    """Refinements applied (refinement tasks) / motions in the chain minus one (chain tasks)."""
    stopped_at: int | None = None
    """Refinement round whose instruction was the stop sentence."""
    text: str = ""
    """The reasoning text (chain tasks) or the generated caption (``m2t``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def stop_ids_of(tokenizer: Any) -> tuple[int, ...]:
    """``<eos>`` and, when the vocabulary has it, ``<end_of_turn>`` (spec section 8.4)."""
    ids = [int(tokenizer.eos_token_id)]
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(eot, int) and eot != tokenizer.unk_token_id and eot not in ids:
        ids.append(eot)
    return tuple(ids)


class MotionLLMRunner:
    """A motion LLM and its VQ-VAE: prompts -> batched generation -> codes -> motions.

    Args:
        model: the causal LM (eval mode).
        tokenizer: its tokenizer (adds ``<bos>``, pads left; the motion tokens are added tokens).
        vocab: where the motion tokens are (``LoadedMotionLLM.vocab``).
        vq: the VQ-VAE whose codes the model speaks.
        vq_norm: the VQ's normalisation; decoded motions are in this space.
        options: decoding and loop settings.
        logits_hook: passed to every generate call (tests script outputs with it).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        vocab: MotionVocab,
        vq: MotionVQVAE,
        vq_norm: FeatureNorm,
        options: TaskOptions | None = None,
        logits_hook: LogitsHook | None = None,
    ):
        self.model = model
        self.generator = BatchedGenerator(model)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.vq = vq
        self.vq_norm = vq_norm
        self.options = options or TaskOptions()
        self.logits_hook = logits_hook
        self.stop_ids = stop_ids_of(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        if vq.nb_code != vocab.nb_code:
            raise ValueError(
                f"the VQ-VAE has {vq.nb_code} codes but the model speaks nb_code={vocab.nb_code}; "
                "use the VQ-VAE named in the model's motion_llm.json"
            )

    @property
    def base_id(self) -> int:
        return self.vocab.start_id

    def decode_config(self, decoding: str, sample: bool, honour_sampling: bool = False) -> DecodeConfig:
        """The limits of ``decoding`` (a ``TASK_DECODING`` key, section 8.4) with this tokenizer's stop ids."""
        o = self.options
        dec = decode_config_for_task(
            decoding, do_sample=sample, honour_sampling=honour_sampling, stop_ids=self.stop_ids,
            pad_id=self.pad_id, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p,
        )  # fmt: skip
        return replace(dec, max_new_tokens=o.max_new_tokens) if o.max_new_tokens else dec

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids with ``<bos>`` (the tokenizer adds it, as the reference's batch call does)."""
        return [list(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        decode: DecodeConfig,
        seeds: Sequence[int],
        *,
        states: Sequence[RowState | None] | None = None,
        keep_state: bool = False,
    ) -> list[Generation]:
        return self.generator.generate(
            prompts, decode, seeds=seeds, states=states, keep_state=keep_state,
            logits_hook=self.logits_hook, batch_size=self.options.batch_size,
        )  # fmt: skip

    def text(self, ids: Sequence[int]) -> str:
        """Completion text without stop ids and special tokens (motion tokens are not special)."""
        return self.tokenizer.decode([t for t in ids if t not in self.stop_ids], skip_special_tokens=True)

    def motions(self, codes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Codes -> ``(4 N_i, D)`` float32 motions in the VQ's normalisation space (one batch)."""
        if not codes:
            return []
        dev = self.vq.device
        out = self.vq.decode_list([torch.as_tensor(list(c), dtype=torch.long, device=dev) for c in codes])
        return [m.float().cpu().numpy() for m in out]

    @torch.no_grad()
    def encode_motions(self, raw: Sequence[np.ndarray]) -> list[list[int]]:
        """Raw ``(T_i, D)`` features -> codes (normalised with the VQ meta, cropped to whole codes)."""
        fpc = self.vq.frames_per_code
        crops = [self.vq_norm.normalise(np.asarray(m, np.float32)) for m in raw]
        lens = [len(c) - len(c) % fpc for c in crops]
        if min(lens) < fpc:
            raise ValueError(f"encode_motions: a motion has fewer than {fpc} frames")
        x = np.zeros((len(crops), max(lens), crops[0].shape[1]), np.float32)
        for j, c in enumerate(crops):
            x[j, : lens[j]] = c[: lens[j]]
        codes = self.vq.encode(torch.from_numpy(x).to(self.vq.device), torch.tensor(lens)).cpu()
        return [codes[j, : lens[j] // fpc].tolist() for j in range(len(crops))]


def resolve_model_vq(
    model_dir: str | Path, vq_checkpoint: str = "", vq_meta_dir: str = ""
) -> tuple[Path, Path]:
    """The VQ-VAE checkpoint and normalisation folder of a motion LLM folder.

    ``vq_checkpoint`` defaults to the one ``motion_llm.json`` names; ``vq_meta_dir`` to its
    ``info.vq_meta_dir`` when recorded, else the ``meta/`` folder beside the checkpoint (where
    ``prepare.train_vq`` writes it).

    Raises:
        MotionLLMError: not a motion LLM folder, or no VQ-VAE recorded and none given.
        FileNotFoundError: the checkpoint or meta folder is missing (the message names the override).
    """
    folder = Path(model_dir)
    if not is_motion_llm(folder):
        raise MotionLLMError(
            f"{folder} is not a motion LLM folder (no motion_llm.json); evaluate a trained model"
        )
    meta = MotionLLMMeta.load(folder)
    vq = Path(vq_checkpoint or meta.vq_checkpoint)
    if not str(vq) or str(vq) == ".":
        raise MotionLLMError(f"{folder}/motion_llm.json names no VQ-VAE; pass vq_checkpoint=...")
    if not vq.is_file():
        raise FileNotFoundError(
            f"VQ-VAE checkpoint {vq} (from {folder}/motion_llm.json) not found; pass vq_checkpoint=..."
        )
    norm = Path(vq_meta_dir or meta.info.get("vq_meta_dir", "") or vq.parent / "meta")
    if not norm.is_dir():
        raise FileNotFoundError(
            f"VQ normalisation folder {norm} not found; pass vq_meta_dir=... (mean.npy/std.npy)"
        )
    return vq, norm


def load_runner(
    model_dir: str | Path,
    dataset: str,
    *,
    device: torch.device | str = "cpu",
    options: TaskOptions | None = None,
    vq_checkpoint: str = "",
    vq_meta_dir: str = "",
    dtype: str = "auto",
    attn_implementation: str = "auto",
) -> MotionLLMRunner:
    """Load a motion LLM folder and its VQ-VAE (checked against the hash in ``motion_llm.json``)."""
    vq_path, meta_dir = resolve_model_vq(model_dir, vq_checkpoint, vq_meta_dir)
    spec = get_dataset_spec(dataset)
    meta = MotionLLMMeta.load(model_dir)
    loaded = load_motion_llm(model_dir, nb_code=meta.nb_code, vq=VQIdentity.of(vq_path), device=device,
                             attn_implementation=attn_implementation, dtype=dtype)  # fmt: skip
    loaded.model.eval()
    vq = MotionVQVAE.from_checkpoint(vq_path, nfeats=spec.feat_dim, map_location=device)
    norm = FeatureNorm.load_meta(meta_dir, spec)
    return MotionLLMRunner(loaded.model, loaded.tokenizer, loaded.vocab, vq, norm, options)
