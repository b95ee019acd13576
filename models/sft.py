"""Supervised fine-tuning of the motion LLM on the Hugging Face ``Trainer`` (library of ``SFT/train_sft.py``).

One recipe serves the three SFT stages (spec ``sft-and-inference.md`` sections 2.3, 5, 6, 7);
only the config differs:

* **stage 0** trains the base model (a plain Gemma2 folder, e.g. ``gemma-2-2b-it`` or the tiny
  one) on T2M and M2T (``stage_0_annotations.json`` + the M2T file), the part Motion-Agent did
  for HumanML3D; the motion tokens are added to the base here;
* **stage 1** starts from stage 0 (or a Motion-Agent checkpoint imported by
  ``prepare/convert_checkpoint.py``) and mixes the eight meta-task files;
* **stage 2** starts from stage 1 on the IRMoGen dialogues (``--ignore-incorrect --wo-answer``).

Training is full fine-tuning unless ``lora.enabled`` (one adapter named ``shared``, r64/alpha64
as the reference; the motion rows of the embedding train with it). The model keeps float32
master weights; on a GPU the forward/backward runs under bf16 autocast (``training.precision``).
The reference's pure-bf16 Adam (B1) loses most updates at lr 1e-5 (bf16 has 8 bits of mantissa:
an update smaller than 1/256 of a weight vanishes), so we do not reproduce it.

The examples come from :class:`data.sft_dataset.SFTDataset` (labels = the builder's loss masks,
right padding, cut at 2048), with a new draw every epoch (:class:`EpochCallback`). The global
batch (``training.global_batch_size``) is the same on any number of processes: gradient
accumulation makes up the difference. The run folder holds::

    run.json, config.yaml, run_info.json   manifest and resolved config (data.run_folder)
    trainer/checkpoint-<step>/             Trainer checkpoints (weights, optimizer, scheduler, RNG,
                                           trainer_state.json; motion_llm.json + tokenizer), for resume
    metrics.jsonl                          one line per log: step, epoch, loss, lr, grad_norm, tokens/s, eval_loss
    training_samples.txt                   the first examples as text, with their trained spans marked
    model/                                 the final motion LLM folder (merged; motion_llm.json)
    loss_curve.png                         train and validation loss against the step
    sft_summary.json                       final losses, steps, wall time, tokens/s
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from matplotlib.figure import Figure
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import is_tensorboard_available
from transformers.trainer_utils import get_last_checkpoint

from data.annotations import MotionResolver
from data.config import RunConfig
from data.motion_codes import CodesDirSource
from data.progress import terminal_bars
from data.prompts import ORIGINAL_TEMPLATE_SHA256, load_prompt_pools
from data.run_folder import RunFolder
from data.runtime import dist_env, is_main_process, resolve_device
from data.sft_dataset import SFTCollator, SFTDataset, split_indices
from data.sft_examples import AnnotationExampleSet, BuildOptions, Example
from models.motion_llm import (
    LORA_TARGETS,
    LoadedMotionLLM,
    MotionLLMMeta,
    VQIdentity,
    apply_lora,
    load_motion_llm,
    lora_config,
    merge_lora,
    save_motion_llm_into,
)

logger = logging.getLogger(__name__)

TRAINER_DIR = "trainer"
MODEL_DIR = "model"
METRICS = "metrics.jsonl"
SUMMARY = "sft_summary.json"
LOSS_PLOT = "loss_curve.png"
SAMPLES = "training_samples.txt"


@dataclass(kw_only=True)
class LoraSection:
    """LoRA adapter ``shared`` (spec section 2.2); off = full fine-tuning (stages 1 and 2 as released)."""

    enabled: bool = False
    """Train one adapter instead of every weight; the saved model has it merged."""
    r: int = 64
    """Rank (``--lora-r-t2m``)."""
    alpha: int = 64
    """Alpha (``--lora-alpha-t2m``); scaling = alpha / r."""
    dropout: float = 0.1
    """Dropout on the adapter input."""
    targets: tuple[str, ...] = LORA_TARGETS
    """Wrapped modules of every decoder layer."""
    train_motion_rows: bool = True
    """Also train the ``K + 2`` motion-token rows of the (tied) embedding, as Motion-Agent does."""


@dataclass(kw_only=True)
class TrainingSection:
    """Optimisation and logging; mapped onto ``transformers.TrainingArguments`` by :func:`training_arguments`."""

    epochs: float = 1.0
    """Passes over the training entries (``--epochs-unified``)."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    lr_scheduler: str = "constant"
    """``transformers`` scheduler name (the reference: constant, no warm-up)."""
    warmup_steps: float = 0.0
    """Linear warm-up: steps (>= 1) or a fraction of all steps (< 1)."""
    optim: str = "adamw_torch"
    """``transformers`` optimizer name; ``adamw_torch`` with weight_decay 0 is the reference's Adam."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_epsilon: float = 1e-8
    """Adam epsilon."""
    max_grad_norm: float = 0.0
    """Gradient clipping norm (0 = none, as the reference)."""
    global_batch_size: int = 32
    """Sequences per optimizer step over all processes (the reference: 4 per GPU x GPUs)."""
    per_device_batch_size: int = 4
    """Sequences per forward pass on one process; accumulation = global / (per_device x processes)."""
    eval_batch_size: int = 8
    """Sequences per validation forward pass."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``bf16``: bf16 autocast over float32 master weights; ``auto``: bf16 on a bf16-capable GPU, else fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    logging_steps: int = 10
    """Optimizer steps between log lines (metrics.jsonl, progress, TensorBoard)."""
    save_strategy: Literal["steps", "epoch", "no"] = "epoch"
    """When Trainer checkpoints (for resume) are written."""
    save_steps: int = 500
    """Steps between checkpoints with ``save_strategy=steps``."""
    save_total_limit: int = 2
    """Keep this many newest checkpoints (0 = all)."""
    eval_strategy: Literal["steps", "epoch", "no"] = "epoch"
    """When the validation loss is computed (needs validation entries)."""
    eval_steps: int = 500
    """Steps between validations with ``eval_strategy=steps``."""
    dataloader_num_workers: int = 0
    """Worker processes building examples (0 = in the training process)."""
    report_to: str = "auto"
    """Trackers: ``auto`` (TensorBoard when installed, else none), ``none``, ``tensorboard``, ``wandb``, or a comma list."""
    deepspeed: str = ""
    """DeepSpeed JSON (``configs/deepspeed/zero2.json``); empty = plain DDP. Without the package: a warning, then DDP."""
    ddp_find_unused_parameters: bool = False
    """DDP's unused-parameter search (the reference turned it on; nothing is unused in full tuning)."""
    pad_to_multiple_of: int = 1
    """Round padded batch lengths up to this (8 helps GPU kernels; 1 on CPU)."""
    group_by_length: bool = False
    """Batches of similar length (``LengthGroupedSampler``: shuffled megabatches of 50 batches, each sorted
    by length), so less padding is computed; the lengths are read once from the first epoch's examples."""

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "per_device_batch_size", "eval_batch_size", "logging_steps",
                     "save_steps", "eval_steps", "pad_to_multiple_of"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name}={getattr(self, name)} must be >= 1")
        if self.global_batch_size % self.per_device_batch_size:
            raise ValueError(
                f"training.global_batch_size={self.global_batch_size} must be a multiple of "
                f"training.per_device_batch_size={self.per_device_batch_size}"
            )
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError(
                f"training.epochs={self.epochs} and training.learning_rate={self.learning_rate} must be > 0"
            )


