"""Code sources: ``MotionRef`` -> VQ codes, from a VQ-VAE or from per-motion code files.

A code source is a callable ``source(ref) -> list[int]`` (the ``CodeLookup`` of
``data.sft_examples``). Both sources resolve motion names through ``data.annotations.MotionResolver``
and raise ``MotionMissingError`` for a motion that is not on disk, so callers can count them.

* ``VQCodeSource``: load the (windowed) features, crop to ``(T // 4) * 4`` frames at offset 0 (the
  reference draws a 0-3 frame offset per access; pass ``rng`` to do the same), normalise with the
  VQ's mean/std and encode (spec ``sft-and-inference.md`` sections 1.1, 4.3).
* ``CodesDirSource``: read ``<codes_dir>/<id>.npy`` integer arrays (``(N,)`` or ``(1, N)``, the
  T2M-GPT tokenisation layout). A windowed ref takes codes ``[start // 4, end // 4)`` of the whole
  clip: an approximation (the encoder's receptive field crosses the cut), counted in
  ``windowed_approximations``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.annotations import MotionMissingError, MotionRef, MotionResolver

logger = logging.getLogger(__name__)


@dataclass
class VQCodeSource:
    """Encode motions on demand with a ``MotionVQVAE`` (cached per file id and window)."""

    resolver: MotionResolver
    vq: object
    """A ``models.vqvae.MotionVQVAE`` (anything with ``encode`` and ``frames_per_code``)."""
    mean: np.ndarray
    std: np.ndarray
    rng: random.Random | None = None
    """When given, draw the 0-3 frame crop offset per call (no caching), as the reference does."""
    _cache: dict[tuple[str, tuple[int, int] | None], list[int]] = field(default_factory=dict, repr=False)

    def __call__(self, ref: MotionRef) -> list[int]:
        import torch

        key = (self.resolver.file_id(ref), ref.frame_window(self.resolver.spec.fps))
        if self.rng is None and key in self._cache:
            return self._cache[key]
        feats = self.resolver.load(ref)
        unit = int(getattr(self.vq, "frames_per_code", 4))
        m = (len(feats) // unit) * unit
        if m == 0:
            codes: list[int] = []
        else:
            off = self.rng.randint(0, len(feats) - m) if self.rng is not None else 0
            x = (feats[off : off + m] - self.mean) / self.std
            codes = self.vq.encode(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[
                0
            ].tolist()
        if self.rng is None:
            self._cache[key] = codes
        return codes


@dataclass
class CodesDirSource:
    """Read precomputed codes from ``<codes_dir>/<id>.npy`` (see the module docstring)."""

    codes_dir: str | Path
    resolver: MotionResolver
    nb_code: int = 512
    windowed_approximations: int = 0
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _load(self, ref: MotionRef) -> np.ndarray:
        mid = self.resolver.file_id(ref)
        if mid not in self._cache:
            path = Path(self.codes_dir) / f"{mid}.npy"
            if not path.is_file():
                raise MotionMissingError(ref.motion_name, mid, [path])
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 2 and arr.shape[0] == 1:
                arr = arr[0]
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(
                    f"{path}: expected an integer (N,) or (1, N) code array, got {arr.dtype} {arr.shape}"
                )
            if arr.size and (arr.min() < 0 or arr.max() >= self.nb_code):
                raise ValueError(f"{path}: codes outside [0, {self.nb_code - 1}] (wrong codebook size?)")
            self._cache[mid] = arr
        return self._cache[mid]

    def __call__(self, ref: MotionRef) -> list[int]:
        codes = self._load(ref)
        win = ref.frame_window(self.resolver.spec.fps)
        if win is None:
            return codes.tolist()
        self.windowed_approximations += 1
        unit = self.resolver.spec.unit_length
        return codes[win[0] // unit : win[1] // unit].tolist()


@dataclass
class MappingCodeSource:
    """Codes from a ``motion_name -> codes`` mapping (tests, cached rollouts)."""

    codes: Mapping[str, Sequence[int]]

    def __call__(self, ref: MotionRef) -> list[int]:
        if ref.motion_name not in self.codes:
            raise MotionMissingError(ref.motion_name, ref.motion_name, [])
        return list(self.codes[ref.motion_name])
