"""Dataset resolution: a task name and a dataset spec to validated :class:`Transitions`.

Three sources, one entry point (:func:`load_dataset`):

- the exact-score bandits (task ``bandit-*``), generated from the task's mixture;
- a D4RL-format hdf5 file (``observations, actions, rewards, terminals, timeouts``,
  optional ``next_observations``), normalized with D4RL's reference returns;
- a Minari dataset id (``mujoco/hopper/medium-v0``, ``D4RL/antmaze/umaze-v1``) from
  the local Minari store (``MINARI_DATASETS_PATH``), normalized with its
  ``ref_min_score`` / ``ref_max_score`` metadata.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srpo.transitions import Transitions
from srpo_bench.eval import bandit_tasks
from srpo_bench.eval.observations import flatten_observation
from srpo_bench.eval.references import Reference, d4rl_reference

BANDIT_DATASET_SIZE = 10_000
GENERATED = "generated"  # --dataset value: our own D4RL-style dataset of the task
NAMESPACE = "srpo"  # Minari namespace of the datasets that eval/generate.py writes
KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
# (observation size, action size) of each locomotion family's environment (Gymnasium MuJoCo v5 and D4RL)
TASK_DIMS = {"hopper": (11, 3), "halfcheetah": (17, 6), "walker2d": (17, 6)}


@dataclass(frozen=True)
class OfflineDataset:
    """Transitions plus what turns a policy's return into a normalized score (None for bandits)."""

    transitions: Transitions
    reference: Reference | None


# Where a dataset came from (``Transitions.info["source"]``) -> the locomotion environment version
# closest to the one it was collected on (method §5, evaluation paragraph). D4RL's hdf5 files were
# collected on gym's v3 MuJoCo environments, whose models Gymnasium's v4 keeps; Minari's datasets
# (its `mujoco/...` ids and ours, `srpo/...`) are recorded on v5.
COLLECTION_ENV_VERSION = {"d4rl-hdf5": "v4", "minari": "v5"}
ENV_VERSION_CHOICES = ("auto", "v4", "v5")  # auto: COLLECTION_ENV_VERSION of the dataset's source


def collection_env_version(source: str) -> str:
    """The evaluation environment version for a dataset of this provenance (``d4rl-hdf5`` -> ``v4``)."""
    if source not in COLLECTION_ENV_VERSION:
        raise ValueError(f"unknown dataset source {source!r}; known: {', '.join(COLLECTION_ENV_VERSION)}")
    return COLLECTION_ENV_VERSION[source]


def resolve_env_version(choice: str, source: str | None, where: str = "env_version") -> tuple[str, str]:
    """The version to evaluate on and why: ``choice`` (auto, v4, v5) against the dataset's ``source``.

    Returns ``(version, reason)``; ``reason`` says whether it came from the provenance or was set.
    ``source`` None (unknown provenance) with ``auto`` falls back to v5, the version our data uses.
    """
    if choice not in ENV_VERSION_CHOICES:
        raise ValueError(f"{where} must be one of {', '.join(ENV_VERSION_CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice, f"set by {where}"
    if source is None:
        return "v5", "auto: dataset provenance unknown, v5 (the version of generated and Minari data)"
    version = collection_env_version(source)
    return (
        version,
        f"auto: a {source} dataset; {version} is the closest to the environment it was collected on",
    )


def dataset_id(env: str, kind: str) -> str:
    """The Minari id of one of our generated datasets: ``srpo/<env>/<kind>-v0``."""
    return f"{NAMESPACE}/{env}/{kind}-v0"


def generated_dataset_id(task: str) -> str:
    """``hopper-medium-replay`` -> ``srpo/hopper/medium-replay-v0``."""
    env, _, kind = task.partition("-")
    if kind not in KINDS:
        raise ValueError(
            f"task {task!r} has no generated dataset; generated kinds are {', '.join(KINDS)} "
            "(e.g. hopper-medium-replay)"
        )
    return dataset_id(env, kind)


def load_dataset(task: str, dataset: str | None = None, seed: int = 0) -> OfflineDataset:
    """The offline dataset for ``task``: generated (bandits), an hdf5 path, or a Minari id.

    ``dataset="generated"`` names our own D4RL-style dataset of the task (``srpo data make``).
    """
    if task.startswith("bandit-"):
        if dataset is not None:
            raise ValueError(f"{task} generates its own data; drop --dataset {dataset}")
        return OfflineDataset(
            bandit_tasks.make_dataset(bandit_tasks.get_bandit(task), BANDIT_DATASET_SIZE, seed), None
        )
    if dataset is None:
        raise ValueError(
            f"task {task!r} needs --dataset: a D4RL-format .hdf5 file or a Minari dataset id "
            "such as mujoco/hopper/medium-v0"
        )
    if dataset == GENERATED:
        return load_minari(generated_dataset_id(task))
    if Path(dataset).is_dir():
        raise ValueError(
            f"--dataset {dataset} is a directory; pass a D4RL-format .hdf5 file, a Minari dataset id "
            "(e.g. srpo/hopper/medium-v0), or 'generated'; a Minari store directory goes to --minari-root"
        )
    if dataset.endswith((".hdf5", ".h5")) or Path(dataset).is_file():
        return load_d4rl_hdf5(Path(dataset), env=task)
    return load_minari(dataset)


def load_d4rl_hdf5(path: Path, env: str) -> OfflineDataset:
    """Read a D4RL-format hdf5 file; ``env`` (e.g. the task name) selects the reference returns.

    Without ``next_observations`` the next state is the following row, and the last
    step of each episode that ended by timeout is dropped (its successor is unknown),
    as D4RL's ``qlearning_dataset`` does; the row before it then ends the episode (its
    timeout flag is set), so episode boundaries survive the drop.
    """
    import h5py

    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_REQUIRED_KEYS if k not in f]
            if missing:
                raise ValueError(
                    f"{path} is missing key(s) {', '.join(missing)}; a D4RL-format file needs "
                    f"{', '.join(D4RL_REQUIRED_KEYS)} (next_observations optional)"
                )
            arrays = {k: np.asarray(f[k]) for k in (*D4RL_REQUIRED_KEYS, "next_observations") if k in f}
    except OSError as exc:
        raise ValueError(f"{path} is not a readable hdf5 file ({exc})") from exc
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"{path}: arrays have mismatched lengths {lengths}; every key needs one row per step"
        )
    obs = arrays["observations"].astype(np.float32)
    terminals = arrays["terminals"].astype(np.float32).reshape(-1)
    timeouts = arrays["timeouts"].astype(np.float32).reshape(-1)
    if "next_observations" in arrays:
        keep = np.ones(len(obs), dtype=bool)
        next_obs = arrays["next_observations"].astype(np.float32)
    else:
        next_obs = np.concatenate([obs[1:], obs[-1:]])
        keep = timeouts == 0
        keep[-1] = terminals[-1] > 0  # the final row has no successor unless it is terminal
        dropped = np.flatnonzero(~keep)
        before = dropped - 1
        # The row before a dropped timeout row is now its episode's last: mark the boundary there
        # (unless that row is itself dropped or already ends an episode).
        before = before[(before >= 0) & keep[np.maximum(before, 0)] & (terminals[np.maximum(before, 0)] == 0)]
        timeouts = timeouts.copy()
        timeouts[before] = 1.0
    transitions = Transitions(
        observations=obs[keep],
        actions=arrays["actions"].astype(np.float32)[keep],
        rewards=arrays["rewards"].astype(np.float32).reshape(-1)[keep],
        next_observations=next_obs[keep],
        terminals=terminals[keep],
        timeouts=timeouts[keep],
        name=str(path),
        info={"source": "d4rl-hdf5", "path": str(path)},
    )
    return OfflineDataset(transitions, d4rl_reference(env))


