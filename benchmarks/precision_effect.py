"""Does training in bf16 (or TF32) change SRPO's scores? Same data, same seeds, fp32 against each.

The paper profile trains in float32, as the authors' code does; bf16 / TF32 are the `paper-fast`
opt-in (docs/gpu.md). This measures what the opt-in costs in score. For each precision every
stage (behavior, critic, policy) runs at it, S seeds seed-batched (:mod:`srpo.fast.seed_batch`,
what the pipeline runs), with a policy snapshot every ``--every`` policy steps. Each snapshot is
evaluated with ``--curve-episodes`` episodes and the finished policy with ``--episodes`` (the
pipeline's seeding: final episode i of seed S resets with 100000 + 1000 S + i, curve episodes
1e6 higher). The flattening check of the report (eval/stats.py ``curve_flattened``) says
whether the budget was long enough for the comparison to mean anything.

The effect is the per-seed paired difference of final normalized scores, other minus fp32
(same seed: same data order, same initial weights, same evaluation episodes), with
``task_estimate``'s interval (Student-t from 4 seeds, the range for 2-3).

The published result (reports/bench/precision_effect.json: the study's budgets, about 2 h on
2 cores with the precisions in parallel):

    python benchmarks/precision_effect.py --task hopper-medium-replay --seeds 0 1 2 3 4 \\
        --precisions fp32 bf16 --set behavior.steps=10000 --set behavior.width=128 \\
        --set critic.steps=20000 --set policy.steps=10000 --set checkpoint_every=1000 \\
        --every 1000 --episodes 20 --curve-episodes 5 --jobs 2

Checkpoints go to ``--work`` (default runs/precision/<task>); a killed run resumes from them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from srpo import artifacts
from srpo.config import make_config
from srpo.fast import seed_batch
from srpo_bench.eval import stats
from srpo_bench.eval.checkpoints import list_snapshots, load_policy
from srpo_bench.eval.datasets import load_dataset, resolve_env_version
from srpo_bench.eval.provenance import code_version, machine_info
from srpo_bench.eval.rollout import env_spec_for_task, evaluate, torch_policy

STAGES = ("behavior", "critic", "policy")
FINAL_SEED, CURVE_OFFSET = 100_000, 1_000_000


def paired_effect(base: np.ndarray, other: np.ndarray, confidence: float) -> dict:
    """Mean of the per-seed differences ``other - base`` with task_estimate's interval."""
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.shape != other.shape or base.ndim != 1:
        raise ValueError(f"need one score per seed for both precisions, got {base.shape} and {other.shape}")
    est, std = stats.task_estimate(other - base, confidence)
    return {**est.to_dict(), "std": std}


def _evaluate(policy_file: Path, spec, episodes: int, seed: int, reference) -> dict:
    pi, _ = load_policy(policy_file)
    res = evaluate(torch_policy(pi), spec, episodes, seed, min(episodes, 10), reference)
    return res.to_dict()


def run_precision(args, precision: str, data, spec, reference) -> dict:
    """Train every stage of every seed at ``precision``, then evaluate its final policies and snapshots."""
    torch.set_num_threads(args.threads)
    sets = dict(s.split("=", 1) for s in args.set)
    sets.update({f"{st}.precision": precision for st in STAGES})
    sets["policy.snapshot_every"] = str(args.every)
    cfgs = [make_config(args.task, args.profile, s, sets) for s in args.seeds]
    outs = [args.work / precision / f"seed{s}" for s in args.seeds]
    t0 = time.perf_counter()
    seed_batch.train(cfgs, data, outs, device=args.device, progress=not args.no_progress)
    train_s = time.perf_counter() - t0
    finals, curves = [], []
    for seed, out in zip(args.seeds, outs):
        final = _evaluate(out / "policy.pt", spec, args.episodes, FINAL_SEED + 1000 * seed, reference)
        curve = [
            {
                "step": step,
                **_evaluate(
                    path, spec, args.curve_episodes, CURVE_OFFSET + FINAL_SEED + 1000 * seed, reference
                ),
            }
            for step, path in list_snapshots(out)
        ]
        finals.append(final["mean_normalized"])
        curves.append(curve)
    steps = [c["step"] for c in curves[0]]
    flat = stats.curve_flattened(
        steps, [[c["mean_normalized"] for c in cv] for cv in curves], cfgs[0].policy.steps
    )
    return {
        "precision": precision,
        "config": cfgs[0].to_dict(),
        "final_normalized": finals,
        "curve_steps": steps,
        "curves": [[c["mean_normalized"] for c in cv] for cv in curves],
        "flattened": asdict(flat),
        "train_wall_s": train_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hopper-medium-replay")
    ap.add_argument(
        "--dataset", default=None, help="Minari id or D4RL hdf5 path (default: our generated one)"
    )
    ap.add_argument("--data-dir", default="data/default", help="where the pipeline generated the datasets")
    ap.add_argument("--profile", default="default", help="training profile of srpo/config.py")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="the first is the baseline")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--every", type=int, default=1000, help="policy steps between snapshots")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--curve-episodes", type=int, default=5)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--work", type=Path, default=None, help="checkpoints (default runs/precision/<task>)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench/precision_effect.json"))
    ap.add_argument(
        "--jobs", type=int, default=1, help="precisions trained at once, one process each (2 on 2 cores)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per precision")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if len(args.precisions) < 2 or args.precisions[0] != "fp32":
        ap.error("--precisions must start with fp32 (the baseline) and name at least one other")
    args.work = args.work or Path("runs/precision") / args.task
    os.environ["MINARI_DATASETS_PATH"] = str((Path(args.data_dir) / "minari").resolve())
    offline = load_dataset(args.task, args.dataset or "generated", args.seeds[0])
    version, why = resolve_env_version("auto", offline.transitions.info.get("source"))
    spec = env_spec_for_task(args.task, version)
    n = len(args.precisions)
    inputs = ([args] * n, args.precisions, [offline.transitions] * n, [spec] * n, [offline.reference] * n)
    if args.jobs > 1:
        # spawn: a forked torch process can deadlock in its thread pool
        with ProcessPoolExecutor(min(args.jobs, n), mp.get_context("spawn")) as ex:
            runs = list(ex.map(run_precision, *inputs))
    else:
        runs = list(map(run_precision, *inputs))
    base = np.array(runs[0]["final_normalized"])
    effects = {
        r["precision"]: paired_effect(base, np.array(r["final_normalized"]), args.confidence)
        for r in runs[1:]
    }
    artifacts.write_json(
        args.out,
        {
            "benchmark": "precision_effect",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "code_version": code_version(),
            "task": args.task,
            "env": spec.env_id,
            "env_version_reason": why,
            "seeds": args.seeds,
            "episodes": args.episodes,
            "runs": runs,
            "effect_vs_fp32": effects,
            "note": "effect = mean over seeds of (other - fp32) final normalized score; interval: "
            + stats.task_interval_rule(args.confidence),
        },
    )
    for p, e in effects.items():
        print(
            f"{p} - fp32: {stats.format_sig(e)} normalized points over {len(args.seeds)} seeds -> {args.out}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
