"""Wall time of a stage graph on G workers from per-stage durations: a projection, not a scheduler.

Used by ``benchmarks/ray_projection.py`` (the paper protocol on 1, 4 and 8 GPUs) and
``benchmarks/ray_smoke.py``. Three numbers per G:

- the critical path: the longest chain of dependent stages, a floor no number of workers beats;
- the lower bound ``max(critical path, total work / G)``;
- the makespan of a list schedule that starts, whenever a worker is free, the first ready stage in
  submission order (what the Ray executor submits and, roughly, what Ray then runs; Graham 1966
  bounds it by ``work / G + critical path``).

Every stage takes one whole worker; fractional GPUs and stages slowing each other are not modelled.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def _check(durations: Mapping[str, float], upstream: Mapping[str, Sequence[str]]) -> None:
    unknown = sorted({u for ups in upstream.values() for u in ups} - set(durations))
    if unknown:
        raise ValueError(f"upstream stage(s) {', '.join(unknown)} have no duration")
    negative = sorted(k for k, v in durations.items() if v < 0)
    if negative:
        raise ValueError(f"negative duration for {', '.join(negative)}")


def critical_path(
    durations: Mapping[str, float], upstream: Mapping[str, Sequence[str]]
) -> tuple[float, list[str]]:
    """Length and stages of the longest dependency chain; ``upstream[s]``: the stages ``s`` waits for."""
    _check(durations, upstream)
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    visiting: set[str] = set()

    def visit(stage: str) -> float:
        if stage in finish:
            return finish[stage]
        if stage in visiting:
            raise ValueError(f"the stage graph has a cycle through {stage}")
        visiting.add(stage)
        best, best_up = 0.0, None
        for u in upstream.get(stage, ()):
            if visit(u) > best:
                best, best_up = finish[u], u
        visiting.discard(stage)
        finish[stage], via[stage] = best + durations[stage], best_up
        return finish[stage]

    end = max(durations, key=visit) if durations else None
    chain: list[str] = []
    while end is not None:
        chain.append(end)
        end = via[end]
    return (finish[chain[0]] if chain else 0.0), chain[::-1]


def list_schedule_makespan(
    durations: Mapping[str, float], upstream: Mapping[str, Sequence[str]], order: Sequence[str], workers: int
) -> float:
    """Finish time when each free worker takes the first ready stage in ``order`` (dependencies first)."""
    _check(durations, upstream)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if sorted(order) != sorted(durations):
        raise ValueError("order must list every stage exactly once")
    rank = {s: i for i, s in enumerate(order)}
    waiting = {s: set(upstream.get(s, ())) for s in order}
    downstream: dict[str, list[str]] = {s: [] for s in order}
    for s, ups in waiting.items():
        for u in ups:
            downstream[u].append(s)
    ready = [(rank[s], s) for s, ups in waiting.items() if not ups]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []  # (finish time, stage)
    now, done = 0.0, 0
    while done < len(order):
        while ready and len(running) < workers:
            _, s = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[s], s))
        if not running:
            raise ValueError("the stage graph has a cycle")
        now, s = heapq.heappop(running)
        done += 1
        for d in downstream[s]:
            waiting[d].discard(s)
            if not waiting[d]:
                heapq.heappush(ready, (rank[d], d))
    return now


def project(
    durations: Mapping[str, float], upstream: Mapping[str, Sequence[str]], order: Sequence[str], workers: int
) -> dict[str, float]:
    """Critical path, lower bound and list-schedule makespan on ``workers`` workers (same unit as in)."""
    cp, _ = critical_path(durations, upstream)
    work = float(sum(durations.values()))
    return {
        "workers": workers,
        "work": work,
        "critical_path": cp,
        "lower_bound": max(cp, work / workers),
        "list_schedule": list_schedule_makespan(durations, upstream, order, workers),
    }
