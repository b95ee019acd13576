"""Stage-3 GRPO of the motion LLM on TRL's ``GRPOTrainer`` (library of ``RL/train_grpo.py``).

Spec: ``grpo.md`` (rollout section 2, rewards 3, loss 4, optimisation 5, the TRL mapping 6). The
policy is the stage-2 motion LLM folder, loaded as a plain ``Gemma2ForCausalLM``; TRL re-loads the
frozen reference model from the same folder (``config._name_or_path``), so the KL term is measured
against stage 2 exactly. The reward callables (``RL/rewards.py``) hold the VQ-VAE and the evaluator;
nothing wraps the policy.

What differs from a stock ``GRPOTrainer`` run, and why (each one small):

* :class:`MotionGRPOTrainer` overrides ``_calculate_rewards`` only: after TRL has gathered the
  rewards of every process into ``[N_global, n_funcs]``, the columns of rewards flagged
  ``group_minmax`` (the two Guo distances; the reference's ``reward_norm_before_add``) are min-max
  scaled inside each group of ``G`` consecutive rows (:func:`group_minmax`). It must run after the
  gather because a group can straddle processes; the reference scaled the rank-local batch, which
  was one group only because per-device batch = G (spec section 7, item 6).
* The settings TRL defaults differently are pinned (spec section 6): ``top_k=50``, ``beta=0.01``
  with ``use_bias_correction_kl=False``, ``loss_type="grpo"``, ``scale_rewards="group"``,
  ``mask_truncated_completions=False``, 1024 new tokens, G = 4, and the stop on ``<eos>`` only (the
  in-memory ``generation_config.eos_token_id`` is set to the tokenizer's eos; the saved model keeps
  the stage-2 generation config).
* The global batch is counted in prompts (``training.global_prompts``, 32 in the reference =
  128 completions); gradient accumulation makes it up on fewer processes, and TRL then generates
  the whole global batch once per optimizer step (``steps_per_generation`` = accumulation).
* Deviations from the reference, on purpose: fp32 master weights with bf16 autocast on GPUs (as our
  SFT), ``save_total_limit`` (reference: none), the trained model saved as a Hugging Face motion LLM
  folder (reference: a wrapper state dict), no 5 % validation split thrown away.

The run folder holds::

    run.json, config.yaml, run_info.json   manifest and resolved config (data.run_folder)
    trainer/checkpoint-<step>/             Trainer checkpoints (weights, optimizer, scheduler, RNG,
                                           trainer_state.json, motion_llm.json), for resume
    metrics.jsonl                          one line per log: loss, kl, reward, rewards/<name>/{mean,std},
                                           <name>/raw_mean, motion/*, completions/*, entropy, lr, grad_norm
    reward_curves.png                      rewards per function, raw distances, KL, lengths, malformed share
    model/                                 the trained motion LLM folder (motion_llm.json; stage 3)
    grpo_summary.json                      steps, wall time, last metrics
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from datasets import Dataset
from matplotlib.figure import Figure
from transformers import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer

from data.config import RunConfig
from data.run_folder import RunFolder
from data.runtime import dist_env, is_main_process, resolve_device
from models.motion_llm import (
    LoadedMotionLLM,
    MotionLLMError,
    VQIdentity,
    is_motion_llm,
    load_motion_llm,
    save_motion_llm_into,
)
from models.sft import (
    MotionMetaCallback,
    ProgressCallback,
    StopAfterStepsCallback,
    trainer_arguments_common,
)

logger = logging.getLogger(__name__)

TRAINER_DIR = "trainer"
MODEL_DIR = "model"
METRICS = "metrics.jsonl"
SUMMARY = "grpo_summary.json"
REWARD_PLOT = "reward_curves.png"
MINMAX_EPS = 1e-4
"""Denominator guard of the reference's min-max scaling: ``(r - min) / (max - min + 1e-4)``."""
PROMPT_COLUMNS = ("prompt", "caption", "caption_tokens", "motion_id", "f_tag", "to_tag")
"""Columns every stage-3 prompt row carries (``data/engine/run.py`` ``STAGE3_FILE``, grpo.md 1.2)."""

