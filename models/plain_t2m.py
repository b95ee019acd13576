"""The plain caption -> codes baseline: a tiny Gemma2 trained on text-to-motion alone (library of
``scripts/baseline_t2m.py``).

The set-up of ``shared/notes/tiny-llm-on-cpu.md``, the bar the demo's stage 1 is measured against:

- **Data.** Every caption of every motion of the training split with the codes of what it describes
  (the clip's code file, or its window's for a caption of a sub-clip; row 0, the crop at frame 0),
  read through a code source (``data.motion_codes.CodesDirSource``), so the codes are checked
  against the VQ-VAE that made them.
- **Vocabulary.** A word-level tokenizer over the training captions and the prompt's own words
  (``models.tiny_llm.word_level_tokenizer``), then the ``nb_code + 2`` motion tokens in the spec's
  order (``models.motion_llm.add_motion_tokens``).
- **Examples.** ``<bos>caption Response:<Motion><Motion_c1>...</Motion><eos>`` with the loss on the
  response (``<Motion>`` to ``<eos>``) only; each epoch visits every motion once, in a seeded order,
  with one of its captions drawn (seeded).
- **Training.** ``Gemma2ForCausalLM`` from config (eager attention, float32, tied embeddings), AdamW,
  a linear warm-up then a cosine to ``min_lr_ratio`` of the peak over the budget (:func:`lr_at`).
  The budget is either a number of steps or CPU seconds of this process and its children
  (:func:`cpu_seconds`): CPU time, not wall time, is what stays comparable on a shared machine.

The prompt at evaluation is :func:`plain_t2m_prompt` (the eval task ``t2m_plain`` of ``eval.tasks``):
the training prefix with the forced ``<Motion>``.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Gemma2ForCausalLM, PreTrainedModel

from data.annotations import MotionMissingError, MotionRef
from data.layout import DatasetFileError, DatasetPaths, SkipTracker, read_captions, read_split
from data.motion_tokens import MOTION_START
from data.progress import progress_bar
from models.motion_llm import MotionVocab
from models.tiny_llm import gemma2_config

logger = logging.getLogger(__name__)

RESPONSE = " Response:"
"""What follows the caption in the prompt (the reference's prompts end with `` Response:`` too)."""
IGNORE_INDEX = -100
"""Label of positions without loss (prompt and padding)."""


def plain_t2m_prompt(caption: str) -> str:
    """``caption Response:<Motion>``: the baseline's evaluation prompt (the tokenizer prepends ``<bos>``)."""
    return caption.strip() + RESPONSE + MOTION_START


# --------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class CaptionedMotion:
    """The captions of one motion, each with the codes of what it describes."""

    motion_id: str
    captions: tuple[str, ...]
    codes: tuple[tuple[int, ...], ...]
    """``codes[j]``: ``(N_j,)`` code ids of caption ``j``'s clip or window."""


CodeLookup = Callable[[MotionRef], Sequence[int]]
"""``source(ref) -> codes`` (row 0): ``data.motion_codes.CodesDirSource`` without an ``rng``."""


def load_captioned_motions(
    dataset_root: str | Path, split: str, codes: CodeLookup, tracker: SkipTracker
) -> list[CaptionedMotion]:
    """Every motion of ``split`` with its captions and their codes.

    A caption whose codes are missing (``MotionMissingError``) or unreadable (``DatasetFileError``)
    goes to ``tracker`` (raised, or skipped and counted under ``on_error=skip``); a motion left
    without a caption is dropped. ``tracker.finish()`` is called here.

    Raises:
        DatasetFileError: no motion of the split has a caption with codes.
    """
    paths = DatasetPaths(dataset_root)
    out = []
    for mid in read_split(dataset_root, split):
        caps, cods = [], []
        for line in read_captions(paths.text_file(mid)):
            tracker.seen += 1
            try:
                c = codes(MotionRef(mid, line.start, line.end))
            except (MotionMissingError, DatasetFileError) as err:
                tracker.record(f"{mid} [{line.start}, {line.end}) s", err)
                continue
            if len(c) == 0:
                tracker.record(mid, DatasetFileError(f"{mid}: empty code sequence"))
                continue
            caps.append(line.caption)
            cods.append(tuple(int(k) for k in c))
        if caps:
            out.append(CaptionedMotion(mid, tuple(caps), tuple(cods)))
    tracker.finish()
    if not out:
        raise DatasetFileError(f"{dataset_root}: no motion of split {split!r} has a caption with codes")
    return out


@dataclass(frozen=True)
class PlainExample:
    """One caption's training sequence, split where the loss starts."""

    prompt_ids: tuple[int, ...]
    """``<bos>caption Response:``."""
    response_ids: tuple[int, ...]
    """``<Motion> codes </Motion> <eos>`` (the positions with loss)."""


def tokenize_motions(
    motions: Sequence[CaptionedMotion], tokenizer: Any, vocab: MotionVocab
) -> list[list[PlainExample]]:
    """Per motion, one ``PlainExample`` per caption (see the module docstring for the layout)."""
    eos = int(tokenizer.eos_token_id)
    out = []
    for m in motions:
        prompts = tokenizer([c.strip() + RESPONSE for c in m.captions])["input_ids"]
        out.append(
            [PlainExample(tuple(p), (*vocab.span_ids(c), eos)) for p, c in zip(prompts, m.codes, strict=True)]
        )
    return out


def epoch_batches(
    examples: Sequence[Sequence[PlainExample]], batch_size: int, seed: int, epoch: int
) -> list[list[PlainExample]]:
    """Epoch ``epoch``: every motion once in a seeded order, one caption drawn for each; the last batch may be short.

    A pure function of ``(seed, epoch)``: ``np.random.default_rng([seed, epoch])`` draws the order and
    the captions.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(examples))
    picks = [examples[i][int(rng.integers(len(examples[i])))] for i in order]
    return [picks[k : k + batch_size] for k in range(0, len(picks), batch_size)]


def collate(batch: Sequence[PlainExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (``IGNORE_INDEX`` off the response), each ``(B, L)``."""
    seqs = [(*e.prompt_ids, *e.response_ids) for e in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, (e, s) in enumerate(zip(batch, seqs, strict=True)):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        labels[b, len(e.prompt_ids) : len(s)] = torch.tensor(e.response_ids)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------------------------------
# Model and training


@dataclass(frozen=True)
class ModelSize:
    """Sizes of the tiny Gemma2 (the demo's quick profile by default, ``configs/tiny/llm.yaml``)."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32


def build_model(vocab_size: int, size: ModelSize, seed: int, max_positions: int = 512) -> Gemma2ForCausalLM:
    """A seeded random ``Gemma2ForCausalLM`` (eager attention, float32, tied embeddings)."""
    config = gemma2_config(
        vocab_size, hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads, head_dim=size.head_dim,
        max_position_embeddings=max_positions, attn_implementation="eager",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma2ForCausalLM(config)
    return model.float()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def lr_at(step: int, progress: float, *, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based) when ``progress`` of the budget is spent.

    ``lr * w * (r + (1 - r) * (1 + cos(pi * p)) / 2)``: ``w = min(1, (step + 1) / warmup_steps)`` is the
    linear warm-up, the cosine runs over the budget's fraction ``p = min(progress, 1)`` down to ``r =
    min_lr_ratio`` of the peak.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    p = min(max(progress, 0.0), 1.0)
    return lr * warm * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))


@dataclass(frozen=True)
class Budget:
    """How long training runs: ``steps`` optimizer steps when > 0, else ``cpu_s`` CPU seconds."""

    cpu_s: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.cpu_s < 0 or (self.steps == 0 and self.cpu_s == 0):
            raise ValueError(f"budget: steps={self.steps} or cpu_s={self.cpu_s} must be > 0 (none negative)")

    @property
    def unit(self) -> str:
        return "step" if self.steps else "cpu-s"

    @property
    def total(self) -> float:
        return float(self.steps or self.cpu_s)

    def spent(self, steps: int, cpu_s: float) -> float:
        """Amount of the budget used: steps done, or CPU seconds used."""
        return float(steps) if self.steps else cpu_s


@dataclass(frozen=True)
class Optimisation:
    """AdamW and its schedule."""

    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 = off)."""


@dataclass
class TrainResult:
    """What a training run did (``as_dict`` is written to the run folder)."""

    steps: int = 0
    epochs: float = 0.0
    cpu_s: float = 0.0
    """CPU seconds of the training loop (this process tree)."""
    wall_s: float = 0.0
    tokens: int = 0
    """Non-pad tokens fed (prompt and response)."""
    response_tokens: int = 0
    """Tokens with loss."""
    first_loss: float = float("nan")
    final_loss: float = float("nan")
    """Mean response-token loss (nats) over the last ``final_window`` steps."""
    losses: list[float] = field(default_factory=list, repr=False)

    def as_dict(self, final_window: int) -> dict[str, Any]:
        return {
            "steps": self.steps, "epochs": round(self.epochs, 3), "cpu_s": round(self.cpu_s, 2),
            "wall_s": round(self.wall_s, 2), "tokens": self.tokens, "response_tokens": self.response_tokens,
            "tokens_per_cpu_s": round(self.tokens / max(self.cpu_s, 1e-9), 1),
            "tokens_per_wall_s": round(self.tokens / max(self.wall_s, 1e-9), 1),
            "first_loss": self.first_loss, "final_loss": self.final_loss, "final_loss_steps": final_window,
        }  # fmt: skip


def train_plain_t2m(
    model: PreTrainedModel,
    examples: Sequence[Sequence[PlainExample]],
    *,
    budget: Budget,
    opt: Optimisation,
    seed: int,
    pad_id: int,
    log_every: int = 25,
    final_window: int = 20,
    metrics: Callable[..., None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place until the budget is spent (checked after each step) and return what it did.

    Args:
        examples: per motion, its captions' examples (:func:`tokenize_motions`).
        budget: steps or CPU seconds of the loop (set-up before the call does not count).
        seed: seed of the epoch orders and caption draws.
        pad_id: padding id of the batches.
        log_every: steps between two ``metrics(...)`` records (step, epoch, loss, lr, cpu_s, wall_s, tokens).
        final_window: steps averaged into ``final_loss``.
        metrics: called with keyword values every ``log_every`` steps and at the end (e.g. ``MetricsLogger.log``).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    model.train()
    res = TrainResult()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    bar = progress_bar(total=round(budget.total), unit=budget.unit, desc="baseline t2m", disable=not progress)
    shown, epoch, window = 0, 0, []
    while True:
        batches = epoch_batches(examples, opt.batch_size, seed, epoch)
        for i, batch in enumerate(batches):
            cpu = cpu_seconds() - cpu0
            lr = lr_at(res.steps, budget.spent(res.steps, cpu) / budget.total, lr=opt.lr,
                       warmup_steps=opt.warmup_steps, min_lr_ratio=opt.min_lr_ratio)  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = collate(batch, pad_id)
            loss = model(**inputs).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opt.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss is {value} at step {res.steps} (lower lr={opt.lr}?)")
            res.steps += 1
            res.losses.append(value)
            window.append(value)
            res.tokens += int(inputs["attention_mask"].sum())
            res.response_tokens += int((inputs["labels"] != IGNORE_INDEX).sum())
            res.epochs = epoch + (i + 1) / len(batches)
            res.cpu_s, res.wall_s = cpu_seconds() - cpu0, time.perf_counter() - wall0
            used = budget.spent(res.steps, res.cpu_s)
            whole = int(min(used, budget.total))  # the bar counts whole steps / CPU seconds
            bar.update(whole - shown)
            shown = whole
            bar.set_postfix(loss=f"{value:.3f}", step=res.steps, refresh=False)
            done = used >= budget.total
            if metrics is not None and (res.steps % log_every == 0 or done):
                metrics(step=res.steps, epoch=round(res.epochs, 3), loss=float(np.mean(window)), lr=lr,
                        cpu_s=round(res.cpu_s, 2), wall_s=round(res.wall_s, 2), tokens=res.tokens)  # fmt: skip
                window = []
            if done:
                bar.close()
                model.eval()
                res.first_loss = res.losses[0]
                res.final_loss = float(np.mean(res.losses[-final_window:]))
                logger.info(
                    "baseline t2m: %d steps (%.2f epochs) in %.1f CPU s / %.1f wall s, loss %.3f -> %.3f",
                    res.steps, res.epochs, res.cpu_s, res.wall_s, res.first_loss, res.final_loss,
                )  # fmt: skip
                return res
        epoch += 1
