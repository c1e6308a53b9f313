"""The paper's claims as rows: claim | what we measured | interval | verdict.

Each verdict is decided by a stated rule from an estimate and its interval, never by hand:

- ``held``: the interval lies on the claim's side of the threshold;
- ``did not hold``: it lies on the other side;
- ``not resolved``: it straddles the threshold, or the runs support no confidence interval
  (a range of 2-3 seeds describes them; it is not a CI, so it decides nothing).

The claims (method §9): SRPO above IQL; SRPO competitive with diffusion sampling; action
selection far faster than diffusion sampling (> 25x); the t-ensemble beats a single t; the
baseline term lowers the gradient's variance without moving its mean; the learned score is
accurate on held-out data across diffusion times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from srpo_bench.eval import stats

HELD, NOT_HELD, UNRESOLVED = "held", "did not hold", "not resolved"
SPEEDUP_CLAIMED = 25.0  # the paper: "more than 25x faster" action sampling than diffusion methods
SCORE_ERROR_TOLERANCE = 0.1  # "accurate": relative score error below 10% at every t in SRPO's range
MEAN_SHIFT_TOLERANCE = 0.1  # "unchanged": ||E(g_on - g_off)|| below 10% of ||E g_off||
SRPO_T_RANGE = (0.02, 0.98)  # t ~ U(0.02, 0.98) in the policy loss (E6)


@dataclass(frozen=True)
class Claim:
    claim: str
    measured: str
    interval: str
    verdict: str
    rule: str


def above(low: float, high: float, threshold: float) -> str:
    """``held`` if the whole interval is above ``threshold``, ``did not hold`` if below, else unresolved."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return UNRESOLVED
    if low > threshold:
        return HELD
    if high < threshold:
        return NOT_HELD
    return UNRESOLVED


def below(low: float, high: float, threshold: float) -> str:
    """The mirror of :func:`above`: ``held`` if the whole interval is below ``threshold``."""
    return {HELD: NOT_HELD, NOT_HELD: HELD}.get(above(low, high, threshold), UNRESOLVED)


def is_ci(e: Mapping[str, Any] | stats.Estimate) -> bool:
    """Whether an estimate's bounds are a confidence interval: a Student-t or bootstrap CI over
    runs, or (one seed, no ``kind``) a bootstrap over that run's draws; not a range, not none."""
    kind = e.kind if isinstance(e, stats.Estimate) else e.get("kind")
    return kind in (None, stats.STUDENT_T, stats.STRATIFIED_BOOTSTRAP)


def ci_below(e: Mapping[str, Any], threshold: float) -> str:
    """:func:`below` on an estimate dict, unresolved unless its bounds are a CI."""
    low, high = e.get("low"), e.get("high")
    if not is_ci(e) or low is None or high is None:
        return UNRESOLVED
    return below(low, high, threshold)


def competitive(p: stats.Estimate) -> str:
    """P(SRPO > other) with an interval: below 0.5 throughout is worse; otherwise competitive."""
    if not p.is_confidence_interval:
        return UNRESOLVED
    return NOT_HELD if p.high < 0.5 else HELD


def all_of(verdicts: Iterable[str]) -> str:
    """A claim over several comparisons: held if every one held, not held if any did not."""
    vs = list(verdicts)
    if not vs:
        return UNRESOLVED
    if NOT_HELD in vs:
        return NOT_HELD
    return HELD if all(v == HELD for v in vs) else UNRESOLVED


def _poi_row(claim: str, label: str, p: stats.Estimate, verdict: str, rule: str) -> Claim:
    measured = f"{label}: P(X > Y) = {p.value:.2f} over {p.n_runs} runs per task"
    interval = p.interval_text(2) or "none (fewer than 5 runs per task)"
    return Claim(claim, measured, interval, verdict if p.is_confidence_interval else UNRESOLVED, rule)


