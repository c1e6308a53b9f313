"""The pipeline's command line: ``python -m srpo_bench.pipeline STEP --params FILE ...``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

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
    run = sub.add_parser(
        "run",
        help="run a whole pipeline (dvc.yaml): sequentially with dvc repro, or its stages in parallel on Ray",
        description=(
            "Run the out-of-date stages of a dvc.yaml. --executor ray: each stage is a Ray task with "
            "the resources it declares, started once its upstream stages finished; the driver records "
            "every finished stage in dvc.lock, so that afterwards `dvc status` is clean and `dvc repro` "
            "runs nothing. Without --address it starts a local Ray instance with --jobs CPUs."
        ),
    )
    run.add_argument("--executor", choices=("ray", "dvc"), default="ray", help="default: %(default)s")
    run.add_argument(
        "--dvc-file",
        default="dvc.yaml",
        help="the pipeline, e.g. pipelines/smoke/dvc.yaml, or FILE:STAGE for one stage and what it needs "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="CPUs of the local Ray instance (default: all of this machine's)",
    )
    run.add_argument(
        "--address", default=None, help="join a running Ray cluster (e.g. auto, or HEAD_IP:6379)"
    )
    run.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries of a stage that fails or whose worker dies (default: 2)",
    )
    run.add_argument(
        "--threads-per-stage",
        type=int,
        default=None,
        help="CPUs per stage (default: the params file's threads, at least 1)",
    )
    run.add_argument(
        "--gpus-per-stage",
        type=float,
        default=1.0,
        help="GPUs per stage when the params file's device is cuda; a fraction shares one (default: 1)",
    )
    run.add_argument("--force", action="store_true", help="run every stage, changed or not")
    run.add_argument(
        "--dry", action="store_true", help="print the plan (stages, resources, edges); run nothing"
    )
    return parser


def run_pipeline(args: argparse.Namespace) -> int:
    """``run``: the whole pipeline, by dvc repro or on Ray; 1 when a stage was not recorded."""
    if args.executor == "dvc":
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        dvc = [str(Path(sys.executable).parent / "dvc"), "repro", args.dvc_file] + ["--force"] * args.force
        return subprocess.run(dvc + ["--dry"] * args.dry, env=env).returncode
    from srpo_bench.pipeline import ray_executor

    summary = ray_executor.run(
        args.dvc_file,
        address=args.address,
        jobs=args.jobs,
        retries=args.retries,
        threads_per_stage=args.threads_per_stage,
        gpus_per_stage=args.gpus_per_stage,
        force=args.force,
        dry=args.dry,
    )
    return 1 if summary.failed else 0


def describe(p) -> str:
    """One line: what a params file trains (what `check` prints)."""
    return (
        f"profile {p.profile}: tasks {', '.join(p.tasks)}, seeds "
        f"{', '.join(map(str, p.seeds))}, variants {', '.join(p.variants)}; outputs in {p.run_dir}, "
        f"{p.report_dir}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.step == "run":
            return run_pipeline(args)
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
