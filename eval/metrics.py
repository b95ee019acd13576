"""Text-motion evaluation metrics (Guo et al. protocol) as pure numpy functions.

Every function takes numpy arrays (or array-likes) and returns numbers: no I/O, no printing, no
global state. Sampling takes an explicit ``seed`` and uses ``np.random.default_rng(seed)``.
All arithmetic is float64 (the evaluator emits float32; casting up only removes rounding noise).

Notation (spec ``motion-vq-evaluation.md`` section 6): ``E_t`` text embeddings and ``E_m`` motion
embeddings, ``(N, D)`` with ``D = 512``, row ``i`` of each belonging to sample ``i``.

Protocol reminders (spec section 6, pitfalls 5, 7, 13, 14, 16):

- R-precision and matching score are computed on batches of exactly 32 pairs; the other 31
  motions of a batch are the distractors, so the number depends on the batch size (pitfall 7).
  :func:`r_precision` and :func:`matching_score` (both through :func:`text_motion_scores_batched`,
  which returns the two from one pass) score consecutive chunks of ``batch_size`` rows in one
  vectorised pass and drop a final partial chunk (like ``drop_last=True`` / IRG's chunking).
- FID: ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. :func:`frechet_distance` takes
  ``Tr (S1 S2)^(1/2)`` from the eigenvalues of the symmetric ``L1^T S2 L1`` (``L1`` the Cholesky
  factor of ``S1``), not from ``scipy.linalg.sqrtm``: the same value (to ~1e-10 relative) at a
  fraction of the cost, never complex, no ``eps`` retry. :func:`frechet_reference` +
  :func:`frechet_distance_to_reference` are the same computation split in two, to factor a fixed
  reference set once. The published ``sqrtm`` route is kept only as the test and benchmark
  reference (``tests/test_metrics.py``, ``scripts/bench_metrics.py``, which times one evaluation
  through these functions against it).
- Diversity: 300 random pairs; raises when there are not more than 300 samples (pitfall 14).
- Multimodality: 10 pairs among the R generations of each text (pitfall 16: it is expensive,
  report how many replications it used).
- Report ``mean ± 1.96 * std(ddof=0) / sqrt(n)`` over the replications with :func:`mean_ci95`
  (pitfall 13: not the plain std).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg.lapack

logger = logging.getLogger(__name__)

# Relative size of a negative eigenvalue (vs the largest) above which a "covariance" is rejected
# as not positive semi-definite; rounding in a genuine N-1 covariance stays around 1e-13.
_PSD_TOLERANCE = 1e-8

# Rows per chunk in text_motion_scores_batched: 64 rows of both (64, 512) float64 inputs take
# 0.5 MiB, well inside a 2 MiB L2 cache (measured: 64 rows beat 32 to 512 and no chunking).
_CHUNK_ROWS = 64

# activation_statistics: largest mean^2 / variance of a column for which the covariance is taken
# from the uncentred Gram matrix (loses at most log10(1 + 100) ~ 2 digits), and how many rows
# the pre-check samples.
_MAX_KAPPA = 100.0
_KAPPA_SAMPLE_ROWS = 256


# --------------------------------------------------------------------------- input checks


def _raise_if_not_finite(arr: np.ndarray, name: str) -> None:
    """ValueError naming ``name`` and counting the NaN/inf entries of ``arr``, if any."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(
            f"{name}: {int(arr.size - finite.sum())} non-finite value(s) (NaN/inf) in array of shape "
            f"{arr.shape}; check the evaluator inputs (e.g. NaN motions or zero-length sequences)"
        )


