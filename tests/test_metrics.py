"""Evaluation metrics against hand-computed values, reference loops and scipy (spec section 6 / 9).

The published computations (per-batch ``argsort`` loop, ``scipy.linalg.sqrtm`` FID) live here as
``_argsort_reference`` / ``_sqrtm_reference``: references for the tests, not a second public path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from eval import metrics
from eval.metrics import (
    activation_statistics,
    diversity,
    euclidean_distance_matrix,
    frechet_distance,
    frechet_distance_to_reference,
    frechet_reference,
    matching_score,
    mean_ci95,
    multimodality,
    r_precision,
    text_motion_scores_batched,
)

# 3x2 toy pairs. Distances (rows = texts):
#   t0=(0,0): m0 1,  m1 sqrt5, m2 sqrt10 -> own rank 0
#   t1=(2,0): m0 sqrt5, m1 1,  m2 sqrt10 -> own rank 0
#   t2=(0,2): m0 1,  m1 sqrt5, m2 sqrt2  -> own rank 1 (m0 is nearer)
TEXT = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
MOTION = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
S5, S10, S2 = math.sqrt(5), math.sqrt(10), math.sqrt(2)
DIST = np.array([[1.0, S5, S10], [S5, 1.0, S10], [1.0, S5, S2]])


def _correlated_pairs(n: int, d: int, seed: int, noise: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Text/motion embeddings whose pairs are close but not trivially matched."""
    rng = np.random.default_rng(seed)
    motion = rng.normal(size=(n, d))
    text = motion + noise * rng.normal(size=(n, d))
    return text, motion


def _argsort_reference(
    text: np.ndarray, motion: np.ndarray, batch: int, top_k: int
) -> tuple[np.ndarray, float]:
    """The published loop: per batch distance matrix, argsort each row, find the own column."""
    nb = len(text) // batch
    hits = np.zeros(top_k)
    trace = 0.0
    for b in range(nb):
        sl = slice(b * batch, (b + 1) * batch)
        dist = euclidean_distance_matrix(text[sl], motion[sl])
        order = np.argsort(dist, axis=1)
        own = order == np.arange(batch)[:, None]  # (B, B) True where the own motion sits
        hits += np.cumsum(own[:, :top_k].sum(axis=0))
        trace += np.trace(dist)
    return hits / (nb * batch), trace / (nb * batch)


