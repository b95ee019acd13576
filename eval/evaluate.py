"""Standard text-to-motion evaluation: the ground-truth row and the VQ-VAE reconstruction row.

Runs the Guo et al. protocol (test split, batches of 32, replications with mean ± 95% CI,
diversity over 300 pairs) through ``eval.harness`` and writes, atomically, into the run folder
``output_dir``: ``eval_<split>.json`` (with ``counts`` of every skipped clip, left-out item,
caption fallback and failed generation, and the evaluator's provenance check) and
``eval_<split>.md``, plus ``config.yaml``, ``run_info.json`` and the manifest ``run.json``
(:mod:`data.run_folder`). Same numbers in one process or under torchrun (ranks share the batches;
rank 0 checks the folder, scores and writes).

The word vectors and evaluator meta must be the ones the evaluator was trained with (checked
against its ``provenance.json``; an error names both hashes). A finished evaluation with the same
config and inputs (evaluator, meta, word vectors, VQ checkpoint and meta, split file) is returned
without rerunning; one with another config or inputs is refused naming the differences (fix:
``resume=false`` to evaluate again, or another ``output_dir``), and so is a folder holding another
command's files (fix: ``overwrite=true``).

    python -m eval.evaluate --config configs/tiny/eval.yaml
    torchrun --nproc_per_node 2 -m eval.evaluate --config configs/tiny/eval.yaml replications=5
    python -m eval.evaluate --config configs/humanml3d/eval.yaml vq_checkpoint=ckpt/vqvae.pth

Generation stages evaluate their models by passing their own ``Method`` to the same harness.
"""

from __future__ import annotations

import logging
import os

from data.config import parse_cli
from data.runtime import (
    destroy_distributed,
    dist_env,
    init_distributed,
    resolve_device,
    set_seed,
    set_torch_threads,
    setup_logging,
)
from eval.harness import (
    EvalConfig,
    harness_from_config,
    open_eval_run,
    vq_method_from_config,
    write_report,
)

logger = logging.getLogger("eval.evaluate")

COMMAND = "eval.evaluate"
VOLATILE = ("output_dir", "resume", "overwrite", "device", "num_threads", "progress")
"""Config keys that may change between invocations of one run (left out of the resume check)."""


def main(argv: list[str] | None = None) -> dict | None:
    cfg = parse_cli(EvalConfig, argv, description=__doc__)
    setup_logging()
    rank, _, local_rank = dist_env()
    device = resolve_device(cfg.device, local_rank)
    set_torch_threads(cfg.num_threads)
    started = init_distributed(device)
    try:
        seed = set_seed(cfg.seed)
        with open_eval_run(cfg, COMMAND, seed, volatile=VOLATILE) as run:
            out = run.root
            done = f"eval_{cfg.split}.json"
            if run.finished and run.has(done):
                if rank == 0:
                    logger.info("%s: evaluation already finished; keeping it (resume=false to rerun)", out)
                return run.read_json(done) if rank == 0 else None
            harness = harness_from_config(cfg, device)
            vq = vq_method_from_config(cfg, device)
            report = harness.run([vq] if vq is not None else [])
            if rank != 0:
                return None
            report.info.update(evaluator_checkpoint=cfg.evaluator_checkpoint, vq_checkpoint=cfg.vq_checkpoint,
                               config=str(out / "config.yaml"), cwd=os.getcwd())  # fmt: skip
            js, md = write_report(report, run, stem=f"eval_{cfg.split}")
            run.done()
            logger.info("wrote %s and %s\n%s", js, md, report.markdown())
            return report.to_json()
    finally:
        if started:
            destroy_distributed()


if __name__ == "__main__":
    main()
