"""Gradient statistics from Gram matrices (||E g||^2, tr Cov g_B, SNR, bootstrap CIs); baseline on/off."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from srpo_bench.validation.gradient_variance.per_sample import Layers


class _Quad:
    """The quadratic form c -> c^T G c, G = X X^T, of one block X (M, p) of gradient columns.

    With c the row counts of a resample (or signs of a sign flip), c^T G c = ||sum_i c_i x_i||^2.
    The block is held as X itself (float64) when p <= M, so a form costs M p, and otherwise as
    its Gram matrix G, so a form costs M^2: memory and time scale with min(p, M). A bandit's
    small policy keeps X; a locomotion policy (~7e4 parameters) keeps G, the dominant cost
    (M^2 p), computed on g's device in g's dtype, in column chunks. In float32 its rounding
    (~1e-7 sqrt(p) |g_i| |g_j| per entry, unbiased) is orders of magnitude below the sampling
    noise of the statistics (~ |g|^2 / M for a mean over M^2 entries).
    """

    def __init__(self, x: Tensor, col_chunk: int = 8192) -> None:
        m, p = x.shape
        self.m = m
        if p <= m:
            self.x, self.gram = x.detach().double().cpu().numpy(), None
            return
        acc = torch.zeros(m, m, dtype=x.dtype, device=x.device)
        for c in range(0, p, col_chunk):
            block = x[:, c : c + col_chunk]
            acc += block @ block.T
        self.x, self.gram = None, acc.double().cpu().numpy()

    @classmethod
    def from_gram(cls, gram: Tensor) -> "_Quad":
        q = cls.__new__(cls)
        q.m, q.x, q.gram = gram.shape[0], None, gram.detach().double().cpu().numpy()
        return q

    def diag(self) -> np.ndarray:
        """||x_i||^2 per row."""
        return np.einsum("mp,mp->m", self.x, self.x) if self.gram is None else np.diag(self.gram).copy()

    def forms(self, c: np.ndarray) -> np.ndarray:
        """c_r^T G c_r for each row c_r of c (R, M)."""
        if self.gram is None:
            y = c @ self.x
            return np.einsum("rp,rp->r", y, y)
        return np.einsum("rm,rm->r", c @ self.gram, c)

    def offdiag_sq_sum(self) -> float:
        """sum_{i != j} (x_i . x_j)^2 = ||G||_F^2 - sum_i ||x_i||^4, with ||G||_F = ||X^T X||_F."""
        full = np.sum((self.x.T @ self.x) ** 2) if self.gram is None else np.sum(self.gram**2)
        return float(full - np.sum(self.diag() ** 2))


def _quads(g: Tensor, layers: Layers) -> list[_Quad]:
    return [_Quad(g[:, sl]) for _, sl in layers]


def _factored_block(factors: Sequence[tuple[Tensor, Tensor]]) -> _Quad:
    """The block of the layers with these (delta, h) factors: its rows delta_i (x) h_i when they
    are at most M wide (a column permutation of the gradient, which no quadratic form sees),
    else its Gram matrix sum over layers of (Delta Delta^T) * (H H^T)."""
    m = factors[0][0].shape[0]
    if sum(dl.shape[1] * h.shape[1] for dl, h in factors) <= m:
        return _Quad(torch.cat([(dl[:, :, None] * h[:, None, :]).reshape(m, -1) for dl, h in factors], 1))
    return _Quad.from_gram(sum((dl @ dl.T) * (h @ h.T) for dl, h in factors))


def _resample_counts(m: int, reps: int, seed: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """Row multiplicities (r, M) of bootstrap resamples of M rows, ``chunk`` resamples at a time."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
        idx = rng.integers(0, m, size=(r, m)) + m * np.arange(r)[:, None]
        yield np.bincount(idx.ravel(), minlength=r * m).reshape(r, m).astype(np.float64)
        done += r


