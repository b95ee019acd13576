"""Baseline: a tiny Gemma2 trained on caption -> motion codes alone, then evaluated like the demo's stages.

The plain set-up of ``shared/notes/tiny-llm-on-cpu.md`` (``models/plain_t2m.py`` says what it does),
the bar of the demo's stage-1 direct generation: trained for a budget of CPU seconds (or steps) on
the training split's captions and their code files, then scored by the LLM evaluation
(``eval.llm_eval.run_motion_task``, task ``t2m_plain``: greedy, forced ``<Motion>``, at most
``max_new_tokens``) on the same split, seed and replications as the demo's stages, so
``eval.compare`` puts it beside them::

    OMP_NUM_THREADS=1 python -m scripts.baseline_t2m --config configs/tiny/baseline_t2m.yaml budget_cpu_s=300 \\
        output_dir=runs/demo/quick/baseline_t2m
    python -m scripts.baseline_t2m --config configs/tiny/baseline_t2m.yaml budget_steps=500 output_dir=...
    python -m eval.compare runs/demo/quick/baseline_t2m runs/demo/quick/eval_llm/stage1_refinement \\
        --labels baseline "stage 1"

The run folder ``output_dir`` holds ``config.yaml``, ``run_info.json``, ``run.json``, ``model/`` (a
motion LLM folder: ``eval.evaluate_llm task=t2m_plain model=<output_dir>/model`` evaluates it
again), ``metrics.jsonl`` (loss, lr, CPU and wall seconds every ``log_every`` steps),
``train_summary.json`` (steps, epochs, CPU and wall seconds, tokens per second, first and final
loss, data counts) and the evaluation's ``eval_<split>.json``/``.md``, ``samples.jsonl``,
``renders/`` and ``index.html``. A finished run with the same config and inputs is returned as is
(``resume=false`` reruns); a run stopped after training evaluates the saved model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.annotations import MotionResolver
from data.config import config_to_dict, parse_cli
from data.layout import DatasetPaths, SkipTracker
from data.motion_codes import CodesDirSource
from data.run_folder import file_sha256
from data.runtime import MetricsLogger, open_run, resolve_device, set_seed, set_torch_threads, setup_logging
from data.vq_data import CODES_INDEX
from eval.harness import EVAL_VOLATILE, eval_inputs
from eval.llm_eval import LLMEvalConfig, run_motion_task
from eval.llm_runner import load_runner
from models.motion_llm import MotionLLMMeta, add_motion_tokens, save_motion_llm_into
from models.plain_t2m import (
    RESPONSE,
    Budget,
    ModelSize,
    Optimisation,
    build_model,
    load_captioned_motions,
    tokenize_motions,
    train_plain_t2m,
)
from models.tiny_llm import word_level_tokenizer

logger = logging.getLogger("scripts.baseline_t2m")

COMMAND = "scripts.baseline_t2m"
VOLATILE = (*EVAL_VOLATILE, "render_samples")
SUMMARY = "train_summary.json"
METRICS = "metrics.jsonl"
MODEL_DIR = "model"
PLAIN_TASK = "t2m_plain"


@dataclass(kw_only=True)
class BaselineT2MConfig(LLMEvalConfig):
    """The caption -> codes baseline (``configs/tiny/baseline_t2m.yaml``): training, then the LLM evaluation."""

    model: str = ""
    """Not set: the trained model goes to ``output_dir/model``."""
    task: str = PLAIN_TASK
    """Not set: the eval task of the baseline's prompt layout."""
    output_dir: str = "runs/demo/quick/baseline_t2m"
    """Run folder: the model, training records and the evaluation (module docstring)."""
    codes_dir: str = "runs/demo/vq_tiny/codes"
    """Code files of ``prepare.tokenize_motions`` (``<id>.npy``, rows = crop starts; row 0 is used)."""
    vq_checkpoint: str = "runs/demo/vq_tiny/net_last.pth"
    """The VQ-VAE the code files were made with (checked against their index); decodes the generations."""
    vq_meta_dir: str = "runs/demo/vq_tiny/meta"
    """That VQ-VAE's normalisation (``mean.npy``/``std.npy``)."""
    train_split: str = "train"
    """Split whose captions and codes train the model (and build its word vocabulary)."""
    hidden_size: int = 128
    """Model width (the demo's quick profile, ``configs/tiny/llm.yaml``)."""
    intermediate_size: int = 512
    """MLP width."""
    num_hidden_layers: int = 4
    """Decoder layers."""
    num_attention_heads: int = 4
    """Query heads."""
    num_key_value_heads: int = 2
    """Key/value heads."""
    head_dim: int = 32
    """Per-head width."""
    budget_cpu_s: float = 300.0
    """Training budget in CPU seconds of this process tree (comparable on a busy machine; the cosine runs over it)."""
    budget_steps: int = 0
    """Train this many optimizer steps instead (> 0 overrides ``budget_cpu_s``)."""
    train_batch_size: int = 32
    """Examples per optimizer step."""
    lr: float = 1e-3
    """AdamW peak learning rate."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.05
    """The cosine ends at this fraction of ``lr`` when the budget is spent."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 = off)."""
    log_every: int = 25
    """Steps between two lines of ``metrics.jsonl``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model or self.task != PLAIN_TASK:
            raise ValueError(f"model={self.model!r}, task={self.task!r}: leave both unset; the baseline trains its "
                             f"model into output_dir/{MODEL_DIR} and scores it on {PLAIN_TASK} (evaluate a saved "
                             f"one with python -m eval.evaluate_llm task={PLAIN_TASK} model=...)")  # fmt: skip
        if not self.vq_checkpoint:
            raise ValueError("vq_checkpoint is required: the VQ-VAE the code files were made with")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")  # fmt: skip
        for name in ("train_batch_size", "warmup_steps", "log_every", "hidden_size", "head_dim"):
            if getattr(self, name) < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"{name}={getattr(self, name)} is out of range")
        if not 0 <= self.min_lr_ratio <= 1 or self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0 and min_lr_ratio={self.min_lr_ratio} in [0, 1]")
        self.budget()  # validates the budget

    def budget(self) -> Budget:
        return Budget(cpu_s=0.0 if self.budget_steps else self.budget_cpu_s, steps=self.budget_steps)

    def eval_config(self, model_dir: Path) -> LLMEvalConfig:
        """The evaluation's config: this one's evaluation fields, the trained model, task ``t2m_plain``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(LLMEvalConfig) if f.init}
        return LLMEvalConfig(**{**values, "model": str(model_dir), "task": PLAIN_TASK})


