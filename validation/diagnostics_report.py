"""The diagnostics summarized over seeds, and the report's section: a table and one paragraph per task.

Every number is a mean over seeds with the interval rule of :func:`srpo_bench.eval.stats.task_estimate`
(Student-t at >= 4 runs, the range at 2-3, none at 1). Every sentence of a paragraph is chosen by
the numbers against the thresholds below, which are stated in the report, so a reader can disagree
with a threshold and still read the numbers.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from srpo_bench.eval import stats

# Rank correlation of Q with the held-out return: above GOOD the critic orders states well, below POOR
# it does not.
SPEARMAN_GOOD, SPEARMAN_POOR = 0.8, 0.5
# |bias| / std of the returns below which a critic counts as unbiased.
BIAS_SMALL = 0.1
# Denoising error at pi(s) over that at the data's action (lowest t of the grid): up to TYPICAL the
# behavior model finds the policy's actions as typical as the data's; above OFF_SUPPORT, off the data.
RATIO_TYPICAL, RATIO_OFF_SUPPORT = 1.5, 3.0
# Distance to the nearest data action over the data's own spacing: above FAR, the paragraph says that the
# data's actions vary little between episodes (a near-deterministic behavior policy makes the spacing tiny,
# so a ratio alone does not say the policy left the data; the denoising ratio does).
DISTANCE_FAR = 2.0


def _estimate(values: Sequence[float | None], confidence: float) -> dict[str, Any] | None:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return None
    est, std = stats.task_estimate(x, confidence)
    d = {**est.to_dict(), "std": std}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _low(t_grid: Sequence[float]) -> int:
    """The smallest t of the grid: the least noise, where the model tells one action from another
    (at t ~ 0.5 the noise swamps the action and any action looks typical)."""
    return int(np.argmin(np.asarray(t_grid)))


def policy_scalars(d: dict[str, Any]) -> dict[str, float | None]:
    """The scalars of one :func:`.diagnose.diagnose_policy` result that the report shows."""
    m = _low(d["t_grid"])
    spacing = d["nn_distance_data"]
    return {
        "denoise_ratio_low": d["denoise_ratio"][m],
        "nn_distance_policy": d["nn_distance_policy"],
        "nn_distance_data": spacing,
        "distance_ratio": None if not spacing else d["nn_distance_policy"] / spacing,
        "q_term_norm": d["terms"]["q_term_norm"],
        "score_term_norm": d["terms"]["score_term_norm"],
        "cosine": d["terms"]["cosine"],
        "opposed_fraction": d["terms"]["opposed_fraction"],
        "advantage": d["q"]["advantage"],
        "better_fraction": d["q"]["better_fraction"],
    }


def critic_scalars(r: dict[str, Any]) -> dict[str, float | None]:
    h, run = r["critic_heldout"], r["run_critic_in_sample"]
    f, std = h["final"], h["return_std"]
    return {
        "q_bias": f["q"]["bias"],
        "q_bias_rel": f["q"]["bias"] / std if std > 0 else None,
        "q_pearson": f["q"]["pearson"],
        "q_spearman": f["q"]["spearman"],
        "v_bias": f["v"]["bias"],
        "v_spearman": f["v"]["spearman"],
        "drift": h["convergence"]["drift"],
        "converged": float(h["convergence"]["converged"]),
        "run_q_bias_rel": run["q"]["bias"] / run["return_std"] if run["return_std"] > 0 else None,
        "run_q_spearman": run["q"]["spearman"],
    }


def summarize(
    records: list[dict[str, Any]], bandit_records: list[dict[str, Any]], confidence: float
) -> dict[str, Any]:
    """Per task: critic scalars and each variant's final-policy scalars, mean over seeds; per policy
    snapshot step the same (seeds that have it); per bandit: the score's error at pi(s) vs at data."""
    out: dict[str, Any] = {"confidence": confidence, "tasks": {}, "bandits": {}}
    for task in sorted({r["task"] for r in records}):
        rs = sorted((r for r in records if r["task"] == task), key=lambda r: r["seed"])
        crit = [critic_scalars(r) for r in rs]
        cell: dict[str, Any] = {
            "n_runs": len(rs),
            "critic_steps": rs[0]["critic_heldout"]["critic_steps"],
            "critic": {k: _estimate([c[k] for c in crit], confidence) for k in crit[0]},
            "critic_over_training": [
                {
                    "step": chk["step"],
                    "q_bias": _estimate(
                        [r["critic_heldout"]["checks"][i]["q"]["bias"] for r in rs], confidence
                    ),
                    "q_spearman": _estimate(
                        [r["critic_heldout"]["checks"][i]["q"]["spearman"] for r in rs], confidence
                    ),
                }
                for i, chk in enumerate(rs[0]["critic_heldout"]["checks"])
            ],
            "t_grid": None,
            "policies": {},
        }
        for name in rs[0]["policies"]:
            finals = [policy_scalars(r["policies"][name]["final"]) for r in rs]
            cell["t_grid"] = rs[0]["policies"][name]["final"]["t_grid"]
            steps = sorted({s["step"] for r in rs for s in r["policies"][name]["snapshots"]})
            over = []
            for step in steps:
                snaps = [
                    policy_scalars(s)
                    for r in rs
                    for s in r["policies"][name]["snapshots"]
                    if s["step"] == step
                ]
                over.append(
                    {"step": step, **{k: _estimate([x[k] for x in snaps], confidence) for k in snaps[0]}}
                )
            cell["policies"][name] = {
                "final": {k: _estimate([f[k] for f in finals], confidence) for k in finals[0]},
                "snapshots": over,
            }
        out["tasks"][task] = cell
    for task in sorted({r["task"] for r in bandit_records}):
        rs = [r for r in bandit_records if r["task"] == task]
        m = len(rs[0]["t_grid"])
        out["bandits"][task] = {
            "n_runs": len(rs),
            "t_grid": rs[0]["t_grid"],
            "rel_error_policy": [
                _estimate([r["rel_error_policy"][i] for r in rs], confidence) for i in range(m)
            ],
            "rel_error_data": [_estimate([r["rel_error_data"][i] for r in rs], confidence) for i in range(m)],
        }
    return out


