"""Training the Guo et al. text/motion extractors on a dataset in the HumanML3D layout.

Guo et al. (CVPR 2022) trained the evaluator in two steps, and so do we (spec section 4.3):

1. **Movement autoencoder** (Guo's ``Decomp_SP001_SM001_H512``): ``MovementConvEncoder`` +
   ``MovementConvDecoder`` reconstruct random windows of normalised features (the encoder sees the
   features without the 4 contact dims, the decoder rebuilds all D). Loss
   ``L1(x_hat, x) + lambda_sp * mean|z| + lambda_sm * L1(z[:, 1:], z[:, :-1])`` (sparsity and
   smoothness of the latent steps, both 0.01). Only the encoder is kept.
2. **Text-motion matching** (``train_tex_mot_match``): with the movement encoder frozen, the
   text and motion GRU encoders learn a co-embedding with the contrastive margin loss
   ``L(t, m, y) = (1 - y) d^2 + y max(0, margin - d)^2`` (``d = ||t - m||``, margin 10): positives
   are the aligned pairs (``y = 0``), negatives the batch's motions shifted by a random
   ``s in [1, B-1]`` (``y = 1``; the published code can draw ``s = 0``, i.e. label positives as
   negatives, which we do not copy). Adam 1e-4, batch 32. Data = the evaluation items of spec 1.8
   (random caption, {single, single, double} crop, evaluator normalisation, padding to 196), with
   the epoch as the replication index. The checkpoint with the lowest validation loss is saved as
   ``finest.tar`` in the released layout.

Normalisation rule for OUR evaluators (``evaluator_meta``): ``mean = dataset Mean``, ``std =
dataset Std`` with the root dims ``[0, 4)`` and the 4 contact dims divided by ``feat_bias`` (5)
ONCE, the documented intent of Guo's feat_bias. The released meta files may carry the factor
twice (spec section 2); that never matters as long as every consumer loads ``meta/{mean,std}.npy``
rather than rebuilding them, which all our code does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from data.config import RunConfig
from data.datasets import (
    ClipIndex,
    EvalBatch,
    EvalMotionTextDataset,
    build_clip_index,
    eval_collate,
    replication_batches,
)
from data.normalization import META_DIR, FeatureNorm, meta_files
from data.progress import progress_bar
from data.run_folder import OutputFolder
from data.runtime import MetricsLogger, is_main_process
from data.specs import DatasetSpec, get_dataset_spec
from data.vq_data import Clip, MotionWindows
from data.word_vectorizer import WordVectorizer
from models.evaluator import (
    CONTACT_DIMS,
    PROVENANCE_FILE,
    EvaluatorDims,
    MotionEncoderBiGRUCo,
    MovementConvDecoder,
    MovementConvEncoder,
    TextEncoderBiGRUCo,
    build_networks,
    guo_checkpoint_state,
    provenance_record,
)

logger = logging.getLogger(__name__)

FINEST = "finest.tar"
"""The chosen checkpoint (released layout), relative to the run folder."""
MOVEMENT_AE = "movement_ae.pt"
METRICS = "metrics.jsonl"

_NEG_SHIFT_TAG = 0x5EED5
"""Extra seed word keeping the negative-shift stream apart from the dataset's streams."""
_VAL_EPOCH = 1 << 30
"""Epoch number of the fixed validation shifts (never a training epoch)."""

RetrievalScores = Callable[..., tuple[np.ndarray, float]]
"""``(text_emb (N, E), motion_emb (N, E), batch_size=B) -> ((3,) R-precision top-1..3, MM-Dist)``
over consecutive batches of B. The entry point passes ``eval.metrics.text_motion_scores_batched``
(the protocol's metric; ``models`` does not import ``eval``)."""


R_PRECISION_TOP_K = 3
"""Largest k of the protocol's R-precision (Top-1/2/3): every scored batch needs k candidates."""


