"""Rebuild trained modules from the checkpoints ``srpo train`` and the pipeline write.

The architecture of each module is read off its weights (and the stage config stored
with them), so a checkpoint is enough: no dataset or run config is needed to load it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from srpo import artifacts
from srpo.behavior import NoisePredictor
from srpo.critic import Critic
from srpo.policy import DeterministicPolicy
from srpo.stage_loop import SNAPSHOT_DIR, upstream_dir
from srpo_bench.eval.baselines import DiffusionSelectionPolicy


def policy_path(checkpoint: str | Path) -> Path:
    """A run directory or a ``policy.pt``; raises with a hint when there is none."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "policy.pt"
    if not path.exists():
        raise FileNotFoundError(f"no policy checkpoint at {path}; train first with `srpo train`")
    return path


_SNAPSHOT_NAME = re.compile(r"step(\d+)\.pt")


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The policy snapshots of a run, ``[(step, path), ...]`` sorted by step ([] if it kept none).

    ``run_dir`` is a run (seed) directory or its ``policy.pt``; the snapshots are
    ``<run_dir>/snapshots/step<NNNNNNN>.pt`` (:func:`srpo.stage_loop.snapshot_path`), written
    every ``policy.snapshot_every`` steps and at the last, each loadable by :func:`load_policy`.
    """
    path = Path(run_dir)
    directory = (path.parent if path.suffix == ".pt" else path) / SNAPSHOT_DIR
    if not directory.is_dir():
        return []
    found = [(_SNAPSHOT_NAME.fullmatch(f.name), f) for f in directory.iterdir()]
    return sorted((int(m.group(1)), f) for m, f in found if m is not None)


def _load_stage(path: Path, stage: str) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no {stage} checkpoint at {path}; run the {stage} stage first")
    ckpt = artifacts.load_torch(path)
    if ckpt.get("stage") != stage:
        raise ValueError(f"{path} is a {ckpt.get('stage')!r} checkpoint, expected {stage!r}")
    if not ckpt.get("done"):
        raise ValueError(f"{path} is unfinished (step {ckpt.get('step')}); finish the {stage} stage first")
    return ckpt


def load_behavior(path: str | Path, device: str | torch.device = "cpu") -> NoisePredictor:
    """The behavior model eps_psi of a finished ``behavior.pt`` (eval mode)."""
    ckpt = _load_stage(Path(path), "behavior")
    w, bc = ckpt["modules"]["model"], ckpt["config"]["behavior"]
    action_dim, width = w["out.1.weight"].shape
    time_hidden, time_features = w["time_embed.1.weight"].shape
    state_dim = w["inp.weight"].shape[1] - action_dim - time_hidden
    model = NoisePredictor(
        state_dim,
        action_dim,
        width,
        bc["n_blocks"],
        bc["dropout"],
        time_features,
        bc["time_scale"],
        time_hidden,
    )
    model.load_state_dict(w)
    return model.to(device).eval()


def load_critic(path: str | Path, device: str | torch.device = "cpu") -> Critic:
    """The IQL critic (twin Q, target Q, V) of a finished ``critic.pt`` (eval mode)."""
    ckpt = _load_stage(Path(path), "critic")
    w = ckpt["modules"]["critic"]
    state_dim = w["v.v.0.weight"].shape[1]
    action_dim = w["q.q1.0.weight"].shape[1] - state_dim
    critic = Critic(state_dim, action_dim, tuple(ckpt["config"]["critic"]["hidden"]))
    critic.load_state_dict(w)
    return critic.to(device).eval()


def load_policy(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    upstream: str | Path | dict[str, Path] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict]:
    """The policy (eval mode) and the checkpoint's metadata (config, step, done).

    A trained policy (SRPO, BC, IQL-AWR) is a :class:`DeterministicPolicy`. The diffusion
    baseline has no weights of its own: it is rebuilt from ``behavior.pt`` and ``critic.pt``
    in ``upstream`` (default: the directory above the policy's, the layout of ``srpo train``;
    or ``{"behavior": dir, "critic": dir}``, the pipeline's), and ``seed`` seeds its candidate draws.
    """
    path = policy_path(checkpoint)
    ckpt = artifacts.load_torch(path)
    if ckpt.get("stage") != "policy":
        raise ValueError(f"{path} is a {ckpt.get('stage')!r} checkpoint; pass a policy.pt")
    meta = {k: ckpt[k] for k in ("config", "step", "done")}
    if ckpt.get("method") == "diffusion":
        up = upstream if upstream is not None else path.parent.parent
        sel = ckpt["config"]["baseline"]
        gen = torch.Generator(device=device).manual_seed(seed)
        pi = DiffusionSelectionPolicy(
            load_behavior(upstream_dir(up, "behavior") / "behavior.pt", device),
            load_critic(upstream_dir(up, "critic") / "critic.pt", device),
            sel["n_candidates"],
            sel["solver_steps"],
            gen,
        )
        return pi, meta
    weights = ckpt["modules"]["policy"]
    linear = [k for k in weights if k.endswith(".weight")]
    state_dim, action_dim = weights[linear[0]].shape[1], weights[linear[-1]].shape[0]
    meta.update(state_dim=int(state_dim), action_dim=int(action_dim))
    pi = DeterministicPolicy(state_dim, action_dim, tuple(ckpt["config"]["policy"]["hidden"]))
    pi.load_state_dict(weights)
    return pi.to(device).eval(), meta
