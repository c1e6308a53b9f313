"""The claims table: each verdict from its rule and a hand-made interval."""

import math

import numpy as np
import pandas as pd

from srpo_bench import claims
from srpo_bench.eval import stats

T = stats.STUDENT_T


def est(value, low, high, n=5, kind=stats.STRATIFIED_BOOTSTRAP):
    return stats.Estimate(value, low, high, n, 0.95, kind)


def test_interval_rules():
    assert claims.above(0.6, 0.9, 0.5) == claims.HELD
    assert claims.above(0.1, 0.4, 0.5) == claims.NOT_HELD
    assert claims.above(0.4, 0.6, 0.5) == claims.UNRESOLVED
    assert claims.above(math.nan, math.nan, 0.5) == claims.UNRESOLVED
    assert claims.below(0.1, 0.4, 0.5) == claims.HELD and claims.below(0.6, 0.9, 0.5) == claims.NOT_HELD
    assert claims.all_of([claims.HELD, claims.HELD]) == claims.HELD
    assert claims.all_of([claims.HELD, claims.UNRESOLVED]) == claims.UNRESOLVED
    assert claims.all_of([claims.UNRESOLVED, claims.NOT_HELD]) == claims.NOT_HELD
    assert claims.all_of([]) == claims.UNRESOLVED
    # Competitive: only an interval wholly below 0.5 says SRPO is worse.
    assert claims.competitive(est(0.45, 0.3, 0.6)) == claims.HELD
    assert claims.competitive(est(0.3, 0.2, 0.45)) == claims.NOT_HELD
    assert claims.competitive(est(0.3, math.nan, math.nan, 2, stats.NO_INTERVAL)) == claims.UNRESOLVED


def _scores():
    rows = []
    for seed, diffusion_ms in enumerate([30.0, 40.0, 50.0, 60.0, 70.0]):  # SRPO at 1 ms: ratios 30 to 70
        for v, ms in (("srpo", 1.0), ("diff", diffusion_ms), ("iql", 1.5)):
            rows.append(
                {"task": "hopper-medium", "seed": seed, "variant": v, "latency_ms": ms, "skipped": None}
            )
    return pd.DataFrame(rows)


def _validation():
    def e(v, lo, hi):
        return {"value": v, "low": lo, "high": hi, "kind": T}

    baseline = {"variance_ratio": e(0.3, 0.1, 0.5), "relative_mean_diff": e(0.1, 0.01, 0.3), "agree": True}
    grad = {"targets": {"bandit-ring8": {"checkpoints": [{"step": 10, "baseline": {"sigma2": baseline}}]}}}
    score = {
        "bandit": {
            "ring8": {
                "t": [0.01, 0.1, 0.5],  # t = 0.01 lies outside SRPO's range: its large error is not counted
                "rel_error": [e(0.5, 0.4, 0.6), e(0.03, 0.01, 0.05), e(0.03, 0.02, 0.04)],
                "n_runs": 5,
            }
        }
    }
    return {"gradient_variance": grad, "score_accuracy": score}


def test_build_decides_each_claim_from_its_interval():
    methods = {"srpo": "srpo", "iql": "iql-awr", "diff": "diffusion", "t-a": "srpo", "t-b": "srpo"}
    poi = {"srpo > iql": est(0.8, 0.6, 0.95), "srpo > diff": est(0.3, 0.2, 0.45)}
    focus = {
        "tasks": ["hopper-medium"],
        "poi": {"t-a": est(0.2, 0.05, 0.4).to_dict(), "t-b": est(0.45, 0.3, 0.6).to_dict()},
    }
    rows = claims.build("srpo", methods, ["t-a", "t-b"], poi, focus, _scores(), _validation(), 0.95)
    verdict = {r.claim: r.verdict for r in rows}
    assert verdict["SRPO scores above IQL"] == claims.HELD
    assert verdict["SRPO is competitive with diffusion-sampling policies"] == claims.NOT_HELD
    speed = next(r for r in rows if "faster" in r.claim)
    # mean 50, sd sqrt(250): 50 ± t(0.975, 4) sqrt(250) / sqrt(5) = 50 ± 19.6 -> [30, 70], above 25.
    assert speed.verdict == claims.HELD and "mean 50x over 5 runs" in speed.measured
    assert speed.interval == "[30, 70]"
    # t-a: fixed t worse than the ensemble (held); t-b straddles 0.5: the claim is not resolved.
    assert verdict["Ensembling diffusion times t ~ U(0.02, 0.98) beats a single t"] == claims.UNRESOLVED
    assert verdict["The baseline term reduces the variance of the policy gradient"] == claims.HELD
    # No difference detected, but a relative difference up to 0.3 is not ruled out.
    assert verdict["... without changing the expected gradient"] == claims.UNRESOLVED
    acc = next(r for r in rows if "accurate" in r.claim)
    assert acc.verdict == claims.HELD and "t = 0.1" in acc.interval  # the worst t within [0.02, 0.98]
    text = "\n".join(claims.markdown(rows))
    assert text.count("| **") == len(rows) == 7


def test_too_few_runs_resolve_nothing():
    two = est(0.9, math.nan, math.nan, 2, stats.NO_INTERVAL)
    rows = claims.build(
        "srpo", {"srpo": "srpo", "iql": "iql-awr"}, [], {"srpo > iql": two}, None, _scores(), None, 0.95
    )
    assert [r.verdict for r in rows] == [claims.UNRESOLVED]
    assert "fewer than 5 runs" in rows[0].interval
    assert np.isfinite(two.value)


def test_a_range_of_two_or_three_seeds_decides_nothing():
    """Two seeds far below the threshold are a description, not a CI: the claim stays unresolved."""
    ratio = {"value": 0.01, "low": 0.009, "high": 0.011, "kind": stats.RANGE}
    assert claims.ci_below(ratio, 1.0) == claims.UNRESOLVED
    assert claims.ci_below({**ratio, "kind": stats.STUDENT_T}, 1.0) == claims.HELD
    assert (
        claims.ci_below({"value": 0.01, "low": 0.009, "high": 0.011}, 1.0) == claims.HELD
    )  # one seed's draws
    scores = _scores()
    two = scores[scores["seed"] < 2]
    speed = next(
        r for r in claims.build("srpo", {"srpo": "srpo", "diff": "diffusion"}, [], {}, None, two, None, 0.95)
    )
    assert speed.verdict == claims.UNRESOLVED and speed.interval == "(range 30 to 40)"