@dataclass(kw_only=True)
class SFTConfig(RunConfig):
    """One SFT stage (``python -m SFT.train_sft --config configs/<dataset>/sft_stage<N>.yaml``)."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "on_error": "a missing motion stops SFT (check the files first with prepare.inspect_annotations)",
        "max_skip_fraction": "a missing motion stops SFT (nothing is skipped)",
    }

    stage: int = 1
    """0 (base: T2M + M2T), 1 (eight meta tasks) or 2 (IRMoGen dialogues); recorded in motion_llm.json."""
    output_dir: str = "runs/sft_stage1"
    """Run folder (see ``models/sft.py``); the trained model goes to ``<output_dir>/model``."""
    seed: int = 123
    """Seed of the weights' init draws, the data order and every example draw."""
    model_path: str = ""
    """Start weights: a plain Gemma2 folder (stage 0) or a motion LLM folder (the previous stage's ``model/``)."""
    vq_checkpoint: str = ""
    """VQ-VAE checkpoint the codes come from; a motion LLM trained with another one is refused."""
    nb_code: int = 512
    """Codebook size K of that VQ-VAE."""
    expected_n_text: int = 0
    """Required base tokenizer size (256000 for gemma-2; 0 = whatever the base has)."""
    codes_dir: str = ""
    """Code files of ``prepare/tokenize_motions.py`` for every motion the annotations name."""
    extra_roots: tuple[str, ...] = ()
    """More motion roots searched after ``dataset_root`` (e.g. the engine's imperfect motions)."""
    annotation_files: tuple[str, ...] = ()
    """Training annotation files (their entries are concatenated)."""
    max_entries_per_file: int = 0
    """Use only the first N entries of each annotation file (0 = all); a quick demo or smoke run."""
    uncapped_files: tuple[str, ...] = ()
    """File names (e.g. ``T2M_direct_generation_annots.json``) that ``max_entries_per_file`` leaves
    whole: the demo keeps every direct-generation entry while it samples the other meta tasks."""
    val_files: tuple[str, ...] = ()
    """Validation annotation files; empty = hold out ``val_fraction`` of the training entries."""
    val_fraction: float = 0.02
    """Share of training entries held out for the validation loss when ``val_files`` is empty (0 = none)."""
    val_max_entries: int = 256
    """Cap on validation entries (0 = no cap)."""
    prompt_template: str = ""
    """Original ``prompt_template-2.json``; empty = our built-in paraphrase pools."""
    prompt_template_sha256: str | None = ORIGINAL_TEMPLATE_SHA256
    """Expected sha256 of ``prompt_template`` (null skips the check)."""
    ignore_incorrect: bool = True
    """Stage 2: no loss on the failed attempts' motions (``--ignore-incorrect``)."""
    answer_block: bool = False
    """Stage 2: keep the ``<answer>`` block (the release trains ``--wo-answer``)."""
    max_length: int = 2048
    """Cut examples after this many tokens."""
    crop_augment: bool = True
    """Draw each motion's 0-3 frame crop offset per epoch (spec section 4.3, the release's
    augmentation); ``false`` = every motion's codes cropped at frame 0 (a deterministic target: the
    demo's quick profile, where a tiny model has minutes to learn)."""
    attn_implementation: str = "auto"
    """``auto`` (flash_attention_2 on CUDA when installed, sdpa on other GPUs, eager on CPU) or a transformers name."""
    save_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the final ``model/`` weights (the release ships bf16)."""
    lora: LoraSection = field(default_factory=LoraSection)
    """LoRA adapter (off = full fine-tuning)."""
    training: TrainingSection = field(default_factory=TrainingSection)
    """Optimisation, precision, checkpoints, logging."""
    max_steps: int = 0
    """Stop this invocation after N optimizer steps (a checkpoint is written; rerunning resumes); 0 = to the end."""
    resume: bool = True
    """Continue the folder's run from its last Trainer checkpoint; false starts it over."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in (0, 1, 2):
            raise ValueError(f"stage={self.stage} must be 0, 1 or 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.max_length < 8 or self.nb_code < 1 or self.max_steps < 0 or self.max_entries_per_file < 0:
            raise ValueError(
                f"max_length={self.max_length} (>= 8), nb_code={self.nb_code} (>= 1), max_steps={self.max_steps} "
                f"and max_entries_per_file={self.max_entries_per_file} (>= 0)"
            )

    def check_inputs(self) -> None:
        """The files a run needs exist (called before anything is written).

        Raises:
            FileNotFoundError: naming the field and the path.
        """
        if not self.annotation_files:
            raise FileNotFoundError("annotation_files is empty: name the stage's annotation files")
        for name in ("model_path", "vq_checkpoint", "codes_dir"):
            if not getattr(self, name) or not Path(getattr(self, name)).exists():
                raise FileNotFoundError(f"{name}={getattr(self, name)!r} does not exist")
        for f in (*self.annotation_files, *self.val_files):
            if not Path(f).is_file():
                raise FileNotFoundError(f"annotation file not found: {f} (annotation_files / val_files)")

    def build_options(self) -> BuildOptions:
        return BuildOptions(ignore_incorrect=self.ignore_incorrect, answer_block=self.answer_block)


# --------------------------------------------------------------------------------------------------
# Callbacks


class EpochCallback(TrainerCallback):
    """Give the datasets the epoch before each epoch's batches are drawn (new templates and crops)."""

    def __init__(self, *datasets: SFTDataset) -> None:
        self.datasets = datasets
        self.seen: list[int] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor((state.epoch or 0.0) + 1e-9))
        self.seen.append(epoch)
        for ds in self.datasets:
            ds.set_epoch(epoch)