def latency_ratios(scores: pd.DataFrame, variant: str, reference: str) -> np.ndarray:
    """Per run (task, seed) that both evaluated: ``variant``'s median latency over ``reference``'s."""
    ok = scores[scores["skipped"].isna()]
    wide = ok.pivot_table(index=["task", "seed"], columns="variant", values="latency_ms", aggfunc="first")
    if variant not in wide or reference not in wide:
        return np.array([])
    r = (wide[variant] / wide[reference]).to_numpy(dtype=np.float64)
    return r[np.isfinite(r)]


def build(
    reference: str,
    methods: Mapping[str, str],
    fixed_t: Sequence[str],
    poi: Mapping[str, stats.Estimate],
    focus: Mapping[str, Any] | None,
    scores: pd.DataFrame,
    validation: Mapping[str, Any] | None,
    confidence: float,
) -> list[Claim]:
    """The claims table from the report's own estimates (nothing here is measured anew).

    ``methods``: variant -> method for every variant run; ``fixed_t``: the focus variants that
    fix the diffusion time (policy.t_fixed); ``poi``: the main table's
    ``"<reference> > <variant>"`` estimates; ``focus``: :func:`report.focus_study`'s dict;
    ``validation``: the validation summaries (score accuracy, gradient variance) or None.
    """
    rows: list[Claim] = []
    main = [v for v in methods if f"{reference} > {v}" in poi]
    for v in main:
        p = poi[f"{reference} > {v}"]
        if methods[v] == "iql-awr":
            rows.append(
                _poi_row(
                    "SRPO scores above IQL",
                    f"{reference} vs {v}",
                    p,
                    above(p.low, p.high, 0.5),
                    "held if the CI of P(SRPO > IQL-AWR) lies above 0.5",
                )
            )
        elif methods[v] == "diffusion":
            rows.append(
                _poi_row(
                    "SRPO is competitive with diffusion-sampling policies",
                    f"{reference} vs {v} (best of N behavior samples by Q)",
                    p,
                    competitive(p),
                    "did not hold if the CI of P(SRPO > diffusion) lies below 0.5",
                )
            )
    diffusion = [v for v, m in methods.items() if m == "diffusion"]
    for v in diffusion:
        r = latency_ratios(scores, v, reference)
        if len(r) == 0:
            continue
        e, _ = stats.task_estimate(r, confidence)
        rows.append(
            Claim(
                f"SRPO selects actions more than {SPEEDUP_CLAIMED:g}x faster than diffusion sampling",
                f"latency {v} / {reference}, per run (same task and seed): mean {e.value:.0f}x over "
                f"{len(r)} runs",
                e.interval_text(0) or "none (one run)",
                above(e.low, e.high, SPEEDUP_CLAIMED) if is_ci(e) else UNRESOLVED,
                f"held if the CI of the mean ratio lies above {SPEEDUP_CLAIMED:g}",
            )
        )
    if focus and focus.get("poi"):
        fixed = {v: stats.Estimate.from_dict(e) for v, e in focus["poi"].items() if v in fixed_t}
        if fixed:
            n = min(e.n_runs for e in fixed.values())
            texts = "; ".join(f"{v} {e.value:.2f} {e.interval_text(2)}".rstrip() for v, e in fixed.items())
            ok = all(e.is_confidence_interval for e in fixed.values())
            rows.append(
                Claim(
                    "Ensembling diffusion times t ~ U(0.02, 0.98) beats a single t",
                    f"P(fixed t > {reference}) on {', '.join(focus['tasks'])}, {n} runs per task",
                    texts if ok else f"{texts} (no intervals: fewer than 5 runs)",
                    all_of(below(e.low, e.high, 0.5) for e in fixed.values()) if ok else UNRESOLVED,
                    "held if every fixed t's CI of P(fixed > ensemble) lies below 0.5",
                )
            )
    if validation:
        rows += _gradient_rows(validation.get("gradient_variance"), confidence)
        rows += _score_rows(validation.get("score_accuracy"))
    return rows


