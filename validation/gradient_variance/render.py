"""Gradient variance rendered: the figure and the report's lines, every sentence computed from the summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from srpo import artifacts
from srpo_bench.eval import stats


def _y_scale(all_values: np.ndarray, points: np.ndarray) -> tuple[str, dict[str, float]]:
    """Log scale when everything plotted is positive; else symlog (an unbiased ||E g||^2, so the SNR,
    can be estimated below 0), linear within a power of ten below the smallest nonzero point."""
    finite = all_values[np.isfinite(all_values)]
    if len(finite) and finite.min() > 0:
        return "log", {}
    mags = np.abs(points[np.isfinite(points) & (points != 0)])
    if not len(mags):
        return "linear", {}
    floor = max(float(mags.min()), float(mags.max()) * 1e-4)
    return "symlog", {"linthresh": 10.0 ** math.floor(math.log10(floor))}


def plot(summary: dict[str, Any], path: Path) -> None:
    """tr Cov g_B (log) and SNR against the training step; a colour per weighting, solid = baseline on,
    dashed = off, CI bands; a column per target. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    targets = summary["targets"]
    rows = (("total_variance", "tr Cov $g_B$"), ("snr", "SNR $\\|E g\\|^2 / \\mathrm{tr\\,Cov}\\, g_B$"))
    fig, axes = plt.subplots(len(rows), len(targets), figsize=(3.4 * len(targets) + 1.0, 5.6), squeeze=False)
    for c, (target, tg) in enumerate(targets.items()):
        x = [ck["step"] for ck in tg["checkpoints"]]
        weightings = list(tg["checkpoints"][0]["settings"])
        colors = dict(zip(weightings, sns.color_palette("colorblind", len(weightings))))
        for r, (q, label) in enumerate(rows):
            ax = axes[r][c]
            points, lows = [], []
            for w in weightings:
                for side, ls in (("on", "-"), ("off", "--")):
                    e = [ck["settings"][w][side][q] for ck in tg["checkpoints"]]
                    v = np.array([d["value"] for d in e], dtype=np.float64)
                    points += list(v)
                    lows += [d["low"] for d in e]
                    ax.plot(x, v, ls, marker="o", ms=3, color=colors[w], label=f"{w}, baseline {side}")
                    ax.fill_between(
                        x, [d["low"] for d in e], [d["high"] for d in e], color=colors[w], alpha=0.12
                    )
            scale, kw = _y_scale(
                np.array(points + lows, dtype=np.float64), np.array(points, dtype=np.float64)
            )
            ax.set_yscale(scale, **kw)
            ax.set_title(target if r == 0 else "", fontsize=9)
            ax.set_ylabel(label if c == 0 else "", fontsize=8)
            ax.set_xlabel("policy step" if r == len(rows) - 1 else "")
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=len(labels) // 2,
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(0.5, -0.06),
    )
    conf = 100 * summary["confidence"]
    fig.suptitle(
        f"E6 per-batch gradient: variance and SNR at policy checkpoints ({conf:.0f}% CI bands)", fontsize=10
    )
    sns.despine(fig)
    fig.tight_layout()
    try:
        artifacts.save_figure(fig, Path(path))
    finally:
        plt.close(fig)


def _fmt(e: dict[str, float], digits: int = 3) -> str:
    return stats.format_sig(e, digits)


