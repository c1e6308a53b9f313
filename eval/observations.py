"""One flat observation vector for every environment family, shared by datasets and rollouts.

Training data and evaluation must see the same vector. Goal-conditioned environments
(Gymnasium-Robotics AntMaze, and Minari's AntMaze datasets) return dict observations:
we use ``achieved_goal`` (the ant's x, y), ``observation`` (its joints) and
``desired_goal``. The first two are D4RL's 29-dimensional AntMaze state; the goal is
appended because Gymnasium's mazes may move it.
"""

from __future__ import annotations

import numpy as np

GOAL_KEYS = ("achieved_goal", "observation", "desired_goal")


def flatten_observation(obs) -> np.ndarray:
    """A float32 array (..., dim): arrays pass through, dicts are concatenated in ``GOAL_KEYS`` order."""
    if isinstance(obs, dict):
        keys = [k for k in GOAL_KEYS if k in obs] or sorted(obs)
        return np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in keys], axis=-1)
    return np.asarray(obs, dtype=np.float32)