def _f(e: dict | None, digits: int = 2) -> str:
    if e is None:
        return "—"
    return stats.Estimate.from_dict(e).format(digits)


def _v(e: dict | None) -> float:
    return math.nan if e is None else float(e["value"])


def paragraph(task: str, cell: dict[str, Any], variant: str) -> str:
    """What each diagnostic says for one task, chosen by the numbers (module thresholds)."""
    c = cell["critic"]
    rho, rel, conv = _v(c["q_spearman"]), _v(c["q_bias_rel"]), _v(c["converged"])
    n = cell["n_runs"]
    if rho >= SPEARMAN_GOOD:
        order = f"orders held-out states well (Spearman {rho:.2f})"
    elif rho >= SPEARMAN_POOR:
        order = f"orders held-out states only partly (Spearman {rho:.2f})"
    else:
        order = f"does not order held-out states (Spearman {rho:.2f})"
    if math.isnan(rel):
        bias = "its bias could not be scaled (constant returns)"
    elif abs(rel) < BIAS_SMALL:
        bias = f"is nearly unbiased (bias {rel:+.2f} return std)"
    elif rel > 0:
        bias = f"over-estimates the return by {rel:.2f} return std"
    else:
        bias = f"under-estimates the return by {-rel:.2f} return std"
    conv_txt = (
        f"it converged in {round(conv * n)} of {n} runs"
        if not math.isnan(conv)
        else "its convergence is unknown"
    )
    parts = [
        f"**{task}.** Critic ({cell['critic_steps']} steps, held-out episodes): it {order} and {bias}; "
        f"{conv_txt}."
    ]
    pol = cell["policies"].get(variant)
    if pol is not None:
        f = pol["final"]
        ratio, dist = _v(f["denoise_ratio_low"]), _v(f["distance_ratio"])
        if ratio <= RATIO_TYPICAL:
            sup = "as typical for the behavior model as the data's own actions"
        elif ratio <= RATIO_OFF_SUPPORT:
            sup = "less typical for the behavior model than the data's actions"
        else:
            sup = "off the data for the behavior model"
        d_pi, d_data = _v(f["nn_distance_policy"]), _v(f["nn_distance_data"])
        dist_txt = f"; π(s) lies {d_pi:.3g} from the nearest data action at similar states" + (
            ""
            if math.isnan(dist)
            else f", {dist:.1f}× the distance between different episodes' actions there ({d_data:.3g}"
            + ("; the data's actions vary little between episodes)" if dist > DISTANCE_FAR else ")")
        )
        parts.append(
            f"`{variant}`'s actions are {sup} (denoising error {ratio:.2f}× the data's at t = "
            f"{cell['t_grid'][_low(cell['t_grid'])]}){dist_txt}."
        )
        qn, sn, cos = _v(f["q_term_norm"]), _v(f["score_term_norm"]), _v(f["cosine"])
        if qn > 2 * sn:
            dom = "the Q term dominates the E6 gradient"
        elif sn > 2 * qn:
            dom = "the score term dominates the E6 gradient"
        else:
            dom = "the Q and score terms of the E6 gradient are of one size"
        if cos > 0.2:
            way = "point the same way: the behavior model pulls where the critic pushes"
        elif cos < -0.2:
            way = "oppose each other: the score holds the policy back from where the critic pushes it"
        else:
            way = "are nearly orthogonal: the score does not act against the critic's push, nor with it"
        parts.append(
            f"At the final policy {dom} (norms {qn:.3g} vs {sn:.3g}); they {way} (cosine {cos:+.2f})."
        )
        adv, better = _v(f["advantage"]), _v(f["better_fraction"])
        parts.append(
            f"By the critic, Q(s, π(s)) − Q(s, a_data) = {adv:+.3g} "
            f"(better at {100 * better:.0f}% of states): "
            + (
                "the extraction claims an improvement over the data."
                if adv > 0
                else "the extraction does not improve on the data by the critic's own measure."
            )
        )
    return " ".join(parts)


