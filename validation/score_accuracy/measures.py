"""Score accuracy measured on tensors: the DSM loss per t-bin, the learned against the exact score per t."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srpo import behavior, mixture, schedule
from srpo_bench.eval import bandit_tasks

# Points per model call: bounds memory on large datasets without changing any result.
DEFAULT_CHUNK = 65_536


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_cpu_generator(generator: torch.Generator) -> None:
    # Noise is drawn on the CPU in float64 and then moved: the draws, and so the numbers,
    # are then the same whichever device evaluates the model.
    if generator.device.type != "cpu":
        raise ValueError(
            f"pass a CPU torch.Generator (noise is drawn on the CPU), got one on {generator.device}"
        )


def dsm_loss_per_sample(
    model: nn.Module, states: Tensor, actions: Tensor, t: Tensor, eps: Tensor, chunk_size: int = DEFAULT_CHUNK
) -> Tensor:
    """Per-sample DSM loss (E4, :func:`srpo.behavior.dsm_loss`), shape (N,), for N beyond one batch.

    No mean is taken, so callers can bin, weight or pair it. Evaluated without
    gradients, in eval mode (no dropout; the model's mode is restored afterwards) and
    in chunks of ``chunk_size`` rows. Inputs must share the model's device and dtype.
    """
    n = actions.shape[0]
    if not (states.shape[0] == n and t.shape == (n,) and eps.shape == actions.shape):
        raise ValueError(
            f"expected states (N, ds), actions (N, d), t (N,), eps (N, d) with one N; got "
            f"{tuple(states.shape)}, {tuple(actions.shape)}, {tuple(t.shape)}, {tuple(eps.shape)}"
        )
    out = []
    with torch.no_grad(), _eval_mode(model):
        for i in range(0, n, chunk_size):
            sl = slice(i, i + chunk_size)
            out.append(behavior.dsm_loss(model, states[sl], actions[sl], t[sl], eps[sl]))
    return torch.cat(out) if out else actions.new_zeros(0)


def _check_edges(t_edges: Sequence[float]) -> Tensor:
    e = torch.as_tensor([float(x) for x in t_edges], dtype=torch.float64)
    if e.numel() < 2 or not (e[0] > 0 and e[-1] <= 1 and torch.all(e[1:] > e[:-1])):
        raise ValueError(f"t_edges must be at least 2 increasing times in (0, 1], got {list(t_edges)}")
    return e


def dsm_loss_by_time(
    model: nn.Module,
    states: Tensor,
    actions: Tensor,
    t_edges: Sequence[float],
    draws_per_bin: int,
    generator: torch.Generator,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """DSM loss (E4) per diffusion-time bin [t_k, t_{k+1}).

    Per bin, ``draws_per_bin`` draws of t ~ U(bin) and eps ~ N(0, I), each paired with a
    row of (states, actions): a fresh random permutation of the rows, cycled when
    draws_per_bin > N (every row then serves floor or ceil(draws/N) times), truncated
    when smaller (a random subset without replacement).

    All t and eps are drawn from ``generator`` (CPU) before any row is chosen, so they
    do not depend on N: two datasets evaluated with generators seeded alike see exactly
    the same noise, and their difference (the generalization gap) is paired in noise.

    Returns per bin (lists): ``loss`` (mean of E4), ``loss_se`` (its Monte-Carlo
    standard error; None for a single draw), ``loss_per_dim`` (loss / action_dim) and ``score_loss``, the mean
    of loss / sigma_t^2 = ||s_psi(a_t) + eps / sigma_t||^2, the same loss in score
    units (E5), where errors near t -> 0 are not shrunk by sigma_t^2.
    """
    edges = _check_edges(t_edges)
    if draws_per_bin < 1:
        raise ValueError(f"draws_per_bin must be >= 1, got {draws_per_bin}")
    _check_cpu_generator(generator)
    n, d = actions.shape
    k = edges.numel() - 1
    lo, hi = edges[:-1], edges[1:]
    t_all = lo[:, None] + (hi - lo)[:, None] * torch.rand(
        k, draws_per_bin, generator=generator, dtype=torch.float64
    )
    eps_all = torch.randn(k, draws_per_bin, d, generator=generator, dtype=torch.float64)
    dev, dt = actions.device, actions.dtype
    loss, loss_se, score_loss = [], [], []
    for b in range(k):
        idx = torch.randperm(n, generator=generator)[torch.arange(draws_per_bin) % n].to(dev)
        per = (
            dsm_loss_per_sample(
                model, states[idx], actions[idx], t_all[b].to(dev, dt), eps_all[b].to(dev, dt), chunk_size
            )
            .double()
            .cpu()
        )
        loss.append(float(per.mean()))
        # None, not NaN, for a single draw: records stay strict JSON.
        loss_se.append(float(per.std() / math.sqrt(draws_per_bin)) if draws_per_bin > 1 else None)
        score_loss.append(float((per / schedule.sigma(t_all[b]) ** 2).mean()))
    return {
        "t_edges": edges.tolist(),
        "t_mid": ((lo + hi) / 2).tolist(),
        "loss": loss,
        "loss_se": loss_se,
        "loss_per_dim": [x / d for x in loss],
        "score_loss": score_loss,
        "draws_per_bin": draws_per_bin,
        "n_samples": n,
    }


def _predict(model: nn.Module, a_t: Tensor, states: Tensor, t: Tensor, chunk_size: int) -> Tensor:
    with torch.no_grad(), _eval_mode(model):
        return torch.cat(
            [
                model(a_t[i : i + chunk_size], states[i : i + chunk_size], t[i : i + chunk_size])
                for i in range(0, a_t.shape[0], chunk_size)
            ]
        )


def score_error_by_time(
    model: nn.Module,
    bandit: bandit_tasks.Bandit,
    states: Tensor,
    actions: Tensor,
    t_grid: Sequence[float],
    generator: torch.Generator,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Learned eps_psi against the exact eps* of ``bandit``'s behavior mixture, per t.

    ``actions`` are held-out draws a0 from the mixture (N, d), ``states`` the matching
    dummy states; both in the model's device and dtype. For each t, with eps ~ N(0, I)
    from ``generator`` (CPU, float64):

        a_t = alpha_t a0 + sigma_t eps,   eps_true = eps*(a_t, t) (method §2, float64),
        eps_pred = eps_psi(a_t | s, t)    (the model sees a_t cast to its dtype)

    and reports

    - ``rel_error`` = mean ||eps_pred - eps_true||^2 / mean ||eps_true||^2: the relative
      error of the *score*. Since score = -eps / sigma_t (E5) at a fixed t, the factor
      1/sigma_t^2 cancels in the ratio, so it is the same for eps and for the score;
    - ``cosine``: mean cosine similarity of eps_pred and eps_true (= of the scores);
    - ``eps_mse`` and ``score_mse`` = eps_mse / sigma_t^2 (absolute errors);
    - ``dsm_learned`` and ``dsm_exact``: the DSM loss (E4) at t of eps_psi and of eps*
      on the same (a0, eps). eps* minimizes E4, so dsm_exact is its irreducible floor
      and dsm_learned - dsm_exact estimates eps_mse (their cross term has mean zero).

    The bandit datasets drop the rare draws outside [-1, 1]^2; eps* is that of the
    untruncated mixture, a negligible difference for the suite's mixtures.
    """
    _check_cpu_generator(generator)
    ts = [float(t) for t in t_grid]
    if not ts or not all(0.0 < t <= 1.0 for t in ts):
        raise ValueError(f"t_grid must be non-empty times in (0, 1], got {list(t_grid)}")
    if actions.shape[-1] != bandit.behavior.dim:
        raise ValueError(
            f"actions have dim {actions.shape[-1]}, bandit {bandit.name!r} has {bandit.behavior.dim}"
        )
    dev, dt = actions.device, actions.dtype
    mix = bandit.behavior.to(device=dev, dtype=torch.float64)
    a0 = actions.double()
    n, d = a0.shape
    keys = ("rel_error", "cosine", "eps_mse", "score_mse", "true_sq", "dsm_learned", "dsm_exact")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for t in ts:
        eps = torch.randn(n, d, generator=generator, dtype=torch.float64).to(dev)
        tt = torch.tensor(t, dtype=torch.float64, device=dev)
        a_t = schedule.alpha(tt) * a0 + schedule.sigma(tt) * eps
        # exact_eps with a scalar t factorizes the diffused covariances once for all points.
        eps_true = torch.cat(
            [mixture.exact_eps(mix, a_t[i : i + chunk_size], tt) for i in range(0, n, chunk_size)]
        )
        eps_pred = _predict(model, a_t.to(dt), states, tt.to(dt).expand(n), chunk_size).double()
        err = ((eps_pred - eps_true) ** 2).sum(-1).mean()
        true_sq = (eps_true**2).sum(-1).mean()
        sig2 = schedule.sigma(tt) ** 2
        out["rel_error"].append(float(err / true_sq))
        out["cosine"].append(float(F.cosine_similarity(eps_pred, eps_true, dim=-1).mean()))
        out["eps_mse"].append(float(err))
        out["score_mse"].append(float(err / sig2))
        out["true_sq"].append(float(true_sq))
        out["dsm_learned"].append(float(behavior.denoising_error(eps_pred, eps).mean()))
        out["dsm_exact"].append(float(behavior.denoising_error(eps_true, eps).mean()))
    return {
        "t": ts,
        "sigma": [float(schedule.sigma(torch.tensor(t, dtype=torch.float64))) for t in ts],
        "n_samples": n,
        **out,
    }
