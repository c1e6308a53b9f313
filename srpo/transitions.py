"""The offline dataset as the training stages see it: transitions (s, a, r, s', done)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Transitions:
    """A validated offline dataset (method §1). Arrays are float32 numpy, one row per step.

    ``terminals`` marks true environment terminations (bootstrapping stops there);
    ``timeouts`` marks truncations (episode boundary, but the value still bootstraps).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    name: str = "unnamed"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.observations)
        if n == 0:
            raise ValueError(f"dataset {self.name!r} is empty")
        if self.observations.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(
                f"dataset {self.name!r}: observations and actions must be 2-D (steps, dim), got "
                f"{self.observations.shape} and {self.actions.shape}"
            )
        expected = {
            "actions": (n, self.actions.shape[1]),
            "rewards": (n,),
            "next_observations": self.observations.shape,
            "terminals": (n,),
            "timeouts": (n,),
        }
        for key, shape in expected.items():
            got = getattr(self, key).shape
            if got != shape:
                raise ValueError(
                    f"dataset {self.name!r}: {key} has shape {got}, expected {shape} to match observations"
                )
        for key in ("observations", "actions", "rewards", "next_observations"):
            arr = getattr(self, key)
            if not np.all(np.isfinite(arr)):
                bad = int(np.sum(~np.isfinite(arr)))
                raise ValueError(
                    f"dataset {self.name!r}: {key} contains {bad} NaN/inf values; clean the dataset first"
                )
        worst = float(np.abs(self.actions).max())
        if worst > 1.0 + 1e-6:
            raise ValueError(
                f"dataset {self.name!r}: actions must lie in [-1, 1] (method §1), found |a| = {worst:.4f}; "
                "rescale the action space before training"
            )

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def state_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def fingerprint(self) -> str:
        """A short content hash of the arrays: a checkpoint is only resumed on the data it was trained on."""
        h = hashlib.sha1()
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            arr = np.ascontiguousarray(getattr(self, key))
            h.update(f"{key}{arr.shape}{arr.dtype}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()[:16]

    @property
    def episode_ends(self) -> np.ndarray:
        return np.logical_or(self.terminals > 0, self.timeouts > 0)

    def to_tensors(
        self, device: torch.device, dtype: torch.dtype, rewards: np.ndarray | None = None
    ) -> dict[str, Tensor]:
        """Tensors on ``device`` for on-device batch sampling; ``rewards`` may be preprocessed ones."""

        def as_t(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

        return {
            "obs": as_t(self.observations),
            "act": as_t(self.actions),
            "rew": as_t(self.rewards if rewards is None else rewards),
            "next_obs": as_t(self.next_observations),
            "done": as_t(self.terminals > 0),
        }
