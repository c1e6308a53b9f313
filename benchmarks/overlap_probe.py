"""Behavior model and critic trained at the same time on one GPU: does the overlap pay?

SRPO's first two stages do not depend on each other (Alg. 1: the policy needs both, neither
needs the other). On an H100 the fast path runs the paper budget for 5 seeds of one task in
about 45 + 9 + 7 minutes (behavior bf16, critic and policy TF32, all compiled:
reports/bench/compile_probe_cuda_long.json), each stage's CUDA graph leaving part of the GPU
idle (batch-256 critic updates are small). If the critic's graphs run beside the behavior
model's, most of its 9 minutes disappear. This probe measures it, with the pipeline's own
training functions (:mod:`srpo.fast.seed_batch`), S seeds per stage:

- solo: the behavior stage alone, the critic alone, the policy alone;
- together: behavior and critic side by side (:func:`srpo.fast.seed_batch.side_by_side`, what
  ``srpo train --seeds ... --overlap`` does): two threads, each replaying its graphs on its
  own CUDA stream (on a CPU the two run in turn: a check of the harness only).

The two stages run in the paper's step ratio (2M : 1.5M), so a run together is the paper's
pair of budgets scaled down. Each configuration is timed at two sizes after an untimed
warm-up run (the cold compile; for the threads, their first cuBLAS handles), and the median
difference over --repeats pairs cancels set-up, capture and the final checkpoint (set-up,
compilation and capture of the two threads take turns; the timed replays run side by
side). The JSON is written after each repeat, and a failing threaded run keeps the solo
timings (``errors``).

    python benchmarks/overlap_probe.py --device cuda --out reports/bench/overlap_probe_cuda.json
    python benchmarks/overlap_probe.py --device cpu --scale 0.002 --out /tmp/overlap.json   # harness check
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402

from srpo import artifacts  # noqa: E402
from srpo.config import make_config  # noqa: E402
from srpo.fast import seed_batch  # noqa: E402
from srpo.fast.cuda_graph import CaptureTurns  # noqa: E402
from srpo_bench.eval.provenance import machine_info  # noqa: E402

# Paper steps per stage (method §5), the ratio the two threads run in.
PAPER = make_config(tt.TASK, "paper")
PAPER_STEPS = {stage: getattr(PAPER, stage).steps for stage in tt.STAGES}
# Every run builds new modules and so recompiles the shared vmapped loss: never fall back to eager.
RECOMPILE_LIMIT = 10_000
PAIR = "behavior+critic"


def _together(runs: dict[str, Callable[..., None]], device: torch.device) -> float:
    """Wall seconds of ``runs`` side by side, as ``srpo train --seeds ... --overlap`` runs them."""
    matmul_precision = torch.get_float32_matmul_precision()  # process-wide: a TF32 stage sets it

    def job(run: Callable[..., None], turns: CaptureTurns) -> None:
        # From torch 2.12 dynamo's config is per thread: a new thread would see the default limit,
        # and past it the losses would silently run uncompiled.
        torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
        run(turns=turns)

    t0 = time.perf_counter()
    seed_batch.side_by_side({name: functools.partial(job, run) for name, run in runs.items()}, device)
    wall = time.perf_counter() - t0
    torch.set_float32_matmul_precision(matmul_precision)
    return wall


def _timed(run: Callable[[], None], device: torch.device) -> float:
    t0 = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="reports/bench/overlap_probe_cuda.json")
    parser.add_argument("--seeds", type=int, default=5, help="S seeds per stage (default: the protocol's 5)")
    parser.add_argument(
        "--behavior-steps",
        type=int,
        default=8000,
        help="behavior steps of the long runs (default 8000: ~10 s at the H100's measured rate); "
        "the critic runs 3/4 as many (the paper's 1.5M : 2M), the short runs 1/8",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every step count (CPU check: 0.002)"
    )
    parser.add_argument(
        "--precision",
        nargs=3,
        default=["bf16", "tf32", "tf32"],
        metavar=("BEHAVIOR", "CRITIC", "POLICY"),
        help="stage precisions (default: the paper profile's bf16 tf32 tf32)",
    )
    parser.add_argument("--no-compile", action="store_true", help="without torch.compile (default: compiled)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="(short, long) pairs per configuration; the median difference is kept (default: 2)",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.seeds < 1:
        parser.error("--repeats and --seeds must be >= 1")
    device = torch.device(args.device)
    if device.type == "cpu" and "tf32" in args.precision:
        args.precision = [p if p != "tf32" else "fp32" for p in args.precision]  # TF32 is a CUDA mode
    compile = not args.no_compile
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    data = tt.synthetic_dataset()
    precision = dict(zip(tt.STAGES, args.precision))
    runners = {
        st: tt._runner(st, "fast", args.seeds, data, device, precision[st], compile) for st in tt.STAGES
    }
    long_b = max(8, int(args.behavior_steps * args.scale))
    sizes = {}  # stage -> (short, long), in the paper's ratio
    for st in tt.STAGES:
        long = max(8, round(long_b * PAPER_STEPS[st] / PAPER_STEPS["behavior"]))
        sizes[st] = (max(4, long // 8), long)

    def solo(st: str, which: int) -> Callable[[], None]:
        return functools.partial(runners[st], sizes[st][which])

    def timed(key: str, which: int) -> float:
        if key == PAIR:
            return _together({"behavior": solo("behavior", which), "critic": solo("critic", which)}, device)
        return _timed(solo(key, which), device)

    walls: dict[str, list[list[float]]] = {}  # key -> [short, long] wall seconds per repeat
    errors: dict[str, str] = {}
    result: dict[str, object] = {}

    def write() -> None:
        artifacts.write_json(
            Path(args.out),
            {
                "benchmark": "overlap_probe",
                "description": __doc__.strip().splitlines()[0],
                "device": str(device),
                "seeds": args.seeds,
                "precision": precision,
                "compile": compile,
                "steps_short_long": sizes,
                "wall_s_short_long": walls,
                "result": result,
                "errors": errors,
                "paper_steps": PAPER_STEPS,
                "machine": machine_info(),
                "torch": torch.__version__,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )

    keys = (*tt.STAGES, PAIR)
    for key in keys:  # warm-up, untimed: allocator, cold compile, the threads' first cuBLAS handles
        try:
            timed(key, 0)
        except Exception as e:  # noqa: BLE001 - keep the solo timings if the threaded run fails
            errors[key] = f"{type(e).__name__}: {e}"[:2000]
            print(f"{key}: FAILED {errors[key]}", flush=True)
    for _ in range(args.repeats):
        for key in (k for k in keys if k not in errors):
            walls.setdefault(key, []).append([timed(key, 0), timed(key, 1)])
        print(
            "short / long runs: "
            + ", ".join(f"{k} {v[-1][0]:.2f} / {v[-1][1]:.2f} s" for k, v in walls.items()),
            flush=True,
        )
        write()
    marginal = {k: float(np.median([long - short for short, long in v])) for k, v in walls.items()}
    rate = {
        st: args.seeds * (sizes[st][1] - sizes[st][0]) / marginal[st] for st in tt.STAGES if st in marginal
    }
    # Minutes of the paper budget for S seeds: each solo stage at its rate.
    minutes = {st: args.seeds * PAPER_STEPS[st] / r / 60 for st, r in rate.items()}
    result.update(seed_updates_per_s_solo=rate, paper_minutes_solo=minutes)
    if set(minutes) == set(tt.STAGES) and PAIR in marginal:
        # The pair together at the pace of its scaled-down copy (b_steps behavior steps, 3/4 as many critic
        # steps).
        b_steps = sizes["behavior"][1] - sizes["behavior"][0]
        together = marginal[PAIR] * PAPER_STEPS["behavior"] / b_steps / 60
        sequential = minutes["behavior"] + minutes["critic"]
        result.update(
            paper_minutes_behavior_then_critic=sequential,
            paper_minutes_behavior_with_critic=together,
            overlap_gain=sequential / together,
            paper_minutes_one_task_sequential=sequential + minutes["policy"],
            paper_minutes_one_task_overlapped=together + minutes["policy"],
        )
        print(
            f"behavior then critic {sequential:.1f} min, together {together:.1f} min "
            f"({sequential / together:.2f}x); "
            f"with the policy: {sequential + minutes['policy']:.1f} -> {together + minutes['policy']:.1f} "
            "min "
            f"for {args.seeds} seeds of one task"
        )
    write()
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
