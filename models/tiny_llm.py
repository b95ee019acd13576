"""A tiny Gemma2 base model that stands in for ``gemma-2-2b-it`` on CPU (library of ``prepare/build_tiny_llm.py``).

The folder it writes is a plain Hugging Face base model, as ``gemma-2-2b-it`` is: a ``Gemma2``
config with small sizes and seeded random weights, and a byte-level BPE tokenizer trained with the
``tokenizers`` library on the texts the model will read: the dataset's captions, the text of the
annotation files (analyses, assessments, refinements), the prompt pools, the fixed test templates
and the stage-2 plan sentences and tags. Its special tokens sit where gemma-2 has its first ones
(``<pad>`` = 0, ``<eos>`` = 1, ``<bos>`` = 2, ``<unk>`` = 3) followed by ``<start_of_turn>`` and
``<end_of_turn>``; ``add_special_tokens=True`` prepends ``<bos>`` as the Gemma tokenizer does, and
padding is on the left. Everything after this step (adding the motion tokens, SFT, evaluation)
runs unchanged on the tiny and the real model. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast

from data.annotations import Assessment, read_annotation_file
from data.config import RunConfig
from data.inspect_annotations import find_annotation_files
from data.layout import DatasetPaths, read_captions, read_split
from data.prompts import BUILTIN_POOLS, NO_REFINEMENT, PLAN_SENTENCES, TEST_TEMPLATES

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
"""Special tokens in id order; the first four at gemma-2's ids."""
STAGE2_TAGS = ("<think>", "</think>", "<answer>", "</answer>", "[plan]", "[/plan]", "[analyze]", "[/analyze]",
               "[generate]", "[/generate]", "[assess]", "[/assess]", "Assessment: ", "Refinement: ")  # fmt: skip
"""Literal pieces of the stage-2 trace (spec section 6.3); ordinary text for the tokenizer."""


@dataclass(kw_only=True)
class TinyLLMConfig(RunConfig):
    """Tiny Gemma2 base (``python -m prepare.build_tiny_llm --config configs/tiny/llm.yaml``)."""

    output_dir: str = "runs/demo/tiny_llm"
    """The Hugging Face folder written (config.json, model.safetensors, tokenizer files)."""
    seed: int = 0
    """Seed of the random weights."""
    annotations_dir: str = ""
    """Also train the tokenizer on the text of the annotation files under this folder (empty = none)."""
    caption_splits: tuple[str, ...] = ("train",)
    """Splits of ``dataset_root`` whose captions the tokenizer is trained on."""
    vocab_size: int = 2048
    """Text vocabulary size (special tokens and the 256 byte symbols included)."""
    min_frequency: int = 2
    """BPE merges need at least this many occurrences."""
    hidden_size: int = 256
    """Model width (gemma-2-2b: 2304)."""
    intermediate_size: int = 1024
    """MLP width (gemma-2-2b: 9216)."""
    num_hidden_layers: int = 4
    """Decoder layers (gemma-2-2b: 26)."""
    num_attention_heads: int = 4
    """Query heads (gemma-2-2b: 8)."""
    num_key_value_heads: int = 2
    """Key/value heads (gemma-2-2b: 4)."""
    head_dim: int = 64
    """Per-head width (gemma-2-2b: 256); the query scale is ``head_dim ** -0.5`` as in gemma-2-2b."""
    max_position_embeddings: int = 2048
    """Longest sequence (the SFT cut is 2048)."""
    sliding_window: int = 4096
    """Window of the sliding-attention layers (gemma-2: 4096; longer than any sequence here)."""
    attn_logit_softcapping: float | None = None
    """Attention-score soft-cap (gemma-2-2b: 50.0). Off by default for the tiny models: transformers
    runs the cap only in eager attention, whose extra passes over the score matrix double a CPU
    training step at 650 tokens; without it the models use fused SDPA
    (``models.motion_llm.FUSED_ATTENTION``). Set 50.0 for the exact gemma-2 architecture."""
    overwrite: bool = False
    """Accept an output_dir holding another command's files (only this command's files are replaced)."""
    force: bool = False
    """Rebuild even when output_dir holds this build, finished."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
            raise ValueError(
                f"vocab_size={self.vocab_size} must exceed the 256 byte symbols + special tokens"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "head_dim", "min_frequency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    def gemma2_config(self, vocab_size: int) -> Gemma2Config:
        """The model config (gemma-2-2b's defaults for everything not set here)."""
        return gemma2_config(
            vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings, sliding_window=self.sliding_window,
            attn_logit_softcapping=self.attn_logit_softcapping,
        )  # fmt: skip


def gemma2_config(
    vocab_size: int,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    max_position_embeddings: int = 2048,
    sliding_window: int = 4096,
    attn_logit_softcapping: float | None = 50.0,
    attn_implementation: str | None = None,
) -> Gemma2Config:
    """A small ``Gemma2Config`` with the gemma-2 special ids and tied embeddings.

    gemma-2-2b's defaults hold for everything not set here; the query scale is ``head_dim ** -0.5``
    as in gemma-2-2b (``attn_logit_softcapping`` 50.0 too; ``None`` turns it off). ``attn_implementation`` (e.g. ``eager``) is recorded in the config; ``None``
    leaves transformers' choice.
    """
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return Gemma2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, head_dim=head_dim, query_pre_attn_scalar=head_dim,
        max_position_embeddings=max_position_embeddings, sliding_window=sliding_window,
        attn_logit_softcapping=attn_logit_softcapping, pad_token_id=0,
        eos_token_id=1, bos_token_id=2, tie_word_embeddings=True, **extra,
    )  # fmt: skip


