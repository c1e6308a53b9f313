"""Score accuracy rendered: the figure and the report's lines, every sentence computed from the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from srpo import artifacts
from srpo_bench.eval import stats


def _band(ests: list[dict | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values and CI bounds as float arrays (NaN where missing: the band is then not drawn)."""

    def get(e: dict | None, k: str) -> float:
        return np.nan if e is None or e.get(k) is None else float(e[k])

    return tuple(np.array([get(e, k) for e in ests]) for k in ("value", "low", "high"))  # type: ignore[return-value]


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bandits (top row): relative score error vs t (log-log) and cosine vs t, one line per
    bandit; datasets (bottom row): DSM loss per t-bin, train vs held-out, one panel per
    task. Lines are means over seeds, bands their intervals (eval/stats.py task_estimate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    bd, dd = summary.get("bandit", {}), summary.get("dataset", {})
    if not bd and not dd:
        raise ValueError("summary holds no bandit and no dataset results: nothing to plot")
    rows = [k for k, v in (("bandit", bd), ("dataset", dd)) if v]
    cols = max(2, len(dd))
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.4 * cols, 3.0 * len(rows)), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for r, kind in enumerate(rows):
        if kind == "bandit":
            colors = sns.color_palette("colorblind", len(bd))
            for (panel, metric, label), ax in zip(
                (("err", "rel_error", "relative score error"), ("cos", "cosine", "cosine(ε_ψ, ε*)")), axes[r]
            ):
                ax.set_visible(True)
                for (target, s), color in zip(bd.items(), colors):
                    v, lo, hi = _band(s[metric])
                    ax.plot(s["t"], v, marker=".", color=color, label=f"{target} (n={s['n_runs']})")
                    ax.fill_between(s["t"], lo, hi, color=color, alpha=0.2)
                ax.set_xscale("log")
                if metric == "rel_error":
                    ax.set_yscale("log")
                ax.set_xlabel("diffusion time t")
                ax.set_ylabel(label)
                ax.set_title(f"bandits, held-out: {label}", fontsize=9)
            axes[r][0].legend(fontsize=7)
        else:
            colors = sns.color_palette("colorblind", 2)
            for ax, (target, s) in zip(axes[r], dd.items()):
                ax.set_visible(True)
                for metric, label, color in (
                    ("train_loss", "train", colors[0]),
                    ("heldout_loss", "held-out", colors[1]),
                ):
                    v, lo, hi = _band(s[metric])
                    ax.plot(s["t_mid"], v, marker=".", color=color, label=label)
                    ax.fill_between(s["t_mid"], lo, hi, color=color, alpha=0.2)
                # Log t, as for the bandits: the bins near t -> 0 are the ones in question.
                ax.set_xscale("log")
                if np.all(np.asarray(_band(s["train_loss"])[0]) > 0):
                    ax.set_yscale("log")
                ax.set_xlabel("diffusion time t (bin midpoint)")
                ax.set_ylabel("DSM loss (E4)")
                ax.set_title(f"{target} (n={s['n_runs']} seeds)", fontsize=9)
                ax.legend(fontsize=7)
    fig.suptitle("Score accuracy on held-out data: mean over seeds; CI from 4 seeds, range below", fontsize=9)
    sns.despine(fig)
    fig.tight_layout()
    try:
        artifacts.save_figure(fig, path)
    finally:
        plt.close(fig)


def _fmt(e: dict | None, digits: int = 3) -> str:
    return stats.format_sig(e, digits)


