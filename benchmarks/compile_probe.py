"""How much ``torch.compile`` adds to the GPU fast path: seed-updates/s with and without it.

A short probe for one device call (the full grid of benchmarks/train_throughput.py with
compiled paths would spend most of a lease compiling). Each cell trains S seeds of one
stage at the paper's batch size through :mod:`srpo.seed_batch` (CUDA graphs on), at
the given precision, with ``compile`` off and on, and reports the marginal rate between
a short and a long run after a warm-up run (which pays the cold compile; later runs
recompile from the warm inductor cache, in both the short and the long run).
Cells run in order of importance and stop at --budget-s, writing the JSON after each.

    python benchmarks/compile_probe.py --device cuda --out reports/bench/compile_probe_cuda.json
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

from eval.provenance import machine_info  # noqa: E402
from srpo import artifacts, seed_batch  # noqa: E402
from srpo.behavior import NoisePredictor  # noqa: E402
from srpo.critic import Critic  # noqa: E402

# (stage, precision, seeds, short steps, long steps): long ~ 4 s at the rates measured without compile.
CELLS = [("behavior", "bf16", 5, 100, 1700), ("policy", "tf32", 5, 200, 6000), ("critic", "tf32", 5, 200, 8000),
         ("behavior", "tf32", 5, 100, 1700)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="reports/bench/compile_probe_cuda.json")
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no cell after this many seconds")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (CPU smoke: 0.01)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch._dynamo.config.recompile_limit = 10_000  # every run builds new modules: recompile, never fall back
    data = tt.synthetic_dataset()
    start, results, errors = time.perf_counter(), [], {}
    for stage, precision, s, short, long in CELLS:
        short, long = max(2, int(short * args.scale)), max(4, int(long * args.scale))
        upstream = ([NoisePredictor(tt.STATE_DIM, tt.ACTION_DIM).to(device) for _ in range(s)],
                    [Critic(tt.STATE_DIM, tt.ACTION_DIM).to(device) for _ in range(s)]) if stage == "policy" else ()
        for compile in (False, True):
            if time.perf_counter() - start > args.budget_s:
                errors[f"{stage}/{precision}/compile={compile}"] = "skipped: probe budget spent"
                continue

            def run(steps: int) -> float:
                import tempfile
                cfgs = tt._configs(stage, steps, s, precision)
                with tempfile.TemporaryDirectory() as tmp:
                    outs = [Path(tmp) / f"seed{k}" for k in range(s)]
                    t0 = time.perf_counter()
                    getattr(seed_batch, f"train_{stage}")(cfgs, data, *upstream, outs, device, progress=False,
                                                          compile=compile)
                    return time.perf_counter() - t0

            try:
                cold = run(short)
                t_short, t_long = run(short), run(long)
                rate = s * (long - short) / (t_long - t_short)
                results.append({"stage": stage, "precision": precision, "seeds": s, "compile": compile,
                                "seed_updates_per_s": rate, "first_run_s": cold, "short_run_s": t_short,
                                "long_run_s": t_long, "steps_short": short, "steps_long": long})
                print(f"{stage} {precision} S={s} compile={compile}: {rate:.0f} seed-upd/s "
                      f"(first run {cold:.1f} s, short {t_short:.1f} s, long {t_long:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - report and go on to the next cell
                errors[f"{stage}/{precision}/compile={compile}"] = f"{type(e).__name__}: {e}"[:2000]
                print(f"{stage} {precision} compile={compile}: FAILED {type(e).__name__}: {e}"[:2000], flush=True)
            artifacts.write_json(Path(args.out), {
                "benchmark": "compile_probe", "description": __doc__.strip().splitlines()[0], "device": str(device),
                "results": results, "errors": errors, "machine": machine_info(), "torch": torch.__version__,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
