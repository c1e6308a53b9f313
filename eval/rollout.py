"""Deterministic policy rollouts on Gymnasium vector environments, with per-episode records.

Each of N episodes has an explicit seed (``seed + i``), so an evaluation is a fixed
function of the policy and the seed. Episodes run in batches of ``num_envs`` parallel
environments; each environment contributes exactly one episode per batch.

Locomotion tasks are scored by return; AntMaze tasks by success (the ant reached the
goal at some step), as D4RL does. AntMaze needs ``gymnasium-robotics``
(``pip install 'srpo-bench[antmaze]'``); without it :func:`env_spec_for_task` raises
:class:`EvaluationUnavailable`, whose message says what to install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from srpo_bench.eval.observations import flatten_observation
from srpo_bench.eval.references import Reference

# Task family -> Gymnasium MuJoCo environment name; the version is appended (env_id_for_task).
GYM_ENV_NAMES: dict[str, str] = {"halfcheetah": "HalfCheetah", "hopper": "Hopper", "walker2d": "Walker2d"}
# The locomotion environment versions an evaluation can use (method §5, evaluation paragraph):
# v4 keeps the MuJoCo models of gym's v3, on which D4RL's -v2 datasets were collected; v5 changes
# them (Walker2d's foot friction, for example) and is what Minari's `mujoco/...` datasets and our
# generated ones are recorded on.
ENV_VERSIONS: tuple[str, ...] = ("v4", "v5")
# Task family -> the Gymnasium id our datasets are generated on (v5).
GYM_ENV_IDS: dict[str, str] = {family: f"{name}-v5" for family, name in GYM_ENV_NAMES.items()}

# AntMaze task -> (Gymnasium-Robotics id, episode length). v4 keeps D4RL's 27-dim ant
# observation; the maze layouts and horizons (700 steps for umaze, 1000 otherwise) are D4RL's.
ANTMAZE_ENV_IDS: dict[str, tuple[str, int]] = {
    "antmaze-umaze": ("AntMaze_UMaze-v4", 700),
    "antmaze-umaze-diverse": ("AntMaze_UMaze-v4", 700),
    "antmaze-medium-play": ("AntMaze_Medium-v4", 1000),
    "antmaze-medium-diverse": ("AntMaze_Medium_Diverse_GR-v4", 1000),
    "antmaze-large-play": ("AntMaze_Large-v4", 1000),
    "antmaze-large-diverse": ("AntMaze_Large_Diverse_GR-v4", 1000),
}

Policy = Callable[[np.ndarray], np.ndarray]
Scoring = Literal["return", "success"]


class EvaluationUnavailable(RuntimeError):
    """The environment cannot be built here (a missing optional dependency); the message says why."""


@dataclass(frozen=True)
class EnvSpec:
    """How to build the evaluation environment of a task and how its episodes are scored."""

    env_id: str
    scoring: Scoring = "return"
    max_episode_steps: int | None = None
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationResult:
    """Per-episode returns, lengths, seeds (AntMaze: successes); normalized scores if a reference exists."""

    env_id: str
    returns: np.ndarray
    lengths: np.ndarray
    seeds: np.ndarray
    reference: Reference | None
    successes: np.ndarray | None = None  # set when the task is scored by success

    @property
    def scores(self) -> np.ndarray:
        """What the reference normalizes: the return, or 1/0 success for success-scored tasks."""
        return self.returns if self.successes is None else self.successes.astype(np.float64)

    @property
    def normalized(self) -> np.ndarray | None:
        return None if self.reference is None else self.reference.normalize(self.scores)

    def to_dict(self) -> dict:
        return {
            "env_id": self.env_id,
            "episodes": len(self.returns),
            "scoring": "return" if self.successes is None else "success",
            "returns": self.returns.tolist(),
            "lengths": self.lengths.tolist(),
            "seeds": self.seeds.tolist(),
            "successes": None if self.successes is None else self.successes.astype(int).tolist(),
            "mean_return": float(self.returns.mean()),
            "success_rate": None if self.successes is None else float(self.successes.mean()),
            "normalized": None if self.normalized is None else self.normalized.tolist(),
            "mean_normalized": None if self.normalized is None else float(self.normalized.mean()),
            "reference": None if self.reference is None else vars(self.reference),
        }


def check_env_version(version: str, where: str = "env_version") -> str:
    """``version`` if it is a known locomotion environment version, else one line saying which are."""
    if version not in ENV_VERSIONS:
        raise ValueError(f"{where} must be one of {', '.join(ENV_VERSIONS)}, got {version!r}")
    return version


def env_id_for_task(task: str, version: str = "v5") -> str:
    """The Gymnasium id evaluating a locomotion task (``hopper-medium``, ``v4`` -> ``Hopper-v4``)."""
    family = task.split("-")[0]
    if family not in GYM_ENV_NAMES:
        raise ValueError(
            f"no evaluation environment for task {task!r}; known families: "
            f"{', '.join(GYM_ENV_NAMES)} and the AntMaze tasks {', '.join(ANTMAZE_ENV_IDS)}"
        )
    return f"{GYM_ENV_NAMES[family]}-{check_env_version(version)}"


def env_spec_for_task(task: str, version: str = "v5") -> EnvSpec:
    """The evaluation environment of a task; AntMaze checks that gymnasium-robotics is importable.

    ``version`` (v4 or v5) picks the locomotion environment; AntMaze's ids are fixed (v4 of
    Gymnasium-Robotics, D4RL's observation and layouts) and ignore it.
    """
    if task in ANTMAZE_ENV_IDS:
        env_id, horizon = ANTMAZE_ENV_IDS[task]
        try:
            import gymnasium as gym
            import gymnasium_robotics
        except ImportError as exc:
            raise EvaluationUnavailable(
                f"skipping the evaluation of {task}: AntMaze needs gymnasium-robotics, which is not "
                "installed "
                f"({exc}). Install it with `pip install 'srpo-bench[antmaze]'` (or `pip install "
                "gymnasium-robotics`)."
            ) from exc
        gym.register_envs(gymnasium_robotics)
        # The goal stays put and reaching it does not end the episode, as in D4RL's AntMaze.
        return EnvSpec(env_id, "success", horizon, {"continuing_task": True, "reset_target": False})
    return EnvSpec(env_id_for_task(task, version))


def evaluate(
    policy: Policy,
    env: str | EnvSpec,
    episodes: int,
    seed: int = 0,
    num_envs: int = 8,
    reference: Reference | None = None,
    max_episode_steps: int | None = None,
) -> EvaluationResult:
    """Run ``episodes`` episodes of ``policy`` (flat observations -> actions in [-1, 1]).

    Actions are mapped affinely from [-1, 1] to the environment's action box. A
    success-scored episode succeeded if the environment reported ``info["success"]``
    at any of its steps.
    """
    import gymnasium as gym

    spec = env if isinstance(env, EnvSpec) else EnvSpec(env)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    horizon = max_episode_steps or spec.max_episode_steps
    kwargs = dict(spec.kwargs) | ({} if horizon is None else {"max_episode_steps": horizon})
    returns, lengths, seeds, successes = [], [], [], []
    for start in range(0, episodes, num_envs):
        n = min(num_envs, episodes - start)
        batch_seeds = [seed + start + i for i in range(n)]
        envs = gym.make_vec(spec.env_id, num_envs=n, vectorization_mode="sync", **kwargs)
        try:
            low, high = envs.single_action_space.low, envs.single_action_space.high
            obs, _ = envs.reset(seed=batch_seeds)
            ret, length = np.zeros(n), np.zeros(n, dtype=np.int64)
            active, success = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
            while active.any():
                act = np.clip(np.asarray(policy(flatten_observation(obs)), dtype=np.float64), -1.0, 1.0)
                obs, reward, term, trunc, info = envs.step(low + (act + 1.0) * 0.5 * (high - low))
                ret += np.where(active, reward, 0.0)
                length += active
                if "success" in info:
                    success |= active & np.asarray(info["success"], dtype=bool)
                active &= ~(term | trunc)  # later steps of a finished env belong to its next episode
        finally:
            envs.close()
        returns.append(ret)
        lengths.append(length)
        successes.append(success)
        seeds.extend(batch_seeds)
    return EvaluationResult(
        spec.env_id,
        np.concatenate(returns),
        np.concatenate(lengths),
        np.array(seeds),
        reference,
        np.concatenate(successes) if spec.scoring == "success" else None,
    )


def torch_policy(module, device: str = "cpu") -> Policy:
    """Wrap a deterministic torch policy (states -> actions) as a numpy policy."""
    import torch

    param = next(module.parameters())

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return module(torch.as_tensor(obs, dtype=param.dtype, device=param.device)).cpu().numpy()

    return act
