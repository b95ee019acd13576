"""Encode motions into per-motion code files (the library behind ``prepare/tokenize_motions.py``).

Format (read with :func:`data.vq_data.read_code_file`; the folder is a run folder of command
``prepare.tokenize_motions``, see :mod:`data.run_folder`)::

    <output_dir>/<id>.npy          int64 (K, N): row k = codes of frames [k, k + 4N), N = T // 4
    <output_dir>/windows/<id>_<start>_<end>.npy   the same for caption window [start, end) (frames)
    <output_dir>/codes_index.json  format (codes-index/2); provenance: checkpoint + checkpoint_sha256,
                                mean_file/std_file + their sha256, crops; nb_code, frames_per_code,
                                dataset, dataset_root, splits; per-id entries {frames, offsets,
                                n_codes, motion_sha256, motion_size, motion_mtime_ns, codes_sha256};
                                per-window entries (the same + id, window); empty and skipped ids;
                                counts (see :func:`tokenize_dataset`)

Reuse is keyed on content, not on ids: an existing code file is kept only when its index entry was
encoded from a motion file with the same sha256 (checked by size and mtime, else by hashing), with
the same checkpoint, mean/std (sha256) and crop setting, and the file itself still has its sha256;
anything else is encoded again (e.g. a motion the data engine re-rendered). Users of the files
(``data.motion_codes.CodesDirSource``) check the same hashes.

Augmentation (``sft-and-inference.md`` §4.3): the published SFT loader crops ``m = (T // 4) * 4``
frames at a random start in ``[0, T - m]`` (0-3 frames) and tokenises on the fly. With
``crops="all"`` every such start is pre-encoded (K = T - m + 1 rows), so a dataset that picks a
random row uniformly reproduces that distribution exactly; ``crops="first"`` keeps only start 0.
Clips shorter than one code get a ``(1, 0)`` file (the references render them as an empty motion
``<Motion></Motion>``) and are listed under ``empty`` in the index.

Caption windows (``windows=true``): a caption line ``text#tokens#from#to`` with ``from < to`` names a
sub-clip, and annotation entries reference it as ``{motion_name, f_tag, to_tag}``. Its codes are
encoded from the window's own frames ``[int(from * fps), int(to * fps))`` with the same crop rule
(``data.motion_codes.window_code_file``: ``<output_dir>/windows/<id>_<start>_<end>.npy``), not sliced
from the clip's codes: the encoder's dilated convolutions see across the cut, so a slice differs.

``VQCodeSource`` encodes refs on demand instead (no code files; the SFT loader of the reference does
the same), drawing the crop start from the caller's per-item ``rng``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from data.annotations import MotionRef, MotionResolver
from data.config import RunConfig
from data.layout import DatasetFileError, DatasetPaths, SkipTracker, load_features, read_captions, read_split
from data.motion_codes import crop_row, window_code_file
from data.normalization import FeatureNorm
from data.progress import progress_bar
from data.run_folder import OutputFolder, RunFolder, file_sha256
from data.specs import DatasetSpec, get_dataset_spec
from data.vq_data import CODES_INDEX, CODES_INDEX_FORMAT, code_file, code_file_bytes, read_codes_index
from models.vqvae import MotionVQVAE

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TokenizeConfig(RunConfig):
    """Tokenisation (``python -m prepare.tokenize_motions --config configs/<dataset>/tokenize.yaml``)."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "seed": "tokenisation draws nothing: every crop start is encoded (crops=all) or only start 0",
    }

    dataset_root: str = "dataset/HumanML3D"
    """Folder in the HumanML3D layout."""
    output_dir: str = "dataset/HumanML3D/VQVAE"
    """Folder for ``<id>.npy`` code files and ``codes_index.json``."""
    vq_checkpoint: str = "ckpt/vqvae.pth"
    """``{'net': state_dict}`` VQ-VAE checkpoint (released or ours)."""
    mean_file: str = ""
    """VQ normalisation mean; empty = ``<checkpoint dir>/meta/mean.npy``."""
    std_file: str = ""
    """VQ normalisation std; empty = ``<checkpoint dir>/meta/std.npy``."""
    splits: tuple[str, ...] = ("all",)
    """Splits whose ids are encoded (duplicates across splits are encoded once)."""
    crops: Literal["all", "first"] = "all"
    """Crop starts to pre-encode: every start in [0, T - 4N] (the SFT augmentation) or only 0."""
    batch_size: int = 64
    """Crops per encoder batch."""
    force: bool = False
    """Start the folder's run over and encode every item again (otherwise an item is kept when its
    motion, the checkpoint, mean/std and crops are the ones it was encoded from); also accepts a
    folder holding a run with another checkpoint, mean/std or config."""
    overwrite: bool = False
    """Accept an ``output_dir`` holding another command's run or files of other origin (they are not
    deleted; only this command's files are replaced)."""
    windows: bool = True
    """Also encode every caption window (``#from#to`` of ``texts/<id>.txt``) from its own frames."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if not self.splits:
            raise ValueError("splits must name at least one split")


def crop_offsets(n_frames: int, frames_per_code: int, crops: str) -> list[int]:
    """Start frames of the crops encoded for a clip of ``n_frames`` (empty when T < one code)."""
    m = (n_frames // frames_per_code) * frames_per_code
    if m == 0:
        return []
    return list(range(n_frames - m + 1)) if crops == "all" else [0]


@torch.no_grad()
def encode_crops(vq: MotionVQVAE, motion: np.ndarray, offsets: list[int]) -> np.ndarray:
    """Codes of one normalised clip (T, D) for each crop start: int64 (len(offsets), T // 4).

    Raises ValueError (from ``vq.encode``) for NaN frames; T must be at least one code long.
    """
    fpc = vq.frames_per_code
    m = (motion.shape[0] // fpc) * fpc
    if m == 0 or not offsets:
        raise ValueError(f"encode_crops: T={motion.shape[0]} frames is shorter than one code ({fpc} frames)")
    x = torch.from_numpy(np.stack([motion[o : o + m] for o in offsets]))
    return vq.encode(x).cpu().numpy().astype(np.int64)


def caption_windows(paths: DatasetPaths, motion_id: str, spec: DatasetSpec) -> list[tuple[int, int]]:
    """Frame windows ``[start, end)`` of the sub-clip captions in ``texts/<id>.txt`` (sorted, unique).

    Computed with ``MotionRef.frame_window``, the same rule the annotation loader uses, so a windowed
    ref finds its file. A clip without a caption file has none.
    """
    path = paths.text_file(motion_id)
    if not path.is_file():
        return []
    wins = {MotionRef(motion_id, line.start, line.end).frame_window(spec.fps) for line in read_captions(path)}
    return sorted(w for w in wins if w is not None)


@dataclass(frozen=True)
class _Item:
    """One code file to write: a whole clip (``window=None``) or one caption window of it."""

    motion_id: str
    window: tuple[int, int] | None
    path: Path

    @property
    def key(self) -> str:
        """Index key: the id, or ``<id>_<start>_<end>`` for a window."""
        return (
            self.motion_id if self.window is None else f"{self.motion_id}_{self.window[0]}_{self.window[1]}"
        )

    def frames(self, feats: np.ndarray) -> np.ndarray:
        """The item's frames of the whole clip's ``(T, D)`` features."""
        return feats if self.window is None else feats[self.window[0] : self.window[1]]


COUNTS = ("ids", "windows", "encoded", "reused", "reencoded_motion_changed", "reencoded_other",
          "empty", "skipped", "no_caption_file", "windows_past_clip_end")  # fmt: skip
"""``counts`` of ``codes_index.json`` (see :func:`tokenize_dataset`); each is written, 0 included."""


def _motion_hash(path: Path, old: dict | None) -> tuple[str, int, int]:
    """(sha256, size, mtime_ns) of a motion file; the sha256 of ``old`` is trusted when size and mtime match."""
    st = path.stat()
    if old and old.get("motion_size") == st.st_size and old.get("motion_mtime_ns") == st.st_mtime_ns:
        return old["motion_sha256"], st.st_size, st.st_mtime_ns
    return file_sha256(path), st.st_size, st.st_mtime_ns


def _reusable(old: dict | None, motion_sha: str, path: Path) -> bool:
    """``old`` was encoded from this motion content and its code file is unchanged."""
    if not old or old.get("motion_sha256") != motion_sha or "codes_sha256" not in old:
        return False
    return path.is_file() and file_sha256(path) == old["codes_sha256"]


def _same_provenance(old: dict, new: dict) -> bool:
    keys = ("checkpoint_sha256", "mean_sha256", "std_sha256", "crops", "frames_per_code", "dataset")
    return old.get("format") == CODES_INDEX_FORMAT and all(old.get(k) == new[k] for k in keys)


def tokenize_dataset(
    cfg: TokenizeConfig, vq: MotionVQVAE, norm: FeatureNorm, out: OutputFolder | None = None
) -> dict:
    """Encode every id of ``cfg.splits`` (and its caption windows) into ``cfg.output_dir``, normalised with
    ``norm`` (the VQ's pair, whose files ``cfg.mean_file``/``cfg.std_file`` name in the index); returns the index.

    Writes through ``out`` (the command's ``RunFolder``; default a manifest-free ``OutputFolder``),
    every file atomically. Items are reused by content (module docstring); when nothing changed the
    folder is not written at all and the stored index is returned. Items (clips and windows) are
    grouped into batches of equal crop length, so every crop is encoded exactly as alone. Files are
    validated in a first pass; each group's features are then re-read when the group is encoded, so
    memory holds one crop-length group at a time.

    ``counts`` in the index: ``ids``/``windows`` indexed, ``encoded`` (items encoded this call),
    ``reused``, ``reencoded_motion_changed`` (the motion's sha256 differs from the one its codes
    were made from), ``reencoded_other`` (code file missing or changed, other checkpoint/mean/std/
    crops, or ``force``), ``empty`` (shorter than one code), ``skipped`` (unreadable, with
    ``on_error=skip``), ``no_caption_file`` (clips without ``texts/<id>.txt``: no windows),
    ``windows_past_clip_end`` (windows cut at the clip's last frame).
    """
    spec = get_dataset_spec(cfg.dataset)
    if vq.nfeats != spec.feat_dim:
        raise ValueError(f"VQ-VAE has nfeats={vq.nfeats}, dataset {spec.name!r} has D={spec.feat_dim}")
    paths = DatasetPaths(cfg.dataset_root)
    out = out if out is not None else OutputFolder(cfg.output_dir)
    root = out.root
    provenance = {
        "checkpoint": str(cfg.vq_checkpoint),
        "checkpoint_sha256": file_sha256(cfg.vq_checkpoint),
        "mean_file": cfg.mean_file,
        "mean_sha256": file_sha256(cfg.mean_file) if cfg.mean_file else "",
        "std_file": cfg.std_file,
        "std_sha256": file_sha256(cfg.std_file) if cfg.std_file else "",
        "crops": cfg.crops,
        "frames_per_code": vq.frames_per_code,
        "dataset": spec.name,
    }
    index_path = root / CODES_INDEX
    stored: dict = {}
    if index_path.is_file():
        try:
            stored = read_codes_index(root)
        except DatasetFileError as err:
            logger.warning("%s; encoding every item again", err)
    reuse_ok = bool(stored) and not cfg.force and _same_provenance(stored, provenance)
    if stored and not reuse_ok and not cfg.force:
        logger.warning(
            "%s: made with other inputs (checkpoint, mean/std or crops); encoding every item again",
            index_path,
        )
    old_items = {**stored.get("entries", {}), **stored.get("windows", {})}
    ids = list(dict.fromkeys(i for split in cfg.splits for i in read_split(cfg.dataset_root, split)))
    tracker = SkipTracker("tokenise motions", on_error=cfg.on_error, max_skip_fraction=cfg.max_skip_fraction)
    counts = dict.fromkeys(COUNTS, 0)
    entries: dict[str, dict] = {}
    empty: list[str] = []
    kept: list[tuple[str, str]] = []  # (relative path, sha256) of reused files
    pending: dict[int, list[tuple[_Item, dict]]] = {}  # crop length -> (item, index entry)
    empty_todo: list[tuple[_Item, dict]] = []  # items shorter than one code
    for motion_id in progress_bar(ids, desc="load", disable=not cfg.progress, leave=False):
        tracker.seen += 1
        try:
            vec = paths.vec_file(motion_id)
            if not vec.is_file():
                load_features(vec, spec)  # raises the loader's message for a missing file
            motion_sha, size, mtime = _motion_hash(vec, old_items.get(motion_id))
            if cfg.windows and not paths.text_file(motion_id).is_file():
                counts["no_caption_file"] += 1
            windows = caption_windows(paths, motion_id, spec) if cfg.windows else []
            items = [_Item(motion_id, None, code_file(root, motion_id))]
            items += [_Item(motion_id, w, window_code_file(root, motion_id, w)) for w in windows]
            todo = []
            for it in items:
                old = old_items.get(it.key) if reuse_ok else None
                if _reusable(old, motion_sha, it.path):
                    entries[it.key] = {**old, "motion_size": size, "motion_mtime_ns": mtime}
                    kept.append((it.path.relative_to(root).as_posix(), old["codes_sha256"]))
                    if not old["offsets"]:
                        empty.append(it.key)
                    continue
                changed = old is not None and old.get("motion_sha256") != motion_sha
                counts["reencoded_motion_changed" if changed else "reencoded_other"] += (
                    old_items.get(it.key) is not None
                )
                todo.append(it)
            feats = load_features(vec, spec) if todo else None
        except DatasetFileError as err:
            tracker.record(motion_id, err)
            continue
        for it in todo:
            n = int(it.frames(feats).shape[0])
            if it.window is not None and it.window[1] > feats.shape[0]:
                counts["windows_past_clip_end"] += 1
            offsets = crop_offsets(n, vq.frames_per_code, cfg.crops)
            entry = {"frames": n, "offsets": offsets, "n_codes": n // vq.frames_per_code if offsets else 0,
                     "motion_sha256": motion_sha, "motion_size": size, "motion_mtime_ns": mtime}  # fmt: skip
            if it.window is not None:
                entry = {"id": motion_id, "window": list(it.window), **entry}
            entries[it.key] = entry
            if not offsets:
                empty_todo.append((it, entry))
                empty.append(it.key)
                continue
            m = (n // vq.frames_per_code) * vq.frames_per_code
            pending.setdefault(m, []).append((it, entry))
    tracker.finish()  # too many skips fail here, before anything is written
    for it, entry in empty_todo:
        entry["codes_sha256"] = _write_codes(out, it.path, np.zeros((1, 0), np.int64))
        counts["encoded"] += 1
    n_crops = sum(len(e["offsets"]) for group in pending.values() for _, e in group)
    bar = progress_bar(total=n_crops, desc="encode", disable=not cfg.progress, leave=False)
    for m, group in sorted(pending.items()):
        motions = [
            norm.normalise(it.frames(load_features(paths.vec_file(it.motion_id), spec))) for it, _ in group
        ]
        crops = [(i, o) for i, (_, entry) in enumerate(group) for o in entry["offsets"]]
        codes_by_item: dict[int, list[np.ndarray]] = {}
        for start in range(0, len(crops), cfg.batch_size):
            chunk = crops[start : start + cfg.batch_size]
            x = torch.from_numpy(np.stack([motions[i][o : o + m] for i, o in chunk]))
            try:
                codes = vq.encode(x).cpu().numpy()
            except ValueError as err:
                raise ValueError(
                    f"encoding ids {sorted({group[i][0].key for i, _ in chunk})[:5]}: {err}"
                ) from err
            for (i, _), row in zip(chunk, codes, strict=True):
                codes_by_item.setdefault(i, []).append(row)
            bar.update(len(chunk))
        for i, (it, entry) in enumerate(group):
            entry["codes_sha256"] = _write_codes(out, it.path, np.stack(codes_by_item[i]))
            counts["encoded"] += 1
    bar.close()
    clip_keys = [k for k in ids if k in entries]
    counts.update(ids=len(clip_keys), windows=len(entries) - len(clip_keys), reused=len(kept),
                  empty=len(empty), skipped=len(tracker.skipped))  # fmt: skip
    index = {
        "format": CODES_INDEX_FORMAT,
        **provenance,
        "nb_code": vq.nb_code,
        "dataset_root": str(cfg.dataset_root),
        "splits": list(cfg.splits),
        "entries": {k: entries[k] for k in clip_keys},
        "windows": {k: v for k, v in entries.items() if "window" in v},
        "empty": empty,
        "skipped": [{"id": k, "reason": r} for k, r in tracker.skipped],
        "counts": counts,
    }
    unchanged = stored and counts["encoded"] == 0 and _without_counts(stored) == _without_counts(index)
    if unchanged:
        logger.info("%s: every code file is up to date (%d reused); nothing written", root, len(kept))
        return stored
    for rel, sha in kept:  # a run started over keeps (does not remove) the files it reuses
        if not (isinstance(out, RunFolder) and out.has(rel)):
            out.record(rel, sha)
    out.write_text(CODES_INDEX, json.dumps(index, indent=1) + "\n")
    n_codes = [entries[k]["n_codes"] for k in clip_keys]
    logger.info(
        "tokenised %d ids and %d caption windows into %s (%d encoded, %d reused, %d re-encoded because "
        "the motion changed, %d empty, %d skipped); codes per clip min/mean/max %d/%.1f/%d",
        len(clip_keys), len(index["windows"]), root, counts["encoded"], len(kept),
        counts["reencoded_motion_changed"], len(empty), len(tracker.skipped),
        min(n_codes, default=0), float(np.mean(n_codes)) if n_codes else 0.0, max(n_codes, default=0),
    )  # fmt: skip
    return index


def _without_counts(index: dict) -> dict:
    """The index without ``counts`` and the motion stat fields (what a no-op rerun must reproduce)."""

    def strip(entry: dict) -> dict:
        return {k: v for k, v in entry.items() if k not in ("motion_size", "motion_mtime_ns")}

    out = {k: v for k, v in index.items() if k not in ("counts", "entries", "windows")}
    out["entries"] = {k: strip(v) for k, v in index.get("entries", {}).items()}
    out["windows"] = {k: strip(v) for k, v in index.get("windows", {}).items()}
    return out


def _write_codes(out: OutputFolder, path: Path, codes: np.ndarray) -> str:
    """Write one code file through ``out`` (atomically); returns its sha256."""
    data = code_file_bytes(codes)
    out.write_bytes(
        path.relative_to(out.root), data, durable=False
    )  # many small files; the index has their sha256
    return hashlib.sha256(data).hexdigest()


@dataclass
class VQCodeSource:
    """Encode ``MotionRef``s on demand with a ``MotionVQVAE`` (spec sections 1.1, 4.3).

    Loads the ref's features (its window when it has one), crops ``m = (T // 4) * 4`` frames at a
    start drawn from the caller's ``rng`` (uniform over ``[0, T - m]``; 0 without ``rng``),
    normalises with the VQ's ``norm`` and encodes. Codes are cached per (file id, window,
    start), so a cached answer is the same as a fresh one and the draw does not depend on the cache.
    """

    resolver: MotionResolver
    vq: MotionVQVAE
    norm: FeatureNorm
    """The VQ's normalisation (``FeatureNorm.resolve(..., checkpoint=...)``)."""
    _starts: dict[tuple[str, tuple[int, int] | None], int] = field(default_factory=dict, repr=False)
    _cache: dict[tuple[str, tuple[int, int] | None, int], list[int]] = field(default_factory=dict, repr=False)

    def __call__(self, ref: MotionRef, rng: random.Random | None = None) -> list[int]:
        clip = (self.resolver.file_id(ref), ref.frame_window(self.resolver.spec.fps))
        feats = None
        if clip not in self._starts:
            feats = self.resolver.load(ref)
            self._starts[clip] = len(crop_offsets(len(feats), self.vq.frames_per_code, "all"))
        n_starts = self._starts[clip]
        if n_starts == 0:
            return []
        start = crop_row(n_starts, rng)
        key = (*clip, start)
        if key not in self._cache:
            feats = self.resolver.load(ref) if feats is None else feats
            x = self.norm.normalise(feats)
            self._cache[key] = encode_crops(self.vq, x, [start])[0].tolist()
        return self._cache[key]
