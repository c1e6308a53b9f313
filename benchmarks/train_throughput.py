"""Training throughput of each SRPO stage: the eager reference loop against the seed-batched fast path.

For each stage, at the paper's batch sizes and network sizes (method §5) on a
HalfCheetah-shaped dataset, this times

- ``reference``: :mod:`srpo.train`'s plain eager loop, one seed;
- ``fast`` with S seeds (S in --seeds, default 1 5 10): :mod:`srpo.fast.seed_batch`, the S
  seeds stacked and vmapped, fused optimizer, metrics read every ``log_every`` steps,
  and on a GPU each update captured once as a CUDA graph and replayed - what the
  pipeline runs;
- ``fast_bf16`` with S > 1: the fast path with the stage in bf16 mixed precision
  (``<stage>.precision=bf16``, srpo/precision.py: not exact, tested close to fp32);
- ``fast_compiled`` and ``fast_bf16_compiled`` with S in --compiled-seeds (default 10 on a
  CPU): the same two through ``torch.compile`` (the pipeline's ``compile: true``);
- on a GPU also ``fast_eager`` (the fast path without CUDA graphs: what the graphs add) and
  ``fast_tf32`` (graphed, ``<stage>.precision=tf32``: float32 matmuls on TF32 tensor cores);

as the *marginal* rate of the real loops, (N_long - N_short) / (wall_long - wall_short)
after a warm-up run, which cancels model construction, data transfer and the final
checkpoint. The pairs are timed in rounds, every cell once per round, so that a drift of the
machine's speed hits the reference and the fast paths alike; each cell is the median of its
--repeats pairs (their quartiles are kept). The figure of merit is seed-updates/s (S x
updates/s): how fast a multi-seed study advances. ``speedup`` is fast seed-updates/s over the
reference's, both measured in this run.

Two bounds say how far a speed-up can go. The matmul FLOPs of one update (the torch
profiler's counts on the reference loop) and the machine's measured float32 GEMM rate give
each loop's share of peak: a loop already at a fraction f of peak cannot run more than 1/f
times faster without doing less arithmetic (or cheaper arithmetic: bf16, TF32). On a CPU the
profiler also splits an update's time into GEMMs and the rest, for the reference and for the
fast path at the largest S: seed batching does not make a GEMM's arithmetic cheaper, so the
fast path cannot beat the reference's time per update divided by its own GEMM time per seed
(``speedup_bound_at_fast_gemm_time``), even if everything else took no time.

``paper_budget``: minutes of the paper budget (method §5) for 5 seeds of one task, the
stages one after another, per path, and ``mixed``: each stage at the precision that suits it
(behavior bf16; critic and policy TF32 on a GPU, fp32 on a CPU).

    python benchmarks/train_throughput.py --out reports/bench/train_throughput.json

``--profile default --seeds 1 3`` times the batch sizes and seed count that ``make repro`` trains
on a CPU (every stage at batch 256, 3 seeds) instead of the paper's; no paper-budget projection then.

    python benchmarks/train_throughput.py --profile default --seeds 1 3 --compiled-seeds \
        --out reports/bench/train_throughput_default_profile.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from srpo import __version__, artifacts, train as reference
from srpo.behavior import NoisePredictor
from srpo.config import PROFILES, RunConfig, make_config
from srpo.critic import Critic
from srpo.fast import seed_batch
from srpo.fast.cuda_graph import CaptureTurns
from srpo.transitions import Transitions
from srpo_bench.eval.provenance import machine_info

# A locomotion-sized synthetic dataset (HalfCheetah: 17-dim state, 6-dim action).
STATE_DIM, ACTION_DIM, N_TRANSITIONS = 17, 6, 100_000
STAGES = ("behavior", "critic", "policy")
TASK = "halfcheetah-medium"
# Paper protocol of the projection: 5 seeds x 9 locomotion tasks (method §5 budgets).
PROTOCOL_SEEDS, PROTOCOL_TASKS = 5, 9


def synthetic_dataset(seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((N_TRANSITIONS, STATE_DIM)).astype(np.float32)
    return Transitions(
        observations=obs,
        actions=np.tanh(rng.standard_normal((N_TRANSITIONS, ACTION_DIM))).astype(np.float32),
        rewards=rng.standard_normal(N_TRANSITIONS).astype(np.float32),
        next_observations=np.roll(obs, -1, axis=0),
        terminals=np.zeros(N_TRANSITIONS, np.float32),
        timeouts=(np.arange(N_TRANSITIONS) % 1000 == 999).astype(np.float32),
        name="synthetic-halfcheetah-shape",
    )


def _configs(
    stage: str, steps: int, n_seeds: int, precision: str = "fp32", profile: str = "paper"
) -> list[RunConfig]:
    return [
        make_config(
            TASK,
            profile,
            s,
            {
                f"{stage}.steps": str(steps),
                f"{stage}.precision": precision,
                "log_every": "100",
                "checkpoint_every": str(10**9),
            },
        )
        for s in range(n_seeds)
    ]


PATHS = ("reference", "fast", "fast_bf16", "fast_compiled", "fast_bf16_compiled", "fast_eager", "fast_tf32")
# The stage precision (srpo/precision.py) of each path; the reference loop is the paper's fp32.
PRECISION = {"fast_bf16": "bf16", "fast_bf16_compiled": "bf16", "fast_tf32": "tf32"}


def _runner(
    stage: str,
    path: str,
    n_seeds: int,
    data: Transitions,
    device: torch.device,
    precision: str | None = None,
    compile: bool = False,
    profile: str = "paper",
) -> Callable[..., None]:
    """A function that trains ``stage`` for a given number of steps in a fresh directory (``path`` in PATHS).

    ``precision`` defaults to the path's (PRECISION); ``compile`` (default: the path's name ends in
    ``_compiled``) turns on torch.compile in the fast path; ``profile`` (srpo.config.PROFILES) sets
    the batch sizes.
    """
    precision = precision or PRECISION.get(path, "fp32")
    compile = compile or path.endswith("_compiled")
    upstream = (
        [NoisePredictor(STATE_DIM, ACTION_DIM).to(device) for _ in range(n_seeds)],
        [Critic(STATE_DIM, ACTION_DIM).to(device) for _ in range(n_seeds)],
    )

    def run(steps: int, turns: CaptureTurns | None = None) -> None:
        """``turns``: the fast path's turn-taking when run beside another stage (seed_batch.side_by_side)."""
        cfgs = _configs(stage, steps, n_seeds, precision, profile)
        with tempfile.TemporaryDirectory() as tmp:
            outs = [Path(tmp) / f"seed{k}" for k in range(n_seeds)]
            extra = upstream if stage == "policy" else ()
            if path == "reference":
                fn = getattr(reference, f"train_{stage}")
                fn(cfgs[0], data, *(u[0] for u in extra), outs[0], device, progress=False)
            else:
                fn = getattr(seed_batch, f"train_{stage}")
                fn(
                    cfgs,
                    data,
                    *extra,
                    outs,
                    device,
                    progress=False,
                    cuda_graphs=path != "fast_eager",
                    compile=compile,
                    **({"turns": turns} if turns else {}),
                )

    return run


