"""Dataset resolution: a task name (and optional path) to validated :class:`Transitions`.

Today this knows the exact-score bandit suite; Minari ids, D4RL hdf5 files and the
locally generated D4RL-style datasets plug in here (issue: offline datasets).
"""

from __future__ import annotations

from srpo.transitions import Transitions
from validation import bandits

BANDIT_DATASET_SIZE = 10_000


def load_dataset(task: str, dataset: str | None = None, seed: int = 0) -> Transitions:
    """The offline dataset for ``task``.

    Bandit tasks generate their data from the task's mixture (the dataset seed is
    the run seed, so each seed sees its own sample); ``dataset`` must then be unset.
    """
    if task.startswith("bandit-"):
        if dataset is not None:
            raise ValueError(f"{task} generates its own data; drop --dataset {dataset}")
        return bandits.make_dataset(bandits.get_bandit(task), BANDIT_DATASET_SIZE, seed)
    raise ValueError(
        f"no dataset loader for task {task!r} yet: this version trains on the exact-score bandit "
        f"tasks ({', '.join('bandit-' + b for b in bandits.BANDITS)}); Minari/D4RL/generated "
        "locomotion datasets are not wired in yet"
    )
