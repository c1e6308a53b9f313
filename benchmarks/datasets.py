"""Dataset-generation benchmark: online-agent speed and wall time per generated dataset.

Runs ``eval.generate.generate_env`` for each environment with the chosen generation
profile into a temporary Minari store and records, per environment, the SAC
env-steps/s and gradient updates/s, and the wall time of every phase (SAC training,
collection of each rolled-out dataset, writing each Minari dataset). As the
baseline measured in the same run it times bare environment stepping with random
actions in the same vector envs, so the ratio shows what learning costs.

    python benchmarks/datasets.py --profile default --out reports/bench/datasets.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srpo import __version__, artifacts
from srpo_bench.eval.generate import GENERATION_PROFILES, generate_env
from srpo_bench.eval.provenance import machine_info
from srpo_bench.eval.rollout import GYM_ENV_IDS


def bare_env_steps_per_s(env_id: str, num_envs: int, steps: int = 4000) -> float:
    import gymnasium as gym

    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    shape = (num_envs, envs.single_action_space.shape[0])
    t0 = time.perf_counter()
    for _ in range(steps // num_envs):
        envs.step(rng.uniform(-1, 1, shape))
    rate = (steps // num_envs) * num_envs / (time.perf_counter() - t0)
    envs.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=list(GENERATION_PROFILES))
    parser.add_argument("--env", nargs="+", default=list(GYM_ENV_IDS), choices=list(GYM_ENV_IDS))
    parser.add_argument("--out", default="reports/bench/datasets.json")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = GENERATION_PROFILES[args.profile]
    per_env = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for env in args.env:
            t0 = time.perf_counter()
            result = generate_env(env, args.profile, 0, Path(tmp), progress=True)
            wall = time.perf_counter() - t0
            bare = bare_env_steps_per_s(GYM_ENV_IDS[env], prof.sac.num_envs)
            cards = result["cards"]
            per_env[env] = {
                "sac_env_steps_per_s": result["sac_env_steps_per_s"],
                "bare_env_steps_per_s": bare,
                "sac_over_bare": result["sac_env_steps_per_s"] / bare,
                "sac_updates": cards["expert"]["sac_updates"],
                "wall_s_total": wall,
                "wall_s_by_phase": result["timings_s"],
                "policy_returns": cards["expert"]["policy_returns"],
                "our_expert_d4rl_normalized": cards["expert"]["our_expert_d4rl_normalized"],
                "datasets": {k: {"transitions": c["transitions"], "episodes": c["episodes"]} for k, c in cards.items()},
            }
            print(f"{env}: {wall:.0f} s, SAC {result['sac_env_steps_per_s']:.0f} env-steps/s "
                  f"(bare env {bare:.0f}/s), returns {cards['expert']['policy_returns']}")
    total = time.perf_counter() - t_all
    artifacts.write_json(Path(args.out), {
        "benchmark": "datasets",
        "profile": args.profile,
        "budget": {"sac_env_steps": prof.sac.env_steps, "transitions_per_rollout_dataset": prof.transitions},
        "wall_s_all_envs": total,
        "results": per_env,
        "machine": machine_info(),
        "srpo_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"all environments: {total / 60:.1f} min; written to {args.out}")


if __name__ == "__main__":
    main()