@dataclasses.dataclass(frozen=True)
class _Sums:
    """||sum of rows||^2 and sum of squared row norms, on the sample and on each bootstrap resample.

    Every statistic of this module is a function of these two sums (per block of columns): with
    c the row counts of a resample, c^T G c = ||sum of resampled rows||^2 and c . diag G = their
    sum of squared norms. Shapes: (K,) and (K, reps) for K blocks.
    """

    m: int
    quad: np.ndarray
    sq: np.ndarray
    quad_b: np.ndarray
    sq_b: np.ndarray

    def pick(self, rows: slice | list[int]) -> "_Sums":
        return _Sums(self.m, self.quad[rows], self.sq[rows], self.quad_b[rows], self.sq_b[rows])

    def total(self) -> "_Sums":
        """The sums of the concatenated coordinates: they add up over disjoint parameter blocks."""
        return _Sums(
            self.m,
            self.quad.sum(0, keepdims=True),
            self.sq.sum(0, keepdims=True),
            self.quad_b.sum(0, keepdims=True),
            self.sq_b.sum(0, keepdims=True),
        )


def _sums(blocks: Sequence[_Quad], reps: int, seed: int) -> _Sums:
    """Point and bootstrap sums of each block; resamples from default_rng(seed), shared by all blocks."""
    m = blocks[0].m
    diags = np.stack([q.diag() for q in blocks])
    ones = np.ones((1, m))
    quads, sqs = [], []
    for c in _resample_counts(m, reps, seed):
        quads.append(np.stack([q.forms(c) for q in blocks]))
        sqs.append(diags @ c.T)
    return _Sums(
        m,
        np.array([q.forms(ones)[0] for q in blocks]),
        diags.sum(1),
        np.concatenate(quads, 1),
        np.concatenate(sqs, 1),
    )


def _moments(quad, sqsum, m: int, batch_size: int) -> dict[str, np.ndarray]:
    """From ||sum g_i||^2 and sum ||g_i||^2 of M rows: ||E g||^2 and tr Cov g_B, estimated and plug-in.

    ||mean||^2 overestimates ||E g||^2 by tr Cov g / M (E ||mean||^2 = ||E g||^2 + tr Cov / M),
    which dominates when the signal is weak; subtracting the unbiased (ddof 1) trace over M
    gives the U-statistic sum_{i != j} g_i . g_j / (M (M - 1)), exactly unbiased (it can be
    negative when the mean is within noise of zero). The plug-in values (||mean||^2 and the
    ddof-0 trace) are the parameters of the empirical distribution: the "true" values of the
    bootstrap world, which the basic intervals of :func:`_est` are centred on.
    """
    mean_sq = quad / m**2
    tr_cov = (sqsum - m * mean_sq) / (m - 1)
    return {
        "ms": mean_sq - tr_cov / m,
        "tv": tr_cov / batch_size,
        "ms_plug": mean_sq,
        "tv_plug": tr_cov * (m - 1) / m / batch_size,
    }