@dataclass
class EvaluatorModelConfig:
    """Network sizes; the defaults are the released ones (``load_guo_evaluator`` reads them back)."""

    dim_text_hidden: int = 512
    """Hidden size of the bidirectional text GRU."""
    dim_motion_hidden: int = 1024
    """Hidden size of the bidirectional motion GRU."""
    dim_coemb: int = 512
    """Co-embedding size (the API contract's 512; keep it for metric comparability)."""
    dim_movement_enc_hidden: int = 512
    """Channels of the movement encoder's convolutions."""
    dim_movement_latent: int = 512
    """Size of one movement step (one step per ``unit_length`` frames)."""
    dim_movement_dec_hidden: int = 512
    """Channels of the movement decoder's convolutions (pre-training only)."""

    def dims(self, spec: DatasetSpec) -> EvaluatorDims:
        return EvaluatorDims(
            dim_pose=spec.feat_dim, dim_text_hidden=self.dim_text_hidden,
            dim_motion_hidden=self.dim_motion_hidden, dim_coemb=self.dim_coemb,
            dim_movement_enc_hidden=self.dim_movement_enc_hidden, dim_movement_latent=self.dim_movement_latent,
        )  # fmt: skip


@dataclass
class MovementAEConfig:
    """Movement autoencoder pre-training (Guo's decomposition network)."""

    window: int = 24
    """Frames per training window (a multiple of the dataset's ``unit_length``)."""
    batch_size: int = 128
    """Windows per step."""
    iters: int = 20000
    """Training steps."""
    lr: float = 1e-4
    """Adam learning rate."""
    lambda_sparsity: float = 0.01
    """Weight of ``mean|z|`` (sparse movement latents)."""
    lambda_smooth: float = 0.01
    """Weight of ``L1(z[:, 1:], z[:, :-1])`` (smooth movement latents)."""
    log_every: int = 200
    """Steps between loss lines in metrics.jsonl."""


