"""The Guo et al. evaluation protocol as a library: plug in a motion generator, get the table.

A **method** is a generation callable plus the normalisation space its motions are in::

    def generate(captions: list[str], lengths: np.ndarray, batch: HarnessBatch) -> list[np.ndarray | None]:
        ...  # one (T_i, D) motion per caption, in `space` (None / empty = failed generation)

    Method(name="my model", generate=generate, space=FeatureNorm.load_meta(vq_meta_dir, "humanml3d"))

``EvaluationHarness.run(methods)`` does the rest (spec sections 1.8, 2, 6, 10):

- test items of ``EvalMotionTextDataset`` (caption draw, crop coin and start from
  ``default_rng([seed, r, i])``), shuffled ``drop_last`` batches of 32 from ``replication_batches``;
  replication ``r`` re-draws everything;
- ground-truth motions in the evaluator's space; generated motions mapped with
  ``x_eval = ((x * std_src + mean_src) - mean_eval) / std_eval`` (``EvalSpaceMap``), cut to
  ``max_motion_len`` frames and zero-padded;
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
movement step, like the published single-code substitute), counted per method, and reported in the
JSON and the Markdown table.

Processes: under ``torchrun`` each rank takes batches ``rank, rank + world, ...`` of every
replication; the per-batch embeddings are gathered on rank 0, which computes the metrics in batch
order. Generation callables get ``batch.seed`` (a function of seed, replication and batch index) so
sampling is reproducible whatever the process count.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from data.config import RunConfig
from data.datasets import EvalMotionTextDataset, eval_collate, replication_batches
from data.word_vectorizer import encode_caption
from eval.metrics import (
    activation_statistics,
    diversity,
    frechet_distance_to_reference,
    frechet_reference,
    mean_ci95,
    multimodality,
    text_motion_scores_batched,
)
from models.evaluator import EvalSpaceMap, FeatureNorm, GuoEvaluator, check_eval_space
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

    def raw_motion(self, row: int) -> np.ndarray:
        """Un-normalised ground-truth crop of ``row``: ``(lengths[row], D)`` float32."""
        return self.dataset.raw_motion(int(self.indices[row]), self.replication)

    def generator(self) -> torch.Generator:
        """A torch generator seeded with ``seed``."""
        return torch.Generator().manual_seed(self.seed)


GenerationFn = Callable[[list[str], np.ndarray, HarnessBatch], Sequence[np.ndarray | None]]
"""``(captions, lengths, batch) -> one (T_i, D) motion (or None) per caption`` in the method's space."""


@dataclass
class Method:
    """A row of the results table."""

    name: str
    generate: GenerationFn
    space: FeatureNorm
    """Normalisation of the returned motions (``FeatureNorm.identity(D)`` for raw features)."""


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