RewardFunc = Callable[..., list]
"""TRL's reward signature ``fn(completions, **kwargs) -> list[float | None]``."""


# --------------------------------------------------------------------------------------------------
# Config


@dataclass(kw_only=True)
class RewardSection:
    """Which rewards, their weights and the reference's per-group scaling (spec section 3)."""

    names: tuple[str, ...] = ("strict_format", "guo_tm_distance", "guo_mm_distance")
    """Reward functions by registry name (``RL/rewards.py``; an unknown name lists the valid ones)."""
    weights: tuple[float, ...] = ()
    """One weight per reward, applied after the scaling (empty = all 1, as the reference)."""
    reward_norm_before_add: bool = True
    """Min-max scale the distance rewards inside each group after the gather (the reference's flag)."""
    malformed_motion: Literal["mean_pose", "group_min"] = "mean_pose"
    """A completion without a usable motion: ``mean_pose`` scores the still mean pose of 196 frames (the
    reference); ``group_min`` gives it the group's worst distance (0 after scaling; needs the scaling)."""
    gt_cache_size: int = 100000
    """Ground-truth embeddings kept by the motion rewards (oldest dropped beyond it; captions are all kept)."""

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("rewards.names is empty: name at least one reward function")
        if self.weights and len(self.weights) != len(self.names):
            raise ValueError(
                f"rewards.weights has {len(self.weights)} entries for {len(self.names)} rewards {list(self.names)}"
            )
        if self.malformed_motion == "group_min" and not self.reward_norm_before_add:
            raise ValueError(
                "rewards.malformed_motion=group_min fills the group's worst distance during the per-group "
                "scaling; it needs rewards.reward_norm_before_add=true"
            )


@dataclass(kw_only=True)
class GenerationSection:
    """Rollout sampling (spec section 2); the reference used Hugging Face's defaults T 1, top-k 50."""

    num_generations: int = 4
    """Completions per prompt G (the group)."""
    max_completion_length: int = 1024
    """New tokens per completion; truncated ones are kept and rewarded (not masked)."""
    temperature: float = 1.0
    """Sampling temperature (also applied to the log-probabilities of the loss)."""
    top_k: int = 50
    """TRL's default 0 would switch top-k off; the reference sampled with 50."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    min_p: float | None = None
    """Minimum token probability relative to the top one (null = off)."""
    repetition_penalty: float = 1.0
    """Hugging Face repetition penalty (1.0 = none)."""
    eos_only: bool = True
    """Stop on the tokenizer's ``<eos>`` only (the reference); false also stops on the model's other eos ids."""

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(
                f"generation.num_generations={self.num_generations} must be >= 2 (GRPO compares a group)"
            )
        if self.max_completion_length < 1 or self.temperature <= 0:
            raise ValueError(
                f"generation.max_completion_length={self.max_completion_length} (>= 1) and "
                f"generation.temperature={self.temperature} (> 0)"
            )


@dataclass(kw_only=True)
class VLLMSection:
    """Generation through vLLM (GPU only; off by default; ``pip install vllm``). Maps to TRL's ``vllm_*`` fields."""

    use_vllm: bool = False
    """Generate with vLLM instead of ``transformers.generate``."""
    mode: Literal["colocate", "server"] = "colocate"
    """``colocate``: vLLM inside each training process; ``server``: a separate ``trl vllm-serve``."""
    gpu_memory_utilization: float = 0.3
    """Share of each GPU vLLM may take (colocate)."""
    tensor_parallel_size: int = 1
    """GPUs per vLLM engine (colocate)."""
    enable_sleep_mode: bool = False
    """Offload vLLM's weights and cache while the optimizer step runs (colocate)."""
    max_model_length: int | None = None
    """vLLM context length (null = the model's)."""
    server_host: str = "0.0.0.0"
    """Host of the ``trl vllm-serve`` server (server mode)."""
    server_port: int = 8000
    """Port of that server."""


