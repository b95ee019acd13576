"""Reading the HumanML3D folder layout (also used by KIT-ML and SynthML).

```
<root>/new_joint_vecs/<id>.npy   float32 (T, D)
<root>/new_joints/<id>.npy       float32 (T, J, 3)
<root>/texts/<id>.txt            caption#word/POS ...#from#to   (one per line)
<root>/{train,val,test,train_val,all}.txt
<root>/Mean.npy, <root>/Std.npy  float32 (D,)   (read through ``data.normalization``)
```

Every reader validates what it returns and raises ``DatasetFileError`` naming the file (and line
or field) and how to fix it. ``SkipTracker`` implements the "skip when the user asked to" policy:
skips are counted, the first few logged, and a threshold turns too many skips into an error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.specs import DatasetSpec, get_dataset_spec

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "train_val", "all")


class DatasetFileError(ValueError):
    """A dataset file is missing or malformed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class DatasetPaths:
    """Paths inside one dataset root."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def vecs_dir(self) -> Path:
        return self.root / "new_joint_vecs"

    @property
    def joints_dir(self) -> Path:
        return self.root / "new_joints"

    @property
    def texts_dir(self) -> Path:
        return self.root / "texts"

    @property
    def attributes_dir(self) -> Path:
        return self.root / "attributes"

    @property
    def mean_file(self) -> Path:
        return self.root / "Mean.npy"

    @property
    def std_file(self) -> Path:
        return self.root / "Std.npy"

    def split_file(self, split: str) -> Path:
        return self.root / f"{split}.txt"

    def vec_file(self, motion_id: str) -> Path:
        return self.vecs_dir / f"{motion_id}.npy"

    def joint_file(self, motion_id: str) -> Path:
        return self.joints_dir / f"{motion_id}.npy"

    def text_file(self, motion_id: str) -> Path:
        return self.texts_dir / f"{motion_id}.txt"

    def attributes_file(self, motion_id: str) -> Path:
        return self.attributes_dir / f"{motion_id}.json"


@dataclass(frozen=True)
class CaptionLine:
    """One line of a ``texts/<id>.txt`` file."""

    caption: str
    tokens: tuple[str, ...]
    """``word/POS`` tokens."""
    start: float = 0.0
    """Sub-clip start in seconds (``0`` with ``end == 0`` means the whole clip)."""
    end: float = 0.0

    @property
    def whole_clip(self) -> bool:
        return self.start == 0.0 and self.end == 0.0

    def frame_range(self, fps: float) -> tuple[int, int]:
        """``[int(from*fps), int(to*fps))`` as the published loaders cut sub-clips."""
        return int(self.start * fps), int(self.end * fps)

    def to_line(self) -> str:
        return f"{self.caption}#{' '.join(self.tokens)}#{self.start}#{self.end}"


def read_split(root: str | Path, split: str) -> list[str]:
    """Ids listed in ``<root>/<split>.txt`` (blank lines ignored, order kept)."""
    path = DatasetPaths(root).split_file(split)
    if not path.is_file():
        present = sorted(p.name for p in Path(root).glob("*.txt")) if Path(root).is_dir() else []
        raise DatasetFileError(
            f"split file not found: {path} (split={split!r}; present: {present or 'none'}). "
            "Point dataset_root at a folder in the HumanML3D layout, or build one with "
            "`python -m data.synth --out DIR`."
        )
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetFileError(f"split file is empty: {path}")
    return ids


def _parse_seconds(value: str, path: Path, lineno: int, name: str) -> float:
    try:
        x = float(value)
    except ValueError as err:
        raise DatasetFileError(
            f"{path}:{lineno}: field {name!r} is {value!r}, expected seconds as a number"
        ) from err
    return 0.0 if math.isnan(x) else x


def parse_caption_line(line: str, path: Path | str = "<string>", lineno: int = 1) -> CaptionLine:
    """Parse ``caption#tok/POS tok/POS#from#to``. NaN times count as 0 (whole clip)."""
    parts = line.rstrip("\n").split("#")
    if len(parts) != 4:
        raise DatasetFileError(
            f"{path}:{lineno}: expected 4 '#'-separated fields (caption#tokens#from#to), "
            f"got {len(parts)}: {line.strip()[:80]!r}"
        )
    caption, toks, start, end = parts
    tokens = tuple(toks.split())
    bad = [t for t in tokens if t.count("/") != 1 or t.startswith("/") or t.endswith("/")]
    if bad:
        raise DatasetFileError(f"{path}:{lineno}: tokens must look like word/POS, got {bad[:3]}")
    if not caption.strip():
        raise DatasetFileError(f"{path}:{lineno}: empty caption")
    path = Path(path)
    return CaptionLine(
        caption=caption.strip(),
        tokens=tokens,
        start=_parse_seconds(start, path, lineno, "from"),
        end=_parse_seconds(end, path, lineno, "to"),
    )


