"""Held-out data by whole episodes: one episode's transitions are correlated; splitting them would leak."""

from __future__ import annotations

import math

import numpy as np

from srpo.transitions import Transitions


def episode_ids(data: Transitions) -> np.ndarray:
    """Episode index of every row: episodes end at a terminal or timeout (a trailing
    incomplete episode, with no end marker, is an episode too)."""
    ends = data.episode_ends
    return np.concatenate(([0], np.cumsum(ends[:-1]))).astype(np.int64)


def episode_split(data: Transitions, heldout_fraction: float, seed: int) -> tuple[Transitions, Transitions]:
    """Split ``data`` into (train, held-out) by whole episodes.

    round(heldout_fraction x episodes) episodes, at least one and at most all but one,
    are drawn without replacement by ``numpy.random.default_rng(seed)``. Rows keep
    their original order, so every complete episode still ends with its end marker
    and the trailing incomplete episode (if any) stays last in its split: the episode
    structure of each part is exactly the episodes assigned to it.
    """
    try:
        frac = float(heldout_fraction)
    except (TypeError, ValueError):
        frac = math.nan
    if not 0.0 < frac < 1.0:  # also rejects NaN
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    ids = episode_ids(data)
    n_ep = int(ids[-1]) + 1
    if n_ep < 2:
        raise ValueError(
            f"dataset {data.name!r} has {n_ep} episode; an episode split needs at least 2 "
            "(one for training, one held out)"
        )
    n_held = min(max(int(round(frac * n_ep)), 1), n_ep - 1)
    held = np.zeros(n_ep, dtype=bool)
    held[np.random.default_rng(seed).choice(n_ep, size=n_held, replace=False)] = True
    mask = held[ids]

    def part(rows: np.ndarray, split: str, episodes: int) -> Transitions:
        return Transitions(
            observations=data.observations[rows],
            actions=data.actions[rows],
            rewards=data.rewards[rows],
            next_observations=data.next_observations[rows],
            terminals=data.terminals[rows],
            timeouts=data.timeouts[rows],
            name=f"{data.name}[{split}]",
            info={
                **data.info,
                "split": split,
                "parent": data.name,
                "episodes": episodes,
                "split_seed": seed,
                "heldout_fraction": frac,
            },
        )

    return part(~mask, "train", n_ep - n_held), part(mask, "heldout", n_held)
