"""Deterministic policy rollouts on Gymnasium vector environments, with per-episode records.

Each of N episodes has an explicit seed (``seed + i``), so an evaluation is a fixed
function of the policy and the seed. Episodes run in batches of ``num_envs`` parallel
environments; each environment contributes exactly one episode per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from eval.references import Reference

# Task family -> Gymnasium environment id (MuJoCo v5: what Minari's regenerated datasets use).
GYM_ENV_IDS: dict[str, str] = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
}

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvaluationResult:
    """Per-episode returns, lengths and seeds; normalized scores when a reference exists."""

    env_id: str
    returns: np.ndarray
    lengths: np.ndarray
    seeds: np.ndarray
    reference: Reference | None

    @property
    def normalized(self) -> np.ndarray | None:
        return None if self.reference is None else self.reference.normalize(self.returns)

    def to_dict(self) -> dict:
        return {
            "env_id": self.env_id,
            "episodes": len(self.returns),
            "returns": self.returns.tolist(),
            "lengths": self.lengths.tolist(),
            "seeds": self.seeds.tolist(),
            "mean_return": float(self.returns.mean()),
            "normalized": None if self.normalized is None else self.normalized.tolist(),
            "mean_normalized": None if self.normalized is None else float(self.normalized.mean()),
            "reference": None if self.reference is None else vars(self.reference),
        }


def env_id_for_task(task: str) -> str:
    """The Gymnasium id evaluating a locomotion task (``hopper-medium`` -> ``Hopper-v5``)."""
    family = task.split("-")[0]
    if family not in GYM_ENV_IDS:
        raise ValueError(f"no evaluation environment for task {task!r}; known families: {', '.join(GYM_ENV_IDS)}")
    return GYM_ENV_IDS[family]


def evaluate(
    policy: Policy,
    env_id: str,
    episodes: int,
    seed: int = 0,
    num_envs: int = 8,
    reference: Reference | None = None,
    max_episode_steps: int | None = None,
) -> EvaluationResult:
    """Run ``episodes`` episodes of ``policy`` (observations -> actions in [-1, 1]).

    Actions are mapped affinely from [-1, 1] to the environment's action box.
    """
    import gymnasium as gym

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    returns, lengths, seeds = [], [], []
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    for start in range(0, episodes, num_envs):
        n = min(num_envs, episodes - start)
        batch_seeds = [seed + start + i for i in range(n)]
        envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", **kwargs)
        try:
            low, high = envs.single_action_space.low, envs.single_action_space.high
            obs, _ = envs.reset(seed=batch_seeds)
            ret, length = np.zeros(n), np.zeros(n, dtype=np.int64)
            active = np.ones(n, dtype=bool)
            while active.any():
                act = np.clip(np.asarray(policy(obs), dtype=np.float64), -1.0, 1.0)
                obs, reward, term, trunc, _ = envs.step(low + (act + 1.0) * 0.5 * (high - low))
                ret += np.where(active, reward, 0.0)
                length += active
                active &= ~(term | trunc)  # later steps of a finished env belong to its next episode
        finally:
            envs.close()
        returns.append(ret)
        lengths.append(length)
        seeds.extend(batch_seeds)
    return EvaluationResult(env_id, np.concatenate(returns), np.concatenate(lengths), np.array(seeds), reference)


def torch_policy(module, device: str = "cpu") -> Policy:
    """Wrap a deterministic torch policy (states -> actions) as a numpy policy."""
    import torch

    param = next(module.parameters())

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return module(torch.as_tensor(obs, dtype=param.dtype, device=param.device)).cpu().numpy()

    return act
