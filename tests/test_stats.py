"""Score statistics: properties of the estimators and agreement with rliable's definitions."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from srpo_bench.eval import stats

finite = st.floats(-200, 200, allow_nan=False, allow_infinity=False)
runs = st.lists(finite, min_size=2, max_size=12)


def matrices(min_runs=5, max_runs=7, max_tasks=4):
    return st.integers(min_runs, max_runs).flatmap(
        lambda r: st.integers(1, max_tasks).flatmap(
            lambda t: st.lists(st.lists(finite, min_size=t, max_size=t), min_size=r, max_size=r)
        )
    )


@given(runs)
def test_task_interval_contains_the_mean(x):
    est, std = stats.task_estimate(x)
    assert est.low - 1e-9 <= est.value <= est.high + 1e-9
    assert est.n_runs == len(x) and np.isclose(est.value, np.mean(x)) and np.isclose(std, np.std(x, ddof=1))


def test_task_interval_kind_follows_the_run_count():
    # n >= 4: Student-t, mean ± t_{0.975, n-1} s / sqrt(n), here worked out by hand:
    # x = 1..5: mean 3, s = sqrt(2.5), t_{0.975, 4} = 2.776445105.
    est, _ = stats.task_estimate([5.0, 1.0, 4.0, 2.0, 3.0])
    half = 2.776445105 * np.sqrt(2.5) / np.sqrt(5)
    assert est.kind == "student-t" and est.is_confidence_interval
    assert np.isclose(est.low, 3 - half) and np.isclose(est.high, 3 + half)
    assert est.format() == "3.0 [1.0, 5.0]"
    # n = 2, 3: the range of the runs, never called a confidence interval.
    three, _ = stats.task_estimate([7.0, 1.0, 4.0])
    assert (
        three.kind == "range" and not three.is_confidence_interval and (three.low, three.high) == (1.0, 7.0)
    )
    assert three.format() == "4.0 (range 1.0 to 7.0)"
    one, _ = stats.task_estimate([3.0])
    assert one.kind == "none" and one.format() == "3.0"


@pytest.mark.parametrize(
    "name, draw, true_mean",
    [
        ("normal", lambda rng, size: rng.normal(50.0, 10.0, size), 50.0),
        ("gamma(4), skewness 1", lambda rng, size: rng.gamma(4.0, 5.0, size), 20.0),
    ],
)
def test_task_interval_covers_the_true_mean_95_percent_of_the_time_at_five_runs(name, draw, true_mean):
    rng = np.random.default_rng(2024)
    trials = 4000  # binomial sd of the coverage at 0.95: 0.0034
    hits = 0
    for x in draw(rng, (trials, 5)):
        est, _ = stats.task_estimate(x)
        hits += est.low <= true_mean <= est.high
    assert 0.92 <= hits / trials <= 0.98, f"{name}: coverage {hits / trials:.3f}"


@given(matrices())
@settings(max_examples=15, deadline=None)
def test_aggregate_intervals_contain_their_estimates_and_match_the_definitions(m):
    m = np.asarray(m)
    est = stats.aggregate_estimates({"a": m}, reps=300)["a"]
    for e in est.values():
        assert e.low - 1e-6 <= e.value <= e.high + 1e-6 and e.n_runs == m.shape[0]
    assert np.isclose(est["mean"].value, m.mean(axis=0).mean())
    assert np.isclose(est["median"].value, np.median(m.mean(axis=0)))
    assert np.isclose(est["iqm"].value, stats.iqm(m))
    assert np.isclose(est["optimality_gap"].value, np.mean(np.maximum(100.0 - m, 0.0)))


@given(finite, st.integers(5, 8), st.integers(1, 4))
@settings(max_examples=15, deadline=None)
def test_iqm_and_aggregates_of_a_constant_are_that_constant(c, n_runs, n_tasks):
    m = np.full((n_runs, n_tasks), c)
    assert np.isclose(stats.iqm(m), c)
    est = stats.aggregate_estimates({"a": m}, reps=200)["a"]
    for name in ("mean", "median", "iqm"):
        assert (
            np.isclose(est[name].value, c) and np.isclose(est[name].low, c) and np.isclose(est[name].high, c)
        )


def test_no_aggregate_interval_below_five_runs_per_task():
    m = np.random.default_rng(3).normal(50, 10, (4, 3))
    est = stats.aggregate_estimates({"a": m}, reps=200)["a"]
    for e in est.values():
        assert e.kind == "none" and np.isnan(e.low) and np.isnan(e.high) and e.n_runs == 4
    assert np.isclose(est["iqm"].value, stats.iqm(m))
    poi = stats.probability_of_improvement(m[:2], m[2:], reps=200)  # two runs against two
    assert poi.kind == "none" and np.isnan(poi.low) and "[" not in poi.format()
    prof = stats.performance_profile({"a": m}, np.linspace(0, 100, 5), reps=100)["a"]
    assert np.all(np.isnan(prof["low"])) and prof["fraction"][0] == 1.0


@given(matrices(min_runs=2, max_runs=8), st.randoms(use_true_random=False))
@settings(max_examples=15, deadline=None)
def test_estimates_do_not_depend_on_the_order_of_runs(m, rnd):
    m = np.asarray(m)
    perm = list(range(m.shape[0]))
    rnd.shuffle(perm)
    a = stats.aggregate_estimates({"a": m}, reps=300)["a"]
    b = stats.aggregate_estimates({"a": m[perm]}, reps=300)["a"]
    assert a == b
    assert stats.task_estimate(m[:, 0]) == stats.task_estimate(m[perm, 0])


@given(st.integers(0, 10_000))
@settings(max_examples=10, deadline=None)
def test_interval_narrows_with_more_runs(seed):
    rng = np.random.default_rng(seed)
    few, _ = stats.task_estimate(rng.normal(50, 10, 4))
    many, _ = stats.task_estimate(rng.normal(50, 10, 256))
    assert many.high - many.low < few.high - few.low


def test_probability_of_improvement():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, (5, 3))
    assert stats.probability_of_improvement(y + 100, y, reps=300).value == 1.0
    assert stats.probability_of_improvement(y - 100, y, reps=300).value == 0.0
    same = stats.probability_of_improvement(y, y, reps=300)
    assert same.value == 0.5 and same.low - 1e-9 <= 0.5 <= same.high + 1e-9
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(y, y[:, :2])


def test_performance_profile_is_a_decreasing_fraction_with_bands():
    m = np.random.default_rng(1).uniform(0, 100, (6, 3))
    taus = np.linspace(-1, 101, 30)
    prof = stats.performance_profile({"a": m}, taus, reps=300)["a"]
    f = prof["fraction"]
    assert f[0] == 1.0 and f[-1] == 0.0 and np.all(np.diff(f) <= 1e-12)
    assert np.all(prof["low"] <= f + 1e-9) and np.all(f <= prof["high"] + 1e-9)


def test_bad_scores_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.aggregate_estimates({"a": np.array([[1.0, np.nan]])})
    with pytest.raises(ValueError, match="runs x tasks"):
        stats.aggregate_estimates({"a": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match="finite"):
        stats.task_estimate([])
    one, std = stats.task_estimate([3.0])
    assert one.value == 3.0 and np.isnan(one.low) and np.isnan(std) and one.format() == "3.0"


def test_curve_flattened_by_hand():
    """Window: steps >= 75 of 100. Earlier points (wild here) do not count."""
    steps = [0, 25, 50, 75, 100]
    early = [[-50.0, 90.0, 0.0]] * 3
    # Seed means 12 (step 75) and 14 (step 100): movement 2. Last point 11, 13, 18: mean 14,
    # squared deviations 9 + 1 + 16 = 26, std = sqrt(26 / 2) = 3.606 > 2: flattened.
    wide = np.array([e + [a, b] for e, a, b in zip(early, [10, 12, 14], [11, 13, 18])])
    f = stats.curve_flattened(steps, wide, 100)
    assert f.flattened is True and f.points == 2 and f.window_start == 75
    assert f.movement == pytest.approx(2.0) and f.seed_std == pytest.approx(np.sqrt(13.0))
    # Last point 13, 14, 15: std 1 < movement 2: still moving.
    wide[:, -1] = [13, 14, 15]
    f = stats.curve_flattened(steps, wide, 100)
    assert f.flattened is False and f.seed_std == pytest.approx(1.0)


def test_curve_flattened_cannot_judge_one_point_or_one_seed_and_a_still_curve_is_flat():
    assert stats.curve_flattened([50, 100], [[1.0, 2.0], [3.0, 4.0]], 100).flattened is None  # 1 point
    assert stats.curve_flattened([80, 100], [[1.0, 2.0]], 100).flattened is None  # 1 seed
    assert stats.curve_flattened([80, 100], [[5.0, 5.0], [5.0, 5.0]], 100).flattened is True
    with pytest.raises(ValueError, match="3 curve points but steps has 2"):
        stats.curve_flattened([80, 100], [[1.0, 2.0, 3.0]], 100)


def test_format_sig_names_ranges_and_prints_no_interval_it_does_not_have():
    two = {"value": 0.0123, "low": 0.01, "high": 0.015, "kind": stats.RANGE}
    assert stats.format_sig(two) == "0.0123 (range 0.01 to 0.015)"
    assert stats.format_sig({**two, "kind": stats.STUDENT_T}) == "0.0123 [0.01, 0.015]"
    assert stats.format_sig({"value": 0.0123, "low": None, "high": None}) == "0.0123"
    assert stats.format_sig({"value": float("nan"), "low": 0, "high": 1}) == "n/a"
    assert stats.format_sig(None) == "n/a"
    assert "Student-t" in stats.task_interval_rule(0.95) and "range" in stats.task_interval_rule(0.95)


def test_precision_effect_is_the_paired_difference_with_the_task_interval():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "precision_effect", Path(__file__).resolve().parents[1] / "benchmarks/precision_effect.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = np.array([50.0, 60.0, 70.0, 80.0, 90.0])
    other = base + np.array([1.0, -1.0, 2.0, 0.0, 3.0])  # differences: mean 1, sd sqrt(2.5)
    e = mod.paired_effect(base, other, 0.95)
    half = 2.776445105 * np.sqrt(2.5) / np.sqrt(5)
    assert e["value"] == pytest.approx(1.0) and e["kind"] == stats.STUDENT_T
    assert e["low"] == pytest.approx(1.0 - half) and e["high"] == pytest.approx(1.0 + half)
    three = mod.paired_effect(base[:3], other[:3], 0.95)
    assert three["kind"] == stats.RANGE and (three["low"], three["high"]) == (-1.0, 2.0)
    with pytest.raises(ValueError, match="one score per seed"):
        mod.paired_effect(base, other[:4], 0.95)
