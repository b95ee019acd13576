"""Standard text-to-motion evaluation: the ground-truth row and the VQ-VAE reconstruction row.

Runs the Guo et al. protocol (test split, batches of 32, replications with mean ± 95% CI,
diversity over 300 pairs) through ``eval.harness`` and writes ``<output_dir>/eval_<split>.json``
and ``eval_<split>.md`` (plus ``config.yaml`` and ``run_info.json``). Same numbers in one process
or under torchrun (ranks share the batches; rank 0 scores and writes).

    python -m eval.evaluate --config configs/tiny/eval.yaml
    torchrun --nproc_per_node 2 -m eval.evaluate --config configs/tiny/eval.yaml replications=5
    python -m eval.evaluate --config configs/humanml3d/eval.yaml vq_checkpoint=ckpt/vqvae.pth

Generation stages evaluate their models by passing their own ``Method`` to the same harness.
"""

from __future__ import annotations

import logging
import os

from data.config import config_to_dict, parse_cli
from data.runtime import (
    destroy_distributed,
    dist_env,
    init_distributed,
    prepare_run_dir,
    resolve_device,
    set_seed,
    set_torch_threads,
    setup_logging,
)
from eval.harness import EvalConfig, harness_from_config, vq_method_from_config, write_report

logger = logging.getLogger("eval.evaluate")


def main(argv: list[str] | None = None) -> dict | None:
    cfg = parse_cli(EvalConfig, argv, description=__doc__)
    setup_logging()
    rank, _, local_rank = dist_env()
    device = resolve_device(cfg.device, local_rank)
    set_torch_threads(cfg.num_threads)
    started = init_distributed(device)
    try:
        seed = set_seed(cfg.seed)
        out = prepare_run_dir(cfg.output_dir, config_to_dict(cfg), seed)
        harness = harness_from_config(cfg, device)
        vq = vq_method_from_config(cfg, device)
        report = harness.run([vq] if vq is not None else [])
        if rank != 0:
            return None
        report.info.update(evaluator_checkpoint=cfg.evaluator_checkpoint, vq_checkpoint=cfg.vq_checkpoint,
                           config=str(out / "config.yaml"), cwd=os.getcwd())  # fmt: skip
        js, md = write_report(report, out, stem=f"eval_{cfg.split}")
        logger.info("wrote %s and %s\n%s", js, md, report.markdown())
        return report.to_json()
    finally:
        if started:
            destroy_distributed()


if __name__ == "__main__":
    main()