@dataclass(kw_only=True)
class EvaluatorTrainConfig(RunConfig):
    """Train a Guo-style evaluator; see ``models/evaluator_training.py`` for the recipe."""

    ignored_fields: ClassVar[dict[str, str]] = {
        "device": "the evaluator trains on the CPU (small GRUs; the published numbers do not need a GPU)",
    }

    glove_dir: str = "runs/demo/glove"
    """Folder with ``our_vab_*`` word vectors (prepare/build_word_vectors.py or the released copy); their
    hash is recorded in ``provenance.json`` and every user of the evaluator must pass the same files."""
    output_dir: str = "runs/demo/evaluator"
    """Run folder (run.json, config, meta/{mean,std}.npy, provenance.json, movement_ae.pt, finest.tar,
    metrics, results)."""
    device: str = "cpu"
    """Always the CPU (see ``ignored_fields``)."""
    mean_file: str = ""
    """Dataset mean (empty: ``<dataset_root>/Mean.npy``); the meta is derived from it."""
    std_file: str = ""
    """Dataset std (empty: ``<dataset_root>/Std.npy``)."""
    feat_bias: float = 5.0
    """Root dims [0, 4) and contact dims get std / feat_bias in the evaluator meta (applied once)."""
    model: EvaluatorModelConfig = field(default_factory=EvaluatorModelConfig)
    """Network sizes."""
    movement: MovementAEConfig = field(default_factory=MovementAEConfig)
    """Step 1: movement autoencoder."""
    train_split: str = "train"
    """Split the matching step trains on."""
    val_split: str = "val"
    """Split whose loss picks ``finest.tar``."""
    batch_size: int = 32
    """Matching batch (negatives come from it) and the R-precision batch of the final evaluation (32)."""
    lr: float = 1e-4
    """Adam learning rate of the text and motion encoders."""
    epochs: int = 100
    """Passes over the train split (each draws new captions and crops)."""
    margin: float = 10.0
    """Contrastive margin for negatives."""
    grad_clip: float = 0.0
    """Max gradient norm (0 = off; the published recipe does not clip)."""
    final_split: str = "test"
    """Split scored with the ground-truth protocol after training (empty = skip)."""
    final_replications: int = 3
    """Replications of that final evaluation."""
    final_diversity_times: int = 300
    """Diversity pairs for the final ground-truth evaluation (must be below the scored samples)."""
    force: bool = False
    """Start the folder's run over (retrain) even when it finished, or when its config or inputs differ."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin (they are kept;
    only this run's files are replaced)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        unit = get_dataset_spec(self.dataset).unit_length
        if self.movement.window % unit or self.movement.window <= 0:
            raise ValueError(
                f"movement.window={self.movement.window} must be a positive multiple of the {self.dataset} "
                f"unit_length={unit} (one movement step)"
            )
        if self.batch_size < R_PRECISION_TOP_K:
            raise ValueError(
                f"batch_size={self.batch_size} must be >= {R_PRECISION_TOP_K}: validation and the final "
                f"evaluation score R-precision top-{R_PRECISION_TOP_K} within each batch"
            )
        if self.feat_bias <= 0 or self.margin <= 0:
            raise ValueError(f"feat_bias={self.feat_bias} and margin={self.margin} must be positive")
        for name in ("epochs", "final_replications", "final_diversity_times"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.movement.iters < 1 or self.movement.batch_size < 1:
            raise ValueError(
                f"movement.iters={self.movement.iters} and movement.batch_size={self.movement.batch_size} "
                "must be >= 1"
            )
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip={self.grad_clip} must be >= 0 (0 = off)")


def evaluator_meta(
    mean: np.ndarray, std: np.ndarray, spec: DatasetSpec, feat_bias: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Our evaluator normalisation: dataset mean; dataset std with root and contact dims / feat_bias.

    ``std[0:4] /= feat_bias`` (root rotation velocity, root linear velocity, root height) and
    ``std[-4:] /= feat_bias`` (foot contacts), once. Returns new float32 ``(D,)`` arrays.
    """
    s = spec.feature_slices
    root = slice(s["root_rot_velocity"].start, s["root_y"].stop)
    out = np.array(std, dtype=np.float32)
    out[root] /= feat_bias
    out[s["foot_contact"]] /= feat_bias
    return np.array(mean, dtype=np.float32), out


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, negative: bool, margin: float) -> torch.Tensor:
    """Mean of ``d^2`` (positives) or ``max(0, margin - d)^2`` (negatives), ``d = ||a - b||``.

    ``a, b``: ``(B, E)``. Same pairwise distance as the published loss (``F.pairwise_distance``,
    eps 1e-6).
    """
    d = F.pairwise_distance(a, b)
    if negative:
        return torch.clamp(margin - d, min=0.0).pow(2).mean()
    return d.pow(2).mean()


def negative_shift(batch: int, seed: int, epoch: int, step: int) -> int:
    """Roll amount in ``[1, batch - 1]`` pairing each text with another item's motion."""
    return int(np.random.default_rng([seed, epoch, step, _NEG_SHIFT_TAG]).integers(1, batch))


# ----------------------------------------------------------------------------------------------
# Step 1: movement autoencoder
# ----------------------------------------------------------------------------------------------


