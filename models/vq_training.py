"""Training and evaluation of the VQ-VAE tokenizer (the library behind ``prepare/train_vq.py``).

Recipe (``shared/spec/motion-vq-evaluation.md`` §3.3): random 64-frame windows of train clips in
the VQ's normalised space; loss ``L_rec + commit_weight * L_commit + vel_weight * L_vel`` where
``L_vel`` is the same reconstruction loss on the RIC joint-position block ``[4, 4 + (J-1)*3)``
(the reference calls it "velocity"); AdamW; linear warm-up then MultiStepLR (see :func:`lr_at`).

Run folder (``output_dir``)::

    run.json                          run manifest (data.run_folder): command, config hash, inputs, files, status
    config.yaml, run_info.json        resolved config, seed, git commit
    meta/mean.npy, meta/std.npy       the normalisation the VQ works in
    metrics.jsonl                     train losses every log_every steps, validation every val_every
    net_last.pth                      {'net': state_dict}  (released T2M-GPT layout, strict-loadable)
    net_best_mpjpe.pth                same layout, best validation MPJPE
    resume_last.pt                    {'net', 'step', 'optimizer', 'quantizer', 'rng', 'best', 'config'}
    eval_<split>.json                 final reconstruction metrics

The EMA quantiser state (``init``, ``code_sum``, ``code_count``) is not in the released state dict
(spec pitfall 11), so ``resume_last.pt`` stores it under ``quantizer``; together with the optimizer,
the RNG states and the stateless batch plan of :class:`data.vq_data.MotionWindows`, a resumed run
reproduces an uninterrupted one exactly (tested).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from data.config import RunConfig, config_to_dict
from data.motion_repr import recover_from_ric
from data.normalization import META_DIR, FeatureNorm, meta_files
from data.progress import progress_bar
from data.run_folder import OutputFolder, RunFolder
from data.runtime import MetricsLogger, is_main_process, resolve_device
from data.specs import DatasetSpec, get_dataset_spec
from data.vq_data import Clip, MotionWindows
from models.vqvae import (
    CheckpointError,
    MotionVQVAE,
    VQVAEConfig,
    check_state_dict,
    perplexity_from_counts,
)

logger = logging.getLogger(__name__)

RESUME_FILE = "resume_last.pt"
NET_LAST = "net_last.pth"
NET_BEST = "net_best_mpjpe.pth"


@dataclass(kw_only=True)
class VQTrainConfig(RunConfig):
    """VQ-VAE training (``python -m prepare.train_vq --config configs/<dataset>/vq.yaml``)."""

    dataset_root: str = "dataset/HumanML3D"
    """Folder in the HumanML3D layout."""
    output_dir: str = "runs/vq_humanml3d"
    """Run folder (checkpoints, metrics, meta/mean.npy, meta/std.npy)."""
    seed: int = 123
    """Seed of torch init, batch plan and codebook init."""
    mean_file: str = ""
    """Normalisation mean; empty = ``<dataset_root>/Mean.npy`` (the released VQ used the TM2T meta)."""
    std_file: str = ""
    """Normalisation std; empty = ``<dataset_root>/Std.npy``."""
    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    """Architecture (defaults = released)."""
    train_split: str = "train"
    """Split the windows come from."""
    max_train_motions: int = 0
    """Use only the first N train ids (0 = all; the IRG copy used 2000, spec pitfall 20)."""
    batch_size: int = 256
    """Windows per step."""
    window_size: int = 64
    """Frames per window (clips shorter than this are left out); a multiple of the frames per code."""
    lr: float = 2e-4
    """Peak AdamW learning rate."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_iters: int = 1000
    """Warm-up runs steps 1..warmup_iters-1 with lr*(step+1)/(warmup_iters+1) (reference loop)."""
    total_iters: int = 300_000
    """Main-phase steps after warm-up."""
    lr_milestones: tuple[int, ...] = (200_000,)
    """Main-phase steps at which lr is multiplied by lr_gamma."""
    lr_gamma: float = 0.05
    """MultiStepLR factor."""
    commit_weight: float = 0.02
    """Weight of the commitment loss."""
    vel_weight: float = 0.5
    """Weight of the RIC-position ("velocity") reconstruction loss."""
    recons_loss: Literal["l1_smooth", "l2", "l1"] = "l1_smooth"
    """Reconstruction loss."""
    log_every: int = 200
    """Steps between averaged train-loss lines in metrics.jsonl."""
    val_every: int = 1000
    """Steps between validation + checkpoint (also at the last step)."""
    val_split: str = "val"
    """Split used for validation."""
    val_max_motions: int = 0
    """Validate on the first N ids (0 = all)."""
    val_batch_size: int = 32
    """Clips per validation batch."""
    final_eval_split: str = "test"
    """Split scored after the last step into eval_<split>.json (empty = none)."""
    max_steps: int = 0
    """Stop this invocation after N steps (checkpointed; resume continues); 0 = run to the end."""
    resume: bool = True
    """Continue the folder's run (same config and inputs) from ``resume_last.pt``; false starts it over."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin, or a run with another
    config (only this run's files are replaced; nothing else is deleted)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        fpc = self.model.frames_per_code
        if self.window_size % fpc or self.window_size < fpc:
            raise ValueError(
                f"window_size={self.window_size} must be a positive multiple of model.frames_per_code={fpc} "
                f"(model.stride_t={self.model.stride_t} ** model.down_t={self.model.down_t})"
            )
        max_len = get_dataset_spec(self.dataset).max_motion_len
        if self.window_size > max_len:
            raise ValueError(
                f"window_size={self.window_size} exceeds the longest {self.dataset} motion ({max_len} frames)"
            )
        for name in ("batch_size", "total_iters", "log_every", "val_every", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_iters", "max_steps", "max_train_motions", "val_max_motions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.lr <= 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr={self.lr} must be > 0 and lr_gamma={self.lr_gamma} in (0, 1]")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones={list(self.lr_milestones)} must be increasing")

    @property
    def warmup_steps(self) -> int:
        """Number of warm-up steps (the reference runs ``range(1, warmup_iters)``)."""
        return max(self.warmup_iters - 1, 0)

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.total_iters


def lr_at(step: int, cfg: VQTrainConfig) -> float:
    """Learning rate of 1-based ``step``.

    Warm-up (step < warmup_iters): ``lr * (step + 1) / (warmup_iters + 1)``.
    Main phase, iteration ``k = step - warmup_steps`` (1-based): ``lr * gamma ** #{m : m <= k - 1}``,
    i.e. MultiStepLR stepped after each iteration as in the reference.
    """
    if step <= cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    k = step - cfg.warmup_steps
    return cfg.lr * cfg.lr_gamma ** sum(m <= k - 1 for m in cfg.lr_milestones)


def _recons_fn(name: str):
    return {"l1_smooth": F.smooth_l1_loss, "l2": F.mse_loss, "l1": F.l1_loss}[name]


# ----------------------------------------------------------------------------------------------
# Metrics (pure functions)
# ----------------------------------------------------------------------------------------------


def code_statistics(counts: np.ndarray) -> dict[str, float]:
    """Codebook usage from a code histogram (nb_code,).

    ``perplexity = exp(-sum p log(p + 1e-7))``, ``usage`` = fraction of codes used at least once.
    """
    counts = np.asarray(counts, dtype=np.float64)
    return {
        "perplexity": float(perplexity_from_counts(torch.from_numpy(counts))),
        "usage": float((counts > 0).mean()),
        "codes_used": int((counts > 0).sum()),
    }


@torch.no_grad()
def evaluate_reconstruction(
    vq: MotionVQVAE,
    clips: list[Clip],
    *,
    spec: DatasetSpec,
    norm: FeatureNorm,
    batch_size: int = 32,
    max_len: int | None = None,
    recons_loss: str = "l1_smooth",
    progress: bool = False,
) -> dict[str, float]:
    """Encode + decode whole clips (cropped to ``max_len`` and a multiple of 4 frames from the start).

    ``clips`` are in the VQ's normalised space; ``norm`` is that normalisation (to recover joints).

    Returns ``mpjpe_mm`` = ``1000 * metres_per_unit * mean_{frames, joints} ||(p - p_root) - (g - g_root)||_2``
    over all valid frames, with joints ``p``/``g`` from ``recover_from_ric`` on the de-normalised
    reconstruction / input, each aligned on its own root (pelvis) per frame as MoMask reports VQ
    MPJPE; ``mpjpe_global_mm`` is the same without alignment (includes integrated root drift), ``recons_loss`` (normalised space, valid frames), code ``perplexity``,
    ``usage``, ``codes_used``, ``n_clips``, ``n_frames``.
    """
    if not clips:
        raise ValueError("evaluate_reconstruction: no clips to evaluate")
    fpc = vq.frames_per_code
    max_len = max_len or spec.max_motion_len
    crops = [c.motion[: (min(len(c.motion), max_len) // fpc) * fpc] for c in clips]
    order = sorted(range(len(crops)), key=lambda i: len(crops[i]))
    device = next(vq.parameters(), torch.empty(0)).device  # parameter-free test doubles run on CPU
    counts = np.zeros(vq.nb_code, dtype=np.int64)
    err_sum, glob_sum, loss_sum, frames = 0.0, 0.0, 0.0, 0
    loss_fn = _recons_fn(recons_loss)
    was_training = vq.training
    vq.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in progress_bar(batches, desc="reconstruct", disable=not progress, leave=False):
        lengths = torch.tensor([len(crops[i]) for i in idx], device=device)
        x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(crops[i]) for i in idx], batch_first=True).to(
            device
        )
        codes = vq.encode(x, lengths)
        n = lengths // fpc
        recon = vq.decode(codes, n)
        valid = torch.arange(x.shape[1], device=device)[None, :] < lengths[:, None]  # (B, T)
        codes = codes.cpu()
        counts += np.bincount(codes[codes >= 0].numpy(), minlength=vq.nb_code)  # PAD_CODE after each end
        per_frame = loss_fn(recon, x, reduction="none").mean(-1)  # (B, T)
        loss_sum += float(per_frame[valid].sum())
        # recover_from_ric integrates the root forward in time, so padding after a clip's end
        # cannot change its valid frames.
        pj = recover_from_ric(norm.denormalise(recon), spec.joints_num)
        gj = recover_from_ric(norm.denormalise(x), spec.joints_num)
        scale = 1000.0 * spec.metres_per_unit
        err_global = torch.linalg.vector_norm(pj - gj, dim=-1).mean(-1)  # (B, T) mean over joints
        aligned = (pj - pj[..., :1, :]) - (gj - gj[..., :1, :])  # both root-aligned per frame
        err = torch.linalg.vector_norm(aligned, dim=-1).mean(-1)
        err_sum += float(err[valid].sum()) * scale
        glob_sum += float(err_global[valid].sum()) * scale
        frames += int(lengths.sum())
    vq.train(was_training)
    return {
        "mpjpe_mm": err_sum / frames,
        "mpjpe_global_mm": glob_sum / frames,
        "recons_loss": loss_sum / frames,
        **code_statistics(counts),
        "n_clips": len(clips),
        "n_frames": frames,
    }


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }  # fmt: skip


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


class VQTrainer:
    """One VQ-VAE training run: ``fit()`` trains from scratch or resumes, validates and checkpoints.

    Args:
        cfg: the training config.
        spec: dataset spec (D, J, units).
        train: training windows.
        val_clips: clips for periodic validation (``None`` = no validation).
        norm: the normalisation of ``train`` and ``val_clips``, written to ``output_dir/meta``.
        run: the run folder the trainer writes through (``prepare.train_vq`` opens it); ``None``
            writes atomically into ``cfg.output_dir`` without a manifest.
    """

    def __init__(
        self,
        cfg: VQTrainConfig,
        spec: DatasetSpec,
        train: MotionWindows,
        val_clips: list[Clip] | None,
        norm: FeatureNorm,
        run: OutputFolder | None = None,
    ):
        self.cfg, self.spec, self.train_data, self.val_clips = cfg, spec, train, val_clips
        self.norm = norm
        self.out = Path(cfg.output_dir)
        self.run = run if run is not None else OutputFolder(self.out, main_process=is_main_process())
        # A run folder that starts over (another config with overwrite, or resume=false) must not
        # pick up the earlier run's resume state.
        self.may_resume = cfg.resume and (run.resumed if isinstance(run, RunFolder) else True)
        self.device = resolve_device(cfg.device)
        self.model = MotionVQVAE(nfeats=spec.feat_dim, config=cfg.model).to(self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.loss_fn = _recons_fn(cfg.recons_loss)
        self.ric = spec.feature_slices["ric"]
        self.step = 0
        self.best: dict[str, float] = {"mpjpe_mm": math.inf, "step": 0}
        self.metrics = MetricsLogger(self.run.path("metrics.jsonl"))

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, float]:
        """Run 1-based ``step``; returns its losses."""
        lr = lr_at(step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self.train_data.batch(step - 1).to(self.device, non_blocking=True)
        recon, commit, perplexity = self.model(x)
        l_rec = self.loss_fn(recon, x)
        l_vel = self.loss_fn(recon[..., self.ric], x[..., self.ric])
        loss = l_rec + self.cfg.commit_weight * commit + self.cfg.vel_weight * l_vel
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step = step
        return {
            "loss": loss.item(), "recons": l_rec.item(), "vel": l_vel.item(), "commit": commit.item(),
            "perplexity": float(perplexity), "lr": lr,
        }  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def resume_state(self) -> dict:
        return {
            "net": self.model.state_dict(),
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "quantizer": self.model.quantizer_state(),
            "rng": _rng_state(),
            "best": dict(self.best),
            "config": config_to_dict(self.cfg),
        }

    def save(self) -> None:
        """Write net_last.pth (released layout) and resume_last.pt (rank 0 only)."""
        if not is_main_process():
            return
        self.model.save_checkpoint(self.run.path(NET_LAST))
        self.run.record(NET_LAST)
        self.run.save_torch(RESUME_FILE, self.resume_state())

    def load_resume(self, path: Path) -> None:
        """Restore weights, optimizer, EMA quantiser state, RNG, step and best metrics."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for corrupt files
            raise CheckpointError(f"{path}: cannot read resume state ({type(err).__name__}: {err}); delete it "
                                  "or set resume=false to start over") from err  # fmt: skip
        missing = [k for k in ("net", "step", "optimizer", "quantizer", "rng", "config") if k not in state]
        if missing:
            raise CheckpointError(f"{path}: resume state lacks {missing}")
        saved = state["config"]
        now = config_to_dict(self.cfg)
        for key in ("model", "dataset", "seed", "batch_size", "window_size"):
            if saved.get(key) != now.get(key):
                raise CheckpointError(
                    f"{path}: cannot resume: {key} was {saved.get(key)!r} in the saved run and is {now.get(key)!r} "
                    "now; use a new output_dir or resume=false"
                )
        check_state_dict(self.model.state_dict(), state["net"], path)
        self.model.load_state_dict(state["net"], strict=True)
        self.model.load_quantizer_state(state["quantizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = dict(state.get("best", self.best))
        logger.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ validation
    def validate(self, clips: list[Clip], split: str) -> dict[str, float]:
        res = evaluate_reconstruction(
            self.model, clips, spec=self.spec, norm=self.norm,
            batch_size=self.cfg.val_batch_size, recons_loss=self.cfg.recons_loss, progress=self.cfg.progress,
        )  # fmt: skip
        logger.info(
            "step %d %s: MPJPE %.1f mm, perplexity %.1f, codes used %d/%d",
            self.step, split, res["mpjpe_mm"], res["perplexity"], res["codes_used"], self.model.nb_code,
        )  # fmt: skip
        return res

    def _validate_and_save(self) -> None:
        if self.val_clips:
            res = self.validate(self.val_clips, self.cfg.val_split)
            self.metrics.log(step=self.step, split=self.cfg.val_split, **res)
            if res["mpjpe_mm"] < self.best["mpjpe_mm"] and is_main_process():
                self.best = {"mpjpe_mm": res["mpjpe_mm"], "step": self.step}
                self.model.save_checkpoint(self.run.path(NET_BEST))
                self.run.record(NET_BEST)
        self.save()

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[float]:
        """Train to ``total_steps`` (or ``max_steps`` more); returns this invocation's per-step losses."""
        cfg = self.cfg
        resume = self.out / RESUME_FILE
        if self.may_resume and resume.is_file():
            self.load_resume(resume)
        if self.step == 0:  # a resumed run keeps its normalisation and metrics
            for rel, array in zip(meta_files(META_DIR), (self.norm.mean, self.norm.std), strict=True):
                self.run.save_npy(rel, array)
            self.run.write_text("metrics.jsonl", "")  # lines of an earlier attempt that started over
        end = cfg.total_steps if not cfg.max_steps else min(cfg.total_steps, self.step + cfg.max_steps)
        losses: list[float] = []
        window: list[dict[str, float]] = []
        t0 = time.perf_counter()
        bar = progress_bar(
            range(self.step + 1, end + 1), desc="train VQ", disable=not cfg.progress or not is_main_process()
        )
        for step in bar:
            stats = self.train_step(step)
            losses.append(stats["loss"])
            window.append(stats)
            if step % cfg.log_every == 0 or step == end:
                avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                avg["sec_per_step"] = (time.perf_counter() - t0) / len(window)
                self.metrics.log(step=step, split="train", **avg)
                bar.set_postfix(loss=f"{avg['loss']:.4f}", ppl=f"{avg['perplexity']:.0f}")
                window, t0 = [], time.perf_counter()
            if step % cfg.val_every == 0 and step != end:
                self._validate_and_save()
        if losses:  # the loop validates every val_every steps except the last one
            self._validate_and_save()
        return losses