def _as_float_array(x: object, name: str, ndim: int, what: str, check_finite: bool = True) -> np.ndarray:
    """``x`` as a float64 array with ``ndim`` dims (finite unless told not to check), else ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {what} ({ndim} dims), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty array of shape {arr.shape}")
    if check_finite:
        _raise_if_not_finite(arr, name)
    return arr


def _check_squared_norms(sq: np.ndarray, arr: np.ndarray, name: str) -> None:
    """Raise if the ``(N,)`` squared row norms ``sq`` of ``(N, D)`` ``arr`` show NaN/inf entries.

    A row norm is finite iff the row is (barring overflow above ~1e154), so this validates the
    input from the norms the distance computation needs anyway, without another pass over it.
    """
    if not np.isfinite(sq).all():
        _raise_if_not_finite(arr, name)
        raise ValueError(f"{name}: values too large, squared row norms overflow float64")


def _check_pair(
    text_emb: object, motion_emb: object, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate aligned ``(N, D)`` text and motion embeddings."""
    t = _as_float_array(text_emb, "text_emb", 2, "(N, D) embeddings", check_finite=check_finite)
    m = _as_float_array(motion_emb, "motion_emb", 2, "(N, D) embeddings", check_finite=check_finite)
    if t.shape != m.shape:
        raise ValueError(
            f"text_emb {t.shape} and motion_emb {m.shape} must have the same shape (rows are aligned pairs)"
        )
    return t, m


def _check_top_k(top_k: int, batch: int) -> None:
    if not 1 <= top_k <= batch:
        raise ValueError(f"top_k={top_k} must be in [1, {batch}] (the number of candidates per text)")