def load_minari(dataset_id: str) -> OfflineDataset:
    """Load a Minari dataset from the local store and flatten its episodes into transitions."""
    import minari

    local = sorted(minari.list_local_datasets())
    if dataset_id not in local and dataset_id.startswith(NAMESPACE + "/"):
        ours = [d for d in local if d.startswith(NAMESPACE + "/")]
        near = difflib.get_close_matches(dataset_id, ours, n=1)
        raise ValueError(
            f"no dataset {dataset_id!r} in the local store ({minari_root()})"
            + (f"; did you mean {near[0]!r}?" if near else ".")
            + f" Our own datasets there: {', '.join(ours) or 'none'}; make them with `srpo data make`"
        )
    if dataset_id not in local:
        raise ValueError(
            f"Minari dataset {dataset_id!r} is not in the local store ({minari_root()}). "
            f"Local datasets: {', '.join(local) or 'none'}. On a machine with internet run "
            f"`minari download {dataset_id}` and copy the store here, or set MINARI_DATASETS_PATH."
        )
    ds = minari.load_dataset(dataset_id)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next_obs", "act", "rew", "term", "trunc")}
    for ep in ds.iterate_episodes():
        obs = flatten_observation(ep.observations)
        parts["obs"].append(obs[:-1])
        parts["next_obs"].append(obs[1:])
        parts["act"].append(np.asarray(ep.actions, dtype=np.float32))
        parts["rew"].append(np.asarray(ep.rewards, dtype=np.float32))
        parts["term"].append(np.asarray(ep.terminations, dtype=np.float32))
        parts["trunc"].append(np.asarray(ep.truncations, dtype=np.float32))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    meta = ds.storage.metadata
    ref = None
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        ref = Reference(
            float(meta["ref_min_score"]), float(meta["ref_max_score"]), f"Minari metadata of {dataset_id}"
        )
    transitions = Transitions(
        observations=cat["obs"],
        actions=cat["act"],
        rewards=cat["rew"],
        next_observations=cat["next_obs"],
        terminals=cat["term"],
        timeouts=cat["trunc"],
        name=dataset_id,
        info={"source": "minari", "dataset_id": dataset_id, "episodes": int(ds.total_episodes)},
    )
    return OfflineDataset(transitions, ref)


def check_task_dims(
    task: str, data: Transitions, override: str = "(--allow-dim-mismatch trains on it anyway)"
) -> None:
    """Refuse a dataset whose observation or action size is not the task environment's.

    ``override`` ends the message: how the caller lets a user train on it anyway.
    """
    want = TASK_DIMS.get(task.split("-")[0])
    got = (data.state_dim, data.action_dim)
    if want is not None and got != want:
        raise ValueError(
            f"dataset {data.name} has observations of size {got[0]} and actions of size {got[1]}, but "
            f"{task} needs {want[0]} and {want[1]}; pass the task's dataset {override}"
        )


def minari_root() -> Path:
    """The local Minari store: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    from minari.storage import get_dataset_path

    return Path(get_dataset_path())
