"""Evaluate a motion LLM on one eval task of the reference (spec ``sft-and-inference.md`` section 8).

    python -m eval.evaluate_llm --config configs/tiny/eval_llm.yaml model=runs/demo/sft_stage1/model \\
        task=direct_generation-instructed_refinement output_dir=runs/demo/eval_llm/stage1_refine
    torchrun --nproc_per_node 8 -m eval.evaluate_llm --config configs/humanml3d/eval_llm.yaml \\
        model=runs/humanml3d/sft_stage2/model task=unified_mogen_cot_v3
    python -m eval.evaluate_llm --config configs/tiny/eval_llm.yaml model=... task=t2m --multimodality

Tasks (``eval.tasks.TASKS``): ``t2m``, ``t2m_motionagent``, ``t2m_stage0``, ``t2m_plain``, ``analysis_guided_t2m``,
``direct_generation-instructed_refinement``, ``analysis_generation-instructed_refinement``,
``unified_mogen_cot_v3`` (+ ``_initial_gen``, ``_w_max_rounds``, ``_random_flip``),
``pure_random_flip``, ``m2t`` (captioning, ``eval.captioning``) and ``judge`` (the model as a
reward model, ``eval.judge``).

Motion tasks run through ``eval.harness`` (Guo protocol: test split, batches of 32, ``replications``
draws, mean ± 95% CI): the ``Real motion`` row, then one row per round / chain motion of the task.
``--multimodality`` (= ``mm_texts=100`` unless set) adds MModality: ``mm_texts`` texts x
``mm_repeats`` generations per replication, always sampled (section 8.8). The VQ-VAE and its
normalisation come from the model's ``motion_llm.json`` (override: ``vq_checkpoint``,
``vq_meta_dir``). Every number is the same in one process and under ``torchrun`` (ranks share the
batches; generation seeds depend only on the batch).

The run folder ``output_dir`` holds ``config.yaml``, ``run_info.json``, ``run.json``,
``eval_<split>.json`` (every number: the table rows, parse counters per task and round, rounds
used, last-vs-first improvement, timing), ``eval_<split>.md``, ``samples.jsonl``,
``renders/sample_<k>.gif`` and ``index.html`` (``eval.report_html``). A finished run with the same
config and inputs is returned without rerunning (``resume=false`` reruns).
"""

from __future__ import annotations

import logging
import sys
import time

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
from eval.harness import EVAL_VOLATILE, open_eval_run
from eval.llm_eval import LLMEvalConfig, model_inputs, run_captioning, run_judge, run_motion_task
from eval.llm_runner import load_runner

logger = logging.getLogger("eval.evaluate_llm")

COMMAND = "eval.evaluate_llm"


def expand_flags(argv: list[str]) -> list[str]:
    """``--multimodality`` -> ``mm_texts=100`` (unless ``mm_texts`` is set); ``--do-sample`` -> ``do_sample=true``."""
    out = [a for a in argv if a not in ("--multimodality", "--do-sample")]
    if "--multimodality" in argv and not any(a.startswith("mm_texts=") for a in argv):
        out.append("mm_texts=100")
    if "--do-sample" in argv:
        out.append("do_sample=true")
    return out


def main(argv: list[str] | None = None) -> dict | None:
    cfg = parse_cli(LLMEvalConfig, expand_flags(sys.argv[1:] if argv is None else argv), description=__doc__)
    setup_logging()
    rank, _, local_rank = dist_env()
    device = resolve_device(cfg.device, local_rank)
    set_torch_threads(cfg.num_threads)
    started = init_distributed(device)
    try:
        seed = set_seed(cfg.seed)
        with open_eval_run(cfg, COMMAND, seed, volatile=(*EVAL_VOLATILE, "render_samples"),
                           inputs=model_inputs(cfg)) as run:  # fmt: skip
            done = "judge.json" if cfg.task == "judge" else f"eval_{cfg.split}.json"
            if run.finished and run.has(done):
                if rank == 0:
                    logger.info(
                        "%s: evaluation already finished; keeping it (resume=false to rerun)", run.root
                    )
                return run.read_json(done) if rank == 0 else None
            t0 = time.time()
            runner = load_runner(cfg.model, cfg.dataset, device=device, options=cfg.options(),
                                 vq_checkpoint=cfg.vq_checkpoint, vq_meta_dir=cfg.vq_meta_dir, dtype=cfg.dtype,
                                 attn_implementation=cfg.attn_implementation)  # fmt: skip
            fn = {"judge": run_judge, "m2t": run_captioning}.get(cfg.task, run_motion_task)
            result = fn(cfg, runner, device, run, t0)
            if rank == 0:
                run.done()
            return result
    finally:
        if started:
            destroy_distributed()


if __name__ == "__main__":
    main()
