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
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from eval import stats
from eval.pipeline import PipelineParams
from eval.provenance import code_version, machine_info
from eval.references import PAPER_TABLE1
from srpo import artifacts

# Training curves shown per stage: (stage, metric in the stage's history, label).
CURVES = (("behavior", "loss", "behavior: DSM loss (E4)"), ("critic", "q_loss", "critic: Q loss"),
          ("critic", "v_loss", "critic: V expectile loss"), ("policy", "loss", "policy: E6 surrogate loss"))


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it (dvc repro)")
    return json.loads(path.read_text())


def collect_scores(p: PipelineParams) -> pd.DataFrame:
    """One row per (task, seed, variant): the run's score = mean normalized score over its episodes."""
    rows = []
    for task in p.tasks:
        for seed in p.seeds:
            for variant in p.variants:
                ev = _read_json(p.variant_path(task, seed, variant) / "evaluation.json")
                if "skipped" in ev:
                    rows.append({"task": task, "seed": seed, "variant": variant, "skipped": ev["skipped"]})
                    continue
                if ev.get("mean_normalized") is None:
                    raise ValueError(f"{task} has no normalization reference; its dataset needs ref_min/ref_max")
                rows.append({"task": task, "seed": seed, "variant": variant, "score": ev["mean_normalized"],
                             "mean_return": ev["mean_return"], "episodes": ev["episodes"], "skipped": None})
    return pd.DataFrame(rows)


def collect_curves(p: PipelineParams) -> pd.DataFrame:
    """Long table of training curves: task, seed, stage, metric, step, value (reference variant's policy)."""
    ref = p.report["reference_variant"]
    rows = []
    for task in p.tasks:
        for seed in p.seeds:
            for stage, metric, _ in CURVES:
                base = p.variant_path(task, seed, ref) if stage == "policy" else p.run_path(task, seed)
                for entry in _read_json(base / f"{stage}_metrics.json")["history"]:
                    if metric in entry:
                        rows.append({"task": task, "seed": seed, "stage": stage, "metric": metric,
                                     "step": entry["step"], "value": entry[metric]})
    return pd.DataFrame(rows)


def score_matrices(scores: pd.DataFrame, p: PipelineParams) -> dict[str, np.ndarray]:
    """(runs x tasks) matrix per variant over the tasks that were evaluated."""
    ok = scores[scores["skipped"].isna()]
    tasks = [t for t in p.tasks if t in set(ok["task"])]
    return {v: ok[ok["variant"] == v].pivot(index="seed", columns="task", values="score")[tasks].to_numpy()
            for v in p.variants}


