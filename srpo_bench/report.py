"""The pipeline's report: statistics over every run, tables, seaborn figures, ``report.md``.

Reads what the earlier stages wrote (``evaluation.json`` and ``<stage>_metrics.json`` of
every task, seed and policy variant, the dataset cards) and writes, under the profile's
``report_dir``:

- ``report.md``: per-task scores with bootstrap CIs beside the paper's Table 1, aggregate
  metrics (mean, median, IQM, optimality gap) with stratified-bootstrap CIs, probability
  of improvement between variants, figures, the dataset cards, params, code and machine;
- ``metrics.json``: the headline numbers (``dvc metrics show``);
- ``plots/*.csv``: learning curves and performance profiles (``dvc plots show``);
- ``figures/*.png``.

Every file is written atomically; the report is the last one written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from srpo import artifacts  # noqa: E402
from srpo.config import make_config  # noqa: E402
from srpo_bench import claims as paper_claims  # noqa: E402
from srpo_bench.eval import stats  # noqa: E402
from srpo_bench.eval.datasets import generated_dataset_id  # noqa: E402
from srpo_bench.eval.provenance import code_version, machine_info  # noqa: E402
from srpo_bench.eval.references import PAPER_TABLE1  # noqa: E402
from srpo_bench.params import PipelineParams  # noqa: E402
from srpo_bench.validation import (  # noqa: E402
    diagnostics_report as dr,
    gradient_variance as gv,
    score_accuracy as sa,
)
from srpo_bench.validation.bandit_suite import ablation_markdown, ablation_summary  # noqa: E402

# Training curves shown per stage: (stage, metric in the stage's history, label).
CURVES = (
    ("behavior", "loss", "behavior: DSM loss (E4)"),
    ("critic", "q_loss", "critic: Q loss"),
    ("critic", "v_loss", "critic: V expectile loss"),
    ("policy", "loss", "policy: E6 surrogate loss"),
)


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it (dvc repro)")
    return json.loads(path.read_text())


def collect_scores(p: PipelineParams) -> pd.DataFrame:
    """One row per (task, seed, variant): the run's score = mean normalized score over its episodes."""
    rows = []
    for task in p.tasks:
        for seed in p.seeds:
            for variant in p.variants_of(task):
                ev = _read_json(p.evaluation_path(task, seed, variant))
                if "skipped" in ev:
                    rows.append({"task": task, "seed": seed, "variant": variant, "skipped": ev["skipped"]})
                    continue
                if ev.get("mean_normalized") is None:
                    raise ValueError(
                        f"{task} has no normalization reference; its dataset needs ref_min/ref_max"
                    )
                latency = ev.get("action_latency") or {}
                rows.append(
                    {
                        "task": task,
                        "seed": seed,
                        "variant": variant,
                        "score": ev["mean_normalized"],
                        "mean_return": ev["mean_return"],
                        "episodes": ev["episodes"],
                        "skipped": None,
                        "latency_ms": latency.get("median_ms", np.nan),
                        "latency_batch": latency.get("batch"),
                        "env_id": ev.get("env_id"),
                        "env_version_reason": ev.get("env_version_reason"),
                    }
                )
    return pd.DataFrame(rows)


def collect_curves(p: PipelineParams) -> pd.DataFrame:
    """Long table of training curves: task, seed, stage, metric, step, value (reference variant's policy)."""
    ref = p.report.reference_variant
    rows = []
    for task in p.tasks:
        for seed in p.seeds:
            for stage, metric, _ in CURVES:
                base = (
                    p.variant_path(task, seed, ref) if stage == "policy" else p.stage_path(task, seed, stage)
                )
                for entry in _read_json(base / f"{stage}_metrics.json")["history"]:
                    if metric in entry:
                        rows.append(
                            {
                                "task": task,
                                "seed": seed,
                                "stage": stage,
                                "metric": metric,
                                "step": entry["step"],
                                "value": entry[metric],
                            }
                        )
    return pd.DataFrame(rows)


def collect_evaluation_curves(p: PipelineParams) -> pd.DataFrame:
    """Long table of the evaluation curves: task, variant, seed, step, score (the snapshots' evaluations)."""
    rows = []
    for task in p.tasks:
        for seed in p.seeds:
            for variant in p.variants_of(task):
                ev = _read_json(p.evaluation_path(task, seed, variant))
                for point in ev.get("curve") or []:
                    if point.get("mean_normalized") is not None:
                        rows.append(
                            {
                                "task": task,
                                "variant": variant,
                                "seed": seed,
                                "step": point["step"],
                                "score": point["mean_normalized"],
                            }
                        )
    return pd.DataFrame(rows, columns=["task", "variant", "seed", "step", "score"])


