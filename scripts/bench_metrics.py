"""Benchmark: one evaluation's metrics through the public ``eval.metrics`` functions vs the published way.

One HumanML3D-sized evaluation: 4,384 test pairs of 512-d embeddings, 20 replications, each with a
fresh shuffle, fresh text embeddings (new caption draw) and fresh generated-motion embeddings. The
embeddings are synthetic (seeded low-rank + diagonal covariance, texts correlated with their
motions, float64). The real-motion embeddings are fixed here, but both sides recompute their
statistics every replication, as the harness must (its ground-truth crops are redrawn).

Per replication both sides compute R-precision top-1..3 and matching score (batches of 32), FID of
generated vs real, and diversity (300 pairs):

- published: a Python loop over the batches (the reference's expanded distance matrix, in its
  summation order, + ``argsort`` + its cumulative top-k columns per batch); ``np.mean``/``np.cov``
  of generated and real embeddings, then ``scipy.linalg.sqrtm(sigma1 @ sigma2, disp=False)``
  (with ``disp=False`` scipy also computes its error estimate, one more D x D product) with the
  eps retry and the real-part rule;
- public: exactly the documented API, nothing cached across replications:
  :func:`eval.metrics.r_precision` and :func:`eval.metrics.matching_score` (two separate calls,
  each one batched pass), :func:`eval.metrics.activation_statistics` of both sets (one ``syrk``
  each), :func:`eval.metrics.frechet_distance` (Cholesky + ``dsygst`` + ``dsyevr``) and
  :func:`eval.metrics.diversity`.

Prints, per part, the wall and CPU seconds of both sides (total and median per replication), the
speed-up published / public on both clocks (target >= 2x), and the max relative difference of every
metric (must be <= 1e-6); exits 1 if a difference is larger. With one BLAS thread the process CPU
time is the work done; on a shared machine the wall time also counts the time other processes
held the core. BLAS threads are pinned through ``OMP/OPENBLAS/MKL_NUM_THREADS`` before numpy loads
(threadpoolctl is not installed); use ``threads=1`` on a shared 2-core machine: with 2 threads
OpenBLAS's waiting threads make both sides several times slower and the timings meaningless.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_metrics          # 1 BLAS thread, 20 replications
    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_metrics reps=5
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass

from data.config import parse_cli

PARTS = ("r_precision+matching", "fid", "diversity")
"""Timed parts of one replication."""


@dataclass
class BenchConfig:
    """Size of the simulated evaluation and the BLAS thread pinning."""

    n: int = 4384
    """Test pairs (HumanML3D test split)."""
    dim: int = 512
    """Embedding size of the Guo evaluator."""
    reps: int = 20
    """Replications."""
    batch_size: int = 32
    """R-precision candidates per text."""
    top_k: int = 3
    """Largest k of R-precision."""
    diversity_times: int = 300
    """Pairs for diversity."""
    latent_rank: int = 16
    """Rank of the shared low-rank part of the synthetic covariance."""
    threads: int = 1
    """BLAS threads for both sides (set before numpy is imported)."""
    seed: int = 0
    """Seed of the synthetic embeddings; replication r samples with seed + r."""


def _pin_threads(threads: int) -> str:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return f"OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS={threads} (env, set before numpy import)"


def main() -> int:
    cfg = parse_cli(BenchConfig, description=__doc__.splitlines()[0])
    pinning = _pin_threads(cfg.threads)

    import numpy as np  # after the thread pinning, which BLAS reads at load time
    import scipy.linalg

    from eval import metrics

    blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
    print(f"threads: {pinning}")
    print(
        f"BLAS: {blas.get('name')} {blas.get('version')}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}, cores {os.cpu_count()}")
    print(f"config: {cfg}")

    # ------------------------------------------------------------------ synthetic cached embeddings
    rng = np.random.default_rng(cfg.seed)
    n, d = cfg.n, cfg.dim
    # low-rank (orthonormal basis, decaying scales) + diagonal covariance; texts scatter within the
    # same subspace. Calibrated to evaluator-like values: R@1 ~0.6, MM-Dist ~7, diversity ~9,
    # FID ~0.35 (small, so that the trace cancellation in FID is exercised).
    basis = np.linalg.qr(rng.normal(size=(d, cfg.latent_rank)))[0].T  # (r, D)
    scales = 3.0 * np.exp(-np.arange(cfg.latent_rank) / 8.0)
    diag_std = 0.04 * rng.uniform(0.5, 1.5, size=d)
    offset = 0.3 * rng.normal(size=d)
    real = (
        (rng.normal(size=(n, cfg.latent_rank)) * scales) @ basis + rng.normal(size=(n, d)) * diag_std + offset
    )

    def replication_inputs(rep: int) -> tuple[np.ndarray, np.ndarray]:
        """Shuffled (text, generated) embeddings of one replication; pairs stay aligned."""
        r = np.random.default_rng(cfg.seed + 1000 + rep)
        latent_noise = r.normal(size=(n, cfg.latent_rank)) * scales
        gen = 0.97 * real + 0.15 * latent_noise @ basis + 0.05 * r.normal(size=(n, d))
        text = (
            gen + 1.17 * (r.normal(size=(n, cfg.latent_rank)) * scales) @ basis + 0.04 * r.normal(size=(n, d))
        )
        perm = r.permutation(n)
        return text[perm], gen[perm]

    # Each timing is (wall seconds, CPU seconds of this process). With one BLAS thread the CPU time
    # is the work done; on a shared machine the wall time also counts the time other processes held
    # the core, which inflates both sides but not by the same factor.
    Clock = tuple[float, float]
    Timings = dict[str, list[np.ndarray]]

    def now() -> Clock:
        return time.perf_counter(), time.process_time()

    def record(times: Timings, marks: list[Clock]) -> None:
        for part, (a, b) in zip(PARTS, zip(marks[:-1], marks[1:], strict=True), strict=True):
            times.setdefault(part, []).append(np.subtract(b, a))

    # ------------------------------------------------------------------ the published way
    def published_frechet_distance(
        mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
    ) -> float:
        """The published FID as the Guo/T2M-GPT code calls it: ``sqrtm(..., disp=False)``, retry, real part.

        ``disp=False`` also makes scipy compute its error estimate ``||X X - A||_F^2 / ||A||_F``
        (one more D x D product); scipy >= 1.16 warns that the argument is deprecated.
        """
        diff = mu1 - mu2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
            covmean = covmean.real
        return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))

    def published_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The reference's expanded form, in its order: ``sqrt(-2 a.b^T + |a|^2 + |b|^2)``, no clamp."""
        return np.sqrt(
            -2 * np.dot(a, b.T) + np.sum(np.square(a), axis=1, keepdims=True) + np.sum(np.square(b), axis=1)
        )

    def published_top_k(order: np.ndarray, top_k: int) -> np.ndarray:
        """``(B, top_k)`` bools: row i's own column i is among its first k sorted columns, k = 1..top_k."""
        own = order == np.arange(order.shape[0])[:, None].repeat(order.shape[0], axis=1)
        correct, columns = np.zeros(order.shape[0], dtype=bool), []
        for i in range(top_k):
            correct = correct | own[:, i]
            columns.append(correct[:, None])
        return np.concatenate(columns, axis=1)

    def published(text: np.ndarray, gen: np.ndarray, seed: int, times: Timings) -> dict:
        marks = [now()]
        bs, k = cfg.batch_size, cfg.top_k
        nb = len(text) // bs
        hits = np.zeros(k)
        trace = 0.0
        for b in range(nb):  # per batch of 32, as the published loader loop does
            dist = published_distance_matrix(text[b * bs : (b + 1) * bs], gen[b * bs : (b + 1) * bs])
            trace += dist.trace()
            hits += published_top_k(np.argsort(dist, axis=1), k).sum(axis=0)
        marks.append(now())
        mu_g, cov_g = np.mean(gen, axis=0), np.cov(gen, rowvar=False)
        mu_r, cov_r = np.mean(real, axis=0), np.cov(real, rowvar=False)
        fid = published_frechet_distance(mu_r, cov_r, mu_g, cov_g)
        marks.append(now())
        r = np.random.default_rng(seed)
        first = r.choice(len(gen), cfg.diversity_times, replace=False)
        second = r.choice(len(gen), cfg.diversity_times, replace=False)
        div = float(np.linalg.norm(gen[first] - gen[second], axis=1).mean())
        marks.append(now())
        record(times, marks)
        return {"r_precision": hits / (nb * bs), "matching": trace / (nb * bs), "fid": fid, "diversity": div}

    # ------------------------------------------------------------------ the public functions
    def public(text: np.ndarray, gen: np.ndarray, seed: int, times: Timings) -> dict:
        marks = [now()]
        r_prec = metrics.r_precision(text, gen, top_k=cfg.top_k, batch_size=cfg.batch_size)
        mm = metrics.matching_score(text, gen, batch_size=cfg.batch_size)
        marks.append(now())
        fid = metrics.frechet_distance(
            *metrics.activation_statistics(real), *metrics.activation_statistics(gen)
        )
        marks.append(now())
        div = metrics.diversity(gen, times=cfg.diversity_times, seed=seed)
        marks.append(now())
        record(times, marks)
        return {"r_precision": r_prec, "matching": mm, "fid": fid, "diversity": div}

    sides = {"published": published, "public": public}
    times: dict[str, Timings] = {name: {} for name in sides}
    results: dict[str, list] = {name: [] for name in sides}
    for rep in range(cfg.reps):
        text, gen = replication_inputs(rep)
        # alternate the order so that cache warm-up favours neither side
        for name in ("published", "public") if rep % 2 == 0 else ("public", "published"):
            results[name].append(sides[name](text, gen, cfg.seed + rep, times[name]))

    # ------------------------------------------------------------------ report
    totals = {name: sum(np.sum(v, axis=0) for v in t.values()) for name, t in times.items()}  # (wall, cpu)
    per_rep = {name: np.sum([t[p] for p in PARTS], axis=0) for name, t in times.items()}  # (reps, 2)
    print(f"\n{cfg.reps} replications x {n} pairs, D={d}; seconds in total (ms per replication, median)")
    print(
        f"  {'':22s} {'published wall':>22s} {'public wall':>20s} {'published CPU':>22s} {'public CPU':>20s}"
    )
    for part in PARTS:
        cells = []
        for clock in (0, 1):
            for name in sides:
                v = np.asarray(times[name][part])[:, clock]
                cells.append(f"{v.sum():8.3f} ({np.median(v) * 1e3:7.1f})")
        print(f"  {part:22s} {cells[0]:>22s} {cells[1]:>20s} {cells[2]:>22s} {cells[3]:>20s}")
    for clock, label in ((0, "wall"), (1, "CPU ")):
        pub, our = totals["published"][clock], totals["public"][clock]
        ratio = pub / our
        med = np.median(per_rep["published"][:, clock]) / np.median(per_rep["public"][:, clock])
        print(
            f"{label}: published {pub:7.3f} s, public eval.metrics {our:7.3f} s: speed-up {ratio:.2f}x "
            f"(median replication {med:.2f}x; target >= 2x: {'met' if ratio >= 2 else 'NOT met'})"
        )
        print(f"RATIO metrics_vs_published_{label.strip().lower()} {ratio:.3f}")

    worst = 0.0
    print("\nmetric          mean ± CI95 (public)        max rel diff vs published")
    for key in ("r_precision", "matching", "fid", "diversity"):
        pub = np.array([r[key] for r in results["published"]], dtype=float)
        our = np.array([r[key] for r in results["public"]], dtype=float)
        rel = float(np.max(np.abs(our - pub) / np.maximum(np.abs(pub), np.finfo(float).tiny)))
        worst = max(worst, rel)
        mean, ci = metrics.mean_ci95(our)
        shown = " ".join(
            f"{m:.4f}±{c:.4f}" for m, c in zip(np.atleast_1d(mean), np.atleast_1d(ci), strict=True)
        )
        print(f"{key:15s} {shown:27s} {rel:.2e}")
    ok = worst <= 1e-6
    print(
        f"\nmax relative difference over all metrics: {worst:.2e} ({'<= 1e-6 OK' if ok else '> 1e-6 FAIL'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
