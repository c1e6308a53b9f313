"""Projected wall time of the paper protocol on 1, 4 and 8 GPUs: the DAG times measured per-stage GPU times.

The graph is the one the Ray executor runs (every stage of ``pipelines/paper-fast/dvc.yaml`` and its
edges, from DVC); each stage takes one GPU. Per-stage minutes come from the H100 measurements in
``reports/bench/overlap_probe_cuda*.json`` (5 seeds of one task, paper budgets, the paper-fast
precisions, compiled, one stage alone on the GPU): behavior, critic, and the SRPO policy, which
prices every SRPO-method policy stage (the ``srpo`` variant and the focus variants). The diffusion
baselines' policy stage only writes a selection checkpoint (seconds: counted as 0).

Stages with no GPU measurement are listed in the output and counted as 0, so the projection covers
the measured training stages only and is a lower bound on the whole protocol's wall time.

    python benchmarks/ray_projection.py --out reports/bench/ray_projection.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from dvc.repo import Repo, lock_repo

from srpo import artifacts
from srpo_bench.params import load_params
from srpo_bench.pipeline import ray_executor
from srpo_bench.pipeline.projection import project

GPUS = (1, 4, 8)


def stage_minutes(name: str, kind: str, method: str | None, measured: dict[str, float]) -> float | None:
    """A stage's GPU minutes from the measured per-task ones; None where nothing was measured."""
    if kind in ("behavior", "critic"):
        return measured[kind]
    if kind in ("policy", "focus_policy"):
        return {"srpo": measured["policy"], "diffusion": 0.0}.get(method)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dvc-file", default="pipelines/paper-fast/dvc.yaml")
    parser.add_argument(
        "--measured",
        nargs="+",
        type=Path,
        default=[
            Path("reports/bench/overlap_probe_cuda.json"),
            Path("reports/bench/overlap_probe_cuda_run2.json"),
        ],
    )
    parser.add_argument("--out", default="reports/bench/ray_projection.json")
    args = parser.parse_args()

    params = load_params(Path(args.dvc_file).parent / "params.yaml")
    with Repo(".") as repo, lock_repo(repo):
        plan, _ = ray_executor.plan(repo, args.dvc_file, force=True)
    order = [s.name for s in plan.stages]
    upstream = {s.name: list(s.upstream) for s in plan.stages}
    runs = []
    for path in args.measured:
        measured = json.loads(path.read_text())["result"]["paper_minutes_solo"]
        durations, missing = {}, {}
        for spec in plan.stages:
            stage = spec.name.split(":", 1)[-1]
            kind = stage.split("@", 1)[0]
            method = None
            if kind in ("policy", "focus_policy"):
                variant = max((v for v in params.all_variants if stage.endswith(f"-{v}")), key=len)
                method = params.variant_spec(variant).method
            minutes = stage_minutes(stage, kind, method, measured)
            durations[spec.name] = minutes or 0.0
            if minutes is None:
                key = f"{kind} ({method})" if method else kind
                missing[key] = missing.get(key, 0) + 1
        runs.append(
            {
                "measured": str(path),
                "minutes_per_task": measured,
                "projection_minutes": [project(durations, upstream, order, g) for g in GPUS],
                "unmeasured_stages_counted_as_0": missing,
            }
        )
    result = {
        "benchmark": "ray_projection",
        "description": __doc__.split("\n\n")[0],
        "dvc_file": args.dvc_file,
        "stages": len(order),
        "gpus": list(GPUS),
        "runs": runs,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    artifacts.write_json(Path(args.out), result)
    print(f"{len(order)} stages in {args.dvc_file}; hours, training stages measured on one H100:\n")
    print("| GPUs | critical path | lower bound | list schedule (submission order) |")
    print("|---|---|---|---|")
    for i, g in enumerate(GPUS):
        cells = [
            "-".join(dict.fromkeys(f"{r['projection_minutes'][i][k] / 60:.1f}" for r in runs))
            for k in ("critical_path", "lower_bound", "list_schedule")
        ]
        print(f"| {g} | {' | '.join(cells)} |")
    print("\nnot measured on a GPU (counted as 0):", runs[0]["unmeasured_stages_counted_as_0"])


if __name__ == "__main__":
    main()