def _est(
    value: float,
    samples: np.ndarray,
    confidence: float,
    n: int,
    center: float | None = None,
    floor: float | None = None,
) -> dict[str, float]:
    """A point estimate with its bootstrap interval and the sample count behind it.

    Without ``center``: the percentile interval, for estimates that are (nearly) the plug-in
    statistic (traces, their ratios). With ``center`` = the statistic's value on the empirical
    distribution: the basic (pivotal) interval [v - (q_hi - center), v - (q_lo - center)],
    which mimics the law of v - theta by that of v* - center. It is needed for the unbiased
    ||E g||^2: resamples are drawn from a distribution whose mean is the sample mean, so the
    v* centre on ||mean||^2 = v + tr Cov / M, and a percentile interval would put back exactly
    the bias the U-statistic removes (it excludes 0 when E g = 0). ``floor`` clips the interval.
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s) or not np.isfinite(value):
        lo = hi = np.nan
    else:
        lo, hi = np.quantile(s, [(1 - confidence) / 2, (1 + confidence) / 2])
        if center is not None:
            lo, hi = value - (hi - center), value - (lo - center)
        if floor is not None:
            lo, hi = max(lo, floor), max(hi, floor)
    return {"value": float(value), "low": float(lo), "high": float(hi), "n_samples": int(n)}


def _ratio(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / b, np.nan)


def _check_rows(g: Tensor, batch_size: int) -> int:
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"need per-sample gradients of shape (M >= 2, P), got {tuple(g.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not torch.isfinite(g).all():
        raise ValueError("per-sample gradients contain NaN or inf")
    return g.shape[0]


def _layer_info(g: Tensor, layers: Layers) -> tuple[list[str], list[int]]:
    names, sizes = [n for n, _ in layers], [sl.stop - sl.start for _, sl in layers]
    if sum(sizes) != g.shape[1]:
        raise ValueError(f"layers cover {sum(sizes)} parameters but g has {g.shape[1]} columns")
    return names, sizes


def _stats(
    sums: _Sums, names: list[str], sizes: list[int], batch_size: int, confidence: float, reps: int
) -> dict[str, Any]:
    """The statistics of :func:`batch_gradient_stats` from per-layer sums."""
    m = sums.m
    e, b = _moments(sums.quad, sums.sq, m, batch_size), _moments(sums.quad_b, sums.sq_b, m, batch_size)
    tot = sums.total()
    te, tb = (
        _moments(tot.quad[0], tot.sq[0], m, batch_size),
        _moments(tot.quad_b[0], tot.sq_b[0], m, batch_size),
    )
    return {
        "n_samples": m,
        "batch_size": batch_size,
        "n_params": int(sum(sizes)),
        "confidence": confidence,
        "reps": reps,
        "mean_sq_norm": _est(te["ms"], tb["ms"], confidence, m, center=te["ms_plug"]),
        "total_variance": _est(te["tv"], tb["tv"], confidence, m),
        "snr": _est(
            float(_ratio(te["ms"], te["tv"])),
            _ratio(tb["ms"], tb["tv"]),
            confidence,
            m,
            center=float(_ratio(te["ms_plug"], te["tv_plug"])),
        ),
        "per_layer": {
            name: {
                "n_params": size,
                "total_variance": _est(e["tv"][k], b["tv"][k], confidence, m),
                "mean_sq_norm": _est(e["ms"][k], b["ms"][k], confidence, m, center=e["ms_plug"][k]),
            }
            for k, (name, size) in enumerate(zip(names, sizes))
        },
    }


def batch_gradient_stats(
    g: Tensor, batch_size: int, layers: Layers, confidence: float = 0.95, reps: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean and covariance of the per-batch gradient g_B = mean of ``batch_size`` rows of ``g``.

    ``g`` (M, P) holds per-sample gradients of M independent draws. Reported, each as
    ``{"value", "low", "high", "n_samples"}`` with a bootstrap CI over the M rows (``reps``
    resamples from ``numpy.random.default_rng(seed)``, so the same seed resamples the same rows
    for every setting measured on the same draws; percentile intervals for traces, basic ones
    for ||E g||^2 and the SNR, see :func:`_est`):

    - ``mean_sq_norm``: ||E g||^2 = ||E g_B||^2 (unbiased U-statistic, see :func:`_moments`);
    - ``total_variance``: tr Cov g_B = tr Cov g / B;
    - ``snr``: ||E g||^2 / tr Cov g_B;
    - ``per_layer[name]``: the same trace and squared mean norm restricted to one layer.
    """
    _check_rows(g, batch_size)
    names, sizes = _layer_info(g, layers)
    return _stats(_sums(_quads(g, layers), reps, seed), names, sizes, batch_size, confidence, reps)


def _sign_flip_test(x: _Quad, flips: int, seed: int) -> dict[str, float]:
    """Sign-flip randomization test of E x = 0 from the rows x_i of the block ``x``.

    Statistic: T = sum_{i != j} x_i . x_j, the U-statistic of ||E x||^2 (Chen & Qin 2010),
    large when the mean is not zero. Its null distribution is that of T under random sign
    flips x_i -> e_i x_i. The test is exact when x is symmetric about 0, which is the case
    here (g_on - g_off = -w(t) J_theta pi(s)^T eps with eps ~ N(0, I) independent of (s, t)),
    and asymptotically valid for any mean-zero x: the flip distribution has the null variance
    2 sum_{i != j} (x_i . x_j)^2 of T. Unlike Hotelling's T^2 it needs no inverse covariance,
    so it holds with P >> M and with rank-deficient gradients (a bandit's gradients span only
    A directions). One-sided p-value with the +1 correction, (1 + #{T_e >= T}) / (1 + flips).
    A bootstrap CI of ||E x||^2 is no substitute at E x = 0, where the U-statistic is degenerate.
    """
    trace = x.diag().sum()
    stat = x.forms(np.ones((1, x.m)))[0] - trace
    rng = np.random.default_rng(seed)
    null = []
    for start in range(0, flips, 256):
        e = rng.choice([-1.0, 1.0], size=(min(256, flips - start), x.m))
        null.append(x.forms(e) - trace)
    null = np.concatenate(null)
    sd = math.sqrt(2.0 * max(x.offdiag_sq_sum(), 0.0))
    return {
        "statistic": float(stat),
        "z": float(stat / sd) if sd > 0 else float("nan"),
        "p_value": float((1 + np.sum(null >= stat)) / (1 + len(null))),
        "flips": int(len(null)),
    }


