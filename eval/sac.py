"""Soft actor-critic (Haarnoja et al. 2018), the online agent behind our D4RL-style datasets.

D4RL recorded its locomotion datasets from one SAC run per environment (SPEC §8).
This is a lean single-process SAC: Gymnasium vector environments, a numpy replay
buffer, twin Q with EMA targets, automatic entropy tuning, one update per collected
transition. It keeps policy snapshots with their evaluation returns so that the
generator can pick a "medium" policy later.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from srpo.critic import TwinQ, ema_update
from srpo.networks import mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (Haarnoja et al. 2018, v2 with automatic temperature)."""

    env_steps: int = 1_000_000  # total transitions collected, all envs together
    num_envs: int = 4
    start_steps: int = 5_000  # uniform random actions before the policy acts
    batch_size: int = 256
    lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    tau: float = 0.005
    updates_per_step: float = 1.0  # gradient updates per collected transition
    snapshot_every: int = 10_000  # env steps between policy snapshots (with an evaluation)
    eval_episodes: int = 5
    max_episode_steps: int = 1000

    def __post_init__(self) -> None:
        if self.env_steps < 1 or self.num_envs < 1 or self.batch_size < 1:
            raise ValueError("env_steps, num_envs and batch_size must be >= 1")
        if self.updates_per_step <= 0:
            raise ValueError(f"updates_per_step must be > 0, got {self.updates_per_step}")


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), a in (-1, 1)^d."""

    def __init__(self, state_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.trunk = mlp(state_dim, hidden[:-1], hidden[-1], nn.ReLU, nn.ReLU)
        self.head = nn.Linear(hidden[-1], 2 * action_dim)

    def forward(self, state: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.head(self.trunk(state)).chunk(2, dim=-1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """A reparameterized action and its log-probability (with the tanh change of variables)."""
        mu, log_std = self(state)
        u = mu + log_std.exp() * torch.randn_like(mu)
        a = torch.tanh(u)
        # log det of tanh: sum log(1 - tanh(u)^2) = sum 2 (log 2 - u - softplus(-2u)), stable form.
        logp = (-0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, logp

    def deterministic(self, state: Tensor) -> Tensor:
        return torch.tanh(self(state)[0])


class ReplayBuffer:
    """Chronological transition storage; the order is kept so a prefix is 'the replay up to step k'."""

    def __init__(self, capacity: int, state_dim: int, action_dim: int) -> None:
        self.obs = np.zeros((capacity, state_dim), np.float32)
        self.next_obs = np.zeros((capacity, state_dim), np.float32)
        self.act = np.zeros((capacity, action_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, np.float32)
        self.trunc = np.zeros(capacity, np.float32)
        self.env_index = np.zeros(capacity, np.int64)  # which parallel env produced the step
        self.size = 0

    def add(self, obs, act, rew, next_obs, term, trunc, env_index) -> None:
        n = len(obs)
        if self.size + n > len(self.obs):
            raise RuntimeError("replay buffer is full; raise its capacity")
        s = slice(self.size, self.size + n)
        self.obs[s], self.act[s], self.rew[s], self.next_obs[s], self.term[s], self.trunc[s] = (
            obs, act, rew, next_obs, term, trunc)
        self.env_index[s] = env_index
        self.size += n

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, Tensor]:
        idx = rng.integers(0, self.size, batch)
        return {k: torch.from_numpy(getattr(self, k)[idx]) for k in ("obs", "act", "rew", "next_obs", "term")}


@dataclass
class Snapshot:
    env_step: int
    buffer_size: int  # transitions in the replay buffer when the snapshot was taken
    eval_return: float
    actor_state: dict = field(repr=False)


@dataclass
class SACResult:
    actor: TanhGaussianActor
    buffer: ReplayBuffer
    snapshots: list[Snapshot]
    env_steps_per_s: float
    updates: int
    wall_s: float


def train_sac(
    env_id: str,
    cfg: SACConfig,
    seed: int,
    evaluate_fn: Callable[[Callable[[np.ndarray], np.ndarray], int], float],
    progress: bool = True,
) -> SACResult:
    """Train SAC on ``env_id``; ``evaluate_fn(policy, seed)`` returns a mean evaluation return."""
    import gymnasium as gym

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    envs = gym.make_vec(env_id, num_envs=cfg.num_envs, vectorization_mode="sync",
                        max_episode_steps=cfg.max_episode_steps)
    state_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]
    actor = TanhGaussianActor(state_dim, action_dim, cfg.hidden)
    q = TwinQ(state_dim, action_dim, cfg.hidden)
    q_target = copy.deepcopy(q).requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)
    target_entropy = -float(action_dim)
    opt_actor = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    opt_q = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    opt_alpha = torch.optim.Adam([log_alpha], lr=cfg.lr)
    buffer = ReplayBuffer(cfg.env_steps + cfg.num_envs, state_dim, action_dim)
    snapshots: list[Snapshot] = []

    def policy_np(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    obs, _ = envs.reset(seed=seed)
    after_done = np.zeros(cfg.num_envs, dtype=bool)  # NEXT_STEP autoreset: the next step only resets
    owed_updates, updates, collected = 0.0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.env_steps, desc=f"SAC {env_id}", disable=not progress, dynamic_ncols=True, leave=False)
    next_snapshot = cfg.snapshot_every
    while collected < cfg.env_steps:
        if collected < cfg.start_steps:
            action = rng.uniform(-1.0, 1.0, (cfg.num_envs, action_dim)).astype(np.float32)
        else:
            with torch.no_grad():
                action = actor.sample(torch.as_tensor(obs, dtype=torch.float32))[0].numpy()
        next_obs, reward, term, trunc, _ = envs.step(action)
        keep = ~after_done
        buffer.add(obs[keep], action[keep], reward[keep], next_obs[keep], term[keep], trunc[keep], np.flatnonzero(keep))
        n_new = int(keep.sum())
        collected += n_new
        after_done = term | trunc
        obs = next_obs
        bar.update(n_new)

        if collected >= cfg.start_steps:
            owed_updates += n_new * cfg.updates_per_step
            while owed_updates >= 1.0:
                b = buffer.sample(cfg.batch_size, rng)
                with torch.no_grad():
                    a2, logp2 = actor.sample(b["next_obs"])
                    q1t, q2t = q_target(b["next_obs"], a2)
                    alpha = log_alpha.exp()
                    target = b["rew"] + cfg.gamma * (1.0 - b["term"]) * (torch.minimum(q1t, q2t) - alpha * logp2)
                q1, q2 = q(b["obs"], b["act"])
                q_loss = ((q1 - target) ** 2 + (q2 - target) ** 2).mean()
                opt_q.zero_grad(set_to_none=True)
                q_loss.backward()
                opt_q.step()

                a, logp = actor.sample(b["obs"])
                q.requires_grad_(False)  # the actor loss needs dQ/da only, not gradients for Q's weights
                q1p, q2p = q(b["obs"], a)
                q.requires_grad_(True)
                actor_loss = (alpha * logp - torch.minimum(q1p, q2p)).mean()
                opt_actor.zero_grad(set_to_none=True)
                actor_loss.backward()
                opt_actor.step()

                alpha_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
                opt_alpha.zero_grad(set_to_none=True)
                alpha_loss.backward()
                opt_alpha.step()
                ema_update(q_target, q, cfg.tau)
                owed_updates -= 1.0
                updates += 1

        if collected >= next_snapshot or collected >= cfg.env_steps:
            ret = evaluate_fn(policy_np, seed + 10_000 + len(snapshots))
            snapshots.append(Snapshot(collected, buffer.size, ret, copy.deepcopy(actor.state_dict())))
            bar.set_postfix(eval_return=f"{ret:.0f}")
            next_snapshot += cfg.snapshot_every
    bar.close()
    envs.close()
    wall = time.perf_counter() - t0
    return SACResult(actor, buffer, snapshots, collected / wall, updates, wall)
