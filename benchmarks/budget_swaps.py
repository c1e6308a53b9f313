"""Issue 25 on the study's data: does SRPO on hopper-medium-replay get worse with more training,
and which part decides its score? Summarizes the runs of ``benchmarks/budget_swaps.sh``.

Five seeds, the study's dataset (D4RL-grade, ``data/default``) and network sizes. Four ways to
build the policy, each scored with the pipeline's final evaluation (10 episodes, episode i of
seed S reset with 100000 + 1000 S + i):

- ``short``: every stage at the previous default budget (behavior 1.5k, critic 4k, policy 2k);
- ``study``: the study's own runs (behavior 10k, critic 20k, policy 10k), read from ``runs/default``;
- ``B_study + C_short``: the study's behavior model and the short critic, policy 10k;
- ``B_short + C_study``: the short behavior model and the study's critic, policy 10k.

The held-out accuracy of the critic at 5k / 10k / 15k / 20k steps comes from the study's
``diagnose`` stage (``runs/default-validation/diagnostics``). Intervals: ``task_estimate``
(Student-t from 4 runs). The paired differences use the same seeds' runs.

    bash benchmarks/budget_swaps.sh        # about 50 core-minutes after the study has run
    python benchmarks/budget_swaps.py --out reports/bench/budget_swaps_hmr.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
from precision_effect import paired_effect  # benchmarks/, on sys.path when run as a script

from srpo import artifacts
from srpo_bench.eval import stats
from srpo_bench.eval.provenance import machine_info

TASK = "hopper-medium-replay"


def _scores(files: list[Path]) -> list[float]:
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"missing evaluations: {', '.join(missing)}; run benchmarks/budget_swaps.sh first")
    return [json.loads(f.read_text())["mean_normalized"] for f in files]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, default=Path("runs/default"), help="the study's run_dir")
    ap.add_argument("--work", type=Path, default=Path("runs/issue25"), help="budget_swaps.sh's runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=Path("reports/bench/budget_swaps_hmr.json"))
    args = ap.parse_args(argv)
    seeds = args.seeds
    study = args.study / TASK
    # name -> (folder of seed S's evaluation, config.json of seed S's policy)
    runs = {
        "short": (lambda s: args.work / "short" / f"seed{s}" / "evaluation.json",
                  lambda s: args.work / "short" / f"seed{s}" / "config.json"),
        "study": (lambda s: study / "evaluation" / "srpo" / f"seed{s}.json",
                  lambda s: study / "policy" / "srpo" / f"seed{s}" / "config.json"),
        "B_study + C_short": (lambda s: args.work / "S1" / "pi" / f"seed{s}" / "evaluation.json",
                              lambda s: args.work / "S1" / "pi" / f"seed{s}" / "config.json"),
        "B_short + C_study": (lambda s: args.work / "S2" / "pi" / f"seed{s}" / "evaluation.json",
                              lambda s: args.work / "S2" / "pi" / f"seed{s}" / "config.json"),
    }  # fmt: skip
    scores = {name: _scores([evaluation(s) for s in seeds]) for name, (evaluation, _) in runs.items()}
    budgets = {}
    for name, (_, config) in runs.items():
        cfg = json.loads(config(seeds[0]).read_text())  # the steps each part was trained for
        budgets[name] = {stage: cfg[stage]["steps"] for stage in ("behavior", "critic", "policy")}
    summary = {}
    for name, x in scores.items():
        est, std = stats.task_estimate(x)
        summary[name] = {"scores": x, **est.to_dict(), "std": std}
    diffs = {
        f"study - ({name})": paired_effect(np.array(scores[name]), np.array(scores["study"]), 0.95)
        for name in ("short", "B_study + C_short", "B_short + C_study")
    }
    critic = {}
    diag_dir = args.study.parent / f"{args.study.name}-validation" / "diagnostics" / TASK
    for s in seeds:
        f = diag_dir / f"seed{s}.json"
        if f.exists():
            d = json.loads(f.read_text())["critic_heldout"]
            critic[f"seed{s}"] = {
                "return_mean": d["return_mean"],
                "return_std": d["return_std"],
                "checks": [
                    {
                        "step": c["step"],
                        "bias": c["q"]["bias"],
                        "spearman": c["q"]["spearman"],
                        "q_mean": c["q_mean"],
                    }
                    for c in d["checks"]
                ],
            }
    artifacts.write_json(
        args.out,
        {
            "benchmark": "budget_swaps",
            "task": TASK,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "seeds": seeds,
            "budgets": budgets,
            "final_normalized": summary,
            "paired_differences": diffs,
            "critic_heldout_checks": critic,
            "note": "interval: " + stats.task_interval_rule(0.95),
        },
    )
    for name, e in summary.items():
        print(f"{name:>18}: {stats.format_sig(e)}")
    for name, e in diffs.items():
        print(f"{name:>30}: {stats.format_sig(e)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