class ProgressCallback(TrainerCallback):
    """metrics.jsonl lines and a log line per log event: loss, lr, grad norm, tokens/s (rank 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.t0 = time.perf_counter()
        self.tokens0 = 0
        self.last: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()
        self.tokens0 = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if "loss" in logs:
            tokens = state.num_input_tokens_seen - self.tokens0
            row["tokens_per_s"] = tokens / max(now - self.t0, 1e-9)
            self.t0, self.tokens0 = now, state.num_input_tokens_seen
            logger.info(
                "step %d/%d epoch %.2f loss %.4f lr %.2e tokens/s %.0f",
                state.global_step, state.max_steps, state.epoch or 0.0, logs["loss"],
                logs.get("learning_rate", 0.0), row["tokens_per_s"],
            )  # fmt: skip
        if "eval_loss" in logs:
            logger.info("step %d validation loss %.4f", state.global_step, logs["eval_loss"])
        self.last.update(row)
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


class StopAfterStepsCallback(TrainerCallback):
    """Save and stop after ``steps`` optimizer steps of this invocation (``max_steps``)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.start: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.steps and state.global_step - (self.start or 0) >= self.steps:
            control.should_save = True
            control.should_training_stop = True


class MotionMetaCallback(TrainerCallback):
    """Write ``motion_llm.json`` into each Trainer checkpoint, so a checkpoint folder loads as a motion LLM."""

    def __init__(self, meta: MotionLLMMeta) -> None:
        self.meta = meta

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                self.meta.save(ckpt)


