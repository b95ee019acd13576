"""Stage-3 GRPO rewards with TRL's signature ``fn(completions, **kwargs) -> list[float | None]``.

Spec: ``grpo.md`` section 3 and ``api-contract.md`` (``RL/rewards.py``). TRL calls each reward on the
process-local completions with every dataset column as a keyword list aligned with them, plus
``completion_ids`` (token ids cut after the first ``<eos>``) and ``log_metric(name, value)``. The
per-group min-max of the distance rewards happens after the gather, in
``models.grpo.MotionGRPOTrainer``, for every reward whose ``group_minmax`` attribute is true.

Rewards (``REWARDS``; the YAML names them in ``rewards.names``):

* ``strict_format``: 1.0 when the reference's pattern (:data:`REFERENCE_FORMAT_PATTERN`) is found
  anywhere in the completion text, else 0.0 (exactly the reference; section 3.3 says what it really
  checks: ``<think>`` [plan] [analyze] [plan] ... a last [plan] before ``</think>``).
* ``strict_format_full``: the genuinely strict option (not the default): the whole completion is
  one chain, anchored at its start, with at least one generate/assess cycle, every ``<Motion>``
  span made only of code tokens and no section tag inside another section's text.
* ``guo_tm_distance``: ``-||E_text(caption) - E_motion(answer)||`` (section 3.4), larger is better,
  about -3 for real pairs with the released evaluator.
* ``guo_mm_distance``: ``-||E_motion(ground truth) - E_motion(answer)||`` (section 3.5), the ground
  truth cropped to the caption's ``f_tag``/``to_tag`` window at offset 0 (so every member of a group
  is compared with the same motion), embedded once and cached.
* ``motion_token_share``: the share of completion tokens that are motion tokens; a dense toy reward
  for smoke runs (not in the reference).

The answer motion (section 3.1) is the last complete ``<Motion>...</Motion>`` span of the completion
ids (``data.motion_tokens.parse_motion_ids``; text tokens inside it are dropped and counted), decoded
by the VQ-VAE in fp32 into its normalised space and mapped into the evaluator's space by
``eval.scoring.MotionTextScorer``, which embeds the whole local batch in one call. A completion with no
span or an empty last span is *malformed*: with ``malformed_motion=mean_pose`` (default, the
reference) it is scored as 196 frames of the VQ space's zeros (the mean pose held still); with
``group_min`` the distance rewards return ``None`` for it and the trainer gives it the group's worst
value before scaling. Both distance rewards share one :class:`GuoRewardBackend`, which decodes and
embeds a batch once and logs, per batch: ``motion/malformed_frac``, ``motion/spans_mean``,
``motion/answer_codes_mean``, ``motion/decoded_frames_mean``, ``motion/over_max_len_frac``,
``motion/dropped_tokens_mean``; each distance reward logs ``<name>/raw_mean`` (its mean value before
scaling) and ``<name>/distance_wellformed`` (the mean distance over well-formed answers).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from data.annotations import MotionRef, MotionResolver
from data.motion_tokens import MotionParse, parse_motion_ids
from data.normalization import EvalSpaceMap, FeatureNorm
from data.specs import get_dataset_spec
from eval.scoring import MotionTextScorer
from models.grpo import GRPORunConfig
from models.motion_llm import MotionVocab
from models.vqvae import MotionVQVAE

logger = logging.getLogger(__name__)

LogMetric = Callable[[str, float], None]

# --------------------------------------------------------------------------------------------------
# Format rewards

REFERENCE_FORMAT_PATTERN = (
    r"<think>\s*\[plan\].*?\[/plan\]\s*\[analyze\].*?\[/analyze\]\s*\[plan\].*?\[/plan\]\s*"
    r"(?:(?:\[generate\]<Motion>(?:<Motion_\d{1,3}>)+</Motion>\[/generate\]\s*\[plan\].*?\[/plan\]\s*"
    r"\[assess\].*?\[/assess\])\s*\[plan\].*?\[/plan\]\s*)*</think>\s*"
)
"""The reference's ``strict_format`` pattern (grpo.md section 3.3), verbatim: the model was trained on it."""
_REFERENCE_FORMAT_RE = re.compile(REFERENCE_FORMAT_PATTERN, re.DOTALL)

