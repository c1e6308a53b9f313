"""Score-accuracy records summarized over seeds, with the per-task interval rule (eval/stats.py)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from srpo_bench.eval import stats

BANDIT_METRICS = ("rel_error", "cosine", "eps_mse", "score_mse", "dsm_learned", "dsm_exact")
DATASET_METRICS = ("train_loss", "heldout_loss", "gap", "train_score_loss", "heldout_score_loss", "score_gap")


def _estimate(values: Sequence[float], confidence: float, reps: int, seed: int) -> dict[str, Any] | None:
    """Mean over seeds with :func:`stats.task_estimate`'s interval (strict JSON: NaN bounds become None).

    None when a value is not finite (e.g. a 0/0 ratio): there is nothing to estimate.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return None
    est, std = stats.task_estimate(x, confidence)
    d = est.to_dict()
    d["std"] = std
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _nearest(ts: Sequence[float], target: float) -> int:
    return int(np.argmin(np.abs(np.asarray(ts) - target)))


def summarize(
    records: list[dict], confidence: float = 0.95, reps: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Group records by target; per t (bandits) or t-bin (datasets) the mean over seeds.

    Every number is an estimate dict (value, low, high, n_runs, confidence, std) from
    :func:`srpo_bench.eval.stats.task_estimate`: a Student-t CI from 4 seeds, the range of the
    seeds for 2-3 (``kind`` says which), ``low = high = None`` for one. ``near_zero_vs_mid``
    compares the smallest t (bin) with the t (bin midpoint) closest to 0.5: the per-seed ratio,
    with its interval over seeds.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("kind") not in ("bandit", "dataset"):
            raise ValueError(f"record kind must be 'bandit' or 'dataset', got {r.get('kind')!r}")
        groups.setdefault((r["kind"], r["target"]), []).append(r)
    out: dict[str, Any] = {"confidence": confidence, "reps": reps, "bandit": {}, "dataset": {}}
    for (kind, target), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        seeds = [r["seed"] for r in rs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{target}: seed repeated among records {seeds}")
        axis = "t" if kind == "bandit" else "t_edges"
        if any(r[axis] != rs[0][axis] for r in rs):
            raise ValueError(f"{target}: records use different {axis}; evaluate every seed on one grid")
        est = lambda xs: _estimate(xs, confidence, reps, seed)  # noqa: E731
        metrics = BANDIT_METRICS if kind == "bandit" else DATASET_METRICS
        n_points = len(rs[0][metrics[0]])
        s: dict[str, Any] = {"n_runs": len(rs), "seeds": seeds}
        for m in metrics:
            s[m] = [est([r[m][i] for r in rs]) for i in range(n_points)]
        if kind == "bandit":
            ts = rs[0]["t"]
            s["t"] = ts
            near, mid = int(np.argmin(ts)), _nearest(ts, 0.5)
            s["near_zero_vs_mid"] = {
                "t_near": ts[near],
                "t_mid": ts[mid],
                "rel_error_ratio": None
                if near == mid
                else est([r["rel_error"][near] / r["rel_error"][mid] for r in rs]),
                "rel_error_near": s["rel_error"][near],
                "rel_error_mid": s["rel_error"][mid],
                "cosine_near": s["cosine"][near],
                "cosine_mid": s["cosine"][mid],
            }
        else:
            edges = rs[0]["t_edges"]
            mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            s["t_edges"], s["t_mid"] = edges, mids
            s["split"] = {
                part: {k: est([r["split"][part][k] for r in rs]) for k in ("episodes", "transitions")}
                for part in ("train", "heldout")
            }
            near, mid = 0, _nearest(mids, 0.5)
            s["near_zero_vs_mid"] = {
                "bin_near": edges[near : near + 2],
                "bin_mid": edges[mid : mid + 2],
                "heldout_loss_ratio": None
                if near == mid
                else est([r["heldout_loss"][near] / r["heldout_loss"][mid] for r in rs]),
                "gap_near": s["gap"][near],
                "gap_mid": s["gap"][mid],
                "score_gap_near": s["score_gap"][near],
                "score_gap_mid": s["score_gap"][mid],
            }
        out[kind][target] = s
    return out
