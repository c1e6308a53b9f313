"""Exact-score 2-D bandit suite: the ground truth for every score and policy check.

Each bandit has a single (dummy) state, a behavior distribution mu(a) that is a
Gaussian mixture on [-1, 1]^2, and a known reward Q(a). Because mu_t is again a
mixture (SPEC §2), eps*(a_t, t) is exact at every t, and so is the SRPO surrogate
that E6 ascends. Writing omega-weighted KL ensembles as an objective in a:

    J(a) = beta Q(a) + E_t [ w(t) sigma_t / alpha_t  E_eps log mu_t(alpha_t a + sigma_t eps) ],

whose gradient is beta grad Q(a) - E_{t,eps} w(t) eps*(alpha_t a + sigma_t eps, t): the
expectation of E6 (the baseline term has mean zero). :func:`surrogate_objective`
evaluates J by Gauss-Legendre quadrature over t and Gauss-Hermite quadrature over
eps, so it is deterministic, and :func:`surrogate_optimum` maximizes it from many
starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from srpo import mixture, policy as srpo_policy, schedule
from srpo.config import PolicyConfig
from srpo.mixture import GaussianMixture
from srpo.transitions import Transitions

STATE_DIM = 1  # one dummy state, all zeros: a bandit


@dataclass(frozen=True)
class Bandit:
    """A behavior mixture and a quadratic reward Q(a) = -||a - goal||^2."""

    name: str
    behavior: GaussianMixture
    goal: tuple[float, float]

    def reward(self, action: Tensor) -> Tensor:
        goal = torch.as_tensor(self.goal, dtype=action.dtype, device=action.device)
        return -((action - goal) ** 2).sum(-1)

    def reward_grad(self, action: Tensor) -> Tensor:
        goal = torch.as_tensor(self.goal, dtype=action.dtype, device=action.device)
        return -2.0 * (action - goal)


def _iso(means: list[tuple[float, float]], std: float, weights: list[float] | None = None) -> GaussianMixture:
    k = len(means)
    w = torch.tensor(weights if weights is not None else [1.0 / k] * k, dtype=torch.float64)
    return GaussianMixture(w / w.sum(), torch.tensor(means, dtype=torch.float64), std**2 * torch.eye(2, dtype=torch.float64).repeat(k, 1, 1))


def _rotated_cov(angle: float, std_major: float, std_minor: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return rot @ torch.diag(torch.tensor([std_major**2, std_minor**2], dtype=torch.float64)) @ rot.T


def _ring8() -> Bandit:
    means = [(0.8 * math.cos(2 * math.pi * k / 8), 0.8 * math.sin(2 * math.pi * k / 8)) for k in range(8)]
    return Bandit("ring8", _iso(means, 0.05), goal=(1.0, 0.35))


def _grid25() -> Bandit:
    pts = [-0.8, -0.4, 0.0, 0.4, 0.8]
    return Bandit("grid25", _iso([(x, y) for x in pts for y in pts], 0.04), goal=(0.7, 1.2))


def _aniso2() -> Bandit:
    means = torch.tensor([[-0.45, 0.0], [0.45, 0.0]], dtype=torch.float64)
    covs = torch.stack([_rotated_cov(math.pi / 4, 0.15, 0.03), _rotated_cov(-math.pi / 4, 0.15, 0.03)])
    mix = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), means, covs)
    return Bandit("aniso2", mix, goal=(0.2, 1.0))


def _unequal6() -> Bandit:
    means = [(-0.6, -0.5), (0.1, -0.6), (0.6, -0.1), (0.4, 0.6), (-0.3, 0.5), (-0.7, 0.1)]
    weights = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]
    return Bandit("unequal6", _iso(means, 0.06, weights), goal=(0.3, 1.1))


BANDITS: dict[str, Bandit] = {b.name: b for b in (_ring8(), _grid25(), _aniso2(), _unequal6())}


def get_bandit(task: str) -> Bandit:
    """The bandit for a task name like ``bandit-ring8``."""
    name = task.removeprefix("bandit-")
    if name not in BANDITS:
        raise ValueError(f"unknown bandit {task!r}; known: {', '.join('bandit-' + b for b in BANDITS)}")
    return BANDITS[name]


def make_dataset(bandit: Bandit, n: int, seed: int) -> Transitions:
    """n one-step episodes: s = 0, a ~ mu, r = Q(a), terminal. Samples outside [-1, 1]^2 are redrawn."""
    gen = torch.Generator().manual_seed(seed)
    kept: list[Tensor] = []
    have = 0
    while have < n:
        a = bandit.behavior.sample(2 * n, gen)
        a = a[(a.abs() <= 1.0).all(-1)]
        kept.append(a)
        have += len(a)
    actions = torch.cat(kept)[:n]
    rewards = bandit.reward(actions)
    obs = np.zeros((n, STATE_DIM), dtype=np.float32)
    return Transitions(
        observations=obs,
        actions=actions.float().numpy(),
        rewards=rewards.float().numpy(),
        next_observations=obs.copy(),
        terminals=np.ones(n, dtype=np.float32),
        timeouts=np.zeros(n, dtype=np.float32),
        name=f"bandit-{bandit.name}",
        info={"kind": "bandit", "seed": seed, "goal": bandit.goal},
    )


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


def surrogate_objective(bandit: Bandit, actions: Tensor, pc: PolicyConfig, n_t: int = 24, n_eps: int = 8) -> Tensor:
    """J(a) for actions (M, 2), by quadrature (module docstring). Differentiable in ``actions``."""
    mix = bandit.behavior.to(dtype=actions.dtype)
    ts, wt = (q.to(actions.dtype) for q in _t_quadrature(pc, n_t))
    eps, we = (q.to(actions.dtype) for q in _eps_quadrature(n_eps))
    a_t, s_t = schedule.alpha(ts), schedule.sigma(ts)
    # Points (T, M, E, 2): every action diffused to every t node with every eps node.
    x = a_t[:, None, None, None] * actions[None, :, None, :] + s_t[:, None, None, None] * eps[None, None]
    logp = mixture.log_prob_grid(mix, x.reshape(len(ts), -1, 2), ts).reshape(x.shape[:3])
    scale = srpo_policy.weight(ts, pc.weighting) * s_t / a_t
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


def policy_report(bandit: Bandit, policy: torch.nn.Module, pc: PolicyConfig, optimum: SurrogateOptimum) -> dict:
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
        "optimum_distance_to_nearest_mode": float(torch.linalg.norm(bandit.behavior.means - optimum.action, dim=-1).min()),
        "policy_distance_to_nearest_mode": nearest_mode,
    }
