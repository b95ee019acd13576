"""Reconstruct motions through a VQ-VAE and write ground truth / reconstruction feature files.

Reads ``<dataset_root>/new_joint_vecs/<id>.npy`` and the VQ checkpoint with its normalisation
(``<checkpoint dir>/meta/{mean,std}.npy`` unless given). Each clip is cropped to a multiple of 4 frames
(from frame 0, at most ``spec.max_motion_len``), encoded, decoded and de-normalised. Writes, atomically,
into the run folder ``output_dir``: ``<id>_gt.npy`` and ``<id>_recon.npy`` (float32 ``(T, D)`` features,
ready for ``python -m eval.render --npy``), ``<id>_codes.npy``, ``reconstruct.json`` (per-clip
root-aligned and global MPJPE in mm and code counts), ``config.yaml``, ``run_info.json`` and the
manifest ``run.json`` (:mod:`data.run_folder`). A finished run with the same config and inputs
(checkpoint, mean/std, clip files) returns its ``reconstruct.json``; one with other inputs is
refused naming them (fix: ``resume=false`` or another ``output_dir``), and so is a folder holding
another command's files (fix: ``overwrite=true``). Files written into the folder by others (e.g. the
GIFs of ``eval.render``) are left alone.

    python -m eval.vq_reconstruct vq_checkpoint=runs/demo/vq_tiny/net_last.pth \
        dataset_root=runs/demo/SynthML split=test num=1 output_dir=runs/demo/vq_recon
    python -m eval.render --npy runs/demo/vq_recon/<id>_gt.npy runs/demo/vq_recon/<id>_recon.npy \
        --titles "ground truth" "VQ reconstruction" --out runs/demo/vq_recon/<id>.gif
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from data.config import RunConfig, config_to_dict, parse_cli
from data.layout import DatasetPaths, load_features, read_split
from data.normalization import FeatureNorm, resolve_norm_files
from data.runtime import open_run, resolve_device, set_torch_threads, setup_logging
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
    resume: bool = True
    """Return the folder's finished run (same config and inputs) instead of reconstructing again."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin (they are kept),
    or a run with another config or inputs (its files are replaced)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ids and self.num < 1:
            raise ValueError(f"num={self.num} must be >= 1 when ids is empty")


COMMAND = "eval.vq_reconstruct"
RESULT = "reconstruct.json"
VOLATILE = ("output_dir", "resume", "overwrite", "device", "num_threads")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(ReconstructConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    spec = get_dataset_spec(cfg.dataset)
    mean_file, std_file = resolve_norm_files(cfg.mean_file, cfg.std_file, checkpoint=cfg.vq_checkpoint)
    norm = FeatureNorm.load(mean_file, std_file, spec)
    vq = MotionVQVAE.from_checkpoint(
        cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=resolve_device(cfg.device)
    )
    ids = list(cfg.ids) or read_split(cfg.dataset_root, cfg.split)[: cfg.num]
    paths = DatasetPaths(cfg.dataset_root)
    inputs = {"vq_checkpoint": Path(cfg.vq_checkpoint), "mean_file": mean_file, "std_file": std_file}
    inputs.update({f"motion/{i}": paths.vec_file(i) for i in ids if paths.vec_file(i).is_file()})
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=cfg.seed, inputs=inputs,
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=cfg.resume,
    ) as run:  # fmt: skip
        if run.finished and run.has(RESULT):
            logger.info("%s: reconstructions already written; keeping them (resume=false to redo)", run.root)
            return run.read_json(RESULT)
        results = {}
        fpc = vq.frames_per_code
        for motion_id in ids:
            feats = load_features(paths.vec_file(motion_id), spec)
            feats = feats[: (min(len(feats), spec.max_motion_len) // fpc) * fpc]
            x = norm.normalise(feats)
            codes = vq.encode(torch.from_numpy(x)[None])
            recon = norm.denormalise(vq.decode(codes)[0].cpu().numpy())
            run.save_npy(f"{motion_id}_gt.npy", feats.astype(np.float32))
            run.save_npy(f"{motion_id}_recon.npy", recon.astype(np.float32))
            run.save_npy(f"{motion_id}_codes.npy", codes.cpu().numpy())
            res = evaluate_reconstruction(vq, [Clip(motion_id, x)], spec=spec, norm=norm)
            results[motion_id] = {
                k: res[k] for k in ("mpjpe_mm", "mpjpe_global_mm", "n_frames", "codes_used")
            }
            logger.info("%s: %d frames, MPJPE %.1f mm (global %.1f mm)", motion_id, len(feats), res["mpjpe_mm"],
                        res["mpjpe_global_mm"])  # fmt: skip
        summary = {"vq_checkpoint": cfg.vq_checkpoint, "dataset_root": cfg.dataset_root, "clips": results}
        run.write_json(RESULT, summary)
        run.done()
    return summary


if __name__ == "__main__":
    main()
