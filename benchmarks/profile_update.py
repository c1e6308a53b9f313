"""Where one training update's time goes: the torch profiler's top ops for one stage and path.

The throughput benchmark (benchmarks/train_throughput.py) says how fast a path is; this
says why. It builds the same runner (:func:`train_throughput._runner`: the same stage,
path, seeds, synthetic HalfCheetah-shaped dataset and paper batch size), runs it once
untimed (warm-up and, for a ``*_compiled`` path, the cold compile), then profiles a run
of --steps updates and reports each op's self time per update, its calls per update and
its share of the total. Under ``torch.compile`` on a CPU, inductor's generated C++
kernels are named in the table (``cpp.enable_kernel_profile``), so a slow fused kernel
shows up by name instead of inside one opaque ``CompiledFxGraph`` call.

    python benchmarks/profile_update.py --stage critic --path fast --seeds 10
    python benchmarks/profile_update.py --stage critic --path fast_compiled --seeds 10 \
        --out reports/bench/profile_critic_fast_compiled_s10.json

The profiler's own overhead inflates the many small ops, so shares are a diagnosis, not a
rate: rates come from train_throughput.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402

from srpo import artifacts  # noqa: E402
from srpo_bench.eval.provenance import machine_info  # noqa: E402


def profile(stage: str, path: str, seeds: int, steps: int, device: torch.device, top: int) -> dict:
    """Top ``top`` ops by self time over ``steps`` updates, per update; the warm-up run is not profiled."""
    if path.endswith("_compiled") and device.type == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # generated kernels by name, not one opaque call
    seeds = 1 if path == "reference" else seeds  # the reference loop trains one seed
    run = tt._runner(stage, path, seeds, tt.synthetic_dataset(), device)
    run(max(4, steps // 4))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        run(steps)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    ops = [
        {
            "op": e.key,
            "self_ms_per_update": e.self_cpu_time_total / 1e3 / steps,
            "calls_per_update": e.count / steps,
            "share": e.self_cpu_time_total / 1e6 / total if total else None,
        }
        for e in rows
    ]
    gemm = tt.gemm_self_seconds(events)
    return {
        "stage": stage,
        "path": path,
        "seeds": seeds,
        "steps": steps,
        "wall_s_profiled": wall,
        "self_cpu_s_total": total,
        "gemm_share": gemm / total if total else None,
        "ops": ops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", required=True, choices=list(tt.STAGES))
    parser.add_argument(
        "--path",
        default="fast",
        choices=list(tt.PATHS),
        help="reference (eager, one seed) or a fast path (default: fast)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="S seeds of a fast path (default: 10)")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="profiled updates (default: 200 for critic and policy, 10 for behavior)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top", type=int, default=20, help="ops in the table (default: 20)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    if args.seeds < 1 or args.steps < 0 or args.top < 1:
        parser.error("--seeds and --top must be >= 1, --steps >= 0")
    if args.path.endswith("_compiled"):
        torch._dynamo.config.recompile_limit = 10_000  # the warm-up and the profiled run build new modules
    steps = args.steps or (10 if args.stage == "behavior" else 200)
    result = profile(args.stage, args.path, args.seeds, steps, torch.device(args.device), args.top)
    print(
        f"{args.stage} {args.path} S={result['seeds']}: {steps} updates profiled in "
        f"{result['wall_s_profiled']:.1f} s; "
        f"GEMMs {result['gemm_share']:.0%} of the self time"
    )
    print(f"{'op':60s} {'ms/update':>10s} {'calls/update':>13s} {'share':>7s}")
    for op in result["ops"]:
        print(
            f"{op['op'][:60]:60s} {op['self_ms_per_update']:10.3f} {op['calls_per_update']:13.1f} "
            f"{op['share']:7.1%}"
        )
    if args.out:
        artifacts.write_json(
            args.out,
            {
                "benchmark": "profile_update",
                "description": __doc__.strip().splitlines()[0],
                "device": args.device,
                **result,
                "machine": machine_info(),
                "torch": torch.__version__,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
