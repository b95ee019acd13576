"""Encode a dataset's motions into per-motion VQ code files for the SFT and RL datasets.

Reads ``<dataset_root>/<split>.txt`` and ``new_joint_vecs/<id>.npy``, the VQ checkpoint and its
normalisation (``<checkpoint dir>/meta/{mean,std}.npy`` unless ``mean_file``/``std_file`` are set).
Writes into ``output_dir`` (every file atomically): ``<id>.npy`` (int64 ``(K, N)``: one row per crop
start 0..T-4N, see ``models/vq_tokenize.py``), ``windows/<id>_<start>_<end>.npy`` for every caption
window (``#from#to`` of ``texts/<id>.txt``, encoded from the window's own frames; ``windows=false``
skips them), ``codes_index.json`` (provenance: checkpoint, mean/std and per-item motion sha256;
``counts`` of everything encoded, reused, re-encoded, empty or skipped) and the run manifest
``run.json`` with ``config.yaml`` and ``run_info.json`` (:mod:`data.run_folder`).

Reuse is keyed on content: a code file is kept when its motion file, checkpoint, mean/std and crop
setting are the ones it was made from; a changed motion (e.g. re-rendered by ``data.engine``) is
encoded again. A rerun that finds nothing to do writes nothing. Before anything is written the
folder is checked: a folder holding another command's run or files of other origin is refused (fix:
``overwrite=true``), a run with another checkpoint, mean/std or config is refused naming the
differences (fix: ``force=true`` to encode everything again, or another ``output_dir``), and so is a
folder locked by a running process. Unreadable clips raise (or are counted with ``on_error=skip``);
clips shorter than 4 frames get an empty ``(1, 0)`` entry and are listed.

    python -m prepare.tokenize_motions --config configs/tiny/tokenize.yaml
    python -m prepare.tokenize_motions --config configs/humanml3d/tokenize.yaml vq_checkpoint=ckpt/vqvae.pth
"""

from __future__ import annotations

import dataclasses
import logging

from data.config import config_to_dict, parse_cli
from data.normalization import FeatureNorm, resolve_norm_files
from data.runtime import open_run, resolve_device, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from models.vq_tokenize import TokenizeConfig, tokenize_dataset
from models.vqvae import MotionVQVAE

logger = logging.getLogger("prepare.tokenize_motions")

COMMAND = "prepare.tokenize_motions"
VOLATILE = (
    "output_dir", "force", "overwrite", "batch_size", "num_threads", "device", "progress", "on_error",
    "max_skip_fraction", "vq_checkpoint", "mean_file", "std_file",
)  # fmt: skip
"""Config keys that may change between invocations of one run. The checkpoint and mean/std paths are
among them because their content is an input (moving a file is fine, replacing it is not)."""
CLI_FIXES = {
    "overwrite": "pass overwrite=true",
    "restart": "pass force=true",
    "out": "choose another output_dir",
}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(TokenizeConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    spec = get_dataset_spec(cfg.dataset)
    # Cheap inputs first: a missing or malformed file fails before the folder is touched.
    mean_file, std_file = resolve_norm_files(cfg.mean_file, cfg.std_file, checkpoint=cfg.vq_checkpoint)
    cfg = dataclasses.replace(cfg, mean_file=str(mean_file), std_file=str(std_file))
    norm = FeatureNorm.load(mean_file, std_file, spec)
    vq = MotionVQVAE.from_checkpoint(
        cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=resolve_device(cfg.device)
    )
    inputs = {"vq_checkpoint": cfg.vq_checkpoint, "mean_file": mean_file, "std_file": std_file}
    with open_run(
        cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=cfg.seed, inputs=inputs,
        volatile=VOLATILE, overwrite=cfg.overwrite, resume=not cfg.force, fixes=CLI_FIXES,
    ) as run:  # fmt: skip
        index = tokenize_dataset(cfg, vq, norm, run)
        if run.manifest["status"] != "done":  # "done" only when a finished run had nothing to do
            run.done()
    return index


if __name__ == "__main__":
    main()
