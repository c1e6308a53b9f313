"""Exact references on the 2-D bandit tasks: the ground truth for every score and policy check.

The bandits themselves (behavior mixture, reward, dataset) are tasks,
:mod:`srpo_bench.eval.bandit_tasks`. Because each behavior mu_t is again a
mixture (method §2), eps*(a_t, t) is exact at every t, and so is the SRPO surrogate
that E6 ascends. Writing omega-weighted KL ensembles as an objective in a:

    J(a) = beta Q(a) + E_t [ w(t) sigma_t / alpha_t  E_eps log mu_t(alpha_t a + sigma_t eps) ],

whose gradient is beta grad Q(a) - E_{t,eps} w(t) eps*(alpha_t a + sigma_t eps, t): the
expectation of E6 (the baseline term has mean zero). :func:`surrogate_objective`
evaluates J by Gauss-Legendre quadrature over t and Gauss-Hermite quadrature over
eps, so it is deterministic, and :func:`surrogate_optimum` maximizes it from many
starts.

The ground truth shares no code with what it checks: the schedule alpha_t, sigma_t and the
weighting w(t) of J are computed here from their formulas (method §2-§3, :func:`oracle_alpha_sigma`,
:func:`oracle_weight`), not taken from :mod:`srpo.schedule` or :func:`srpo.policy.weight`, so a wrong
weighting in the library moves the policy away from this optimum instead of moving both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from srpo import mixture
from srpo.config import PolicyConfig
from srpo_bench.eval.bandit_tasks import STATE_DIM, Bandit

# The VP-SDE schedule of method §2: log alpha_t = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2.
ORACLE_BETA_MIN, ORACLE_BETA_MAX = 0.1, 20.0


def oracle_alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
    """alpha_t and sigma_t = sqrt(1 - alpha_t^2) from method §2's formula, in float64."""
    t = t.double()
    log_alpha = -(ORACLE_BETA_MAX - ORACLE_BETA_MIN) * t**2 / 4 - ORACLE_BETA_MIN * t / 2
    alpha = torch.exp(log_alpha)
    return alpha, torch.sqrt(1 - alpha**2)


def oracle_weight(t: Tensor, kind: str) -> Tensor:
    """w(t) of method §3: sigma_t^2 ("sigma2"), 1 ("one"), alpha_t / sigma_t ("score"); float64."""
    alpha, sigma = oracle_alpha_sigma(t)
    table = {"sigma2": sigma**2, "one": torch.ones_like(sigma), "score": alpha / sigma}
    if kind not in table:
        raise ValueError(f"unknown weighting {kind!r}; the oracle knows {', '.join(table)}")
    return table[kind]