def _timed(run: Callable[[int], None], steps: int) -> float:
    t0 = time.perf_counter()
    run(steps)
    return time.perf_counter() - t0


def _calibrate(run: Callable[[int], None], short: int, target_s: float) -> int:
    """The long run's step count (~``target_s`` longer than the short run), after a warm-up run."""
    _timed(run, short)  # warm-up: allocator, thread pool, first-call dispatch
    # Grow the step count until its time stands out of the setup's noise; setup cancels in the difference.
    n = short
    while (extra := _timed(run, short + n) - _timed(run, short)) < 0.2 * target_s and n < 10**7:
        n *= 4
    return max(4 * short, int(target_s * n / max(extra, 1e-3)))


def _pair_rate(run: Callable[[int], None], short: int, long: int) -> float:
    """Marginal updates/s of one (short, long) pair: setup, transfers and the last checkpoint cancel."""
    return (long - short) / (_timed(run, long) - _timed(run, short))


def _marginal_rate(run: Callable[[int], None], short: int, target_s: float, repeats: int) -> dict:
    """One cell on its own (the probes' way): calibration, then ``repeats`` pairs back to back."""
    long = _calibrate(run, short, target_s)
    return _summary([_pair_rate(run, short, long) for _ in range(repeats)], short, long)


def _summary(rates: list[float], short: int, long: int) -> dict:
    q1, med, q3 = np.percentile(rates, [25, 50, 75])
    return {
        "updates_per_s": float(med),
        "updates_per_s_iqr": [float(q1), float(q3)],
        "repeats": rates,
        "steps_short": short,
        "steps_long": long,
    }


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")


