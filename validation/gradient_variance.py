"""Variance of the SRPO policy gradient (E6): what the baseline term and the weighting buy.

method §3 (E6) trains pi_theta with the stochastic gradient

    g(s, t, eps) = [ w(t)(eps_psi(a_t|s,t) - [eps]) - beta grad_a Q(s,a) ]^T d pi_theta(s)/d theta,
    a = pi_theta(s),  a_t = alpha_t a + sigma_t eps,

written here as the gradient of ``srpo.policy.surrogate_loss`` on a batch of one (so it
is what training's autograd hands to Adam: minus the ascent direction of E6). A training
batch averages B such per-sample gradients over independent draws (s, t, eps), so

    E g_B = E g,      Cov g_B = Cov g / B.

method §9 claims that the baseline (subtracting eps, which has mean zero given s) leaves
E g unchanged and reduces its variance. This module measures both, at fixed policy
checkpoints of a real training run:

- :func:`per_sample_gradients`: the per-sample gradients g_i (M, P) for M draws, by
  ``torch.func`` (``vmap`` of ``grad`` over ``functional_call``). Since the regularizer
  direction and grad_a Q are detached in the surrogate, g_i = J_theta pi(s_i)^T d_i with
  d_i = w(t_i)(eps_psi - [eps_i]) - beta grad_a Q computed once, batched, without a graph.
- :func:`batch_gradient_stats`: ||E g||^2 (unbiased), tr Cov g_B, per-layer traces and the
  signal-to-noise ratio SNR = ||E g||^2 / tr Cov g_B, each with a bootstrap CI over the M
  draws. Everything needed is a quadratic form c^T G c in the (per-layer) Gram matrix
  G = g g^T, so a resample costs min(P, M) per row, never a pass over an M x P copy.
- :func:`compare_baseline`: on the same draws, the mean of g_on - g_off (a sign-flip test
  that it is zero, and its size relative to ||E g_off||) and the variance ratio
  tr Cov g_on / tr Cov g_off with a paired bootstrap CI.
- :func:`measure_checkpoint`: all of the above for baseline on/off x every weighting, on
  one set of draws.
- :func:`measure_run`: trains with the real :func:`srpo.train.train_policy`, stopping it
  (``stop_after``) at each checkpoint fraction of the budget and resuming it afterwards,
  so the measured policies are exactly those of an uninterrupted run.
- :func:`measure_bandit` (exact eps* and exact Q: all noise comes from (t, eps)) and
  :func:`measure_task` (learned behavior model and IQL critic, e.g. a locomotion task).
- :func:`summarize`, :func:`plot`, :func:`markdown`: across seeds, a figure, report lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from scipy import stats as sstats
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from srpo import artifacts, policy as srpo_policy
from srpo.config import PolicyConfig, RunConfig
from srpo.policy import WEIGHTINGS, DeterministicPolicy
from srpo.stage_loop import Interrupted, seeded_global_rng, stage_seed, upstream_dir
from srpo.train import load_finished, train_policy
from srpo.transitions import Transitions
from srpo_bench.eval import bandit_tasks
from srpo_bench.eval.stats import task_estimate
from srpo_bench.validation import bandits

Layers = list[tuple[str, slice]]
QUANTITIES = ("total_variance", "snr", "mean_sq_norm")


# ---------------------------------------------------------------------------------------
# Per-sample gradients (E6)
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (no dropout in eps_psi, as in the policy stage), then restore."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@dataclasses.dataclass(frozen=True)
class SurrogateTerms:
    """The theta-independent pieces of E6 for M draws, at the policy's current actions.

    They do not depend on the weighting or the baseline, so one evaluation of eps_psi and
    grad_a Q serves every setting measured on the same draws.
    """

    t: Tensor  # (M,)
    eps: Tensor  # (M, A)
    eps_pred: Tensor  # (M, A) eps_psi(alpha_t pi(s) + sigma_t eps | s, t)
    q_grad: Tensor  # (M, A) grad_a Q(s, a) at a = pi(s), RMS-normalized if pc.normalize_q_grad


@torch.no_grad()
def surrogate_terms(
    policy: nn.Module, behavior_model: nn.Module, critic: Any, states: Tensor, t: Tensor, eps: Tensor,
    pc: PolicyConfig, chunk: int = 4096,
) -> SurrogateTerms:
    """eps_psi and grad_a Q at a = pi(s) for each draw: :func:`srpo.policy.surrogate_inputs`, as training."""
    if not (len(states) == len(t) == len(eps)):
        raise ValueError(f"states, t and eps need one row per draw; got {len(states)}, {len(t)} and {len(eps)}")
    preds, qgs = [], []
    with _eval_mode(policy, behavior_model):
        for i in range(0, len(states), chunk):
            s, tt, e = states[i:i + chunk], t[i:i + chunk], eps[i:i + chunk]
            eps_pred, q_grad = srpo_policy.surrogate_inputs(policy(s), behavior_model, critic.target_q_mean, s, tt, e,
                                                            pc.normalize_q_grad)
            preds.append(eps_pred)
            qgs.append(q_grad)
    return SurrogateTerms(t, eps, torch.cat(preds), torch.cat(qgs))


def surrogate_direction(parts: SurrogateTerms, pc: PolicyConfig, weighting: str, baseline: bool) -> Tensor:
    """d_i = w(t_i)(eps_psi - [eps_i]) - beta grad_a Q: d surrogate_loss / d a on a batch of one (E6)."""
    reg = srpo_policy.behavior_direction(parts.eps_pred, parts.eps, parts.t, weighting, baseline)
    return srpo_policy.action_direction(reg, parts.q_grad, pc.beta)


def parameter_layers(policy: nn.Module) -> Layers:
    """(layer name, slice of the flattened parameter vector) per module owning parameters, in order."""
    layers: Layers = []
    start = 0
    for name, p in policy.named_parameters():
        layer = name.rpartition(".")[0] or name
        stop = start + p.numel()
        if layers and layers[-1][0] == layer:
            layers[-1] = (layer, slice(layers[-1][1].start, stop))
        else:
            layers.append((layer, slice(start, stop)))
        start = stop
    return layers


def policy_vjp(policy: nn.Module, states: Tensor, directions: Tensor, chunk: int = 256) -> tuple[Tensor, Layers]:
    """Per-sample J_theta pi(s_i)^T d_i, flattened to (M, P), with the layer slices.

    It is the per-sample gradient of pi(s_i) . d_i, i.e. of ``surrogate_loss`` on a batch of
    one with d_i as its (detached) direction. ``vmap`` over samples of ``grad`` of a
    ``functional_call``; chunks bound the memory to ``chunk`` x P.
    """
    names = [n for n, _ in policy.named_parameters()]
    params = {n: p.detach() for n, p in policy.named_parameters()}
    buffers = {n: b.detach() for n, b in policy.named_buffers()}

    def one(p: dict[str, Tensor], s: Tensor, d: Tensor) -> Tensor:
        return (functional_call(policy, (p, buffers), (s[None],))[0] * d).sum()

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    out = []
    with _eval_mode(policy):
        for i in range(0, len(states), chunk):
            g = per_sample(params, states[i:i + chunk], directions[i:i + chunk])
            out.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1))
    return torch.cat(out), parameter_layers(policy)


def per_sample_gradients(
    policy: nn.Module, behavior_model: nn.Module, critic: Any, states: Tensor, t: Tensor, eps: Tensor,
    pc: PolicyConfig, *, baseline: bool, weighting: str, chunk: int = 256,
) -> tuple[Tensor, Layers]:
    """Per-sample E6 gradients (M, P) w.r.t. the policy parameters, and the layer slices.

    Row i is the gradient of ``surrogate_loss`` (method §3) on the batch of one (s_i, t_i, eps_i),
    with ``weighting`` and ``baseline`` in place of ``pc``'s (beta and normalize_q_grad come
    from ``pc``). Its mean over a batch is the gradient training computes for that batch.
    """
    parts = surrogate_terms(policy, behavior_model, critic, states, t, eps, pc)
    return policy_vjp(policy, states, surrogate_direction(parts, pc, weighting, baseline), chunk)


def linear_modules(policy: nn.Module) -> list[tuple[str, nn.Linear]] | None:
    """The policy's parameter-owning modules in :func:`parameter_layers` order, if all are nn.Linear."""
    modules = dict(policy.named_modules())
    out = []
    for name, _ in parameter_layers(policy):
        mod = modules.get(name)
        if not isinstance(mod, nn.Linear) or [n for n, _ in mod.named_parameters()] != ["weight", "bias"][
                :len(list(mod.parameters()))]:
            return None
        out.append((name, mod))
    return out


