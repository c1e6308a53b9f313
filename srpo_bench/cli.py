"""The `srpo` command line: train SRPO, inspect tasks and configs.

srpo train --task bandit-ring8 --profile smoke --seed 0 --out runs/ring8
srpo tasks
srpo config --task hopper-medium --profile paper --set policy.baseline=true
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from srpo import artifacts
from srpo.config import PROFILES, TASKS, make_config
from srpo.fast import seed_batch
from srpo.stage_loop import SNAPSHOT_DIR, STAGES, check_device_available
from srpo.train import train
from srpo_bench.eval.bandit_tasks import get_bandit
from srpo_bench.eval.checkpoints import load_policy, policy_path
from srpo_bench.eval.datasets import (
    ENV_VERSION_CHOICES,
    check_task_dims,
    load_dataset,
    load_minari,
    minari_root,
    resolve_env_version,
)
from srpo_bench.eval.generate import finished_cards, generate_env
from srpo_bench.eval.observations import flatten_observation
from srpo_bench.eval.references import ANTMAZE_REFERENCE, d4rl_reference
from srpo_bench.eval.rollout import EnvSpec, EvaluationUnavailable, env_spec_for_task, evaluate, torch_policy
from srpo_bench.validation import bandits
from srpo_bench.validation.bandit_suite import run_suite

# torch CPU threads when --threads is not given: one, which does not collapse when other processes keep
# the cores busy (torch's default, one per core, was 3-4x slower there; docs/usage.md has the numbers).
DEFAULT_THREADS = 1

_POLICY_OPTIONS_HELP = """\
E6 options (set with --set policy.FIELD=VALUE):
  policy.beta=FLOAT            temperature, > 0 (per-task preset, docs/method.md §6)
  policy.beta_scale=X          beta = the task preset's (or policy.beta) x X: a beta sweep across tasks
  policy.weighting=W           sigma2 (paper + public code) | one | score (alpha/sigma)
  policy.t_range=LO,HI         diffusion times t ~ U(LO, HI); public code 0.02,0.98
  policy.t_fixed=T             single-time ablation, T in (0, 1); none = use t_range
  policy.baseline=BOOL         subtract eps: paper Alg. 1 true, public code false (default)
  policy.normalize_q_grad=BOOL per-sample RMS normalisation of grad_a Q (public code: AntMaze)
