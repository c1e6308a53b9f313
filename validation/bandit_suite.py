"""Run SRPO on every exact-score bandit and measure how far each variant lands from the truth.

Per shape and seed, three policies are extracted with the same E6 options:

- ``exact``:  exact eps* and exact Q, the reference (only SGD noise remains);
- ``learned_score``: the learned eps_psi of the real behavior stage, exact Q
  (isolates the behavior model's contribution to the error);
- ``pipeline``: the real pipeline, learned eps_psi and the learned IQL critic.

Each is reported as its distance to the optimum of the exact-score surrogate.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srpo import __version__, artifacts
from srpo.config import make_config
from srpo.train import train, train_policy
from validation import bandits


def run_shape(shape: str, profile: str, seed: int, work: Path, overrides: dict[str, str] | None = None,
              progress: bool = False) -> dict[str, Any]:
    """All three extractions for one bandit and seed; checkpoints under ``work``."""
    task = f"bandit-{shape}"
    bandit = bandits.get_bandit(task)
    cfg = make_config(task, profile, seed, overrides)
    data = bandits.make_dataset(bandit, 10_000, seed)
    optimum = bandits.surrogate_optimum(bandit, cfg.policy)
    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    result = train(cfg, data, work / "pipeline", cpu, progress=progress)
    exact_pi, _ = train_policy(cfg, data, bandits.ExactNoisePredictor(bandit), bandits.ExactCritic(bandit),
                               work / "exact", cpu, progress=progress)
    learned_pi, _ = train_policy(cfg, data, result.modules["behavior"], bandits.ExactCritic(bandit),
                                 work / "learned_score", cpu, progress=progress)
    return {
        "task": task,
        "seed": seed,
        "optimum": {"action": optimum.action.tolist(), "value": optimum.value,
                    "n_local_optima": len(optimum.local_optima)},
        "exact": bandits.policy_report(bandit, exact_pi, cfg.policy, optimum),
        "learned_score": bandits.policy_report(bandit, learned_pi, cfg.policy, optimum),
        "pipeline": bandits.policy_report(bandit, result.policy, cfg.policy, optimum),
        "behavior_final_loss": result.histories["behavior"][-1]["loss"] if result.histories["behavior"] else None,
        "wall_s": time.perf_counter() - t0,
    }


def run_suite(profile: str, seeds: list[int], out: Path, work: Path, shapes: list[str] | None = None,
              overrides: dict[str, str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Every shape x seed; writes ``out`` (JSON) atomically with a per-shape summary."""
    shapes = shapes or sorted(bandits.BANDITS)
    runs = []
    for shape in shapes:
        for seed in seeds:
            runs.append(run_shape(shape, profile, seed, work / shape / f"seed{seed}", overrides, progress))
    summary = {}
    for shape in shapes:
        rows = [r for r in runs if r["task"] == f"bandit-{shape}"]
        summary[shape] = {
            variant: {
                "mean_distance": float(np.mean([r[variant]["distance_to_optimum"] for r in rows])),
                "max_distance": float(np.max([r[variant]["distance_to_optimum"] for r in rows])),
                "n_seeds": len(rows),
            }
            for variant in ("exact", "learned_score", "pipeline")
        }
    report = {
        "profile": profile,
        "overrides": overrides or {},
        "seeds": seeds,
        "summary": summary,
        "runs": runs,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "srpo_version": __version__,
    }
    artifacts.write_json(out, report)
    return report
