"""Roll out D4RL-style datasets from the data-generating policies and store them as Minari datasets.

Per environment, the policies of one SAC run (eval/data_policies.py, docs/method.md §8) yield
the five D4RL datasets:

- ``random``: a uniform random policy;
- ``expert``: the expert snapshot, deterministic actions;
- ``medium``: the snapshot at about a third of the expert's return, deterministic actions;
- ``medium-replay``: the SAC run's first transitions up to the medium snapshot, rebuilt by
  rolling out the snapshots that acted during them with SAC's own exploration noise
  (uniform random actions during SAC's warm-up);
- ``medium-expert``: medium and expert concatenated.

The policies come from a committed artifact (``data_policies/<env>/``, trained once by
``pipelines/data_policies``), or, when none is named, from a short SAC run trained here at the
generation profile's budget (tests, and quick checks of the machinery).

Each dataset is written with ``minari.create_dataset_from_buffers`` under the id
``srpo/<env>/<kind>-v0`` with D4RL's reference returns as ``ref_min_score`` /
``ref_max_score`` (so normalized scores are on D4RL's scale), plus a dataset card
(``srpo_card.json`` beside Minari's metadata). Datasets are first written to a private
directory and moved into the store when complete, so a killed run leaves nothing
half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from srpo import artifacts
from srpo_bench.eval import data_policies
from srpo_bench.eval.datasets import KINDS, dataset_id
from srpo_bench.eval.provenance import code_version
from srpo_bench.eval.references import d4rl_reference
from srpo_bench.eval.rollout import GYM_ENV_IDS
from srpo_bench.eval.sac import SACConfig, TanhGaussianActor


@dataclass(frozen=True)
class GenerationProfile:
    """How much data to roll out, and the SAC budget used when no trained policies are named."""

    transitions: int  # per rolled-out dataset (random, medium, expert)
    max_replay: int | None  # cap on medium-replay's transitions (None: the SAC run's whole prefix)
    sac: SACConfig  # only for policies trained here (no committed artifact)
    select_episodes: int


GENERATION_PROFILES: dict[str, GenerationProfile] = {
    # Seconds: for tests. Episodes of policies trained here are cut at 100 steps; 2000 rows are
    # enough for the committed medium hopper (episodes of 300-450 steps) to end some at a terminal,
    # which the locomotion reward scale needs.
    "tiny": GenerationProfile(
        2_000,
        2_000,
        SACConfig(
            env_steps=800,
            start_steps=200,
            batch_size=64,
            hidden=(32, 32),
            snapshot_every=100,
            eval_episodes=1,
            checkpoint_every=400,
            max_episode_steps=100,
        ),
        2,
    ),
    # Minutes: the smoke pipeline.
    "smoke": GenerationProfile(
        5_000,
        20_000,
        SACConfig(
            env_steps=4_000, start_steps=1_000, snapshot_every=500, eval_episodes=2, checkpoint_every=2_000
        ),
        3,
    ),
    "default": GenerationProfile(
        50_000,
        None,
        SACConfig(env_steps=70_000, start_steps=5_000, snapshot_every=5_000, eval_episodes=3),
        10,
    ),
    # D4RL scale: 1M transitions per rolled-out dataset.
    "paper": GenerationProfile(1_000_000, None, SACConfig(), 20),
}


@dataclass
class Episode:
    observations: np.ndarray  # (T + 1, obs_dim)
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)


def collect(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    n_transitions: int,
    seed: int,
    num_envs: int,
    max_episode_steps: int,
) -> list[Episode]:
    """Roll out ``policy`` until ``n_transitions`` steps are recorded; the last episode is cut (truncated)."""
    import gymnasium as gym

    envs = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="sync", max_episode_steps=max_episode_steps
    )
    obs, _ = envs.reset(seed=seed)
    current = [{"obs": [o], "act": [], "rew": [], "term": [], "trunc": []} for o in obs]
    episodes: list[Episode] = []
    recorded = 0
    after_done = np.zeros(num_envs, dtype=bool)
    try:
        while recorded < n_transitions:
            act = np.clip(np.asarray(policy(obs), dtype=np.float32), -1.0, 1.0)
            obs, rew, term, trunc, _ = envs.step(act)
            for i in range(num_envs):
                if after_done[i]:  # this step only reset env i (NEXT_STEP autoreset)
                    current[i] = {"obs": [obs[i]], "act": [], "rew": [], "term": [], "trunc": []}
                    continue
                ep = current[i]
                ep["obs"].append(obs[i]), ep["act"].append(act[i]), ep["rew"].append(rew[i])
                ep["term"].append(term[i]), ep["trunc"].append(trunc[i])
                recorded += 1
                if term[i] or trunc[i]:
                    episodes.append(_episode(ep))
                if recorded >= n_transitions:
                    break
            after_done = term | trunc
    finally:
        envs.close()
    # Episodes still running are cut where collection stopped: marked as truncated.
    for ep in current:
        if ep["act"] and not (ep["term"][-1] or ep["trunc"][-1]):
            ep["trunc"][-1] = True
            episodes.append(_episode(ep))
    return _cut(episodes, n_transitions)


def _episode(ep: dict) -> Episode:
    return Episode(
        np.asarray(ep["obs"], np.float32),
        np.asarray(ep["act"], np.float32),
        np.asarray(ep["rew"], np.float64),
        np.asarray(ep["term"], bool),
        np.asarray(ep["trunc"], bool),
    )


def _cut(episodes: list[Episode], n: int) -> list[Episode]:
    out, total = [], 0
    for ep in episodes:
        if total + len(ep) > n:
            k = n - total
            if k > 0:
                trunc = ep.truncations[:k].copy()
                trunc[-1] = True
                out.append(
                    Episode(
                        ep.observations[: k + 1], ep.actions[:k], ep.rewards[:k], ep.terminations[:k], trunc
                    )
                )
            break
        out.append(ep)
        total += len(ep)
    return out


def rollout_replay(
    artifact: data_policies.PolicyArtifact, env_id: str, n_transitions: int, seed: int, max_episode_steps: int
) -> list[Episode]:
    """Medium-replay rebuilt from the snapshots: SAC's first ``n_transitions`` steps, re-enacted.

    One environment, as in the SAC run: uniform random actions for its ``start_steps``, then
    for each ``snapshot_every`` window the snapshot taken at its start, acting with its own
    exploration noise (a sample of the tanh-Gaussian). Episodes run on across windows; the one
    still running at the end is cut (truncated).
    """
    import gymnasium as gym

    replay = artifact.card["replay"]
    start, every = replay["start_steps"], replay["snapshot_every"]
    actors = {step: artifact.actor(f"replay/{step:08d}") for step in artifact.replay_steps}
    rng = np.random.default_rng(seed)
    noise = torch.Generator().manual_seed(seed)
    env = gym.make(env_id, max_episode_steps=max_episode_steps)
    action_dim = env.action_space.shape[0]
    episodes: list[Episode] = []
    obs, _ = env.reset(seed=seed)
    ep = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
    try:
        for step in range(n_transitions):
            if step < start:
                act = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
            else:
                with torch.no_grad():
                    actor = actors[start + (step - start) // every * every]
                    act = actor.sample(torch.as_tensor(obs, dtype=torch.float32), noise)[0].numpy()
            obs, rew, term, trunc, _ = env.step(act)
            ep["obs"].append(obs), ep["act"].append(act), ep["rew"].append(rew)
            ep["term"].append(term), ep["trunc"].append(trunc)
            if term or trunc:
                episodes.append(_episode(ep))
                obs, _ = env.reset()
                ep = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
    finally:
        env.close()
    if ep["act"]:
        ep["trunc"][-1] = True
        episodes.append(_episode(ep))
    return episodes


def _write_minari(root: Path, did: str, env_id: str, episodes: list[Episode], card: dict) -> None:
    """Write one Minari dataset into a private root, then move it into ``root`` atomically."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    ref = d4rl_reference(card["env"])
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=e.observations,
            actions=e.actions,
            rewards=list(e.rewards),
            terminations=list(e.terminations),
            truncations=list(e.truncations),
        )
        for i, e in enumerate(episodes)
    ]
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(staging)
    try:
        minari.create_dataset_from_buffers(
            did,
            buffers,
            env=env_id,
            eval_env=env_id,
            algorithm_name="SAC (srpo-bench)",
            author="srpo-bench",
            author_email="srpo-bench@users.noreply.invalid",
            description=card["description"],
            code_permalink=card["code_version"],
            ref_min_score=ref.ref_min,
            ref_max_score=ref.ref_max,
        )
        artifacts.write_json(staging / did / "srpo_card.json", card)
        final = root / did
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / did, final)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
        shutil.rmtree(staging, ignore_errors=True)


