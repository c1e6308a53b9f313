"""Dataset-generation benchmark: the data-generating policies' returns and what each part costs.

Per environment, from the policy artifact (``data_policies/<env>/card.json``, written by
``pipelines/data_policies``): the expert's and the medium policy's returns over their
evaluation episodes (mean, std, episode count, D4RL-normalized), the medium/expert ratio,
and the SAC run's training wall time and pieces. Then it rolls the five datasets out of the
artifact into a temporary Minari store with the chosen generation profile and times each
part (collection of each dataset, writing). If ``reports/bench/sac_compare.json`` exists
(benchmarks/sac_compare.py: our SAC against stable-baselines3's), it is included.

    python benchmarks/datasets.py --policies data_policies --profile default --out reports/bench/datasets.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import torch

from srpo import __version__, artifacts
from srpo_bench.eval.data_policies import ENV_IDS, PolicyArtifact
from srpo_bench.eval.generate import GENERATION_PROFILES, generate_env
from srpo_bench.eval.provenance import machine_info

D4RL_EXPERT_RETURNS = "D4RL's expert reference returns (method §7)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--policies", type=Path, default=Path("data_policies"), help="policy artifacts directory"
    )
    parser.add_argument("--profile", default="default", choices=list(GENERATION_PROFILES))
    parser.add_argument("--env", nargs="+", default=list(ENV_IDS), choices=list(ENV_IDS))
    parser.add_argument("--sac-compare", type=Path, default=Path("reports/bench/sac_compare.json"))
    parser.add_argument("--out", default="reports/bench/datasets.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    missing = [e for e in args.env if not (args.policies / e / "card.json").exists()]
    if missing:
        parser.error(
            f"no policy artifact for {', '.join(missing)} in {args.policies}: run `make data-policies`"
        )
    per_env = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for env in args.env:
            card = PolicyArtifact.load(args.policies / env).card
            t0 = time.perf_counter()
            result = generate_env(env, args.profile, 0, Path(tmp), progress=True, policies=args.policies)
            rollout = time.perf_counter() - t0
            cards = result["cards"]
            per_env[env] = {
                "expert": card["expert"],
                "medium": card["medium"],
                "medium_over_expert": card["medium_over_expert"],
                "d4rl_reference": card["d4rl_reference"],
                "sac_training": {k: card["training"][k] for k in ("env_steps", "wall_s", "pieces")},
                "rollout_wall_s": rollout,
                "rollout_wall_s_by_part": result["timings_s"],
                "medium_replay_vs_sac_buffer": cards["medium-replay"]["medium_replay_vs_sac_buffer"],
                "datasets": {
                    k: {"transitions": c["transitions"], "episodes": c["episodes"]} for k, c in cards.items()
                },
            }
            print(
                f"{env}: expert {card['expert']['mean']:.0f} "
                f"({card['expert']['d4rl_normalized']:.1f} normalized), "
                f"medium/expert {card['medium_over_expert']:.2f}; rollout {rollout:.0f} s"
            )
    record = {
        "benchmark": "datasets",
        "profile": args.profile,
        "policies": str(args.policies),
        "transitions_per_rollout_dataset": GENERATION_PROFILES[args.profile].transitions,
        "rollout_wall_s_all_envs": time.perf_counter() - t_all,
        "results": per_env,
        "reference_returns": D4RL_EXPERT_RETURNS,
        "sac_comparison": json.loads(args.sac_compare.read_text()) if args.sac_compare.exists() else None,
        "machine": machine_info(),
        "srpo_version": __version__,
        "threads": args.threads,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    artifacts.write_json(Path(args.out), record)
    print(
        f"all environments: {record['rollout_wall_s_all_envs'] / 60:.1f} min of rollouts; "
        f"written to {args.out}"
    )


if __name__ == "__main__":
    main()
