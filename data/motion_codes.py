"""Model-free code sources: ``MotionRef`` -> VQ codes from code files or a mapping.

A code source is a callable ``source(ref, rng=None) -> list[int]`` (the ``CodeLookup`` of
``data.sft_examples``). The only randomness, the 0-3 frame crop start of spec
``sft-and-inference.md`` section 4.3, is drawn from ``rng``: the caller builds one ``random.Random``
per item from the item's own seed ``(seed, epoch, index)``, so the codes of an item never depend on
which items were read before it, in which order or in which worker. Without ``rng`` the crop starts
at frame 0. Sources hold no random state of their own.

* ``CodesDirSource``: the files of ``prepare/tokenize_motions.py``: ``<codes_dir>/<id>.npy`` for a
  whole clip and ``<codes_dir>/windows/<id>_<start>_<end>.npy`` for a caption window (frames
  ``[start, end)``, encoded from the window's own frames; see :func:`window_code_file`). Each file
  is int ``(K, N)``, row ``k`` = the crop starting at frame ``k`` of the clip or window.
* ``MappingCodeSource``: a ``motion_name -> codes`` mapping (tests, cached rollouts).

The VQ-VAE-backed source, which encodes on demand, is ``models.vq_tokenize.VQCodeSource``.
Sources resolve motion names through ``data.annotations.MotionResolver`` and raise
``MotionMissingError`` for a motion (or window) that has no file, so callers can count them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.annotations import MotionMissingError, MotionRef, MotionResolver
from data.layout import DatasetFileError
from data.motion_tokens import DEFAULT_NB_CODE
from data.vq_data import code_file, read_code_file

WINDOWS_DIR = "windows"
"""Sub-folder of a codes folder holding the per-caption-window code files."""


def window_code_file(codes_dir: str | Path, motion_id: str, window: tuple[int, int]) -> Path:
    """``<codes_dir>/windows/<id>_<start>_<end>.npy``: codes of frames ``[start, end)`` of clip ``id``.

    ``window`` is ``MotionRef.frame_window(fps)``, the frames the spec's loader keeps
    (``[int(f_tag * fps), int(to_tag * fps))``, cut at the clip's end).
    """
    return Path(codes_dir) / WINDOWS_DIR / f"{motion_id}_{window[0]}_{window[1]}.npy"


def crop_row(n_rows: int, rng: random.Random | None) -> int:
    """The crop start drawn for one access: uniform over ``n_rows`` starts, or 0 without ``rng``."""
    return rng.randrange(n_rows) if rng is not None and n_rows > 1 else 0


class WindowCodesMissingError(MotionMissingError):
    """A windowed ref whose window was not tokenised (no ``windows/<id>_<s>_<e>.npy``)."""

    def __init__(self, ref: MotionRef, motion_id: str, path: Path):
        super().__init__(ref.motion_name, motion_id, [path])
        self.args = (
            f"{self.args[0]}. Window [{ref.f_tag}, {ref.to_tag}) s has no code file: tokenise with "
            "windows=true (prepare/tokenize_motions.py encodes every caption window listed in "
            "texts/<id>.txt) or encode on demand with models.vq_tokenize.VQCodeSource",
        )


@dataclass
class CodesDirSource:
    """Read precomputed codes written by ``prepare/tokenize_motions.py`` (see the module docstring).

    A 1-D ``(N,)`` array is accepted as a single row. Files are cached after the first read.
    """

    codes_dir: str | Path
    resolver: MotionResolver
    nb_code: int = DEFAULT_NB_CODE
    _cache: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)

    def path(self, ref: MotionRef) -> Path:
        """The code file of ``ref``: the clip's, or its window's when the ref has a window."""
        mid = self.resolver.file_id(ref)
        win = ref.frame_window(self.resolver.spec.fps)
        return code_file(self.codes_dir, mid) if win is None else window_code_file(self.codes_dir, mid, win)

    def rows(self, ref: MotionRef) -> np.ndarray:
        """All crop rows ``(K, N)`` of ``ref``'s clip or window."""
        path = self.path(ref)
        if path not in self._cache:
            if not path.is_file():
                mid = self.resolver.file_id(ref)
                if ref.frame_window(self.resolver.spec.fps) is not None:
                    raise WindowCodesMissingError(ref, mid, path)
                raise MotionMissingError(ref.motion_name, mid, [path])
            self._cache[path] = self._read(path)
        return self._cache[path]

    def _read(self, path: Path) -> np.ndarray:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 1:
            return read_code_file(path, self.nb_code)
        if not np.issubdtype(arr.dtype, np.integer) or (
            arr.size and (arr.min() < 0 or arr.max() >= self.nb_code)
        ):
            raise DatasetFileError(f"{path}: expected integer codes in [0, {self.nb_code - 1}]")
        return arr[None].astype(np.int64)

    def __call__(self, ref: MotionRef, rng: random.Random | None = None) -> list[int]:
        rows = self.rows(ref)
        return rows[crop_row(len(rows), rng)].tolist()


@dataclass
class MappingCodeSource:
    """Codes from a ``motion_name -> codes`` mapping (tests, cached rollouts); ``rng`` is unused."""

    codes: Mapping[str, Sequence[int]]

    def __call__(self, ref: MotionRef, rng: random.Random | None = None) -> list[int]:
        if ref.motion_name not in self.codes:
            raise MotionMissingError(ref.motion_name, ref.motion_name, [])
        return list(self.codes[ref.motion_name])