def _gemm_seconds_per_update(run: Callable[[int], None], steps: int) -> float:
    """Seconds of matrix multiplication per update (the CPU profiler's self time of the GEMM ops).

    With the reference's seconds per update this splits an update into GEMMs and the rest;
    seed batching leaves the GEMMs' arithmetic as it is, so a fast path whose GEMMs run no
    faster per seed than the reference's cannot beat reference time / GEMM time.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(steps)
    return gemm_self_seconds(prof.key_averages()) / steps


def gemm_self_seconds(events) -> float:
    """Self CPU seconds of the matrix multiplications among a profiler's ``key_averages()``."""
    return sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6


def _flops_per_update(stage: str, data: Transitions, device: torch.device, profile: str = "paper") -> float:
    """Matmul FLOPs of one reference update, forward and backward (the profiler's FLOP counts)."""
    run = _runner(stage, "reference", 1, data, device, profile=profile)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        run(2)
    return sum(e.flops for e in prof.key_averages() if e.flops) / 2


def _gemm_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return reps * 2 * n**3 / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="reports/bench/train_throughput.json", help="JSON output path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--profile",
        default="paper",
        choices=list(PROFILES),
        help="srpo.config profile whose batch sizes are timed (default: paper; `default` at "
        "--seeds 3 is what `make repro` trains on a CPU); the paper-budget projection needs paper",
    )
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 10], help="S values of the fast path")
    parser.add_argument(
        "--compiled-seeds",
        type=int,
        nargs="*",
        default=None,
        help="S values of the compiled paths (fp32 and bf16; default: 10 on a CPU, none on a GPU, "
        "where benchmarks/compile_probe.py measures compilation in fewer cold compiles)",
    )
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="length of each timed long run (default: 6)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed (short, long) pairs per cell; the median is reported (default: 3)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(s < 1 for s in args.seeds + (args.compiled_seeds or [])):
        parser.error("--seeds and --compiled-seeds must be positive")
    device = torch.device(args.device)
    data = synthetic_dataset()
    paper = make_config(TASK, "paper")
    timed = make_config(TASK, args.profile)
    project = args.profile == "paper"  # the paper-budget projections need the paper's batch sizes
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    gemm_before = _gemm_gflops(device)
    # Short runs: enough steps that the difference to the long run is not noise; on a GPU also enough
    # that both runs capture their CUDA graph (after the warm-up updates), so that capture cancels.
    short = {"behavior": 2, "critic": 20, "policy": 10}
    results = {}
    # Most wanted first (the calibration order); each timed round rewrites the .partial file, so that a run
    # cut short by a time limit keeps the rounds it finished.
    cells = [("fast", s) for s in args.seeds] + [("fast_bf16", s) for s in args.seeds if s > 1]
    compiled = (
        args.compiled_seeds if args.compiled_seeds is not None else [10] if device.type == "cpu" else []
    )
    cells += [(path, s) for s in compiled for path in ("fast_compiled", "fast_bf16_compiled")]
    if compiled:
        torch._dynamo.config.recompile_limit = (
            10_000  # every run builds new modules: recompile, never fall back
        )
    if device.type == "cuda":
        cells += [("fast_eager", PROTOCOL_SEEDS), ("fast_tf32", PROTOCOL_SEEDS)]
    cells.sort(key=lambda c: (c[1] != PROTOCOL_SEEDS, c[1] == 1))
    jobs = [(stage, "reference", 1) for stage in args.stages] + [
        (st, pa, s) for pa, s in cells for st in args.stages
    ]
    rates: dict[tuple[str, str, int], dict] = {}
    errors: dict[str, str] = {}
    partial = Path(args.out).with_suffix(".partial.json")

    def failed(
        job: tuple[str, str, int], e: Exception
    ) -> None:  # one failing cell (a GPU path) must not lose the others
        errors["{}/{}/S={}".format(*job)] = f"{type(e).__name__}: {e}"
        tqdm.write("{} {} S={}: FAILED ".format(*job) + f"{type(e).__name__}: {e}")

    plans: dict[tuple[str, str, int], tuple[Callable[[int], None], int, int]] = {}
    for job in tqdm(jobs, desc="warm-up, calibration", dynamic_ncols=True):
        stage, path, s = job
        n_short = 50 if device.type == "cuda" else max(2, short[stage] // s)
        try:
            run = _runner(stage, path, s, data, device, profile=args.profile)
            plans[job] = (run, n_short, _calibrate(run, n_short, args.seconds))
        except Exception as e:  # noqa: BLE001
            failed(job, e)
    # Rounds: every cell once per round, so that a drift of the machine's speed (a shared host, clocks)
    # shifts the reference and the fast paths alike and the ratios measured in this run stay fair.
    samples: dict[tuple[str, str, int], list[float]] = {job: [] for job in plans}
    for _ in tqdm(range(args.repeats), desc="timed rounds", dynamic_ncols=True):
        for job, (run, n_short, n_long) in list(plans.items()):
            try:
                samples[job].append(_pair_rate(run, n_short, n_long))
            except Exception as e:  # noqa: BLE001
                failed(job, e)
                del plans[job], samples[job]
        rates = {job: _summary(r, plans[job][1], plans[job][2]) for job, r in samples.items()}
        artifacts.write_json(
            partial, {"rates": {f"{st}/{pa}/S={n}": r for (st, pa, n), r in rates.items()}, "errors": errors}
        )
    for (stage, path, s), r in rates.items():
        tqdm.write(f"{stage} {path} S={s}: {s * r['updates_per_s']:.1f} seed-upd/s")
    # Where an update's time goes (CPU only: a CUDA graph replays as one op): the reference's GEMMs, and the
    # fast path's GEMMs per seed at the largest S.
    gemm_s: dict[tuple[str, str, int], float] = {}
    if device.type == "cpu":
        s_max = max(args.seeds)
        for job in tqdm(
            [j for j in plans if j[1] == "reference" or j[1:] == ("fast", s_max)],
            desc="GEMM time",
            dynamic_ncols=True,
        ):
            run, _, n_long = plans[job]
            gemm_s[job] = _gemm_seconds_per_update(run, n_long) / job[2]
    # The machine's speed drifts on a shared host: the best GEMM rate seen, before or after, is the peak.
    gemm_after = _gemm_gflops(device)
    gemm = max(gemm_before, gemm_after)
    for stage in args.stages:
        flops = _flops_per_update(stage, data, device, args.profile)
        ref = rates[stage, "reference", 1]["updates_per_s"]
        paths = {}
        for path in PATHS[1:]:
            cells = {}
            for s in sorted({s for (_, _, s) in rates}):
                if (stage, path, s) not in rates:
                    continue
                r = rates[stage, path, s]
                seed_rate = s * r["updates_per_s"]
                cells[f"S={s}"] = {
                    **r,
                    "seeds": s,
                    "seed_updates_per_s": seed_rate,
                    "speedup": seed_rate / ref,
                    "gemm_share_of_peak": flops * seed_rate / 1e9 / gemm,
                }
                if (stage, path, s) in gemm_s:
                    cells[f"S={s}"] |= {
                        "gemm_seconds_per_seed_update": gemm_s[stage, path, s],
                        "gemm_share_of_time": gemm_s[stage, path, s] * seed_rate,
                    }
            if cells:
                paths[path] = cells
        s_proj = PROTOCOL_SEEDS if PROTOCOL_SEEDS in args.seeds else max(args.seeds)
        steps = getattr(paper, stage).steps
        projections = {
            f"paper_protocol_hours_{path}_S{s_proj}": PROTOCOL_SEEDS
            * PROTOCOL_TASKS
            * steps
            / cells[f"S={s_proj}"]["seed_updates_per_s"]
            / 3600
            for path, cells in paths.items()
            if f"S={s_proj}" in cells and project
        }
        results[stage] = {
            "batch_size": getattr(timed, stage).batch_size,
            "paper_steps": steps,
            "matmul_gflop_per_update": flops / 1e9,
            "reference": {
                **rates[stage, "reference", 1],
                "seed_updates_per_s": ref,
                "gemm_share_of_peak": flops * ref / 1e9 / gemm,
                **(
                    {
                        "gemm_seconds_per_update": gemm_s[stage, "reference", 1],
                        "gemm_share_of_time": gemm_s[stage, "reference", 1] * ref,
                    }
                    if (stage, "reference", 1) in gemm_s
                    else {}
                ),
            },
            **paths,
            # An exact method cannot beat the GEMM peak: the largest possible speed-up of this stage here.
            "speedup_bound_at_gemm_peak": gemm / (flops * ref / 1e9),
            # Nor, with GEMMs as fast per seed as the fast path's at the largest S, the reference's time per
            # update
            # over those GEMMs alone (everything else free).
            **(
                {"speedup_bound_at_fast_gemm_time": 1 / ref / gemm_s[stage, "fast", max(args.seeds)]}
                if (stage, "fast", max(args.seeds)) in gemm_s
                else {}
            ),
            **(
                {"paper_protocol_hours_reference": PROTOCOL_SEEDS * PROTOCOL_TASKS * steps / ref / 3600}
                if project
                else {}
            ),
            **projections,
        }
        for path, cells in paths.items():
            line = ", ".join(
                f"{k} {c['seed_updates_per_s']:.1f} ({c['speedup']:.2f}x)" for k, c in cells.items()
            )
            print(
                f"{stage:9s} batch {results[stage]['batch_size']:5d}: reference {ref:.1f} seed-upd/s "
                f"({results[stage]['reference']['gemm_share_of_peak']:.0%} of GEMM peak); {path} {line}"
            )
        if "speedup_bound_at_fast_gemm_time" in results[stage]:
            print(
                f"{stage:9s} GEMMs are {results[stage]['reference']['gemm_share_of_time']:.0%} of the "
                "reference's "
                f"time; bound with the fast path's GEMMs (S={max(args.seeds)}) and nothing else: "
                f"{results[stage]['speedup_bound_at_fast_gemm_time']:.2f}x"
            )
    # The yardstick: the paper budget of PROTOCOL_SEEDS seeds of one task, the stages one after
    # another.
    one_task = {}
    if set(args.stages) == set(STAGES) and project:
        for key in results["behavior"]:
            if key.startswith("paper_protocol_hours") and all(key in results[st] for st in STAGES):
                hours = sum(results[st][key] for st in STAGES)
                one_task[key.replace("paper_protocol_hours", "minutes_5_seeds_one_task")] = (
                    hours * 60 / PROTOCOL_TASKS
                )
        # Each stage at its best measured precision that suits it (srpo/precision.py): the behavior model's
        # outputs (eps ~ N(0, I)) tolerate bf16; the critic's Q-values (~100) and the policy need float32
        # outputs.
        mixed = {"behavior": "fast_bf16", "critic": "fast_tf32", "policy": "fast_tf32"}
        if device.type != "cuda":
            mixed = {"behavior": "fast_bf16", "critic": "fast", "policy": "fast"}
        keys = {st: f"paper_protocol_hours_{pa}_S{PROTOCOL_SEEDS}" for st, pa in mixed.items()}
        if all(keys[st] in results[st] for st in STAGES):
            minutes = {st: results[st][keys[st]] * 60 / PROTOCOL_TASKS for st in STAGES}
            one_task[f"minutes_5_seeds_one_task_mixed_S{PROTOCOL_SEEDS}"] = sum(minutes.values())
            one_task["mixed_precision_paths"] = mixed
            one_task["mixed_minutes_per_stage"] = minutes
    for key, minutes in one_task.items():
        if not key.startswith("minutes"):
            continue
        print(
            f"paper budget, {PROTOCOL_SEEDS} seeds of one task, stages in sequence ({key}): {minutes:.0f} "
            "min; "
            f"5 seeds x {PROTOCOL_TASKS} tasks: {minutes * PROTOCOL_TASKS / 60:.1f} h"
        )
    artifacts.write_json(
        Path(args.out),
        {
            "benchmark": "train_throughput",
            "description": "seed-updates/s of each SRPO stage at the batch sizes of the "
            f"{args.profile!r} profile "
            "(paper: method §5) and the paper's network sizes: the eager "
            "reference loop (srpo.train, one seed) and the seed-batched fast path (srpo.fast.seed_batch, "
            "S seeds vmapped; on a GPU each update a CUDA graph); fast_bf16: the same in bf16 mixed "
            "precision (srpo/precision.py); GPU only: fast_eager without graphs, fast_tf32 with TF32 "
            "matmuls; marginal rates by differencing two budgets after a warm-up",
            "profile": args.profile,
            "dataset_shape": {"state_dim": STATE_DIM, "action_dim": ACTION_DIM, "transitions": N_TRANSITIONS},
            "device": str(device),
            "gemm_gflops": gemm,
            "gemm_gflops_before_after": [gemm_before, gemm_after],
            "protocol": {
                "seeds": PROTOCOL_SEEDS,
                "tasks": PROTOCOL_TASKS,
                "note": "hours of one process doing the paper budgets (method §5) for the protocol, "
                "per stage",
            },
            "results": results,
            "paper_budget": one_task,
            "errors": errors,
            "machine": machine_info(),
            "srpo_version": __version__,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    partial.unlink(missing_ok=True)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
