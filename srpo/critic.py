"""IQL critic (Kostrikov et al. 2022), as SRPO uses it (method §4; SRPO §4.3, Eq. 11-12).

Twin Q heads and a state value V. V regresses the min of the target Q heads with
an expectile loss; Q regresses r + gamma (1 - done) V(s'). Target Q networks
track the online ones by EMA. The losses are pure functions of tensors.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from srpo.networks import mlp


class TwinQ(nn.Module):
    """Two independent Q(s, a) heads, each an MLP (method §5: 256-256)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.q1 = mlp(state_dim + action_dim, hidden, 1)
        self.q2 = mlp(state_dim + action_dim, hidden, 1)

    def forward(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([state, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class ValueNet(nn.Module):
    """V(s), an MLP (method §5: 256-256)."""

    def __init__(self, state_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.v = mlp(state_dim, hidden, 1)

    def forward(self, state: Tensor) -> Tensor:
        return self.v(state).squeeze(-1)


class Critic(nn.Module):
    """Online twin Q, its EMA target copy, and V; the object the policy stage queries."""

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.q = TwinQ(state_dim, action_dim, hidden)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNet(state_dim, hidden)

    def target_q_mean(self, state: Tensor, action: Tensor) -> Tensor:
        """Mean of the two target Q heads: the Q that SRPO's policy ascends (method §3)."""
        q1, q2 = self.q_target(state, action)
        return 0.5 * (q1 + q2)


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Asymmetric squared loss L2^tau(u) = |tau - 1(u < 0)| u^2 per sample (method §4)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff * diff


def value_loss(q_target_min: Tensor, v: Tensor, expectile: float) -> Tensor:
    """L2^tau(min_i Qbar_i(s, a) - V(s)) per sample, L_V its mean; the target Q is treated as fixed."""
    return expectile_loss(q_target_min.detach() - v, expectile)


def td_target(reward: Tensor, done: Tensor, v_next: Tensor, gamma: float) -> Tensor:
    """r + gamma (1 - done) V(s'), with no gradient into V."""
    return reward + gamma * (1.0 - done) * v_next.detach()


def q_loss(q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
    """(1/2) sum_i (target - Q_i(s, a))^2 per sample, L_Q its mean: the two heads' squared errors
    averaged, as the authors' code does (method §4)."""
    return 0.5 * ((q1 - target) ** 2 + (q2 - target) ** 2)


def iql_losses(
    critic: Critic,
    state: Tensor,
    action: Tensor,
    reward: Tensor,
    next_state: Tensor,
    done: Tensor,
    expectile: float,
    gamma: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One IQL batch (method §4), per sample: (V loss, Q loss, Q_1). Their means are L_V, L_Q and
    the logged mean Q; minimizing L_V + L_Q updates V and Q jointly."""
    with torch.no_grad():
        q1_t, q2_t = critic.q_target(state, action)
        v_next = critic.v(next_state)
    v_loss = value_loss(torch.minimum(q1_t, q2_t), critic.v(state), expectile)
    q1, q2 = critic.q(state, action)
    q_loss_ = q_loss(q1, q2, td_target(reward, done, v_next, gamma))
    return v_loss, q_loss_, q1


@torch.no_grad()
def ema_(targets: Sequence[Tensor], online: Sequence[Tensor], rate: float) -> None:
    """target <- (1 - rate) target + rate online, in place, per pair of tensors (method §4: rate 0.005)."""
    torch._foreach_lerp_(list(targets), list(online), rate)


def ema_update(target: nn.Module, online: nn.Module, rate: float) -> None:
    """:func:`ema_` over two modules' parameters."""
    ema_(list(target.parameters()), list(online.parameters()), rate)


def segment_returns(rewards: np.ndarray, terminals: np.ndarray, max_episode_steps: int = 1000) -> np.ndarray:
    """Returns of the segments the authors' reward scale is computed over (method §4).

    Scanning the rows in order, a segment ends at a terminal or when it reaches
    ``max_episode_steps`` rows; timeouts are not consulted, and a trailing segment that
    ends neither way is not counted.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    returns, start = [], 0
    for stop in np.flatnonzero(np.asarray(terminals) > 0):  # a stretch [start, stop] ends at a terminal
        while stop - start + 1 > max_episode_steps:  # ... after its full chunks have closed
            returns.append(rewards[start : start + max_episode_steps].sum())
            start += max_episode_steps
        returns.append(rewards[start : stop + 1].sum())
        start = stop + 1
    while len(rewards) - start >= max_episode_steps:  # after the last terminal: full chunks only
        returns.append(rewards[start : start + max_episode_steps].sum())
        start += max_episode_steps
    return np.asarray(returns)


def locomotion_reward_scale(
    rewards: np.ndarray, terminals: np.ndarray, max_episode_steps: int = 1000
) -> float:
    """1000 / (max - min segment return), the authors' locomotion reward scale (method §4)."""
    ret = segment_returns(rewards, terminals, max_episode_steps)
    if len(ret) == 0:
        raise ValueError(
            f"cannot scale rewards: no episode ends at a terminal or reaches {max_episode_steps} rows; "
            "use reward_mode='none' for such a dataset"
        )
    spread = float(ret.max() - ret.min())
    if spread <= 0:
        raise ValueError(
            "cannot scale rewards: every episode has the same return "
            f"({float(ret[0]):.3f}); use reward_mode='none' for such a dataset"
        )
    return 1000.0 / spread


def scale_rewards_locomotion(
    rewards: np.ndarray, terminals: np.ndarray, max_episode_steps: int = 1000
) -> np.ndarray:
    """r <- r * 1000 / (max segment return - min segment return)   (method §4, locomotion)."""
    return rewards * locomotion_reward_scale(rewards, terminals, max_episode_steps)


def shift_rewards_antmaze(rewards: np.ndarray) -> np.ndarray:
    """r <- r - 1   (method §4, AntMaze)."""
    return rewards - 1.0