def write_report(report: EvalReport, output_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``output_dir``; returns both paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    js.write_text(json.dumps(report.to_json(), indent=2))
    md.write_text(report.markdown())
    return js, md


# ----------------------------------------------------------------------------------------------
# Distributed helpers (no-ops in one process)
# ----------------------------------------------------------------------------------------------


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _world() -> tuple[int, int]:
    if _dist_ready():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_gather(obj: Any) -> list[Any]:
    """List of every rank's ``obj`` in rank order (``[obj]`` in one process)."""
    if not _dist_ready():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _gather_dicts(mine: dict[int, Any]) -> dict[int, Any]:
    """Union of every rank's ``{work unit: result}`` dict (the ranks hold disjoint keys)."""
    gathered: dict[int, Any] = {}
    for part in _all_gather(mine):
        gathered.update(part)
    return gathered


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
        chunks = [
            (k, flat[s : s + self.text_chunk]) for k, s in enumerate(range(0, len(flat), self.text_chunk))
        ]
        rank, world = _world()
        mine = {}
        vec, max_len = self.dataset.vectorizer, self.spec.max_text_len
        for k, toks in chunks[rank::world]:
            enc = [encode_caption(vec, t, max_len) for t in toks]
            words = torch.from_numpy(np.stack([e[0] for e in enc]))
            pos = torch.from_numpy(np.stack([e[1] for e in enc]))
            lens = torch.tensor([e[2] for e in enc], dtype=torch.long)
            mine[k] = self.evaluator.embed_text(words, pos, lens).cpu().numpy()
        gathered = _gather_dicts(mine)
        cache = np.concatenate([gathered[k] for k in range(len(chunks))]).astype(np.float32)
        self._text_cache, self._caption_offsets = cache, offsets
        logger.info("embedded %d captions of %d test items once", len(flat), len(entries))
        return cache, offsets

    # -------------------------------------------------------------- motions
    def _pad(self, motions: Sequence[np.ndarray]) -> np.ndarray:
        """Zero-pad ``(T_i, D)`` motions to ``(B, max_motion_len, D)`` float32."""
        padded = np.zeros((len(motions), self.spec.max_motion_len, self.spec.feat_dim), dtype=np.float32)
        for j, m in enumerate(motions):
            padded[j, : len(m)] = m
        return padded

    def _embed_padded(self, padded: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``(B, T, D)`` padded motions -> ``(B, E)`` evaluator embeddings."""
        emb = self.evaluator.embed_motion(
            torch.from_numpy(padded), torch.as_tensor(lengths, dtype=torch.long)
        )
        return emb.cpu().numpy()

    def _harness_batch(self, r: int, k: int, idx: np.ndarray, gt: Any) -> HarnessBatch:
        """What a generation callable sees of batch ``k`` of replication ``r`` (``gt``: its ``EvalBatch``)."""
        return HarnessBatch(
            replication=r, batch_index=k, indices=np.asarray(idx), names=gt.names, captions=gt.captions,
            tokens=gt.tokens, lengths=gt.m_lengths.numpy(), seed=batch_seed(self.seed, r, k),
            dataset=self.dataset,
        )  # fmt: skip

    def _prepare_generated(
        self, method: Method, mapper: EvalSpaceMap, out: Sequence[np.ndarray | None], n: int, where: str
    ) -> tuple[list[np.ndarray], np.ndarray, int]:
        """Validate, map to evaluator space, cut to max length; substitute failures. Returns (motions, lengths, failed)."""
        if len(out) != n:
            raise ValueError(f"method {method.name!r} returned {len(out)} motions for {n} captions ({where})")
        unit, d, max_len = self.spec.unit_length, self.spec.feat_dim, self.spec.max_motion_len
        motions, lengths, failed = [], [], 0
        for j, m in enumerate(out):
            arr = None if m is None else np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m)
            ok = (
                arr is not None and arr.ndim == 2 and arr.shape[1] == d and arr.shape[0] >= unit
                and bool(np.isfinite(arr).all())
            )  # fmt: skip
            if not ok:
                failed += 1
                if failed == 1:
                    shape = None if arr is None else arr.shape
                    logger.warning("%s: failed generation for row %d (%s, shape %s); substituting %d mean-pose "
                                   "frames and counting it", method.name, j, where, shape, unit)  # fmt: skip
                motions.append(np.zeros((unit, d), np.float32))
                lengths.append(unit)
                continue
            x = mapper(arr[:max_len])
            motions.append(x)
            lengths.append(len(x))
        return motions, np.asarray(lengths, dtype=np.int64), failed

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
        rec["gt"] = self.evaluator.embed_motion(gt.motions, gt.m_lengths).cpu().numpy()
        second = eval_collate([ds.get_item(int(i), r + _SECOND_PASS_OFFSET) for i in idx])
        rec["gt2"] = self.evaluator.embed_motion(second.motions, second.m_lengths).cpu().numpy()
        hb = self._harness_batch(r, k, idx, gt)
        where = f"replication {r}, batch {k}"
        for mi, (method, mapper) in enumerate(zip(methods, mappers, strict=True)):
            out = method.generate(list(gt.captions), lengths.copy(), hb)
            motions, m_len, failed = self._prepare_generated(method, mapper, out, len(idx), where)
            padded = self._pad(motions)
            if k == 0 and failed == 0:  # warn only: an untrained generator may emit anything
                check_eval_space(padded, m_len, f"{method.name} ({where})", strict=False)
            rec[f"m{mi}"] = self._embed_padded(padded, m_len)
            rec[f"f{mi}"] = failed
        return rec

    def run(self, methods: Sequence[Method] = ()) -> EvalReport:
        """Evaluate the ground truth and every method; returns the report on every rank.

        Metrics are computed on rank 0 from the gathered embeddings; other ranks return an
        empty report (``results == []``).
        """
        methods = list(methods)
        names = [REAL_MOTION, *(m.name for m in methods)]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique and not {REAL_MOTION!r}: {names}")
        mappers = [EvalSpaceMap(m.space, self.eval_norm) for m in methods]
        text_cache, offsets = self.text_embeddings()
        rank, world = _world()
        batches_per_rep = len(self.dataset) // self.batch_size
        results = {n: MethodResult(name=n, values={k: [] for k in METRIC_KEYS}) for n in names}
        total = self.replications * len(range(rank, batches_per_rep, world))
        bar = tqdm(total=total, desc="evaluating", unit="batch", disable=not (self.progress and rank == 0))
        for r in range(self.replications):
            batches = replication_batches(len(self.dataset), batch_size=self.batch_size, seed=self.seed,
                                          replication=r)  # fmt: skip
            mine = {}
            for k in range(rank, len(batches), world):
                mine[k] = self._run_batch(r, k, batches[k], methods, mappers, text_cache, offsets)
                bar.update(1)
            gathered = _gather_dicts(mine)
            if rank != 0:
                continue
            recs = [gathered[k] for k in range(len(batches))]
            self._score_replication(r, recs, methods, results)
        bar.close()
        if self.mm_texts and methods:
            for r in range(self.replications):
                self._multimodality(r, methods, mappers, results)
        info = {
            "split": self.dataset.index.split, "dataset": self.spec.name, "replications": self.replications,
            "batch_size": self.batch_size, "samples_per_replication": batches_per_rep * self.batch_size,
            "test_items": len(self.dataset), "diversity_times": self.diversity_times, "seed": self.seed,
            "world_size": world, "evaluator_meta": self.eval_norm.source, "mm_texts": self.mm_texts,
            "mm_repeats": self.mm_repeats, "mm_times": self.mm_times,
            "normalisation": {m.name: {"source": mp.source.source, "max_abs_dmean": mp.max_abs_dmean,
                                       "max_abs_dstd": mp.max_abs_dstd} for m, mp in zip(methods, mappers, strict=True)},
        }  # fmt: skip
        return EvalReport(results=[results[n] for n in names] if rank == 0 else [], info=info)

    def _score_replication(
        self, r: int, recs: list[dict[str, Any]], methods: list[Method], results: dict[str, MethodResult]
    ) -> None:
        text = np.concatenate([x["text"] for x in recs])
        gt = np.concatenate([x["gt"] for x in recs])
        gt2 = np.concatenate([x["gt2"] for x in recs])
        ref = frechet_reference(*activation_statistics(gt))
        div_seed = self.seed + r

        def score(emb: np.ndarray, fid_against: np.ndarray) -> dict[str, float]:
            rp, mm = text_motion_scores_batched(text, emb, batch_size=self.batch_size, top_k=3)
            fid = frechet_distance_to_reference(ref, *activation_statistics(fid_against))
            return {"top1": float(rp[0]), "top2": float(rp[1]), "top3": float(rp[2]), "fid": fid,
                    "mm_dist": mm, "diversity": diversity(emb, times=self.diversity_times, seed=div_seed)}  # fmt: skip

        rows = {REAL_MOTION: score(gt, gt2)}
        for mi, m in enumerate(methods):
            emb = np.concatenate([x[f"m{mi}"] for x in recs])
            rows[m.name] = score(emb, emb)
            results[m.name].failed += sum(x[f"f{mi}"] for x in recs)
            results[m.name].generated += len(emb)
        for name, vals in rows.items():
            for key, v in vals.items():
                results[name].values[key].append(v)
        logger.info("replication %d: %s", r, "; ".join(
            f"{n}: top1 {v['top1']:.3f} fid {v['fid']:.3f} mm {v['mm_dist']:.3f}" for n, v in rows.items()))  # fmt: skip

    def _multimodality(
        self, r: int, methods: list[Method], mappers: list[EvalSpaceMap], results: dict[str, MethodResult]
    ) -> None:
        """``mm_repeats`` generations of ``mm_texts`` texts -> (T, R, E) -> ``multimodality`` per method.

        Work units (chunk of up to ``batch_size`` texts, repeat) are shared round-robin by the ranks;
        each unit has its own rank-independent ``batch.seed``. Failures count like in the main pass.
        """
        ds, bs = self.dataset, self.batch_size
        items = np.random.default_rng([self.seed, r, _MM_TAG]).choice(len(ds), self.mm_texts, replace=False)
        chunks = [items[s : s + bs] for s in range(0, len(items), bs)]
        units = [(c, j) for c in range(len(chunks)) for j in range(self.mm_repeats)]
        rank, world = _world()
        mine: dict[int, dict[str, Any]] = {}
        for u in tqdm(range(rank, len(units), world), desc=f"multimodality {r}", leave=False,
                      disable=not (self.progress and rank == 0)):  # fmt: skip
            idx = chunks[units[u][0]]
            gt = eval_collate([ds.get_item(int(i), r) for i in idx])
            hb = self._harness_batch(r, _MM_BATCH_OFFSET + u, idx, gt)
            lengths = hb.lengths
            rec: dict[str, Any] = {}
            for mi, (method, mapper) in enumerate(zip(methods, mappers, strict=True)):
                out = method.generate(list(gt.captions), lengths.copy(), hb)
                motions, m_len, failed = self._prepare_generated(
                    method, mapper, out, len(idx), f"multimodality, replication {r}"
                )
                rec[f"m{mi}"], rec[f"f{mi}"] = self._embed_padded(self._pad(motions), m_len), failed
            mine[u] = rec
        gathered = _gather_dicts(mine)
        if rank != 0:
            return
        for mi, m in enumerate(methods):
            emb = np.zeros((len(items), self.mm_repeats, gathered[0][f"m{mi}"].shape[1]), np.float32)
            for u, (c, j) in enumerate(units):
                emb[c * bs : c * bs + len(chunks[c]), j] = gathered[u][f"m{mi}"]
                results[m.name].failed += gathered[u][f"f{mi}"]
                results[m.name].generated += len(chunks[c])
            results[m.name].values["mmodality"].append(
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
    """Folder for ``eval_<split>.{json,md}``, ``config.yaml`` and ``run_info.json``."""
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
    """Load the evaluator, its meta, the word vectors and the split into an ``EvaluationHarness``."""
    from data.datasets import build_clip_index
    from data.word_vectorizer import WordVectorizer
    from models.evaluator import load_guo_evaluator

    evaluator = load_guo_evaluator(cfg.evaluator_checkpoint, cfg.dataset, device=device)
    eval_norm = FeatureNorm.load_meta(cfg.evaluator_meta_dir, cfg.dataset)
    index = build_clip_index(
        cfg.dataset_root, cfg.split, cfg.dataset, on_error=cfg.on_error,
        max_skip_fraction=cfg.max_skip_fraction, progress=cfg.progress,
    )  # fmt: skip
    ds = EvalMotionTextDataset(
        index, WordVectorizer(cfg.glove_dir), eval_norm.mean, eval_norm.std, seed=cfg.seed
    )
    return EvaluationHarness(
        evaluator, ds, eval_norm, batch_size=cfg.batch_size, replications=cfg.replications,
        diversity_times=cfg.diversity_times, mm_texts=cfg.mm_texts, mm_repeats=cfg.mm_repeats,
        mm_times=cfg.mm_times, progress=cfg.progress,
    )  # fmt: skip


def vq_method_from_config(cfg: EvalConfig, device: torch.device | str = "cpu") -> Method | None:
    """The VQ-VAE reconstruction row, or ``None`` when ``vq_checkpoint`` is empty."""
    if not cfg.vq_checkpoint:
        return None
    from data.specs import get_dataset_spec

    spec = get_dataset_spec(cfg.dataset)
    vq = MotionVQVAE.from_checkpoint(cfg.vq_checkpoint, nfeats=spec.feat_dim, map_location=device)
    norm = FeatureNorm.load_meta(cfg.vq_meta_dir, spec)
    return Method(name=cfg.vq_name, generate=VQReconstruction(vq, norm), space=norm)
