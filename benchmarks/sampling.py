"""Action-selection speed: SRPO's deterministic policy against diffusion sampling (SRPO §1, Fig. 1).

SRPO's claim is that its policy keeps diffusion-level scores while choosing actions
more than 25x faster than methods that sample from a diffusion model at decision time.
This times, in one process and on one device:

- ``srpo``: the deterministic policy (MLP 256-256, tanh), one forward pass. BC and
  IQL-AWR use the very same network, so their latency is SRPO's and is not timed apart;
- ``diffusion-nN-kK``: N candidates from the behavior diffusion model (method §5 network)
  with a K-step DPM-Solver-1, the best by Q (the twin-Q critic): eval/baselines.py;

at batch 1 (one environment) and batch 256 (vectorized evaluation): median and
interquartile range over repeated timed calls after warm-up, and the wall time of one
full HalfCheetah-v5 evaluation episode (1000 steps, batch 1). The ratio diffusion / SRPO
latency is computed from medians measured in this same run.

Latency does not depend on the weights, so the networks are freshly initialized at the
sizes a trained run uses (``--run DIR`` times a trained run's checkpoints instead).

    python benchmarks/sampling.py --out reports/bench/sampling.json [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from srpo import artifacts
from srpo.behavior import NoisePredictor
from srpo.critic import Critic
from srpo.policy import DeterministicPolicy
from srpo_bench.eval.baselines import DiffusionSelectionPolicy
from srpo_bench.eval.checkpoints import load_behavior, load_critic, load_policy
from srpo_bench.eval.latency import TimedPolicy, time_calls
from srpo_bench.eval.provenance import code_version, machine_info
from srpo_bench.eval.rollout import evaluate, torch_policy

STATE_DIM, ACTION_DIM = 17, 6  # HalfCheetah
SETTINGS = ((32, 5), (32, 15))  # (N candidates, K solver steps): the settings
TARGET_RATIO = 25.0  # SRPO §1: "more than 25x faster"


def build(run: Path | None, device: torch.device, seed: int):
    """The policy, behavior model and critic: a trained run's, or fresh ones of the same sizes."""
    if run is not None:
        pi, _ = load_policy(run / "srpo", device)
        return pi, load_behavior(run / "behavior.pt", device), load_critic(run / "critic.pt", device)
    torch.manual_seed(seed)
    pi = DeterministicPolicy(STATE_DIM, ACTION_DIM).to(device).eval()
    model = (
        NoisePredictor(STATE_DIM, ACTION_DIM, generator=torch.Generator().manual_seed(seed)).to(device).eval()
    )
    critic = Critic(STATE_DIM, ACTION_DIM).to(device).eval()
    return pi, model, critic


def episode_seconds(policy: torch.nn.Module, device: torch.device, seed: int) -> dict:
    """Wall time of one full HalfCheetah-v5 episode (1000 steps, one environment), and its policy share."""

    timed = TimedPolicy(torch_policy(policy))
    t0 = time.perf_counter()
    result = evaluate(timed, "HalfCheetah-v5", episodes=1, seed=seed, num_envs=1)
    wall = time.perf_counter() - t0
    return {
        "episode_s": wall,
        "steps": int(result.lengths[0]),
        "policy_s": float(sum(timed.seconds)),
        "policy_call": timed.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench/sampling.json"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--run", type=Path, default=None, help="a trained run directory (behavior.pt, critic.pt, srpo/)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument(
        "--repeats", type=int, default=200, help="timed calls per measurement (fewer past --max-s)"
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--max-s", type=float, default=20.0, help="stop a measurement after this many seconds"
    )
    parser.add_argument("--no-episode", action="store_true", help="skip the full-episode timings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    pi, model, critic = build(args.run, device, args.seed)
    methods = {"srpo": pi}
    for n, k in SETTINGS:
        gen = torch.Generator(device=device).manual_seed(args.seed)
        methods[f"diffusion-n{n}-k{k}"] = DiffusionSelectionPolicy(model, critic, n, k, gen)

    latency: dict[str, dict] = {}
    jobs = [(m, b) for b in args.batches for m in methods]
    for name, batch in tqdm(jobs, desc="latency"):
        state = torch.randn(
            batch, STATE_DIM, device=device, generator=torch.Generator(device=device).manual_seed(1)
        )
        with torch.no_grad():
            latency.setdefault(name, {})[str(batch)] = time_calls(
                lambda: methods[name](state), args.repeats, args.warmup, sync, args.max_s
            )
    ratios = {
        name: {b: latency[name][b]["median_ms"] / latency["srpo"][b]["median_ms"] for b in latency[name]}
        for name in methods
        if name != "srpo"
    }
    episodes = {}
    if not args.no_episode:
        for name in tqdm(list(methods), desc="episodes"):
            episodes[name] = episode_seconds(methods[name], device, args.seed)
    result = {
        "benchmark": "action-selection latency, SRPO policy vs diffusion sampling + Q selection",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": machine_info(),
        "device": str(device),
        "networks": "trained run " + str(args.run)
        if args.run
        else "fresh networks of the trained sizes "
        f"(state {STATE_DIM}, action {ACTION_DIM}; policy 256-256, NoisePredictor 256 x 3 blocks, twin Q "
        "256-256)",
        "settings": [{"n_candidates": n, "solver_steps": k} for n, k in SETTINGS],
        "latency_ms": latency,
        "ratio_to_srpo": ratios,
        "target_ratio": TARGET_RATIO,
        "meets_target": {name: {b: r >= TARGET_RATIO for b, r in rs.items()} for name, rs in ratios.items()},
        "episode": episodes,
        "note": "BC and IQL-AWR use SRPO's policy network, so their latency equals srpo's.",
    }
    artifacts.write_json(args.out, result)
    for name, rs in ratios.items():
        print(f"{name}: " + ", ".join(f"batch {b}: {r:.0f}x srpo" for b, r in rs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