@dataclass(kw_only=True)
class GRPOTrainingSection:
    """Optimisation, precision, checkpoints, logging (spec section 5); mapped onto ``trl.GRPOConfig``."""

    epochs: float = 4.0
    """Passes over the prompt set."""
    learning_rate: float = 1e-6
    """Peak learning rate (the reference: 1e-6)."""
    lr_scheduler: str = "cosine"
    """``transformers`` scheduler name (the reference: cosine, no warm-up)."""
    warmup_steps: float = 0.0
    """Linear warm-up: steps (>= 1) or a fraction of all steps (< 1)."""
    optim: str = "adamw_torch"
    """``transformers`` optimizer name (the reference: the Trainer's AdamW)."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_epsilon: float = 1e-8
    """Adam epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (the reference: 1.0)."""
    global_prompts: int = 32
    """Prompts per optimizer step over all processes (reference: 32 GPUs x 1 prompt); x G completions."""
    per_device_batch_size: int = 4
    """Completions per forward pass on one process (reference: 4 = one group)."""
    beta: float = 0.01
    """KL coefficient (k3 estimator per token, no importance-ratio correction); 0 drops the reference model."""
    epsilon: float = 0.2
    """PPO clip range (inactive on-policy with one iteration, kept as the reference's value)."""
    loss_type: str = "grpo"
    """``grpo``: per-sequence token mean, then batch mean (the reference); TRL's default is ``dapo``."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``bf16``: bf16 autocast over float32 master weights; ``auto``: bf16 on a bf16-capable GPU, else fp32."""
    gradient_checkpointing: bool = True
    """Recompute activations (the reference had it on); off on CPU tiny runs."""
    logging_steps: int = 1
    """Optimizer steps between log lines (metrics.jsonl, TensorBoard)."""
    save_strategy: Literal["steps", "epoch", "no"] = "steps"
    """When Trainer checkpoints (for resume) are written."""
    save_steps: int = 100
    """Steps between checkpoints with ``save_strategy=steps`` (the reference: 100)."""
    save_total_limit: int = 3
    """Newest Trainer checkpoints kept (the reference kept all; 0 = all)."""
    report_to: str = "auto"
    """``auto`` (TensorBoard when installed), ``none``, ``tensorboard``, ``wandb`` or a comma list."""
    deepspeed: str = ""
    """DeepSpeed JSON (``configs/deepspeed/zero2.json``); empty = plain DDP."""
    log_completions: bool = False
    """TRL's completion table (prompt, completion, rewards, advantage) every logging step."""
    num_completions_to_print: int = 0
    """Completions printed with the table (0 = all of them when ``log_completions``)."""
    dataloader_num_workers: int = 0
    """Worker processes of the prompt loader (0 = in the training process)."""

    def __post_init__(self) -> None:
        for name in ("global_prompts", "per_device_batch_size", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name}={getattr(self, name)} must be >= 1")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.beta < 0:
            raise ValueError(
                f"training.epochs={self.epochs}, training.learning_rate={self.learning_rate} must be > 0 "
                f"and training.beta={self.beta} >= 0"
            )


@dataclass(kw_only=True)
class GRPORunConfig(RunConfig):
    """Stage-3 GRPO (``python -m RL.train_grpo --config configs/<dataset>/grpo.yaml``)."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "on_error": "a missing ground-truth motion stops GRPO (prompts come from the engine's checked set)",
        "max_skip_fraction": "nothing is skipped",
    }

    output_dir: str = "runs/grpo"
    """Run folder (see ``models/grpo.py``); the trained model goes to ``<output_dir>/model``."""
    seed: int = 42
    """Seed of the sampler, the rollouts and every other draw (the reference: 42)."""
    model_path: str = ""
    """The stage-2 motion LLM folder: the policy's start and the frozen reference model."""
    prompts_file: str = ""
    """Stage-3 prompt rows (``<annotations>/stage-3/grpo_prompts.jsonl`` from ``python -m data.engine``)."""
    max_prompts: int = 0
    """Use only the first N prompt rows (0 = all); for quick runs."""
    vq_checkpoint: str = ""
    """VQ-VAE the model's codes belong to (hash-checked against motion_llm.json); decodes the answers."""
    vq_meta_dir: str = ""
    """The VQ-VAE's normalisation (``mean.npy``/``std.npy``); empty = ``<vq_checkpoint dir>/meta``."""
    nb_code: int = 512
    """Codebook size K."""
    expected_n_text: int = 0
    """Required base tokenizer size (256000 for gemma-2; 0 = whatever the model has)."""
    evaluator_checkpoint: str = ""
    """Guo evaluator ``finest.tar`` of the distance rewards."""
    evaluator_meta_dir: str = ""
    """The evaluator's ``meta/`` (mean/std); empty = ``<evaluator dir>/meta``."""
    glove_dir: str = ""
    """The ``our_vab`` word vectors the evaluator was trained with."""
    attn_implementation: str = "auto"
    """``auto`` (flash_attention_2 on CUDA when installed, else eager: SDPA skips Gemma 2's soft-cap) or a name."""
    save_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the final ``model/`` weights."""
    rewards: RewardSection = field(default_factory=RewardSection)
    """Reward functions, weights, per-group scaling, malformed completions."""
    generation: GenerationSection = field(default_factory=GenerationSection)
    """Rollout sampling and stop."""
    vllm: VLLMSection = field(default_factory=VLLMSection)
    """vLLM generation for GPU users (off by default)."""
    training: GRPOTrainingSection = field(default_factory=GRPOTrainingSection)
    """Optimisation, loss, precision, checkpoints, logging."""
    max_steps: int = 0
    """Stop this invocation after N optimizer steps (a checkpoint is written; rerunning resumes); 0 = to the end."""
    resume: bool = True
    """Continue the folder's run from its last Trainer checkpoint; false starts it over."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nb_code < 1 or self.max_steps < 0 or self.max_prompts < 0:
            raise ValueError(
                f"nb_code={self.nb_code} (>= 1), max_steps={self.max_steps} and max_prompts={self.max_prompts} (>= 0)"
            )

    @property
    def global_completions(self) -> int:
        """Completions per optimizer step: ``global_prompts x G``."""
        return self.training.global_prompts * self.generation.num_generations

    def resolved_vq_meta_dir(self) -> str:
        return self.vq_meta_dir or str(Path(self.vq_checkpoint).parent / "meta")

    def resolved_evaluator_meta_dir(self) -> str:
        return self.evaluator_meta_dir or str(Path(self.evaluator_checkpoint).parent / "meta")

    def check_inputs(self, need_motion_assets: bool = True) -> None:
        """The files a run needs exist (called before anything is written).

        Args:
            need_motion_assets: the rewards decode motions (VQ-VAE, evaluator, word vectors, dataset).

        Raises:
            FileNotFoundError: naming the field and the path.
            MotionLLMError: ``model_path`` is not a motion LLM folder (TRL would re-load another reference).
        """
        paths = {name: getattr(self, name) for name in ("model_path", "prompts_file", "vq_checkpoint")}
        if need_motion_assets:
            paths.update(
                {name: getattr(self, name) for name in ("evaluator_checkpoint", "glove_dir", "dataset_root")}
            )
            paths["vq_meta_dir"] = self.resolved_vq_meta_dir()
            paths["evaluator_meta_dir"] = self.resolved_evaluator_meta_dir()
        for name, path in paths.items():
            if not path or not Path(path).exists():
                raise FileNotFoundError(f"{name}={path!r} does not exist")
        if not is_motion_llm(self.model_path):
            raise MotionLLMError(
                f"model_path={self.model_path!r} is not a motion LLM folder (no motion_llm.json): GRPO starts from "
                "the stage-2 model (SFT/train_sft.py writes <run>/model; prepare.convert_checkpoint imports a .pth), "
                "and TRL re-loads the reference model from this folder"
            )


# --------------------------------------------------------------------------------------------------
# The per-group min-max scaling (the one override of the trainer)


def group_minmax(
    rewards: torch.Tensor, group_size: int, columns: Sequence[int], eps: float = MINMAX_EPS
) -> torch.Tensor:
    """Min-max scale reward columns inside each group of ``group_size`` consecutive rows.

    ``r' = (r - min_g r) / (max_g r - min_g r + eps)`` per group ``g`` (the reference's
    ``reward_norm_before_add``, spec section 3.7), so a scaled column spans ``[0, 1)`` inside a group
    and is 0 for every member when they tie. A NaN in a scaled column (a reward returned ``None``,
    e.g. ``malformed_motion=group_min``) takes the group's minimum first, so it scales to 0; a group
    that is all NaN becomes all 0. Columns not listed are returned unchanged.

    Args:
        rewards: ``(N, F)`` rewards gathered over every process, groups as consecutive rows.
        group_size: ``G``; ``N`` must be a multiple of it.
        columns: indices of the columns to scale.

    Returns:
        A new ``(N, F)`` tensor.
    """
    n = rewards.shape[0]
    if n % group_size:
        raise ValueError(f"group_minmax: {n} rows are not whole groups of {group_size}")
    out = rewards.clone()
    for c in columns:
        x = out[:, c].view(-1, group_size)  # (N/G, G)
        nan = torch.isnan(x)
        lo = torch.where(nan, torch.full_like(x, math.inf), x).min(dim=1, keepdim=True).values
        hi = torch.where(nan, torch.full_like(x, -math.inf), x).max(dim=1, keepdim=True).values
        empty = torch.isinf(lo)  # every member NaN
        lo = torch.where(empty, torch.zeros_like(lo), lo)
        hi = torch.where(empty, torch.zeros_like(hi), hi)
        x = torch.where(nan, lo.expand_as(x), x)
        out[:, c] = ((x - lo) / (hi - lo + eps)).reshape(-1)
    return out


class MotionGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose gathered rewards get the per-group min-max of :func:`group_minmax`.

    Args:
        minmax_columns: indices (into ``reward_funcs``) of the rewards to scale; empty = stock TRL.
        (everything else as ``GRPOTrainer``)
    """

    def __init__(self, *args: Any, minmax_columns: Sequence[int] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        bad = [c for c in minmax_columns if not 0 <= c < len(self.reward_funcs)]
        if bad:
            raise ValueError(f"minmax_columns {bad} outside the {len(self.reward_funcs)} reward functions")
        self.minmax_columns = tuple(minmax_columns)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if not self.minmax_columns:
            return rewards
        g = self.num_generations if self.model.training else self.num_generations_eval
        return group_minmax(rewards, g, self.minmax_columns)


def minmax_columns(reward_funcs: Sequence[RewardFunc], enabled: bool) -> list[int]:
    """Indices of the rewards whose ``group_minmax`` attribute is true (none when ``enabled`` is false)."""
    if not enabled:
        return []
    return [i for i, f in enumerate(reward_funcs) if getattr(f, "group_minmax", False)]


# --------------------------------------------------------------------------------------------------
# Building the pieces


def accumulation_steps(cfg: GRPORunConfig, world_size: int) -> int:
    """Gradient accumulation that keeps ``global_prompts x G`` completions per optimizer step.

    Raises:
        ValueError: the global completions are not a multiple of per_device_batch_size x world_size.
    """
    per_step = cfg.training.per_device_batch_size * world_size
    if cfg.global_completions % per_step:
        raise ValueError(
            f"training.global_prompts={cfg.training.global_prompts} x generation.num_generations="
            f"{cfg.generation.num_generations} = {cfg.global_completions} completions is not a multiple of "
            f"training.per_device_batch_size={cfg.training.per_device_batch_size} x {world_size} processes"
        )
    return cfg.global_completions // per_step


def grpo_arguments(cfg: GRPORunConfig, output_dir: Path, device: torch.device, n_rewards: int) -> GRPOConfig:
    """The ``trl.GRPOConfig`` of a run: the reference's settings (spec section 6 table) plus the run's own.

    Raises:
        ImportError: ``vllm.use_vllm`` without the ``vllm`` package.
    """
    t, g, v = cfg.training, cfg.generation, cfg.vllm
    world = dist_env()[1]
    accum = accumulation_steps(cfg, world)
    if v.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "vllm.use_vllm=true but vllm is not installed (pip install vllm), or set vllm.use_vllm=false"
        )
    if cfg.rewards.weights and len(cfg.rewards.weights) != n_rewards:
        raise ValueError(
            f"rewards.weights has {len(cfg.rewards.weights)} entries for {n_rewards} reward functions"
        )
    return GRPOConfig(
        output_dir=str(output_dir),
        # rollout (spec section 2)
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        top_k=g.top_k,
        top_p=g.top_p,
        min_p=g.min_p,
        repetition_penalty=g.repetition_penalty,
        mask_truncated_completions=False,
        shuffle_dataset=True,
        remove_unused_columns=False,
        # loss (spec section 4)
        beta=t.beta,
        use_bias_correction_kl=False,
        loss_type=t.loss_type,
        num_iterations=1,
        epsilon=t.epsilon,
        scale_rewards="group",
        multi_objective_aggregation="sum_then_normalize",
        reward_weights=list(cfg.rewards.weights) if cfg.rewards.weights else [1.0] * n_rewards,
        disable_dropout=True,
        # optimisation (spec section 5): the rest comes from trainer_arguments_common
        gradient_accumulation_steps=accum,
        # vLLM (GPU users; off by default)
        use_vllm=v.use_vllm,
        vllm_mode=v.mode,
        vllm_gpu_memory_utilization=v.gpu_memory_utilization,
        vllm_tensor_parallel_size=v.tensor_parallel_size,
        vllm_enable_sleep_mode=v.enable_sleep_mode,
        vllm_max_model_length=v.max_model_length,
        vllm_server_host=v.server_host,
        vllm_server_port=v.server_port,
        # logging (the shared logging/checkpoint/tracker settings come from trainer_arguments_common)
        log_completions=t.log_completions,
        num_completions_to_print=t.num_completions_to_print or None,
        eval_strategy="no",
        **trainer_arguments_common(t, cfg.seed, device, cfg.progress),
    )


def load_prompt_rows(path: str | Path, max_rows: int = 0) -> list[dict[str, Any]]:
    """The stage-3 prompt rows of a JSONL file (``data.engine`` ``STAGE3_FILE``), in file order.

    Raises:
        ValueError: a line that is not JSON or lacks a column of ``PROMPT_COLUMNS`` (file and line named).
    """
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({err})") from err
            missing = [c for c in PROMPT_COLUMNS if c not in row]
            if missing:
                raise ValueError(
                    f"{path}:{lineno}: missing column(s) {missing}; rebuild the prompt set with python -m data.engine"
                )
            rows.append(row)
            if max_rows and len(rows) >= max_rows:
                break
    if not rows:
        raise ValueError(f"{path}: no prompt rows")
    return rows


def prompt_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """A plain-text (standard-format, never conversational) ``datasets.Dataset`` of the rows."""
    return Dataset.from_list(rows)


def prepare_policy(cfg: GRPORunConfig, device: torch.device) -> LoadedMotionLLM:
    """The stage-2 motion LLM (checked against the VQ-VAE), float32 master weights, stopping on ``<eos>`` only."""
    vq = VQIdentity.of(cfg.vq_checkpoint)
    loaded = load_motion_llm(
        cfg.model_path, nb_code=cfg.nb_code, vq=vq, device=device, training=True,
        attn_implementation=cfg.attn_implementation,
        expected_n_text=cfg.expected_n_text or None,
    )  # fmt: skip
    loaded.meta.info = {**loaded.meta.info, "stage": 3, "started_from": cfg.model_path}
    # use_cache stays on: TRL switches checkpointing off while it generates, and generation needs the cache
    return loaded


def plot_rewards(log_history: list[dict[str, Any]], reward_names: Sequence[str], title: str) -> Figure:
    """A 2 x 3 figure against the optimizer step: rewards per function (as used, after scaling) and the
    total, raw distances, KL, completion lengths, malformed share, loss."""
    fig = Figure(figsize=(13, 7), dpi=100)
    axes = fig.subplots(2, 3).ravel()

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in log_history if key in r and "step" in r]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])

    panels = [
        (
            "rewards as summed (distances min-max scaled per group)",
            [*(f"rewards/{n}/mean" for n in reward_names), "reward"],
        ),
        ("distance rewards before scaling", [f"{n}/raw_mean" for n in reward_names]),
        ("KL to stage 2", ["kl"]),
        ("completion length (tokens)", ["completions/mean_length", "completions/max_length"]),
        ("malformed share", ["motion/malformed_frac", "completions/clipped_ratio"]),
        ("loss", ["loss"]),
    ]
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for key in keys:
            xs, ys = series(key)
            if xs:
                ax.plot(xs, ys, label=key, lw=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# The run


def run_grpo(
    cfg: GRPORunConfig,
    run: RunFolder,
    reward_funcs: Sequence[RewardFunc],
    loaded: LoadedMotionLLM | None = None,
) -> dict[str, Any]:
    """Train stage 3 into ``run`` (see the module docstring); returns the summary.

    Args:
        reward_funcs: TRL reward callables (``RL/rewards.py``), in ``cfg.rewards.names`` order.
        loaded: the policy, when the caller already loaded it (``prepare_policy``).
    """
    device = resolve_device(cfg.device)
    trainer_dir = run.root / TRAINER_DIR
    if not run.resumed and trainer_dir.is_dir() and is_main_process():
        logger.info("%s: starting over; removing this run's old Trainer checkpoints", run.root)
        shutil.rmtree(trainer_dir)
    checkpoint = get_last_checkpoint(str(trainer_dir)) if run.resumed and trainer_dir.is_dir() else None

    loaded = loaded or prepare_policy(cfg, device)
    saved_eos = loaded.model.generation_config.eos_token_id
    if cfg.generation.eos_only:
        loaded.model.generation_config.eos_token_id = loaded.tokenizer.eos_token_id
    rows = load_prompt_rows(cfg.prompts_file, cfg.max_prompts)
    names = [getattr(f, "__name__", type(f).__name__) for f in reward_funcs]
    scaled = minmax_columns(reward_funcs, cfg.rewards.reward_norm_before_add)
    logger.info(
        "stage 3: %d prompts, G=%d, %d prompts/step, rewards %s (min-max per group: %s), resume from %s",
        len(rows), cfg.generation.num_generations, cfg.training.global_prompts, names,
        [names[i] for i in scaled], checkpoint or "scratch",
    )  # fmt: skip
    run.begin()
    progress = ProgressCallback(run.path(METRICS) if run.main_process else None)
    stopper = StopAfterStepsCallback(cfg.max_steps)
    args = grpo_arguments(cfg, trainer_dir, device, len(reward_funcs))
    trainer = MotionGRPOTrainer(
        model=loaded.model,
        reward_funcs=list(reward_funcs),
        args=args,
        train_dataset=prompt_dataset(rows),
        processing_class=loaded.tokenizer,
        callbacks=[progress, stopper, MotionMetaCallback(loaded.meta)],
        minmax_columns=scaled,
    )
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    state = trainer.state
    finished = state.global_step >= state.max_steps
    last = {k: v for r in state.log_history for k, v in r.items() if isinstance(v, (int, float))}
    summary: dict[str, Any] = {
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "finished": finished,
        "epoch": state.epoch,
        "train_loss": result.training_loss,
        "prompts": len(rows),
        "completions_per_step": cfg.global_completions,
        "wall_seconds_this_invocation": wall,
        "seconds_per_step": wall / max(1, state.global_step - (stopper.start or 0)),
        "world_size": dist_env()[1],
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "bf16": args.bf16,
        "reward_functions": names,
        "minmax_scaled": [names[i] for i in scaled],
        "last_logged": last,
    }
    if run.main_process:
        fig = plot_rewards(state.log_history, names, f"GRPO stage 3 ({Path(cfg.output_dir).name})")
        run.write_with(REWARD_PLOT, lambda fh: fig.savefig(fh, format="png"))
    if finished:
        final = trainer.accelerator.unwrap_model(trainer.model)
        final.generation_config.eos_token_id = saved_eos
        dtype = torch.bfloat16 if cfg.save_dtype == "bfloat16" else torch.float32
        save_motion_llm_into(run, final, loaded.tokenizer, loaded.meta, subdir=MODEL_DIR, dtype=dtype)
        summary["model"] = str(run.root / MODEL_DIR)
    run.write_json(SUMMARY, summary)
    if finished:
        run.done()
    return summary
