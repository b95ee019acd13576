"""Encode a dataset's motions into per-motion VQ code files for the SFT and RL datasets.

Reads ``<dataset_root>/<split>.txt`` and ``new_joint_vecs/<id>.npy``, the VQ checkpoint and its
normalisation (``<checkpoint dir>/meta/{mean,std}.npy`` unless ``mean_file``/``std_file`` are set).
Writes ``<output_dir>/<id>.npy`` (int64 ``(K, N)``: one row per crop start 0..T-4N, see
``models/vq_tokenize.py``), ``<output_dir>/windows/<id>_<start>_<end>.npy`` for every caption window
(``#from#to`` of ``texts/<id>.txt``, encoded from the window's own frames; ``windows=false`` skips
them) and ``<output_dir>/codes_index.json``. Existing files made with the same
checkpoint are kept unless ``force=true``; unreadable clips raise (or are counted with
``on_error=skip``); clips shorter than 4 frames get an empty ``(1, 0)`` entry and are listed.

    python -m prepare.tokenize_motions --config configs/tiny/tokenize.yaml
    python -m prepare.tokenize_motions --config configs/humanml3d/tokenize.yaml vq_checkpoint=ckpt/vqvae.pth
"""

from __future__ import annotations

import dataclasses
import logging

from data.config import parse_cli
from data.normalization import FeatureNorm, resolve_norm_files
from data.runtime import resolve_device, set_torch_threads, setup_logging
from data.specs import get_dataset_spec
from models.vq_tokenize import TokenizeConfig, tokenize_dataset
from models.vqvae import MotionVQVAE

logger = logging.getLogger("prepare.tokenize_motions")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(TokenizeConfig, argv, description=__doc__)
    setup_logging()
    set_torch_threads(cfg.num_threads)
    spec = get_dataset_spec(cfg.dataset)
    mean_file, std_file = resolve_norm_files(cfg.mean_file, cfg.std_file, checkpoint=cfg.vq_checkpoint)
    cfg = dataclasses.replace(cfg, mean_file=str(mean_file), std_file=str(std_file))
    norm = FeatureNorm.load(mean_file, std_file, spec)
    vq = MotionVQVAE.from_checkpoint(
        cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=resolve_device(cfg.device)
    )
    return tokenize_dataset(cfg, vq, norm)


if __name__ == "__main__":
    main()
