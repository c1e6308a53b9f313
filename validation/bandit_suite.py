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
from srpo.config import RunConfig, make_config
from srpo.train import train, train_behavior, train_policy
from srpo_bench.eval import bandit_tasks
from srpo_bench.eval.stats import Estimate, task_estimate
from srpo_bench.validation import bandits
from srpo_bench.validation.diagnose import score_at_policy


def run_shape(
    shape: str,
    profile: str,
    seed: int,
    work: Path,
    overrides: dict[str, str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """All three extractions for one bandit and seed; checkpoints under ``work``."""
    task = f"bandit-{shape}"
    bandit = bandit_tasks.get_bandit(task)
    cfg = make_config(task, profile, seed, overrides)
    data = bandit_tasks.make_dataset(bandit, 10_000, seed)
    optimum = bandits.surrogate_optimum(bandit, cfg.policy)
    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    result = train(cfg, data, work / "pipeline", cpu, progress=progress)
    exact_pi, _ = train_policy(
        cfg,
        data,
        bandits.ExactNoisePredictor(bandit),
        bandits.ExactCritic(bandit),
        work / "exact",
        cpu,
        progress=progress,
    )
    learned_pi, _ = train_policy(
        cfg,
        data,
        result.modules["behavior"],
        bandits.ExactCritic(bandit),
        work / "learned_score",
        cpu,
        progress=progress,
    )
    return {
        "task": task,
        "seed": seed,
        "optimum": {
            "action": optimum.action.tolist(),
            "value": optimum.value,
            "n_local_optima": len(optimum.local_optima),
        },
        "exact": bandits.policy_report(bandit, exact_pi, cfg.policy, optimum),
        "learned_score": bandits.policy_report(bandit, learned_pi, cfg.policy, optimum),
        "pipeline": bandits.policy_report(bandit, result.policy, cfg.policy, optimum),
        "behavior_final_loss": result.histories["behavior"][-1]["loss"]
        if result.histories["behavior"]
        else None,
        "wall_s": time.perf_counter() - t0,
    }


def run_suite(
    profile: str,
    seeds: list[int],
    out: Path,
    work: Path,
    shapes: list[str] | None = None,
    overrides: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every shape x seed; writes ``out`` (JSON) atomically with a per-shape summary."""
    shapes = shapes or sorted(bandit_tasks.BANDITS)
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
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "srpo_version": __version__,
    }
    artifacts.write_json(out, report)
    return report


def ablation_record(
    shape: str,
    seed: int,
    base: RunConfig,
    variants: dict[str, RunConfig],
    work: Path,
    n_data: int = 10_000,
    progress: bool = False,
) -> dict[str, Any]:
    """Each SRPO variant's policy on one bandit, against the optimum of that variant's exact surrogate.

    ``base`` fixes the behavior model (trained once, shared by the variants, as in the
    pipeline); ``variants`` maps a name to its full RunConfig (same task and seed, other
    policy options). Per variant two policies are extracted with exact Q: with the exact
    score eps* (only the optimizer's and E6's sampling noise remain) and with the learned
    eps_psi. Distances are to the maximizer of the variant's own surrogate J, and to the
    maximizer of ``base``'s J (how far the variant moves the solution). ``score_at_policy``: the
    learned score's error at the learned-score policy's actions against at the data's
    (:func:`.diagnose.score_at_policy`).
    """
    task = f"bandit-{shape}"
    bandit = bandit_tasks.get_bandit(task)
    data = bandit_tasks.make_dataset(bandit, n_data, seed)
    cpu = torch.device("cpu")
    learned, _ = train_behavior(base, data, work, cpu, progress=progress)
    base_opt = bandits.surrogate_optimum(bandit, base.policy)
    model_exact = bandits.ExactNoisePredictor(bandit)
    rows = {}
    for name, cfg in variants.items():
        if cfg.task != task or cfg.seed != seed:
            raise ValueError(
                f"variant {name!r} is configured for {cfg.task} seed {cfg.seed}, not {task} seed {seed}"
            )
        optimum = bandits.surrogate_optimum(bandit, cfg.policy)
        row = {
            "optimum_action": optimum.action.tolist(),
            "optimum_shift": float(torch.linalg.norm(optimum.action - base_opt.action)),
        }
        for kind, model in (("exact", model_exact), ("learned_score", learned)):
            pi, _ = train_policy(
                cfg, data, model, bandits.ExactCritic(bandit), work / name / kind, cpu, progress=progress
            )
            report = bandits.policy_report(bandit, pi, cfg.policy, optimum)
            if kind == "learned_score":  # the learned score where this policy queries it (diagnostics)
                row["score_at_policy"] = score_at_policy(pi, learned, model_exact, data, seed)
            row[kind] = {
                "distance_to_optimum": report["distance_to_optimum"],
                "distance_to_base_optimum": float(
                    torch.linalg.norm(
                        torch.tensor(report["policy_action"], dtype=torch.float64) - base_opt.action
                    )
                ),
                "policy_action": report["policy_action"],
                "policy_reward": report["policy_reward"],
            }
        rows[name] = row
    return {"task": task, "seed": seed, "base_optimum": base_opt.action.tolist(), "variants": rows}


def ablation_summary(
    records: list[dict[str, Any]], confidence: float, reps: int, seed: int
) -> dict[str, Any]:
    """Per bandit and variant: mean distance to the exact-surrogate optimum over seeds, with
    task_estimate's interval (Student-t from 4 seeds, the range below)."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in records}):
        rows = sorted((r for r in records if r["task"] == task), key=lambda r: r["seed"])
        out[task] = {}
        for name in rows[0]["variants"]:
            cell = {"optimum_shift": float(np.mean([r["variants"][name]["optimum_shift"] for r in rows]))}
            for kind in ("exact", "learned_score"):
                x = np.array([r["variants"][name][kind]["distance_to_optimum"] for r in rows])
                est, std = task_estimate(x, confidence)
                cell[kind] = {**est.to_dict(), "std": std}
            out[task][name] = cell
    return out


def ablation_markdown(summary: dict[str, Any], base: str) -> list[str]:
    """The report's table: distance of each variant's policy to its own exact-surrogate optimum."""

    def fmt(d: dict) -> str:
        return Estimate.from_dict(d).format(3)

    L = [
        "### Ablations on the exact-score bandits",
        "",
        "Each variant's policy, extracted with exact Q and either the exact score eps* or the learned "
        "eps_psi "
        "(one behavior model per bandit and seed, shared by the variants), against the maximizer of the "
        "variant's own exact surrogate J (validation/bandits.py): Euclidean distance in action space, mean "
        "over "
        "seeds with its interval (a CI from 4 seeds, a range below). "
        f"'optimum shift': how far the variant's optimum lies from `{base}`'s.",
        "",
        "| bandit | variant | optimum shift | exact score: distance | learned score: distance | runs |",
        "|---|---|---|---|---|---|",
    ]
    for task, variants in summary.items():
        for name, c in variants.items():
            L.append(
                f"| {task} | {name} | {c['optimum_shift']:.3f} | {fmt(c['exact'])} | "
                f"{fmt(c['learned_score'])} "
                f"| {c['exact']['n_runs']} |"
            )
    L.append("")
    return L
