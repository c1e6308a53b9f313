"""Gradient-variance records summarized over seeds, with confidence intervals."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats as sstats

from srpo_bench.eval.stats import task_estimate

QUANTITIES = ("total_variance", "snr", "mean_sq_norm")


def _across(values: list[dict[str, float]], confidence: float, seed: int) -> dict[str, Any]:
    """One run: its within-run bootstrap CI. Several seeds: the mean, with task_estimate's interval
    (a Student-t CI from 4 seeds, the range of the seeds for 2-3; ``kind`` says which)."""
    if len(values) == 1:
        return {**values[0], "n_seeds": 1, "ci_over": "samples"}
    x = np.array([v["value"] for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    n_samples = int(values[0]["n_samples"])
    if len(x) == 0:
        return {
            "value": np.nan,
            "low": np.nan,
            "high": np.nan,
            "n_samples": n_samples,
            "n_seeds": 0,
            "ci_over": "seeds",
        }
    est, _ = task_estimate(x, confidence)
    return {
        "value": est.value,
        "low": est.low,
        "high": est.high,
        "n_samples": n_samples,
        "n_seeds": est.n_runs,
        "ci_over": "seeds",
        "kind": est.kind,
    }


def _median_finite(values: list[float | None]) -> float:
    """The median of the finite values (JSON writes NaN as null: read back as None); NaN if none."""
    x = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def summarize(
    records: Sequence[dict[str, Any]], confidence: float | None = None, seed: int = 0
) -> dict[str, Any]:
    """Per target x checkpoint x weighting x baseline: tr Cov g_B, SNR and ||E g||^2 with CIs, plus per
    weighting the variance ratio on/off and the unbiasedness check (p-values of several seeds
    combined by Fisher's method, valid for independent runs)."""
    if not records:
        raise ValueError("no records to summarize")
    first = records[0]["checkpoints"][0]
    some_w = next(iter(first["weightings"].values()))
    confidence = confidence if confidence is not None else some_w["on"]["confidence"]
    targets: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in records):
        runs = sorted((r for r in records if r["target"] == target), key=lambda r: r["seed"])
        steps = [c["step"] for c in runs[0]["checkpoints"]]
        if any([c["step"] for c in r["checkpoints"]] != steps for r in runs):
            raise ValueError(f"{target}: runs were measured at different checkpoints")
        cks = []
        for i, step in enumerate(steps):
            per_run = [r["checkpoints"][i] for r in runs]
            ws = list(per_run[0]["weightings"])
            settings, baseline = {}, {}
            for w in ws:
                settings[w] = {
                    side: {
                        q: _across([c["weightings"][w][side][q] for c in per_run], confidence, seed)
                        for q in QUANTITIES
                    }
                    for side in ("on", "off")
                }
                for side in ("on", "off"):
                    layers = per_run[0]["weightings"][w][side]["per_layer"]
                    settings[w][side]["per_layer"] = {
                        name: _across(
                            [c["weightings"][w][side]["per_layer"][name]["total_variance"] for c in per_run],
                            confidence,
                            seed,
                        )
                        for name in layers
                    }
                comps = [c["weightings"][w]["compare"] for c in per_run]
                ps = [c["unbiasedness"]["p_value"] for c in comps]
                p = ps[0] if len(ps) == 1 else float(sstats.combine_pvalues(ps, method="fisher").pvalue)
                baseline[w] = {
                    "variance_ratio": _across([c["variance_ratio"] for c in comps], confidence, seed),
                    "relative_mean_diff": _across([c["relative_mean_diff"] for c in comps], confidence, seed),
                    # the median over seeds: a scale for reading relative_mean_diff, not an estimate
                    "noise_floor": _median_finite([c.get("noise_floor") for c in comps]),
                    "p_value": p,
                    "p_values": ps,
                    "agree": bool(p >= 1 - confidence),
                }
            cks.append(
                {
                    "step": step,
                    "fraction": per_run[0]["fraction"],
                    "n_samples": per_run[0]["n_samples"],
                    "batch_size": per_run[0]["batch_size"],
                    "settings": settings,
                    "baseline": baseline,
                }
            )
        targets[target] = {"seeds": [r["seed"] for r in runs], "steps": runs[0]["steps"], "checkpoints": cks}
    return {"confidence": confidence, "targets": targets}