def _check_stats(mu: object, sigma: object, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    mu_a = _as_float_array(mu, f"mu{suffix}", 1, "(D,) mean")
    sigma_a = _as_float_array(sigma, f"sigma{suffix}", 2, "(D, D) covariance")
    if sigma_a.shape != (mu_a.shape[0], mu_a.shape[0]):
        raise ValueError(
            f"sigma{suffix} has shape {sigma_a.shape}; expected {(mu_a.shape[0],) * 2} to match mu{suffix}"
        )
    return mu_a, sigma_a


# --------------------------------------------------------------------------- distances, R-precision


def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances in the reference's expanded form.

    ``dist[i, j] = sqrt(max((-2 a_i . b_j + ||a_i||^2) + ||b_j||^2, 0))``, summed in the reference's
    order (so the values are bit-identical to it); the clamp at 0 removes the tiny negative values
    that rounding gives for (nearly) identical vectors, which would be NaN.

    Args:
        a: ``(N, D)`` embeddings (rows = texts in R-precision).
        b: ``(M, D)`` embeddings.

    Returns:
        ``(N, M)`` float64 distances.
    """
    a = _as_float_array(a, "a", 2, "(N, D) embeddings")
    b = _as_float_array(b, "b", 2, "(M, D) embeddings")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a {a.shape} and b {b.shape} must have the same embedding size D")
    d2 = a @ b.T
    d2 *= -2.0
    d2 += np.vecdot(a, a)[:, None]
    d2 += np.vecdot(b, b)[None, :]
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2, out=d2)


def _own_rank(dist: np.ndarray) -> np.ndarray:
    """Position of the matched column ``i`` in row ``i`` of ``dist`` sorted ascending.

    Args:
        dist: ``(..., B, B)`` distances, rows = texts, the diagonal = matched pairs.

    Returns:
        ``(..., B)`` int ranks, 0 = nearest.

    ``rank_i = #{j : d_ij < d_ii} + #{j < i : d_ij == d_ii}``, exactly the position of column i in
    ``np.argsort(row, kind="stable")`` (ties broken by column index). The reference uses the
    default unstable argsort, whose order among exactly equal distances is unspecified; equal
    distances need duplicate embeddings, so without ties both give the same hits.
    """
    batch = dist.shape[-1]
    own = np.diagonal(dist, axis1=-2, axis2=-1)[..., None]  # (..., B, 1)
    before = np.tril(np.ones((batch, batch), dtype=bool), k=-1)  # before[i, j] = j < i
    return (dist < own).sum(axis=-1) + ((dist == own) & before).sum(axis=-1)


def _cumulative_hits(rank: np.ndarray, top_k: int) -> np.ndarray:
    """``(top_k,)`` counts of ranks ``< k`` for k = 1..top_k (cumulative top-k hits)."""
    return (rank.reshape(-1, 1) < np.arange(1, top_k + 1)).sum(axis=0)


def r_precision(
    text_emb: np.ndarray, motion_emb: np.ndarray, top_k: int = 3, batch_size: int | None = None
) -> np.ndarray:
    """R-precision: fraction of texts whose own motion is among the k nearest of its batch.

    By default the N rows are one batch (the api contract: callers pass one protocol batch of 32).
    With ``batch_size=B`` rows ``[b*B, (b+1)*B)`` form batch ``b`` (the protocol's 32: the other 31
    motions of a batch are the distractors) and a final partial batch is dropped. Within a batch
    ``dist = euclidean_distance_matrix(E_t, E_m)`` (rows = texts) and text i is a top-k hit when
    column i is among the k smallest of row i (:func:`_own_rank`, ties broken by column index):
    ``R@k = #{top-k hits} / n`` over the ``n = (N // B) * B`` scored rows, k = 1..top_k. Computed
    by :func:`text_motion_scores_batched` (all batches in one vectorised pass).

    Args:
        text_emb: ``(N, D)``.
        motion_emb: ``(N, D)``, row i paired with text i.
        top_k: largest k (the protocol reports k = 1, 2, 3).
        batch_size: candidates per text; ``None`` (default) scores all N rows as one batch.

    Returns:
        ``(top_k,)`` float array, entry k-1 = R@k, non-decreasing.
    """
    n = np.shape(text_emb)[0] if batch_size is None else batch_size
    return text_motion_scores_batched(text_emb, motion_emb, batch_size=n, top_k=top_k)[0]


def matching_score(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int | None = None) -> float:
    """Matching score / MM-Dist: mean distance between each text and its own motion.

    ``MM-Dist = (1/n) sum_i ||E_t[i] - E_m[i]|| = sum_batches trace(dist_b) / n``: by default
    (``batch_size=None``) over all N rows; with ``batch_size=B`` over the ``n = (N // B) * B`` rows
    of the full batches, as the protocol scores the R-precision batches (a final partial batch is
    dropped). The
    distances are the diagonal of :func:`euclidean_distance_matrix` (expanded form), computed by
    :func:`text_motion_scores_batched`.

    Args:
        text_emb: ``(N, D)``.
        motion_emb: ``(N, D)``, aligned rows.
        batch_size: rows per batch (the protocol's 32); ``None`` (default) = one batch of all rows.
    """
    n = np.shape(text_emb)[0] if batch_size is None else batch_size
    return text_motion_scores_batched(text_emb, motion_emb, batch_size=n, top_k=1)[1]


def text_motion_scores_batched(
    text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = 32, top_k: int = 3
) -> tuple[np.ndarray, float]:
    """R-precision and matching score over consecutive batches, in one vectorised pass.

    Rows ``[b*B, (b+1)*B)`` form batch ``b`` (``B = batch_size``); a final partial batch of
    ``N mod B`` rows is dropped (the loader's ``drop_last=True``; IRG's chunking), so only
    ``n = (N // B) * B`` samples are scored and both metrics are divided by ``n``:

    - ``R@k = sum_batches #{i : rank_i < k} / n`` for k = 1..top_k, rank as in :func:`_own_rank`
      (equal to the argsort position when a row has no exact ties);
    - ``MM-Dist = sum_batches trace(dist_b) / n``.

    The one implementation of both metrics (:func:`r_precision` and :func:`matching_score` return
    its two halves); equal to looping the published per-batch computation (distance matrix,
    ``argsort``, own column) over the batches and averaging with weights ``B / n``. Shuffle the
    rows beforehand (pairs aligned) to get the protocol's random batch composition.

    Args:
        text_emb: ``(N, D)``.
        motion_emb: ``(N, D)``, aligned rows.
        batch_size: candidates per text (the protocol's 32).
        top_k: largest k.

    Returns:
        (``(top_k,)`` R-precision, matching score).

    Raises:
        ValueError: shape mismatch, non-finite values, ``N < batch_size`` or a bad ``top_k``.
    """
    t, m = _check_pair(text_emb, motion_emb, check_finite=False)  # checked via the norms below
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    n_total, dim = t.shape
    if n_total < batch_size:
        raise ValueError(
            f"only {n_total} samples for batch_size={batch_size}: R-precision needs at least one full batch "
            "(it is defined for exactly batch_size candidates per text)"
        )
    _check_top_k(top_k, batch_size)
    nb = n_total // batch_size
    n = nb * batch_size
    sq_t, sq_m = np.empty(n_total), np.empty(n_total)  # squared row norms
    dot = np.empty((nb, batch_size, batch_size))  # dot[b, i, j] = t_(bB+i) . m_(bB+j)
    # Work in chunks of whole batches that fit the L2 cache: the norms pass brings the rows in and
    # the batched product (one BLAS gemm per batch) reads them from there, not from memory again.
    step = max(1, _CHUNK_ROWS // batch_size)
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf/overflow are reported just below
        for b0 in range(0, nb, step):
            b1 = min(nb, b0 + step)
            rows = slice(b0 * batch_size, b1 * batch_size)
            tc, mc = t[rows], m[rows]
            np.vecdot(tc, tc, out=sq_t[rows])
            np.vecdot(mc, mc, out=sq_m[rows])
            tcb = tc.reshape(b1 - b0, batch_size, dim)
            np.matmul(tcb, mc.reshape(b1 - b0, batch_size, dim).transpose(0, 2, 1), out=dot[b0:b1])
        # the rows of a dropped partial batch are validated too
        np.vecdot(t[n:], t[n:], out=sq_t[n:])
        np.vecdot(m[n:], m[n:], out=sq_m[n:])
    _check_squared_norms(sq_t, t, "text_emb")
    _check_squared_norms(sq_m, m, "motion_emb")
    # In place, in euclidean_distance_matrix's (and the reference's) order: (-2 t.m + |t|^2) + |m|^2.
    dist = dot
    dist *= -2.0
    dist += sq_t[:n].reshape(nb, batch_size)[:, :, None]
    dist += sq_m[:n].reshape(nb, batch_size)[:, None, :]
    np.maximum(dist, 0.0, out=dist)
    np.sqrt(dist, out=dist)  # (nb, B, B)
    hits = _cumulative_hits(_own_rank(dist), top_k)
    mm_dist = float(np.trace(dist, axis1=1, axis2=2).sum() / n)
    return hits / n, mm_dist


# --------------------------------------------------------------------------- FID


def activation_statistics(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of embeddings (``np.cov(emb, rowvar=False)`` semantics).

    ``mu = (1/N) sum_i x_i``, ``sigma = (X - mu)^T (X - mu) / (N - 1)``.

    Computed as ``(X^T X - N mu mu^T) / (N - 1)`` (one BLAS ``syrk`` on the data as given, no
    centred copy) when the means are small against the spread: with ``kappa_d = mu_d^2 / var_d``
    the subtraction cancels ``log10(1 + kappa_d)`` digits, so it is used only for
    ``max_d kappa_d <= 100`` (at most ~2 of 16 digits lost; measured on 4384 x 512 data: sigma
    within ~5e-13 of ``np.cov`` relative to its largest entry at kappa = 100, ~4e-15 at kappa = 1).
    Otherwise, or for a constant column, the centred product above is used.

    Args:
        emb: ``(N, D)`` with ``N >= 2``.

    Returns:
        ``mu (D,)``, ``sigma (D, D)`` (exactly symmetric).

    Raises:
        ValueError: bad shape, fewer than 2 samples, NaN/inf entries or values whose squares overflow.
    """
    x = _as_float_array(emb, "emb", 2, "(N, D) embeddings", check_finite=False)  # checked via mu below
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"emb: need at least 2 samples for a covariance, got {n}")
    # Decide on the uncentred form from the first rows first (contiguous, so cheap to read), so that
    # data with large means does not pay for a wasted syrk; the exact check after it is the guarantee.
    sample = x[:_KAPPA_SAMPLE_ROWS]
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf are reported below
        uncentred = _max_kappa(sample.mean(axis=0), sample.var(axis=0)) <= _MAX_KAPPA
    # numpy sends a.T @ a (same buffer) to BLAS syrk: half the FLOPs of np.cov's gemm, and it fills
    # both triangles from one, so the result is exactly symmetric.
    gram = x.T @ x if uncentred else None
    # Column sums as a BLAS gemv: faster than x.mean(axis=0) (also a running sum per column, as
    # numpy reduces a C-ordered array over axis 0) and as accurate (several partial sums).
    mu = np.ones(n) @ x
    mu /= n
    # A NaN/inf entry makes its column mean NaN/inf, so checking the (D,) mean validates the input
    # without another pass over the (N, D) array.
    if not np.isfinite(mu).all():
        _raise_if_not_finite(x, "emb")
        raise ValueError("emb: values too large, the column means overflow float64")
    if gram is not None:
        if _max_kappa(mu, np.diagonal(gram) / n - mu * mu) <= _MAX_KAPPA:
            scaled = np.sqrt(n) * mu
            gram -= np.multiply.outer(scaled, scaled)  # N mu mu^T, exactly symmetric as gram is
            sigma = gram
        else:
            logger.debug("activation_statistics: means large against the spread, using the centred product")
            gram = None
    if gram is None:
        xc = x - mu
        sigma = xc.T @ xc
    sigma /= n - 1
    if not np.isfinite(np.trace(sigma)):  # off-diagonal entries are bounded by the diagonal ones
        raise ValueError("emb: values too large, the covariance overflows float64")
    return mu, sigma


def _max_kappa(mu: np.ndarray, var: np.ndarray) -> float:
    """``max_d mu_d^2 / var_d`` (``inf`` for a column with no spread or non-finite values)."""
    if not (np.all(var > 0) and np.isfinite(var).all() and np.isfinite(mu).all()):
        return float("inf")
    return float(np.max(mu * mu / var))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (FID on evaluator embeddings).

    ``FID = ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr (sigma1 sigma2)^(1/2)``, with
    ``Tr (sigma1 sigma2)^(1/2) = sum_i sqrt(lambda_i)`` over the eigenvalues of the symmetric PSD
    ``F^T sigma2 F`` (``F F^T = sigma1``; the Cholesky factor): see
    :func:`frechet_distance_to_reference` for why, and :func:`frechet_reference` for the factor.
    Equals the published ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` computation to ~1e-10 relative
    (``tests/test_metrics.py``), costs a fraction of it (``scripts/bench_metrics.py``) and never
    goes complex; for a singular product it gives the exact value where the published code
    retries with ``1e-6 * I`` added to both covariances. Comparing several sets with one
    reference: build :func:`frechet_reference` once and call :func:`frechet_distance_to_reference`.

    Args:
        mu1, mu2: ``(D,)`` means (``activation_statistics``).
        sigma1, sigma2: ``(D, D)`` symmetric PSD covariances.

    Raises:
        ValueError: shapes, non-finite inputs, asymmetric or clearly non-PSD covariances.
    """
    return _distance_to_reference(_reference(mu1, sigma1, "1"), mu2, sigma2, "2")


@dataclass(frozen=True)
class FrechetReference:
    """Precomputed Gaussian statistics of a fixed reference set (e.g. real-motion embeddings).

    Attributes:
        mu: ``(D,)`` mean.
        sigma: ``(D, D)`` covariance.
        factor: ``(D, D)`` matrix ``F`` with ``F F^T = sigma``: the lower-triangular Cholesky factor
            ``L`` when ``sigma`` is numerically positive definite (``triangular=True``), otherwise
            ``F = V diag(sqrt(w))`` from the eigendecomposition ``sigma = V diag(w) V^T``,
            eigenvalues clipped at 0.
        trace: ``Tr(sigma)``.
        triangular: ``factor`` is lower triangular (Cholesky), so ``F^T sigma F`` is one LAPACK
            ``dsygst`` (about ``D^3`` FLOPs) instead of two general products (``4 D^3``).
    """

    mu: np.ndarray
    sigma: np.ndarray
    factor: np.ndarray
    trace: float
    triangular: bool = False


def _check_psd_eigenvalues(w: np.ndarray, name: str) -> np.ndarray:
    """Clip rounding-level negative eigenvalues at 0; raise on clearly negative ones."""
    scale = max(float(np.max(np.abs(w))), np.finfo(np.float64).tiny)
    if float(w.min()) < -_PSD_TOLERANCE * scale:
        raise ValueError(
            f"{name} is not positive semi-definite (eigenvalue {w.min():.3g}, largest {scale:.3g}); "
            "pass a covariance from activation_statistics"
        )
    return np.maximum(w, 0.0)


def _check_symmetric(sigma: np.ndarray, name: str) -> None:
    """ValueError unless ``sigma`` is symmetric up to ``1e-10`` of its largest entry."""
    if _exactly_symmetric(sigma):  # the usual case (activation_statistics)
        return
    scale = max(float(np.max(np.abs(sigma))), np.finfo(np.float64).tiny)
    asym = sigma - sigma.T
    if float(np.max(np.abs(asym, out=asym))) > 1e-10 * scale:
        raise ValueError(f"{name} is not symmetric; pass a covariance from activation_statistics")


def _exactly_symmetric(sigma: np.ndarray, block: int = 128) -> bool:
    """``sigma == sigma.T`` exactly, compared in row strips (the transposed strip stays in cache)."""
    d = sigma.shape[0]
    return all(
        np.array_equal(sigma[i : i + block, i:], sigma[i:, i : i + block].T) for i in range(0, d, block)
    )


def _eigvalsh_lower(m: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of the symmetric matrix whose lower triangle is that of ``m``.

    LAPACK ``dsyevr`` (tridiagonal reduction + ``dsterf`` for all eigenvalues, like numpy's
    ``eigvalsh``); a Fortran-ordered ``m`` is overwritten, not copied.
    """
    w, _, _, _, info = scipy.linalg.lapack.dsyevr(m, compute_v=0, lower=1, overwrite_a=1)
    if info != 0:
        raise ValueError(f"FID: LAPACK dsyevr failed (info={info}) on a {m.shape} matrix")
    return w


def frechet_reference(mu: np.ndarray, sigma: np.ndarray) -> FrechetReference:
    """Precompute a reference set's statistics for :func:`frechet_distance_to_reference`.

    The factor is the Cholesky factor ``L`` (``L L^T = sigma``) when ``sigma`` is numerically
    positive definite, else the clipped eigen-factor ``V diag(sqrt(w))`` (singular covariances, e.g.
    fewer samples than dimensions); both give the same distance up to rounding. Costs one
    factorisation; do it once per reference set (e.g. once for cached real-motion embeddings
    rather than once per replication). Where the reference changes every replication
    (T2M-GPT/IRG use the real embeddings of the same replication, whose crops are redrawn), build
    it per replication: reference + distance still cost far less than one ``sqrtm`` at D = 512.

    Args:
        mu: ``(D,)`` mean.
        sigma: ``(D, D)`` symmetric PSD covariance.

    Raises:
        ValueError: shapes, non-finite values, asymmetry or clearly negative eigenvalues.
    """
    return _reference(mu, sigma, "")


def _reference(mu: object, sigma: object, suffix: str) -> FrechetReference:
    """:func:`frechet_reference`; ``suffix`` names the arguments in errors (``sigma1``)."""
    mu, sigma = _check_stats(mu, sigma, suffix)
    _check_symmetric(sigma, f"sigma{suffix}")
    trace = float(np.trace(sigma))
    # LAPACK potrf on sigma^T (= sigma, a Fortran-ordered view): the factor comes out in the
    # Fortran order that dsygst reads, so no copy is made per distance. info > 0: not numerically
    # positive definite (singular or rounding-level indefinite), use the eigen-factor below.
    chol, info = scipy.linalg.lapack.dpotrf(sigma.T, lower=1, clean=1)
    if info == 0:
        return FrechetReference(mu=mu, sigma=sigma, factor=chol, trace=trace, triangular=True)
    w, v = np.linalg.eigh(sigma)
    w = _check_psd_eigenvalues(w, f"sigma{suffix}")
    return FrechetReference(mu=mu, sigma=sigma, factor=v * np.sqrt(w), trace=trace)


def _congruence(ref: FrechetReference, sigma: np.ndarray) -> np.ndarray:
    """``F^T sigma F`` for the reference factor ``F``; only its lower triangle is meaningful.

    ``sigma`` is symmetric, so its transpose (the Fortran-ordered view of a C-ordered array, no
    copy) is passed to LAPACK as ``sigma``.
    """
    if ref.triangular:
        # LAPACK's reduction of sigma L L^T x = lambda x to standard form (itype 2): L^T sigma L,
        # using the symmetry (about D^3 FLOPs; two trmm would be 2 D^3). sigma is not overwritten.
        m, info = scipy.linalg.lapack.dsygst(sigma.T, ref.factor, itype=2, lower=1)
        if info != 0:
            raise ValueError(f"FID: LAPACK dsygst failed (info={info}); sigma shape {sigma.shape}")
        return m
    return ref.factor.T @ (sigma @ ref.factor)


def frechet_distance_to_reference(ref: FrechetReference, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Fréchet distance of ``(mu, sigma)`` to a precomputed reference, via one ``eigvalsh``.

    ``FID = ||mu_r - mu||^2 + Tr(sigma_r) + Tr(sigma) - 2 sum_i sqrt(lambda_i)`` with ``lambda_i``
    the eigenvalues of ``M = F^T sigma F`` (``F F^T = sigma_r``, see :class:`FrechetReference`).

    Why this equals ``Tr sqrtm(sigma_r sigma)``: ``sigma_r sigma = F (F^T sigma)`` and
    ``M = (F^T sigma) F`` share their non-zero eigenvalues (``XY`` and ``YX`` always do), and M is
    symmetric PSD, so they are real and ``>= 0``. Any ``F`` with ``F F^T = sigma_r`` works: for two
    such factors ``F2 = F1 Q`` with ``Q`` orthogonal, so their ``M`` are orthogonally similar;
    ``F = sigma_r^(1/2)`` gives the brief's ``sigma_r^(1/2) sigma sigma_r^(1/2)``. When ``sigma_r``
    is non-singular, ``sigma_r sigma`` is similar to M, hence diagonalisable with eigenvalues
    ``lambda_i``; its principal square root has eigenvalues ``sqrt(lambda_i)`` and the trace is
    their sum. Rounding can leave eigenvalues of order ``-1e-16 * max`` for a singular product:
    they are clipped at 0 (clearly negative ones raise). This path needs no ``eps`` retry and
    never goes complex; for a singular product it gives the exact value where the published code
    returns the value for ``sigma + 1e-6 I``.

    Args:
        ref: from :func:`frechet_reference`.
        mu: ``(D,)`` mean of the compared set.
        sigma: ``(D, D)`` symmetric PSD covariance of the compared set.
    """
    return _distance_to_reference(ref, mu, sigma, "")


def _distance_to_reference(ref: FrechetReference, mu: object, sigma: object, suffix: str) -> float:
    """:func:`frechet_distance_to_reference`; ``suffix`` names the arguments in errors (``sigma2``)."""
    mu, sigma = _check_stats(mu, sigma, suffix)
    if mu.shape != ref.mu.shape:
        raise ValueError(f"mu{suffix} {mu.shape} does not match the reference dimension {ref.mu.shape}")
    _check_symmetric(sigma, f"sigma{suffix}")
    # only the lower triangle is read, so M's rounding-level asymmetry needs no averaging
    lam = _eigvalsh_lower(_congruence(ref, sigma))
    tr_covmean = float(np.sqrt(_check_psd_eigenvalues(lam, "F^T sigma F")).sum())
    diff = ref.mu - mu
    return float(diff @ diff + ref.trace + np.trace(sigma) - 2.0 * tr_covmean)


# --------------------------------------------------------------------------- diversity, multimodality


def diversity(emb: np.ndarray, times: int = 300, seed: int = 0) -> float:
    """Mean distance between ``times`` random pairs of embeddings.

    Two index sets ``a, b`` of size ``S = times`` are drawn from ``range(N)``, each without
    replacement and independently (``rng.choice`` twice, ``rng = np.random.default_rng(seed)``);
    ``Diversity = (1/S) sum_s ||emb[a_s] - emb[b_s]||``. The protocol uses ``S = 300``.

    Only the ``2 S`` sampled rows are read (and converted to float64), so the cost does not grow
    with N; a NaN/inf in a sampled row raises, rows that were not drawn do not enter the value.

    Args:
        emb: ``(N, D)`` with ``N > times``.
        times: number of pairs S.
        seed: sampling seed.

    Raises:
        ValueError: ``N <= times`` (the published code asserts this; returning 0 would hide a broken
            run), non-finite values in the sampled rows or a bad shape.
    """
    x = emb if isinstance(emb, np.ndarray) else np.asarray(emb, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"emb: expected (N, D) embeddings (2 dims, non-empty), got shape {x.shape}")
    if times < 1:
        raise ValueError(f"times={times} must be >= 1")
    if x.shape[0] <= times:
        raise ValueError(
            f"diversity needs more than times={times} samples, got N={x.shape[0]}; "
            "evaluate more motions or lower `times` and report it"
        )
    rng = np.random.default_rng(seed)
    first = rng.choice(x.shape[0], times, replace=False)
    second = rng.choice(x.shape[0], times, replace=False)
    diff = np.asarray(x[first], dtype=np.float64) - np.asarray(x[second], dtype=np.float64)  # (S, D)
    value = float(np.linalg.norm(diff, axis=1).mean())
    if not np.isfinite(value):  # a NaN/inf in either row of a pair makes its distance non-finite
        sampled = np.asarray(x[np.union1d(first, second)], dtype=np.float64)
        _raise_if_not_finite(sampled, "emb (sampled rows)")
        raise ValueError("emb: values too large, pair distances overflow float64")
    return value


def multimodality(emb: np.ndarray, times: int = 10, seed: int = 0) -> float:
    """Mean distance between pairs of generations for the same text.

    Two index sets ``a, b`` of size ``S = times`` are drawn from ``range(R)`` (each without
    replacement, independently, shared by all texts; ``rng = np.random.default_rng(seed)``);
    ``MModality = (1/(T S)) sum_t sum_s ||emb[t, a_s] - emb[t, b_s]||``. Protocol: ``S = 10``,
    ``R = 30``.

    Args:
        emb: ``(T, R, D)`` embeddings of R generations for each of T texts, ``R > times``.
        times: number of pairs S.
        seed: sampling seed.

    Raises:
        ValueError: ``R <= times`` (as the published assert), non-finite values or a bad shape.
    """
    x = _as_float_array(emb, "emb", 3, "(T, R, D) embeddings")
    if times < 1:
        raise ValueError(f"times={times} must be >= 1")
    if x.shape[1] <= times:
        raise ValueError(
            f"multimodality needs more than times={times} generations per text, got R={x.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    first = rng.choice(x.shape[1], times, replace=False)
    second = rng.choice(x.shape[1], times, replace=False)
    return float(np.linalg.norm(x[:, first] - x[:, second], axis=2).mean())


# --------------------------------------------------------------------------- replications


def mean_ci95(values: np.ndarray | list[float]) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Mean and 95% confidence half-width over replications (axis 0).

    ``mean = (1/n) sum_r v_r``, ``ci = 1.96 * std(v, ddof=0) / sqrt(n)`` (the papers' ± column; IRG
    prints the plain std instead, pitfall 13).

    Args:
        values: ``(n,)`` one metric over n replications, or ``(n, K)`` (e.g. R-precision top-1..3).

    Returns:
        floats for ``(n,)`` input, ``(K,)`` arrays for ``(n, K)`` input.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2):
        raise ValueError(f"values: expected (n,) or (n, K) replications, got shape {v.shape}")
    v = _as_float_array(v, "values", v.ndim, "(n,) or (n, K) replications")
    mean = v.mean(axis=0)
    ci = 1.96 * v.std(axis=0, ddof=0) / np.sqrt(v.shape[0])
    if v.ndim == 1:
        return float(mean), float(ci)
    return mean, ci
