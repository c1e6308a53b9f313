"""The pipeline's command line: ``python -m srpo_bench.pipeline STEP --params FILE ...``."""

from __future__ import annotations

import argparse
import sys

from srpo_bench import pipeline
from srpo_bench.params import load_params
from srpo_bench.pipeline import steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m srpo_bench.pipeline",
        description=pipeline.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="step", required=True)

    def add(name: str, help_: str, *args: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument(
            "--params", default="params.yaml", help="the profile's params file (default: %(default)s)"
        )
        for a in args:
            sp.add_argument(f"--{a}", required=True, type=int if a == "seed" else str)
        return sp

    add("datasets", "generate the five D4RL-style datasets of one environment", "env")
    add(
        "train",
        "train the behavior model or the IQL critic of every seed of a task (one batch)",
        "task",
        "stage",
    )
    add(
        "policy",
        "extract one policy variant for every seed of a task from its runs' behavior models and critics",
        "task",
        "variant",
    )
    add(
        "evaluate",
        "roll out one policy variant; per-episode returns and normalized scores",
        "task",
        "seed",
        "variant",
    )
    add("score-bandits", "score accuracy of learned behavior models against the exact score (bandits)")
    add("score-dataset", "score accuracy on held-out episodes of one task's dataset", "task", "seed")
    add("gradvar-bandits", "variance of the E6 gradient on the bandits (exact score and Q)")
    add(
        "gradvar-dataset",
        "variance of the E6 gradient on one run's behavior model and critic",
        "task",
        "seed",
    )
    add("bandit-ablation", "SRPO focus variants on the bandits against their exact-surrogate optima")
    add(
        "diagnose",
        "critic accuracy on held-out episodes, policy support and extraction of a task's runs",
        "task",
    )
    add("report", "statistics, tables and figures over every run -> report.md")
    add("check", "validate a params file and say what it describes, in seconds; runs nothing")
    return parser


def describe(p) -> str:
    """One line: what a params file trains (what `check` prints)."""
    return (
        f"profile {p.profile}: envs {', '.join(p.envs)} x kinds {', '.join(p.kinds)}, seeds "
        f"{', '.join(map(str, p.seeds))}, variants {', '.join(p.variants)}; outputs in {p.run_dir}, "
        f"{p.report_dir}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        p = load_params(args.params)
        if args.step == "check":
            print(f"{args.params}: valid; {describe(p)}")
            return 0
        steps.setup(p)
        kwargs = {k: v for k, v in vars(args).items() if k not in ("step", "params")}
        {
            "datasets": steps.step_datasets,
            "train": steps.step_train,
            "policy": steps.step_policy,
            "evaluate": steps.step_evaluate,
            "score-bandits": steps.step_score_bandits,
            "score-dataset": steps.step_score_dataset,
            "gradvar-bandits": steps.step_gradvar_bandits,
            "gradvar-dataset": steps.step_gradvar_dataset,
            "bandit-ablation": steps.step_bandit_ablation,
            "diagnose": steps.step_diagnose,
            "report": steps.step_report,
        }[args.step](p, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
