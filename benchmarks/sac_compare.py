"""Our SAC (eval/sac.py) against stable-baselines3's, on this CPU, with the same hyperparameters.

Both run Haarnoja et al. 2018b's Table 1 values (eval/sac.py SACConfig) for the same number of
environment steps on one thread, and every ``--eval-every`` steps their deterministic policy
is evaluated by the same function on the same seeds. Reported per implementation: env-steps
per CPU second and per wall second over the whole run (evaluations included, identical for
both), the load average around it, and the return curve, so that speed and learning are
compared at equal steps. The speed ratio is taken on CPU time, which other work sharing the
cores does not change.

    python benchmarks/sac_compare.py --env hopper --steps 60000 --out reports/bench/sac_compare.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srpo import __version__, artifacts
from srpo_bench.eval.data_policies import ENV_IDS
from srpo_bench.eval.provenance import machine_info
from srpo_bench.eval.sac import SACConfig, SACRun, evaluate_actor


def run_ours(env_id: str, cfg: SACConfig, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clock = _Clock()
        run = SACRun(env_id, cfg, seed, Path(tmp))
        run.train(progress=True)
        timing = clock.stop(cfg.env_steps)
        curve = [[s["env_step"], s["eval_return"]] for s in run.record()["snapshots"]]
    return {**timing, "curve": curve}


def run_sb3(env_id: str, cfg: SACConfig, seed: int) -> dict:
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    curve: list[list[float]] = []

    class Evaluate(BaseCallback):
        """The same deterministic evaluation as ours (evaluate_actor's seeds), at the same steps."""

        def _on_step(self) -> bool:
            step = self.num_timesteps
            if step % cfg.snapshot_every == 0 and step >= cfg.start_steps:
                actor = _Sb3Actor(self.model)
                returns = evaluate_actor(
                    actor,
                    env_id,
                    cfg.eval_episodes,
                    seed + 1_000_000 + 1000 * len(curve),
                    cfg.max_episode_steps,
                )
                curve.append([step, float(returns.mean())])
            return True

    env = gym.make(env_id, max_episode_steps=cfg.max_episode_steps)
    clock = _Clock()
    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=cfg.lr,
        buffer_size=cfg.env_steps,
        learning_starts=cfg.start_steps,
        batch_size=cfg.batch_size,
        tau=cfg.tau,
        gamma=cfg.gamma,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto",
        target_entropy="auto",
        policy_kwargs={"net_arch": list(cfg.hidden)},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=cfg.env_steps, callback=Evaluate(), progress_bar=False)
    timing = clock.stop(cfg.env_steps)
    env.close()
    return {**timing, "curve": curve}


class _Clock:
    """Wall time and this process's CPU time over a run, with the load average around it.

    The speed ratio uses CPU time: on a machine where other work shares the cores (the load
    average says how much), wall time measures the sharing, CPU time the implementation.
    """

    def __init__(self) -> None:
        self.load_before = os.getloadavg()[0]
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def stop(self, env_steps: int) -> dict:
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "env_steps_per_s": env_steps / wall,
            "env_steps_per_cpu_s": env_steps / cpu,
            "load_average_1min": [self.load_before, os.getloadavg()[0]],
        }


class _Sb3Actor:
    """evaluate_actor's interface (``deterministic(obs)``) over an sb3 model."""

    def __init__(self, model) -> None:
        self.model = model

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        action, _ = self.model.predict(obs.numpy(), deterministic=True)
        return torch.as_tensor(action)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="hopper", choices=list(ENV_IDS))
    parser.add_argument("--steps", type=int, default=60_000, help="environment steps per implementation")
    parser.add_argument("--start-steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reports/bench/sac_compare.json")
    args = parser.parse_args()
    if args.start_steps % args.eval_every:
        parser.error("--start-steps must be a multiple of --eval-every")
    torch.set_num_threads(1)
    cfg = SACConfig(
        env_steps=args.steps,
        start_steps=args.start_steps,
        snapshot_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        checkpoint_every=10 * args.steps,
    )
    env_id = ENV_IDS[args.env]
    results = {"ours": run_ours(env_id, cfg, args.seed), "stable-baselines3": run_sb3(env_id, cfg, args.seed)}
    import stable_baselines3

    ours, sb3 = results["ours"], results["stable-baselines3"]
    record = {
        "benchmark": "sac_compare",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {
            "srpo-bench": __version__,
            "torch": torch.__version__,
            "stable-baselines3": stable_baselines3.__version__,
        },
        "env_id": env_id,
        "seed": args.seed,
        "threads": 1,
        "sac": {**cfg.__dict__, "hidden": list(cfg.hidden)},
        "results": results,
        "speed_ratio_ours_over_sb3": ours["env_steps_per_cpu_s"] / sb3["env_steps_per_cpu_s"],
        "speed_ratio_basis": (
            "env-steps per CPU second of the process (one thread), robust to other work on the machine"
        ),
        "wall_speed_ratio_ours_over_sb3": ours["env_steps_per_s"] / sb3["env_steps_per_s"],
        "mean_return_over_curve": {k: float(np.mean([r for _, r in v["curve"]])) for k, v in results.items()},
    }
    artifacts.write_json(Path(args.out), record)
    print(
        f"{env_id}, {args.steps} steps: ours {ours['env_steps_per_cpu_s']:.1f} steps/CPU-s, "
        f"sb3 {sb3['env_steps_per_cpu_s']:.1f} steps/CPU-s "
        f"(ratio {record['speed_ratio_ours_over_sb3']:.2f}); "
        f"returns ours {ours['curve']}, sb3 {sb3['curve']} -> {args.out}"
    )


if __name__ == "__main__":
    main()
