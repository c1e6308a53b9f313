"""Generate D4RL-style datasets ourselves (SPEC §8) and store them as real Minari datasets.

Per environment, one SAC run (eval/sac.py) yields the five D4RL datasets:

- ``random``: a uniform random policy;
- ``expert``: the best SAC snapshot;
- ``medium``: the snapshot whose evaluation return is closest to a third of the expert's;
- ``medium-replay``: the replay buffer up to the moment the medium snapshot was taken;
- ``medium-expert``: medium and expert concatenated.

Each is written with ``minari.create_dataset_from_buffers`` under the id
``srpo/<env>/<kind>-v0`` with D4RL's reference returns as ``ref_min_score`` /
``ref_max_score`` (so normalized scores are on D4RL's scale), plus a dataset card
(``srpo_card.json`` beside Minari's metadata) with the policies' returns, the
budget, the seed and the code version. Datasets are first written to a private
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
from srpo_bench.eval.datasets import KINDS, dataset_id
from srpo_bench.eval.provenance import code_version
from srpo_bench.eval.references import d4rl_reference
from srpo_bench.eval.rollout import GYM_ENV_IDS, evaluate
from srpo_bench.eval.sac import ReplayBuffer, SACConfig, TanhGaussianActor, train_sac


@dataclass(frozen=True)
class GenerationProfile:
    """Budgets of one generation run: the SAC run and the size of each rolled-out dataset."""

    sac: SACConfig
    transitions: int  # per rolled-out dataset (random, medium, expert)
    eval_episodes: int


GENERATION_PROFILES: dict[str, GenerationProfile] = {
    # Seconds: for tests. Episodes are cut at 100 steps.
    "tiny": GenerationProfile(SACConfig(env_steps=800, num_envs=2, start_steps=400, snapshot_every=400,
                                        eval_episodes=1, max_episode_steps=100), 600, 1),
    # Minutes: the smoke pipeline.
    "smoke": GenerationProfile(SACConfig(env_steps=4_000, num_envs=4, start_steps=1_000, snapshot_every=1_000,
                                         eval_episodes=2, max_episode_steps=1000), 5_000, 2),
    # Sized so that all 15 datasets of the three environments take under 45 minutes on a 2-core CPU
    # (measured: reports/bench/datasets.json); 70k SAC steps is about 13 minutes per environment.
    "default": GenerationProfile(SACConfig(env_steps=70_000, num_envs=4, start_steps=5_000, snapshot_every=5_000,
                                           eval_episodes=3, max_episode_steps=1000), 50_000, 3),
    # D4RL scale: 1M SAC steps and 1M transitions per dataset.
    "paper": GenerationProfile(SACConfig(env_steps=1_000_000, num_envs=4, start_steps=10_000,
                                         snapshot_every=20_000, eval_episodes=10), 1_000_000, 10),
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


def collect(policy: Callable[[np.ndarray], np.ndarray], env_id: str, n_transitions: int, seed: int,
            num_envs: int, max_episode_steps: int) -> list[Episode]:
    """Roll out ``policy`` until ``n_transitions`` steps are recorded; the last episode is cut (truncated)."""
    import gymnasium as gym

    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", max_episode_steps=max_episode_steps)
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
    return Episode(np.asarray(ep["obs"], np.float32), np.asarray(ep["act"], np.float32),
                   np.asarray(ep["rew"], np.float64), np.asarray(ep["term"], bool), np.asarray(ep["trunc"], bool))


def _cut(episodes: list[Episode], n: int) -> list[Episode]:
    out, total = [], 0
    for ep in episodes:
        if total + len(ep) > n:
            k = n - total
            if k > 0:
                trunc = ep.truncations[:k].copy()
                trunc[-1] = True
                out.append(Episode(ep.observations[: k + 1], ep.actions[:k], ep.rewards[:k], ep.terminations[:k], trunc))
            break
        out.append(ep)
        total += len(ep)
    return out


def replay_episodes(buffer: ReplayBuffer, size: int) -> list[Episode]:
    """The first ``size`` buffer transitions, regrouped per parallel env into episodes."""
    episodes = []
    for env in np.unique(buffer.env_index[:size]):
        idx = np.flatnonzero(buffer.env_index[:size] == env)
        ends = np.flatnonzero(np.logical_or(buffer.term[idx] > 0, buffer.trunc[idx] > 0))
        starts = np.concatenate([[0], ends + 1])
        stops = np.concatenate([ends + 1, [len(idx)]])
        for a, b in zip(starts, stops):
            if b <= a:
                continue
            j = idx[a:b]
            trunc = buffer.trunc[j] > 0
            if not (buffer.term[j[-1]] > 0 or trunc[-1]):
                trunc[-1] = True  # cut at the medium snapshot
            episodes.append(Episode(np.concatenate([buffer.obs[j], buffer.next_obs[j[-1:]]]), buffer.act[j],
                                    buffer.rew[j].astype(np.float64), buffer.term[j] > 0, trunc))
    return episodes


def _write_minari(root: Path, did: str, env_id: str, episodes: list[Episode], card: dict) -> None:
    """Write one Minari dataset into a private root, then move it into ``root`` atomically."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    ref = d4rl_reference(card["env"])
    buffers = [EpisodeBuffer(id=i, observations=e.observations, actions=e.actions, rewards=list(e.rewards),
                             terminations=list(e.terminations), truncations=list(e.truncations))
               for i, e in enumerate(episodes)]
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(staging)
    try:
        minari.create_dataset_from_buffers(
            did, buffers, env=env_id, eval_env=env_id, algorithm_name="SAC (srpo-bench)",
            author="srpo-bench", author_email="srpo-bench@users.noreply.invalid",
            description=card["description"], code_permalink=card["code_version"],
            ref_min_score=ref.ref_min, ref_max_score=ref.ref_max,
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


def finished_cards(env: str, profile: str, seed: int, root: Path) -> dict[str, dict] | None:
    """The five cards of ``env`` in ``root`` if all exist and were made with this profile and seed."""
    cards = {}
    for kind in KINDS:
        path = Path(root) / dataset_id(env, kind) / "srpo_card.json"
        if not path.exists():
            return None
        card = json.loads(path.read_text())
        if card.get("seed") != seed or card.get("budget", {}).get("profile") != profile:
            return None
        cards[kind] = card
    return cards


def generate_env(env: str, profile: str, seed: int, root: Path, progress: bool = True) -> dict:
    """One SAC run for ``env`` and its five datasets in the Minari store at ``root``.

    Returns the five dataset cards and the wall time of each phase.
    """
    if env not in GYM_ENV_IDS:
        raise ValueError(f"unknown environment {env!r}; choose from {', '.join(GYM_ENV_IDS)}")
    if profile not in GENERATION_PROFILES:
        raise ValueError(f"unknown generation profile {profile!r}; choose from {', '.join(GENERATION_PROFILES)}")
    prof = GENERATION_PROFILES[profile]
    env_id, sac = GYM_ENV_IDS[env], prof.sac
    root = Path(root).resolve()  # Minari resolves relative store paths against its own notion of cwd
    root.mkdir(parents=True, exist_ok=True)
    ref = d4rl_reference(env)
    torch.manual_seed(seed)

    def eval_return(policy, s: int) -> float:
        return float(evaluate(policy, env_id, prof.eval_episodes, s, min(prof.eval_episodes, 8),
                              max_episode_steps=sac.max_episode_steps).returns.mean())

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    run = train_sac(env_id, sac, seed, eval_return, progress)
    timings["sac"] = time.perf_counter() - t0
    best = max(range(len(run.snapshots)), key=lambda i: run.snapshots[i].eval_return)
    expert_snap = run.snapshots[best]
    target = expert_snap.eval_return / 3.0
    medium_snap = min(run.snapshots[: best + 1], key=lambda s: abs(s.eval_return - target))

    def actor_policy(state_dict):
        actor = TanhGaussianActor(run.buffer.obs.shape[1], run.buffer.act.shape[1], sac.hidden)
        actor.load_state_dict(state_dict)
        return lambda obs: actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy()

    act_dim = run.buffer.act.shape[1]
    rng = np.random.default_rng(seed)
    sources = {
        "random": lambda o: rng.uniform(-1, 1, (len(o), act_dim)),
        "medium": actor_policy(medium_snap.actor_state),
        "expert": actor_policy(expert_snap.actor_state),
    }
    episodes: dict[str, list[Episode]] = {}
    for i, (kind, pol) in enumerate(sources.items()):
        t1 = time.perf_counter()
        episodes[kind] = collect(pol, env_id, prof.transitions, seed + 1000 * (i + 1), sac.num_envs, sac.max_episode_steps)
        timings[f"collect_{kind}"] = time.perf_counter() - t1
    episodes["medium-replay"] = replay_episodes(run.buffer, medium_snap.buffer_size)
    episodes["medium-expert"] = episodes["medium"] + episodes["expert"]

    def returns_of(kind: str) -> list[float]:
        return [float(e.rewards.sum()) for e in episodes[kind] if e.terminations[-1] or len(e) == sac.max_episode_steps]

    policy_returns = {k: float(np.mean(returns_of(k))) if returns_of(k) else None for k in ("random", "medium", "expert")}
    cards = {}
    for kind in KINDS:
        did = dataset_id(env, kind)
        t1 = time.perf_counter()
        card = {
            "dataset_id": did, "env": env, "env_id": env_id, "kind": kind,
            "transitions": int(sum(len(e) for e in episodes[kind])), "episodes": len(episodes[kind]),
            "policy_returns": {"random": policy_returns["random"], "medium": policy_returns["medium"],
                               "expert": policy_returns["expert"],
                               "medium_snapshot_eval": medium_snap.eval_return,
                               "expert_snapshot_eval": expert_snap.eval_return},
            "medium_snapshot_env_step": medium_snap.env_step,
            "expert_snapshot_env_step": expert_snap.env_step,
            "d4rl_reference": {"random": ref.ref_min, "expert": ref.ref_max},
            "our_expert_d4rl_normalized": None if policy_returns["expert"] is None
            else float(ref.normalize(policy_returns["expert"])),
            "budget": {"profile": profile, "sac": asdict(sac), "transitions_per_rollout_dataset": prof.transitions},
            "seed": seed, "code_version": code_version(),
            "sac_env_steps_per_s": run.env_steps_per_s, "sac_updates": run.updates,
        }
        card["description"] = (
            f"D4RL-style {kind} dataset for {env_id}, generated by srpo-bench (profile {profile}, seed {seed}). "
            f"'medium' is a SAC snapshot at about one third of our expert's return "
            f"({medium_snap.eval_return:.0f} vs {expert_snap.eval_return:.0f}); our expert's return is "
            f"{card['our_expert_d4rl_normalized'] or float('nan'):.1f} on D4RL's normalized scale "
            f"(D4RL expert = 100). Not the D4RL data."
        )
        _write_minari(root, did, env_id, episodes[kind], card)
        timings[f"write_{kind}"] = time.perf_counter() - t1
        cards[kind] = card
    return {"env": env, "cards": cards, "timings_s": timings, "sac_env_steps_per_s": run.env_steps_per_s}