def train_movement_autoencoder(
    windows: MotionWindows,
    encoder: MovementConvEncoder,
    decoder: MovementConvDecoder,
    cfg: MovementAEConfig,
    metrics: MetricsLogger | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Fit the movement AE on ``windows`` (``(B, window, D)`` normalised batches); returns last losses."""
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    encoder.train()
    decoder.train()
    last: dict[str, float] = {}
    bar = progress_bar(range(cfg.iters), desc="movement AE", disable=not (progress and is_main_process()))
    for step in bar:
        x = windows.batch(step)  # (B, W, D)
        z = encoder(x[..., :-CONTACT_DIMS])  # (B, W/4, latent)
        x_hat = decoder(z)  # (B, W, D)
        rec = F.l1_loss(x_hat, x)
        sparsity = z.abs().mean()
        smooth = F.l1_loss(z[:, 1:], z[:, :-1])
        loss = rec + cfg.lambda_sparsity * sparsity + cfg.lambda_smooth * smooth
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = {"rec": rec.item(), "sparsity": sparsity.item(), "smooth": smooth.item()}
        if step % cfg.log_every == 0 or step == cfg.iters - 1:
            bar.set_postfix(rec=f"{last['rec']:.4f}")
            if metrics is not None:
                metrics.log(stage="movement_ae", step=step, **last)
    encoder.eval()
    decoder.eval()
    return last


def windows_from_index(index: ClipIndex, norm: FeatureNorm, window: int, batch_size: int,
                       seed: int) -> MotionWindows:  # fmt: skip
    """Seeded random windows over every entry of ``index`` long enough, normalised with ``norm``.

    Entries shorter than ``window`` are left out (``train_evaluator`` counts them in its summary).

    Raises:
        ValueError: no entry has ``window`` frames.
    """
    clips = [
        Clip(motion_id=e.name, motion=norm.normalise(index.motion(i)))
        for i, e in enumerate(index.entries)
        if e.length >= window
    ]
    if not clips:
        raise ValueError(
            f"{index.root}/{index.split}: no entry has movement.window={window} frames; lower the window"
        )
    return MotionWindows(clips, window=window, batch_size=min(batch_size, len(clips)), seed=seed)


# ----------------------------------------------------------------------------------------------
# Step 2: text-motion matching
# ----------------------------------------------------------------------------------------------


@dataclass
class MatchingModel:
    """The three encoders being trained (movement frozen) with one forward for a batch."""

    text: TextEncoderBiGRUCo
    motion: MotionEncoderBiGRUCo
    movement: MovementConvEncoder
    unit_length: int

    def forward(self, batch: EvalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_emb (B, E), motion_emb (B, E))`` aligned with the batch rows."""
        with torch.no_grad():
            movements = self.movement(batch.motions[..., :-CONTACT_DIMS])
        steps = torch.div(batch.m_lengths, self.unit_length, rounding_mode="floor")
        m = self.motion(movements, steps)
        t = self.text(batch.word_embs, batch.pos_onehot, batch.sent_lens)
        return t, m

    def train(self, mode: bool = True) -> None:
        self.text.train(mode)
        self.motion.train(mode)
        self.movement.eval()


def _batch(ds: EvalMotionTextDataset, idx: np.ndarray, epoch: int) -> EvalBatch:
    return eval_collate([ds.get_item(int(i), epoch) for i in idx])


def matching_losses(
    model: MatchingModel, batch: EvalBatch, shift: int, margin: float
) -> tuple[torch.Tensor, ...]:
    """``(loss, loss_pos, loss_neg, text_emb, motion_emb)`` for one batch."""
    t, m = model.forward(batch)
    pos = contrastive_loss(t, m, negative=False, margin=margin)
    neg = contrastive_loss(t, torch.roll(m, shifts=-shift, dims=0), negative=True, margin=margin)
    return pos + neg, pos, neg, t, m


@torch.no_grad()
def validate_matching(
    model: MatchingModel,
    ds: EvalMotionTextDataset,
    cfg: EvaluatorTrainConfig,
    retrieval_scores: RetrievalScores,
) -> dict[str, float]:
    """Validation loss (replication 0, fixed shifts) and R-precision / MM-Dist on its batches.

    ``retrieval_scores`` computes the last two from the embeddings (see ``RetrievalScores``).
    """
    model.train(False)
    batches = replication_batches(len(ds), batch_size=cfg.batch_size, seed=cfg.seed, replication=0)
    if not batches:
        raise ValueError(f"validation split has {len(ds)} items, fewer than batch_size={cfg.batch_size}")
    tot = pos_tot = neg_tot = 0.0
    ts, ms = [], []
    for k, idx in enumerate(batches):
        loss, pos, neg, t, m = matching_losses(
            model, _batch(ds, idx, 0), negative_shift(len(idx), cfg.seed, _VAL_EPOCH, k), cfg.margin
        )
        tot, pos_tot, neg_tot = tot + loss.item(), pos_tot + pos.item(), neg_tot + neg.item()
        ts.append(t.numpy())
        ms.append(m.numpy())
    rprec, mm = retrieval_scores(np.concatenate(ts), np.concatenate(ms), batch_size=cfg.batch_size)
    n = len(batches)
    return {"val_loss": tot / n, "val_pos": pos_tot / n, "val_neg": neg_tot / n, "val_top1": float(rprec[0]),
            "val_top2": float(rprec[1]), "val_top3": float(rprec[2]), "val_mm_dist": mm}  # fmt: skip


def train_matching(
    model: MatchingModel,
    train_ds: EvalMotionTextDataset,
    val_ds: EvalMotionTextDataset,
    cfg: EvaluatorTrainConfig,
    out: OutputFolder,
    metrics: MetricsLogger | None = None,
    *,
    retrieval_scores: RetrievalScores,
) -> dict[str, float]:
    """Contrastive co-embedding training; saves ``finest.tar`` in ``out`` at each new lowest validation loss.

    ``retrieval_scores`` gives the logged validation R-precision / MM-Dist (``RetrievalScores``);
    the checkpoint choice uses the validation loss only.

    Returns the validation record of the best epoch (plus ``best_epoch``).
    """
    params = [*model.text.parameters(), *model.motion.parameters()]
    opt_text = torch.optim.Adam(model.text.parameters(), lr=cfg.lr)
    opt_motion = torch.optim.Adam(model.motion.parameters(), lr=cfg.lr)
    best: dict[str, float] = {"val_loss": float("inf")}
    it = 0
    for epoch in range(cfg.epochs):
        model.train(True)
        batches = replication_batches(
            len(train_ds), batch_size=cfg.batch_size, seed=cfg.seed, replication=epoch
        )
        if not batches:
            raise ValueError(f"train split has {len(train_ds)} items, fewer than batch_size={cfg.batch_size}")
        run = {"loss": 0.0, "pos": 0.0, "neg": 0.0}
        bar = progress_bar(batches, desc=f"matching epoch {epoch}", leave=False,
                   disable=not (cfg.progress and is_main_process()))  # fmt: skip
        for k, idx in enumerate(bar):
            shift = negative_shift(len(idx), cfg.seed, epoch, k)
            loss, pos, neg, _, _ = matching_losses(model, _batch(train_ds, idx, epoch), shift, cfg.margin)
            opt_text.zero_grad(set_to_none=True)
            opt_motion.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt_text.step()
            opt_motion.step()
            it += 1
            for key, value in (("loss", loss), ("pos", pos), ("neg", neg)):
                run[key] += value.item()
        train_rec = {f"train_{k}": v / len(batches) for k, v in run.items()}
        val = validate_matching(model, val_ds, cfg, retrieval_scores)
        improved = val["val_loss"] < best["val_loss"]
        if improved:
            best = {**val, "best_epoch": epoch}
            if out.main_process:
                out.save_torch(FINEST, guo_checkpoint_state(
                    model.text, model.motion, model.movement, epoch=epoch, it=it,
                    optimizers={"opt_text_encoder": opt_text, "opt_motion_encoder": opt_motion},
                ))  # fmt: skip
        logger.info(
            "epoch %d: train loss %.3f (pos %.3f neg %.3f) | val loss %.3f top1 %.3f top3 %.3f mm %.3f%s",
            epoch, train_rec["train_loss"], train_rec["train_pos"], train_rec["train_neg"], val["val_loss"],
            val["val_top1"], val["val_top3"], val["val_mm_dist"], " *" if improved else "",
        )  # fmt: skip
        if metrics is not None:
            metrics.log(stage="matching", epoch=epoch, iter=it, **train_rec, **val)
    return best


# ----------------------------------------------------------------------------------------------
# Whole recipe
# ----------------------------------------------------------------------------------------------


def train_evaluator(
    cfg: EvaluatorTrainConfig,
    spec: DatasetSpec,
    train_index: ClipIndex,
    val_index: ClipIndex,
    vectorizer: WordVectorizer,
    dataset_norm: FeatureNorm,
    out: OutputFolder,
    *,
    retrieval_scores: RetrievalScores,
) -> dict[str, object]:
    """Run both steps, writing through ``out`` (atomically; rank 0 only).

    Files: ``meta/{mean,std}.npy``, ``provenance.json`` (the content hashes of ``cfg.glove_dir``'s
    ``our_vab_*`` files and of that meta, see ``models.evaluator.check_evaluator_provenance``),
    ``movement_ae.pt``, ``finest.tar`` and ``metrics.jsonl`` (started empty: every call trains
    from scratch).

    ``dataset_norm`` is the DATASET pair; the evaluator meta is derived from it with ``evaluator_meta``.
    ``retrieval_scores`` scores the validation embeddings (``RetrievalScores``).
    Returns a summary (best validation record, timings, paths and ``counts``: clips the indexes
    dropped, entries too short for a movement window, items left out of each epoch's batches).
    """
    root = out.root
    meta_dir = root / META_DIR
    ev_norm = FeatureNorm(
        *evaluator_meta(dataset_norm.mean, dataset_norm.std, spec, cfg.feat_bias), source=str(meta_dir)
    )
    ev_mean, ev_std = ev_norm.mean, ev_norm.std
    for rel, array in zip(meta_files(META_DIR), (ev_mean, ev_std), strict=True):
        out.save_npy(rel, array)
    if out.main_process:
        out.write_json(PROVENANCE_FILE, provenance_record(cfg.glove_dir, meta_dir))
    out.write_text(METRICS, "")
    metrics = MetricsLogger(out.path(METRICS))
    text, motion, movement = build_networks(cfg.model.dims(spec))
    decoder = MovementConvDecoder(
        cfg.model.dim_movement_latent, cfg.model.dim_movement_dec_hidden, spec.feat_dim
    )

    t0 = time.time()
    windows = windows_from_index(train_index, ev_norm, cfg.movement.window, cfg.movement.batch_size, cfg.seed)
    ae = train_movement_autoencoder(windows, movement, decoder, cfg.movement, metrics, cfg.progress)
    t_ae = time.time() - t0
    out.save_torch(MOVEMENT_AE, {"movement_encoder": movement.state_dict(), "movement_decoder": decoder.state_dict(),
                                 "iters": cfg.movement.iters})  # fmt: skip
    logger.info("movement AE: %d iters in %.0fs, final %s", cfg.movement.iters, t_ae, ae)

    movement.requires_grad_(False)
    model = MatchingModel(text=text, motion=motion, movement=movement, unit_length=spec.unit_length)
    train_ds = EvalMotionTextDataset(train_index, vectorizer, ev_mean, ev_std, seed=cfg.seed)
    val_ds = EvalMotionTextDataset(val_index, vectorizer, ev_mean, ev_std, seed=cfg.seed)
    t1 = time.time()
    best = train_matching(model, train_ds, val_ds, cfg, out, metrics, retrieval_scores=retrieval_scores)
    t_match = time.time() - t1
    counts = {
        "train_index": dict(train_index.stats), "val_index": dict(val_index.stats),
        "movement_entries_too_short": len(train_index) - len(windows.clips),
        "train_items_left_out_per_epoch": len(train_ds) % cfg.batch_size,
        "val_items_left_out": len(val_ds) % cfg.batch_size,
    }  # fmt: skip
    summary: dict[str, object] = {
        "finest": str(root / FINEST), "meta_dir": str(meta_dir), "best": best,
        "movement_ae": ae, "seconds_movement_ae": round(t_ae, 1), "seconds_matching": round(t_match, 1),
        "train_items": len(train_ds), "val_items": len(val_ds), "seed": cfg.seed, "counts": counts,
    }  # fmt: skip
    return summary


def load_index(cfg: EvaluatorTrainConfig, spec: DatasetSpec, split: str) -> ClipIndex:
    """Clip index of ``split`` with the dataset's length filter and the config's skip policy."""
    return build_clip_index(
        cfg.dataset_root, split, spec, on_error=cfg.on_error, max_skip_fraction=cfg.max_skip_fraction,
        progress=cfg.progress,
    )  # fmt: skip
