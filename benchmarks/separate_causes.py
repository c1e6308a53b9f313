"""Why did SRPO on hopper-medium-replay score lower at 10x the default budget? (issue 25)

Separates the four candidate causes with swaps of one part at a time, all on one generated
dataset and seed, every policy scored by rollouts and by the diagnostics of
validation/diagnose.py (held-out critic accuracy; policy support and E6 terms):

- **critic** (unconverged or over-estimating): the held-out critic's bias and rank correlation
  at checks over the long budget; SRPO extracted at the long budget with the short critic
  (``B_long + C_short``) and with a long critic of expectile 0.5 (no IQL optimism,
  ``C_long_tau0.5``). If the score recovers with either, the long critic is the cause.
  IQL-AWR on the short and long critics: if it degrades too, the critic is the cause
  whatever extracts from it.
- **behavior model**: SRPO at the long budget with the short behavior model (``B_short + C_long``).
- **mean-seeking surrogate on multi-modal data**: the long run with t fixed at 0.05 (a nearly
  unsmoothed, mode-seeking KL) and with w = 1; the diagnostics' denoising-error ratio and the
  distance to the nearest data action tell whether pi(s) sits between the data's modes.
- **a bug**: the same long budgets on the exact-score bandits (validation/bandit_suite.py's
  ``exact`` extraction must land on the exact surrogate's optimum at any budget), and the long
  policy's snapshots/diagnostics against the short one's.

    python benchmarks/separate_causes.py --task hopper-medium-replay --seed 0 --scale 10 \\
        --data-dir data/default --out reports/bench/separate_causes_hmr_seed0.json

Cost on 2 CPU cores (issue 25's 10x run took 884 s for one behavior, critic and policy): about
1 h per seed at --scale 10 (two behavior models, three critics plus the held-out one, six SRPO
and two IQL-AWR policies of 20k steps, 10 episodes each, the bandit check); about 8 min at
--scale 1. A check of the machinery in a minute: --scale 0.2 --short-scale 0.1 --episodes 1.
Stages are checkpointed under --work, so a killed run resumes. On two cores, ``--part policies``
(the behavior models, the critics and the seven SRPO policies) and ``--part rest`` (IQL-AWR on
the short and long critics, the held-out critics, the bandit check) run at once, each writing its
own --out; start the rest once the policies part has trained C_short and C_long (it loads them
from --work; alone, it trains them itself). ``--swaps`` splits the policies part further.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from srpo import artifacts
from srpo.config import make_config
from srpo.train import train_behavior, train_critic, train_policy
from srpo_bench.eval import baselines
from srpo_bench.eval.datasets import GENERATED, load_dataset
from srpo_bench.eval.rollout import env_spec_for_task, evaluate, torch_policy
from srpo_bench.validation import bandit_suite, diagnose
from srpo_bench.validation.score_accuracy import episode_ids

# The previous default profile's budget (issue 25's short run); the study (params.yaml) runs longer.
DEFAULT = {"behavior.steps": 1500, "critic.steps": 4000, "policy.steps": 2000}


def budget(scale: float) -> dict[str, str]:
    return {k: str(int(v * scale)) for k, v in DEFAULT.items()} | {"checkpoint_every": "1000"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hopper-medium-replay")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=10.0, help="the long budget, x the default profile's")
    ap.add_argument(
        "--short-scale",
        type=float,
        default=1.0,
        help="the short budget, x the default profile's (1: issue 25's)",
    )
    ap.add_argument("--data-dir", default="data/default", help="where the pipeline generated the datasets")
    ap.add_argument("--work", type=Path, default=Path("runs/separate_causes"))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--part",
        choices=["all", "policies", "rest"],
        default="all",
        help="all; or one of two halves that can run in parallel (policies: the SRPO swaps; rest: "
        "IQL-AWR, held-out critics, bandit check), each into its own --out",
    )
    ap.add_argument(
        "--swaps",
        type=int,
        nargs="+",
        default=None,
        help="the policies part's SRPO swaps to run (default: all): 0 short, 1 long, 2 long with C_short, "
        "3 long with B_short, 4 long with the expectile-0.5 critic, 5 long with t fixed at 0.05, 6 long "
        "with w = 1; disjoint sets run in parallel processes, each into its own --out",
    )
    a = ap.parse_args()
    os.environ["MINARI_DATASETS_PATH"] = str((Path(a.data_dir) / "minari").resolve())
    dev = torch.device("cpu")
    data = (ds := load_dataset(a.task, GENERATED)).transitions
    work = a.work / a.task / f"seed{a.seed}"
    short, long = (make_config(a.task, "default", a.seed, budget(s)) for s in (a.short_scale, a.scale))
    long_tau = dataclasses.replace(long, critic=dataclasses.replace(long.critic, expectile=0.5))
    t0 = time.perf_counter()
    spec = env_spec_for_task(a.task)
    result: dict = {
        "task": a.task,
        "seed": a.seed,
        "scale": a.scale,
        "short_scale": a.short_scale,
        "part": a.part,
        "policies": {},
    }
    if a.part != "rest":
        run_policies(a, data, ds, work, short, long, long_tau, spec, result, dev)
    if a.part != "policies":
        run_rest(a, data, ds, work, short, long, long_tau, spec, result, dev)
    result["wall_s"] = time.perf_counter() - t0
    artifacts.write_json(a.out, result)
    for name, r in result["policies"].items():
        print(f"{name}: {r['score']:.1f}")


def _score(a, pi, spec, ds) -> float:
    return evaluate(torch_policy(pi), spec, a.episodes, 100_000 + 1000 * a.seed, 5, ds.reference).to_dict()[
        "mean_normalized"
    ]


def run_policies(a, data, ds, work, short, long, long_tau, spec, result, dev) -> None:
    """The behavior models, the critics and the SRPO policies of every swap, scored and diagnosed."""
    behaviors = {
        "B_short": train_behavior(short, data, work / "B_short", dev, progress=False)[0],
        "B_long": train_behavior(long, data, work / "B_long", dev, progress=False)[0],
    }
    critics = {
        name: train_critic(cfg, data, work / name, dev, progress=False)[0]
        for name, cfg in (("C_short", short), ("C_long", long), ("C_long_tau0.5", long_tau))
    }

    def diagnostics(pi, b, c, cfg) -> dict:
        d = data.to_tensors(dev, torch.float32)
        rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(a.seed))[:2048]
        episodes = torch.as_tensor(episode_ids(data))
        return diagnose.diagnose_policy(
            pi, b, c.target_q_mean, d["obs"][rows], d["act"][rows], d["obs"], d["act"], cfg.policy,
            a.seed, groups=(episodes[rows], episodes),
        )  # fmt: skip

    srpo_runs = {
        "short: B_short + C_short": (short, "B_short", "C_short"),
        "long: B_long + C_long": (long, "B_long", "C_long"),
        "long: B_long + C_short": (long, "B_long", "C_short"),
        "long: B_short + C_long": (long, "B_short", "C_long"),
        "long: B_long + C_long_tau0.5": (long, "B_long", "C_long_tau0.5"),
        "long, t fixed 0.05": (
            dataclasses.replace(long, policy=dataclasses.replace(long.policy, t_fixed=0.05)),
            "B_long",
            "C_long",
        ),
        "long, w = 1": (
            dataclasses.replace(long, policy=dataclasses.replace(long.policy, weighting="one")),
            "B_long",
            "C_long",
        ),
    }
    for i, (name, (cfg, b, c)) in enumerate(srpo_runs.items()):
        if a.swaps is not None and i not in a.swaps:
            continue
        pi, _ = train_policy(cfg, data, behaviors[b], critics[c], work / f"pi{i}", dev, progress=False)
        result["policies"][name] = {
            "score": _score(a, pi, spec, ds),
            "diagnostics": diagnostics(pi, behaviors[b], critics[c], cfg),
        }
        artifacts.write_json(a.out, result)


def run_rest(a, data, ds, work, short, long, long_tau, spec, result, dev) -> None:
    """IQL-AWR on the short and long critics, the held-out critics' accuracy, the exact-score bandit."""
    for c, cfg in (("C_short", short), ("C_long", long)):
        critic = train_critic(cfg, data, work / c, dev, progress=False)[0]
        pi, _ = baselines.train_regression_policy(
            "iql-awr",
            cfg,
            baselines.BaselineConfig(),
            data,
            critic,
            work / f"awr_{c}",
            dev,
            progress=False,
        )
        result["policies"][f"iql-awr on {c}"] = {"score": _score(a, pi, spec, ds)}
    result["critic_heldout"] = {
        name: diagnose.critic_accuracy(cfg, data, work / f"heldout_{name}", 0.2, 8, 0.05)
        for name, cfg in (("C_long", long), ("C_long_tau0.5", long_tau))
    }
    # A bug in E6 would keep the exact-score extraction off the exact optimum at the long budget too.
    bandit_steps = {f"{s}.steps": str(int(500 * a.scale)) for s in ("behavior", "critic", "policy")}
    result["bandit_exact"] = bandit_suite.run_shape("ring8", "smoke", a.seed, work / "bandit", bandit_steps)


if __name__ == "__main__":
    main()