def _final_baseline(grad: Mapping[str, Any] | None, weighting: str = "sigma2") -> dict[str, dict]:
    """Target -> the baseline comparison at its last checkpoint, for the paper's weighting."""
    if not grad:
        return {}
    out = {}
    for target, tg in grad["targets"].items():
        last = tg["checkpoints"][-1]
        if weighting in last["baseline"]:
            out[target] = {**last["baseline"][weighting], "step": last["step"]}
    return out


def _gradient_rows(grad: Mapping[str, Any] | None, confidence: float) -> list[Claim]:
    last = _final_baseline(grad)
    if not last:
        return []
    ratios = {t: b["variance_ratio"] for t, b in last.items()}
    rows = [
        Claim(
            "The baseline term reduces the variance of the policy gradient",
            "tr Cov g_on / tr Cov g_off at the last checkpoint (weighting sigma2): "
            + "; ".join(f"{t} {r['value']:.3g}" for t, r in ratios.items()),
            "; ".join(f"{t} {stats.format_sig(r)}" for t, r in ratios.items()),
            all_of(ci_below(r, 1.0) for r in ratios.values()),
            "held if every target's CI of the ratio lies below 1",
        )
    ]
    rel = {t: b["relative_mean_diff"] for t, b in last.items()}
    differ = [t for t, b in last.items() if not b["agree"]]
    if differ:
        verdict = NOT_HELD
    else:
        verdict = all_of(ci_below(r, MEAN_SHIFT_TOLERANCE) for r in rel.values())
    rows.append(
        Claim(
            "... without changing the expected gradient",
            f"sign-flip test of E(g_on - g_off) = 0 (level {1 - confidence:.2g}): "
            + ("differ at " + ", ".join(differ) if differ else "no difference detected")
            + "; ‖E(g_on - g_off)‖ / ‖E g_off‖",
            "; ".join(f"{t} {stats.format_sig(r)}" for t, r in rel.items()),
            verdict,
            f"did not hold if the test rejects; held if every CI of the relative difference lies "
            f"below {MEAN_SHIFT_TOLERANCE:g}; else not resolved (a test that detects nothing is not "
            "evidence of no difference)",
        )
    )
    return rows


def _score_rows(score: Mapping[str, Any] | None) -> list[Claim]:
    bandits = (score or {}).get("bandit") or {}
    if not bandits:
        return []
    lo, hi = SRPO_T_RANGE
    cells, verdicts, n = [], [], []
    for target, s in bandits.items():
        worst = None
        for t, e in zip(s["t"], s["rel_error"]):
            if e is None or not (lo <= t <= hi):
                continue
            verdicts.append(ci_below(e, SCORE_ERROR_TOLERANCE))
            if worst is None or e["value"] > worst[1]["value"]:
                worst = (t, e)
        n.append(s["n_runs"])
        if worst is not None:
            cells.append(f"{target} t = {worst[0]:g}: {stats.format_sig(worst[1])}")
    return [
        Claim(
            "The behavior model's score is accurate on held-out data across noise levels",
            f"exact-score bandits, relative score error on fresh actions, worst t in [{lo}, {hi}], "
            f"{min(n)} seeds",
            "; ".join(cells),
            all_of(verdicts),
            f"held if at every t in [{lo}, {hi}] the CI of the relative error lies below "
            f"{SCORE_ERROR_TOLERANCE:g}",
        )
    ]


def markdown(rows: Sequence[Claim]) -> list[str]:
    """The report's claims section."""
    L = [
        "## The paper's claims",
        "",
        "Each verdict follows from the stated rule and the interval beside it: **held** (the confidence "
        "interval is on the claim's side), **did not hold** (on the other side), **not resolved** (it "
        "straddles the threshold, or the runs support no confidence interval: a range of 2-3 seeds "
        "describes them but decides nothing).",
        "",
        "| claim | what we measured | interval | verdict | rule |",
        "|---|---|---|---|---|",
    ]
    if not rows:
        L += ["| — | this profile runs none of the comparisons the claims need | | | |"]
    for r in rows:
        L.append(f"| {r.claim} | {r.measured} | {r.interval} | **{r.verdict}** | {r.rule} |")
    return L + [""]
