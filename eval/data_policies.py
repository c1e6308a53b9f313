"""The policies that generate our D4RL-style datasets: trained once, kept small, rolled out always.

D4RL's recipe (docs/method.md §8): one SAC run per environment trained to expert level; the
"medium" policy is a snapshot at about a third of the expert's return; "medium-replay" is
the replay buffer up to that snapshot. Training takes hours, rolling out takes minutes, so
the two are split:

1. :func:`train` runs (or resumes) the SAC run of one environment in a local work directory
   (checkpoints, replay buffer, one actor snapshot every ``snapshot_every`` steps).
2. :func:`select` chooses the expert and the medium snapshot, each measured over
   ``select_episodes`` evaluation episodes (not the few of the training-time evaluations), and
   measures the chosen two again on fresh seeds for the record.
3. :func:`export` writes the small artifact that git keeps, ``<out>/<env>/``:
   ``policies.npz`` (the expert's and the medium policy's weights in float32, and the float16
   weights of every snapshot that acted before the medium one, which is what rebuilds
   medium-replay) and ``card.json`` (returns, steps, the choice, the cost).

``eval.generate`` rolls the datasets out of that artifact.

    python -m srpo_bench.eval.data_policies --params pipelines/data_policies/params.yaml --env hopper
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from srpo_bench.eval.references import d4rl_reference
from srpo_bench.eval.sac import SACConfig, SACRun, TanhGaussianActor, evaluate_actor

ENV_IDS: dict[str, str] = {  # Gymnasium v5: the version our generated data is collected and evaluated on
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
}
MEDIUM_BAND = (0.30, 0.45)  # medium return / expert return (D4RL: "about one third")


@dataclass(frozen=True)
class DataPolicyParams:
    """What ``pipelines/data_policies/params.yaml`` sets; the SAC values are :class:`SACConfig`'s."""

    seed: int = 0
    env_steps: dict[str, int] = field(
        default_factory=lambda: {"hopper": 500_000, "walker2d": 1_000_000, "halfcheetah": 1_000_000}
    )
    select_episodes: int = 20  # evaluation episodes behind each choice and each reported return
    expert_candidates: int = 5  # best snapshots (by their training-time evaluation) measured again
    medium_candidates: int = 8  # snapshots nearest a third of the expert measured again
    work_dir: str = "~/.cache/srpo-bench/data-policies"  # local disk: checkpoints, replay buffer, snapshots
    out_dir: str = "data_policies"  # the committed artifacts, relative to the repository root
    sac: SACConfig = field(default_factory=SACConfig)

    def __post_init__(self) -> None:
        unknown = set(self.env_steps) - set(ENV_IDS)
        if unknown:
            raise ValueError(
                f"data_policies.env_steps: unknown environment(s) {sorted(unknown)}; "
                f"choose from {', '.join(ENV_IDS)}"
            )
        for name in ("select_episodes", "expert_candidates", "medium_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"data_policies.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, raw: dict, where: str = "") -> DataPolicyParams:
        raw = dict(raw)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"unknown data_policies key(s) {sorted(unknown)}{where}; known: {', '.join(sorted(known))}"
            )
        sac = raw.pop("sac", {}) or {}
        sac_known = {f.name for f in fields(SACConfig)}
        if set(sac) - sac_known:
            raise ValueError(
                f"unknown data_policies.sac key(s) {sorted(set(sac) - sac_known)}{where}; "
                f"known: {', '.join(sorted(sac_known))}"
            )
        if "hidden" in sac:
            sac["hidden"] = tuple(sac["hidden"])
        return cls(**raw, sac=SACConfig(**sac))

    def sac_for(self, env: str) -> SACConfig:
        if env not in self.env_steps:
            raise ValueError(f"no data_policies.env_steps for {env!r}; set one of {', '.join(ENV_IDS)}")
        return SACConfig(
            **{**asdict(self.sac), "hidden": tuple(self.sac.hidden), "env_steps": self.env_steps[env]}
        )

    def work_dir_for(self, env: str) -> Path:
        return Path(os.path.expanduser(self.work_dir)) / f"{env}-seed{self.seed}"