def _sqrtm_reference(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """The published FID: ``sqrtm(sigma1 sigma2)``, retried with ``eps * I`` if not finite, real part."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# --------------------------------------------------------------------------- toy values (spec section 9)


def test_distance_matrix_toy():
    np.testing.assert_allclose(euclidean_distance_matrix(TEXT, MOTION), DIST, rtol=1e-12)


def test_distance_matrix_is_bit_identical_to_reference_order():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(32, 64)), rng.normal(size=(32, 64))
    # the published expanded form, summed in its order: (-2 a.b + |a|^2) + |b|^2
    ref = np.sqrt(-2 * np.dot(a, b.T) + np.vecdot(a, a)[:, None] + np.vecdot(b, b))
    np.testing.assert_array_equal(euclidean_distance_matrix(a, b), ref)
    _, mm = text_motion_scores_batched(a, b, batch_size=32, top_k=1)
    assert mm == np.trace(ref) / 32


def test_distance_matrix_identical_rows_is_zero_not_nan():
    a = np.array([[1e8, 3.0], [0.1, 0.2]])
    d = euclidean_distance_matrix(a, a)
    assert np.isfinite(d).all()
    np.testing.assert_allclose(np.diagonal(d), 0.0, atol=1e-3)


def test_r_precision_toy():
    np.testing.assert_allclose(r_precision(TEXT, MOTION, top_k=3, batch_size=None), [2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(r_precision(TEXT, MOTION, top_k=1, batch_size=3), [2 / 3])
    with pytest.raises(ValueError, match="batch_size=32"):  # the protocol's batches need 32 rows
        r_precision(TEXT, MOTION, batch_size=32)
    # the default is one batch of all rows (api contract)
    np.testing.assert_array_equal(r_precision(TEXT, MOTION), r_precision(TEXT, MOTION, batch_size=None))


def test_matching_score_toy_is_trace_over_n():
    expected = (1.0 + 1.0 + S2) / 3
    assert matching_score(TEXT, MOTION, batch_size=None) == pytest.approx(expected, rel=1e-12)
    assert matching_score(TEXT, MOTION, batch_size=3) == pytest.approx(np.trace(DIST) / 3, rel=1e-12)
    # batches of 2: the third pair falls in the dropped partial batch
    assert matching_score(TEXT, MOTION, batch_size=2) == pytest.approx(1.0, rel=1e-12)


def test_batched_on_toy_equals_single_batch():
    r, mm = text_motion_scores_batched(TEXT, MOTION, batch_size=3, top_k=3)
    np.testing.assert_allclose(r, [2 / 3, 1.0, 1.0])
    assert mm == pytest.approx((2.0 + S2) / 3, rel=1e-12)


def test_fid_identical_toy_sets_is_zero():
    mu, sigma = activation_statistics(MOTION)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert abs(frechet_distance_to_reference(frechet_reference(mu, sigma), mu, sigma)) < 1e-6


# --------------------------------------------------------------------------- R-precision protocol


def test_ties_follow_stable_argsort():
    # motions 0 and 1 are identical, so text rows see exact ties between columns 0 and 1
    text = np.array([[0.0, 0.0], [0.0, 0.5], [5.0, 5.0]])
    motion = np.array([[1.0, 0.0], [1.0, 0.0], [5.0, 4.0]])
    dist = euclidean_distance_matrix(text, motion)
    stable_rank = np.argsort(np.argsort(dist, axis=1, kind="stable"), axis=1)[np.arange(3), np.arange(3)]
    np.testing.assert_array_equal(metrics._own_rank(dist), stable_rank)
    np.testing.assert_array_equal(stable_rank, [0, 1, 0])  # row 1: tied column 0 comes first
    np.testing.assert_allclose(r_precision(text, motion, top_k=2, batch_size=None), [2 / 3, 1.0])


def test_batched_equals_argsort_loop_and_drops_partial_batch():
    text, motion = _correlated_pairs(n=100, d=8, seed=3)  # 3 batches of 32, 4 rows dropped
    r, mm = text_motion_scores_batched(text, motion, batch_size=32, top_k=3)
    ref_r, ref_mm = _argsort_reference(text, motion, batch=32, top_k=3)
    np.testing.assert_array_equal(r, ref_r)
    assert mm == pytest.approx(ref_mm, rel=1e-12)
    assert 0.0 < r[0] < r[2] < 1.0  # a non-trivial case: some misses, some hits
    # the dropped rows do not matter
    r96, mm96 = text_motion_scores_batched(text[:96], motion[:96])
    np.testing.assert_array_equal(r, r96)
    assert mm == mm96


def test_batched_equals_mean_over_single_batches():
    text, motion = _correlated_pairs(n=64, d=5, seed=4)
    per_batch = [r_precision(text[i : i + 32], motion[i : i + 32], batch_size=None) for i in (0, 32)]
    np.testing.assert_allclose(
        r_precision(text, motion, batch_size=32), np.mean(per_batch, axis=0), rtol=1e-12
    )
    mm = np.mean([matching_score(text[i : i + 32], motion[i : i + 32], batch_size=None) for i in (0, 32)])
    assert matching_score(text, motion, batch_size=32) == pytest.approx(mm, rel=1e-12)
    # the direct form ||t_i - m_i|| agrees with the expanded one to rounding
    assert matching_score(text, motion) == pytest.approx(
        np.linalg.norm(text - motion, axis=1).mean(), rel=1e-12
    )
    r, mm_fused = text_motion_scores_batched(text, motion)
    np.testing.assert_array_equal(r, r_precision(text, motion, batch_size=32))
    assert mm_fused == matching_score(text, motion, batch_size=32)


def test_r_precision_depends_on_batch_size():
    text, motion = _correlated_pairs(n=128, d=8, seed=5)
    # more distractors per text can only lower the top-1 rate on the same data
    assert r_precision(text, motion, batch_size=128)[0] <= r_precision(text, motion, batch_size=32)[0]


# --------------------------------------------------------------------------- FID


def test_activation_statistics_match_np_cov():
    x = np.random.default_rng(0).normal(size=(50, 6))
    mu, sigma = activation_statistics(x)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(sigma, sigma.T)


@pytest.mark.parametrize("offset", [0.0, 3.0, 1e4])
def test_activation_statistics_both_forms_match_np_cov(offset):
    # offsets 0 and 3 (kappa <= 100) take the uncentred Gram form, 1e4 (kappa ~1e8) the centred one
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)) * np.linspace(0.5, 2.0, 8) + offset * rng.normal(size=8)
    mu, sigma = activation_statistics(x)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-13)
    ref = np.cov(x, rowvar=False)
    assert np.max(np.abs(sigma - ref)) <= 1e-12 * np.max(np.abs(ref))
    np.testing.assert_array_equal(sigma, sigma.T)


def test_activation_statistics_form_choice():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 5))
    kappa_small = metrics._max_kappa(x.mean(axis=0), x.var(axis=0))
    assert kappa_small <= metrics._MAX_KAPPA
    shifted = x + 1e6  # kappa ~ 1e12: the Gram form loses ~12 digits, so the centred one is used
    assert metrics._max_kappa(shifted.mean(axis=0), shifted.var(axis=0)) > metrics._MAX_KAPPA
    n, mu = len(shifted), shifted.mean(axis=0)
    naive = (shifted.T @ shifted - n * np.outer(mu, mu)) / (n - 1)
    ref = np.cov(x, rowvar=False)
    assert np.max(np.abs(naive - ref)) > 1e-6  # what the guard prevents
    _, sigma = activation_statistics(shifted)
    np.testing.assert_allclose(sigma, ref, rtol=1e-8, atol=1e-9)
    assert metrics._max_kappa(np.ones(3), np.array([1.0, 0.0, 1.0])) == float("inf")  # constant column
    const = np.c_[x, np.full(400, 2.0)]
    _, sigma_c = activation_statistics(const)
    np.testing.assert_array_equal(sigma_c[-1], 0.0)


@pytest.mark.parametrize("fid_fn", ["public", "split", "sqrtm reference"])
def test_fid_of_diagonal_gaussians_matches_closed_form(fid_fn):
    # FID = ||mu1-mu2||^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2 = 1 + 1 + 1 + 0.25
    mu1, s1 = np.array([0.0, 1.0, 2.0]), np.diag([1.0, 4.0, 0.25])
    mu2, s2 = np.array([1.0, 1.0, 2.0]), np.diag([4.0, 9.0, 1.0])
    fid = {
        "public": frechet_distance,
        "split": lambda m1, c1, m2, c2: frechet_distance_to_reference(frechet_reference(m1, c1), m2, c2),
        "sqrtm reference": _sqrtm_reference,
    }[fid_fn](mu1, s1, mu2, s2)
    assert fid == pytest.approx(3.25, rel=1e-10)


def test_fid_equals_scipy_sqrtm_on_realistic_covariances():
    rng = np.random.default_rng(1)
    n, d, r = 400, 48, 6  # low rank + diagonal, like evaluator embeddings
    w = rng.normal(size=(r, d))
    real = rng.normal(size=(n, r)) @ w + 0.3 * rng.normal(size=(n, d))
    real_stats = activation_statistics(real)
    ref = frechet_reference(*real_stats)
    for noise in (0.02, 0.3, 1.5):
        gen = real + noise * rng.normal(size=(n, d)) + 0.05
        stats = activation_statistics(gen)
        published = _sqrtm_reference(*real_stats, *stats)
        fid = frechet_distance(*real_stats, *stats)
        assert fid == pytest.approx(published, rel=1e-9)
        assert frechet_distance_to_reference(ref, *stats) == fid  # the same computation, split in two


def test_fid_of_singular_covariances_is_exact():
    # 1-d Gaussians embedded in 2-d: N(0, diag(4, 0)) vs N(0, diag(1, 0)) -> (2 - 1)^2 = 1, and
    # orthogonal supports diag(1, 0) vs diag(0, 1) -> 1 + 1 - 2 * 0 = 2 (sigma1 sigma2 = 0)
    z = np.zeros(2)
    assert frechet_distance(z, np.diag([4.0, 0.0]), z, np.diag([1.0, 0.0])) == pytest.approx(1.0, abs=1e-12)
    assert frechet_distance(z, np.diag([1.0, 0.0]), z, np.diag([0.0, 1.0])) == pytest.approx(2.0, abs=1e-12)


def test_fast_fid_handles_singular_reference():
    # fewer samples than dimensions: rank-deficient covariances, finite non-negative result
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 12)), rng.normal(size=(7, 12))
    fid = frechet_distance_to_reference(
        frechet_reference(*activation_statistics(a)), *activation_statistics(b)
    )
    assert np.isfinite(fid) and fid > 0
    mu_a, s_a = activation_statistics(a)
    assert frechet_distance_to_reference(frechet_reference(mu_a, s_a), mu_a, s_a) == pytest.approx(
        0.0, abs=1e-6
    )


def test_cholesky_and_eigen_factors_give_the_same_fid():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) + 0.1
    gen = real + 0.4 * rng.normal(size=(300, 16))
    mu_r, s_r = activation_statistics(real)
    chol_ref = frechet_reference(mu_r, s_r)
    assert chol_ref.triangular  # full-rank covariance: Cholesky factor
    np.testing.assert_allclose(chol_ref.factor @ chol_ref.factor.T, s_r, rtol=1e-12, atol=1e-12)
    w, v = np.linalg.eigh(s_r)
    eig_ref = metrics.FrechetReference(mu=mu_r, sigma=s_r, factor=v * np.sqrt(w), trace=float(np.trace(s_r)))
    stats = activation_statistics(gen)
    fast_chol = frechet_distance_to_reference(chol_ref, *stats)
    assert fast_chol == pytest.approx(frechet_distance_to_reference(eig_ref, *stats), rel=1e-10)
    assert fast_chol == pytest.approx(_sqrtm_reference(mu_r, s_r, *stats), rel=1e-9)
    # a singular reference (rank 4 in 12 dims) falls back to the clipped eigen-factor
    assert not frechet_reference(*activation_statistics(rng.normal(size=(5, 12)))).triangular


def test_distance_to_reference_leaves_inputs_untouched():
    rng = np.random.default_rng(6)
    ref = frechet_reference(*activation_statistics(rng.normal(size=(60, 6))))
    mu, sigma = activation_statistics(rng.normal(size=(60, 6)) + 0.2)
    before = (ref.factor.copy(), sigma.copy())
    frechet_distance_to_reference(ref, mu, sigma)
    np.testing.assert_array_equal(ref.factor, before[0])
    np.testing.assert_array_equal(sigma, before[1])


def test_symmetry_check_exact_and_tolerant():
    s = np.random.default_rng(7).normal(size=(300, 300))
    s = s + s.T
    assert metrics._exactly_symmetric(s)  # 300 = 2 full strips of 128 + a partial one
    t = s.copy()
    t[290, 3] += 1e-13  # in the last, partial strip; below the 1e-10 tolerance
    assert not metrics._exactly_symmetric(t)
    metrics._check_symmetric(t, "sigma")
    t[290, 3] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        metrics._check_symmetric(t, "sigma")


# --------------------------------------------------------------------------- diversity, multimodality


def test_diversity_points_on_a_line():
    # 1-d points x_i = i, so a pair (a, b) is |a - b| apart; index draws as documented
    emb = np.arange(10.0)[:, None]
    rng = np.random.default_rng(7)
    a, b = rng.choice(10, 4, replace=False), rng.choice(10, 4, replace=False)
    assert diversity(emb, times=4, seed=7) == pytest.approx(np.abs(a - b).mean(), rel=1e-12)


def test_diversity_simplex_and_invariances():
    emb = 3.0 * np.eye(40)  # all distinct pairs are 3*sqrt(2) apart, a == b pairs are 0 apart
    value = diversity(emb, times=20, seed=0)
    allowed = 3.0 * math.sqrt(2) * np.arange(21) / 20
    assert np.min(np.abs(allowed - value)) < 1e-12
    assert value > 0.8 * 3.0 * math.sqrt(2)
    shifted = 2.0 * emb + 5.0
    assert diversity(shifted, times=20, seed=0) == pytest.approx(2 * value, rel=1e-12)
    assert diversity(np.ones((31, 4)), times=30) == 0.0


def test_diversity_reads_only_sampled_rows():
    x = np.random.default_rng(8).normal(size=(50, 3))
    rng = np.random.default_rng(2)
    a, b = rng.choice(50, 10, replace=False), rng.choice(50, 10, replace=False)
    unused = np.setdiff1d(np.arange(50), np.union1d(a, b))[0]
    bad = x.copy()
    bad[unused] = np.nan  # never drawn: the value is that of the drawn pairs
    assert diversity(bad, times=10, seed=2) == diversity(x, times=10, seed=2)
    bad[a[4], 1] = np.inf
    with pytest.raises(ValueError, match="sampled rows"):
        diversity(bad, times=10, seed=2)
    ints = np.arange(60)[:, None] * np.ones((1, 2), dtype=np.int64)  # non-float input is cast
    assert diversity(ints, times=10, seed=1) == pytest.approx(diversity(ints.astype(float), times=10, seed=1))


def test_multimodality_hand_made():
    # text t's generation r sits at (t+1) * r on a line: pair (a, b) distance (t+1)|a-b|
    t_count, r_count = 3, 12
    emb = (np.arange(1, t_count + 1)[:, None] * np.arange(r_count)[None, :])[..., None].astype(float)
    rng = np.random.default_rng(11)
    a, b = rng.choice(r_count, 5, replace=False), rng.choice(r_count, 5, replace=False)
    expected = np.mean([(t + 1) * np.abs(a - b).mean() for t in range(t_count)])
    assert multimodality(emb, times=5, seed=11) == pytest.approx(expected, rel=1e-12)


def test_sampling_is_deterministic_per_seed():
    """The pairs come from default_rng(seed) alone: the documented draw, whatever the global RNG."""
    x = np.random.default_rng(0).normal(size=(400, 6))
    rng = np.random.default_rng(3)
    a, b = rng.choice(400, 300, replace=False), rng.choice(400, 300, replace=False)
    np.random.seed(123)  # the legacy global state must not enter
    assert diversity(x, seed=3) == pytest.approx(np.linalg.norm(x[a] - x[b], axis=1).mean(), rel=1e-12)
    assert diversity(x, seed=3) != diversity(x, seed=4)
    y = np.random.default_rng(1).normal(size=(5, 30, 4))
    rng = np.random.default_rng(3)
    a, b = rng.choice(30, 10, replace=False), rng.choice(30, 10, replace=False)
    expected = np.linalg.norm(y[:, a] - y[:, b], axis=2).mean()
    assert multimodality(y, seed=3) == pytest.approx(expected, rel=1e-12)
    assert multimodality(y, seed=3) != multimodality(y, seed=4)


# --------------------------------------------------------------------------- replications


def test_mean_ci95_hand_computed():
    mean, ci = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * math.sqrt(1.25) / 2.0)  # std ddof=0 = sqrt(1.25), n = 4


def test_mean_ci95_over_20_replications_columns():
    reps = np.stack([np.full(20, 0.5), np.linspace(0.0, 1.0, 20)], axis=1)  # (20, 2)
    mean, ci = mean_ci95(reps)
    np.testing.assert_allclose(mean, [0.5, 0.5])
    np.testing.assert_allclose(ci, [0.0, 1.96 * np.std(np.linspace(0, 1, 20)) / math.sqrt(20)])
    assert ci[1] < np.std(np.linspace(0, 1, 20))  # the CI is not the plain std (pitfall 13)


# --------------------------------------------------------------------------- errors


def test_errors_name_the_problem():
    text, motion = _correlated_pairs(n=40, d=4, seed=0)
    with pytest.raises(ValueError, match="same shape"):
        r_precision(text, motion[:, :3])
    bad = text.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="text_emb: 1 non-finite"):
        text_motion_scores_batched(bad, motion)
    tail_nan = motion.copy()
    tail_nan[-1, 0] = np.nan  # row 39 falls in the dropped partial batch but still fails loudly
    with pytest.raises(ValueError, match="motion_emb: 1 non-finite"):
        r_precision(text, tail_nan, batch_size=32)
    with pytest.raises(ValueError, match="overflow"):
        r_precision(text * 1e160, motion)
    with pytest.raises(ValueError, match="motion_emb"):
        matching_score(text, np.where(motion > 1, np.inf, motion), batch_size=None)
    with pytest.raises(ValueError, match="at least one full batch"):
        r_precision(text[:20], motion[:20], batch_size=32)
    with pytest.raises(ValueError, match="top_k=5"):
        r_precision(text[:4], motion[:4], top_k=5, batch_size=None)
    with pytest.raises(ValueError, match="more than times=300"):
        diversity(text, times=300)
    with pytest.raises(ValueError, match="more than times=300"):
        diversity(np.zeros((300, 4)), times=300)  # N == times is rejected too
    with pytest.raises(ValueError, match="R=10"):
        multimodality(np.zeros((2, 10, 4)), times=10)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_reference(np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_reference(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="reference dimension"):
        frechet_distance_to_reference(frechet_reference(np.zeros(2), np.eye(2)), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        activation_statistics(np.zeros((1, 3)))
    inf_row = text.copy()
    inf_row[7, 2] = np.inf  # found through the (D,) mean, reported with the full count
    with pytest.raises(ValueError, match="emb: 1 non-finite"):
        activation_statistics(inf_row)
    with pytest.raises(ValueError, match="values"):
        mean_ci95([])


def test_float32_inputs_are_scored_in_float64():
    text, motion = _correlated_pairs(n=64, d=6, seed=8)
    r64, mm64 = text_motion_scores_batched(text, motion)
    r32, mm32 = text_motion_scores_batched(text.astype(np.float32), motion.astype(np.float32))
    np.testing.assert_array_equal(r32, r64)
    assert mm32 == pytest.approx(mm64, rel=1e-6)