def train(cfg: BaselineT2MConfig, run: Any) -> dict[str, Any]:
    """Build the vocabulary and model, train, save ``model/``; returns the training summary."""
    source = CodesDirSource(cfg.codes_dir, MotionResolver([cfg.dataset_root], cfg.dataset),
                            vq_checkpoint=cfg.vq_checkpoint)  # fmt: skip
    tracker = SkipTracker(f"{cfg.train_split} captions", cfg.on_error, cfg.max_skip_fraction)
    motions = load_captioned_motions(cfg.dataset_root, cfg.train_split, source, tracker)
    tokenizer = word_level_tokenizer([*(c for m in motions for c in m.captions), RESPONSE])
    vocab = add_motion_tokens(tokenizer, source.nb_code, expected_n_text=len(tokenizer))
    size = ModelSize(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                     cfg.num_key_value_heads, cfg.head_dim)  # fmt: skip
    model = build_model(vocab.size, size, seed=cfg.seed)
    examples = tokenize_motions(motions, tokenizer, vocab)
    logger.info("baseline t2m: %d motions, %d captions, %d text tokens + %d motion tokens, %.2fM parameters",
                len(motions), sum(len(m.captions) for m in motions), vocab.n_text, vocab.nb_code + 2,
                model.num_parameters() / 1e6)  # fmt: skip
    run.write_text(METRICS, "")  # started empty: a rerun does not append to an earlier attempt's lines
    opt = Optimisation(batch_size=cfg.train_batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                       min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)  # fmt: skip
    result = train_plain_t2m(model, examples, budget=cfg.budget(), opt=opt, seed=cfg.seed,
                             pad_id=int(tokenizer.pad_token_id), log_every=cfg.log_every,
                             metrics=MetricsLogger(run.path(METRICS)).log, progress=cfg.progress)  # fmt: skip
    meta = MotionLLMMeta(
        n_text=vocab.n_text, nb_code=vocab.nb_code, vq_checkpoint=cfg.vq_checkpoint,
        vq_sha256=file_sha256(cfg.vq_checkpoint), base_model="",
        info={"stage": "baseline_t2m", "vq_meta_dir": cfg.vq_meta_dir, "codes_dir": cfg.codes_dir},
    )  # fmt: skip
    save_motion_llm_into(run, model, tokenizer, meta, subdir=MODEL_DIR)
    summary = {
        **result.as_dict(final_window=20), "budget": {"cpu_s": cfg.budget().cpu_s, "steps": cfg.budget_steps},
        "parameters": model.num_parameters(), "n_text": vocab.n_text, "nb_code": vocab.nb_code,
        "motions": len(motions), "captions": sum(len(m.captions) for m in motions),
        "skipped_captions": len(tracker.skipped), "num_threads": cfg.num_threads,
    }  # fmt: skip
    run.write_json(SUMMARY, summary)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_cli(BaselineT2MConfig, argv, description=__doc__)
    setup_logging()
    device = resolve_device(cfg.device)
    set_torch_threads(cfg.num_threads)
    seed = set_seed(cfg.seed)
    inputs = {
        **eval_inputs(cfg), "codes_index": Path(cfg.codes_dir) / CODES_INDEX,
        f"{cfg.train_split}_split": DatasetPaths(cfg.dataset_root).split_file(cfg.train_split),
    }  # fmt: skip
    with open_run(cfg.output_dir, command=COMMAND, config=config_to_dict(cfg), seed=seed, inputs=inputs,
                  volatile=VOLATILE, overwrite=cfg.overwrite, resume=cfg.resume) as run:  # fmt: skip
        report = f"eval_{cfg.split}.json"
        if run.finished and run.has(report):
            logger.info(
                "%s: baseline already trained and evaluated; keeping it (resume=false reruns)", run.root
            )
            return {"training": run.read_json(SUMMARY), "eval": run.read_json(report)}
        if run.has(SUMMARY) and run.has(f"{MODEL_DIR}/motion_llm.json"):
            logger.info("%s: model already trained; evaluating it", run.root)
            summary = run.read_json(SUMMARY)
        else:
            summary = train(cfg, run)
        t0 = time.time()
        ecfg = cfg.eval_config(run.root / MODEL_DIR)
        runner = load_runner(ecfg.model, cfg.dataset, device=device, options=ecfg.options(),
                             dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)  # fmt: skip
        result = run_motion_task(ecfg, runner, device, run, t0)
        run.done()
    return {"training": summary, "eval": result}


if __name__ == "__main__":
    main()