"""


def _parse_sets(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task preset name (see `srpo tasks`)")
    p.add_argument(
        "--profile", default="default", choices=list(PROFILES), help="budget profile (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="run seed; fixes data order, noise and init (default: %(default)s)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. policy.beta=0.1 (repeatable)",
    )


def cmd_tasks(args: argparse.Namespace) -> int:
    print(f"{'task':28s} {'beta':>6s} {'reward':>10s} {'expectile':>9s} {'regq':>5s} policy")
    for name, t in TASKS.items():
        print(
            f"{name:28s} {t.beta:6g} {t.reward_mode:>10s} {t.expectile:9g} {str(t.normalize_q_grad):>5s} "
            f"{t.policy_hidden}"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = make_config(args.task, args.profile, args.seed, _parse_sets(args.sets))
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    seeds = args.seeds or [args.seed]
    if (args.compile or args.no_cuda_graphs or args.overlap) and not args.seeds:
        raise ValueError(
            "--compile, --no-cuda-graphs and --overlap choose how the seed-batched fast path runs: add "
            "--seeds (e.g. --seeds 0); without it the plain reference loop trains one seed"
        )
    cfgs = [make_config(args.task, args.profile, s, _parse_sets(args.sets)) for s in seeds]
    if args.seeds:  # one process, seeds as a batch dimension: OUT/seed<S> per seed
        base = Path(args.out or f"runs/{args.task}/{args.profile}")
        outs = [base / f"seed{s}" for s in seeds]
        upstreams = [Path(args.upstream) / f"seed{s}" for s in seeds] if args.upstream else None
    else:
        outs = [Path(args.out or f"runs/{args.task}/{args.profile}/seed{args.seed}")]
        upstreams = [Path(args.upstream)] if args.upstream else None
    check_device_available(_device(args.device))
    for out in outs:
        _check_writable(out, "--out")
    _set_threads(args.threads)
    if args.minari_root:
        _minari_root(args.minari_root)
    stages = tuple(s for s in STAGES if s in (args.stages or STAGES))
    offline = load_dataset(cfgs[0].task, args.dataset, cfgs[0].seed)
    data = offline.transitions
    if not args.allow_dim_mismatch:
        check_task_dims(cfgs[0].task, data)
    t0 = time.perf_counter()
    common = dict(
        device=args.device,
        progress=not args.no_progress,
        stages=stages,
        restart_on_change=args.restart_on_change,
    )
    if args.seeds:
        res = seed_batch.train(
            cfgs,
            data,
            outs,
            upstreams=upstreams,
            cuda_graphs=not args.no_cuda_graphs,
            compile=args.compile,
            overlap=args.overlap,
            **common,
        )
        per_seed = [
            ({st: m[k] for st, m in res.modules.items()}, {st: h[k] for st, h in res.histories.items()})
            for k in range(len(seeds))
        ]
        wall = res.wall_s
    else:
        res1 = train(cfgs[0], data, outs[0], upstream=upstreams[0] if upstreams else None, **common)
        per_seed, wall = [(res1.modules, res1.histories)], res1.wall_s
    for cfg, out, (modules, histories) in zip(cfgs, outs, per_seed):
        _write_train_metrics(
            cfg,
            out,
            stages,
            offline,
            modules,
            histories,
            {**wall, "total": time.perf_counter() - t0, "seeds_in_process": len(seeds)},
        )
    print(f"checkpoints and metrics in {', '.join(map(str, outs))}", file=sys.stderr)
    return 0


def _device(name: str) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a torch device, e.g. cpu or cuda ({exc})") from None


def _check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, an output place that cannot be written (read-only, a file, no rights)."""
    probe = Path(path).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {path}: {probe} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ValueError(
            f"{flag} {path}: cannot create files in {probe} ({exc.strerror or exc}); choose a writable place"
        ) from None


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads or DEFAULT_THREADS)


def _write_train_metrics(
    cfg, out: Path, stages: tuple[str, ...], offline, modules: dict, histories: dict, wall: dict
) -> None:
    data = offline.transitions
    metrics = {
        "task": cfg.task,
        "seed": cfg.seed,
        "profile": cfg.profile,
        "stages": list(stages),
        "dataset": {
            "name": data.name,
            "transitions": len(data),
            "fingerprint": data.fingerprint(),
            **data.info,
            "reference": None if offline.reference is None else vars(offline.reference),
        },
        "wall_s": wall,
        "final": {stage: (hist[-1] if hist else {}) for stage, hist in histories.items()},
        "history": histories,
    }
    if cfg.task.startswith("bandit-") and "policy" in stages:
        bandit = get_bandit(cfg.task)
        metrics["bandit"] = bandits.policy_report(
            bandit, modules["policy"], cfg.policy, bandits.surrogate_optimum(bandit, cfg.policy)
        )
    # A full run writes metrics.json; a single stage writes <stage>_metrics.json (one file per pipeline
    # stage).
    name = "metrics.json" if stages == STAGES else "_".join(stages) + "_metrics.json"
    artifacts.write_json(out / name, metrics)
    print(_summary(metrics, out / name))


