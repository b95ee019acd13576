"""Library of ``eval/evaluate_llm.py``: the config and the three kinds of LLM evaluation runs.

``LLMEvalConfig`` reads ``configs/<dataset>/eval_llm.yaml``. ``run_motion_task`` evaluates a motion
task (``eval.tasks``) through the harness, ``run_captioning`` the ``m2t`` task (``eval.captioning``)
and ``run_judge`` the model as a reward model (``eval.judge``); each writes its files into the run
folder on rank 0 (``eval.report_html``) and returns the result there (``None`` on other ranks).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from data.run_folder import RunFolder
from data.runtime import dist_env
from data.specs import get_dataset_spec
from eval.captioning import CaptionTagger, captioning_markdown, evaluate_captioning
from eval.harness import EvalConfig, eval_inputs, harness_from_config
from eval.judge import engine_cases, evaluate_judge, judge_markdown
from eval.llm_runner import MotionLLMRunner, TaskOptions, resolve_model_vq
from eval.report_html import render_samples, write_html, write_samples
from eval.scoring import MotionTextScorer
from eval.tasks import TASKS, TaskMethod, TraceRecorder, round_summary

logger = logging.getLogger(__name__)

SPECIAL_TASKS = ("judge",)
"""Tasks besides ``eval.tasks.TASKS``."""


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
    """Sampling temperature."""
    top_k: int = 50
    """Top-k when sampling (0 = off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
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


def run_motion_task(
    cfg: LLMEvalConfig, runner: MotionLLMRunner, device: torch.device, run: RunFolder, started: float
) -> dict[str, Any] | None:
    harness = harness_from_config(cfg, device)
    recorder = TraceRecorder()
    tm = TaskMethod(runner, cfg.task, recorder, scorer=harness.scorer)
    report = harness.run([tm.method(cfg.row_name or cfg.task)])
    records, stats, mm_stats = recorder.gather()
    if dist_env()[0] != 0:
        return None
    samples = [t for k in sorted(records) for t in records[k].traces]
    report.info.update(
        task=cfg.task, model=cfg.model, vq_checkpoint=str(resolve_model_vq(cfg.model, cfg.vq_checkpoint, cfg.vq_meta_dir)[0]), config=str(run.root / "config.yaml"),
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


def _rounds_markdown(rounds: dict[str, Any]) -> str:
    lines = ["", "Rounds used: " + ", ".join(f"{k}: {v}" for k, v in rounds["rounds_used"].items()) + "."]
    if "last_better_than_first" in rounds:
        lines.append(f"Last motion closer to the text than the first (evaluator distance): "
                     f"{100 * rounds['last_better_than_first']:.1f}% of {rounds['samples']} samples "
                     f"(mean distance {rounds['mean_distance_first']:.3f} -> {rounds['mean_distance_last']:.3f}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_captioning(
    cfg: LLMEvalConfig, runner: MotionLLMRunner, device: torch.device, run: RunFolder, started: float
) -> dict[str, Any] | None:
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


def run_judge(
    cfg: LLMEvalConfig, runner: MotionLLMRunner, device: torch.device, run: RunFolder, started: float
) -> dict[str, Any] | None:
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
