"""Rebuild a trained deterministic policy from a ``policy.pt`` checkpoint written by ``srpo train``."""

from __future__ import annotations

from pathlib import Path

import torch

from srpo import artifacts
from srpo.policy import DeterministicPolicy


def policy_path(checkpoint: str | Path) -> Path:
    """A run directory or a ``policy.pt``; raises with a hint when there is none."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "policy.pt"
    if not path.exists():
        raise FileNotFoundError(f"no policy checkpoint at {path}; train first with `srpo train`")
    return path


def load_policy(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[DeterministicPolicy, dict]:
    """The policy module (eval mode) and the checkpoint's metadata (config, step, done)."""
    path = policy_path(checkpoint)
    ckpt = artifacts.load_torch(path)
    if ckpt.get("stage") != "policy":
        raise ValueError(f"{path} is a {ckpt.get('stage')!r} checkpoint; pass a policy.pt")
    weights = ckpt["modules"]["policy"]
    linear = [k for k in weights if k.endswith(".weight")]
    state_dim, action_dim = weights[linear[0]].shape[1], weights[linear[-1]].shape[0]
    pi = DeterministicPolicy(state_dim, action_dim, tuple(ckpt["config"]["policy"]["hidden"]))
    pi.load_state_dict(weights)
    return pi.to(device).eval(), {k: ckpt[k] for k in ("config", "step", "done")}
