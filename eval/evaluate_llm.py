"""Evaluate a motion LLM on one eval task of the reference (spec ``sft-and-inference.md`` section 8).

    python -m eval.evaluate_llm --config configs/tiny/eval_llm.yaml model=runs/demo/sft_stage1/model \\
        task=direct_generation-instructed_refinement output_dir=runs/demo/eval_llm/stage1_refine
    torchrun --nproc_per_node 8 -m eval.evaluate_llm --config configs/humanml3d/eval_llm.yaml \\
        model=runs/humanml3d/sft_stage2/model task=unified_mogen_cot_v3
    python -m eval.evaluate_llm --config configs/tiny/eval_llm.yaml model=... task=t2m --multimodality

Tasks (``eval.tasks.TASKS``): ``t2m``, ``t2m_motionagent``, ``analysis_guided_t2m``,
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

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

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
from data.specs import get_dataset_spec
from eval.captioning import CaptionTagger, captioning_markdown, evaluate_captioning
from eval.harness import EVAL_VOLATILE, EvalConfig, eval_inputs, harness_from_config, open_eval_run
from eval.judge import engine_cases, evaluate_judge, judge_markdown
from eval.report_html import render_samples, write_html, write_samples
from eval.scoring import MotionTextScorer
from eval.tasks import (
    TASKS,
    TaskMethod,
    TaskOptions,
    TraceRecorder,
    load_runner,
    resolve_model_vq,
    round_summary,
)

logger = logging.getLogger("eval.evaluate_llm")

COMMAND = "eval.evaluate_llm"
SPECIAL_TASKS = ("judge",)


@dataclass(kw_only=True)
class LLMEvalConfig(EvalConfig):
    """Evaluation of a motion LLM on one task (``configs/<dataset>/eval_llm.yaml``)."""

    model: str = "runs/demo/sft_stage1/model"
    """Motion LLM folder (with ``motion_llm.json``)."""
    task: str = "t2m"
    """Eval task (module docstring)."""
    row_name: str = ""
    """Table row name (default: the task name)."""
    output_dir: str = "runs/demo/eval_llm"
    """Run folder of this evaluation."""
    vq_checkpoint: str = ""
    """The model's VQ-VAE (empty: the one ``motion_llm.json`` names; checked against its hash)."""
    vq_meta_dir: str = ""
    """VQ normalisation (empty: ``meta/`` beside the VQ checkpoint)."""
    do_sample: bool = False
    """Sample instead of greedy decoding (``--do-sample``; forced-greedy tasks stay greedy)."""
    temperature: float = 1.0
    top_k: int = 50
    """Top-k when sampling (0 = off)."""
    top_p: float = 1.0
    max_refine_round: int = 5
    """Most refinement rounds (stage-1 loop) / the span ``..._w_max_rounds`` scores."""
    chain_rounds: int = 5
    """Rows of a reasoning-chain task (one per motion of the chain, the last = the answer)."""
    gen_batch_size: int = 32
    """Prompts per generate forward."""
    reuse_cache: bool = True
    """Reuse cached prompt prefixes across the calls of multi-call tasks."""
    max_new_tokens: int = 0
    """Cap per generate call besides the task's max_length (0 = none; quick runs of untrained models)."""
    dtype: str = "auto"
    """Model weights: auto (bf16 on GPU, float32 on CPU), float32, bfloat16, float16."""
    attn_implementation: str = "auto"
    """auto (flash-attention-2 on CUDA when installed), sdpa, eager."""
    render_samples: int = 4
    """Samples rendered as GIFs (every round side by side) into ``renders/``."""
    caption_tokenizer: str = "simple"
    """m2t: ``simple`` (Python) or ``ptb`` (pycocoevalcap's Java PTBTokenizer)."""
    tagger_split: str = "train"
    """m2t: split whose spaCy-tagged captions teach the caption POS tagger."""
    judge_split: str = ""
    """judge: keep goals of this split (empty: every goal the annotation engine perturbed)."""
    judge_max_goals: int = 64
    """judge: goals scored (each with its mismatched and imperfect motions)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        known = [*TASKS, *SPECIAL_TASKS]
        if self.task not in known:
            raise ValueError(f"task={self.task!r} is not an eval task; known: {sorted(known)}")
        if self.caption_tokenizer not in ("simple", "ptb"):
            raise ValueError(f"caption_tokenizer={self.caption_tokenizer!r}: use simple or ptb")
        if self.render_samples < 0 or self.judge_max_goals < 2:
            raise ValueError(f"render_samples={self.render_samples} must be >= 0 and judge_max_goals="
                             f"{self.judge_max_goals} >= 2")  # fmt: skip
        self.options()  # validates the loop settings

    def options(self) -> TaskOptions:
        return TaskOptions(
            do_sample=self.do_sample, temperature=self.temperature, top_k=self.top_k or None, top_p=self.top_p,
            max_refine_round=self.max_refine_round, chain_rounds=self.chain_rounds,
            batch_size=self.gen_batch_size, reuse_cache=self.reuse_cache, max_new_tokens=self.max_new_tokens,
        )  # fmt: skip


def model_inputs(cfg: LLMEvalConfig) -> dict[str, Path]:
    """Fingerprinted inputs: the evaluation's files, the model folder and the resolved VQ-VAE."""
    vq, meta = resolve_model_vq(cfg.model, cfg.vq_checkpoint, cfg.vq_meta_dir)
    files = eval_inputs(replace(cfg, vq_checkpoint=str(vq), vq_meta_dir=str(meta)))
    files["model"] = Path(cfg.model)
    return files