# --------------------------------------------------------------------------------------------------
# Building the pieces


def resolve_report_to(value: str) -> list[str]:
    """``auto`` -> ``["tensorboard"]`` when it is installed, else ``[]``; other values as a list."""
    if value == "auto":
        return ["tensorboard"] if is_tensorboard_available() else []
    names = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    if "tensorboard" in names and not is_tensorboard_available():
        raise ValueError(
            "training.report_to names tensorboard but it is not installed (pip install tensorboard)"
        )
    return names


def resolve_deepspeed(path: str) -> str | None:
    """The DeepSpeed config to use: ``None`` when unset or when the package is missing (warned: plain DDP)."""
    if not path:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"training.deepspeed={path!r}: no such file")
    if importlib.util.find_spec("deepspeed") is None:
        logger.warning(
            "training.deepspeed=%s but deepspeed is not installed (requirements-gpu.txt): training with plain DDP, "
            "which keeps a full optimizer state on every GPU",
            path,
        )
        return None
    return path


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to run bf16 autocast (over float32 master weights)."""
    if precision == "fp32":
        return False
    capable = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not capable:
        raise ValueError(f"training.precision=bf16 needs a bf16-capable GPU; the device is {device}")
    return capable


def accumulation_steps(t: TrainingSection, world_size: int) -> int:
    """Gradient accumulation that keeps ``global_batch_size`` on ``world_size`` processes.

    Raises:
        ValueError: the global batch is not a multiple of per_device_batch_size x world_size.
    """
    per_step = t.per_device_batch_size * world_size
    if t.global_batch_size % per_step:
        raise ValueError(
            f"training.global_batch_size={t.global_batch_size} is not a multiple of "
            f"per_device_batch_size={t.per_device_batch_size} x {world_size} processes; change one of them"
        )
    return t.global_batch_size // per_step


def trainer_arguments_common(t: Any, seed: int, device: torch.device, progress: bool) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords SFT and GRPO share: seed, optimiser, precision, logging,
    checkpoints, trackers, DeepSpeed and the CPU/gloo set-up. ``t`` is a training section with the
    optimiser, logging and checkpoint fields (:class:`TrainingSection`, ``models.grpo.GRPOTrainingSection``)."""
    kwargs: dict[str, Any] = {}
    if device.type == "cpu":
        kwargs["use_cpu"] = True
        if dist_env()[1] > 1:
            kwargs["ddp_backend"] = "gloo"
    return dict(
        seed=seed,
        data_seed=seed,
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        optim=t.optim,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=t.per_device_batch_size,
        bf16=use_bf16(t.precision, device),
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit or None,
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=device.type == "cuda",
        report_to=resolve_report_to(t.report_to),
        deepspeed=resolve_deepspeed(t.deepspeed),
        disable_tqdm=not terminal_bars(progress),  # a log gets ProgressCallback lines instead
        log_level="warning",
        **kwargs,
    )