def fixed_texts() -> list[str]:
    """Every prompt string of ``data.prompts``: pools, test templates, plan sentences, trace tags."""
    out = [s for pool in BUILTIN_POOLS.values() for s in pool]
    out += [s for pair in TEST_TEMPLATES.values() for s in pair]
    out += [*PLAN_SENTENCES.values(), NO_REFINEMENT, *STAGE2_TAGS, "\n\nUser: ", "\n\n Response:"]
    return out


def caption_texts(dataset_root: str | Path, splits: Iterable[str]) -> Iterator[str]:
    """Captions of every motion of ``splits`` (one per caption line)."""
    paths = DatasetPaths(dataset_root)
    for split in splits:
        for mid in read_split(dataset_root, split):
            tf = paths.text_file(mid)
            if tf.is_file():
                yield from (c.caption for c in read_captions(tf))


def annotation_texts(folder: str | Path) -> Iterator[str]:
    """Every text value (captions, analyses, assessments, refinements) of the annotation files under ``folder``."""
    for path in find_annotation_files(folder):
        for ann in read_annotation_file(path).annotations:
            for cand in ann.all_candidates():
                for val in cand.texts.values():
                    if isinstance(val, Assessment):
                        yield val.assessment
                        yield val.refinement
                    elif isinstance(val, str):
                        yield val
                    else:
                        yield from val


def train_text_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the gemma-2 special-token layout (see the module docstring)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return _fast_tokenizer(tok)


def _fast_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap ``tok`` (special tokens at ``SPECIAL_TOKENS``' ids) with ``<bos>`` prepended and left padding."""
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"tokenizer put {s} at id {tok.token_to_id(s)}, expected {i}")
    bos = SPECIAL_TOKENS[2]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"], padding_side="left",
    )  # fmt: skip
    fast.padding_side = "left"
    return fast


WORD_PATTERN = r"\w+|[^\w\s]+"
"""What one word-level token is: a run of word characters or of punctuation (whitespace separates)."""


def word_level_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over every word of ``texts``, with the gemma-2 special-token layout.

    Words are runs of word characters or of punctuation (``WORD_PATTERN``; case kept), listed by
    falling frequency, then alphabetically, after ``SPECIAL_TOKENS``; a word not in ``texts`` reads
    as ``<unk>``. Decoding joins words with single spaces. Like :func:`train_text_tokenizer`'s,
    ``<bos>`` is prepended and padding is on the left, so the motion tokens can be added after it.
    """
    counts: dict[str, int] = {}
    for text in texts:
        for w in re.findall(WORD_PATTERN, text):
            counts[w] = counts.get(w, 0) + 1
    words = sorted((w for w in counts if w not in SPECIAL_TOKENS), key=lambda w: (-counts[w], w))
    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits exactly as WORD_PATTERN
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return _fast_tokenizer(tok)


def build_tiny_llm(cfg: TinyLLMConfig, out: Path) -> dict:
    """Train the tokenizer, build the seeded random model and save both into ``out``.

    Returns a summary (text vocabulary size, parameters, corpus size).
    """
    corpus = list(fixed_texts())
    corpus += list(caption_texts(cfg.dataset_root, cfg.caption_splits))
    if cfg.annotations_dir:
        corpus += list(annotation_texts(cfg.annotations_dir))
    tokenizer = train_text_tokenizer(corpus, cfg.vocab_size, cfg.min_frequency)
    n_text = len(tokenizer)
    torch.manual_seed(cfg.seed)
    model = Gemma2ForCausalLM(cfg.gemma2_config(n_text))
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = [1, SPECIAL_TOKENS.index("<end_of_turn>")]
    model.generation_config.bos_token_id = 2
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {
        "n_text": n_text,
        "parameters": model.num_parameters(),
        "corpus_strings": len(corpus),
        "corpus_chars": sum(len(s) for s in corpus),
    }
    logger.info(
        "tiny base: %d text tokens, %.2fM parameters, tokenizer trained on %d strings",
        n_text, summary["parameters"] / 1e6, len(corpus),
    )  # fmt: skip
    return summary