def read_captions(path: str | Path) -> list[CaptionLine]:
    """All caption lines of a ``texts/<id>.txt`` file (blank lines ignored; at least one required)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"caption file not found: {path}")
    lines = [
        parse_caption_line(raw, path, i + 1)
        for i, raw in enumerate(path.read_text().splitlines())
        if raw.strip()
    ]
    if not lines:
        raise DatasetFileError(f"caption file has no captions: {path}")
    return lines


def load_npy(path: str | Path, what: str, hint: str = "") -> np.ndarray:
    """``np.load`` without pickles; a missing or unreadable file raises ``DatasetFileError``.

    Args:
        what: the file's role in messages (``"motion file"``, ``"code file"``, ...).
        hint: appended to the not-found message (how to make the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"{what} not found: {path}{hint}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetFileError(f"cannot read {what} {path}: {err}") from err


def load_features(path: str | Path, spec: DatasetSpec | str) -> np.ndarray:
    """Load a ``new_joint_vecs`` file as float32 ``(T, D)``; validates shape and finiteness."""
    spec = get_dataset_spec(spec)
    path = Path(path)
    arr = load_npy(path, "motion file")
    if arr.ndim != 2 or arr.shape[1] != spec.feat_dim:
        raise DatasetFileError(
            f"{path}: shape {arr.shape}, expected (T, {spec.feat_dim}) features for dataset "
            f"{spec.name!r} (wrong dataset or a new_joints file in new_joint_vecs?)"
        )
    if arr.shape[0] == 0:
        raise DatasetFileError(f"{path}: empty motion (0 frames)")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DatasetFileError(f"{path}: {bad} frame(s) contain NaN or inf")
    return arr.astype(np.float32, copy=False)


def load_joints(path: str | Path, spec: DatasetSpec | str) -> np.ndarray:
    """Load a ``new_joints`` file as float32 ``(T, J, 3)``; validates shape and finiteness."""
    spec = get_dataset_spec(spec)
    path = Path(path)
    arr = load_npy(path, "joints file")
    if arr.ndim != 3 or arr.shape[1:] != (spec.joints_num, 3) or arr.shape[0] == 0:
        raise DatasetFileError(
            f"{path}: shape {arr.shape}, expected (T>0, {spec.joints_num}, 3) for dataset {spec.name!r}"
        )
    if not np.isfinite(arr).all():
        raise DatasetFileError(f"{path}: contains NaN or inf")
    return arr.astype(np.float32, copy=False)


@dataclass
class SkipTracker:
    """Counts skipped samples under ``on_error='skip'``; raises above ``max_skip_fraction``.

    With ``on_error='raise'`` the first problem is re-raised unchanged.
    """

    what: str
    on_error: str = "raise"
    max_skip_fraction: float = 0.05
    log_first: int = 5
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seen: int = 0

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def record(self, key: str, err: Exception) -> None:
        """Record a failure for ``key``; raises when ``on_error='raise'``."""
        if self.on_error == "raise":
            raise err
        self.skipped.append((key, str(err)))
        if len(self.skipped) <= self.log_first:
            logger.warning("%s: skipping %s: %s", self.what, key, err)

    def finish(self) -> None:
        """Log the skip count and raise if the skipped fraction exceeds the threshold."""
        n = len(self.skipped)
        if n:
            frac = n / max(self.seen, 1)
            logger.warning("%s: skipped %d of %d (%.1f%%)", self.what, n, self.seen, 100 * frac)
            if frac > self.max_skip_fraction:
                raise DatasetFileError(
                    f"{self.what}: {n} of {self.seen} samples skipped ({100 * frac:.1f}%), above "
                    f"max_skip_fraction={self.max_skip_fraction}; first: {self.skipped[0][0]}: "
                    f"{self.skipped[0][1]}"
                )