def train(env: str, params: DataPolicyParams, progress: bool = True, log=None) -> SACRun:
    """Train (or resume, or find finished) the SAC run of ``env``; ``log`` gets a line per snapshot."""
    if env not in ENV_IDS:
        raise ValueError(f"unknown environment {env!r}; choose from {', '.join(ENV_IDS)}")
    run = SACRun(ENV_IDS[env], params.sac_for(env), params.seed, params.work_dir_for(env))
    run.train(progress, log)
    return run


def _load_actor(run: SACRun, step: int) -> TanhGaussianActor:
    actor = TanhGaussianActor(run.state_dim, run.action_dim, run.cfg.hidden)
    actor.load_state_dict(torch.load(run.snapshot_path(step), weights_only=True))
    return actor


def _measure(run: SACRun, step: int, episodes: int, seed: int) -> dict:
    returns = evaluate_actor(_load_actor(run, step), run.env_id, episodes, seed, run.cfg.max_episode_steps)
    return {
        "env_step": step,
        "mean": float(returns.mean()),
        "std": float(returns.std(ddof=1)) if episodes > 1 else 0.0,
        "episodes": episodes,
    }


def select(run: SACRun, params: DataPolicyParams) -> dict:
    """Choose expert and medium snapshots by ``select_episodes``-episode evaluations.

    Expert: the best of the ``expert_candidates`` best snapshots by their training-time
    evaluation, measured again on seeds no choice has seen (a maximum over noisy estimates is
    biased up). Medium: the ``medium_candidates`` snapshots taken no later than the expert whose
    training-time return is nearest a third of the expert's are measured; among those inside
    :data:`MEDIUM_BAND`, the one with the smallest spread over episodes comes first (a snapshot
    that runs half its episodes and falls in the others has a medium mean but is not a medium
    policy), and it is kept if a measurement on fresh seeds stays inside the band; otherwise the
    next one is tried. If none holds, the snapshot whose measured return is nearest a third is
    taken and ``medium_in_band`` is false.
    """
    snaps = run.record()["snapshots"]
    if len(snaps) < 2:
        raise RuntimeError(f"{run.workdir}: {len(snaps)} snapshot(s); train longer before selecting")
    n, seed, fresh = params.select_episodes, params.seed + 2_000_000, params.seed + 3_000_000
    ranked = sorted(snaps, key=lambda s: -s["eval_return"])[: params.expert_candidates]
    expert_trials = [_measure(run, s["env_step"], n, seed) for s in ranked]
    best = max(expert_trials, key=lambda m: m["mean"])
    expert = _measure(run, best["env_step"], n, fresh)
    target = expert["mean"] / 3.0
    earlier = [s for s in snaps if s["env_step"] <= expert["env_step"]]
    near = sorted(earlier, key=lambda s: abs(s["eval_return"] - target))[: params.medium_candidates]
    medium_trials = [_measure(run, s["env_step"], n, seed + 1000) for s in near]
    lo, hi = MEDIUM_BAND

    def in_band(m: dict) -> bool:
        return lo * expert["mean"] <= m["mean"] <= hi * expert["mean"]

    confirmations = []
    for k, trial in enumerate(sorted(filter(in_band, medium_trials), key=lambda m: m["std"])):
        confirmations.append(_measure(run, trial["env_step"], n, fresh + 1000 * (k + 1)))
        if in_band(confirmations[-1]):
            medium, in_band_held = confirmations[-1], True
            break
    else:
        nearest = min(medium_trials, key=lambda m: abs(m["mean"] - target))
        medium, in_band_held = (
            _measure(run, nearest["env_step"], n, fresh + 1000 * (len(confirmations) + 1)),
            False,
        )
    return {
        "expert": expert,
        "medium": medium,
        "medium_in_band": in_band_held,
        "expert_trials": expert_trials,
        "medium_trials": medium_trials,
        "medium_confirmations": confirmations,
    }


