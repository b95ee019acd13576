"""The Guo et al. evaluation protocol as a library: plug in a motion generator, get the table.

A **method** is a generation callable plus the normalisation space its motions are in::

    def generate(captions: list[str], lengths: np.ndarray, batch: HarnessBatch) -> list[np.ndarray | None]:
        ...  # one (T_i, D) motion per caption, in `space` (None / empty = failed generation)

    Method(name="my model", generate=generate, space=FeatureNorm.load_meta(vq_meta_dir, "humanml3d"))

A method that refines its output returns, per caption, one motion per round
(``Method(..., rounds=R)``; ``generate`` then returns N lists of R motions); every round is scored
as its own row, ``"<name> round k"`` (round 0 = the first generation, round k = after k
refinements).

``EvaluationHarness.run(methods)`` does the rest (spec sections 1.8, 2, 6, 10):

- test items of ``EvalMotionTextDataset`` (caption draw, crop coin and start from
  ``default_rng([seed, r, i])``), shuffled ``drop_last`` batches of 32 from ``replication_batches``;
  replication ``r`` re-draws everything;
- ground-truth motions in the evaluator's space; generated motions embedded by
  ``eval.scoring.MotionTextScorer`` (mapped with
  ``x_eval = ((x * std_src + mean_src) - mean_eval) / std_eval``, cut to ``max_motion_len`` frames
  and zero-padded);
- per replication and method: R-precision top-1/2/3 and MM-Dist on each batch of 32 (the method's
  motions against the batch's own texts), FID against the ground-truth embeddings of the same
  batches, diversity over 300 pairs; the ``Real motion`` row takes R-precision / MM-Dist /
  diversity from the ground truth, and its FID compares the ground truth with a second,
  independent crop draw of the same items (as Guo's two loader passes; hence not exactly 0);
- optionally multimodality (``mm_texts`` texts x ``mm_repeats`` generations, ``mm_times`` pairs);
- mean ± 95% CI over replications (``eval.metrics.mean_ci95``).

Batch composition (spec section 10): generated motions are scored in exactly the ground truth's
batches of the replication (same items, same captions), as T2M-GPT does; Guo's harness instead
regrouped generated motions into unshuffled batches, which changes R-precision slightly.

Text embeddings: every caption of every test item is embedded once, in fixed chunks (so the
numbers do not depend on the process count), and each replication indexes the chosen captions.

Failed generations (``None``, 0 frames, fewer than ``unit_length`` frames, wrong feature size or
NaN/inf) are replaced by ``unit_length`` zero frames (the mean pose in the evaluator's space, one
movement step, like the published single-code substitute; ``eval.scoring``), scored like every
other sample (the metrics always see all N rows), counted per row, and reported in the JSON and
the Markdown table.

Counted, not silent: the report's ``counts`` hold every clip or sample the protocol leaves out or
replaces: the split's loader counts (``test_index``: unreadable files skipped, clips too short or
too long, sub-clips filtered), items left out of each replication by ``drop_last``, captions cut to
``max_text_len`` and caption words looked up as ``unk`` (a large share means word vectors from
another vocabulary), and failed generations per row.

Processes: under ``torchrun`` each rank takes batches ``rank, rank + world, ...`` of every
replication; the per-batch embeddings are gathered (``data.runtime.gather_dicts``) and rank 0
computes the metrics in batch order. Generation callables get ``batch.seed`` (a function of seed, replication and batch index) so
sampling is reproducible whatever the process count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.config import RunConfig, config_to_dict
from data.datasets import EvalMotionTextDataset, build_clip_index, eval_collate, replication_batches
from data.layout import DatasetPaths
from data.normalization import EvalSpaceMap, FeatureNorm, check_eval_space, meta_files
from data.progress import progress_bar
from data.run_folder import OutputFolder, RunFolder, RunFolderError
from data.runtime import all_gather_objects, gather_dicts, group_rank_world, open_run
from data.specs import get_dataset_spec
from data.word_vectorizer import WordVectorizer, word_vector_files
from eval.metrics import (
    activation_statistics,
    diversity,
    frechet_distance_to_reference,
    frechet_reference,
    mean_ci95,
    multimodality,
    text_motion_scores_batched,
)
from eval.scoring import MotionLike, MotionTextScorer
from models.evaluator import GuoEvaluator, check_evaluator_provenance, load_guo_evaluator
from models.evaluator_training import R_PRECISION_TOP_K
from models.vqvae import MotionVQVAE

logger = logging.getLogger(__name__)

REAL_MOTION = "Real motion"
"""Name of the ground-truth row."""

_SECOND_PASS_OFFSET = 1 << 20
"""Replication offset of the independent ground-truth draw used for the Real-motion FID."""

METRIC_KEYS = ("top1", "top2", "top3", "fid", "mm_dist", "diversity", "mmodality")
_COLUMNS = ("Top-1", "Top-2", "Top-3", "FID", "MM-Dist", "Diversity", "MModality")

_MM_TAG = 0x3D3D
"""Seed word of the multimodality text choice."""
_MM_BATCH_OFFSET = 1 << 24
"""Batch indices (and generation seeds) of multimodality work units start here."""


@dataclass
class HarnessBatch:
    """What a generation callable may use about the batch it generates for (rows in input order)."""

    replication: int
    batch_index: int
    """Index of the batch within its replication."""
    indices: np.ndarray
    """(B,) dataset item indices."""
    names: list[str]
    captions: list[str]
    tokens: list[str]
    """Padded ``word/POS`` tokens joined with ``_`` (spec 1.8)."""
    lengths: np.ndarray
    """(B,) ground-truth crop lengths (frames, multiples of ``unit_length``)."""
    seed: int
    """Seed for this batch's sampling: ``hash(seed, replication, batch_index)``; rank-independent."""
    dataset: EvalMotionTextDataset = field(repr=False)
    multimodality: bool = False
    """True in the multimodality passes (a generator may sample there, spec section 8.8)."""

    def raw_motion(self, row: int) -> np.ndarray:
        """Un-normalised ground-truth crop of ``row``: ``(lengths[row], D)`` float32."""
        return self.dataset.raw_motion(int(self.indices[row]), self.replication)

    def generator(self) -> torch.Generator:
        """A torch generator seeded with ``seed``."""
        return torch.Generator().manual_seed(self.seed)