def training_arguments(
    cfg: SFTConfig, output_dir: Path, device: torch.device, has_eval: bool
) -> TrainingArguments:
    """The ``TrainingArguments`` of a run (seeded, logging, checkpoints, precision, DDP/DeepSpeed)."""
    t = cfg.training
    eval_strategy = t.eval_strategy if has_eval else "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=accumulation_steps(t, dist_env()[1]),
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps if eval_strategy == "steps" else None,
        ddp_find_unused_parameters=t.ddp_find_unused_parameters,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        remove_unused_columns=False,
        prediction_loss_only=True,
        **trainer_arguments_common(t, cfg.seed, device, cfg.progress),
    )


def cap_per_source(annotations: list, cap: int, uncapped: Sequence[str] = ()) -> list:
    """The first ``cap`` entries of each source file, in the original order; files whose name is in
    ``uncapped`` are kept whole."""
    counts: dict[str, int] = {}
    kept = []
    for a in annotations:
        counts[a.source] = counts.get(a.source, 0) + 1
        if counts[a.source] <= cap or Path(a.source).name in uncapped:
            kept.append(a)
    return kept


def build_datasets(cfg: SFTConfig, tokenizer: Any) -> tuple[SFTDataset, SFTDataset | None]:
    """Training and validation datasets over the configured annotation files and code files."""
    pools = load_prompt_pools(cfg.prompt_template or None, sha256=cfg.prompt_template_sha256)
    resolver = MotionResolver([cfg.dataset_root, *cfg.extra_roots], dataset=cfg.dataset)
    codes = CodesDirSource(cfg.codes_dir, resolver, nb_code=cfg.nb_code, vq_checkpoint=cfg.vq_checkpoint)
    examples = AnnotationExampleSet(
        list(cfg.annotation_files),
        codes,
        pools,
        seed=cfg.seed,
        options=cfg.build_options(),
        crop_augment=cfg.crop_augment,
    )
    if cfg.max_entries_per_file:
        examples.annotations = cap_per_source(
            examples.annotations, cfg.max_entries_per_file, cfg.uncapped_files
        )
    if cfg.val_files:
        val_set = AnnotationExampleSet(
            list(cfg.val_files),
            codes,
            pools,
            seed=cfg.seed,
            options=cfg.build_options(),
            crop_augment=cfg.crop_augment,
        )
        train = SFTDataset(examples, tokenizer, max_length=cfg.max_length)
        n_val = min(len(val_set), cfg.val_max_entries or len(val_set))
        val = SFTDataset(val_set, tokenizer, range(n_val), cfg.max_length, fixed_epoch=0)
        return train, val
    train_idx, val_idx = split_indices(len(examples), cfg.val_fraction, cfg.seed, cfg.val_max_entries)
    train = SFTDataset(examples, tokenizer, train_idx, cfg.max_length)
    val = SFTDataset(examples, tokenizer, val_idx, cfg.max_length, fixed_epoch=0) if val_idx else None
    return train, val


def prepare_model(cfg: SFTConfig, device: torch.device) -> tuple[Any, LoadedMotionLLM]:
    """Load the start weights as a motion LLM (checked against the VQ-VAE) and wrap LoRA if enabled."""
    vq = VQIdentity.of(cfg.vq_checkpoint)
    loaded = load_motion_llm(
        cfg.model_path, nb_code=cfg.nb_code, vq=vq, device=device, attn_implementation=cfg.attn_implementation,
        training=True, expected_n_text=cfg.expected_n_text or None,
    )  # fmt: skip
    loaded.meta.vq_checkpoint, loaded.meta.vq_sha256 = vq.path, vq.sha256
    loaded.meta.base_model = loaded.meta.base_model or cfg.model_path
    loaded.meta.info = {**loaded.meta.info, "stage": cfg.stage, "started_from": cfg.model_path}
    model = loaded.model
    if cfg.training.gradient_checkpointing:
        model.config.use_cache = False
    if cfg.lora.enabled:
        rows = range(loaded.vocab.n_text, loaded.vocab.size) if cfg.lora.train_motion_rows else None
        lc = lora_config(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets, rows)
        model = apply_lora(model, lc)
    return model, loaded


