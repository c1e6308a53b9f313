"""The smoke pipeline's wall time: sequential ``dvc repro`` against the Ray executor, in the same run.

Two scratch copies of the working tree (tracked and new files, as git sees them): one runs
``dvc repro pipelines/smoke/dvc.yaml``, the other ``python -m srpo_bench.pipeline run --executor ray
--jobs N``, each stage at 1 thread (OMP_NUM_THREADS=1) in both. Ray's start-up counts. Writes both
wall times, their ratio, every stage's time under Ray, the critical path of those times and the
bound ``max(critical path, work / N)`` (:mod:`srpo_bench.pipeline.projection`), whether the two
copies' evaluation scores agree, the load average before and after (the machine may be shared),
the machine and versions.

    python benchmarks/ray_smoke.py --jobs 2 --out reports/bench/ray_smoke.json
    python benchmarks/ray_smoke.py --jobs 2 --test-sizes --out /tmp/ray_smoke.json   # minutes: a check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from srpo import __version__, artifacts
from srpo_bench.eval.provenance import machine_info

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "pipelines/smoke/dvc.yaml"
# The working-tree copy and --test-sizes are tests/test_pipeline.py's own (its end-to-end run:
# every stage, fewer steps), so the benchmark's check and the test cannot drift apart.
sys.path.insert(0, str(ROOT))
from tests.test_pipeline import _copy_repo as copy_tree, _shrink as shrink  # noqa: E402


def scores(repo: Path) -> dict[str, list]:
    """Per-episode normalized scores of every evaluation (timings left out)."""
    return {
        str(f.relative_to(repo)): json.loads(f.read_text()).get("normalized")
        for f in sorted((repo / "runs/smoke").rglob("evaluation/*/seed*.json"))
    }


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}); its output: {log}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="Ray's CPUs (default: all)")
    parser.add_argument("--test-sizes", action="store_true", help="the test suite's sizes (a quick check)")
    parser.add_argument("--out", default="reports/bench/ray_smoke.json")
    parser.add_argument("--keep", type=Path, default=None, help="keep the two copies in this folder")
    args = parser.parse_args()
    from srpo_bench.pipeline.projection import project

    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    work = Path(tempfile.mkdtemp(prefix="ray_smoke_")) if args.keep is None else args.keep
    load = {"before": os.getloadavg()}
    wall, repos = {}, {}
    for name in ("sequential", "ray"):
        repo = copy_tree(work / name)
        if args.test_sizes:
            shrink(repo / "pipelines/smoke/params.yaml")
        repos[name] = repo
    wall["sequential"] = timed(
        [str(bin_dir / "dvc"), "repro", SMOKE], repos["sequential"], env, work / "seq.log"
    )
    ray_cmd = [sys.executable, "-m", "srpo_bench.pipeline", "run", "--executor", "ray", "--dvc-file", SMOKE]
    ray_cmd += ["--jobs", str(args.jobs), "--threads-per-stage", "1"]
    wall["ray"] = timed(ray_cmd, repos["ray"], env, work / "ray.log")
    load["after"] = os.getloadavg()

    # Each stage's time under Ray (its log's "recorded" line) and the graph it ran on.
    stage_s: dict[str, float] = {}
    for line in (work / "ray.log").read_text().splitlines():
        if line.lstrip().startswith("recorded") and "(" in line:
            name = line.split()[1]
            stage_s[name] = float(line.rsplit("(", 1)[1].split()[0])
    from dvc.repo import Repo, lock_repo

    from srpo_bench.pipeline import ray_executor

    with Repo(str(repos["ray"])) as repo, lock_repo(repo):
        plan, _ = ray_executor.plan(repo, SMOKE, force=True)
    names = [s.name for s in plan.stages]
    bound = project(
        {n: stage_s.get(n, 0.0) for n in names},
        {s.name: list(s.upstream) for s in plan.stages},
        names,
        args.jobs,
    )
    import ray

    result = {
        "benchmark": "ray_smoke",
        "description": __doc__.split("\n\n")[0],
        "sizes": "test" if args.test_sizes else "smoke profile",
        "jobs": args.jobs,
        "threads_per_stage": 1,
        "wall_s": wall,
        "speedup": wall["sequential"] / wall["ray"],
        "ray_stage_s": stage_s,
        "ray_stage_work_s": sum(stage_s.values()),
        "ray_bound_s": bound,
        "scores_equal": scores(repos["sequential"]) == scores(repos["ray"]),
        "load_average": load,
        "machine": machine_info(),
        "versions": {"srpo_bench": __version__, "ray": ray.__version__, "dvc": _dvc_version(bin_dir)},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    artifacts.write_json(Path(args.out), result)
    print(
        f"sequential {wall['sequential']:.0f} s, ray --jobs {args.jobs} {wall['ray']:.0f} s: "
        f"{result['speedup']:.2f}x (bound {bound['lower_bound']:.0f} s); "
        f"scores equal: {result['scores_equal']} -> {args.out}"
    )
    if args.keep is None:
        shutil.rmtree(work)


def _dvc_version(bin_dir: Path) -> str:
    return subprocess.run([str(bin_dir / "dvc"), "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
