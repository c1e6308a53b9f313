"""One (target, seed) record: eps_psi trained with the real behavior stage, then measured."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from srpo.config import RunConfig
from srpo.stage_loop import stage_seed
from srpo.train import train_behavior
from srpo.transitions import Transitions
from srpo_bench.eval import bandit_tasks
from srpo_bench.validation.score_accuracy.measures import dsm_loss_by_time, score_error_by_time
from srpo_bench.validation.score_accuracy.splits import episode_split

# Held-out bandit actions come from make_dataset with this offset on the run seed, so they
# are fresh draws from the mixture that the training set (seed itself) did not use.
HELDOUT_SEED_OFFSET = 10_000_019


# Defaults for stage commands. The grid reaches down to 1e-3 (E4's t_min) and up to
# 0.98 (the top of SRPO's time range); the bins tile the whole DSM range [1e-3, 1].
DEFAULT_T_GRID = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.98)
DEFAULT_T_EDGES = (0.001, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


def _check_seed(cfg: RunConfig, seed: int) -> None:
    if cfg.seed != seed:
        raise ValueError(
            f"cfg.seed is {cfg.seed} but the record is for seed {seed}; build cfg with this seed"
        )


def _behavior_info(cfg: RunConfig, history: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(cfg.behavior),
        "steps": history[-1]["step"] if history else 0,
        "final_train_loss": history[-1].get("loss") if history else None,
        "profile": cfg.profile,
    }


def bandit_record(
    shape: str,
    seed: int,
    cfg: RunConfig,
    work: Path,
    n_train: int,
    n_heldout: int,
    t_grid: Sequence[float] = DEFAULT_T_GRID,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> dict[str, Any]:
    """Score accuracy (a) for one bandit and seed.

    Trains eps_psi on ``bandit_tasks.make_dataset(bandit, n_train, seed)`` with the real
    behavior stage (checkpoint ``work/behavior.pt``: a killed run resumes, a finished
    one is loaded), then runs :func:`score_error_by_time` on ``n_heldout`` fresh
    actions (``make_dataset`` with seed + HELDOUT_SEED_OFFSET, clipped alike).
    ``cfg`` is ``make_config(f"bandit-{shape}", profile, seed, overrides)``.
    """
    task = f"bandit-{shape.removeprefix('bandit-')}"
    if cfg.task != task:
        raise ValueError(f"cfg is for task {cfg.task!r}, not {task!r}")
    _check_seed(cfg, seed)
    bandit = bandit_tasks.get_bandit(task)
    device = torch.device(device)
    t0 = time.perf_counter()
    train = bandit_tasks.make_dataset(bandit, n_train, seed)
    model, history = train_behavior(cfg, train, Path(work), device, dtype, progress)
    held = bandit_tasks.make_dataset(bandit, n_heldout, seed + HELDOUT_SEED_OFFSET).to_tensors(device, dtype)
    gen = torch.Generator().manual_seed(stage_seed(seed, "score-accuracy-eval"))
    res = score_error_by_time(model, bandit, held["obs"], held["act"], t_grid, gen)
    return {
        "kind": "bandit",
        "target": task,
        "seed": seed,
        "n_train": n_train,
        "n_heldout": n_heldout,
        "heldout_seed": seed + HELDOUT_SEED_OFFSET,
        "behavior": _behavior_info(cfg, history),
        **res,
        "wall_s": time.perf_counter() - t0,
    }


def dataset_record(
    task: str,
    data: Transitions,
    seed: int,
    cfg: RunConfig,
    work: Path,
    heldout_fraction: float = 0.2,
    t_edges: Sequence[float] = DEFAULT_T_EDGES,
    draws_per_bin: int = 20_000,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> dict[str, Any]:
    """Score accuracy (b) for one real dataset and seed: train vs held-out DSM loss per t-bin.

    Splits ``data`` by episode (split seed derived from ``seed``, so seeds differ in
    split as well as in training), trains eps_psi on the train split only with the
    real behavior stage (checkpoint ``work/behavior.pt``; ``work`` must be specific
    to this task and seed), then evaluates :func:`dsm_loss_by_time` on both splits
    with identically seeded generators (paired noise). ``gap`` = held-out - train.
    """
    _check_seed(cfg, seed)
    device = torch.device(device)
    t0 = time.perf_counter()
    split_seed = stage_seed(seed, "score-accuracy-split")
    train, held = episode_split(data, heldout_fraction, split_seed)
    model, history = train_behavior(cfg, train, Path(work), device, dtype, progress)
    eval_seed = stage_seed(seed, "score-accuracy-eval")
    res = {}
    for name, part in (("train", train), ("heldout", held)):
        d = part.to_tensors(device, dtype)
        res[name] = dsm_loss_by_time(
            model, d["obs"], d["act"], t_edges, draws_per_bin, torch.Generator().manual_seed(eval_seed)
        )
    return {
        "kind": "dataset",
        "target": task,
        "seed": seed,
        "dataset": data.name,
        "split": {
            "heldout_fraction": heldout_fraction,
            "split_seed": split_seed,
            "train": {"episodes": train.info["episodes"], "transitions": len(train)},
            "heldout": {"episodes": held.info["episodes"], "transitions": len(held)},
        },
        "behavior": _behavior_info(cfg, history),
        "t_edges": res["train"]["t_edges"],
        "t_mid": res["train"]["t_mid"],
        "draws_per_bin": draws_per_bin,
        "train_loss": res["train"]["loss"],
        "heldout_loss": res["heldout"]["loss"],
        "gap": [h - t for h, t in zip(res["heldout"]["loss"], res["train"]["loss"])],
        "train_loss_se": res["train"]["loss_se"],
        "heldout_loss_se": res["heldout"]["loss_se"],
        "train_score_loss": res["train"]["score_loss"],
        "heldout_score_loss": res["heldout"]["score_loss"],
        "score_gap": [h - t for h, t in zip(res["heldout"]["score_loss"], res["train"]["score_loss"])],
        "action_dim": data.action_dim,
        "wall_s": time.perf_counter() - t0,
    }
