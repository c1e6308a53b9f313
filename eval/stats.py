"""Statistics of benchmark scores, following Agarwal et al. 2021 ("Deep RL at the Edge of
the Statistical Precipice", NeurIPS), the method behind ``rliable``.

Every number leaves this module as an :class:`Estimate`: the point estimate, its
bootstrap confidence interval, the confidence level and the number of runs it rests on.

- Per task: the mean over runs (a run's score is the mean over its evaluation episodes),
  the standard deviation, and a percentile-bootstrap interval of the mean
  (``scipy.stats.bootstrap``).
- Across tasks: mean, median, interquartile mean (IQM) and optimality gap of the
  (runs x tasks) score matrix, with *stratified* bootstrap intervals (runs resampled
  within each task), performance profiles with interval bands, and the probability of
  improvement P(X > Y) between two methods: all computed by ``rliable``.

Scores are D4RL-normalized (0 = random, 100 = expert), so the optimality gap uses
gamma = 100.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Mapping

import numpy as np
from scipy import stats

OPTIMALITY_TARGET = 100.0  # a D4RL expert


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval and the number of runs behind it."""

    value: float
    low: float
    high: float
    n_runs: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, digits: int = 1) -> str:
        """``72.3 [65.1, 79.0]``; the run count is shown by the caller's table header or column."""
        if np.isnan(self.low):
            return f"{self.value:.{digits}f} [n/a]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _matrix(scores) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"expected a (runs x tasks) score matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores contain NaN or inf; every run needs a finite score")
    # Runs are exchangeable: a canonical (sorted) order per task makes the seeded bootstrap
    # draws, and so the intervals, exactly independent of the order the runs came in.
    return np.sort(x, axis=0)


def task_estimate(
    scores, confidence: float = 0.95, reps: int = 10_000, seed: int = 0
) -> tuple[Estimate, float]:
    """Mean over runs of one task with a percentile-bootstrap CI, and the sample std (ddof 1).

    One run has no interval (NaN bounds); runs that all agree have a zero-width one.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())  # canonical order, as in _matrix
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"task scores must be a non-empty array of finite numbers, got {x!r}")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, np.nan, np.nan, 1, confidence), np.nan
    std = float(x.std(ddof=1))
    if np.ptp(x) == 0:
        return Estimate(mean, mean, mean, x.size, confidence), std
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=reps,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return Estimate(
        mean, float(res.confidence_interval.low), float(res.confidence_interval.high), x.size, confidence
    ), std


def iqm(scores) -> float:
    """Interquartile mean of all scores pooled: the mean of the middle 50% (rliable's aggregate_iqm)."""
    return float(stats.trim_mean(np.asarray(scores, dtype=np.float64).ravel(), proportiontocut=0.25))


def _aggregates() -> dict[str, Callable[[np.ndarray], float]]:
    from rliable import metrics

    return {
        "mean": metrics.aggregate_mean,
        "median": metrics.aggregate_median,
        "iqm": metrics.aggregate_iqm,
        "optimality_gap": partial(metrics.aggregate_optimality_gap, gamma=OPTIMALITY_TARGET),
    }


AGGREGATE_NAMES = ("mean", "median", "iqm", "optimality_gap")


def _rliable_intervals(score_dict, func, reps: int, confidence: float, seed: int):
    from rliable import library as rly

    # rliable 1.2 on arch 7 does not draw only from the RandomState it is given: seed numpy's
    # global generator too (and put it back), so that an interval is a function of the data.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch deprecates RandomState arguments
            return rly.get_interval_estimates(
                score_dict,
                func,
                reps=reps,
                confidence_interval_size=confidence,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(saved)


def aggregate_estimates(
    score_dict: Mapping[str, np.ndarray], confidence: float = 0.95, reps: int = 10_000, seed: int = 0
) -> dict[str, dict[str, Estimate]]:
    """Mean, median, IQM and optimality gap per method, with stratified-bootstrap intervals.

    ``score_dict[method]`` is a (runs x tasks) matrix of normalized scores.
    """
    mats = {k: _matrix(v) for k, v in score_dict.items()}
    fns = _aggregates()

    def all_metrics(x: np.ndarray) -> np.ndarray:
        return np.array([fns[name](x) for name in AGGREGATE_NAMES])

    points, intervals = _rliable_intervals(mats, all_metrics, reps, confidence, seed)
    return {
        method: {
            name: Estimate(
                float(points[method][i]),
                float(intervals[method][0, i]),
                float(intervals[method][1, i]),
                mats[method].shape[0],
                confidence,
            )
            for i, name in enumerate(AGGREGATE_NAMES)
        }
        for method in mats
    }


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, confidence: float = 0.95, reps: int = 10_000, seed: int = 0
) -> Estimate:
    """P(X > Y): per task the Mann-Whitney probability that a run of X beats a run of Y, averaged over tasks.

    ``x`` and ``y`` are (runs x tasks) matrices over the same tasks; ``n_runs`` is the smaller run count.
    """
    from rliable import metrics

    x, y = _matrix(x), _matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"both methods need the same tasks: {x.shape[1]} vs {y.shape[1]} columns")
    points, intervals = _rliable_intervals(
        {"pair": (x, y)},
        lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
        reps,
        confidence,
        seed,
    )
    return Estimate(
        float(points["pair"][0]),
        float(intervals["pair"][0, 0]),
        float(intervals["pair"][1, 0]),
        min(x.shape[0], y.shape[0]),
        confidence,
    )


def performance_profile(
    score_dict: Mapping[str, np.ndarray],
    taus: np.ndarray,
    confidence: float = 0.95,
    reps: int = 2_000,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Fraction of all runs (pooled over tasks) scoring above each tau, with stratified-bootstrap bands."""
    from rliable import library as rly

    mats = {k: _matrix(v) for k, v in score_dict.items()}
    taus = np.asarray(taus, dtype=np.float64)
    points, intervals = _rliable_intervals(
        mats, lambda x: rly.score_distributions(x, taus), reps, confidence, seed
    )
    return {
        m: {"tau": taus, "fraction": points[m], "low": intervals[m][0], "high": intervals[m][1]} for m in mats
    }