def expand_flags(argv: list[str]) -> list[str]:
    """``--multimodality`` -> ``mm_texts=100`` (unless ``mm_texts`` is set); ``--do-sample`` -> ``do_sample=true``."""
    out = [a for a in argv if a not in ("--multimodality", "--do-sample")]
    if "--multimodality" in argv and not any(a.startswith("mm_texts=") for a in argv):
        out.append("mm_texts=100")
    if "--do-sample" in argv:
        out.append("do_sample=true")
    return out


def _motion_task(cfg: LLMEvalConfig, runner, device, run, started: float) -> dict[str, Any] | None:
    harness = harness_from_config(cfg, device)
    recorder = TraceRecorder()
    tm = TaskMethod(runner, cfg.task, recorder, scorer=harness.scorer)
    report = harness.run([tm.method(cfg.row_name or cfg.task)])
    records, stats, mm_stats = recorder.gather()
    if dist_env()[0] != 0:
        return None
    samples = [t for k in sorted(records) for t in records[k].traces]
    report.info.update(
        task=cfg.task, model=cfg.model, vq_checkpoint=str(runner_vq(cfg)[0]), config=str(run.root / "config.yaml"),
        cwd=os.getcwd(), parse=stats, parse_multimodality=mm_stats, rounds=round_summary(records, tm.rounds),
        seconds=round(time.time() - started, 2), decoding=asdict(cfg.options()),
    )  # fmt: skip
    stem = f"eval_{cfg.split}"
    js = run.write_json(f"{stem}.json", report.to_json())
    md = report.markdown() + _rounds_markdown(report.info["rounds"])
    run.write_text(f"{stem}.md", md)
    write_samples(run, samples)
    gifs = render_samples(run, runner, samples, get_dataset_spec(cfg.dataset), n=cfg.render_samples)
    write_html(run, title=f"{cfg.task}: {cfg.model}", tables_md=[md], samples=samples, gifs=gifs)
    logger.info("wrote %s\n%s", js, md)
    return report.to_json()


def runner_vq(cfg: LLMEvalConfig) -> tuple[Path, Path]:
    return resolve_model_vq(cfg.model, cfg.vq_checkpoint, cfg.vq_meta_dir)


