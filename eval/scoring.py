"""Embedding captions and generated motions with the Guo evaluator: the one scoring path.

:class:`MotionTextScorer` turns captions (``word/POS`` tokens) and generated motions (any
normalisation space, any lengths, failures included) into evaluator embeddings. The evaluation
harness (``eval/harness.py``) scores every batch through it, and GRPO rewards use it for a group of
completions in one batched call, with the caption embedded once and cached::

    scorer = MotionTextScorer.from_files(evaluator_checkpoint, evaluator_meta_dir, glove_dir, "humanml3d")
    dist, failed = scorer.text_motion_distance([caption_tokens], completions, space=vq_norm)
    # dist: (G,) ||E_t - E_m|| per completion; failed: (G,) bool (scored with the substitute below)

Motions (spec section 2, pitfall 12):

- a motion in the normalisation space ``space`` (a ``FeatureNorm``: the VQ meta, the evaluator
  meta, or ``FeatureNorm.identity(D)`` for raw features) is mapped to the evaluator's space with
  ``x_eval = ((x * std_src + mean_src) - mean_eval) / std_eval`` (``EvalSpaceMap``; the identity
  is skipped exactly), cut to ``max_motion_len`` frames and zero-padded to it;
- the evaluator reads ``length // unit_length`` movement steps of each row.

Failed generations: an entry that is ``None``, not ``(T, D)``, shorter than ``unit_length`` frames
or not finite is replaced by ``unit_length`` zero frames in the evaluator's space (the mean pose,
one movement step, like the published single-code substitute) and embedded like any other row:
N motions in, N embedding rows out, and a ``(N,)`` mask says which rows were substituted, so
metrics are computed over every sample (a failure is scored, not dropped) and reports can count
them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data.normalization import EvalSpaceMap, FeatureNorm, check_eval_space
from data.specs import DatasetSpec, get_dataset_spec
from data.word_vectorizer import WordVectorizer, encode_caption
from models.evaluator import GuoEvaluator, check_evaluator_provenance, load_guo_evaluator

logger = logging.getLogger(__name__)

MotionLike = np.ndarray | torch.Tensor | None
"""A generated ``(T, D)`` motion, or ``None`` for a failed generation."""


class MotionTextScorer:
    """Evaluator embeddings of captions and generated motions (see the module docstring).

    Args:
        evaluator: loaded Guo evaluator (``load_guo_evaluator``); its ``spec`` fixes ``D``,
            ``unit_length``, ``max_motion_len`` and ``max_text_len``.
        vectorizer: the GloVe word vectors the evaluator was trained with.
        eval_norm: the evaluator's mean/std (``<evaluator>/meta``).
        text_chunk: captions per text-encoder call.
    """

    def __init__(
        self,
        evaluator: GuoEvaluator,
        vectorizer: WordVectorizer,
        eval_norm: FeatureNorm,
        *,
        text_chunk: int = 256,
    ):
        self.evaluator = evaluator
        self.vectorizer = vectorizer
        self.eval_norm = eval_norm
        self.spec: DatasetSpec = evaluator.spec
        if eval_norm.mean.shape != (self.spec.feat_dim,):
            raise ValueError(
                f"evaluator normalisation {eval_norm.source} has shape {eval_norm.mean.shape}; the "
                f"{self.spec.name} evaluator expects ({self.spec.feat_dim},)"
            )
        if text_chunk < 1:
            raise ValueError(f"text_chunk={text_chunk} must be >= 1")
        self.text_chunk = text_chunk
        self._text_cache: dict[tuple[str, ...], np.ndarray] = {}
        # check_evaluator_provenance's outcome when built by from_files (None: not checked here)
        self.provenance: dict | None = None

    @classmethod
    def from_files(
        cls,
        evaluator_checkpoint: str | Path,
        evaluator_meta_dir: str | Path,
        glove_dir: str | Path,
        dataset: str | DatasetSpec,
        device: torch.device | str = "cpu",
    ) -> MotionTextScorer:
        """Load the evaluator (``finest.tar``), its ``meta/{mean,std}.npy`` and the ``our_vab`` vectors.

        The word vectors and meta are checked against the evaluator's provenance record
        (``models.evaluator.check_evaluator_provenance``; the outcome is kept in ``provenance``).

        Raises:
            ProvenanceError: ``glove_dir`` or ``evaluator_meta_dir`` holds other files than the
                evaluator was trained with (the message names both hashes).
        """
        spec = get_dataset_spec(dataset)
        evaluator = load_guo_evaluator(evaluator_checkpoint, spec, device=device)
        vectorizer = WordVectorizer(glove_dir)
        eval_norm = FeatureNorm.load_meta(evaluator_meta_dir, spec)
        provenance = check_evaluator_provenance(
            evaluator_checkpoint, glove_dir=glove_dir, meta_dir=evaluator_meta_dir
        )
        scorer = cls(evaluator, vectorizer, eval_norm)
        scorer.provenance = provenance
        return scorer

    @property
    def dim(self) -> int:
        """Embedding size ``E`` (512 for the released evaluators)."""
        return self.evaluator.dim

    def space_map(self, space: FeatureNorm | EvalSpaceMap) -> EvalSpaceMap:
        """The map from ``space`` to the evaluator's space (build it once per source; it logs the gap)."""
        if isinstance(space, EvalSpaceMap):
            if space.target is not self.eval_norm and not (
                np.array_equal(space.target.mean, self.eval_norm.mean)
                and np.array_equal(space.target.std, self.eval_norm.std)
            ):
                raise ValueError(
                    f"space map targets {space.target.source}, not this evaluator's {self.eval_norm.source}"
                )
            return space
        return EvalSpaceMap(space, self.eval_norm)

    # -------------------------------------------------------------- texts
    def embed_texts(self, captions: Sequence[Sequence[str]], *, cache: bool = False) -> np.ndarray:
        """``(N, E)`` float32 text embeddings of N captions, in input order.

        Args:
            captions: each caption's ``word/POS`` tokens (``CaptionLine.tokens``; unknown words
                become ``unk``, more than ``max_text_len`` tokens are cut as in the published loader).
            cache: look captions up in (and add them to) this scorer's cache, keyed by the tokens,
                so a caption shared by a group of completions is embedded once. Without it every
                caption is embedded, in chunks of ``text_chunk`` in input order (the harness relies
                on that for numbers that do not depend on the process count).
        """
        keys = [tuple(c) for c in captions]
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        if not cache:
            return self._embed_token_lists(keys)
        missing = list(dict.fromkeys(k for k in keys if k not in self._text_cache))
        if missing:
            for k, row in zip(missing, self._embed_token_lists(missing), strict=True):
                self._text_cache[k] = row
        return np.stack([self._text_cache[k] for k in keys])

    def clear_text_cache(self) -> None:
        """Forget the cached caption embeddings."""
        self._text_cache.clear()

    def _embed_token_lists(self, keys: list[tuple[str, ...]]) -> np.ndarray:
        max_len = self.spec.max_text_len
        out = []
        for s in range(0, len(keys), self.text_chunk):
            enc = [encode_caption(self.vectorizer, toks, max_len) for toks in keys[s : s + self.text_chunk]]
            words = torch.from_numpy(np.stack([e[0] for e in enc]))
            pos = torch.from_numpy(np.stack([e[1] for e in enc]))
            lens = torch.tensor([e[2] for e in enc], dtype=torch.long)
            out.append(self.evaluator.embed_text(words, pos, lens).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    # -------------------------------------------------------------- motions
    def prepare_motions(
        self, motions: Sequence[MotionLike], space: FeatureNorm | EvalSpaceMap, *, label: str = "motions"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate, map to the evaluator's space, cut and pad; substitute failures.

        Args:
            motions: N generated ``(T_i, D)`` motions (numpy or torch) in ``space``, or ``None``.
            space: their normalisation (or a prebuilt ``space_map``).
            label: names the caller in the warning about the first failure.

        Returns:
            ``padded (N, max_motion_len, D)`` float32 in the evaluator's space, ``lengths (N,)``
            int64 frames (``min(T_i, max_motion_len)``, ``unit_length`` for a failure) and
            ``failed (N,)`` bool.
        """
        mapper = self.space_map(space)
        unit, d, max_len = self.spec.unit_length, self.spec.feat_dim, self.spec.max_motion_len
        padded = np.zeros((len(motions), max_len, d), dtype=np.float32)
        lengths = np.full(len(motions), unit, dtype=np.int64)
        failed = np.zeros(len(motions), dtype=bool)
        for j, m in enumerate(motions):
            arr = None if m is None else np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m)
            ok = (
                arr is not None and arr.ndim == 2 and arr.shape[1] == d and arr.shape[0] >= unit
                and bool(np.isfinite(arr).all())
            )  # fmt: skip
            if not ok:
                if not failed.any():
                    shape = None if arr is None else arr.shape
                    logger.warning("%s: failed generation for row %d (shape %s); substituting %d mean-pose "
                                   "frames and counting it", label, j, shape, unit)  # fmt: skip
                failed[j] = True
                continue  # the row stays unit_length zero frames: the mean pose in the evaluator's space
            x = mapper(arr[:max_len])
            padded[j, : len(x)] = x
            lengths[j] = len(x)
        return padded, lengths, failed

    def embed_padded(
        self, padded: np.ndarray | torch.Tensor, lengths: np.ndarray | torch.Tensor
    ) -> np.ndarray:
        """``(B, T, D)`` zero-padded motions already in the evaluator's space -> ``(B, E)`` float32.

        One evaluator call (the batch is the caller's choice; split very large sets).
        """
        x = torch.from_numpy(padded) if isinstance(padded, np.ndarray) else padded
        return self.evaluator.embed_motion(x, torch.as_tensor(lengths, dtype=torch.long)).cpu().numpy()

    def embed_motions(
        self,
        motions: Sequence[MotionLike],
        space: FeatureNorm | EvalSpaceMap,
        *,
        label: str = "motions",
        check_space: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, E)`` float32 embeddings of N generated motions and the ``(N,)`` bool failure mask.

        Failed entries are embedded as the documented substitute (module docstring), so row ``i``
        always belongs to motion ``i``. All N rows go through one evaluator call.

        Args:
            motions: ``(T_i, D)`` motions in ``space`` (numpy or torch), ``None`` for a failure.
            space: their normalisation (``FeatureNorm``) or a prebuilt ``space_map``.
            label: names the caller in warnings.
            check_space: warn (never raise: an untrained generator may emit anything) when the
                mapped batch does not look like the evaluator's space; skipped if a row failed.
        """
        if len(motions) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, dtype=bool)
        padded, lengths, failed = self.prepare_motions(motions, space, label=label)
        if check_space and not failed.any():
            check_eval_space(padded, lengths, label, strict=False)
        return self.embed_padded(padded, lengths), failed

    # -------------------------------------------------------------- pairs
    def text_motion_distance(
        self,
        captions: Sequence[Sequence[str]],
        motions: Sequence[MotionLike],
        space: FeatureNorm | EvalSpaceMap,
        *,
        label: str = "motions",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pair evaluator distance ``d_i = ||E_t(caption_i) - E_m(motion_i)||`` and the failure mask.

        The term that MM-Dist averages (``eval.metrics.matching_score``), for one sample each: the
        reward-side view. Captions go through the cache (``embed_texts(cache=True)``), the motions
        through one ``embed_motions`` call.

        Args:
            captions: one ``word/POS`` token list per motion, or a single one for all of them (a
                GRPO group: G completions of one prompt).
            motions: N generated motions in ``space`` (``None`` = failed, scored as the substitute).
            space: their normalisation.
            label: names the caller in warnings.

        Returns:
            ``distances (N,)`` float64 and ``failed (N,)`` bool.
        """
        if len(captions) not in (1, len(motions)):
            raise ValueError(
                f"{len(captions)} captions for {len(motions)} motions: pass one per motion or one"
            )
        text = self.embed_texts(captions, cache=True).astype(np.float64)
        emb, failed = self.embed_motions(motions, space, label=label)
        return np.linalg.norm(text - emb.astype(np.float64), axis=1), failed