def _flat(state: dict, dtype: np.dtype, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v.detach().numpy().astype(dtype) for k, v in state.items()}


def export(env: str, run: SACRun, params: DataPolicyParams, choice: dict, out_root: Path) -> Path:
    """Write ``<out_root>/<env>/{policies.npz,card.json}`` atomically; returns the directory."""
    cfg = run.cfg
    medium_step, expert_step = choice["medium"]["env_step"], choice["expert"]["env_step"]
    arrays = {
        **_flat(_load_actor(run, expert_step).state_dict(), np.float32, "expert"),
        **_flat(_load_actor(run, medium_step).state_dict(), np.float32, "medium"),
    }
    # Medium-replay: the SAC run's first medium_step transitions. Steps [0, start_steps) were
    # uniform random; from then on the snapshot taken at the start of each snapshot_every window
    # stands for the actor that acted during that window.
    if cfg.start_steps % cfg.snapshot_every:
        raise ValueError("sac.start_steps must be a multiple of sac.snapshot_every to rebuild medium-replay")
    replay_steps = list(range(cfg.start_steps, medium_step, cfg.snapshot_every))
    for step in replay_steps:
        arrays.update(_flat(_load_actor(run, step).state_dict(), np.float16, f"replay/{step:08d}"))
    ref = d4rl_reference(env)
    record = run.record()
    replay_prefix = _replay_prefix_stats(run, medium_step)

    def summary(m: dict) -> dict:
        return {
            **m,
            "d4rl_normalized": float(ref.normalize(m["mean"])),
            "d4rl_normalized_std": float(100.0 * m["std"] / (ref.ref_max - ref.ref_min)),
        }

    card = {
        "env": env,
        "env_id": run.env_id,
        "seed": params.seed,
        "sac": record["config"],
        "expert": summary(choice["expert"]),
        "medium": summary(choice["medium"]),
        "medium_over_expert": choice["medium"]["mean"] / choice["expert"]["mean"],
        "selection": {
            "episodes": params.select_episodes,
            "expert_trials": choice["expert_trials"],
            "medium_trials": choice["medium_trials"],
            "medium_confirmations": choice["medium_confirmations"],
            "medium_band": list(MEDIUM_BAND),
            "medium_in_band": choice["medium_in_band"],
        },
        "replay": {
            "env_steps": medium_step,
            "start_steps": cfg.start_steps,
            "snapshot_every": cfg.snapshot_every,
            "snapshots": len(replay_steps),
            "original_buffer": replay_prefix,
        },
        "training": {
            "env_steps": record["step"],
            "wall_s": record["train_seconds"],
            "pieces": record["pieces"],
            "snapshots": len(record["snapshots"]),
            "curve": [[s["env_step"], s["eval_return"]] for s in record["snapshots"]],
        },
        "d4rl_reference": {"random": ref.ref_min, "expert": ref.ref_max},
    }
    out = Path(out_root) / env
    tmp = out.with_name(f".{env}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(tmp / "policies.npz", **arrays)
    (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    if out.exists():
        old = out.with_name(f".{env}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, out)
    return out


def _replay_prefix_stats(run: SACRun, steps: int) -> dict | None:
    """Statistics of the real replay buffer's first ``steps`` transitions, to compare the rebuild with."""
    path = run.workdir / "checkpoint" / "buffer.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        if len(data["rew"]) < steps:
            return None
        rew, obs, next_obs = data["rew"][:steps], data["obs"][:steps], data["next_obs"][:steps]
        act = data["act"][:steps]
    # An episode ends where the next row does not start at this row's next state.
    ends = np.flatnonzero(np.any(obs[1:] != next_obs[:-1], axis=1))
    bounds = np.concatenate([[0], ends + 1, [steps]])
    returns = [float(rew[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return {
        "transitions": int(steps),
        "episodes": len(returns),
        "mean_episode_return": float(np.mean(returns)),
        "action_mean_abs": float(np.abs(act).mean()),
        "action_std": float(act.std()),
    }


@dataclass
class PolicyArtifact:
    """What :func:`export` wrote: the card and actors built from the stored weights."""

    card: dict
    weights: dict[str, dict[str, torch.Tensor]]  # "expert", "medium", "replay/<step>" -> state dict (float32)

    @classmethod
    def load(cls, directory: Path) -> PolicyArtifact:
        directory = Path(directory)
        card_path, npz_path = directory / "card.json", directory / "policies.npz"
        for path in (card_path, npz_path):
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} not found: data-generating policies are made by `make data-policies` "
                    f"(pipelines/data_policies) or named in generation.policies"
                )
        weights: dict[str, dict[str, torch.Tensor]] = {}
        try:
            with np.load(npz_path) as data:
                for key in data.files:
                    name, param = key.rsplit("/", 1)
                    weights.setdefault(name, {})[param] = torch.from_numpy(data[key].astype(np.float32))
            card = json.loads(card_path.read_text())
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{directory} is not a readable policy artifact ({err}); re-export it") from err
        return cls(card, weights)

    def actor(self, name: str) -> TanhGaussianActor:
        state = self.weights[name]
        first, last = state["net.0.weight"], state[max(state, key=lambda k: int(k.split(".")[1]))]
        hidden = tuple(int(v.shape[0]) for k, v in state.items() if k.endswith("weight"))[:-1]
        actor = TanhGaussianActor(first.shape[1], last.shape[0] // 2, hidden)
        actor.load_state_dict(state)
        return actor.requires_grad_(False)

    @property
    def replay_steps(self) -> list[int]:
        return sorted(int(k.split("/")[1]) for k in self.weights if k.startswith("replay/"))


def load_params(path: Path) -> DataPolicyParams:
    import yaml

    if not Path(path).exists():
        raise FileNotFoundError(f"params file {path} not found")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if "data_policies" not in raw:
        raise ValueError(f"{path} has no data_policies section")
    return DataPolicyParams.from_dict(raw["data_policies"], f" in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srpo_bench.eval.data_policies",
        description=__doc__.split("\n\n")[0],
        epilog="Killed, the same command resumes from the last checkpoint in the work directory.",
    )
    parser.add_argument("--params", type=Path, default=Path("pipelines/data_policies/params.yaml"))
    parser.add_argument("--env", required=True, choices=list(ENV_IDS))
    parser.add_argument("--train-only", action="store_true", help="train (or resume) without exporting")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: results are reproducible at a fixed count)",
    )
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        tty = sys.stderr.isatty()
        run = train(args.env, params, progress=tty, log=None if tty else lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(
            f"interrupted; the same command resumes from the last checkpoint in "
            f"{params.work_dir_for(args.env)}",
            file=sys.stderr,
        )
        return 130
    record = run.record()
    print(
        f"{args.env}: {record['step']} SAC steps in {record['train_seconds'] / 3600:.2f} h "
        f"({record['pieces']} piece(s)); last evaluation {record['snapshots'][-1]['eval_return']:.0f}"
    )
    if args.train_only:
        return 0
    choice = select(run, params)
    out = export(args.env, run, params, choice, Path(params.out_dir))
    card = json.loads((out / "card.json").read_text())
    print(
        f"{args.env}: expert {card['expert']['mean']:.0f} "
        f"({card['expert']['d4rl_normalized']:.1f} normalized), "
        f"medium {card['medium']['mean']:.0f} ({card['medium_over_expert']:.2f} of expert) -> {out} "
        f"[{time.perf_counter() - t0:.0f} s]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