def markdown(summary: dict[str, Any], variant: str) -> list[str]:
    """The report's Diagnostics section."""
    L = [
        "## Diagnostics: critic, support, extraction",
        "",
        "Per task, mean over runs with the range (2-3 runs) or the Student-t interval (>= 4 runs). "
        "**Critic**: a critic trained with the run's critic config on the training episodes (the "
        "score-accuracy split), against the discounted Monte Carlo return of the held-out episodes' own "
        "actions (rows whose return is complete); Q is the mean of the target heads; bias in return std. "
        "*Converged*: the share of runs whose held-out mean Q moved by at most the tolerance × its own "
        "scale, max(|mean Q|, std of Q), over the last interval between checks. *Run critic*: the run's own "
        "critic on all its data (in-sample). **Support**: the behavior model's denoising error (E4) at π(s) "
        "over that at the data's action, paired noise, at the lowest t of the grid; distance from π(s) to "
        "the nearest data action among the nearest dataset states, over the data's own spacing (the same "
        "for each data action among other episodes' rows: ≤ 1 is as close as another episode's action). "
        "**Extraction**: the E6 "
        "gradient's Q term β∇Q and score term −w(t)(ε_ψ − [ε]) at π(s), t and ε drawn as in training; "
        "Q(s, π(s)) − Q(s, a_data) by the run's critic.",
        "",
        "| task | Q bias (return std) | Q Spearman | V Spearman | converged | run critic: bias, Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for task, c in summary["tasks"].items():
        k = c["critic"]
        L.append(
            f"| {task} | {_f(k['q_bias_rel'])} | {_f(k['q_spearman'])} | {_f(k['v_spearman'])} | "
            f"{_f(k['converged'])} | {_f(k['run_q_bias_rel'])}, {_f(k['run_q_spearman'])} |"
        )
    L += [
        "",
        "| task | policy | denoise ratio | distance / spacing | ‖Q term‖ | ‖score term‖ | cosine | "
        "Q(π) − Q(data) | better |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, c in summary["tasks"].items():
        for name, pol in c["policies"].items():
            f = pol["final"]
            L.append(
                f"| {task} | {name} | {_f(f['denoise_ratio_low'])} | {_f(f['distance_ratio'])} | "
                f"{_f(f['q_term_norm'], 3)} | {_f(f['score_term_norm'], 3)} | {_f(f['cosine'])} | "
                f"{_f(f['advantage'], 3)} | {_f(f['better_fraction'])} |"
            )
    snap = [
        (task, name, s)
        for task, c in summary["tasks"].items()
        for name, pol in c["policies"].items()
        for s in pol["snapshots"]
    ]
    if snap:
        L += [
            "",
            "Over the policy's training (snapshots):",
            "",
            "| task | policy | step | denoise ratio | distance / spacing | cosine | Q(π) − Q(data) |",
            "|---|---|---|---|---|---|---|",
        ]
        L += [
            f"| {t} | {n} | {s['step']} | {_f(s['denoise_ratio_low'])} | {_f(s['distance_ratio'])} | "
            f"{_f(s['cosine'])} | {_f(s['advantage'], 3)} |"
            for t, n, s in snap
        ]
    if summary["bandits"]:
        L += [
            "",
            "Score at the policy's actions on the exact-score bandits: relative error ‖ε_ψ − ε*‖/‖ε*‖ of the "
            "learned score at α_t π(s) + σ_t ε against at α_t a_data + σ_t ε (same ε), per t; the policy is "
            "the bandit ablation's reference policy, extracted with the learned score and the exact Q.",
            "",
            "| bandit | t | error at π(s) | error at data | runs |",
            "|---|---|---|---|---|",
        ]
        for task, b in summary["bandits"].items():
            for i, t in enumerate(b["t_grid"]):
                L.append(
                    f"| {task} | {t} | {_f(b['rel_error_policy'][i], 3)} | {_f(b['rel_error_data'][i], 3)} | "
                    f"{b['n_runs']} |"
                )
    L += ["", "What each diagnostic says, per task (thresholds in validation/diagnostics_report.py):", ""]
    for task, c in summary["tasks"].items():
        L += [paragraph(task, c, variant), ""]
    return L
