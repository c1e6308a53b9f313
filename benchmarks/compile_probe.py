"""How much ``torch.compile`` adds to the GPU fast path: seed-updates/s with and without it.

A short probe for one device call (the full grid of benchmarks/train_throughput.py with
compiled paths would spend most of a lease compiling). Each cell trains S seeds of one
stage at the paper's batch size through :mod:`srpo.fast.seed_batch` (CUDA graphs on), at
the given precision, with ``compile`` off and on, and reports the marginal rate between
a short and a long run after a warm-up run (which pays the cold compile; later runs
recompile from the warm inductor cache, in both the short and the long run).
Cells run in order of importance and stop at --budget-s, writing the JSON after each.

    python benchmarks/compile_probe.py --device cuda --out reports/bench/compile_probe_cuda.json
    python benchmarks/compile_probe.py --device cpu --repeats 3 --reference-seconds 6 \
        --out reports/bench/compile_probe_cpu.json        # S = 10 on this CPU, ~15 min
    for m in aten one-exp; do python benchmarks/compile_probe.py --device cpu --mish $m --compiled-only \
        --cells 0 1 3 --repeats 3 --reference-seconds 6 --out reports/bench/compile_probe_cpu_mish_$m.json;
        done

``--mish aten`` compiles torch's Mish instead of the training code's one-exponential form
(srpo.networks.Mish): what that choice gains.
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
from srpo.networks import Mish  # noqa: E402
from srpo_bench.eval.provenance import machine_info  # noqa: E402

# (stage, precision, seeds, short steps, long steps): long ~ 4 s at the rates measured without compile.
CELLS = [
    ("behavior", "bf16", 5, 100, 1700),
    ("policy", "tf32", 5, 200, 6000),
    ("critic", "tf32", 5, 200, 8000),
    ("behavior", "tf32", 5, 100, 1700),
    ("behavior", "fp32", 5, 100, 1000),
    ("behavior", "bf16", 10, 100, 1000),
]
# On a CPU (2 cores): the S = 10, long runs ~10 s.
CPU_CELLS = [
    ("behavior", "bf16", 10, 2, 12),
    ("behavior", "fp32", 10, 2, 8),
    ("policy", "bf16", 10, 10, 130),
    ("policy", "fp32", 10, 10, 100),
    ("critic", "fp32", 10, 20, 250),
]


def use_torchs_mish() -> None:
    """Make every Mish of the behavior model call torch's kernel inside ``torch.compile`` too: the training
    code's
    choice before srpo.networks.Mish switched to the one-exponential form there (``--mish aten``)."""

    def forward(self: Mish, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mish(x)

    Mish.forward = forward  # type: ignore[method-assign]


def _cell(
    stage: str,
    precision: str,
    s: int,
    short: int,
    long: int,
    compile: bool,
    data,
    device: torch.device,
    repeats: int,
    reference: float | None,
) -> dict:
    """One cell: a warm-up run (the cold compile), then ``repeats`` (short, long) pairs; the median rate."""
    train = tt._runner(stage, "fast", s, data, device, precision, compile)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        train(steps)
        return time.perf_counter() - t0

    cold = run(short)
    pairs = [(run(short), run(long)) for _ in range(repeats)]
    rates = sorted(s * (long - short) / (tl - ts) for ts, tl in pairs)
    rate = rates[len(rates) // 2]
    speedup = {"speedup_over_reference": rate / reference} if reference else {}
    ratio = f"{rate / reference:.2f}x the reference, " if reference else ""
    print(
        f"{stage} {precision} S={s} compile={compile}: {rate:.1f} seed-upd/s ({ratio}first run {cold:.1f} s, "
        f"short {pairs[0][0]:.1f} s, long {pairs[0][1]:.1f} s)",
        flush=True,
    )
    return {
        "stage": stage,
        "precision": precision,
        "seeds": s,
        "compile": compile,
        "seed_updates_per_s": rate,
        **speedup,
        "repeats": rates,
        "first_run_s": cold,
        "short_run_s": pairs[0][0],
        "long_run_s": pairs[0][1],
        "steps_short": short,
        "steps_long": long,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="reports/bench/compile_probe_cuda.json")
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no cell after this many seconds")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every step count (CPU smoke: 0.01)"
    )
    parser.add_argument("--long-scale", type=float, default=1.0, help="multiply the long runs' step counts")
    parser.add_argument(
        "--repeats", type=int, default=1, help="(short, long) pairs per cell; the median is kept"
    )
    parser.add_argument("--compiled-only", action="store_true", help="skip the cells without compile")
    parser.add_argument("--cells", type=int, nargs="+", help="indices into CELLS (default: all, in order)")
    parser.add_argument(
        "--reference-seconds",
        type=float,
        default=0.0,
        help="also time the eager reference loop of each stage (long runs of this many seconds), "
        "so that the JSON holds speed-ups over it measured in the same run (default: skip)",
    )
    parser.add_argument(
        "--mish",
        choices=["one-exp", "aten"],
        default="one-exp",
        help="Mish inside compiled losses: the training code's one-exponential form "
        "(srpo.networks.mish_one_exp, default) or torch's kernel (aten), one process per choice",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.mish == "aten":
        use_torchs_mish()
    torch._dynamo.config.recompile_limit = 10_000  # every run builds new modules: recompile, never fall back
    data = tt.synthetic_dataset()
    start, results, errors, reference = time.perf_counter(), [], {}, {}
    cells = CELLS if device.type == "cuda" else CPU_CELLS
    bad = [i for i in args.cells or [] if not 0 <= i < len(cells)]
    if bad:
        parser.error(
            f"--cells {bad}: this device has cells 0-{len(cells) - 1} "
            f"({'CELLS' if device.type == 'cuda' else 'CPU_CELLS'} in {Path(__file__).name})"
        )
    cells = [cells[i] for i in (args.cells or range(len(cells)))]
    if args.reference_seconds:
        for stage in dict.fromkeys(c[0] for c in cells):
            short = {"behavior": 2, "critic": 20, "policy": 10}[stage]
            r = tt._marginal_rate(
                tt._runner(stage, "reference", 1, data, device), short, args.reference_seconds, 3
            )
            reference[stage] = r["updates_per_s"]
            print(f"{stage} reference (eager, fp32, one seed): {reference[stage]:.1f} upd/s", flush=True)
    for stage, precision, s, short, long in cells:
        short, long = max(2, int(short * args.scale)), max(4, int(long * args.scale * args.long_scale))
        for compile in (True,) if args.compiled_only else (False, True):
            key = f"{stage}/{precision}/S={s}/compile={compile}"
            if time.perf_counter() - start > args.budget_s:
                errors[key] = "skipped: probe budget spent"
            else:
                try:
                    results.append(
                        _cell(
                            stage,
                            precision,
                            s,
                            short,
                            long,
                            compile,
                            data,
                            device,
                            args.repeats,
                            reference.get(stage),
                        )
                    )
                except Exception as e:  # noqa: BLE001 - report and go on to the next cell
                    errors[key] = f"{type(e).__name__}: {e}"[:2000]
                    print(f"{key}: FAILED {errors[key]}", flush=True)
            artifacts.write_json(
                Path(args.out),
                {
                    "benchmark": "compile_probe",
                    "description": __doc__.strip().splitlines()[0],
                    "device": str(device),
                    "mish": args.mish,
                    "reference_updates_per_s": reference,
                    "results": results,
                    "errors": errors,
                    "machine": machine_info(),
                    "torch": torch.__version__,
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                },
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
