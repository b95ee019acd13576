"""Motion clips for the VQ-VAE: loading, normalisation and seeded random training windows.

Reads the HumanML3D layout through ``data.layout`` (train split, ``new_joint_vecs``) and works in
the VQ's own normalised space ``(x - mean) / std`` (a ``data.normalization.FeatureNorm``; spec
``motion-vq-evaluation.md`` §2, item 3).

Training batches are a pure function of ``(seed, step)``: step ``s`` belongs to epoch
``s // batches_per_epoch``, whose clip order is a permutation drawn from
``np.random.default_rng([seed, epoch])``; window starts come from ``default_rng([seed, epoch, j])``.
So a resumed run sees exactly the batches an uninterrupted run would, with no sampler state to save.
Like the reference (shuffle + ``drop_last``), each epoch uses ``len // batch_size`` full batches.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.layout import (
    DatasetFileError,
    DatasetPaths,
    SkipTracker,
    load_features,
    load_npy,
    read_split,
)
from data.normalization import FeatureNorm
from data.progress import progress_bar
from data.run_folder import atomic_write_bytes, atomic_write_text, file_sha256
from data.specs import DatasetSpec, get_dataset_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """One motion clip in normalised space."""

    motion_id: str
    motion: np.ndarray
    """(T, D) float32, normalised."""


def load_clips(
    dataset_root: str | Path,
    split: str,
    spec: DatasetSpec | str,
    norm: FeatureNorm,
    *,
    min_len: int = 1,
    max_motions: int = 0,
    tracker: SkipTracker | None = None,
    progress: bool = True,
) -> list[Clip]:
    """Load every clip of ``split`` with at least ``min_len`` frames, normalised with ``norm``.

    Unreadable or malformed files go through ``tracker`` (raise by default, or counted skips);
    clips shorter than ``min_len`` are a documented filter (the reference VQ loader drops clips
    shorter than its window) and their number is logged.

    Args:
        max_motions: keep only the first N ids of the split (0 = all).
    Returns:
        list of :class:`Clip`, in split order.
    """
    spec = get_dataset_spec(spec)
    paths = DatasetPaths(dataset_root)
    ids = read_split(dataset_root, split)
    if max_motions > 0:
        ids = ids[:max_motions]
    tracker = tracker or SkipTracker(what=f"{split} motions")
    clips: list[Clip] = []
    too_short = 0
    for motion_id in progress_bar(ids, desc=f"load {split}", disable=not progress, leave=False):
        tracker.seen += 1
        try:
            feats = load_features(paths.vec_file(motion_id), spec)
        except DatasetFileError as err:
            tracker.record(motion_id, err)
            continue
        if feats.shape[0] < min_len:
            too_short += 1
            continue
        clips.append(Clip(motion_id, norm.normalise(feats)))
    tracker.finish()
    logger.info(
        "%s/%s: %d clips kept, %d shorter than %d frames left out, %d unreadable skipped",
        paths.root, split, len(clips), too_short, min_len, len(tracker.skipped),
    )  # fmt: skip
    return clips


class MotionWindows:
    """Seeded random fixed-length windows over a list of clips.

    Args:
        clips: normalised clips, each at least ``window`` frames long.
        window: frames per training window (64 in the published recipe).
        batch_size: windows per batch.
        seed: base seed of the permutation and window draws.
    """

    def __init__(self, clips: list[Clip], window: int, batch_size: int, seed: int):
        short = [c.motion_id for c in clips if c.motion.shape[0] < window]
        if short:
            raise ValueError(
                f"MotionWindows: {len(short)} clips shorter than window={window}, e.g. {short[:3]}"
            )
        if len(clips) < batch_size:
            raise ValueError(
                f"MotionWindows: {len(clips)} clips of >= {window} frames is fewer than batch_size="
                f"{batch_size}; lower batch_size or window_size, or use more data"
            )
        self.clips, self.window, self.batch_size, self.seed = clips, window, batch_size, seed
        self.batches_per_epoch = len(clips) // batch_size

    def __len__(self) -> int:
        return len(self.clips)

    def batch_plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(clip indices (B,), window starts (B,)) of the 0-based ``step``."""
        epoch, j = divmod(step, self.batches_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
        idx = perm[j * self.batch_size : (j + 1) * self.batch_size]
        highs = np.array([self.clips[i].motion.shape[0] - self.window + 1 for i in idx])
        starts = np.random.default_rng([self.seed, epoch, j]).integers(0, highs)
        return idx, starts

    def batch(self, step: int) -> torch.Tensor:
        """(B, window, D) float32 windows of the 0-based ``step``."""
        idx, starts = self.batch_plan(step)
        w = self.window
        return torch.from_numpy(
            np.stack([self.clips[i].motion[s : s + w] for i, s in zip(idx, starts, strict=True)])
        )


# ----------------------------------------------------------------------------------------------
# Per-motion code files (written by ``prepare/tokenize_motions.py``, read by the SFT/RL datasets)
# ----------------------------------------------------------------------------------------------

CODES_INDEX = "codes_index.json"
"""Index file in a codes folder: provenance (checkpoint, normalisation, per-item motion sha256) and
per-id frames/offsets/code count (``models.vq_tokenize`` documents the fields)."""
CODES_INDEX_FORMAT = "codes-index/2"
"""Format of :data:`CODES_INDEX`; version 2 added the content hashes the code sources check."""


def code_file(codes_dir: str | Path, motion_id: str) -> Path:
    """``<codes_dir>/<id>.npy``."""
    return Path(codes_dir) / f"{motion_id}.npy"


def code_file_bytes(codes: np.ndarray) -> bytes:
    """The ``.npy`` bytes of a ``(K, N)`` int64 code file (see :func:`write_code_file`).

    Raises:
        ValueError: ``codes`` is not 2-D with at least one row.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise ValueError(f"write_code_file: codes must be (K>=1, N), got {codes.shape}")
    buf = io.BytesIO()
    np.save(buf, codes.astype(np.int64), allow_pickle=False)
    return buf.getvalue()


def write_code_file(path: str | Path, codes: np.ndarray, *, tag: str = "") -> str:
    """Save ``(K, N)`` int64 codes atomically; returns the file's sha256.

    Row k = the clip cropped to ``N * 4`` frames starting at frame k. ``K`` is the number of crop
    offsets (the published loaders pick one start in ``[0, T - 4N]`` at random per access, so the
    offsets are the whole augmentation); ``N = 0`` marks a clip shorter than one code (rendered as
    an empty motion span).
    """
    return atomic_write_bytes(path, code_file_bytes(codes), tag=tag)


def index_code_files(
    codes_dir: str | Path,
    dataset_root: str | Path,
    *,
    nb_code: int = 512,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Write a :data:`CODES_INDEX` for code files made outside ``prepare.tokenize_motions``.

    For code files from elsewhere (e.g. released with a dataset, or written by hand in a test):
    records the sha256 of every ``<id>.npy`` and ``windows/<id>_<start>_<end>.npy`` and of the motion
    ``<dataset_root>/new_joint_vecs/<id>.npy`` it stands for (``null`` when there is none), so that
    code sources can check them from now on. ``checkpoint``: the VQ-VAE they were made with, if known
    (its sha256 is recorded; otherwise ``"unknown"``, which no configured checkpoint matches).
    Returns the index (written atomically).
    """
    codes_dir = Path(codes_dir)
    paths = DatasetPaths(dataset_root)

    def entry(code: Path, mid: str) -> dict[str, Any]:
        motion = paths.vec_file(mid)
        st = motion.stat() if motion.is_file() else None
        return {
            "motion_sha256": file_sha256(motion) if st else None,
            "motion_size": st.st_size if st else None,
            "motion_mtime_ns": st.st_mtime_ns if st else None,
            "codes_sha256": file_sha256(code),
        }

    windows = {}
    for p in sorted((codes_dir / "windows").glob("*.npy")):
        mid, start, end = p.stem.rsplit("_", 2)
        windows[p.stem] = {"id": mid, "window": [int(start), int(end)], **entry(p, mid)}
    index = {
        "format": CODES_INDEX_FORMAT,
        "checkpoint": str(checkpoint) if checkpoint else "unknown",
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else "unknown",
        "nb_code": nb_code,
        "dataset_root": str(dataset_root),
        "entries": {p.stem: entry(p, p.stem) for p in sorted(codes_dir.glob("*.npy"))},
        "windows": windows,
        "adopted": True,
    }
    atomic_write_text(codes_dir / CODES_INDEX, json.dumps(index, indent=1) + "\n")
    return index


def read_codes_index(codes_dir: str | Path) -> dict[str, Any]:
    """The :data:`CODES_INDEX` of a codes folder (format :data:`CODES_INDEX_FORMAT`).

    Raises:
        DatasetFileError: the index is missing, unreadable, or of an earlier format (whose code
            files carry no provenance); the fix is to tokenise again.
    """
    path = Path(codes_dir) / CODES_INDEX
    fix = f"run `python -m prepare.tokenize_motions output_dir={codes_dir} ...` to (re)write the code files"
    if not path.is_file():
        raise DatasetFileError(f"{path} not found: the code files' provenance is unknown; {fix}")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetFileError(f"{path}: unreadable codes index ({err}); {fix}") from err
    if not isinstance(index, dict) or index.get("format") != CODES_INDEX_FORMAT:
        got = index.get("format", "none") if isinstance(index, dict) else type(index).__name__
        raise DatasetFileError(
            f"{path}: codes index format {got!r}, expected {CODES_INDEX_FORMAT!r} (an earlier version "
            f"recorded no content hashes, so its codes cannot be checked against their motions); {fix}"
        )
    return index


def read_code_file(path: str | Path, nb_code: int = 512) -> np.ndarray:
    """Load a ``(K, N)`` code file and validate it (integer ids in ``[0, nb_code)``).

    Raises:
        DatasetFileError: missing/unreadable file, wrong rank or dtype, or an out-of-range code
            (names the file, row and position).
    """
    path = Path(path)
    codes = load_npy(path, "code file", "; run `python -m prepare.tokenize_motions` for this dataset")
    return check_codes(codes, path, nb_code)


def check_codes(codes: np.ndarray, path: str | Path, nb_code: int = 512) -> np.ndarray:
    """Validate loaded codes of ``path`` as :func:`read_code_file` does; returns them as int64."""
    if codes.ndim != 2 or codes.shape[0] < 1 or not np.issubdtype(codes.dtype, np.integer):
        raise DatasetFileError(f"{path}: expected (K>=1, N) integer codes, got {codes.shape} {codes.dtype}")
    bad = np.argwhere((codes < 0) | (codes >= nb_code))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        raise DatasetFileError(
            f"{path}: {len(bad)} code(s) outside 0..{nb_code - 1}, first at row {r}, position {c}: "
            f"{int(codes[r, c])} (made with a different codebook size?)"
        )
    return codes.astype(np.int64, copy=False)
