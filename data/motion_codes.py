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
  is int ``(K, N)``, row ``k`` = the crop starting at frame ``k`` of the clip or window. It checks
  provenance against ``codes_index.json``: on construction, the VQ-VAE checkpoint it is configured
  with (sha256; a mismatch names both sides); lazily, at the first access of each item, that the
  code file is the one the index lists (sha256) and, with ``check_motions`` (default), that the
  motion file the resolver finds is the content it was encoded from (size and mtime, else sha256).
  Each file and motion is checked once per source object; code files whose motion cannot be checked
  (no motion file in the resolver's roots, or none recorded) are collected in ``unchecked``. Code
  files from elsewhere get an index with ``data.vq_data.index_code_files``.
* ``MappingCodeSource``: a ``motion_name -> codes`` mapping (tests, cached rollouts).

The VQ-VAE-backed source, which encodes on demand, is ``models.vq_tokenize.VQCodeSource``.
Sources resolve motion names through ``data.annotations.MotionResolver`` and raise
``MotionMissingError`` for a motion (or window) that has no file, so callers can count them.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.annotations import MotionMissingError, MotionRef, MotionResolver
from data.layout import DatasetFileError
from data.motion_tokens import DEFAULT_NB_CODE
from data.run_folder import ProvenanceError, file_sha256
from data.vq_data import CODES_INDEX, check_codes, code_file, read_codes_index

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

    Raises (on construction):
        DatasetFileError: no readable ``codes_index.json`` of the current format in ``codes_dir``.
        ProvenanceError: ``vq_checkpoint`` is not the checkpoint the codes were encoded with, or
            ``nb_code`` differs from the index's.
    """

    codes_dir: str | Path
    resolver: MotionResolver
    nb_code: int | None = None
    """Codebook size; ``None`` = the index's ``nb_code``."""
    vq_checkpoint: str | Path | None = None
    """The VQ-VAE checkpoint the caller works with; its sha256 must be the index's (``None``: no check)."""
    check_motions: bool = True
    """Check each accessed item's motion file against the sha256 its codes were encoded from."""
    index: dict = field(default_factory=dict, init=False, repr=False)
    unchecked: set[Path] = field(default_factory=set, init=False, repr=False)
    """Code files read whose motion could not be checked (no motion file, or none recorded); counted, not hidden."""
    _cache: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)
    _motions_checked: set[Path] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.index = read_codes_index(self.codes_dir)
        where = Path(self.codes_dir) / CODES_INDEX
        if self.nb_code is None:
            self.nb_code = int(self.index.get("nb_code", DEFAULT_NB_CODE))
        elif self.nb_code != self.index.get("nb_code", self.nb_code):
            raise ProvenanceError(
                f"code files in {self.codes_dir} use a codebook of {self.index['nb_code']} codes ({where}), "
                f"this source was configured with nb_code={self.nb_code}; use the VQ-VAE they were made with"
            )
        if self.vq_checkpoint is not None:
            sha = file_sha256(self.vq_checkpoint)
            if sha != self.index.get("checkpoint_sha256"):
                raise ProvenanceError(
                    f"code files in {self.codes_dir} were encoded with VQ-VAE checkpoint "
                    f"{self.index.get('checkpoint')} (sha256 {str(self.index.get('checkpoint_sha256'))[:16]}, "
                    f"{where}), but the configured checkpoint is {self.vq_checkpoint} (sha256 {sha[:16]}). "
                    f"Tokenise with this checkpoint (python -m prepare.tokenize_motions "
                    f"vq_checkpoint={self.vq_checkpoint} output_dir=<new folder>) or configure the checkpoint "
                    "the codes were made with"
                )

    def path(self, ref: MotionRef) -> Path:
        """The code file of ``ref``: the clip's, or its window's when the ref has a window."""
        mid = self.resolver.file_id(ref)
        win = ref.frame_window(self.resolver.spec.fps)
        return code_file(self.codes_dir, mid) if win is None else window_code_file(self.codes_dir, mid, win)

    def rows(self, ref: MotionRef) -> np.ndarray:
        """All crop rows ``(K, N)`` of ``ref``'s clip or window."""
        path = self.path(ref)
        if path not in self._cache:
            mid = self.resolver.file_id(ref)
            win = ref.frame_window(self.resolver.spec.fps)
            if not path.is_file():
                if win is not None:
                    raise WindowCodesMissingError(ref, mid, path)
                raise MotionMissingError(ref.motion_name, mid, [path])
            key = mid if win is None else f"{mid}_{win[0]}_{win[1]}"
            entry = self.index["entries" if win is None else "windows"].get(key)
            if entry is None:
                raise ProvenanceError(
                    f"{path} is not listed in {Path(self.codes_dir) / CODES_INDEX} (left by another "
                    "tokenisation?), so what it was encoded from is unknown; re-run prepare.tokenize_motions"
                )
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if sha != entry.get("codes_sha256"):
                raise ProvenanceError(
                    f"{path}: sha256 {sha[:16]}, but {CODES_INDEX} records {str(entry.get('codes_sha256'))[:16]} "
                    "for it (the file changed after tokenisation); re-run prepare.tokenize_motions"
                )
            if self.check_motions:
                self._check_motion(ref, path, entry)
            self._cache[path] = self._read(path, data)
        return self._cache[path]

    def _check_motion(self, ref: MotionRef, codes_path: Path, entry: dict) -> None:
        try:
            motion = self.resolver.path(ref)
        except MotionMissingError:  # codes without their motion (e.g. released codes): nothing to check
            self.unchecked.add(codes_path)
            return
        if motion in self._motions_checked:
            return
        if entry.get("motion_sha256") is None:  # indexed without its motion (index_code_files)
            self.unchecked.add(codes_path)
            return
        st = motion.stat()
        if not (st.st_size == entry.get("motion_size") and st.st_mtime_ns == entry.get("motion_mtime_ns")):
            sha = file_sha256(motion)
            if sha != entry.get("motion_sha256"):
                raise ProvenanceError(
                    f"{codes_path} was encoded from a motion with sha256 {str(entry.get('motion_sha256'))[:16]}; "
                    f"{motion} now has sha256 {sha[:16]} (the motion changed after tokenisation, e.g. "
                    "re-rendered by data.engine). Re-run prepare.tokenize_motions: it re-encodes changed motions"
                )
        self._motions_checked.add(motion)

    def _read(self, path: Path, data: bytes) -> np.ndarray:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.ndim != 1:
            return check_codes(arr, path, self.nb_code)
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