GenerationFn = Callable[[list[str], np.ndarray, HarnessBatch], Sequence[MotionLike | Sequence[MotionLike]]]
"""``(captions, lengths, batch) ->`` per caption one ``(T_i, D)`` motion (or None), or with
``Method.rounds = R > 1`` a sequence of R of them, in the method's space."""


@dataclass
class Method:
    """A generator evaluated by the harness: one row of the results table per round."""

    name: str
    generate: GenerationFn
    space: FeatureNorm
    """Normalisation of the returned motions (``FeatureNorm.identity(D)`` for raw features)."""
    rounds: int = 1
    """Motions per caption. 1: ``generate`` returns one motion per caption (row ``name``). R > 1:
    it returns, per caption, a sequence of R motions (round 0 = first generation, round k = after
    k refinements; ``None`` for a failed round or for all rounds of a caption), each round scored
    as its own row ``"<name> round k"``."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"method {self.name!r}: rounds={self.rounds} must be >= 1")

    def row_names(self) -> list[str]:
        """The report rows of this method, in round order."""
        if self.rounds == 1:
            return [self.name]
        return [f"{self.name} round {k}" for k in range(self.rounds)]

    def split_rounds(self, out: Sequence[Any], n: int, where: str) -> list[list[MotionLike]]:
        """``generate``'s output for ``n`` captions -> ``rounds`` lists of ``n`` motions.

        Raises:
            ValueError: not one entry per caption, or (rounds > 1) an entry that is not a sequence of
                ``rounds`` motions.
        """
        if len(out) != n:
            raise ValueError(f"method {self.name!r} returned {len(out)} motions for {n} captions ({where})")
        if self.rounds == 1:
            return [list(out)]
        per_round: list[list[MotionLike]] = [[] for _ in range(self.rounds)]
        for j, entry in enumerate(out):
            if entry is None:  # every round of this caption failed
                entry = [None] * self.rounds
            if isinstance(entry, np.ndarray | torch.Tensor) or len(entry) != self.rounds:
                got = f"shape {tuple(entry.shape)}" if hasattr(entry, "shape") else f"{len(entry)} entries"
                raise ValueError(
                    f"method {self.name!r} has rounds={self.rounds} but returned {got} for caption {j} "
                    f"({where}); return one list of {self.rounds} motions per caption (None for a failed round)"
                )
            for k, m in enumerate(entry):
                per_round[k].append(m)
        return per_round


@dataclass
class MethodResult:
    """Per-replication values of one row and their summary."""

    name: str
    values: dict[str, list[float]]
    """metric -> one value per replication."""
    failed: int = 0
    """Failed generations over all replications (substituted and still scored)."""
    generated: int = 0
    """Generations requested over all replications."""

    def summary(self) -> dict[str, dict[str, float]]:
        """metric -> ``{"mean": m, "ci95": c}``."""
        out = {}
        for k in METRIC_KEYS:
            v = [x for x in self.values.get(k, []) if x is not None]
            if v:
                m, c = mean_ci95(np.asarray(v))
                out[k] = {"mean": float(m), "ci95": float(c)}
        return out


@dataclass
class EvalReport:
    """Everything ``write_report`` saves."""

    results: list[MethodResult]
    info: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.info,
            "methods": {
                r.name: {
                    "summary": r.summary(),
                    "per_replication": {k: v for k, v in r.values.items() if v},
                    "failed_generations": r.failed,
                    "generations": r.generated,
                }  # fmt: skip
                for r in self.results
            },
        }

    def markdown(self) -> str:
        """Rows = methods, columns Top-1/2/3, FID, MM-Dist, Diversity[, MModality] (``mean ± ci95``), Failed."""
        keys = [
            k
            for k in METRIC_KEYS
            if k != "mmodality" or any("mmodality" in r.summary() for r in self.results)
        ]
        cols = [c for k, c in zip(METRIC_KEYS, _COLUMNS, strict=True) if k in keys]
        head = "| Method | " + " | ".join(cols) + " | Failed |"
        lines = [head, "|" + "---|" * (len(cols) + 2)]
        for r in self.results:
            s = r.summary()
            cells = [f"{s[k]['mean']:.3f} ± {s[k]['ci95']:.3f}" if k in s else "-" for k in keys]
            failed = "-" if r.name == REAL_MOTION else f"{r.failed}/{r.generated}"
            lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {failed} |")
        info = self.info
        lines.append("")
        lines.append(
            f"{info['replications']} replications, split `{info['split']}`, batches of {info['batch_size']} "
            f"({info['samples_per_replication']} samples each), diversity over {info['diversity_times']} pairs, "
            f"seed {info['seed']}; ± is the 95% CI (1.96·std/√n)."
        )
        if info.get("mm_texts"):
            lines.append(
                f"MModality: {info['mm_texts']} texts x {info['mm_repeats']} generations per replication, "
                f"{info['mm_times']} pairs."
            )
        return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out: OutputFolder | str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically; returns both paths.

    ``out`` is the run folder of the calling command (``data.runtime.open_run``), which records
    both files, or a plain folder (written atomically, without a manifest).
    """
    folder = out if isinstance(out, OutputFolder) else OutputFolder(Path(out))
    js = folder.write_json(f"{stem}.json", report.to_json())
    md = folder.write_text(f"{stem}.md", report.markdown())
    return js, md


