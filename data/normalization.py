"""Feature normalisation: one mean/std pair, where its files live, and moving between two pairs.

Every normalisation in the project goes through this module (spec ``motion-vq-evaluation.md``
section 2). A pair is two float32 ``(D,)`` arrays, and three families of files hold them::

    <dataset_root>/Mean.npy, <dataset_root>/Std.npy     dataset statistics (HumanML3D layout)
    <vq run>/meta/mean.npy, <vq run>/meta/std.npy       what a VQ-VAE reads and writes
    <evaluator run>/meta/mean.npy, .../meta/std.npy     what the Guo evaluator reads

``FeatureNorm`` is one validated pair with ``normalise``/``denormalise`` for numpy arrays and torch
tensors of any batch shape ``(..., D)``; ``resolve_norm_files`` is the one place that decides which
files a run uses (explicit files, else the checkpoint's ``meta/`` folder, else the dataset's
``Mean.npy``/``Std.npy``); ``FeatureNorm.save`` writes a run folder's ``meta/``. ``EvalSpaceMap``
maps features from a generator's space into the evaluator's,
``x_eval = ((x_src * std_src + mean_src) - mean_eval) / std_eval``, and ``check_eval_space`` catches
batches that are visibly not in the evaluator's space (raw or twice-normalised features).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from data.layout import DatasetFileError, DatasetPaths, load_npy
from data.specs import DatasetSpec, get_dataset_spec

logger = logging.getLogger(__name__)

META_DIR = "meta"
"""Folder beside a VQ-VAE or evaluator checkpoint that holds its normalisation (released layout)."""
META_MEAN, META_STD = "mean.npy", "std.npy"
"""File names inside ``META_DIR`` (the dataset's are ``Mean.npy``/``Std.npy``, see ``DatasetPaths``)."""

Features = TypeVar("Features", np.ndarray, torch.Tensor)


class NormalisationError(ValueError):
    """Motions handed to the evaluator are visibly not in the evaluator's normalised space."""


# ----------------------------------------------------------------------------------------------
# Where the files live
# ----------------------------------------------------------------------------------------------


def meta_files(meta_dir: str | Path) -> tuple[Path, Path]:
    """``<meta_dir>/mean.npy`` and ``<meta_dir>/std.npy``: the normalisation folder a trained
    VQ-VAE or evaluator keeps beside its checkpoint (the released ``meta/`` layout)."""
    meta_dir = Path(meta_dir)
    return meta_dir / META_MEAN, meta_dir / META_STD


def resolve_norm_files(
    mean_file: str | Path = "",
    std_file: str | Path = "",
    *,
    checkpoint: str | Path | None = None,
    dataset_root: str | Path | None = None,
) -> tuple[Path, Path]:
    """The mean and std files a run uses; each of the two is resolved on its own, first match wins.

    1. The explicit ``mean_file`` / ``std_file`` (a config field or CLI flag; empty = not given).
    2. With ``checkpoint``: ``<checkpoint dir>/meta/{mean,std}.npy``, which ``prepare.train_vq`` and
       ``prepare.train_evaluator`` write beside their checkpoints. Without ``dataset_root`` this is
       final even when the file is missing (loading then names it); with ``dataset_root`` too it is
       used only when it exists, and the fallback to the dataset's files is logged.
    3. With ``dataset_root``: ``<dataset_root>/Mean.npy`` / ``<dataset_root>/Std.npy``.

    Raises:
        ValueError: a file is not given and neither ``checkpoint`` nor ``dataset_root`` is.
    """
    meta = meta_files(Path(checkpoint).parent / META_DIR) if checkpoint else None
    paths = DatasetPaths(dataset_root) if dataset_root else None
    dataset = (paths.mean_file, paths.std_file) if paths else None
    out = []
    for k, (given, what) in enumerate(((mean_file, "mean_file"), (std_file, "std_file"))):
        if given:
            out.append(Path(given))
        elif meta is not None and (dataset is None or meta[k].is_file()):
            out.append(meta[k])
        elif dataset is not None:
            if meta is not None:
                logger.warning(
                    "no %s next to checkpoint %s: falling back to the dataset's %s",
                    meta[k].name, checkpoint, dataset[k],
                )  # fmt: skip
            out.append(dataset[k])
        else:
            raise ValueError(
                f"{what} is empty and neither a checkpoint nor a dataset_root to find it in was given"
            )
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# One mean/std pair
# ----------------------------------------------------------------------------------------------


def _checked_pair(
    mean: np.ndarray, std: np.ndarray, names: tuple[str, str], spec: DatasetSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The pair as float32 ``(D,)`` arrays, checked: same shape (``(spec.feat_dim,)`` when given), finite, std > 0.

    Errors are ``DatasetFileError`` and start with ``names`` (the files, when loaded from disk).
    """
    out = []
    for arr, name in zip((mean, std), names, strict=True):
        arr = np.asarray(arr, dtype=np.float32)
        if spec is not None and arr.shape != (spec.feat_dim,):
            raise DatasetFileError(
                f"{name}: shape {arr.shape}, expected ({spec.feat_dim},) for {spec.name!r}"
            )
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise DatasetFileError(f"{name}: shape {arr.shape}, expected a (D,) vector")
        if not np.isfinite(arr).all():
            raise DatasetFileError(f"{name}: contains NaN or inf")
        out.append(arr)
    if out[0].shape != out[1].shape:
        raise DatasetFileError(f"{names[1]}: shape {out[1].shape} differs from {names[0]}: {out[0].shape}")
    if (out[1] <= 0).any():
        bad = np.flatnonzero(out[1] <= 0)
        raise DatasetFileError(
            f"{names[1]}: {bad.size} non-positive std entries (dims {bad[:5].tolist()}); a constant "
            "feature needs a positive std (e.g. 1) when the file is written"
        )
    return out[0], out[1]


@dataclass(frozen=True)
class FeatureNorm:
    """One ``(D,)`` mean/std pair: ``normalise(x) = (x - mean) / std``, ``denormalise`` its inverse.

    Construction validates the pair (float32, same ``(D,)`` shape, finite, std > 0) and raises
    ``DatasetFileError`` naming ``source``. Both directions accept a numpy array or a torch tensor
    of shape ``(..., D)`` (any batch dims). Numpy results are float32; torch results keep the input's
    floating dtype and device.
    """

    mean: np.ndarray
    std: np.ndarray
    source: str = ""
    """Where the pair came from (a meta folder or dataset root), for logs, results and errors."""

    def __post_init__(self) -> None:
        what = self.source or "FeatureNorm"
        mean, std = _checked_pair(self.mean, self.std, (f"{what} mean", f"{what} std"))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        """Feature dim D."""
        return int(self.mean.shape[0])

    def _check_features(self, x: np.ndarray | torch.Tensor) -> None:
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"features of shape {tuple(x.shape)} do not end in D={self.dim} of the normalisation "
                f"{self.source or '(unnamed)'}"
            )

    def _torch_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mean = torch.as_tensor(self.mean, device=x.device).to(dtype)
        std = torch.as_tensor(self.std, device=x.device).to(dtype)
        return mean, std

    def normalise(self, x: Features) -> Features:
        """Raw ``(..., D)`` features -> normalised (a new array or tensor)."""
        if isinstance(x, torch.Tensor):
            self._check_features(x)
            mean, std = self._torch_pair(x)
            return (x - mean) / std
        x = np.asarray(x)
        self._check_features(x)
        return ((x - self.mean) / self.std).astype(np.float32)

    def denormalise(self, x: Features) -> Features:
        """Normalised ``(..., D)`` features -> raw (a new array or tensor)."""
        if isinstance(x, torch.Tensor):
            self._check_features(x)
            mean, std = self._torch_pair(x)
            return x * std + mean
        x = np.asarray(x)
        self._check_features(x)
        return (x * self.std + self.mean).astype(np.float32)

    @classmethod
    def from_arrays(
        cls, mean: np.ndarray, std: np.ndarray, dataset: str | DatasetSpec, source: str = ""
    ) -> FeatureNorm:
        """A pair held in memory, also checked against the dataset's feature dim."""
        spec = get_dataset_spec(dataset)
        what = source or "normalisation"
        mean, std = _checked_pair(mean, std, (f"{what} mean", f"{what} std"), spec)
        return cls(mean=mean, std=std, source=source)

    @classmethod
    def load(cls, mean_file: str | Path, std_file: str | Path, dataset: str | DatasetSpec) -> FeatureNorm:
        """Load two ``(D,)`` files; errors name the file (missing, unreadable, shape, NaN, std <= 0)."""
        spec = get_dataset_spec(dataset)
        mean = load_npy(mean_file, "normalisation file")
        std = load_npy(std_file, "normalisation file")
        mean, std = _checked_pair(mean, std, (str(mean_file), str(std_file)), spec)
        return cls(mean=mean, std=std, source=str(Path(mean_file).parent))

    @classmethod
    def load_meta(cls, meta_dir: str | Path, dataset: str | DatasetSpec) -> FeatureNorm:
        """Load ``<meta_dir>/mean.npy`` and ``<meta_dir>/std.npy`` (an evaluator or VQ ``meta`` folder)."""
        return cls.load(*meta_files(meta_dir), dataset)

    @classmethod
    def resolve(
        cls,
        dataset: str | DatasetSpec,
        mean_file: str | Path = "",
        std_file: str | Path = "",
        *,
        checkpoint: str | Path | None = None,
        dataset_root: str | Path | None = None,
    ) -> FeatureNorm:
        """Load the pair ``resolve_norm_files`` picks (explicit files, checkpoint ``meta/``, dataset)."""
        files = resolve_norm_files(mean_file, std_file, checkpoint=checkpoint, dataset_root=dataset_root)
        return cls.load(*files, dataset)

    @classmethod
    def identity(cls, dim: int) -> FeatureNorm:
        """Raw features (mean 0, std 1)."""
        return cls(mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32), source="raw")

    def save(self, meta_dir: str | Path) -> tuple[Path, Path]:
        """Write ``<meta_dir>/{mean,std}.npy`` (creates the folder); returns the two paths."""
        mean_file, std_file = meta_files(meta_dir)
        mean_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(mean_file, self.mean)
        np.save(std_file, self.std)
        return mean_file, std_file


# ----------------------------------------------------------------------------------------------
# Between two pairs (spec section 2)
# ----------------------------------------------------------------------------------------------


class EvalSpaceMap:
    """``x_eval = ((x_src * std_src + mean_src) - mean_eval) / std_eval`` (spec section 2).

    ``source`` is the space a generator's motions are in (VQ meta, raw = ``FeatureNorm.identity``),
    ``target`` the evaluator's. Logs ``max|Δmean|`` and ``max|Δstd|`` between the two pairs once;
    with the standard released files the map is the identity (and is then skipped exactly).
    """

    def __init__(self, source: FeatureNorm, target: FeatureNorm):
        if source.mean.shape != target.mean.shape:
            raise ValueError(
                f"normalisation dims differ: {source.source} has {source.mean.shape}, evaluator "
                f"{target.source} has {target.mean.shape}"
            )
        self.source, self.target = source, target
        self.max_abs_dmean = float(np.abs(source.mean - target.mean).max())
        self.max_abs_dstd = float(np.abs(source.std - target.std).max())
        self.identity = self.max_abs_dmean == 0.0 and self.max_abs_dstd == 0.0
        logger.info(
            "normalisation %s -> evaluator %s: max|dmean|=%.3g max|dstd|=%.3g%s",
            source.source, target.source, self.max_abs_dmean, self.max_abs_dstd,
            " (identity)" if self.identity else "",
        )  # fmt: skip

    def __call__(self, x: Features) -> Features:
        """``(..., D)`` features in the source space -> evaluator space (numpy: float32)."""
        if isinstance(x, torch.Tensor):
            return x if self.identity else self.target.normalise(self.source.denormalise(x))
        x = np.asarray(x, dtype=np.float32)
        return x if self.identity else self.target.normalise(self.source.denormalise(x))


@dataclass(frozen=True)
class SpaceStats:
    """Summary of a batch in the evaluator's space (what ``check_eval_space`` tests)."""

    median_abs_mean: float
    """Median over feature dims of ``|mean over valid frames|``; ~0 for correctly normalised data."""
    median_std: float
    """Median over feature dims of the std over valid frames; ~1 for correctly normalised data."""
    frames: int


def eval_space_stats(motions: np.ndarray, lengths: np.ndarray) -> SpaceStats:
    """Per-dim statistics over the valid frames of a padded ``(B, T, D)`` batch.

    Medians over dims are used because the feat_bias dims (root and contacts) legitimately have
    std ~5-25 after the evaluator's normalisation.
    """
    mask = np.arange(motions.shape[1])[None, :] < np.asarray(lengths)[:, None]
    frames = motions[mask].astype(np.float64)
    return SpaceStats(
        median_abs_mean=float(np.median(np.abs(frames.mean(0)))),
        median_std=float(np.median(frames.std(0))),
        frames=int(frames.shape[0]),
    )


def check_eval_space(
    motions: np.ndarray,
    lengths: np.ndarray,
    what: str,
    max_abs_mean: float = 1.0,
    std_range: tuple[float, float] = (0.4, 2.5),
    strict: bool = True,
) -> SpaceStats:
    """Raise ``NormalisationError`` (or warn with ``strict=False``) when a padded ``(B, T, D)``
    batch is visibly not in the evaluator's space.

    Ground truth normalised with the evaluator's meta has median |per-dim mean| well under 1 and
    median per-dim std near 1 (0.5-1.5 on HumanML3D-style data, whose Std.npy averages the std
    inside each feature block). Raw features (median std ~0.1-0.3: velocities ~0.02, positions
    ~0.1, rotations ~0.3) or doubly normalised ones (std and |mean| ~3-10) fall outside the bounds;
    the tests check both cases. A per-dim mix-up (dataset Std vs evaluator
    meta, which differ in the 8 feat_bias dims only) is not visible here: ``EvalSpaceMap`` logs it.
    Batches with fewer than 32 valid frames are not judged.
    """
    stats = eval_space_stats(motions, lengths)
    lo, hi = std_range
    if stats.frames >= 32 and not (stats.median_abs_mean <= max_abs_mean and lo <= stats.median_std <= hi):
        msg = (
            f"{what}: motions do not look normalised with the evaluator's mean/std (median |mean| over "
            f"dims {stats.median_abs_mean:.3g}, expected <= {max_abs_mean}; median std {stats.median_std:.3g}, "
            f"expected in [{lo}, {hi}]). Declare the space the motions are in (raw, VQ meta or evaluator "
            "meta) so they are mapped with x_eval = ((x*std_src+mean_src)-mean_eval)/std_eval"
        )
        if strict:
            raise NormalisationError(msg)
        logger.warning(msg)
    return stats