def _atomic_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_learning_curves(curves: pd.DataFrame, path: Path, confidence: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    tasks = list(dict.fromkeys(curves["task"]))
    fig, axes = plt.subplots(len(CURVES), len(tasks), figsize=(2.6 * len(tasks) + 1, 2.1 * len(CURVES)),
                             squeeze=False, sharex="row")
    for r, (stage, metric, label) in enumerate(CURVES):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            d = curves[(curves["task"] == task) & (curves["stage"] == stage) & (curves["metric"] == metric)]
            sns.lineplot(d, x="step", y="value", ax=ax, errorbar=("ci", 100 * confidence), n_boot=1000, seed=0)
            ax.set_title(task if r == 0 else "", fontsize=9)
            ax.set_ylabel(label if c == 0 else "", fontsize=8)
            ax.set_xlabel("step" if r == len(CURVES) - 1 else "")
            ax.tick_params(labelsize=7)
    fig.suptitle(f"Training curves: mean over seeds with {100 * confidence:.0f}% bootstrap CI bands", fontsize=10)
    fig.tight_layout()
    _atomic_figure(fig, path)
    plt.close(fig)


def plot_profiles(profiles: dict, path: Path, n_runs: int, n_tasks: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (variant, prof), color in zip(profiles.items(), sns.color_palette("colorblind")):
        ax.plot(prof["tau"], prof["fraction"], label=variant, color=color)
        ax.fill_between(prof["tau"], prof["low"], prof["high"], color=color, alpha=0.2)
    ax.set_xlabel("D4RL-normalized score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title(f"Performance profiles ({n_runs} runs × {n_tasks} tasks, 95% CI bands)", fontsize=10)
    ax.legend(fontsize=8)
    sns.despine(fig)
    _atomic_figure(fig, path)
    plt.close(fig)


def plot_aggregates(aggs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    variants = list(aggs)
    fig, axes = plt.subplots(1, len(stats.AGGREGATE_NAMES), figsize=(3.0 * len(stats.AGGREGATE_NAMES),
                                                                      0.5 * len(variants) + 1.4))
    colors = sns.color_palette("colorblind", len(variants))
    for ax, name in zip(axes, stats.AGGREGATE_NAMES):
        for i, v in enumerate(variants):
            e = aggs[v][name]
            ax.barh(i, e.high - e.low, left=e.low, height=0.6, color=colors[i], alpha=0.6)
            ax.plot([e.value, e.value], [i - 0.3, i + 0.3], color="k", lw=1.5)
        ax.set_yticks(range(len(variants)), variants if ax is axes[0] else [""] * len(variants), fontsize=8)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("Aggregate D4RL-normalized scores, 95% stratified-bootstrap CIs", fontsize=10)
    fig.tight_layout()
    _atomic_figure(fig, path)
    plt.close(fig)


def _dataset_cards(p: PipelineParams) -> list[dict]:
    from eval.datasets import generated_dataset_id

    cards = []
    for task in p.tasks:
        if task in p.datasets:
            cards.append({"task": task, "dataset_id": p.datasets[task], "generated": False})
            continue
        path = p.minari_root / generated_dataset_id(task) / "srpo_card.json"
        if path.exists():
            cards.append({"task": task, "generated": True, **json.loads(path.read_text())})
    return cards


def _wall_times(p: PipelineParams) -> dict[str, float]:
    total: dict[str, float] = {}
    for task in p.tasks:
        for seed in p.seeds:
            for stage in ("behavior", "critic"):
                total[stage] = total.get(stage, 0.0) + _read_json(p.run_path(task, seed) / f"{stage}_metrics.json")["wall_s"]
            for v in p.variants:
                d = p.variant_path(task, seed, v)
                total["policy"] = total.get("policy", 0.0) + _read_json(d / "policy_metrics.json")["wall_s"]
                total["evaluate"] = total.get("evaluate", 0.0) + _read_json(d / "evaluation.json").get("wall_s", 0.0)
    return total


def write_report(p: PipelineParams) -> Path:
    rep = p.report
    conf, reps, seed = float(rep.get("confidence", 0.95)), int(rep.get("bootstrap_reps", 10_000)), int(rep.get("seed", 0))
    out = Path(p.report_dir)
    scores = collect_scores(p)
    curves = collect_curves(p)
    mats = score_matrices(scores, p)
    ok = scores[scores["skipped"].isna()]
    tasks = [t for t in p.tasks if t in set(ok["task"])]
    if not tasks:
        raise ValueError("no task could be evaluated (every evaluation was skipped); nothing to report")
    n_runs = len(p.seeds)
    ref = rep["reference_variant"]

    # Per task: mean, std and a bootstrap CI of the mean over seeds, per variant.
    per_task: dict[str, dict[str, dict]] = {}
    for task in tasks:
        per_task[task] = {}
        for v in p.variants:
            x = ok[(ok["task"] == task) & (ok["variant"] == v)].sort_values("seed")["score"].to_numpy()
            est, std = stats.task_estimate(x, conf, reps, seed)
            per_task[task][v] = {**est.to_dict(), "std": std, "scores": x.tolist()}
    aggs = stats.aggregate_estimates(mats, conf, reps, seed)
    lo = min(0.0, min(float(m.min()) for m in mats.values()))
    hi = max(100.0, max(float(m.max()) for m in mats.values()))
    profiles = stats.performance_profile(mats, np.linspace(lo, hi + 1.0, 60), conf, min(reps, 2000), seed)
    poi = {f"{ref} > {v}": stats.probability_of_improvement(mats[ref], mats[v], conf, reps, seed)
           for v in p.variants if v != ref}

    figs = out / "figures"
    plot_learning_curves(curves, figs / "learning_curves.png", conf)
    plot_profiles(profiles, figs / "performance_profiles.png", n_runs, len(tasks))
    plot_aggregates(aggs, figs / "aggregate_intervals.png")

    plots = out / "plots"
    curve_means = curves.groupby(["stage", "metric", "step", "task"])["value"].mean().reset_index()
    for stage, metric, _ in CURVES:
        wide = curve_means[(curve_means["stage"] == stage) & (curve_means["metric"] == metric)].pivot(
            index="step", columns="task", values="value")
        _atomic_text(plots / f"{stage}_{metric}.csv", wide.reindex(columns=tasks).to_csv())
    prof_df = pd.DataFrame({"tau": profiles[ref]["tau"], **{v: profiles[v]["fraction"] for v in p.variants}})
    _atomic_text(plots / "performance_profile.csv", prof_df.to_csv(index=False))

    metrics = {
        "profile": p.profile, "n_runs": n_runs, "n_tasks": len(tasks), "confidence": conf,
        "aggregate": {v: {k: e.to_dict() for k, e in a.items()} for v, a in aggs.items()},
        "per_task": per_task,
        "probability_of_improvement": {k: e.to_dict() for k, e in poi.items()},
        "skipped": scores[scores["skipped"].notna()][["task", "seed", "variant", "skipped"]].to_dict("records"),
    }
    artifacts.write_json(out / "metrics.json", metrics)
    text = render_markdown(p, per_task, aggs, poi, tasks, _dataset_cards(p), _wall_times(p), metrics["skipped"])
    _atomic_text(out / "report.md", text)
    return out / "report.md"


def render_markdown(p, per_task, aggs, poi, tasks, cards, wall, skipped) -> str:
    ref = p.report["reference_variant"]
    n = len(p.seeds)
    generated = any(c.get("generated") for c in cards)
    conf = 100 * float(p.report.get("confidence", 0.95))
    L = [f"# srpo-bench report: profile `{p.profile}`", ""]
    L += [f"Generated by `dvc repro` ({'`make smoke`' if p.profile == 'smoke' else '`make repro`'}) on "
          f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from {code_version()}. "
          f"Every number below was measured by this run; nothing is copied in except the paper's column.", ""]
    if generated:
        L += ["> **Datasets.** Scores are D4RL-normalized, but measured on datasets this suite generated itself "
              "(SAC on Gymnasium MuJoCo v5, see *Datasets*), not on D4RL's. The paper's Table 1 column is on "
              "D4RL's datasets: the two columns are **not** comparable task by task.", ""]
    L += [f"Budgets: training profile `{p.train['profile']}` with overrides "
          f"`{json.dumps(p.train.get('overrides') or {})}`; {n} seeds ({', '.join(map(str, p.seeds))}) per task; "
          f"{p.evaluation['episodes']} evaluation episodes per run. A run's score is the mean normalized score "
          f"of its episodes; intervals are {conf:.0f}% bootstrap CIs over runs.", ""]

    L += ["## Per-task scores", "",
          f"Mean ± standard deviation over runs, and the {conf:.0f}% percentile-bootstrap CI of the mean "
          f"(n = {n} runs per cell).", ""]
    head = "| task | " + " | ".join(f"{v}: mean ± std | {v}: CI" for v in p.variants) + " | paper SRPO (D4RL) |"
    L += [head, "|" + "---|" * (2 * len(p.variants) + 2)]
    for task in tasks:
        cells = []
        for v in p.variants:
            d = per_task[task][v]
            e = stats.Estimate(d["value"], d["low"], d["high"], d["n_runs"], d["confidence"])
            cells += [f"{d['value']:.1f} ± {d['std']:.1f}", e.format().split(" ", 1)[1]]
        paper = PAPER_TABLE1.get(task, {}).get("SRPO")
        L.append(f"| {task} | " + " | ".join(cells) + f" | {'—' if paper is None else f'{paper:.1f}'} |")
    L.append("")
    if skipped:
        L += ["Skipped evaluations: " + "; ".join(f"{s['task']} seed {s['seed']} {s['variant']}: {s['skipped']}"
                                                 for s in skipped), ""]

    L += ["## Aggregate scores", "",
          f"Across {len(tasks)} tasks × {n} runs, with {conf:.0f}% stratified-bootstrap CIs (runs resampled within "
          "tasks; Agarwal et al. 2021, computed with rliable). IQM: mean of the middle 50% of all run scores. "
          "Optimality gap: mean shortfall below 100 (lower is better).", ""]
    L += ["| variant | runs × tasks | mean | median | IQM | optimality gap |", "|---|---|---|---|---|---|"]
    for v, a in aggs.items():
        L.append(f"| {v} | {n} × {len(tasks)} | " + " | ".join(a[k].format() for k in stats.AGGREGATE_NAMES) + " |")
    L.append("")
    if poi:
        L += ["### Probability of improvement", "",
              f"P(X > Y): the probability that a run of X scores higher than a run of Y on the same task, averaged "
              f"over tasks, with its {conf:.0f}% stratified-bootstrap CI ({n} runs each). 0.5 = no difference.", "",
              "| comparison | P(X > Y) | runs each |", "|---|---|---|"]
        L += [f"| {k} | {e.format(2)} | {e.n_runs} |" for k, e in poi.items()]
        L.append("")
    else:
        L += [f"Probability of improvement needs two variants; this profile has only `{ref}`.", ""]

    L += ["## Figures", "", "![aggregate intervals](figures/aggregate_intervals.png)", "",
          "![performance profiles](figures/performance_profiles.png)", "",
          "![learning curves](figures/learning_curves.png)", ""]

    L += ["## Datasets", ""]
    if cards:
        L += ["| task | dataset | transitions | episodes | returns random / medium / expert (ours) | "
              "our expert, D4RL-normalized | D4RL random / expert |", "|---|---|---|---|---|---|---|"]
        for c in cards:
            if not c.get("generated"):
                L.append(f"| {c['task']} | {c['dataset_id']} | | | | | |")
                continue
            r = c["policy_returns"]
            fmt = lambda x: "—" if x is None else f"{x:.0f}"  # noqa: E731
            L.append(f"| {c['task']} | {c['dataset_id']} | {c['transitions']} | {c['episodes']} | "
                     f"{fmt(r['random'])} / {fmt(r['medium'])} / {fmt(r['expert'])} | "
                     f"{fmt(c['our_expert_d4rl_normalized'])} | {c['d4rl_reference']['random']:.0f} / "
                     f"{c['d4rl_reference']['expert']:.0f} |")
        L.append("")
    L += ["## Run metadata", "",
          "Wall time summed over runs (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()) + ".", "",
          "Machine: `" + json.dumps(machine_info()) + "`", "", "Params (`" + p.source + "`):", "", "```yaml",
          yaml.safe_dump(_params_dict(p), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(L)


def _params_dict(p: PipelineParams) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(p).items() if k != "source"}
