"""Encode motions into per-motion code files (the library behind ``prepare/tokenize_motions.py``).

Format (read with :func:`data.vq_data.read_code_file`)::

    <output_dir>/<id>.npy          int64 (K, N): row k = codes of frames [k, k + 4N), N = T // 4
    <output_dir>/codes_index.json  checkpoint (+ sha256), mean/std files, nb_code, frames_per_code,
                                dataset, splits, per-id {frames, offsets, n_codes}, empty and
                                skipped ids with reasons

Augmentation (``sft-and-inference.md`` §4.3): the published SFT loader crops ``m = (T // 4) * 4``
frames at a random start in ``[0, T - m]`` (0-3 frames) and tokenises on the fly. With
``crops="all"`` every such start is pre-encoded (K = T - m + 1 rows), so a dataset that picks a
random row uniformly reproduces that distribution exactly; ``crops="first"`` keeps only start 0.
Clips shorter than one code get a ``(1, 0)`` file (the references render them as an empty motion
``<Motion></Motion>``) and are listed under ``empty`` in the index. Windowed references
(``f_tag < to_tag``) are sub-clips, which need their own encoding: use :func:`encode_crops` on the
window at load time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from tqdm import tqdm

from data.config import RunConfig
from data.layout import DatasetFileError, DatasetPaths, SkipTracker, load_features, read_split
from data.specs import get_dataset_spec
from data.vq_data import CODES_INDEX, code_file, write_code_file
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
    """Re-encode ids whose file exists (otherwise they are kept if the index matches)."""

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


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenize_dataset(cfg: TokenizeConfig, vq: MotionVQVAE, mean: np.ndarray, std: np.ndarray) -> dict:
    """Encode every id of ``cfg.splits`` into ``cfg.output_dir``; returns the written index.

    Ids are grouped into batches of equal crop length, so every crop is encoded exactly as alone.
    Files are validated in a first pass; each group's features are then re-read when the group is
    encoded, so memory holds one crop-length group at a time, not the whole dataset.
    """
    spec = get_dataset_spec(cfg.dataset)
    if vq.nfeats != spec.feat_dim:
        raise ValueError(f"VQ-VAE has nfeats={vq.nfeats}, dataset {spec.name!r} has D={spec.feat_dim}")
    paths = DatasetPaths(cfg.dataset_root)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(cfg.vq_checkpoint)
    index_path = out / CODES_INDEX
    old: dict = {}
    if index_path.is_file() and not cfg.force:
        old = json.loads(index_path.read_text())
        if old.get("checkpoint_sha256") != sha or old.get("crops") != cfg.crops:
            raise DatasetFileError(
                f"{index_path}: existing codes were made with checkpoint {old.get('checkpoint')} "
                f"(sha256 {str(old.get('checkpoint_sha256'))[:12]}, crops={old.get('crops')}); now "
                f"{cfg.vq_checkpoint} (sha256 {sha[:12]}, crops={cfg.crops}). Use force=true or another output_dir"
            )
    ids = list(dict.fromkeys(i for split in cfg.splits for i in read_split(cfg.dataset_root, split)))
    tracker = SkipTracker("tokenise motions", on_error=cfg.on_error, max_skip_fraction=cfg.max_skip_fraction)
    entries: dict[str, dict] = {}
    empty: list[str] = []
    reused = 0
    pending: dict[int, list[tuple[str, int, list[int]]]] = {}  # crop length -> (id, frames, offsets)
    for motion_id in tqdm(ids, desc="load", disable=not cfg.progress, leave=False):
        tracker.seen += 1
        if not cfg.force and motion_id in old.get("entries", {}) and code_file(out, motion_id).is_file():
            entries[motion_id] = old["entries"][motion_id]
            reused += 1
            continue
        try:
            feats = load_features(paths.vec_file(motion_id), spec)
        except DatasetFileError as err:
            tracker.record(motion_id, err)
            continue
        offsets = crop_offsets(feats.shape[0], vq.frames_per_code, cfg.crops)
        if not offsets:
            write_code_file(code_file(out, motion_id), np.zeros((1, 0), np.int64))
            entries[motion_id] = {"frames": int(feats.shape[0]), "offsets": [], "n_codes": 0}
            empty.append(motion_id)
            continue
        m = (feats.shape[0] // vq.frames_per_code) * vq.frames_per_code
        pending.setdefault(m, []).append((motion_id, int(feats.shape[0]), offsets))
    n_crops = sum(len(o) for group in pending.values() for _, _, o in group)
    bar = tqdm(total=n_crops, desc="encode", disable=not cfg.progress, leave=False)
    for m, group in sorted(pending.items()):
        motions = [
            ((load_features(paths.vec_file(motion_id), spec) - mean) / std).astype(np.float32)
            for motion_id, _, _ in group
        ]
        crops = [(i, o) for i, (_, _, offs) in enumerate(group) for o in offs]
        codes_by_clip: dict[int, list[np.ndarray]] = {}
        for start in range(0, len(crops), cfg.batch_size):
            chunk = crops[start : start + cfg.batch_size]
            x = torch.from_numpy(np.stack([motions[i][o : o + m] for i, o in chunk]))
            try:
                codes = vq.encode(x).cpu().numpy()
            except ValueError as err:
                raise ValueError(
                    f"encoding ids {sorted({group[i][0] for i, _ in chunk})[:5]}: {err}"
                ) from err
            for (i, _), row in zip(chunk, codes, strict=True):
                codes_by_clip.setdefault(i, []).append(row)
            bar.update(len(chunk))
        for i, (motion_id, frames, offsets) in enumerate(group):
            write_code_file(code_file(out, motion_id), np.stack(codes_by_clip[i]))
            entries[motion_id] = {
                "frames": frames,
                "offsets": offsets,
                "n_codes": m // vq.frames_per_code,
            }
    bar.close()
    tracker.finish()
    index = {
        "checkpoint": str(cfg.vq_checkpoint),
        "checkpoint_sha256": sha,
        "mean_file": cfg.mean_file,
        "std_file": cfg.std_file,
        "nb_code": vq.nb_code,
        "frames_per_code": vq.frames_per_code,
        "dataset": spec.name,
        "dataset_root": str(cfg.dataset_root),
        "splits": list(cfg.splits),
        "crops": cfg.crops,
        "entries": {k: entries[k] for k in ids if k in entries},
        "empty": empty,
        "skipped": [{"id": k, "reason": r} for k, r in tracker.skipped],
    }
    index_path.write_text(json.dumps(index, indent=1))
    n_codes = [e["n_codes"] for e in entries.values()]
    logger.info(
        "tokenised %d ids into %s (%d reused, %d empty, %d skipped); codes per clip min/mean/max %d/%.1f/%d",
        len(entries), out, reused, len(empty), len(tracker.skipped),
        min(n_codes, default=0), float(np.mean(n_codes)) if n_codes else 0.0, max(n_codes, default=0),
    )  # fmt: skip
    return index
