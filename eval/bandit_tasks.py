"""The exact-score 2-D bandit tasks (``bandit-*``): a behavior mixture, a known reward, a dataset.

Each bandit has a single (dummy) state, a behavior distribution mu(a) that is a Gaussian
mixture on [-1, 1]^2, and a known reward Q(a) = -||a - goal||^2. Because mu_t is again a
mixture (docs/method.md §2), the score is exact at every t: :mod:`srpo_bench.validation.bandits`
builds the exact references (score, critic, surrogate optimum) on these tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

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
    return GaussianMixture(
        w / w.sum(),
        torch.tensor(means, dtype=torch.float64),
        std**2 * torch.eye(2, dtype=torch.float64).repeat(k, 1, 1),
    )


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