def example_dump(examples: list[Example]) -> str:
    """Examples as text with the trained pieces in ``[[...]]`` (the reference's training_samples.txt)."""
    out = []
    for i, ex in enumerate(examples):
        body = "".join(f"[[{s.text}]]" if s.trainable else s.text for s in ex.segments)
        out.append(f"=== example {i} ({ex.task})\n{body}\n")
    return "\n".join(out)


def plot_losses(log_history: list[dict[str, Any]], title: str) -> Figure:
    """A figure of the train loss (per log step) and the validation loss against the optimizer step."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    val = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r and "step" in r]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / trained token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# The run


def run_sft(cfg: SFTConfig, run: RunFolder) -> dict[str, Any]:
    """Train one stage into ``run`` (see the module docstring); returns the summary."""
    device = resolve_device(cfg.device)
    trainer_dir = run.root / TRAINER_DIR
    if not run.resumed and trainer_dir.is_dir() and is_main_process():
        logger.info("%s: starting over; removing this run's old Trainer checkpoints", run.root)
        shutil.rmtree(trainer_dir)
    checkpoint = get_last_checkpoint(str(trainer_dir)) if run.resumed and trainer_dir.is_dir() else None

    model, loaded = prepare_model(cfg, device)
    train_ds, val_ds = build_datasets(cfg, loaded.tokenizer)
    logger.info(
        "stage %d: %d training entries, %d validation entries, resume from %s",
        cfg.stage, len(train_ds), len(val_ds) if val_ds else 0, checkpoint or "scratch",
    )  # fmt: skip
    run.begin()
    if run.main_process and not run.has(SAMPLES):
        run.write_text(SAMPLES, example_dump([train_ds.example(i) for i in range(min(4, len(train_ds)))]))
    epochs = EpochCallback(train_ds)
    progress = ProgressCallback(run.path(METRICS) if run.main_process else None)
    args = training_arguments(cfg, trainer_dir, device, has_eval=val_ds is not None)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=SFTCollator(loaded.tokenizer.pad_token_id, cfg.training.pad_to_multiple_of),
        processing_class=loaded.tokenizer,
        callbacks=[epochs, progress, StopAfterStepsCallback(cfg.max_steps), MotionMetaCallback(loaded.meta)],
    )
    trainer.remove_callback(PrinterCallback)  # our ProgressCallback logs instead of printing dicts
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    state = trainer.state
    finished = state.global_step >= state.max_steps
    summary: dict[str, Any] = {
        "stage": cfg.stage,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "finished": finished,
        "epoch": state.epoch,
        "train_loss": result.training_loss,
        "last_loss": progress.last.get("loss"),
        "wall_seconds_this_invocation": wall,
        "tokens_seen": state.num_input_tokens_seen,
        "world_size": dist_env()[1],
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "bf16": args.bf16,
        "epochs_drawn": epochs.seen,
    }
    if finished and val_ds is not None:
        evals = [r for r in state.log_history if "eval_loss" in r]
        at_end = evals and evals[-1].get("step") == state.global_step
        summary["eval_loss"] = evals[-1]["eval_loss"] if at_end else trainer.evaluate()["eval_loss"]
    if run.main_process:
        fig = plot_losses(state.log_history, f"SFT stage {cfg.stage} ({Path(cfg.output_dir).name})")
        run.write_with(LOSS_PLOT, lambda fh: fig.savefig(fh, format="png"))
    if finished:
        final = merge_lora(trainer.model) if cfg.lora.enabled else trainer.model
        dtype = torch.bfloat16 if cfg.save_dtype == "bfloat16" else torch.float32
        save_motion_llm_into(run, final, loaded.tokenizer, loaded.meta, subdir=MODEL_DIR, dtype=dtype)
        summary["model"] = str(run.root / MODEL_DIR)
    run.write_json(SUMMARY, summary)
    if finished:
        run.done()
    return summary