def _compare(
    on: _Sums,
    off: _Sums,
    diff: _Sums,
    diff_block: _Quad,
    batch_size: int,
    confidence: float,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """:func:`compare_baseline` from the total sums of g_on, g_off and g_on - g_off (same resamples)."""
    m = on.m
    e = [_moments(x.quad[0], x.sq[0], m, batch_size) for x in (on, off, diff)]
    b = [_moments(x.quad_b[0], x.sq_b[0], m, batch_size) for x in (on, off, diff)]

    def rel(d, o):
        """||E d|| / ||E g_off|| from squared norms (negative estimates of the numerator clipped at 0)."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.clip(d, 0, None)) / np.sqrt(np.where(np.asarray(o) > 0, o, np.nan))

    test = _sign_flip_test(diff_block, reps, seed + 1)
    return {
        "n_samples": m,
        "batch_size": batch_size,
        "confidence": confidence,
        "unbiasedness": {
            **test,
            "method": "sign-flip test of sum_{i!=j} d_i.d_j, d = g_on - g_off",
            "agree": bool(test["p_value"] >= 1 - confidence),
        },
        "mean_diff_sq_norm": _est(e[2]["ms"], b[2]["ms"], confidence, m, center=e[2]["ms_plug"]),
        "relative_mean_diff": _est(
            float(rel(e[2]["ms"], e[1]["ms"])),
            rel(b[2]["ms"], b[1]["ms"]),
            confidence,
            m,
            center=float(rel(e[2]["ms_plug"], e[1]["ms_plug"])),
            floor=0.0,
        ),
        "variance_ratio": _est(
            float(_ratio(e[0]["tv"], e[1]["tv"])), _ratio(b[0]["tv"], b[1]["tv"]), confidence, m
        ),
        # The standard error of mean(d) in norm, sqrt(tr Cov d / M), in units of ||E g_off||: a
        # difference of the means much below it cannot be told from noise with M draws, and a
        # relative_mean_diff of that order is what noise alone produces.
        "noise_floor": float(
            rel(e[2]["tv"] * batch_size / m, e[1]["ms"]) if np.isfinite(e[2]["tv"]) else np.nan
        ),
    }


def compare_baseline(
    g_on: Tensor, g_off: Tensor, batch_size: int, confidence: float = 0.95, reps: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Baseline on vs off on the SAME draws (row i of both from the same (s_i, t_i, eps_i)).

    - ``unbiasedness``: sign-flip test (:func:`_sign_flip_test`) that E[g_on - g_off] = 0;
      ``agree`` is True when p >= 1 - confidence, i.e. the difference of the means is within
      what sampling noise explains at that level.
    - ``mean_diff_sq_norm``: ||E[g_on - g_off]||^2 (unbiased; basic bootstrap CI, for its size).
    - ``relative_mean_diff``: ||E[g_on - g_off]|| / ||E g_off|| from the unbiased squared norms
      (negative estimates of the numerator clipped at 0; NaN when ||E g_off||^2 is not
      estimated positive).
    - ``variance_ratio``: tr Cov g_on / tr Cov g_off (B cancels), with a paired bootstrap CI:
      the same rows are resampled for both, so their correlation is kept.
    - ``noise_floor``: sqrt(tr Cov d / M) / ||E g_off||, the standard error of the mean
      difference relative to the gradient: what the test can resolve with M draws.
    """
    _check_rows(g_on, batch_size)
    if g_off.shape != g_on.shape:
        raise ValueError(
            f"g_on and g_off must have the same shape (same draws), got {tuple(g_on.shape)} "
            f"and {tuple(g_off.shape)}"
        )
    _check_rows(g_off, batch_size)
    whole: Layers = [("all", slice(0, g_on.shape[1]))]
    blocks = _quads(g_on, whole) + _quads(g_off, whole) + _quads(g_on - g_off, whole)
    sums = _sums(blocks, reps, seed)
    return _compare(
        sums.pick([0]), sums.pick([1]), sums.pick([2]), blocks[2], batch_size, confidence, reps, seed
    )
