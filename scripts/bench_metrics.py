"""Benchmark: the metrics of one evaluation, vectorised (eval/metrics.py) vs the published loop.

One HumanML3D-sized evaluation: 4,384 test pairs of cached 512-d embeddings, 20 replications,
each with a fresh shuffle, fresh text embeddings (new caption draw) and fresh generated-motion
embeddings; the real-motion embeddings (FID reference) are fixed. The embeddings are synthetic
(seeded low-rank + diagonal covariance, texts correlated with their motions, float64).

Per replication both methods compute R-precision top-1..3 and matching score (batches of 32),
FID of generated vs real, and diversity (300 pairs):

- published: a Python loop over the batches (distance matrix + ``argsort`` per batch); per
  replication ``np.cov`` of generated AND real embeddings and ``scipy.linalg.sqrtm``;
- ours: :func:`eval.metrics.text_motion_scores_batched` (one batched pass), the real statistics
  and their factor once (:func:`eval.metrics.frechet_reference`, timed), then
  :func:`eval.metrics.activation_statistics` + one ``eigvalsh`` per replication.

Prints both timings, the speed-up (target >= 5x) and the max relative difference of every metric
(must be <= 1e-6); exits 1 if a difference is larger. BLAS threads are pinned through
``OMP/OPENBLAS/MKL_NUM_THREADS`` before numpy loads (threadpoolctl is not installed).

Run from the repository root::

    .venv/bin/python -m scripts.bench_metrics                 # 1 BLAS thread, 20 replications
    .venv/bin/python -m scripts.bench_metrics threads=2 reps=5
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from data.config import parse_cli


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
    """BLAS threads for both methods (set before numpy is imported)."""
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

    Timings = dict[str, float]

    # ------------------------------------------------------------------ the published way
    def published(text: np.ndarray, gen: np.ndarray, seed: int, times: Timings) -> dict:
        t0 = time.perf_counter()
        bs, k = cfg.batch_size, cfg.top_k
        nb = len(text) // bs
        hits = np.zeros(k)
        trace = 0.0
        for b in range(nb):
            t, m = text[b * bs : (b + 1) * bs], gen[b * bs : (b + 1) * bs]
            d2 = np.sum(t**2, axis=1, keepdims=True) + np.sum(m**2, axis=1)[None, :] - 2.0 * (t @ m.T)
            dist = np.sqrt(np.maximum(d2, 0.0))
            order = np.argsort(dist, axis=1)
            own = order == np.arange(bs)[:, None]
            correct = np.zeros(bs, dtype=bool)
            for i in range(k):  # cumulative top-k, as the reference's calculate_top_k
                correct = correct | own[:, i]
                hits[i] += correct.sum()
            trace += dist.trace()
        t1 = time.perf_counter()
        mu_g, cov_g = np.mean(gen, axis=0), np.cov(gen, rowvar=False)
        mu_r, cov_r = np.mean(real, axis=0), np.cov(real, rowvar=False)
        fid = metrics.frechet_distance(mu_r, cov_r, mu_g, cov_g)  # scipy.linalg.sqrtm with the retry
        t2 = time.perf_counter()
        r = np.random.default_rng(seed)
        first = r.choice(len(gen), cfg.diversity_times, replace=False)
        second = r.choice(len(gen), cfg.diversity_times, replace=False)
        div = float(np.linalg.norm(gen[first] - gen[second], axis=1).mean())
        t3 = time.perf_counter()
        for part, dt in (("r_precision+matching", t1 - t0), ("fid", t2 - t1), ("diversity", t3 - t2)):
            times[part] = times.get(part, 0.0) + dt
        return {"r_precision": hits / (nb * bs), "matching": trace / (nb * bs), "fid": fid, "diversity": div}

    # ------------------------------------------------------------------ ours
    def ours(text: np.ndarray, gen: np.ndarray, seed: int, times: Timings) -> dict:
        t0 = time.perf_counter()
        r_prec, mm = metrics.text_motion_scores_batched(text, gen, batch_size=cfg.batch_size, top_k=cfg.top_k)
        t1 = time.perf_counter()
        fid = metrics.frechet_distance_to_reference(ref, *metrics.activation_statistics(gen))
        t2 = time.perf_counter()
        div = metrics.diversity(gen, times=cfg.diversity_times, seed=seed)
        t3 = time.perf_counter()
        for part, dt in (("r_precision+matching", t1 - t0), ("fid", t2 - t1), ("diversity", t3 - t2)):
            times[part] = times.get(part, 0.0) + dt
        return {"r_precision": r_prec, "matching": mm, "fid": fid, "diversity": div}

    times: dict[str, Timings] = {"published": {}, "ours": {}}
    t0 = time.perf_counter()
    ref = metrics.frechet_reference(*metrics.activation_statistics(real))
    times["ours"]["fid reference (once)"] = time.perf_counter() - t0
    results: dict[str, list] = {"published": [], "ours": []}
    for rep in range(cfg.reps):
        text, gen = replication_inputs(rep)
        # alternate the order so that cache warm-up favours neither method
        for name in ("published", "ours") if rep % 2 == 0 else ("ours", "published"):
            method = published if name == "published" else ours
            results[name].append(method(text, gen, cfg.seed + rep, times[name]))

    # ------------------------------------------------------------------ report
    t_pub, t_ours = sum(times["published"].values()), sum(times["ours"].values())
    print(f"\n{cfg.reps} replications x {n} pairs, D={d}; seconds in total (ms per replication)")
    for part in ("r_precision+matching", "fid", "diversity", "fid reference (once)"):
        pub, our = times["published"].get(part, 0.0), times["ours"].get(part, 0.0)
        print(
            f"  {part:22s} published {pub:7.3f} ({pub / cfg.reps * 1e3:6.1f})   ours {our:7.3f} ({our / cfg.reps * 1e3:6.1f})"
        )
    print(f"published way: {t_pub:8.3f} s")
    print(f"eval.metrics : {t_ours:8.3f} s  (reference statistics included)")
    speedup = t_pub / t_ours
    print(f"speed-up     : {speedup:.2f}x  (target >= 5x: {'met' if speedup >= 5 else 'NOT met'})")

    worst = 0.0
    print("\nmetric          mean ± CI95 (ours)          max rel diff vs published")
    for key in ("r_precision", "matching", "fid", "diversity"):
        pub = np.array([r[key] for r in results["published"]], dtype=float)
        our = np.array([r[key] for r in results["ours"]], dtype=float)
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
