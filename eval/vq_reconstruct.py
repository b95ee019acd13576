"""Reconstruct motions through a VQ-VAE and write ground truth / reconstruction feature files.

Reads ``<dataset_root>/new_joint_vecs/<id>.npy`` and the VQ checkpoint with its normalisation
(``<checkpoint dir>/meta/{mean,std}.npy`` unless given). Each clip is cropped to a multiple of 4 frames
(from frame 0, at most ``spec.max_motion_len``), encoded, decoded and de-normalised. Writes
``<output_dir>/<id>_gt.npy`` and ``<output_dir>/<id>_recon.npy`` (float32 ``(T, D)`` features, ready for
``python -m eval.render --npy``), ``<output_dir>/<id>_codes.npy`` and ``<output_dir>/reconstruct.json``
(per-clip root-aligned and global MPJPE in mm and code counts).

    python -m eval.vq_reconstruct vq_checkpoint=runs/demo/vq_tiny/net_last.pth \
        dataset_root=runs/demo/SynthML split=test num=1 output_dir=runs/demo/vq_recon
    python -m eval.render --npy runs/demo/vq_recon/<id>_gt.npy runs/demo/vq_recon/<id>_recon.npy \
        --titles "ground truth" "VQ reconstruction" --out runs/demo/vq_recon/<id>.gif
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from data.config import RunConfig, parse_cli
from data.layout import DatasetPaths, load_features, read_split
from data.normalization import FeatureNorm
from data.runtime import resolve_device, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from data.vq_data import Clip
from models.vq_training import evaluate_reconstruction
from models.vqvae import MotionVQVAE

logger = logging.getLogger("eval.vq_reconstruct")


@dataclass(kw_only=True)
class ReconstructConfig(RunConfig):
    """Which clips to pass through which VQ-VAE."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "seed": "reconstruction draws nothing: clips are cropped from frame 0",
        "on_error": "only the chosen clips are read, and a broken one raises",
        "max_skip_fraction": "no clip is ever skipped (see on_error)",
        "progress": "a few clips, one log line each",
    }

    output_dir: str = "runs/demo/vq_recon"
    """Output folder (``<id>_gt.npy``, ``<id>_recon.npy``, ``<id>_codes.npy``, ``reconstruct.json``)."""
    vq_checkpoint: str = "runs/demo/vq_tiny/net_last.pth"
    """``{'net': state_dict}`` VQ-VAE checkpoint."""
    mean_file: str = ""
    """Normalisation mean; empty = ``<checkpoint dir>/meta/mean.npy``."""
    std_file: str = ""
    """Normalisation std; empty = ``<checkpoint dir>/meta/std.npy``."""
    split: str = "test"
    """Split whose first ``num`` ids are used when ``ids`` is empty."""
    num: int = 1
    """How many clips of the split."""
    ids: tuple[str, ...] = ()
    """Explicit ids (override split/num)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ids and self.num < 1:
            raise ValueError(f"num={self.num} must be >= 1 when ids is empty")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(ReconstructConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    spec = get_dataset_spec(cfg.dataset)
    norm = FeatureNorm.resolve(spec, cfg.mean_file, cfg.std_file, checkpoint=cfg.vq_checkpoint)
    vq = MotionVQVAE.from_checkpoint(
        cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=resolve_device(cfg.device)
    )
    ids = list(cfg.ids) or read_split(cfg.dataset_root, cfg.split)[: cfg.num]
    paths = DatasetPaths(cfg.dataset_root)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    fpc = vq.frames_per_code
    for motion_id in ids:
        feats = load_features(paths.vec_file(motion_id), spec)
        feats = feats[: (min(len(feats), spec.max_motion_len) // fpc) * fpc]
        x = norm.normalise(feats)
        codes = vq.encode(torch.from_numpy(x)[None])
        recon = norm.denormalise(vq.decode(codes)[0].cpu().numpy())
        np.save(out / f"{motion_id}_gt.npy", feats.astype(np.float32))
        np.save(out / f"{motion_id}_recon.npy", recon.astype(np.float32))
        np.save(out / f"{motion_id}_codes.npy", codes.cpu().numpy())
        res = evaluate_reconstruction(vq, [Clip(motion_id, x)], spec=spec, norm=norm)
        results[motion_id] = {k: res[k] for k in ("mpjpe_mm", "mpjpe_global_mm", "n_frames", "codes_used")}
        logger.info("%s: %d frames, MPJPE %.1f mm (global %.1f mm)", motion_id, len(feats), res["mpjpe_mm"],
                    res["mpjpe_global_mm"])  # fmt: skip
    summary = {"vq_checkpoint": cfg.vq_checkpoint, "dataset_root": cfg.dataset_root, "clips": results}
    (out / "reconstruct.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