def _linear_factors(
    policy: nn.Module, states: Tensor, directions: Sequence[Tensor]
) -> list[list[tuple[Tensor, Tensor]]]:
    """Per direction set, per linear layer: (delta (M, out), h (M, in [+ 1 for the bias])).

    The per-sample gradient of pi(s_i) . d_i w.r.t. a layer z = W h + b is delta_i h_i^T (and
    delta_i for b), delta_i = d(pi(s_i) . d_i)/d z_i; appending a 1 to h covers the bias. One
    batched forward pass gives every h; one backward pass per direction set gives every delta
    (a sample's delta depends on that sample alone: the policy MLP has no batch coupling).
    """
    mods = linear_modules(policy)
    if mods is None:
        raise ValueError("the factored Grams need a policy whose parameters all belong to nn.Linear modules")
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(name: str):
        def save(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[name], outputs[name] = args[0].detach(), out
        return save

    handles = [mod.register_forward_hook(hook(name)) for name, mod in mods]
    try:
        with torch.enable_grad(), _eval_mode(policy):
            # A graph to the layer outputs, even for a policy with frozen parameters.
            action = policy(states.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    zs = [outputs[name] for name, _ in mods]
    hs = [torch.cat([inputs[n], torch.ones_like(inputs[n][:, :1])], 1) if mod.bias is not None else inputs[n]
          for n, mod in mods]
    result = []
    for k, d in enumerate(directions):
        deltas = torch.autograd.grad((action * d).sum(), zs, retain_graph=k < len(directions) - 1)
        result.append(list(zip(deltas, hs)))
    return result


def linear_layer_grams(policy: nn.Module, states: Tensor, directions: Sequence[Tensor]) -> list[Tensor]:
    """Per-layer Gram matrices (L, M, M) of the per-sample gradients J_theta pi(s_i)^T d_i, for each
    direction set d in ``directions``, without forming the (M, P) gradients.

    With the factors of :func:`_linear_factors` the Gram entries of a layer factor as

        <g_i, g_j>_layer = (delta_i . delta_j)(h_i . h_j + 1)

    (the per-example gradient trick of Goodfellow 2015): M^2 (in + out) work instead of
    M^2 in out. Requires every parameter to live in an nn.Linear (:func:`linear_modules`);
    the result equals the Gram of :func:`policy_vjp`'s rows (checked in the tests).
    """
    return [torch.stack([(dl @ dl.T) * (h @ h.T) for dl, h in f]) for f in _linear_factors(policy, states, directions)]


# ---------------------------------------------------------------------------------------
# Statistics from Gram matrices
# ---------------------------------------------------------------------------------------


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
            block = x[:, c:c + col_chunk]
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
        return _Sums(self.m, self.quad.sum(0, keepdims=True), self.sq.sum(0, keepdims=True),
                     self.quad_b.sum(0, keepdims=True), self.sq_b.sum(0, keepdims=True))


def _sums(blocks: Sequence[_Quad], reps: int, seed: int) -> _Sums:
    """Point and bootstrap sums of each block; resamples from default_rng(seed), shared by all blocks."""
    m = blocks[0].m
    diags = np.stack([q.diag() for q in blocks])
    ones = np.ones((1, m))
    quads, sqs = [], []
    for c in _resample_counts(m, reps, seed):
        quads.append(np.stack([q.forms(c) for q in blocks]))
        sqs.append(diags @ c.T)
    return _Sums(m, np.array([q.forms(ones)[0] for q in blocks]), diags.sum(1), np.concatenate(quads, 1),
                 np.concatenate(sqs, 1))


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
    return {"ms": mean_sq - tr_cov / m, "tv": tr_cov / batch_size,
            "ms_plug": mean_sq, "tv_plug": tr_cov * (m - 1) / m / batch_size}


def _est(value: float, samples: np.ndarray, confidence: float, n: int, center: float | None = None,
         floor: float | None = None) -> dict[str, float]:
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


def _stats(sums: _Sums, names: list[str], sizes: list[int], batch_size: int, confidence: float,
           reps: int) -> dict[str, Any]:
    """The statistics of :func:`batch_gradient_stats` from per-layer sums."""
    m = sums.m
    e, b = _moments(sums.quad, sums.sq, m, batch_size), _moments(sums.quad_b, sums.sq_b, m, batch_size)
    tot = sums.total()
    te, tb = _moments(tot.quad[0], tot.sq[0], m, batch_size), _moments(tot.quad_b[0], tot.sq_b[0], m, batch_size)
    return {
        "n_samples": m,
        "batch_size": batch_size,
        "n_params": int(sum(sizes)),
        "confidence": confidence,
        "reps": reps,
        "mean_sq_norm": _est(te["ms"], tb["ms"], confidence, m, center=te["ms_plug"]),
        "total_variance": _est(te["tv"], tb["tv"], confidence, m),
        "snr": _est(float(_ratio(te["ms"], te["tv"])), _ratio(tb["ms"], tb["tv"]), confidence, m,
                    center=float(_ratio(te["ms_plug"], te["tv_plug"]))),
        "per_layer": {
            name: {"n_params": size, "total_variance": _est(e["tv"][k], b["tv"][k], confidence, m),
                   "mean_sq_norm": _est(e["ms"][k], b["ms"][k], confidence, m, center=e["ms_plug"][k])}
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
    return {"statistic": float(stat), "z": float(stat / sd) if sd > 0 else float("nan"),
            "p_value": float((1 + np.sum(null >= stat)) / (1 + len(null))), "flips": int(len(null))}


def _compare(on: _Sums, off: _Sums, diff: _Sums, diff_block: _Quad, batch_size: int, confidence: float,
             reps: int, seed: int) -> dict[str, Any]:
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
        "unbiasedness": {**test, "method": "sign-flip test of sum_{i!=j} d_i.d_j, d = g_on - g_off",
                         "agree": bool(test["p_value"] >= 1 - confidence)},
        "mean_diff_sq_norm": _est(e[2]["ms"], b[2]["ms"], confidence, m, center=e[2]["ms_plug"]),
        "relative_mean_diff": _est(float(rel(e[2]["ms"], e[1]["ms"])), rel(b[2]["ms"], b[1]["ms"]), confidence, m,
                                   center=float(rel(e[2]["ms_plug"], e[1]["ms_plug"])), floor=0.0),
        "variance_ratio": _est(float(_ratio(e[0]["tv"], e[1]["tv"])), _ratio(b[0]["tv"], b[1]["tv"]), confidence, m),
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
    """
    _check_rows(g_on, batch_size)
    if g_off.shape != g_on.shape:
        raise ValueError(f"g_on and g_off must have the same shape (same draws), got {tuple(g_on.shape)} "
                         f"and {tuple(g_off.shape)}")
    _check_rows(g_off, batch_size)
    whole: Layers = [("all", slice(0, g_on.shape[1]))]
    blocks = _quads(g_on, whole) + _quads(g_off, whole) + _quads(g_on - g_off, whole)
    sums = _sums(blocks, reps, seed)
    return _compare(sums.pick([0]), sums.pick([1]), sums.pick([2]), blocks[2], batch_size, confidence, reps, seed)


# ---------------------------------------------------------------------------------------
# Measuring policies
# ---------------------------------------------------------------------------------------


def draw_samples(
    states_pool: Tensor, action_dim: int, pc: PolicyConfig, n_samples: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """n independent draws (s, t, eps) as training makes them: s uniform over the pool, t as
    :func:`srpo.policy.sample_policy_time` (U(t_range) or t_fixed), eps ~ N(0, I)."""
    dev, dt = states_pool.device, states_pool.dtype
    s = states_pool[torch.randint(len(states_pool), (n_samples,), generator=generator, device=dev)]
    t = srpo_policy.sample_policy_time(n_samples, pc.t_range, pc.t_fixed, generator, dev, dt)
    eps = torch.randn(n_samples, action_dim, generator=generator, device=dev, dtype=dt)
    return s, t, eps


def measure_checkpoint(
    policy: nn.Module, behavior_model: nn.Module, critic: Any, states_pool: Tensor, pc: PolicyConfig,
    n_samples: int = 2048, batch_size: int | None = None, generator: torch.Generator | None = None,
    confidence: float = 0.95, reps: int = 1000, seed: int = 0, weightings: Sequence[str] = WEIGHTINGS,
    chunk: int = 256, method: str = "auto",
) -> dict[str, Any]:
    """Gradient statistics of one policy for baseline on/off x each weighting, on one set of draws.

    Using the same draws for every setting makes the on/off comparison paired and the
    weightings comparable draw by draw. ``batch_size`` defaults to the training batch.
    ``method``: "vmap" forms the per-sample gradients (:func:`policy_vjp`) and, for blocks wider
    than M, their Grams (M^2 P work); "factored" builds the same blocks from layer inputs and
    output gradients (:func:`_linear_factors`; a wide layer's Gram costs M^2 (in + out), ~100x
    less for a 256-256 MLP); "auto" picks "factored" when every parameter is in an nn.Linear.
    Returns ``{"n_samples", "batch_size", "layers", "method", "weightings": {w: {"on", "off", "compare"}}}``.
    """
    batch_size = batch_size or pc.batch_size
    if generator is None:
        generator = torch.Generator(device=states_pool.device).manual_seed(seed)
    with torch.no_grad():
        action_dim = policy(states_pool[:1]).shape[-1]
    s, t, eps = draw_samples(states_pool, action_dim, pc, n_samples, generator)
    parts = surrogate_terms(policy, behavior_model, critic, s, t, eps, pc)
    out: dict[str, Any] = {"n_samples": n_samples, "batch_size": batch_size, "weightings": {}}
    if method not in ("auto", "factored", "vmap"):
        raise ValueError(f"method must be auto, factored or vmap, got {method!r}")
    factored = method == "factored" or (method == "auto" and linear_modules(policy) is not None)
    layers = parameter_layers(policy)
    names, sizes = [n for n, _ in layers], [sl.stop - sl.start for _, sl in layers]
    out["layers"] = [{"name": n, "n_params": k} for n, k in zip(names, sizes)]
    out["method"] = "factored" if factored else "vmap"
    for w in weightings:
        d_on, d_off = surrogate_direction(parts, pc, w, True), surrogate_direction(parts, pc, w, False)
        if not (torch.isfinite(d_on).all() and torch.isfinite(d_off).all()):
            raise ValueError(f"non-finite E6 directions with weighting {w!r}")
        # The blocks of the per-layer sums: layers of g_on, layers of g_off, and g_on - g_off whole.
        if factored:
            f_on, f_off, f_diff = _linear_factors(policy, s, [d_on, d_off, d_on - d_off])
            blocks = [_factored_block([f]) for f in (*f_on, *f_off)] + [_factored_block(f_diff)]
        else:
            g_on, _ = policy_vjp(policy, s, d_on, chunk)
            g_off, _ = policy_vjp(policy, s, d_off, chunk)
            blocks = _quads(g_on, layers) + _quads(g_off, layers) + [_Quad(g_on - g_off)]
            del g_on, g_off
        # One pass of resamples over all blocks gives every statistic (totals add up over
        # layers), all on the same resamples.
        sums = _sums(blocks, reps, seed)
        n_l = len(layers)
        on, off = sums.pick(slice(0, n_l)), sums.pick(slice(n_l, 2 * n_l))
        out["weightings"][w] = {
            "on": _stats(on, names, sizes, batch_size, confidence, reps),
            "off": _stats(off, names, sizes, batch_size, confidence, reps),
            "compare": _compare(on.total(), off.total(), sums.pick([2 * n_l]), blocks[-1], batch_size, confidence,
                                reps, seed),
        }
    return out


def snapshot_steps(total: int, fractions: Sequence[float]) -> list[int]:
    """Distinct training steps round(f * total), sorted; fractions must lie in [0, 1]."""
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"checkpoint fractions must lie in [0, 1], got {list(fractions)}")
    return sorted({int(round(f * total)) for f in fractions})


def initial_policy(cfg: RunConfig, data: Transitions, device: torch.device, dtype: torch.dtype) -> DeterministicPolicy:
    """The policy at step 0, built exactly as ``train_policy`` builds it (same seed, same RNG stream)."""
    with seeded_global_rng(stage_seed(cfg.seed, "policy"), device):
        return DeterministicPolicy(data.state_dim, data.action_dim, cfg.policy.hidden).to(device=device, dtype=dtype)


def _policy_at(step: int, cfg: RunConfig, data: Transitions, behavior_model: nn.Module, critic: Any, work: Path,
               device: torch.device, dtype: torch.dtype, progress: bool) -> DeterministicPolicy:
    """Advance the real training run to ``step`` (train_policy's stop_after) and return its policy there.

    Each snapshot's weights are also kept in ``work/gradient_variance/``, so that a killed
    measurement resumes: train_policy's own checkpoint has by then moved past earlier steps.
    """
    pi = initial_policy(cfg, data, device, dtype)  # forks the global RNG: the caller's stream is untouched
    if step == 0:
        return pi.eval()
    try:
        train_policy(cfg, data, behavior_model, critic, work, device, dtype, progress, stop_after=step)
    except Interrupted:
        pass  # the simulated kill at `step`: its checkpoint (a multiple of checkpoint_every) is kept
    ckpt = artifacts.load_torch(work / "policy.pt")  # train_policy has checked its config against cfg
    snap = work / "gradient_variance" / f"policy_step{step}.pt"
    if ckpt["step"] == step:
        artifacts.save_torch(snap, {"config": ckpt["config"], "step": step, "policy": ckpt["modules"]["policy"]})
        state = ckpt["modules"]["policy"]
    elif snap.exists() and (s := artifacts.load_torch(snap))["config"] == ckpt["config"] and s["step"] == step:
        state = s["policy"]
    else:
        raise ValueError(f"{work / 'policy.pt'} is at step {ckpt['step']}, past the snapshot at step {step}, and no "
                         f"snapshot of step {step} was kept; use an empty work directory")
    pi.load_state_dict(state)
    return pi.eval()


def measure_run(
    cfg: RunConfig, data: Transitions, behavior_model: nn.Module, critic: Any, work: Path,
    fractions: Sequence[float] = (0.1, 0.5, 1.0), n_samples: int = 2048, batch_size: int | None = None,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, progress: bool = False,
    confidence: float = 0.95, reps: int = 1000, seed: int = 0, target: str | None = None,
) -> dict[str, Any]:
    """Train the policy with ``srpo.train.train_policy`` and measure it at ``fractions`` of its steps.

    No second training loop: checkpoint_every is set to the gcd of the snapshot steps (it is
    not part of a checkpoint's config key, so this is the same run), training is stopped with
    ``stop_after`` at each snapshot step (``Interrupted``, checkpoint kept), the policy is read
    from ``work/policy.pt`` and measured, and the next call resumes from there. A fraction of
    0 measures the policy at initialization. Every checkpoint is measured on the same draws
    (a generator seeded from ``seed`` and the run seed), so differences between checkpoints
    are not draw noise; runs with other seeds get independent draws. ``seed`` also seeds the
    bootstrap and the sign flips.
    """
    device = torch.device(device)
    work = Path(work)
    # Draws shared by the checkpoints of this run, independent across runs (run seeds), so
    # that per-seed results, and the p-values combined in summarize(), are independent.
    draw_seed = stage_seed(cfg.seed, f"gradient-variance-{seed}")
    steps = snapshot_steps(cfg.policy.steps, fractions)
    positive = [k for k in steps if k > 0]
    run_cfg = dataclasses.replace(cfg, checkpoint_every=math.gcd(*positive)) if positive else cfg
    pool = data.to_tensors(device, dtype)["obs"]
    checkpoints = []
    for k in steps:
        pi = _policy_at(k, run_cfg, data, behavior_model, critic, work, device, dtype, progress)
        gen = torch.Generator(device=device).manual_seed(draw_seed)
        res = measure_checkpoint(pi, behavior_model, critic, pool, cfg.policy, n_samples, batch_size, gen,
                                 confidence, reps, seed)
        checkpoints.append({"step": k, "fraction": k / cfg.policy.steps if cfg.policy.steps else 0.0, **res})
    return {"target": target or cfg.task, "seed": cfg.seed, "steps": cfg.policy.steps, "measure_seed": seed,
            "draw_seed": draw_seed, "checkpoints": checkpoints, "policy": dataclasses.asdict(cfg.policy)}


def measure_bandit(
    shape: str, seed: int, cfg: RunConfig, work: Path, n_data: int = 10_000, measure_seed: int = 0, **kwargs: Any
) -> dict[str, Any]:
    """:func:`measure_run` on an exact-score bandit: exact eps* and exact Q (validation/bandits.py).

    With the exact score and critic, and the bandit's single (dummy) state, all gradient noise
    comes from sampling (t, eps). The dataset is ``make_dataset(bandit, n_data, seed)``;
    ``cfg`` must be the bandit's config with the same (run) seed. ``measure_seed`` is
    :func:`measure_run`'s ``seed`` (draws and bootstrap); other keywords go to it as well.
    """
    task = shape if shape.startswith("bandit-") else f"bandit-{shape}"
    bandit = bandit_tasks.get_bandit(task)
    if cfg.task != task or cfg.seed != seed:
        raise ValueError(f"cfg is for task {cfg.task!r} seed {cfg.seed}, not {task!r} seed {seed}")
    data = bandit_tasks.make_dataset(bandit, n_data, seed)
    return measure_run(cfg, data, bandits.ExactNoisePredictor(bandit), bandits.ExactCritic(bandit), work,
                       target=task, seed=measure_seed, **kwargs)


def measure_task(
    cfg: RunConfig, data: Transitions, upstream: Path | dict[str, Path], work: Path, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **kwargs: Any
) -> dict[str, Any]:
    """:func:`measure_run` with the finished behavior model and IQL critic in ``upstream`` (a directory or one per stage)."""
    device = torch.device(device)
    behavior_model = load_finished("behavior", cfg, data, upstream_dir(upstream, "behavior"), device, dtype)
    critic = load_finished("critic", cfg, data, upstream_dir(upstream, "critic"), device, dtype)
    return measure_run(cfg, data, behavior_model, critic, work, device=device, dtype=dtype, **kwargs)


# ---------------------------------------------------------------------------------------
# Summary, figure, report lines
# ---------------------------------------------------------------------------------------


def _across(values: list[dict[str, float]], confidence: float, seed: int) -> dict[str, Any]:
    """One run: its within-run bootstrap CI. Several seeds: mean over seeds, percentile-bootstrap CI over seeds."""
    if len(values) == 1:
        return {**values[0], "n_seeds": 1, "ci_over": "samples"}
    x = np.array([v["value"] for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    n_samples = int(values[0]["n_samples"])
    if len(x) == 0:
        return {"value": np.nan, "low": np.nan, "high": np.nan, "n_samples": n_samples, "n_seeds": 0,
                "ci_over": "seeds"}
    est, _ = task_estimate(x, confidence, seed=seed)
    return {"value": est.value, "low": est.low, "high": est.high, "n_samples": n_samples,
            "n_seeds": est.n_runs, "ci_over": "seeds"}


def summarize(records: Sequence[dict[str, Any]], confidence: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Per target x checkpoint x weighting x baseline: tr Cov g_B, SNR and ||E g||^2 with CIs, plus per
    weighting the variance ratio on/off and the unbiasedness check (p-values of several seeds
    combined by Fisher's method, valid for independent runs)."""
    if not records:
        raise ValueError("no records to summarize")
    first = records[0]["checkpoints"][0]
    some_w = next(iter(first["weightings"].values()))
    confidence = confidence if confidence is not None else some_w["on"]["confidence"]
    targets: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in records):
        runs = sorted((r for r in records if r["target"] == target), key=lambda r: r["seed"])
        steps = [c["step"] for c in runs[0]["checkpoints"]]
        if any([c["step"] for c in r["checkpoints"]] != steps for r in runs):
            raise ValueError(f"{target}: runs were measured at different checkpoints")
        cks = []
        for i, step in enumerate(steps):
            per_run = [r["checkpoints"][i] for r in runs]
            ws = list(per_run[0]["weightings"])
            settings, baseline = {}, {}
            for w in ws:
                settings[w] = {side: {q: _across([c["weightings"][w][side][q] for c in per_run], confidence, seed)
                                      for q in QUANTITIES} for side in ("on", "off")}
                for side in ("on", "off"):
                    layers = per_run[0]["weightings"][w][side]["per_layer"]
                    settings[w][side]["per_layer"] = {
                        name: _across([c["weightings"][w][side]["per_layer"][name]["total_variance"] for c in per_run],
                                      confidence, seed) for name in layers}
                comps = [c["weightings"][w]["compare"] for c in per_run]
                ps = [c["unbiasedness"]["p_value"] for c in comps]
                p = ps[0] if len(ps) == 1 else float(sstats.combine_pvalues(ps, method="fisher").pvalue)
                baseline[w] = {
                    "variance_ratio": _across([c["variance_ratio"] for c in comps], confidence, seed),
                    "relative_mean_diff": _across([c["relative_mean_diff"] for c in comps], confidence, seed),
                    "p_value": p, "p_values": ps, "agree": bool(p >= 1 - confidence),
                }
            cks.append({"step": step, "fraction": per_run[0]["fraction"], "n_samples": per_run[0]["n_samples"],
                        "batch_size": per_run[0]["batch_size"], "settings": settings, "baseline": baseline})
        targets[target] = {"seeds": [r["seed"] for r in runs], "steps": runs[0]["steps"], "checkpoints": cks}
    return {"confidence": confidence, "targets": targets}


def _y_scale(all_values: np.ndarray, points: np.ndarray) -> tuple[str, dict[str, float]]:
    """Log scale when everything plotted is positive; else symlog (an unbiased ||E g||^2, so the SNR,
    can be estimated below 0), linear within a power of ten below the smallest nonzero point."""
    finite = all_values[np.isfinite(all_values)]
    if len(finite) and finite.min() > 0:
        return "log", {}
    mags = np.abs(points[np.isfinite(points) & (points != 0)])
    if not len(mags):
        return "linear", {}
    floor = max(float(mags.min()), float(mags.max()) * 1e-4)
    return "symlog", {"linthresh": 10.0 ** math.floor(math.log10(floor))}


def plot(summary: dict[str, Any], path: Path) -> None:
    """tr Cov g_B (log) and SNR against the training step; a colour per weighting, solid = baseline on,
    dashed = off, CI bands; a column per target. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    targets = summary["targets"]
    rows = (("total_variance", "tr Cov $g_B$"), ("snr", "SNR $\\|E g\\|^2 / \\mathrm{tr\\,Cov}\\, g_B$"))
    fig, axes = plt.subplots(len(rows), len(targets), figsize=(3.4 * len(targets) + 1.0, 5.6), squeeze=False)
    for c, (target, tg) in enumerate(targets.items()):
        x = [ck["step"] for ck in tg["checkpoints"]]
        weightings = list(tg["checkpoints"][0]["settings"])
        colors = dict(zip(weightings, sns.color_palette("colorblind", len(weightings))))
        for r, (q, label) in enumerate(rows):
            ax = axes[r][c]
            points, lows = [], []
            for w in weightings:
                for side, ls in (("on", "-"), ("off", "--")):
                    e = [ck["settings"][w][side][q] for ck in tg["checkpoints"]]
                    v = np.array([d["value"] for d in e], dtype=np.float64)
                    points += list(v)
                    lows += [d["low"] for d in e]
                    ax.plot(x, v, ls, marker="o", ms=3, color=colors[w], label=f"{w}, baseline {side}")
                    ax.fill_between(x, [d["low"] for d in e], [d["high"] for d in e], color=colors[w], alpha=0.12)
            scale, kw = _y_scale(np.array(points + lows, dtype=np.float64), np.array(points, dtype=np.float64))
            ax.set_yscale(scale, **kw)
            ax.set_title(target if r == 0 else "", fontsize=9)
            ax.set_ylabel(label if c == 0 else "", fontsize=8)
            ax.set_xlabel("policy step" if r == len(rows) - 1 else "")
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels) // 2, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    conf = 100 * summary["confidence"]
    fig.suptitle(f"E6 per-batch gradient: variance and SNR at policy checkpoints ({conf:.0f}% CI bands)",
                 fontsize=10)
    sns.despine(fig)
    fig.tight_layout()
    try:
        artifacts.save_figure(fig, Path(path))
    finally:
        plt.close(fig)


def _fmt(e: dict[str, float], digits: int = 3) -> str:
    if not np.isfinite(e["value"]):
        return "n/a"
    v = f"{e['value']:.{digits}g}"
    if not (np.isfinite(e["low"]) and np.isfinite(e["high"])):
        return f"{v} [n/a]"
    return f"{v} [{e['low']:.{digits}g}, {e['high']:.{digits}g}]"


def markdown(summary: dict[str, Any]) -> list[str]:
    """Report section body (the caller writes its heading): what was measured, then per target
    (a level-4 heading each) the tables of tr Cov g_B and SNR, the variance ratios on/off, and the
    unbiasedness check stated from the numbers. Norms are written with U+2016 (‖), since a
    pipe would split a markdown table cell."""
    conf = summary["confidence"]
    pc = 100 * conf
    L: list[str] = []
    for target, tg in summary["targets"].items():
        cks = tg["checkpoints"]
        n_seeds = len(tg["seeds"])
        ck0 = cks[0]
        over = (f"{pc:.0f}% percentile-bootstrap CIs of the mean over the {n_seeds} seeds" if n_seeds > 1 else
                f"{pc:.0f}% bootstrap CIs over the {ck0['n_samples']} draws of the one seed (percentile for traces "
                f"and ratios, basic for ‖E g‖² and the SNR)")
        L += [f"#### {target}", "",
              f"Per-sample gradients of the E6 surrogate w.r.t. the policy parameters at {len(cks)} checkpoints "
              f"(steps {', '.join(str(c['step']) for c in cks)} of {tg['steps']}), for {ck0['n_samples']} independent "
              f"draws (s, t, eps) per checkpoint, shared by all settings; the per-batch gradient averages "
              f"B = {ck0['batch_size']} draws, so tr Cov g_B = tr Cov g / B. SNR = ‖E g‖² / tr Cov g_B with "
              f"‖E g‖² estimated without bias. Seeds: {', '.join(map(str, tg['seeds']))}; {over}.", "",
              "| step | weighting | baseline | tr Cov g_B | SNR |", "|---|---|---|---|---|"]
        for ck in cks:
            for w, sides in ck["settings"].items():
                for side in ("on", "off"):
                    d = sides[side]
                    L.append(f"| {ck['step']} | {w} | {side} | {_fmt(d['total_variance'])} | {_fmt(d['snr'])} |")
        last = cks[-1]
        names = list(next(iter(last["settings"].values()))["on"]["per_layer"])
        L += ["", f"Per layer at step {last['step']}: tr Cov g_B restricted to each layer's parameters "
              "(weight and bias), the same CIs.", "",
              "| weighting | baseline | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for w, sides in last["settings"].items():
            for side in ("on", "off"):
                L.append(f"| {w} | {side} | " + " | ".join(_fmt(sides[side]["per_layer"][n]) for n in names) + " |")
        L += ["", f"Baseline on vs off on the same draws: variance ratio tr Cov g_on / tr Cov g_off ({pc:.0f}% CI), "
              f"‖E(g_on - g_off)‖ / ‖E g_off‖, and the sign-flip test of E(g_on - g_off) = 0"
              + (" (p-values of the seeds combined by Fisher's method)" if n_seeds > 1 else "") + ".", "",
              "| step | weighting | variance ratio on/off | ‖E(g_on - g_off)‖ / ‖E g_off‖ | p | means |",
              "|---|---|---|---|---|---|"]
        for ck in cks:
            for w, b in ck["baseline"].items():
                verdict = "agree" if b["agree"] else "differ"
                L.append(f"| {ck['step']} | {w} | {_fmt(b['variance_ratio'])} | {_fmt(b['relative_mean_diff'])} | "
                         f"{b['p_value']:.3g} | {verdict} |")
        L.append("")
        alpha = 1 - conf
        for w in cks[0]["baseline"]:
            ratios = [ck["baseline"][w]["variance_ratio"] for ck in cks]
            ps = [ck["baseline"][w]["p_value"] for ck in cks]
            below = [ck["step"] for ck, r in zip(cks, ratios) if r["high"] < 1]
            above = [ck["step"] for ck, r in zip(cks, ratios) if r["low"] > 1]
            unresolved = [ck["step"] for ck, r in zip(cks, ratios) if not (r["high"] < 1 or r["low"] > 1)]
            differ = [ck["step"] for ck in cks if not ck["baseline"][w]["agree"]]
            steps = lambda xs: ", ".join(map(str, xs))  # noqa: E731
            means = (f"the means with and without the baseline agree at every checkpoint (sign-flip test, "
                     f"smallest p = {min(ps):.3g} >= {alpha:.3g})" if not differ else
                     f"the means differ (p < {alpha:.3g}) at step(s) {steps(differ)}")
            values = [r["value"] for r in ratios]
            parts = [f"variance ratio on/off {min(values):.3g} to {max(values):.3g}"]
            if below:
                parts.append(f"the baseline lowers tr Cov g_B (CI below 1) at step(s) {steps(below)}")
            if above:
                parts.append(f"the baseline raises tr Cov g_B (CI above 1) at step(s) {steps(above)}")
            if unresolved:
                parts.append(f"no resolved effect (CI contains 1) at step(s) {steps(unresolved)}")
            L.append(f"- **{w}**: {means}; " + "; ".join(parts) + ".")
        L.append("")
    return L
