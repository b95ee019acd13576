"""Torch datasets and the collator over ``data.sft_examples`` (spec ``sft-and-inference.md`` 3.2, 4.3, 6.4).

* :class:`SFTDataset` turns item ``i`` into ``{"input_ids", "labels"}`` by building example
  ``AnnotationExampleSet.example(index, epoch)`` and tokenising it piecewise
  (``data.sft_examples.tokenize_example``: labels are the builder's loss masks, ``-100`` on the
  prompt and masked pieces, cut at ``max_length``). The epoch is part of the item's seed, so every
  epoch draws new templates, captions, candidates, attempts and crop offsets; ``set_epoch`` sets it
  (the trainer calls it before each epoch, see ``models.sft``). A fixed ``epoch`` (validation)
  ignores ``set_epoch``.
* :func:`split_indices` holds out a seeded fraction of the entries for validation loss when no
  validation files are given.
* :class:`SFTCollator` pads on the right: ids with the pad id, labels with ``-100``, attention
  mask 1 on real tokens (the reference's ``ids != 0``, without relying on id 0 never being text).

The items of one epoch are a pure function of ``(seed, epoch, index)``, whatever the number of
ranks or workers, so a run on N ranks sees the same examples as one process with the same global
batch (the reference's per-rank seed, B5, is not needed: every rank reads other indices).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from data.sft_examples import IGNORE_INDEX, AnnotationExampleSet, item_rng, tokenize_example

logger = logging.getLogger(__name__)


def split_indices(n: int, fraction: float, seed: int, max_val: int = 0) -> tuple[list[int], list[int]]:
    """``(train, val)`` entry indices: each entry goes to validation with probability ``fraction``.

    The draw is per entry (``item_rng(seed, -1, i, "val")``), so adding files keeps earlier choices;
    ``max_val`` caps the validation set (0 = no cap). At least one entry stays in training.
    """
    val = [i for i in range(n) if fraction > 0 and item_rng(seed, -1, i, "val").random() < fraction]
    if max_val:
        val = val[:max_val]
    if len(val) >= n:
        val = val[: n - 1]
    chosen = set(val)
    return [i for i in range(n) if i not in chosen], val


class SFTDataset(Dataset):
    """Tokenised SFT examples over some entries of an :class:`AnnotationExampleSet`.

    Args:
        examples: the example set.
        tokenizer: a tokenizer holding the motion tokens.
        indices: entries to serve (default: all), in this order.
        max_length: cut after this many tokens (2048 in the reference).
        fixed_epoch: serve this epoch's draw whatever ``set_epoch`` says (validation).
    """

    def __init__(
        self,
        examples: AnnotationExampleSet,
        tokenizer: Any,
        indices: Sequence[int] | None = None,
        max_length: int = 2048,
        fixed_epoch: int | None = None,
    ) -> None:
        self.examples = examples
        self.tokenizer = tokenizer
        self.indices = list(range(len(examples))) if indices is None else list(indices)
        self.max_length = max_length
        self.fixed_epoch = fixed_epoch
        self.epoch = 0 if fixed_epoch is None else fixed_epoch
        self.truncated = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of ``epoch`` from now on (ignored with a ``fixed_epoch``)."""
        if self.fixed_epoch is None:
            self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def example(self, i: int):
        """The built (untokenised) example behind item ``i`` for the current epoch."""
        return self.examples.example(self.indices[i], self.epoch)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        tok = tokenize_example(self.example(i), self.tokenizer, self.max_length)
        if tok.truncated:
            self.truncated += 1
            if self.truncated <= 3:
                logger.warning(
                    "entry %d: example longer than max_length=%d tokens, cut",
                    self.indices[i],
                    self.max_length,
                )
        return {"input_ids": tok.input_ids, "labels": tok.labels}


@dataclass
class SFTCollator:
    """Right-pad a list of items to the longest one: ``input_ids``, ``labels`` (-100), ``attention_mask``."""

    pad_id: int
    pad_to_multiple_of: int = 1
    """Round the padded length up (e.g. 8 on GPUs); 1 = the longest item."""

    def __call__(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(it["input_ids"]) for it in items)
        m = self.pad_to_multiple_of
        length = -(-length // m) * m
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(it["labels"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
