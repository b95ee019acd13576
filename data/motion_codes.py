"""Code sources: ``MotionRef`` -> VQ codes, from a VQ-VAE or from per-motion code files.

A code source is a callable ``source(ref) -> list[int]`` (the ``CodeLookup`` of
``data.sft_examples``). Both sources resolve motion names through ``data.annotations.MotionResolver``
and raise ``MotionMissingError`` for a motion that is not on disk, so callers can count them.

* ``VQCodeSource``: load the (windowed) features, crop to ``(T // 4) * 4`` frames at offset 0 (the
  reference draws a 0-3 frame offset per access; pass ``rng`` to do the same), normalise with the
  VQ's mean/std and encode (spec ``sft-and-inference.md`` sections 1.1, 4.3).
* ``CodesDirSource``: read the ``<codes_dir>/<id>.npy`` files of ``prepare/tokenize_motions.py``
  (int ``(K, N)``, one row per crop start). A windowed ref takes codes ``[start // 4, end // 4)`` of
  the whole clip: an approximation (the encoder's receptive field crosses the cut), logged once and
  counted in ``windowed_approximations``; use a VQ checkpoint for exact sub-clip codes. The engine's
  imperfect motions are listed in ``<root>/engine_motions.txt``, which ``read_split`` reads as a split:
  tokenise them with ``splits=[all,engine_motions]``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.annotations import MotionMissingError, MotionRef, MotionResolver
from data.layout import DatasetFileError
from data.motion_tokens import DEFAULT_NB_CODE
from data.normalization import FeatureNorm
from data.vq_data import read_code_file

logger = logging.getLogger(__name__)


@dataclass
class VQCodeSource:
    """Encode motions on demand with a ``MotionVQVAE`` (cached per file id and window)."""

    resolver: MotionResolver
    vq: object
    """A ``models.vqvae.MotionVQVAE`` (anything with ``encode`` and ``frames_per_code``)."""
    norm: FeatureNorm
    """The VQ's normalisation (``FeatureNorm.resolve(..., checkpoint=...)``)."""
    rng: random.Random | None = None
    """When given, draw the 0-3 frame crop offset per call (no caching), as the reference does."""
    _cache: dict[tuple[str, tuple[int, int] | None], list[int]] = field(default_factory=dict, repr=False)

    def __call__(self, ref: MotionRef) -> list[int]:
        from models.vq_tokenize import encode_crops

        key = (self.resolver.file_id(ref), ref.frame_window(self.resolver.spec.fps))
        if self.rng is None and key in self._cache:
            return self._cache[key]
        feats = self.resolver.load(ref)
        unit = self.vq.frames_per_code
        m = (len(feats) // unit) * unit
        if m == 0:
            codes: list[int] = []
        else:
            off = self.rng.randint(0, len(feats) - m) if self.rng is not None else 0
            x = self.norm.normalise(feats[off : off + m])
            codes = encode_crops(self.vq, x, [0])[0].tolist()
        if self.rng is None:
            self._cache[key] = codes
        return codes


@dataclass
class CodesDirSource:
    """Read precomputed codes written by ``prepare/tokenize_motions.py`` (see the module docstring).

    Files are ``<codes_dir>/<id>.npy`` int ``(K, N)`` arrays, row ``k`` = codes of the crop starting
    at frame ``k`` (``models/vq_tokenize.py``); a 1-D ``(N,)`` array is accepted as one row. Row 0
    is used, or a row drawn with ``rng`` (the reference's 0-3 frame crop augmentation).
    """

    codes_dir: str | Path
    resolver: MotionResolver
    nb_code: int = DEFAULT_NB_CODE
    rng: random.Random | None = None
    windowed_approximations: int = 0
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _load(self, ref: MotionRef) -> np.ndarray:
        mid = self.resolver.file_id(ref)
        if mid not in self._cache:
            path = Path(self.codes_dir) / f"{mid}.npy"
            if not path.is_file():
                raise MotionMissingError(ref.motion_name, mid, [path])
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 1:
                if not np.issubdtype(arr.dtype, np.integer) or (
                    arr.size and (arr.min() < 0 or arr.max() >= self.nb_code)
                ):
                    raise DatasetFileError(f"{path}: expected integer codes in [0, {self.nb_code - 1}]")
                arr = arr[None].astype(np.int64)
            else:
                arr = read_code_file(path, self.nb_code)
            self._cache[mid] = arr
        return self._cache[mid]

    def __call__(self, ref: MotionRef) -> list[int]:
        rows = self._load(ref)
        codes = rows[self.rng.randrange(len(rows))] if self.rng is not None else rows[0]
        win = ref.frame_window(self.resolver.spec.fps)
        if win is None:
            return codes.tolist()
        if self.windowed_approximations == 0:
            logger.warning(
                "codes-dir: windowed ref %s sliced from whole-clip codes (approximate; the encoder's "
                "receptive field crosses the cut). Use a VQ checkpoint for exact sub-clip codes.",
                ref,
            )
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