_SECTION_TEXT = r"(?:(?!\[/?(?:plan|analyze|generate|assess)\]|</?think>|</?Motion).)*"
"""Text of one section: anything but a section tag, a think tag or a motion tag."""
_PLAN = rf"\[plan\]{_SECTION_TEXT}\[/plan\]\s*"
_CYCLE = (
    rf"\[generate\]<Motion>(?:<Motion_\d{{1,3}}>)+</Motion>\[/generate\]\s*{_PLAN}"
    rf"\[assess\]{_SECTION_TEXT}\[/assess\]\s*{_PLAN}"
)
STRICT_FORMAT_PATTERN = (
    rf"\s*<think>\s*{_PLAN}\[analyze\]{_SECTION_TEXT}\[/analyze\]\s*{_PLAN}(?:{_CYCLE})+</think>\s*"
)
"""The strict chain (used with ``fullmatch``): plan, analyze, plan, then >= 1 cycles of generate, plan,
assess, plan, then ``</think>`` and nothing but whitespace."""
_STRICT_FORMAT_RE = re.compile(STRICT_FORMAT_PATTERN, re.DOTALL)


def strict_format(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The reference's format reward: 1.0 if :data:`REFERENCE_FORMAT_PATTERN` is found (``re.search``,
    DOTALL) in the completion text, else 0.0. Range {0, 1}; never min-max scaled.

    TRL decodes completions with ``skip_special_tokens=True``, so ``<eos>``/``<pad>`` are gone and the
    (non-special) motion tokens stay, which gives the reference's scores (section 3.3).

    Example::

        >>> strict_format(["<think>[plan]a[/plan][analyze]b[/analyze][plan]c[/plan]</think>", "no chain"])
        [1.0, 0.0]
    """
    return [1.0 if _REFERENCE_FORMAT_RE.search(c) else 0.0 for c in completions]


def strict_format_full(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The strict option: 1.0 if the whole completion is the stage-2 chain (:data:`STRICT_FORMAT_PATTERN`,
    ``fullmatch``), else 0.0. Range {0, 1}.

    Unlike ``strict_format`` it is anchored, needs at least one generate/assess cycle, rejects a
    ``<Motion>`` span holding anything but code tokens and a section opened inside another one.

    Example::

        >>> strict_format_full(["<think>[plan]a[/plan][analyze]b[/analyze][plan]c[/plan]</think>"])
        [0.0]
    """
    return [1.0 if _STRICT_FORMAT_RE.fullmatch(c) else 0.0 for c in completions]


# --------------------------------------------------------------------------------------------------
# Motion rewards


@dataclass
class BatchScores:
    """Distances of one local batch of N completions (cached between the two distance rewards)."""

    tm: np.ndarray
    """``(N,)`` text-motion distance (of the substitute for malformed rows under ``mean_pose``)."""
    mm: np.ndarray
    """``(N,)`` motion-motion distance; NaN where the row names no ground truth."""
    malformed: np.ndarray
    """``(N,)`` bool: no usable answer motion."""
    parses: list[MotionParse] = field(default_factory=list)