def finished_cards(
    env: str, profile: str, seed: int, root: Path, policies: Path | None = None
) -> dict[str, dict] | None:
    """The five cards of ``env`` in ``root`` if all exist and were made with this profile, seed, policies."""
    expected = _policies_fingerprint(env, policies)
    cards = {}
    for kind in KINDS:
        path = Path(root) / dataset_id(env, kind) / "srpo_card.json"
        if not path.exists():
            return None
        card = json.loads(path.read_text())
        if (
            card.get("seed") != seed
            or card.get("budget", {}).get("profile") != profile
            or card.get("policies", {}).get("fingerprint") != expected
        ):
            return None
        cards[kind] = card
    return cards


def _policies_fingerprint(env: str, policies: Path | None) -> str | None:
    """The artifact's content hash (None: policies trained here at the profile's budget)."""
    if policies is None:
        return None
    import hashlib

    npz = Path(policies) / env / "policies.npz"
    return hashlib.sha256(npz.read_bytes()).hexdigest()[:16] if npz.exists() else "missing"


def train_here(
    env: str, prof: GenerationProfile, seed: int, workdir: Path, out: Path, progress: bool
) -> Path:
    """Train, select and export data-generating policies at the profile's SAC budget (no artifact named)."""
    params = data_policies.DataPolicyParams(
        seed=seed,
        env_steps={env: prof.sac.env_steps},
        select_episodes=prof.select_episodes,
        expert_candidates=3,
        medium_candidates=4,
        work_dir=str(workdir),
        sac=prof.sac,
    )
    run = data_policies.train(env, params, progress)
    return data_policies.export(env, run, params, data_policies.select(run, params), out)