def curve_bands(curves: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per task, variant and step: the mean over seeds and its interval (stats.task_estimate's rules)."""
    rows = []
    for (task, variant, step), d in curves.groupby(["task", "variant", "step"], sort=True):
        est, std = stats.task_estimate(d.sort_values("seed")["score"].to_numpy(), confidence)
        rows.append(
            {
                "task": task,
                "variant": variant,
                "step": step,
                "mean": est.value,
                "low": est.low,
                "high": est.high,
                "kind": est.kind,
                "std": std,
                "n_seeds": est.n_runs,
            }
        )
    return pd.DataFrame(rows)


def curve_flatness(p: PipelineParams, curves: pd.DataFrame) -> list[dict]:
    """Per task x variant with a curve: has it flattened over the last quarter (stats.curve_flattened)?"""
    out = []
    for (task, variant), d in curves.groupby(["task", "variant"], sort=False):
        wide = d.pivot(index="seed", columns="step", values="score").dropna(axis=1)
        total = p.run_config(task, p.seeds[0], variant).policy.steps
        flat = stats.curve_flattened(wide.columns.to_numpy(), wide.to_numpy(), total)
        out.append({"task": task, "variant": variant, "policy_steps": total, **flat.to_dict()})
    return out


def plot_evaluation_curves(bands: pd.DataFrame, path: Path) -> None:
    """Normalized score against policy step, one panel per task, one line per variant, band over seeds."""
    tasks = list(dict.fromkeys(bands["task"]))
    variants = list(dict.fromkeys(bands["variant"]))
    colors = dict(zip(variants, sns.color_palette("colorblind", len(variants))))
    cols = min(len(tasks), 3)
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.4 * cols + 1.2, 6.0), 2.6 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for variant in variants:
            d = bands[(bands["task"] == task) & (bands["variant"] == variant)]
            if d.empty:
                continue
            ax.plot(d["step"], d["mean"], marker=".", color=colors[variant], label=variant)
            if np.isfinite(d["low"]).any():
                ax.fill_between(d["step"], d["low"], d["high"], color=colors[variant], alpha=0.2, lw=0)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("policy step", fontsize=8)
        ax.set_ylabel("normalized score", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    kinds = set(bands["kind"])
    band = (
        "Student-t CI of the mean over seeds"
        if kinds == {stats.STUDENT_T}
        else "range of the seeds (too few for a CI)"
        if kinds <= {stats.RANGE}
        else "interval over seeds"
    )
    fig.suptitle(f"Evaluation curves: mean over seeds, band = {band}", fontsize=10)
    sns.despine(fig)
    fig.tight_layout()
    artifacts.save_figure(fig, path)
    plt.close(fig)


def score_matrices(scores: pd.DataFrame, tasks: list[str], variants) -> dict[str, np.ndarray]:
    """(runs x tasks) matrix per variant over the given tasks that were evaluated."""
    ok = scores[scores["skipped"].isna()]
    tasks = [t for t in tasks if t in set(ok["task"])]
    return {
        v: ok[ok["variant"] == v].pivot(index="seed", columns="task", values="score")[tasks].to_numpy()
        for v in variants
    }


def plot_learning_curves(curves: pd.DataFrame, path: Path, confidence: float) -> None:
    tasks = list(dict.fromkeys(curves["task"]))
    fig, axes = plt.subplots(
        len(CURVES),
        len(tasks),
        figsize=(2.6 * len(tasks) + 1, 2.1 * len(CURVES)),
        squeeze=False,
        sharex="row",
    )
    # The same rule as the tables: a Student-t band from MIN_RUNS_FOR_TASK_INTERVAL seeds, else
    # the range of the seeds (a bootstrap band over 2-3 seeds would claim coverage it does not have).
    n_seeds = curves["seed"].nunique() if len(curves) else 0
    if n_seeds >= stats.MIN_RUNS_FOR_TASK_INTERVAL:
        t_crit = float(scipy_stats.t.ppf(0.5 + confidence / 2, n_seeds - 1))
        errorbar, band = ("se", t_crit), f"{100 * confidence:.0f}% Student-t bands over {n_seeds} seeds"
    else:
        errorbar, band = ("pi", 100), f"bands = range of the {n_seeds} seeds (too few for a CI)"
    for r, (stage, metric, label) in enumerate(CURVES):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            d = curves[(curves["task"] == task) & (curves["stage"] == stage) & (curves["metric"] == metric)]
            sns.lineplot(d, x="step", y="value", ax=ax, errorbar=errorbar)
            ax.set_title(task if r == 0 else "", fontsize=9)
            ax.set_ylabel(label if c == 0 else "", fontsize=8)
            ax.set_xlabel("step" if r == len(CURVES) - 1 else "")
            ax.tick_params(labelsize=7)
    fig.suptitle(f"Training curves: mean over seeds, {band}", fontsize=10)
    fig.tight_layout()
    artifacts.save_figure(fig, path)
    plt.close(fig)


def plot_profiles(profiles: dict, path: Path, n_runs: int, n_tasks: int) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (variant, prof), color in zip(profiles.items(), sns.color_palette("colorblind")):
        ax.plot(prof["tau"], prof["fraction"], label=variant, color=color)
        ax.fill_between(prof["tau"], prof["low"], prof["high"], color=color, alpha=0.2)
    ax.set_xlabel("D4RL-normalized score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    bands = "95% CI bands" if n_runs >= stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL else "no bands: too few runs"
    ax.set_title(f"Performance profiles ({n_runs} runs × {n_tasks} tasks, {bands})", fontsize=10)
    ax.legend(fontsize=8)
    sns.despine(fig)
    artifacts.save_figure(fig, path)
    plt.close(fig)


def plot_aggregates(aggs: dict, path: Path) -> None:
    variants = list(aggs)
    fig, axes = plt.subplots(
        1, len(stats.AGGREGATE_NAMES), figsize=(3.0 * len(stats.AGGREGATE_NAMES), 0.5 * len(variants) + 1.4)
    )
    colors = sns.color_palette("colorblind", len(variants))
    for ax, name in zip(axes, stats.AGGREGATE_NAMES):
        for i, v in enumerate(variants):
            e = aggs[v][name]
            if e.is_confidence_interval:
                ax.barh(i, e.high - e.low, left=e.low, height=0.6, color=colors[i], alpha=0.6)
            ax.plot([e.value, e.value], [i - 0.3, i + 0.3], color="k", lw=1.5)
        ax.set_yticks(range(len(variants)), variants if ax is axes[0] else [""] * len(variants), fontsize=8)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    with_ci = all(e.is_confidence_interval for a in aggs.values() for e in a.values())
    fig.suptitle(
        "Aggregate D4RL-normalized scores"
        + (
            ", 95% stratified-bootstrap CIs"
            if with_ci
            else f" (no intervals: fewer than {stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL} runs per task)"
        ),
        fontsize=10,
    )
    fig.tight_layout()
    artifacts.save_figure(fig, path)
    plt.close(fig)


def _dataset_cards(p: PipelineParams) -> list[dict]:
    cards = []
    for task in p.tasks:
        if task in p.datasets:
            cards.append({"task": task, "dataset_id": p.datasets[task], "generated": False})
            continue
        path = p.minari_root / generated_dataset_id(task) / "srpo_card.json"
        if path.exists():
            cards.append({"task": task, "generated": True, **json.loads(path.read_text())})
    return cards


# The authors' evaluation (docs/method.md, Evaluation): 20 episodes every 20k policy steps.
PAPER_EVALUATION = {"episodes": 20, "every": 20_000, "curve_episodes": 20}


def protocol_deviations(p: PipelineParams, generated: bool) -> list[tuple[str, str, str]]:
    """(setting, paper, this profile) for every setting in which this profile's SRPO runs differ
    from the paper's protocol: the run configuration against the ``paper`` training profile of
    the same task (budgets, batch sizes, network sizes, precision), the evaluation, the data."""
    rows: list[tuple[str, str, str]] = []
    task, seed = p.tasks[0], p.seeds[0]
    ours, paper = p.run_config(task, seed), make_config(task, "paper", seed)
    for stage in ("behavior", "critic", "policy"):
        a, b = asdict(getattr(paper, stage)), asdict(getattr(ours, stage))
        for key in a:
            if a[key] != b[key] and key != "snapshot_every":
                rows.append((f"{stage}.{key}", _fmt(a[key]), _fmt(b[key])))
    ev = p.evaluation
    if ev.episodes != PAPER_EVALUATION["episodes"]:
        rows.append(("evaluation episodes per run", str(PAPER_EVALUATION["episodes"]), str(ev.episodes)))
    if (ev.every, ev.curve_episodes) != (PAPER_EVALUATION["every"], PAPER_EVALUATION["curve_episodes"]):
        rows.append(
            (
                "evaluation curve",
                f"{PAPER_EVALUATION['curve_episodes']} episodes every {PAPER_EVALUATION['every']:,} steps",
                f"{ev.curve_episodes} episode(s) every {ev.every:,} steps" if ev.every else "none",
            )
        )
    if generated:
        rows.append(
            (
                "datasets",
                "D4RL -v2 (about 1M transitions, collected on gym's MuJoCo v3)",
                "generated by this suite from its own SAC policies on Gymnasium MuJoCo v5 (see *Datasets*)",
            )
        )
    return rows


def _fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _wall_times(p: PipelineParams) -> dict[str, float]:
    total: dict[str, float] = {}
    for task in p.tasks:
        for seed in p.seeds:
            for stage in ("behavior", "critic"):
                metrics = _read_json(p.stage_path(task, seed, stage) / f"{stage}_metrics.json")
                total[stage] = total.get(stage, 0.0) + metrics["wall_s"]
            for v in p.variants_of(task):
                d = p.variant_path(task, seed, v)
                total["policy"] = total.get("policy", 0.0) + _read_json(d / "policy_metrics.json")["wall_s"]
                ev = _read_json(p.evaluation_path(task, seed, v))
                total["evaluate"] = total.get("evaluate", 0.0) + ev.get("wall_s", 0.0)
                total["evaluation curve"] = total.get("evaluation curve", 0.0) + ev.get("curve_wall_s", 0.0)
    return total


def write_report(p: PipelineParams) -> Path:
    rep = p.report
    conf, reps, seed = rep.confidence, rep.bootstrap_reps, rep.seed
    out = Path(p.report_dir)
    scores = collect_scores(p)
    curves = collect_curves(p)
    mats = score_matrices(scores, p.tasks, p.variants)
    ok = scores[scores["skipped"].isna()]
    tasks = [t for t in p.tasks if t in set(ok["task"])]
    if not tasks:
        raise ValueError("no task could be evaluated (every evaluation was skipped); nothing to report")
    n_runs = len(p.seeds)
    ref = rep.reference_variant

    # Per task: mean, std and a bootstrap CI of the mean over seeds, per variant.
    per_task: dict[str, dict[str, dict]] = {}
    for task in tasks:
        per_task[task] = {}
        for v in p.variants:
            x = ok[(ok["task"] == task) & (ok["variant"] == v)].sort_values("seed")["score"].to_numpy()
            est, std = stats.task_estimate(x, conf)
            per_task[task][v] = {**est.to_dict(), "std": std, "scores": x.tolist()}
    aggs = stats.aggregate_estimates(mats, conf, reps, seed)
    lo = min(0.0, min(float(m.min()) for m in mats.values()))
    hi = max(100.0, max(float(m.max()) for m in mats.values()))
    profiles = stats.performance_profile(mats, np.linspace(lo, hi + 1.0, 60), conf, min(reps, 2000), seed)
    poi = {
        f"{ref} > {v}": stats.probability_of_improvement(mats[ref], mats[v], conf, reps, seed)
        for v in p.variants
        if v != ref
    }
    focus = focus_study(p, scores, conf, reps, seed) if p.focus else None
    latency = latency_table(p, scores, aggs, focus)
    validation = validation_study(p, out / "figures", conf, min(reps, 2000), seed) if p.validation else None
    eval_curves = collect_evaluation_curves(p)
    flatness = curve_flatness(p, eval_curves) if len(eval_curves) else []
    diagnostics = diagnostics_study(p, conf) if p.validation else None
    if validation is not None and diagnostics is not None:
        validation["lines"] += diagnostics["lines"]

    figs = out / "figures"
    plot_learning_curves(curves, figs / "learning_curves.png", conf)
    plot_profiles(profiles, figs / "performance_profiles.png", n_runs, len(tasks))
    plot_aggregates(aggs, figs / "aggregate_intervals.png")
    plot_latency(latency, figs / "latency_vs_score.png")
    if len(eval_curves):
        plot_evaluation_curves(curve_bands(eval_curves, conf), figs / "evaluation_curves.png")

    plots = out / "plots"
    curve_means = curves.groupby(["stage", "metric", "step", "task"])["value"].mean().reset_index()
    for stage, metric, _ in CURVES:
        wide = curve_means[(curve_means["stage"] == stage) & (curve_means["metric"] == metric)].pivot(
            index="step", columns="task", values="value"
        )
        artifacts.write_text(plots / f"{stage}_{metric}.csv", wide.reindex(columns=tasks).to_csv())
    prof_df = pd.DataFrame({"tau": profiles[ref]["tau"], **{v: profiles[v]["fraction"] for v in p.variants}})
    artifacts.write_text(plots / "performance_profile.csv", prof_df.to_csv(index=False))

    metrics = {
        "profile": p.profile,
        "n_runs": n_runs,
        "n_tasks": len(tasks),
        "confidence": conf,
        "aggregate": {v: {k: e.to_dict() for k, e in a.items()} for v, a in aggs.items()},
        "per_task": per_task,
        "probability_of_improvement": {k: e.to_dict() for k, e in poi.items()},
        "focus": focus,
        "latency_vs_score": latency.to_dict("records"),
        "validation": None if validation is None else validation["summaries"],
        "evaluation_curves": flatness,
        "diagnostics": None if diagnostics is None else diagnostics["summary"],
        "skipped": scores[scores["skipped"].notna()][["task", "seed", "variant", "skipped"]].to_dict(
            "records"
        ),
    }
    every = [*p.variants, *(p.focus.variants if p.focus else [])]
    claims = paper_claims.build(
        ref,
        {v: p.variant_spec(v).method for v in every},
        [v for v in every if "policy.t_fixed" in p.variant_spec(v).overrides],
        poi,
        focus,
        scores,
        None if validation is None else validation["summaries"],
        conf,
    )
    metrics["claims"] = [asdict(c) for c in claims]
    artifacts.write_json(out / "metrics.json", metrics)
    text = render_markdown(
        p,
        per_task,
        aggs,
        poi,
        tasks,
        _dataset_cards(p),
        _wall_times(p),
        metrics["skipped"],
        focus,
        latency,
        validation,
        _environments(scores),
        flatness,
        claims,
    )
    artifacts.write_text(out / "report.md", text)
    return out / "report.md"


def focus_study(p: PipelineParams, scores: pd.DataFrame, conf: float, reps: int, seed: int) -> dict:
    """Focus variants beside the reference on the focus tasks: per-task CIs, aggregates, P(X > reference)."""
    ref = p.report.reference_variant
    variants = [ref, *p.focus.variants]
    ok = scores[scores["skipped"].isna()]
    tasks = [t for t in p.focus_tasks if t in set(ok["task"])]
    if not tasks:
        return {"tasks": [], "variants": variants, "per_task": {}, "aggregate": {}, "poi": {}}
    mats = score_matrices(scores, tasks, variants)
    per_task = {}
    for task in tasks:
        per_task[task] = {}
        for v in variants:
            x = ok[(ok["task"] == task) & (ok["variant"] == v)].sort_values("seed")["score"].to_numpy()
            est, std = stats.task_estimate(x, conf)
            per_task[task][v] = {**est.to_dict(), "std": std}
    aggs = stats.aggregate_estimates(mats, conf, reps, seed)
    poi = {
        v: stats.probability_of_improvement(mats[v], mats[ref], conf, reps, seed).to_dict()
        for v in variants
        if v != ref
    }
    return {
        "tasks": tasks,
        "variants": variants,
        "per_task": per_task,
        "aggregate": {v: {k: e.to_dict() for k, e in a.items()} for v, a in aggs.items()},
        "poi": poi,
    }


def latency_table(p: PipelineParams, scores: pd.DataFrame, aggs: dict, focus: dict | None) -> pd.DataFrame:
    """Per variant: median action-selection latency over its runs, beside its score and interval.

    Main variants are scored by their IQM over all tasks; focus variants (and, for
    comparison, the reference) by their mean over the focus tasks, so each point's score
    and latency come from the same runs. ``x_reference`` divides by the reference variant's
    latency over the same group of runs (all tasks, or the focus tasks): like for like.
    """
    ok = scores[scores["skipped"].isna()]
    rows = []

    def row(v: str, group: str, est: stats.Estimate, stat: str, runs: pd.DataFrame) -> dict:
        return {
            "variant": v,
            "method": p.variant_spec(v).method,
            "tasks": group,
            "score": est.value,
            "low": est.low,
            "high": est.high,
            "score_text": f"{stat} {est.format()}",
            "score_stat": stat,
            "n_runs": est.n_runs,
            "episodes": sorted({int(e) for e in runs["episodes"]}),
            "latency_ms": float(runs["latency_ms"].median()),
            "batch": runs["latency_batch"].iloc[0] if len(runs) else None,
        }

    for v in p.variants:
        rows.append(row(v, "all", aggs[v]["iqm"], "IQM", ok[ok["variant"] == v]))
    if focus and focus["tasks"]:
        for v in focus["variants"]:
            sel = ok[(ok["variant"] == v) & ok["task"].isin(focus["tasks"])]
            rows.append(row(v, "focus", stats.Estimate.from_dict(focus["aggregate"][v]["mean"]), "mean", sel))
    table = pd.DataFrame(rows)
    ref = p.report.reference_variant
    for group in table["tasks"].unique() if len(table) else []:
        at = table["tasks"] == group
        base = table[at & (table["variant"] == ref)]["latency_ms"]
        table.loc[at, "x_reference"] = (
            table.loc[at, "latency_ms"] / float(base.iloc[0]) if len(base) else np.nan
        )
    return table


def plot_latency(table: pd.DataFrame, path: Path) -> None:
    """Score against action-selection latency (log x), the layout of SRPO's Figure 1."""

    groups = [g for g in ("all", "focus") if (table["tasks"] == g).any()]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), squeeze=False)
    methods = sorted(set(table["method"]))
    colors = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    for ax, g in zip(axes[0], groups):
        d = table[table["tasks"] == g]
        for _, r in d.iterrows():
            ax.errorbar(
                r["latency_ms"],
                r["score"],
                yerr=[[r["score"] - r["low"]], [r["high"] - r["score"]]],
                fmt="o",
                color=colors[r["method"]],
                capsize=3,
            )
            ax.annotate(
                r["variant"],
                (r["latency_ms"], r["score"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel(
            f"action-selection latency per call, ms (batch {int(d['batch'].iloc[0])}, median over steps)"
        )
        stat = d["score_stat"].iloc[0]
        ax.set_ylabel(f"D4RL-normalized score, {stat} (interval where n allows)")
        ax.set_title("every task" if g == "all" else "focus tasks", fontsize=10)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colors.items()]
    axes[0][-1].legend(handles=handles, fontsize=8, title="method", title_fontsize=8)
    sns.despine(fig)
    fig.suptitle("Score vs action-selection latency, measured in the same evaluation runs", fontsize=10)
    fig.tight_layout()
    artifacts.save_figure(fig, path)
    plt.close(fig)


def validation_study(p: PipelineParams, figs: Path, conf: float, reps: int, seed: int) -> dict:
    """Summaries, figures and report lines of the validation stages (method §9)."""
    vdir = p.validation_dir

    def per_task(sub: str) -> list[dict]:
        return [_read_json(vdir / sub / t / f"seed{s}.json") for t in p.validation_tasks for s in p.seeds]

    score = sa.summarize(
        _read_json(vdir / "score_bandits.json")["records"] + per_task("score"), conf, reps, seed
    )
    grad = gv.summarize(
        _read_json(vdir / "gradvar_bandits.json")["records"] + per_task("gradvar"), conf, seed
    )
    abl = _read_json(vdir / "bandit_ablation.json")
    ablation = ablation_summary(abl["records"], conf, reps, seed)
    sa.plot(score, figs / "score_accuracy.png")
    gv.plot(grad, figs / "gradient_variance.png")
    lines = [
        "## Validation: SRPO's mechanisms (method §9)",
        "",
        "### Score accuracy by diffusion time",
        "",
        *sa.markdown(score),
        "",
        "![score accuracy](figures/score_accuracy.png)",
        "",
        "### Variance of the E6 gradient",
        "",
        *gv.markdown(grad),
        "",
        "![gradient variance](figures/gradient_variance.png)",
        "",
        *ablation_markdown(ablation, abl["reference"]),
    ]
    return {
        "summaries": {"score_accuracy": score, "gradient_variance": grad, "bandit_ablation": ablation},
        "lines": lines,
    }


def _environments(scores: pd.DataFrame) -> dict[str, str]:
    """Task -> the evaluation environment(s) its runs used and why (evaluation.env_version)."""
    ok = scores[scores["skipped"].isna()]
    out = {}
    for task, d in ok.groupby("task", sort=False):
        pairs = sorted({(str(e), str(r)) for e, r in zip(d["env_id"], d["env_version_reason"])})
        out[task] = "; ".join(f"{e} ({r})" for e, r in pairs)
    return out


def diagnostics_study(p: PipelineParams, conf: float) -> dict:
    """The Diagnostics section: every run's diagnose record and the bandits', summarized over seeds."""
    vdir = p.validation_dir / "diagnostics"
    records = [_read_json(vdir / t / f"seed{s}.json") for t in p.tasks for s in p.seeds]
    # The score at the policy's actions: the bandit ablation's learned-score policy of the reference variant.
    ref = p.report.reference_variant
    bandit_records = [
        {"task": r["task"], "seed": r["seed"], **r["variants"][ref]["score_at_policy"]}
        for r in _read_json(p.validation_dir / "bandit_ablation.json")["records"]
    ]
    summary = dr.summarize(records, bandit_records, conf)
    return {"summary": summary, "lines": dr.markdown(summary, p.report.reference_variant)}


def render_markdown(
    p, per_task, aggs, poi, tasks, cards, wall, skipped, focus, latency, validation, envs, flatness, claims
) -> str:
    ref = p.report.reference_variant
    n = len(p.seeds)
    generated = any(c.get("generated") for c in cards)
    conf = 100 * p.report.confidence
    L = [f"# srpo-bench report: profile `{p.profile}`", ""]
    L += [
        f"Generated by `dvc repro` ({'`make smoke`' if p.profile == 'smoke' else '`make repro`'}) on "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from {code_version()}. "
        f"Every number below was measured by this run; nothing is copied in except the paper's column.",
        "",
    ]
    if generated:
        L += [
            "> **Datasets.** Scores are D4RL-normalized, but measured on datasets this suite generated "
            "itself "
            "(SAC on Gymnasium MuJoCo v5, see *Datasets*), not on D4RL's. The paper's Table 1 column is on "
            "D4RL's datasets: the two columns are **not** comparable task by task.",
            "",
        ]
    L += [
        f"Budgets: training profile `{p.train.profile}` with overrides "
        f"`{json.dumps(p.train.overrides)}`; {n} seeds ({', '.join(map(str, p.seeds))}) per task; "
        f"{p.evaluation.episodes} evaluation episodes per run"
        + "".join(
            f", {v} {p.variant_spec(v).episodes}"
            for v in dict.fromkeys([*p.variants, *p.focus.variants])
            if p.variant_spec(v).episodes != p.evaluation.episodes
        )
        + ". A run's score is the mean normalized score of its episodes; the intervals each table uses "
        "are stated beside it.",
        "",
        "The tables use the final evaluation: the finished policy (the last policy step), "
        f"{p.evaluation.episodes} episodes per run unless a variant sets its own. "
        + (
            f"The evaluation curves (*Evaluation curves* below) are separate evaluations of policy "
            f"snapshots taken every {p.evaluation.every} policy steps, {p.evaluation.curve_episodes} "
            "episode(s) each, seeded apart from the final evaluation."
            if p.evaluation.every > 0
            else "No evaluation curve was measured (evaluation.every is 0)."
        ),
        "",
        "Evaluation environments (evaluation.env_version = "
        f"`{p.evaluation.env_version}`): " + "; ".join(f"{t}: {e}" for t, e in envs.items()) + ".",
        "",
    ]

    deviations = protocol_deviations(p, generated)
    if deviations:
        L += [
            "### Deviations from the paper's protocol",
            "",
            "Every setting of this profile's SRPO runs that differs from the paper's (the `paper` training "
            f"profile of the same task, srpo/config.py; the authors' evaluation), read from the "
            f"configuration of {p.tasks[0]} seed {p.seeds[0]}:",
            "",
            "| setting | paper | this profile |",
            "|---|---|---|",
            *(f"| {k} | {a} | {b} |" for k, a, b in deviations),
            "",
        ]
    L += paper_claims.markdown(claims)
    L += [
        "## Per-task scores",
        "",
        f"Mean ± standard deviation over runs (n = {n} runs per cell), and "
        + (
            f"the {conf:.0f}% Student-t confidence interval of the mean [low, high]."
            if n >= stats.MIN_RUNS_FOR_TASK_INTERVAL
            else "the range of the runs (min to max): with fewer than "
            f"{stats.MIN_RUNS_FOR_TASK_INTERVAL} runs no confidence interval is given."
        ),
        "",
    ]
    head = "| task | " + " | ".join(p.variants) + " | paper SRPO (D4RL) |"
    L += [head, "|" + "---|" * (len(p.variants) + 2)]
    for task in tasks:
        cells = [_cell(per_task[task][v]) for v in p.variants]
        paper = PAPER_TABLE1.get(task, {}).get("SRPO")
        L.append(f"| {task} | " + " | ".join(cells) + f" | {'—' if paper is None else f'{paper:.1f}'} |")
    L += [
        "",
        "Each cell: mean ± std, then the interval. Baselines (eval/baselines.py) use the same data, "
        "seeds, critic and behavior model as SRPO: "
        + "; ".join(f"`{v}` = {_describe(p, v)}" for v in p.variants)
        + ".",
        "",
    ]
    if skipped:
        L += [
            "Skipped evaluations: "
            + "; ".join(f"{s['task']} seed {s['seed']} {s['variant']}: {s['skipped']}" for s in skipped),
            "",
        ]

    L += [
        "## Aggregate scores",
        "",
        f"Across {len(tasks)} tasks × {n} runs, "
        + (
            f"with {conf:.0f}% stratified-bootstrap CIs (runs resampled within tasks; Agarwal et al. 2021, "
            "computed with rliable). "
            if n >= stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL
            else f"without intervals (a stratified bootstrap needs at least "
            f"{stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL} runs per task to keep its coverage). "
        )
        + "Mean: of per-task means. Median: of per-task means. IQM: interquartile mean of all run scores "
        "pooled (25% trimmed on each side). Optimality gap: mean shortfall below 100 (lower is better).",
        "",
    ]
    L += ["| variant | runs × tasks | mean | median | IQM | optimality gap |", "|---|---|---|---|---|---|"]
    for v, a in aggs.items():
        L.append(
            f"| {v} | {n} × {len(tasks)} | " + " | ".join(a[k].format() for k in stats.AGGREGATE_NAMES) + " |"
        )
    L.append("")
    if poi:
        L += [
            "### Probability of improvement",
            "",
            "P(X > Y): the probability that a run of X scores higher than a run of Y on the same task, "
            "averaged "
            f"over tasks ({n} runs each), "
            + (
                f"with its {conf:.0f}% stratified-bootstrap CI"
                if n >= stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL
                else f"without an interval (fewer than {stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL} runs per task)"
            )
            + ". 0.5 = no difference.",
            "",
            "| comparison | P(X > Y) | runs each |",
            "|---|---|---|",
        ]
        L += [f"| {k} | {e.format(2)} | {e.n_runs} |" for k, e in poi.items()]
        L.append("")
    else:
        L += [f"Probability of improvement needs two variants; this profile has only `{ref}`.", ""]

    L += _focus_markdown(p, focus, conf)
    L += _latency_markdown(latency, p.report.reference_variant)
    L += _curves_markdown(p, flatness)
    if validation is not None:
        L += validation["lines"]
    L += [
        "## Figures",
        "",
        "![aggregate intervals](figures/aggregate_intervals.png)",
        "",
        "![performance profiles](figures/performance_profiles.png)",
        "",
        "![learning curves](figures/learning_curves.png)",
        "",
    ]

    L += ["## Datasets", ""]
    if cards:
        L += [
            "| task | dataset | transitions | episodes | returns random / medium / expert (ours) | "
            "our expert, D4RL-normalized | D4RL random / expert |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in cards:
            if not c.get("generated"):
                L.append(f"| {c['task']} | {c['dataset_id']} | | | | | |")
                continue
            r = c["policy_returns"]
            fmt = lambda x: "—" if x is None else f"{x:.0f}"  # noqa: E731
            L.append(
                f"| {c['task']} | {c['dataset_id']} | {c['transitions']} | {c['episodes']} | "
                f"{fmt(r['random'])} / {fmt(r['medium'])} / {fmt(r['expert'])} | "
                f"{fmt(c['our_expert_d4rl_normalized'])} | {c['d4rl_reference']['random']:.0f} / "
                f"{c['d4rl_reference']['expert']:.0f} |"
            )
        L.append("")
    L += [
        "## Run metadata",
        "",
        "Wall time summed over runs (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()) + ".",
        "",
        "Machine: `" + json.dumps(machine_info()) + "`",
        "",
        "Params (`" + p.source + "`):",
        "",
        "```yaml",
        yaml.safe_dump(_params_dict(p), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(L)


def _cell(d: dict) -> str:
    e = stats.Estimate.from_dict(d)
    return f"{d['value']:.1f} ± {d['std']:.1f} {e.interval_text()}".rstrip()


def _describe(p: PipelineParams, variant: str) -> str:
    spec = p.variant_spec(variant)
    if spec.method == "diffusion":
        b = spec.baseline
        return f"diffusion selection, N = {b.n_candidates} candidates, K = {b.solver_steps} solver steps"
    if spec.method == "iql-awr":
        temperature = spec.baseline.temperature or "preset"
        return f"IQL AWR (temperature {temperature}, clip {spec.baseline.weight_clip:g})"
    if spec.method == "bc":
        return "behavior cloning"
    changes = dict(spec.overrides)
    beta_scale = float(changes.pop("policy.beta_scale", 1.0))
    if beta_scale != 1.0:
        changes["beta"] = f"x{beta_scale:g}"
    return "SRPO" + (
        f" with {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else " (task preset)"
    )


def _focus_markdown(p: PipelineParams, focus: dict | None, conf: float) -> list[str]:
    if not focus or not focus["tasks"]:
        return []
    ref = p.report.reference_variant
    n = len(p.seeds)
    L = [
        "## Focus variants: ablations and costly baselines",
        "",
        f"On {', '.join(focus['tasks'])}, with the same runs' behavior models and critics ({n} runs per "
        "cell). "
        f"P(X > {ref}): probability that a run of the variant beats a run of `{ref}` on the same task, "
        + (
            f"{conf:.0f}% stratified-bootstrap CI"
            if n >= stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL
            else f"no interval (fewer than {stats.MIN_RUNS_FOR_AGGREGATE_INTERVAL} runs per task)"
        )
        + "; 0.5 = no difference.",
        "",
    ]
    L += [
        "| variant | what | " + " | ".join(focus["tasks"]) + f" | mean over tasks | P(X > {ref}) |",
        "|" + "---|" * (len(focus["tasks"]) + 4),
    ]
    for v in focus["variants"]:
        cells = [_cell(focus["per_task"][t][v]) for t in focus["tasks"]]
        a = focus["aggregate"][v]["mean"]
        mean = stats.Estimate.from_dict(a).format()
        poi = focus["poi"].get(v)
        poi_txt = "—" if poi is None else stats.Estimate.from_dict(poi).format(2)
        L.append(f"| {v} | {_describe(p, v)} | " + " | ".join(cells) + f" | {mean} | {poi_txt} |")
    L.append("")
    return L


def _latency_markdown(latency: pd.DataFrame, reference: str) -> list[str]:
    L = [
        "## Action-selection latency vs score",
        "",
        "Latency: wall time of one policy call for a batch of states (one per parallel environment), "
        "median over every step of the variant's evaluation rollouts, median over runs; measured in the "
        f"same runs as the scores. The ratio divides by {reference}'s latency over the same runs (all "
        "tasks, or the focus tasks). `make bench` (reports/bench/sampling.json) times each method in "
        "isolation at batch 1 and 256.",
        "",
        f"| variant | method | tasks | runs | episodes per run | score [interval] | latency (ms) | "
        f"× {reference} latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in latency.iterrows():
        episodes = ", ".join(map(str, r["episodes"]))
        L.append(
            f"| {r['variant']} | {r['method']} | {r['tasks']} | {r['n_runs']} | {episodes} "
            f"| {r['score_text']} | {r['latency_ms']:.3f} | {r['x_reference']:.1f} |"
        )
    L += ["", "![latency vs score](figures/latency_vs_score.png)", ""]
    return L


def _curves_markdown(p: PipelineParams, flatness: list[dict]) -> list[str]:
    if not flatness:
        return []
    L = [
        "## Evaluation curves",
        "",
        f"Normalized score against policy step: each run's policy snapshot every {p.evaluation.every} "
        f"steps (and the last), {p.evaluation.curve_episodes} episode(s) each; mean over seeds with a band "
        "over seeds. The tables above use the final evaluation, not these points. Flattened: over the last "
        "quarter of the policy stage the mean over seeds moves (max − min) by less than the standard "
        "deviation over seeds at the last point (eval/stats.py `curve_flattened`); — when the window has "
        "fewer than 2 points or there are fewer than 2 seeds.",
        "",
        "| task | variant | points in the last quarter | movement of the mean | std over seeds | flattened |",
        "|---|---|---|---|---|---|",
    ]
    for f in flatness:
        verdict = {True: "yes", False: "no", None: "—"}[f["flattened"]]
        num = lambda x: "—" if x is None or not np.isfinite(x) else f"{x:.1f}"  # noqa: E731
        L.append(
            f"| {f['task']} | {f['variant']} | {f['points']} | {num(f['movement'])} | {num(f['seed_std'])} "
            f"| {verdict} |"
        )
    L += ["", "![evaluation curves](figures/evaluation_curves.png)", ""]
    return L


def _params_dict(p: PipelineParams) -> dict:
    return {k: v for k, v in asdict(p).items() if k != "source"}