class GuoRewardBackend:
    """Decodes the answer motions of a batch and embeds them with the evaluator, once per batch.

    Args:
        vq: the frozen VQ-VAE the model's codes belong to (eval mode, fp32).
        vq_norm: its normalisation (the space ``vq.decode`` returns).
        scorer: the evaluator's public embedding path.
        resolver: finds and crops the ground-truth features by ``motion_id`` and window.
        vocab: where the motion tokens sit in the model's vocabulary.
        stop_ids: ids that end a completion (``<eos>``).
        malformed: ``mean_pose`` or ``group_min`` (module docstring).
        max_cache: ground-truth embeddings kept (oldest dropped beyond it).
    """

    def __init__(
        self,
        vq: MotionVQVAE,
        vq_norm: FeatureNorm,
        scorer: MotionTextScorer,
        resolver: MotionResolver,
        vocab: MotionVocab,
        *,
        stop_ids: Sequence[int] = (),
        malformed: str = "mean_pose",
        max_cache: int = 100000,
    ):
        if malformed not in ("mean_pose", "group_min"):
            raise ValueError(f"malformed_motion={malformed!r}: use mean_pose or group_min")
        if vq.nb_code != vocab.nb_code:
            raise ValueError(f"the VQ-VAE has {vq.nb_code} codes, the model's vocabulary {vocab.nb_code}")
        self.vq = vq.float().eval()
        self.space: EvalSpaceMap = scorer.space_map(vq_norm)
        self.raw_space: EvalSpaceMap = scorer.space_map(
            FeatureNorm.identity(scorer.spec.feat_dim)
        )  # ground truth
        self.scorer = scorer
        self.resolver = resolver
        self.vocab = vocab
        self.stop_ids = tuple(stop_ids)
        self.malformed = malformed
        self.max_cache = max_cache
        spec = scorer.spec
        self.mean_pose = np.zeros((spec.max_motion_len, spec.feat_dim), np.float32)  # zeros of the VQ space
        self._gt_cache: dict[tuple[str, float, float], np.ndarray] = {}
        self._last: tuple[tuple, BatchScores] | None = None

    @classmethod
    def from_config(
        cls, cfg: GRPORunConfig, vocab: MotionVocab, stop_ids: Sequence[int], device: Any
    ) -> GuoRewardBackend:
        """Load the VQ-VAE, its meta, the evaluator (with its meta and word vectors) named by the config."""
        spec = get_dataset_spec(cfg.dataset)
        vq = MotionVQVAE.from_checkpoint(cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=device)
        vq_norm = FeatureNorm.load_meta(cfg.resolved_vq_meta_dir(), spec)
        scorer = MotionTextScorer.from_files(
            cfg.evaluator_checkpoint, cfg.resolved_evaluator_meta_dir(), cfg.glove_dir, spec, device=device
        )
        resolver = MotionResolver([cfg.dataset_root], dataset=spec.name)
        return cls(vq, vq_norm, scorer, resolver, vocab, stop_ids=stop_ids,
                   malformed=cfg.rewards.malformed_motion, max_cache=cfg.rewards.gt_cache_size)  # fmt: skip

    # ---------------------------------------------------------------- pieces
    def parse(self, ids: Sequence[int]) -> MotionParse:
        """The answer motion of one completion: the last complete span (section 3.1)."""
        return parse_motion_ids(
            ids, base_id=self.vocab.n_text, nb_code=self.vocab.nb_code, select="last", stop_ids=self.stop_ids
        )

    def decode(self, code_lists: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Code sequences -> ``(4 N_i, D)`` float32 motions in the VQ's normalised space (one batched decode)."""
        if not code_lists:
            return []
        with torch.no_grad():
            return [m.float().cpu().numpy() for m in self.vq.decode_list([list(c) for c in code_lists])]

    def ground_truth(self, keys: Sequence[tuple[str, float, float]]) -> np.ndarray:
        """``(len(keys), E)`` embeddings of the ground truths ``(motion_id, f_tag, to_tag)`` (cached).

        The window ``[int(f_tag*fps), int(to_tag*fps))`` (the whole clip for 0/0), floored to a multiple
        of ``unit_length`` from offset 0, z-normalised with the evaluator's meta by the scorer.
        """
        missing = list(dict.fromkeys(k for k in keys if k not in self._gt_cache))
        if missing:
            unit = self.scorer.spec.unit_length
            motions = []
            for mid, f, t in missing:
                raw = self.resolver.load(MotionRef(mid, f, t))
                n = (len(raw) // unit) * unit
                if n < unit:
                    raise ValueError(
                        f"ground truth {mid} [{f}, {t}) s has {len(raw)} frames, fewer than {unit}"
                    )
                motions.append(raw[:n])
            emb, failed = self.scorer.embed_motions(motions, self.raw_space, label="ground truth")
            if failed.any():
                bad = [missing[i][0] for i in np.flatnonzero(failed)]
                raise ValueError(f"ground-truth motions {bad[:5]} are not finite (T, D) features")
            for k, row in zip(missing, emb, strict=True):
                self._gt_cache[k] = row
            while len(self._gt_cache) > self.max_cache:
                self._gt_cache.pop(next(iter(self._gt_cache)))
        return np.stack([self._gt_cache[k] for k in keys])

    # ---------------------------------------------------------------- one batch
    def score(
        self,
        completion_ids: Sequence[Sequence[int]],
        caption_tokens: Sequence[Sequence[str]],
        motion_id: Sequence[str | None] | None = None,
        f_tag: Sequence[float] | None = None,
        to_tag: Sequence[float] | None = None,
        log_metric: LogMetric | None = None,
    ) -> BatchScores:
        """Both distances of a batch; the second call with the same batch returns the cached result.

        Args:
            completion_ids: N completions' ids (prompt excluded).
            caption_tokens: N ``word/POS`` token lists (the dataset's ``texts/*.txt`` tokens).
            motion_id, f_tag, to_tag: the ground truth per row (``None``/empty id: no mm distance).
            log_metric: TRL's metric logger (``motion/*`` keys, once per batch).
        """
        n = len(completion_ids)
        motion_id = list(motion_id) if motion_id is not None else [None] * n
        f_tag = list(f_tag) if f_tag is not None else [0.0] * n
        to_tag = list(to_tag) if to_tag is not None else [0.0] * n
        key = (
            tuple(tuple(int(i) for i in ids) for ids in completion_ids),
            tuple(tuple(c) for c in caption_tokens), tuple(motion_id), tuple(f_tag), tuple(to_tag),
        )  # fmt: skip
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        parses = [self.parse(ids) for ids in completion_ids]
        good = [i for i, p in enumerate(parses) if p.codes]
        decoded = dict(zip(good, self.decode([parses[i].codes for i in good]), strict=True))
        motions = [
            decoded.get(i, self.mean_pose if self.malformed == "mean_pose" else None) for i in range(n)
        ]
        emb, failed = self.scorer.embed_motions(motions, self.space, label="GRPO answers")
        malformed = np.array([i not in decoded for i in range(n)], dtype=bool) | failed
        text = self.scorer.embed_texts(caption_tokens, cache=True)
        tm = np.linalg.norm(text.astype(np.float64) - emb, axis=1)
        mm = np.full(n, np.nan)
        rows = [i for i in range(n) if motion_id[i]]
        if rows:
            gt = self.ground_truth([(str(motion_id[i]), float(f_tag[i]), float(to_tag[i])) for i in rows])
            mm[rows] = np.linalg.norm(gt.astype(np.float64) - emb[rows], axis=1)
        scores = BatchScores(tm=tm, mm=mm, malformed=malformed, parses=parses)
        self._last = (key, scores)
        if log_metric is not None and n:
            max_len = self.scorer.spec.max_motion_len
            frames = [len(decoded[i]) for i in good]
            log_metric("motion/malformed_frac", float(malformed.mean()))
            log_metric("motion/spans_mean", float(np.mean([len(p.spans) for p in parses])))
            log_metric("motion/dropped_tokens_mean", float(np.mean([p.dropped_tokens for p in parses])))
            if good:
                log_metric("motion/answer_codes_mean", float(np.mean([len(parses[i].codes) for i in good])))
                log_metric("motion/decoded_frames_mean", float(np.mean(frames)))
                log_metric("motion/over_max_len_frac", float(np.mean([f > max_len for f in frames])))
        return scores

    def clear_cache(self) -> None:
        """Forget the cached caption and ground-truth embeddings and the last batch."""
        self._gt_cache.clear()
        self._last = None
        self.scorer.clear_text_cache()


class _GuoDistanceReward:
    """Shared body of the two distance rewards; subclasses pick the distance column."""

    __name__ = "guo_distance"
    group_minmax = True
    """Min-max scaled per group after the gather (the reference's ``reward_norm_before_add``)."""

    def __init__(self, backend: GuoRewardBackend):
        self.backend = backend

    def _distances(self, scores: BatchScores) -> np.ndarray:
        raise NotImplementedError

    def __call__(
        self,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        caption_tokens: Sequence[Sequence[str]] | None = None,
        log_metric: LogMetric | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if completion_ids is None or caption_tokens is None:
            raise ValueError(
                f"{self.__name__} needs the completion_ids (TRL passes them) and a caption_tokens column "
                "(the stage-3 prompt file of python -m data.engine has one)"
            )
        scores = self.backend.score(
            completion_ids, caption_tokens, kwargs.get("motion_id"), kwargs.get("f_tag"), kwargs.get("to_tag"),
            log_metric=log_metric,
        )  # fmt: skip
        dist = self._distances(scores)
        values = -dist
        if self.backend.malformed == "group_min":
            values = np.where(scores.malformed, np.nan, values)
        out = [None if np.isnan(v) else float(v) for v in values]
        if log_metric is not None:
            kept = [v for v in out if v is not None]
            if kept:
                log_metric(f"{self.__name__}/raw_mean", float(np.mean(kept)))
            wellformed = dist[~scores.malformed & ~np.isnan(dist)]
            if wellformed.size:
                log_metric(f"{self.__name__}/distance_wellformed", float(wellformed.mean()))
        return out


class GuoTextMotionDistance(_GuoDistanceReward):
    """``r = -||E_text(caption) - E_motion(answer)||_2`` (spec section 3.4); range (-inf, 0], larger is better.

    Example (a group of 4, the third malformed and scored as the still mean pose)::

        reward = GuoTextMotionDistance(backend)
        reward(completions, completion_ids=ids, caption_tokens=[toks] * 4)  # -> [-3.1, -2.8, -5.0, -3.3]
    """

    __name__ = "guo_tm_distance"

    def _distances(self, scores: BatchScores) -> np.ndarray:
        return scores.tm


class GuoMotionMotionDistance(_GuoDistanceReward):
    """``r = -||E_motion(ground truth) - E_motion(answer)||_2`` (spec section 3.5); range (-inf, 0].

    The ground truth is ``motion_id`` cropped to ``[f_tag, to_tag)`` seconds (whole clip for 0/0) at
    offset 0; a row without ``motion_id`` gets ``None`` (NaN; the group's worst after scaling).
    """

    __name__ = "guo_mm_distance"

    def _distances(self, scores: BatchScores) -> np.ndarray:
        return scores.mm


class MotionTokenShare:
    """``r = #(completion tokens that are motion tokens) / #(completion tokens)`` (eos excluded), in [0, 1].

    A dense toy reward for smoke runs: its baseline for a random policy is about ``(K + 2) / V``.
    Example: ids ``[<Motion>, <Motion_3>, "a", <eos>]`` -> 2/3.
    """

    __name__ = "motion_token_share"
    group_minmax = False

    def __init__(self, vocab: MotionVocab, stop_ids: Sequence[int] = ()):
        self.vocab = vocab
        self.stop_ids = frozenset(stop_ids)

    def __call__(self, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                 **kwargs: Any) -> list[float]:  # fmt: skip
        if completion_ids is None:
            raise ValueError("motion_token_share needs completion_ids (TRL passes them)")
        out = []
        for ids in completion_ids:
            body = [int(i) for i in ids if int(i) not in self.stop_ids]
            out.append(sum(self.vocab.is_motion_id(i) for i in body) / len(body) if body else 0.0)
        return out


# --------------------------------------------------------------------------------------------------
# Registry


@dataclass
class RewardContext:
    """What the reward factories need; the Guo backend is built on first use and shared."""

    cfg: GRPORunConfig
    vocab: MotionVocab
    stop_ids: tuple[int, ...]
    device: Any = "cpu"
    backend: GuoRewardBackend | None = None

    def guo_backend(self) -> GuoRewardBackend:
        if self.backend is None:
            self.backend = GuoRewardBackend.from_config(self.cfg, self.vocab, self.stop_ids, self.device)
        return self.backend


REWARDS: dict[str, Callable[[RewardContext], Callable[..., list]]] = {
    "strict_format": lambda ctx: strict_format,
    "strict_format_full": lambda ctx: strict_format_full,
    "guo_tm_distance": lambda ctx: GuoTextMotionDistance(ctx.guo_backend()),
    "guo_mm_distance": lambda ctx: GuoMotionMotionDistance(ctx.guo_backend()),
    "motion_token_share": lambda ctx: MotionTokenShare(ctx.vocab, ctx.stop_ids),
}
"""Reward name -> factory (the YAML's ``rewards.names``)."""

NEEDS_MOTION_ASSETS = frozenset({"guo_tm_distance", "guo_mm_distance"})
"""Rewards that load the VQ-VAE, the evaluator and the dataset."""


def check_reward_names(names: Sequence[str]) -> None:
    """Raises ``KeyError`` naming the first unknown reward and listing the valid ones."""
    for name in names:
        if name not in REWARDS:
            raise KeyError(f"unknown reward {name!r} in rewards.names; valid: {sorted(REWARDS)}")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise KeyError(f"rewards.names lists {dup} more than once (TRL logs rewards by name)")


def build_rewards(names: Sequence[str], ctx: RewardContext) -> list[Callable[..., list]]:
    """The reward callables of ``names``, in order (one shared Guo backend)."""
    check_reward_names(names)
    return [REWARDS[n](ctx) for n in names]