def generate_env(
    env: str, profile: str, seed: int, root: Path, progress: bool = True, policies: Path | None = None
) -> dict:
    """The five datasets of ``env`` in the Minari store at ``root``.

    ``policies``: a directory holding ``<env>/policies.npz`` and ``<env>/card.json`` (the committed
    artifacts, ``data_policies/``); None trains them here at the profile's SAC budget.
    Returns the five dataset cards and the wall time of each phase.
    """
    if env not in GYM_ENV_IDS:
        raise ValueError(f"unknown environment {env!r}; choose from {', '.join(GYM_ENV_IDS)}")
    if profile not in GENERATION_PROFILES:
        raise ValueError(
            f"unknown generation profile {profile!r}; choose from {', '.join(GENERATION_PROFILES)}"
        )
    prof = GENERATION_PROFILES[profile]
    env_id, max_steps = GYM_ENV_IDS[env], prof.sac.max_episode_steps
    root = Path(root).resolve()  # Minari resolves relative store paths against its own notion of cwd
    root.mkdir(parents=True, exist_ok=True)
    ref = d4rl_reference(env)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if policies is None:
        work = Path(tempfile.mkdtemp(prefix=".policies-", dir=root))
        try:
            artifact = data_policies.PolicyArtifact.load(
                train_here(env, prof, seed, work / "run", work, progress)
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        timings["train_policies"] = time.perf_counter() - t0
    else:
        artifact = data_policies.PolicyArtifact.load(Path(policies) / env)
    max_steps = artifact.card["sac"]["max_episode_steps"]

    def deterministic(actor: TanhGaussianActor) -> Callable[[np.ndarray], np.ndarray]:
        return lambda obs: actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    act_dim = artifact.actor("expert").net[-1].out_features // 2
    rng = np.random.default_rng(seed)
    sources = {
        "random": lambda o: rng.uniform(-1, 1, (len(o), act_dim)),
        "medium": deterministic(artifact.actor("medium")),
        "expert": deterministic(artifact.actor("expert")),
    }
    episodes: dict[str, list[Episode]] = {}
    for i, (kind, pol) in enumerate(sources.items()):
        t1 = time.perf_counter()
        episodes[kind] = collect(pol, env_id, prof.transitions, seed + 1000 * (i + 1), 4, max_steps)
        timings[f"collect_{kind}"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    n_replay = artifact.card["replay"]["env_steps"]
    if prof.max_replay is not None:
        n_replay = min(n_replay, prof.max_replay)
    episodes["medium-replay"] = rollout_replay(artifact, env_id, n_replay, seed + 4000, max_steps)
    timings["collect_medium-replay"] = time.perf_counter() - t1
    episodes["medium-expert"] = episodes["medium"] + episodes["expert"]

    def returns_of(kind: str) -> list[float]:
        return [float(e.rewards.sum()) for e in episodes[kind] if e.terminations[-1] or len(e) == max_steps]

    policy_returns = {
        k: float(np.mean(returns_of(k))) if returns_of(k) else None
        for k in ("random", "medium", "expert", "medium-replay")
    }
    pcard = artifact.card
    replay_acts = np.concatenate([e.actions for e in episodes["medium-replay"]])
    # Same statistics as data_policies' record of the SAC run's real buffer prefix: how close the rebuild is.
    replay_comparison = {
        "rebuilt": {
            "transitions": int(len(replay_acts)),
            "episodes": len(episodes["medium-replay"]),
            "mean_episode_return": float(np.mean([e.rewards.sum() for e in episodes["medium-replay"]])),
            "action_mean_abs": float(np.abs(replay_acts).mean()),
            "action_std": float(replay_acts.std()),
        },
        "original_buffer": pcard["replay"].get("original_buffer"),
    }
    cards = {}
    for kind in KINDS:
        did = dataset_id(env, kind)
        t1 = time.perf_counter()
        card = {
            "dataset_id": did,
            "env": env,
            "env_id": env_id,
            "kind": kind,
            "transitions": int(sum(len(e) for e in episodes[kind])),
            "episodes": len(episodes[kind]),
            "policy_returns": {
                "random": policy_returns["random"],
                "medium": policy_returns["medium"],
                "expert": policy_returns["expert"],
                "medium_replay_episodes": policy_returns["medium-replay"],
                "medium_snapshot_eval": pcard["medium"]["mean"],
                "expert_snapshot_eval": pcard["expert"]["mean"],
            },
            "medium_replay_vs_sac_buffer": replay_comparison,
            "medium_snapshot_env_step": pcard["medium"]["env_step"],
            "expert_snapshot_env_step": pcard["expert"]["env_step"],
            "d4rl_reference": {"random": ref.ref_min, "expert": ref.ref_max},
            "our_expert_d4rl_normalized": float(ref.normalize(pcard["expert"]["mean"])),
            "policies": {
                "source": "trained here" if policies is None else str(Path(policies) / env),
                "fingerprint": _policies_fingerprint(env, policies),
                "card": pcard,
            },
            "budget": {
                "profile": profile,
                "transitions_per_rollout_dataset": prof.transitions,
                "max_replay": prof.max_replay,
                "sac_if_trained_here": asdict(prof.sac),
            },
            "seed": seed,
            "code_version": code_version(),
        }
        card["description"] = (
            f"D4RL-style {kind} dataset for {env_id}, generated by srpo-bench "
            f"(profile {profile}, seed {seed}). 'medium' is a SAC snapshot at "
            f"{pcard['medium_over_expert']:.2f} of our expert's return "
            f"({pcard['medium']['mean']:.0f} vs {pcard['expert']['mean']:.0f} over "
            f"{pcard['expert']['episodes']} episodes); our expert scores "
            f"{card['our_expert_d4rl_normalized']:.1f} on D4RL's normalized scale "
            f"(D4RL expert = 100). Not the D4RL data."
        )
        _write_minari(root, did, env_id, episodes[kind], card)
        timings[f"write_{kind}"] = time.perf_counter() - t1
        cards[kind] = card
    return {"env": env, "cards": cards, "timings_s": timings}