def markdown(summary: dict[str, Any]) -> list[str]:
    """Report section body (the caller writes its heading): what was measured, then per target
    (a level-4 heading each) the tables of tr Cov g_B and SNR, the variance ratios on/off, and the
    unbiasedness check stated from the numbers. Norms are written with U+2016 (‖), since a
    pipe would split a markdown table cell."""
    conf = summary["confidence"]
    pc = 100 * conf
    L: list[str] = []
    for target, tg in summary["targets"].items():
        cks = tg["checkpoints"]
        n_seeds = len(tg["seeds"])
        ck0 = cks[0]
        over = (
            f"means over the {n_seeds} seeds with {stats.task_interval_rule(conf)}"
            if n_seeds > 1
            else f"{pc:.0f}% bootstrap CIs over the {ck0['n_samples']} draws of the one seed "
            "(percentile for traces "
            f"and ratios, basic for ‖E g‖² and the SNR)"
        )
        L += [
            f"#### {target}",
            "",
            f"Per-sample gradients of the E6 surrogate w.r.t. the policy parameters at {len(cks)} "
            "checkpoints "
            f"(steps {', '.join(str(c['step']) for c in cks)} of {tg['steps']}), for {ck0['n_samples']} "
            "independent "
            f"draws (s, t, eps) per checkpoint, shared by all settings; the per-batch gradient averages "
            f"B = {ck0['batch_size']} draws, so tr Cov g_B = tr Cov g / B. SNR = ‖E g‖² / tr Cov g_B with "
            f"‖E g‖² estimated without bias. Seeds: {', '.join(map(str, tg['seeds']))}; {over}.",
            "",
            "| step | weighting | baseline | tr Cov g_B | SNR |",
            "|---|---|---|---|---|",
        ]
        for ck in cks:
            for w, sides in ck["settings"].items():
                for side in ("on", "off"):
                    d = sides[side]
                    L.append(
                        f"| {ck['step']} | {w} | {side} | {_fmt(d['total_variance'])} | {_fmt(d['snr'])} |"
                    )
        last = cks[-1]
        names = list(next(iter(last["settings"].values()))["on"]["per_layer"])
        L += [
            "",
            f"Per layer at step {last['step']}: tr Cov g_B restricted to each layer's parameters "
            "(weight and bias), the same CIs.",
            "",
            "| weighting | baseline | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for w, sides in last["settings"].items():
            for side in ("on", "off"):
                L.append(
                    f"| {w} | {side} | " + " | ".join(_fmt(sides[side]["per_layer"][n]) for n in names) + " |"
                )
        L += [
            "",
            f"Baseline on vs off on the same draws: variance ratio tr Cov g_on / tr Cov g_off ({pc:.0f}% "
            "CI), "
            f"‖E(g_on - g_off)‖ / ‖E g_off‖, and the sign-flip test of E(g_on - g_off) = 0"
            + (" (p-values of the seeds combined by Fisher's method)" if n_seeds > 1 else "")
            + ".",
            "",
            "| step | weighting | variance ratio on/off | ‖E(g_on - g_off)‖ / ‖E g_off‖ | p | means |",
            "|---|---|---|---|---|---|",
        ]
        for ck in cks:
            for w, b in ck["baseline"].items():
                verdict = "agree" if b["agree"] else "differ"
                L.append(
                    f"| {ck['step']} | {w} | {_fmt(b['variance_ratio'])} | {_fmt(b['relative_mean_diff'])} | "
                    f"{b['p_value']:.3g} | {verdict} |"
                )
        L.append("")
        alpha = 1 - conf
        for w in cks[0]["baseline"]:
            ratios = [ck["baseline"][w]["variance_ratio"] for ck in cks]
            ps = [ck["baseline"][w]["p_value"] for ck in cks]
            below = [ck["step"] for ck, r in zip(cks, ratios) if r["high"] < 1]
            above = [ck["step"] for ck, r in zip(cks, ratios) if r["low"] > 1]
            unresolved = [ck["step"] for ck, r in zip(cks, ratios) if not (r["high"] < 1 or r["low"] > 1)]
            differ = [ck["step"] for ck in cks if not ck["baseline"][w]["agree"]]
            steps = lambda xs: ", ".join(map(str, xs))  # noqa: E731
            rels = [ck["baseline"][w]["relative_mean_diff"] for ck in cks]
            floors = [ck["baseline"][w].get("noise_floor", float("nan")) for ck in cks]
            worst = max(
                range(len(cks)), key=lambda i: rels[i]["high"] if np.isfinite(rels[i]["high"]) else -1
            )
            # What the test could not rule out: the largest upper CI end of the relative difference,
            # set against the noise floor sqrt(tr Cov d / M) / ||E g_off|| at that checkpoint.
            power = (
                f"; this does not show the means are equal: at step {cks[worst]['step']} the CI of "
                f"‖E(g_on - g_off)‖ / ‖E g_off‖ reaches {rels[worst]['high']:.3g}, and its estimate "
                f"{rels[worst]['value']:.3g} is of the order of the noise floor "
                f"sqrt(tr Cov d / M) / ‖E g_off‖ = {floors[worst]:.3g} (d = g_on - g_off), i.e. what "
                "sampling noise alone gives when ‖E g_off‖ is barely resolved"
                if np.isfinite(rels[worst]["high"]) and np.isfinite(floors[worst])
                else "; this does not show the means are equal: ‖E g_off‖ is not resolved from sampling "
                "noise here (its unbiased estimate is not positive), so the test's power relative to "
                "the gradient is unknown"
            )
            means = (
                f"no difference between the means with and without the baseline was detected at any "
                f"checkpoint (sign-flip test, smallest p = {min(ps):.3g} >= {alpha:.3g}){power}"
                if not differ
                else f"the means differ (p < {alpha:.3g}) at step(s) {steps(differ)}"
            )
            values = [r["value"] for r in ratios]
            parts = [f"variance ratio on/off {min(values):.3g} to {max(values):.3g}"]
            if below:
                parts.append(f"the baseline lowers tr Cov g_B (interval below 1) at step(s) {steps(below)}")
            if above:
                parts.append(f"the baseline raises tr Cov g_B (interval above 1) at step(s) {steps(above)}")
            if unresolved:
                parts.append(f"no resolved effect (interval contains 1) at step(s) {steps(unresolved)}")
            L.append(f"- **{w}**: {means}; " + "; ".join(parts) + ".")
        L.append("")
    return L
