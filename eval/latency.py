"""Wall-clock timing of action selection: the cost side of SRPO's speed claim (SRPO §1, Fig. 1).

Two uses share these helpers: the pipeline's evaluate step times every policy call of
its rollouts (so each score in the report comes with the latency measured in the same
run), and ``benchmarks/sampling.py`` times each method in isolation at fixed batch sizes.
On a GPU, kernels run asynchronously; ``sync`` makes each timed call wait for them.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def summarize_seconds(seconds) -> dict:
    """Median, interquartile range, min and count of per-call times, in milliseconds."""
    x = np.asarray(seconds, dtype=np.float64) * 1e3
    if x.size == 0:
        raise ValueError("no timed calls to summarize")
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return {
        "median_ms": float(q50),
        "q25_ms": float(q25),
        "q75_ms": float(q75),
        "min_ms": float(x.min()),
        "mean_ms": float(x.mean()),
        "calls": int(x.size),
    }


class TimedPolicy:
    """Wraps a policy callable and records the wall time of each call (a rollout's latency)."""

    def __init__(self, policy: Callable, sync: Callable[[], None] | None = None) -> None:
        self.policy, self.sync, self.seconds = policy, sync, []

    def __call__(self, obs):
        t0 = time.perf_counter()
        out = self.policy(obs)
        if self.sync is not None:
            self.sync()
        self.seconds.append(time.perf_counter() - t0)
        return out

    def summary(self) -> dict:
        return summarize_seconds(self.seconds)


def time_calls(
    fn: Callable[[], object],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] | None = None,
    max_seconds: float | None = None,
) -> dict:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones; stop early past ``max_seconds``.

    With ``max_seconds``, warm-up stops after a quarter of it and timing after all of it
    (but never with fewer than 3 timed calls), so that slow methods do not dominate a benchmark.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    start = time.perf_counter()
    for i in range(warmup):
        fn()
        # A slow call (diffusion sampling at batch 256) needs few warm-up calls to reach steady state.
        if max_seconds is not None and time.perf_counter() - start > max_seconds / 4:
            break
    if sync is not None:
        sync()
    seconds, start = [], time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        seconds.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds and len(seconds) >= 3:
            break
    return summarize_seconds(seconds)