def _rounds_markdown(rounds: dict[str, Any]) -> str:
    lines = ["", "Rounds used: " + ", ".join(f"{k}: {v}" for k, v in rounds["rounds_used"].items()) + "."]
    if "last_better_than_first" in rounds:
        lines.append(f"Last motion closer to the text than the first (evaluator distance): "
                     f"{100 * rounds['last_better_than_first']:.1f}% of {rounds['samples']} samples "
                     f"(mean distance {rounds['mean_distance_first']:.3f} -> {rounds['mean_distance_last']:.3f}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _captioning(cfg: LLMEvalConfig, runner, device, run, started: float) -> dict[str, Any] | None:
    harness = harness_from_config(cfg, device)
    tagger, tag_counts = CaptionTagger.from_dataset(cfg.dataset_root, cfg.tagger_split)
    result = evaluate_captioning(
        runner, harness, tagger, tokenizer=cfg.caption_tokenizer, sample=cfg.do_sample
    )
    if dist_env()[0] != 0:
        return None
    samples = result.pop("traces")
    result.update(task="m2t", model=cfg.model, tagger_lexicon=tag_counts, seconds=round(time.time() - started, 2),
                  split=cfg.split, seed=cfg.seed)  # fmt: skip
    md = captioning_markdown(result)
    stem = f"eval_{cfg.split}"
    run.write_json(f"{stem}.json", result)
    run.write_text(f"{stem}.md", md)
    for s in samples:
        s["motions"] = [s["codes"]]
        s["steps"] = [
            {
                "round": 0,
                "kind": "m2t",
                "prompt": s["prompt"],
                "completion": s["caption"],
                "codes": s["codes"],
            }
        ]
    write_samples(run, samples)
    gifs = render_samples(
        run, runner, samples, get_dataset_spec(cfg.dataset), n=cfg.render_samples, titles=["motion"]
    )
    write_html(run, title=f"m2t: {cfg.model}", tables_md=[md], samples=samples, gifs=gifs)
    logger.info("m2t\n%s", md)
    return result


def _judge(cfg: LLMEvalConfig, runner, device, run, started: float) -> dict[str, Any] | None:
    scorer = MotionTextScorer.from_files(cfg.evaluator_checkpoint, cfg.evaluator_meta_dir, cfg.glove_dir,
                                         cfg.dataset, device=device)  # fmt: skip
    cases = engine_cases(cfg.dataset_root, cfg.dataset, split=cfg.judge_split, max_goals=cfg.judge_max_goals,
                         seed=cfg.seed, max_frames=scorer.spec.max_motion_len)  # fmt: skip
    result = evaluate_judge(runner, scorer, cases)
    if dist_env()[0] != 0:
        return None
    pairs = result.pop("pairs_detail")
    result.update(task="judge", model=cfg.model, seconds=round(time.time() - started, 2))
    md = judge_markdown(result)
    run.write_json("judge.json", result)
    run.write_text("judge.md", md)
    write_samples(run, pairs)
    write_html(run, title=f"judge: {cfg.model}", tables_md=[md], samples=[], gifs=[])
    logger.info("judge\n%s", md)
    return result


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
                return json.loads((run.root / done).read_text()) if rank == 0 else None
            t0 = time.time()
            runner = load_runner(cfg.model, cfg.dataset, device=device, options=cfg.options(),
                                 vq_checkpoint=cfg.vq_checkpoint, vq_meta_dir=cfg.vq_meta_dir, dtype=cfg.dtype,
                                 attn_implementation=cfg.attn_implementation)  # fmt: skip
            fn = {"judge": _judge, "m2t": _captioning}.get(cfg.task, _motion_task)
            result = fn(cfg, runner, device, run, t0)
            if rank == 0:
                run.done()
            return result
    finally:
        if started:
            destroy_distributed()


if __name__ == "__main__":
    main()