def _summary(metrics: dict, path: Path) -> str:
    """A few lines for the terminal: the headline numbers and where the files are (all of it in ``path``)."""
    n = metrics["dataset"]["transitions"]
    lines = [f"{metrics['task']} seed {metrics['seed']} ({metrics['profile']}), {n} transitions"]
    for stage, last in metrics["final"].items():
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")
        lines.append(f"  {stage:8s} step {last.get('step', 0):>7}  {numbers}")
    if "bandit" in metrics:
        b = metrics["bandit"]
        numbers = ", ".join(
            f"{k} {v:.4g}" for k, v in b.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        lines.append(f"  bandit   {numbers}")
    lines.append(f"  metrics: {path}; checkpoints: {path.parent}")
    return "\n".join(lines)


def cmd_bandit_suite(args: argparse.Namespace) -> int:
    _check_writable(Path(args.out).parent, "--out")
    _check_writable(Path(args.work), "--work")
    _set_threads(args.threads)
    report = run_suite(
        args.profile,
        args.seeds,
        Path(args.out),
        Path(args.work),
        args.shapes or None,
        _parse_sets(args.sets),
        progress=not args.no_progress,
    )
    print(
        f"{'shape':10s} {'exact':>8s} {'learned':>8s} {'pipeline':>8s}   (distance to exact-score optimum, "
        f"mean over {len(args.seeds)} seeds)"
    )
    for shape, row in report["summary"].items():
        print(
            f"{shape:10s} "
            + " ".join(f"{row[v]['mean_distance']:8.4f}" for v in ("exact", "learned_score", "pipeline"))
        )
    print(f"written to {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt_path = policy_path(args.checkpoint)
    pi, meta = load_policy(ckpt_path)
    if not meta["done"] and ckpt_path.parent.name != SNAPSHOT_DIR:
        print(f"warning: {ckpt_path} is an unfinished policy (step {meta['step']})", file=sys.stderr)
    task = meta["config"]["task"]
    if task.startswith("bandit-"):
        raise ValueError(
            f"{task} is scored against its exact optimum in the run's metrics.json, not by rollouts"
        )
    out = Path(args.out) if args.out else ckpt_path.parent / "evaluation.json"
    _check_writable(out.parent, "--out")
    version, why = resolve_env_version(args.env_version, _dataset_source(ckpt_path), "--env-version")
    try:
        spec = EnvSpec(args.env) if args.env else env_spec_for_task(task, version)
    except EvaluationUnavailable as exc:
        artifacts.write_json(out, {"checkpoint": str(ckpt_path), "task": task, "skipped": str(exc)})
        print(str(exc), file=sys.stderr)
        return 0
    _check_env(spec, meta)
    if args.env:
        reference = None
    else:
        reference = ANTMAZE_REFERENCE if spec.scoring == "success" else d4rl_reference(task)
    result = evaluate(torch_policy(pi), spec, args.episodes, args.seed, args.num_envs, reference)
    versions = {} if args.env else {"env_version": version, "env_version_reason": why}
    artifacts.write_json(
        out, {"checkpoint": str(ckpt_path), "task": task, "seed": args.seed, **versions, **result.to_dict()}
    )
    norm = result.to_dict()["mean_normalized"]
    print(
        f"{spec.env_id}: mean return {result.returns.mean():.1f} over {args.episodes} episodes"
        + (f", success rate {result.successes.mean():.2f}" if result.successes is not None else "")
        + (f", D4RL-normalized {norm:.1f}" if norm is not None else "")
        + f"; written to {out}"
    )
    return 0


def _dataset_source(ckpt_path: Path) -> str | None:
    """Where the run's dataset came from (d4rl-hdf5, minari), as its metrics file beside the policy says.

    `srpo train` writes metrics.json (every stage) or policy_metrics.json (the policy stage alone)
    in the run directory, above a snapshot's ``snapshots/``; None when neither names a source
    (then ``auto`` evaluates on v5).
    """
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == SNAPSHOT_DIR else ckpt_path.parent
    for name in ("metrics.json", "policy_metrics.json"):
        path = run_dir / name
        if path.exists():
            try:
                source = json.loads(path.read_text()).get("dataset", {}).get("source")
            except (OSError, ValueError):
                continue
            if source is not None:
                return source
    return None


def _check_env(spec: EnvSpec, meta: dict) -> None:
    """Make the environment once: an unknown id, or sizes the policy was not trained for, get one line."""
    import gymnasium as gym

    try:
        env = gym.make(spec.env_id, **spec.kwargs)
    except gym.error.Error as exc:  # NameNotFound and friends: their message carries the suggestion
        raise ValueError(f"--env {spec.env_id}: {exc}") from None
    try:
        obs, _ = env.reset(seed=0)  # the vector the policy sees in evaluate (dict observations flattened)
        env_dims = (flatten_observation(obs).shape[-1], gym.spaces.flatdim(env.action_space))
    finally:
        env.close()
    policy_dims = (meta.get("state_dim"), meta.get("action_dim"))
    if None not in policy_dims and policy_dims != env_dims:
        raise ValueError(
            f"the policy was trained on observations of size {policy_dims[0]} and actions of size "
            f"{policy_dims[1]}, but {spec.env_id} has observations of size {env_dims[0]} and actions of "
            f"size {env_dims[1]}; pass the --env it was trained for"
        )


def _minari_root(arg: str | None) -> Path:
    """Point Minari at --root when given (it reads the variable on every call); return the store."""

    if arg:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(arg).resolve())
    return minari_root()


def cmd_data_make(args: argparse.Namespace) -> int:
    root = _minari_root(args.root)
    _check_writable(root, "--root")
    _set_threads(args.threads)
    for env in args.env:
        if not args.force and finished_cards(env, args.profile, args.seed, root, args.policies):
            print(
                f"{env}: the five datasets of profile {args.profile}, seed {args.seed} are already in "
                f"{root}; "
                "skipping (--force regenerates them)"
            )
            continue
        result = generate_env(env, args.profile, args.seed, root, not args.no_progress, args.policies)
        for card in result["cards"].values():
            print(
                f"{card['dataset_id']:32s} {card['transitions']:8d} transitions, {card['episodes']:5d} "
                "episodes"
            )
        r = next(iter(result["cards"].values()))["policy_returns"]
        print(
            f"{env}: returns random {r['random']}, medium {r['medium']}, expert {r['expert']}; "
            "wall "
            f"{sum(result['timings_s'].values()):.0f} s"
        )
    print(f"Minari store: {root}", file=sys.stderr)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    import minari

    root = _minari_root(args.root)
    local = minari.list_local_datasets()
    if not local:
        print(f"no datasets in {root}; make some with `srpo data make --env hopper`")
    for did in sorted(local):
        meta = local[did]
        print(
            f"{did:36s} {meta.get('total_steps', '?'):>9} steps {meta.get('total_episodes', '?'):>6} episodes"
        )
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    root = _minari_root(args.root)
    ds = load_minari(args.dataset_id)
    t = ds.transitions
    card_path = root / args.dataset_id / "srpo_card.json"
    info = {
        "dataset_id": args.dataset_id,
        "transitions": len(t),
        "state_dim": t.state_dim,
        "action_dim": t.action_dim,
        "terminals": int(t.terminals.sum()),
        "timeouts": int(t.timeouts.sum()),
        "reference": None if ds.reference is None else vars(ds.reference),
        "card": json.loads(card_path.read_text()) if card_path.exists() else None,
    }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srpo",
        description="Score Regularized Policy Optimization (Chen et al., ICLR 2024): "
        "reference implementation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_POLICY_OPTIONS_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train behavior model, IQL critic and SRPO policy (resumes from checkpoints in --out)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_POLICY_OPTIONS_HELP,
    )
    _add_run_args(p)
    p.add_argument(
        "--dataset",
        default=None,
        help="a D4RL .hdf5 file, a Minari id, or 'generated' (our srpo/ENV/KIND-v0 for the task); "
        "bandit tasks generate their own",
    )
    p.add_argument(
        "--minari-root",
        default=None,
        help="Minari store (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)",
    )
    p.add_argument(
        "--allow-dim-mismatch",
        action="store_true",
        help="train on a dataset whose observation or action size differs from the task's environment "
        "(default: refuse)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train these seeds together in one process, seeds as a batch dimension (srpo.fast.seed_batch; "
        "each seed equals its single run up to float rounding); checkpoints in OUT/seedSEED. "
        "All seeds train on one dataset: a bandit task generates it from the first seed",
    )
    p.add_argument(
        "--out",
        default=None,
        help="run directory (default: runs/TASK/PROFILE/seedSEED; with --seeds the parent of the "
        "seed<S> folders)",
    )
    p.add_argument(
        "--stage",
        dest="stages",
        action="append",
        choices=["behavior", "critic", "policy"],
        default=None,
        help="train only this stage (repeatable; default: all three in order)",
    )
    p.add_argument(
        "--upstream",
        default=None,
        help="directory with the finished behavior.pt and critic.pt that the policy stage uses "
        "(default: --out; "
        "with --seeds the parent of their seed<S> folders)",
    )
    p.add_argument(
        "--restart-on-change",
        action="store_true",
        help="start a stage over when its checkpoint was made with another config or dataset "
        "(default: refuse); the pipeline uses this",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="with --seeds on a GPU: run each update eagerly instead of replaying it as a CUDA graph "
        "(slower; for debugging or profiling)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="with --seeds: torch.compile the losses into fused kernels (first step compiles, ~10-30 s "
        "per stage; on an H100 1.2-1.75x faster per update, see reports/bench/compile_probe_cuda*.json)",
    )
    p.add_argument(
        "--overlap",
        action="store_true",
        help="with --seeds: train the behavior model and the critic at the same time, each on its own "
        "CUDA stream (they are independent; same results; on a CPU no faster)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "bandit-suite",
        help="SRPO on every exact-score bandit: distance of exact-score, learned-score and "
        "full-pipeline policies to the true optimum",
    )
    p.add_argument(
        "--profile", default="default", choices=list(PROFILES), help="budget profile (default: %(default)s)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    p.add_argument("--shapes", nargs="*", default=None, help="subset of shapes (default: all)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable)",
    )
    p.add_argument("--out", default="reports/bandit_suite.json", help="JSON report (default: %(default)s)")
    p.add_argument("--work", default="runs/bandit-suite", help="checkpoint directory (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_bandit_suite)

    p = sub.add_parser(
        "evaluate",
        help="roll out a trained policy deterministically; per-episode returns and normalized score",
    )
    p.add_argument("--checkpoint", required=True, help="a run directory or its policy.pt")
    p.add_argument("--episodes", type=int, default=10, help="number of episodes (default: %(default)s)")
    p.add_argument(
        "--seed", type=int, default=0, help="episode i is reset with seed SEED + i (default: %(default)s)"
    )
    p.add_argument("--num-envs", type=int, default=8, help="parallel environments (default: %(default)s)")
    p.add_argument(
        "--env", default=None, help="Gymnasium id (default: from the task and --env-version, e.g. Hopper-v5)"
    )
    p.add_argument(
        "--env-version",
        default="auto",
        choices=ENV_VERSION_CHOICES,
        help="locomotion environment version: auto (default) picks the one closest to where the run's "
        "dataset was collected, v4 for a D4RL hdf5 file, v5 for Minari and generated data",
    )
    p.add_argument("--out", default=None, help="JSON output (default: evaluation.json beside the checkpoint)")
    p.set_defaults(func=cmd_evaluate)

    data = sub.add_parser("data", help="make, list and inspect offline datasets (Minari store)")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "make", help="roll out the five D4RL-style datasets per environment from data-generating policies"
    )
    p.add_argument(
        "--policies",
        type=Path,
        default=None,
        help="directory of data-generating policies, <env>/policies.npz (the committed one: data_policies); "
        "default: train SAC here at the profile's budget",
    )
    p.add_argument(
        "--env",
        nargs="+",
        default=["halfcheetah", "hopper", "walker2d"],
        help="environments (default: all three)",
    )
    p.add_argument(
        "--profile",
        default="default",
        help="generation profile: tiny, smoke, default, paper (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="generation seed (default: %(default)s)")
    p.add_argument(
        "--force", action="store_true", help="regenerate environments whose datasets already exist"
    )
    p.add_argument(
        "--root", default=None, help="Minari store (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_data_make)
    p = dsub.add_parser("list", help="datasets in the local Minari store")
    p.add_argument(
        "--root", default=None, help="Minari store (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)"
    )
    p.set_defaults(func=cmd_data_list)
    p = dsub.add_parser("show", help="one dataset's size, reference returns and card")
    p.add_argument("dataset_id", help="e.g. srpo/hopper/medium-v0")
    p.add_argument(
        "--root", default=None, help="Minari store (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)"
    )
    p.set_defaults(func=cmd_data_show)

    p = sub.add_parser("tasks", help="list task presets (temperature beta, reward preprocessing, ...)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("config", help="print the resolved run config as JSON")
    _add_run_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"srpo: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # training diverged: not the input's form, the run itself
        print(f"srpo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"srpo: {exc or 'interrupted; run the same command again to resume'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