def markdown(summary: dict[str, Any]) -> list[str]:
    """The report section's body (the caller writes its heading): what is measured, a table per
    kind, and the t -> 0 vs mid-t comparison stated from the numbers in ``summary`` (nothing
    hard-coded)."""
    conf = 100 * float(summary.get("confidence", 0.95))
    bd, dd = summary.get("bandit", {}), summary.get("dataset", {})
    L = [
        "SRPO uses only the behavior model's score, -ε_ψ(a_t|s,t)/σ_t (E5). Here it is checked on data the "
        f"model was not trained on, per diffusion time t. Values are means over seeds with "
        f"{stats.task_interval_rule(conf / 100)}; n is the number of seeds.",
        "",
    ]
    if bd:
        L += [
            "#### Bandits: learned against exact score",
            "",
            "Fresh actions from each bandit's behavior mixture (a seed the training set did not use). "
            "Relative "
            "error = E‖ε_ψ − ε*‖² / E‖ε*‖², which equals the relative error of the score since score = "
            "−ε/σ_t; "
            "cosine between ε_ψ and ε*; DSM loss (E4) at t of ε_ψ and of the exact ε* (its irreducible "
            "floor).",
            "",
            "| bandit | t | relative error | cosine | DSM loss ε_ψ | DSM loss ε* | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for target, s in bd.items():
            for i, t in enumerate(s["t"]):
                L.append(
                    f"| {target} | {t:g} | {_fmt(s['rel_error'][i])} | {_fmt(s['cosine'][i], 4)} | "
                    f"{_fmt(s['dsm_learned'][i])} | {_fmt(s['dsm_exact'][i])} | {s['n_runs']} |"
                )
        L.append("")
        for target, s in bd.items():
            c = s["near_zero_vs_mid"]
            if c["rel_error_ratio"] is None:
                continue
            L.append(
                f"- {target}: the relative score error at t = {c['t_near']:g} is "
                f"{_fmt(c['rel_error_ratio'])} "
                f"times that at t = {c['t_mid']:g} ({_fmt(c['rel_error_near'])} vs "
                f"{_fmt(c['rel_error_mid'])}); "
                f"cosine {_fmt(c['cosine_near'], 4)} vs {_fmt(c['cosine_mid'], 4)} (n = {s['n_runs']})."
            )
        L.append("")
    if dd:
        L += [
            "#### Datasets: train against held-out episodes",
            "",
            "Each dataset is split by whole episodes; the behavior model is trained on the train split only. "
            "DSM loss (E4) per t-bin on both splits with the same noise draws; gap = held-out − train. The "
            "exact "
            "score is unknown here, but the irreducible part of E4 is the same on both splits, so the gap "
            "is the "
            "measurable generalization error. Score units: the per-sample loss divided by σ_t², "
            "‖s_ψ(a_t) + ε/σ_t‖².",
            "",
            "| task | t-bin | train loss | held-out loss | gap | gap, score units | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for target, s in dd.items():
            e = s["t_edges"]
            for i in range(len(e) - 1):
                L.append(
                    f"| {target} | [{e[i]:g}, {e[i + 1]:g}) | {_fmt(s['train_loss'][i])} | "
                    f"{_fmt(s['heldout_loss'][i])} | {_fmt(s['gap'][i])} | {_fmt(s['score_gap'][i])} | "
                    f"{s['n_runs']} |"
                )
        L.append("")
        for target, s in dd.items():
            c, sp = s["near_zero_vs_mid"], s["split"]
            if c["heldout_loss_ratio"] is None:
                continue
            (a, b), (m0, m1) = c["bin_near"], c["bin_mid"]
            L.append(
                f"- {target} ({sp['train']['episodes']['value']:.0f} train / "
                f"{sp['heldout']['episodes']['value']:.0f} held-out episodes): the held-out DSM loss in "
                f"t ∈ [{a:g}, {b:g}) is {_fmt(c['heldout_loss_ratio'])} times that in [{m0:g}, {m1:g}); the "
                "gap "
                f"is {_fmt(c['gap_near'])} vs {_fmt(c['gap_mid'])}, in score units "
                f"{_fmt(c['score_gap_near'])} "
                f"vs {_fmt(c['score_gap_mid'])} (n = {s['n_runs']})."
            )
        L.append("")
    if not bd and not dd:
        L += ["No score-accuracy records were given.", ""]
    return L