def _t_quadrature(pc: PolicyConfig, n_t: int) -> tuple[Tensor, Tensor]:
    """Nodes and probability weights for t ~ U(t_range), or the single fixed t."""
    if pc.t_fixed is not None:
        return torch.tensor([pc.t_fixed], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    lo, hi = pc.t_range
    x, w = np.polynomial.legendre.leggauss(n_t)
    t = lo + (hi - lo) * (x + 1) / 2
    return torch.tensor(t), torch.tensor(w / 2)


def _eps_quadrature(n_eps: int) -> tuple[Tensor, Tensor]:
    """Gauss-Hermite (probabilists') product rule for eps ~ N(0, I_2)."""
    x, w = np.polynomial.hermite_e.hermegauss(n_eps)
    w = w / math.sqrt(2 * math.pi)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    ww = np.outer(w, w)
    return torch.tensor(np.stack([xx.ravel(), yy.ravel()], -1)), torch.tensor(ww.ravel())


def surrogate_objective(
    bandit: Bandit, actions: Tensor, pc: PolicyConfig, n_t: int = 24, n_eps: int = 8
) -> Tensor:
    """J(a) for actions (M, 2), by quadrature (module docstring). Differentiable in ``actions``."""
    mix = bandit.behavior.to(dtype=actions.dtype)
    ts, wt = (q.to(actions.dtype) for q in _t_quadrature(pc, n_t))
    eps, we = (q.to(actions.dtype) for q in _eps_quadrature(n_eps))
    a_t, s_t = (q.to(actions.dtype) for q in oracle_alpha_sigma(ts))
    # Points (T, M, E, 2): every action diffused to every t node with every eps node.
    x = a_t[:, None, None, None] * actions[None, :, None, :] + s_t[:, None, None, None] * eps[None, None]
    logp = mixture.log_prob_grid(mix, x.reshape(len(ts), -1, 2), ts).reshape(x.shape[:3])
    scale = oracle_weight(ts, pc.weighting).to(actions.dtype) * s_t / a_t
    smoothed = (logp * we).sum(-1)  # E_eps log mu_t(alpha_t a + sigma_t eps), (T, M)
    return pc.beta * bandit.reward(actions) + ((wt * scale)[:, None] * smoothed).sum(0)


@dataclass(frozen=True)
class SurrogateOptimum:
    action: Tensor  # (2,) the global maximizer found
    value: float
    local_optima: Tensor  # (L, 2) distinct local maximizers, best first


def surrogate_optimum(
    bandit: Bandit, pc: PolicyConfig, n_starts: int = 16, iters: int = 200, seed: int = 0
) -> SurrogateOptimum:
    """Maximize J over (-1, 1)^2 by Adam from a grid of starts (a = tanh(u), as the policy's head)."""
    side = int(math.ceil(math.sqrt(n_starts)))
    g = torch.linspace(-0.9, 0.9, side, dtype=torch.float64)
    starts = torch.cartesian_prod(g, g)
    u = torch.atanh(starts).clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters)
    for _ in range(iters):
        loss = -surrogate_objective(bandit, torch.tanh(u), pc).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        acts = torch.tanh(u)
        vals = surrogate_objective(bandit, acts, pc)
    order = torch.argsort(vals, descending=True)
    distinct: list[Tensor] = []
    for i in order:
        if all(torch.linalg.norm(acts[i] - d) > 1e-2 for d in distinct):
            distinct.append(acts[i])
    best = order[0]
    return SurrogateOptimum(acts[best].detach(), float(vals[best]), torch.stack(distinct).detach())


class ExactNoisePredictor(torch.nn.Module):
    """eps*(a_t, t) of a bandit's behavior mixture, with the NoisePredictor call signature.

    Drop-in replacement for a learned eps_psi in the policy stage: SRPO extraction
    with the exact score is the reference a learned score is compared against.
    """

    def __init__(self, bandit: Bandit) -> None:
        super().__init__()
        self.bandit = bandit
        self.action_dim = bandit.behavior.dim

    def forward(self, a_t: Tensor, state: Tensor, t: Tensor) -> Tensor:
        mix = self.bandit.behavior.to(device=a_t.device, dtype=torch.float64)
        return mixture.exact_eps(mix, a_t.double(), t.double()).to(a_t.dtype)


class ExactCritic(torch.nn.Module):
    """The bandit's true Q(a), exposed like :class:`srpo.critic.Critic` to the policy stage."""

    def __init__(self, bandit: Bandit) -> None:
        super().__init__()
        self.bandit = bandit

    def target_q_mean(self, state: Tensor, action: Tensor) -> Tensor:
        return self.bandit.reward(action)


def policy_report(
    bandit: Bandit, policy: torch.nn.Module, pc: PolicyConfig, optimum: SurrogateOptimum
) -> dict:
    """Where a trained policy's action lies relative to the exact-score surrogate optimum."""
    with torch.no_grad():
        p = next(policy.parameters())
        action = policy(torch.zeros(1, STATE_DIM, device=p.device, dtype=p.dtype))[0].double().cpu()
        value = float(surrogate_objective(bandit, action[None], pc)[0])
        nearest_local = float(torch.linalg.norm(optimum.local_optima - action, dim=-1).min())
        nearest_mode = float(torch.linalg.norm(bandit.behavior.means - action, dim=-1).min())
    return {
        "policy_action": action.tolist(),
        "policy_reward": float(bandit.reward(action)),
        "policy_surrogate": value,
        "optimum_action": optimum.action.tolist(),
        "optimum_surrogate": optimum.value,
        "distance_to_optimum": float(torch.linalg.norm(action - optimum.action)),
        "distance_to_nearest_local_optimum": nearest_local,
        "optimum_distance_to_nearest_mode": float(
            torch.linalg.norm(bandit.behavior.means - optimum.action, dim=-1).min()
        ),
        "policy_distance_to_nearest_mode": nearest_mode,
    }