# ----------------------------------------------------------------------------------------------
# Harness
# ----------------------------------------------------------------------------------------------


def batch_seed(seed: int, replication: int, batch_index: int) -> int:
    """Rank-independent per-batch seed for generation callables."""
    return int(np.random.SeedSequence([seed, replication, batch_index]).generate_state(1)[0])


class EvaluationHarness:
    """Runs the protocol for a list of methods; see the module docstring.

    Args:
        evaluator: loaded Guo evaluator (``load_guo_evaluator``).
        dataset: test-split ``EvalMotionTextDataset`` normalised with the evaluator's meta.
        eval_norm: the evaluator's mean/std (the same pair the dataset uses).
        batch_size: candidates per R-precision batch (32).
        replications: protocol repetitions (20).
        diversity_times: pairs for diversity (300; must be below the samples per replication).
        text_chunk: captions per text-encoder call when filling the cache.
        mm_texts: texts per replication for multimodality (0 = off; Guo: 100). Each is generated
            ``mm_repeats`` times (30) and scored with ``mm_times`` pairs (10); the texts are drawn
            from ``default_rng([seed, r, tag])`` and keep the replication's caption draw.
        progress: tqdm bar on rank 0.

    Attributes:
        scorer: the ``MotionTextScorer`` that embeds every caption and motion of the run.
    """

    def __init__(
        self,
        evaluator: GuoEvaluator,
        dataset: EvalMotionTextDataset,
        eval_norm: FeatureNorm,
        *,
        batch_size: int = 32,
        replications: int = 20,
        diversity_times: int = 300,
        text_chunk: int = 256,
        mm_texts: int = 0,
        mm_repeats: int = 30,
        mm_times: int = 10,
        progress: bool = True,
    ):
        self.evaluator = evaluator
        self.dataset = dataset
        self.spec = dataset.spec
        self.eval_norm = eval_norm
        if not (np.allclose(eval_norm.mean, dataset.mean) and np.allclose(eval_norm.std, dataset.std)):
            raise ValueError(
                "the evaluation dataset is not normalised with the evaluator's meta "
                f"({eval_norm.source}); build EvalMotionTextDataset with that mean/std"
            )
        self.scorer = MotionTextScorer(evaluator, dataset.vectorizer, eval_norm, text_chunk=text_chunk)
        self.batch_size = batch_size
        self.replications = replications
        self.diversity_times = diversity_times
        self.text_chunk = text_chunk
        self.mm_texts, self.mm_repeats, self.mm_times = mm_texts, mm_repeats, mm_times
        if mm_texts and not (mm_texts <= len(dataset) and mm_repeats > mm_times):
            raise ValueError(
                f"multimodality needs mm_texts={mm_texts} <= {len(dataset)} test items and "
                f"mm_repeats={mm_repeats} > mm_times={mm_times}"
            )
        self.progress = progress
        self.seed = dataset.seed
        n_batches = len(dataset) // batch_size
        if n_batches == 0:
            raise ValueError(f"{len(dataset)} test items: fewer than one batch of {batch_size}")
        if n_batches * batch_size <= diversity_times:
            raise ValueError(
                f"{n_batches * batch_size} samples per replication: diversity needs more than "
                f"diversity_times={diversity_times}; lower it for small test sets and report it"
            )
        self._text_cache: np.ndarray | None = None
        self._caption_offsets: np.ndarray | None = None
        self.caption_counts = self._count_caption_fallbacks()
        # what check_evaluator_provenance found (harness_from_config sets it); written in the report
        self.provenance: dict[str, Any] | None = None

    def _count_caption_fallbacks(self) -> dict[str, int]:
        """Captions cut to ``max_text_len`` tokens and caption words looked up as ``unk``."""
        vec, max_len = self.dataset.vectorizer, self.spec.max_text_len
        tokens = [cap.tokens for e in self.dataset.index.entries for cap in e.captions]
        words = [t.rpartition("/")[0] for toks in tokens for t in toks]
        return {
            "captions": len(tokens),
            "cut_to_max_text_len": sum(len(t) > max_len for t in tokens),
            "words": len(words),
            "unknown_words": sum(w not in vec for w in words),
        }

    # -------------------------------------------------------------- text cache
    def text_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(cache (n_captions, E), offsets (n_items + 1,))``: item i's caption c is row offsets[i] + c.

        Computed once, in fixed chunks of ``text_chunk`` captions shared round-robin by the ranks.
        """
        if self._text_cache is not None:
            return self._text_cache, self._caption_offsets
        entries = self.dataset.index.entries
        counts = np.array([len(e.captions) for e in entries], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        flat = [cap.tokens for e in entries for cap in e.captions]
        chunks = [flat[s : s + self.text_chunk] for s in range(0, len(flat), self.text_chunk)]
        rank, world = group_rank_world()
        mine = {k: self.scorer.embed_texts(chunks[k]) for k in range(rank, len(chunks), world)}
        gathered = gather_dicts(mine)
        cache = np.concatenate([gathered[k] for k in range(len(chunks))]).astype(np.float32)
        self._text_cache, self._caption_offsets = cache, offsets
        logger.info("embedded %d captions of %d test items once", len(flat), len(entries))
        return cache, offsets

    # -------------------------------------------------------------- generation
    def _harness_batch(self, r: int, k: int, idx: np.ndarray, gt: Any, mm: bool = False) -> HarnessBatch:
        """What a generation callable sees of batch ``k`` of replication ``r`` (``gt``: its ``EvalBatch``)."""
        return HarnessBatch(
            replication=r, batch_index=k, indices=np.asarray(idx), names=gt.names, captions=gt.captions,
            tokens=gt.tokens, lengths=gt.m_lengths.numpy(), seed=batch_seed(self.seed, r, k),
            dataset=self.dataset, multimodality=mm,
        )  # fmt: skip

    def _generate_rows(
        self,
        methods: list[Method],
        mappers: list[EvalSpaceMap],
        hb: HarnessBatch,
        where: str,
        check_space: bool,
    ) -> dict[str, Any]:
        """Run every method on one batch; ``{m<row>: (B, E) embeddings, f<row>: failures}`` per report row."""
        rec: dict[str, Any] = {}
        row = 0
        for method, mapper in zip(methods, mappers, strict=True):
            out = method.generate(list(hb.captions), hb.lengths.copy(), hb)
            for name, motions in zip(
                method.row_names(), method.split_rounds(out, len(hb.indices), where), strict=True
            ):
                emb, failed = self.scorer.embed_motions(
                    motions, mapper, label=f"{name} ({where})", check_space=check_space
                )
                rec[f"m{row}"], rec[f"f{row}"] = emb, int(failed.sum())
                row += 1
        return rec

    # -------------------------------------------------------------- main loop
    def _run_batch(self, r: int, k: int, idx: np.ndarray, methods: list[Method],
                   mappers: list[EvalSpaceMap], text_cache: np.ndarray, offsets: np.ndarray) -> dict[str, Any]:  # fmt: skip
        ds = self.dataset
        items = [ds.get_item(int(i), r) for i in idx]
        gt = eval_collate(items)
        lengths = gt.m_lengths.numpy()
        cap_rows = np.array([offsets[i] + ds.draw(int(i), r).caption_index for i in idx])
        rec: dict[str, Any] = {"text": text_cache[cap_rows]}
        if k == 0:
            check_eval_space(gt.motions.numpy(), lengths, f"ground truth (replication {r})")
        rec["gt"] = self.scorer.embed_padded(gt.motions, gt.m_lengths)
        second = eval_collate([ds.get_item(int(i), r + _SECOND_PASS_OFFSET) for i in idx])
        rec["gt2"] = self.scorer.embed_padded(second.motions, second.m_lengths)
        hb = self._harness_batch(r, k, idx, gt)
        # warn-only space check on the first batch: an untrained generator may emit anything
        rec.update(
            self._generate_rows(methods, mappers, hb, f"replication {r}, batch {k}", check_space=k == 0)
        )
        return rec

    def run(self, methods: Sequence[Method] = ()) -> EvalReport:
        """Evaluate the ground truth and every method; returns the report on every rank.

        Rows: the ground truth, then each method's ``row_names()`` (one per round). Metrics are
        computed on rank 0 from the gathered embeddings; other ranks return an empty report
        (``results == []``).
        """
        methods = list(methods)
        names = [REAL_MOTION, *(n for m in methods for n in m.row_names())]
        if len(set(names)) != len(names):
            raise ValueError(f"method row names must be unique and not {REAL_MOTION!r}: {names}")
        mappers = [self.scorer.space_map(m.space) for m in methods]
        text_cache, offsets = self.text_embeddings()
        rank, world = group_rank_world()
        batches_per_rep = len(self.dataset) // self.batch_size
        results = {n: MethodResult(name=n, values={k: [] for k in METRIC_KEYS}) for n in names}
        total = self.replications * len(range(rank, batches_per_rep, world))
        bar = progress_bar(
            total=total, desc="evaluating", unit="batch", disable=not (self.progress and rank == 0)
        )
        for r in range(self.replications):
            batches = replication_batches(len(self.dataset), batch_size=self.batch_size, seed=self.seed,
                                          replication=r)  # fmt: skip
            mine = {}
            for k in range(rank, len(batches), world):
                mine[k] = self._run_batch(r, k, batches[k], methods, mappers, text_cache, offsets)
                bar.update(1)
            gathered = gather_dicts(mine)
            if rank != 0:
                continue
            recs = [gathered[k] for k in range(len(batches))]
            self._score_replication(r, recs, names[1:], results)
        bar.close()
        if self.mm_texts and methods:
            for r in range(self.replications):
                self._multimodality(r, methods, mappers, names[1:], results)
        info = {
            "split": self.dataset.index.split, "dataset": self.spec.name, "replications": self.replications,
            "batch_size": self.batch_size, "samples_per_replication": batches_per_rep * self.batch_size,
            "test_items": len(self.dataset), "diversity_times": self.diversity_times, "seed": self.seed,
            "world_size": world, "evaluator_meta": self.eval_norm.source, "mm_texts": self.mm_texts,
            "mm_repeats": self.mm_repeats, "mm_times": self.mm_times,
            "normalisation": {m.name: {"source": mp.source.source, "max_abs_dmean": mp.max_abs_dmean,
                                       "max_abs_dstd": mp.max_abs_dstd} for m, mp in zip(methods, mappers, strict=True)},
            "evaluator_provenance": self.provenance,
            "counts": {
                "test_index": dict(self.dataset.index.stats),
                "items_not_scored_per_replication": len(self.dataset) - batches_per_rep * self.batch_size,
                "caption_fallbacks": self.caption_counts,
                "failed_generations": {n: results[n].failed for n in names[1:]},
            },
        }  # fmt: skip
        return EvalReport(results=[results[n] for n in names] if rank == 0 else [], info=info)

    def _score_replication(
        self, r: int, recs: list[dict[str, Any]], rows: list[str], results: dict[str, MethodResult]
    ) -> None:
        """Metrics of one replication for the ground truth and the generated ``rows`` (keys ``m<i>``)."""
        text = np.concatenate([x["text"] for x in recs])
        gt = np.concatenate([x["gt"] for x in recs])
        gt2 = np.concatenate([x["gt2"] for x in recs])
        # one reference per replication for all rows: frechet_distance(mu_gt, S_gt, ...) with the
        # ground truth's factorisation done once
        ref = frechet_reference(*activation_statistics(gt))
        div_seed = self.seed + r

        def score(emb: np.ndarray, fid_against: np.ndarray) -> dict[str, float]:
            rp, mm = text_motion_scores_batched(text, emb, batch_size=self.batch_size, top_k=3)
            fid = frechet_distance_to_reference(ref, *activation_statistics(fid_against))
            return {"top1": float(rp[0]), "top2": float(rp[1]), "top3": float(rp[2]), "fid": fid,
                    "mm_dist": mm, "diversity": diversity(emb, times=self.diversity_times, seed=div_seed)}  # fmt: skip

        scores = {REAL_MOTION: score(gt, gt2)}
        for i, name in enumerate(rows):
            emb = np.concatenate([x[f"m{i}"] for x in recs])
            scores[name] = score(emb, emb)
            results[name].failed += sum(x[f"f{i}"] for x in recs)
            results[name].generated += len(emb)
        for name, vals in scores.items():
            for key, v in vals.items():
                results[name].values[key].append(v)
        logger.info("replication %d: %s", r, "; ".join(
            f"{n}: top1 {v['top1']:.3f} fid {v['fid']:.3f} mm {v['mm_dist']:.3f}" for n, v in scores.items()))  # fmt: skip

    def _multimodality(
        self, r: int, methods: list[Method], mappers: list[EvalSpaceMap], rows: list[str],
        results: dict[str, MethodResult],
    ) -> None:  # fmt: skip
        """``mm_repeats`` generations of ``mm_texts`` texts -> (T, R, E) -> ``multimodality`` per row.

        Work units (chunk of up to ``batch_size`` texts, repeat) are shared round-robin by the ranks;
        each unit has its own rank-independent ``batch.seed``. Failures count like in the main pass.
        """
        ds, bs = self.dataset, self.batch_size
        items = np.random.default_rng([self.seed, r, _MM_TAG]).choice(len(ds), self.mm_texts, replace=False)
        chunks = [items[s : s + bs] for s in range(0, len(items), bs)]
        units = [(c, j) for c in range(len(chunks)) for j in range(self.mm_repeats)]
        rank, world = group_rank_world()
        mine: dict[int, dict[str, Any]] = {}
        for u in progress_bar(range(rank, len(units), world), desc=f"multimodality {r}", leave=False,
                      disable=not (self.progress and rank == 0)):  # fmt: skip
            idx = chunks[units[u][0]]
            gt = eval_collate([ds.get_item(int(i), r) for i in idx])
            hb = self._harness_batch(r, _MM_BATCH_OFFSET + u, idx, gt, mm=True)
            mine[u] = self._generate_rows(
                methods, mappers, hb, f"multimodality, replication {r}", check_space=False
            )
        gathered = gather_dicts(mine)
        if rank != 0:
            return
        for i, name in enumerate(rows):
            emb = np.zeros((len(items), self.mm_repeats, gathered[0][f"m{i}"].shape[1]), np.float32)
            for u, (c, j) in enumerate(units):
                emb[c * bs : c * bs + len(chunks[c]), j] = gathered[u][f"m{i}"]
                results[name].failed += gathered[u][f"f{i}"]
                results[name].generated += len(chunks[c])
            results[name].values["mmodality"].append(
                multimodality(emb, times=self.mm_times, seed=self.seed + r)
            )


# ----------------------------------------------------------------------------------------------
# Ready-made generation callables
# ----------------------------------------------------------------------------------------------


class VQReconstruction:
    """Generation callable: VQ-VAE round trip of each sample's own unpadded ground-truth crop (spec 10).

    Each crop (a multiple of ``unit_length`` frames) is normalised with the VQ meta, encoded and
    decoded in one padded batch with per-row lengths (equal to per-sample runs), and returned in
    the VQ's space; the harness maps it to the evaluator's space and zero-pads it.
    """

    def __init__(self, vq: MotionVQVAE, vq_norm: FeatureNorm):
        self.vq = vq
        self.vq_norm = vq_norm
        self.__name__ = "VQReconstruction"

    @torch.no_grad()
    def __call__(self, captions: list[str], lengths: np.ndarray, batch: HarnessBatch) -> list[np.ndarray]:
        crops = [self.vq_norm.normalise(batch.raw_motion(j)) for j in range(len(captions))]
        fpc = self.vq.frames_per_code
        lens = [len(c) - len(c) % fpc for c in crops]
        x = np.zeros((len(crops), max(lens), crops[0].shape[1]), np.float32)
        for j, c in enumerate(crops):
            x[j, : lens[j]] = c[: lens[j]]
        lt = torch.tensor(lens, dtype=torch.long)
        codes = self.vq.encode(torch.from_numpy(x), lt)
        rec = self.vq.decode(codes, lt // fpc).float().cpu().numpy()
        return [rec[j, : lens[j]] for j in range(len(crops))]


# ----------------------------------------------------------------------------------------------
# Config and builders (shared by eval/evaluate.py and the generation stages' evaluation)
# ----------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class EvalConfig(RunConfig):
    """Standard-protocol evaluation; generation stages extend this dataclass with their own fields."""

    output_dir: str = "runs/demo/eval"
    """Run folder for ``eval_<split>.{json,md}``, ``config.yaml``, ``run_info.json`` and ``run.json``."""
    glove_dir: str = "runs/demo/glove"
    """Folder with ``our_vab_*`` word vectors."""
    evaluator_checkpoint: str = "runs/demo/evaluator/finest.tar"
    """Guo evaluator checkpoint (``finest.tar``, released layout)."""
    evaluator_meta_dir: str = "runs/demo/evaluator/meta"
    """Evaluator normalisation (``mean.npy``/``std.npy``); ground truth is normalised with it."""
    vq_checkpoint: str = ""
    """VQ-VAE ``{'net': ...}`` checkpoint for the reconstruction row (empty = no VQ row)."""
    vq_meta_dir: str = ""
    """VQ normalisation folder (``mean.npy``/``std.npy``) the VQ reads and writes."""
    vq_name: str = "VQ-VAE reconstruction"
    """Table row name of the VQ reconstruction."""
    split: str = "test"
    """Split that is scored."""
    batch_size: int = 32
    """R-precision candidates per batch (the protocol's 32)."""
    replications: int = 20
    """Independent evaluation draws; the table gives mean ± 95% CI over them."""
    diversity_times: int = 300
    """Random pairs for diversity (must be below the scored samples per replication)."""
    mm_texts: int = 0
    """Texts per replication for multimodality (0 = off; Guo: 100 with mm_repeats 30)."""
    mm_repeats: int = 30
    """Generations per multimodality text."""
    mm_times: int = 10
    """Pairs of generations per text for multimodality (below mm_repeats)."""
    resume: bool = True
    """A finished evaluation in ``output_dir`` with the same config and inputs is returned, not rerun;
    false evaluates again (and replaces its files)."""
    overwrite: bool = False
    """Accept an output_dir holding another command's run or files of other origin (they are kept),
    or an evaluation with another config or inputs (its files are replaced)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < R_PRECISION_TOP_K:
            raise ValueError(
                f"batch_size={self.batch_size} must be >= {R_PRECISION_TOP_K}: R-precision top-"
                f"{R_PRECISION_TOP_K} ranks each text against the batch's motions"
            )
        if self.replications < 1 or self.diversity_times < 1:
            raise ValueError(
                f"replications={self.replications} and diversity_times={self.diversity_times} must be >= 1"
            )
        if bool(self.vq_checkpoint) != bool(self.vq_meta_dir):
            raise ValueError(
                f"vq_checkpoint={self.vq_checkpoint!r} and vq_meta_dir={self.vq_meta_dir!r} go together "
                "(the VQ's normalisation is required)"
            )
        if self.mm_texts < 0:
            raise ValueError(f"mm_texts={self.mm_texts} must be >= 0 (0 = no multimodality)")
        if self.mm_texts and not 1 <= self.mm_times < self.mm_repeats:
            raise ValueError(
                f"mm_times={self.mm_times} must be >= 1 and below mm_repeats={self.mm_repeats} "
                f"when mm_texts={self.mm_texts} (pairs are drawn among the generations)"
            )


def harness_from_config(cfg: EvalConfig, device: torch.device | str = "cpu") -> EvaluationHarness:
    """Load the evaluator, its meta, the word vectors and the split into an ``EvaluationHarness``.

    Raises:
        ProvenanceError: ``glove_dir`` or ``evaluator_meta_dir`` holds other files than the evaluator
            was trained with (``models.evaluator.check_evaluator_provenance``; an evaluator without
            a provenance record is used with one warning).
    """
    evaluator = load_guo_evaluator(cfg.evaluator_checkpoint, cfg.dataset, device=device)
    eval_norm = FeatureNorm.load_meta(cfg.evaluator_meta_dir, cfg.dataset)
    index = build_clip_index(
        cfg.dataset_root, cfg.split, cfg.dataset, on_error=cfg.on_error,
        max_skip_fraction=cfg.max_skip_fraction, progress=cfg.progress,
    )  # fmt: skip
    vectorizer = WordVectorizer(cfg.glove_dir)
    provenance = check_evaluator_provenance(
        cfg.evaluator_checkpoint, glove_dir=cfg.glove_dir, meta_dir=cfg.evaluator_meta_dir
    )
    ds = EvalMotionTextDataset(index, vectorizer, eval_norm.mean, eval_norm.std, seed=cfg.seed)
    harness = EvaluationHarness(
        evaluator, ds, eval_norm, batch_size=cfg.batch_size, replications=cfg.replications,
        diversity_times=cfg.diversity_times, mm_texts=cfg.mm_texts, mm_repeats=cfg.mm_repeats,
        mm_times=cfg.mm_times, progress=cfg.progress,
    )  # fmt: skip
    harness.provenance = provenance
    return harness


def vq_method_from_config(cfg: EvalConfig, device: torch.device | str = "cpu") -> Method | None:
    """The VQ-VAE reconstruction row, or ``None`` when ``vq_checkpoint`` is empty."""
    if not cfg.vq_checkpoint:
        return None
    spec = get_dataset_spec(cfg.dataset)
    vq = MotionVQVAE.from_checkpoint(cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=device)
    norm = FeatureNorm.load_meta(cfg.vq_meta_dir, spec)
    return Method(name=cfg.vq_name, generate=VQReconstruction(vq, norm), space=norm)


def eval_inputs(cfg: EvalConfig) -> dict[str, Path]:
    """The files an evaluation's numbers depend on besides the config (fingerprinted in ``run.json``)."""
    files = {"evaluator_checkpoint": Path(cfg.evaluator_checkpoint)}
    for name, f in zip(("evaluator_mean", "evaluator_std"), meta_files(cfg.evaluator_meta_dir), strict=True):
        files[name] = f
    for f in word_vector_files(cfg.glove_dir):
        files[f"word_vectors/{f.name}"] = f
    if cfg.vq_checkpoint:
        files["vq_checkpoint"] = Path(cfg.vq_checkpoint)
        for name, f in zip(("vq_mean", "vq_std"), meta_files(cfg.vq_meta_dir), strict=True):
            files[name] = f
    files[f"{cfg.split}_split"] = DatasetPaths(cfg.dataset_root).split_file(cfg.split)
    return {name: p for name, p in files.items() if p.exists()}  # a missing one fails when loaded


EVAL_VOLATILE = ("output_dir", "resume", "overwrite", "device", "num_threads", "progress")
"""Config keys that may change between invocations of one evaluation run (left out of the resume check)."""


def open_eval_run(
    cfg: EvalConfig,
    command: str,
    seed: int,
    *,
    volatile: tuple[str, ...] = EVAL_VOLATILE,
    inputs: dict[str, Path] | None = None,
) -> RunFolder:
    """``open_run`` for an evaluation on every rank; a refusal on any rank is raised on every rank.

    Rank 0 checks and locks the folder, the other ranks read it (``open_run``); the outcomes are
    gathered before anyone raises, so no rank waits in a later collective for one that gave up.
    Without a process group this is ``open_run``. ``inputs`` defaults to ``eval_inputs(cfg)``.
    """
    run: RunFolder | None = None
    error: Exception | None = None
    try:
        run = open_run(
            cfg.output_dir, command=command, config=config_to_dict(cfg), seed=seed,
            inputs=eval_inputs(cfg) if inputs is None else inputs, volatile=volatile,
            overwrite=cfg.overwrite, resume=cfg.resume,
        )  # fmt: skip
    except Exception as err:  # re-raised below, after every rank has reported
        error = err
    outcomes = all_gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, msg) for rank, msg in enumerate(outcomes) if msg is not None]
    if failed:
        assert run is not None
        run.close()
        rank, msg = failed[0]
        raise RunFolderError(f"rank {rank} could not open {cfg.output_dir}: {msg}")
    assert run is not None
    return run
