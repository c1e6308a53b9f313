"""Report tables from hand-built run records: what each number is divided by, and what is printed."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from srpo_bench import report
from srpo_bench.eval import stats
from srpo_bench.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_latency_ratio_is_like_for_like_and_episodes_are_per_variant():
    """A focus variant's latency is divided by the reference's latency on the focus runs, not on all runs.

    SRPO takes 1 ms on the other tasks and 3 ms on the focus task; a focus variant taking 6 ms is
    2.0x SRPO like for like (6 / 3), not 6 / median(all SRPO runs) = 6.0.
    """
    p = load_params(ROOT / "params.yaml")
    k15 = {"method": "diffusion", "n_candidates": 32, "solver_steps": 15, "episodes": 5}
    p = dataclasses.replace(
        p, focus=dataclasses.replace(p.focus, variants={**p.focus.variants, "diffusion-n32-k15": k15})
    )
    focus_task = p.focus_tasks[0]
    rows = []
    for task in p.tasks:
        for seed in (0, 1):
            for v in p.variants_of(task):
                latency = {"srpo": 3.0 if task == focus_task else 1.0, "diffusion-n32-k15": 6.0}.get(v, 2.0)
                episodes = p.variant_spec(v).episodes
                rows.append(
                    {
                        "task": task,
                        "seed": seed,
                        "variant": v,
                        "score": 50.0,
                        "episodes": episodes,
                        "skipped": None,
                        "latency_ms": latency,
                        "latency_batch": 10,
                    }
                )
    scores = pd.DataFrame(rows)
    two_runs = stats.Estimate(50.0, np.nan, np.nan, 2, 0.95, stats.NO_INTERVAL)
    aggs = {v: {"iqm": two_runs} for v in p.variants}
    focus = {
        "tasks": [focus_task],
        "variants": ["srpo", *p.focus.variants],
        "aggregate": {v: {"mean": two_runs.to_dict()} for v in ["srpo", *p.focus.variants]},
    }
    table = report.latency_table(p, scores, aggs, focus)
    at = table.set_index(["variant", "tasks"])
    assert at.loc[("diffusion-n32-k15", "focus"), "x_reference"] == pytest.approx(2.0)
    assert at.loc[("srpo", "focus"), "x_reference"] == pytest.approx(1.0)
    # Over all tasks SRPO's median is 1 ms (every task but the focus one), so BC's 2 ms is 2.0x there.
    assert at.loc[("bc", "all"), "x_reference"] == pytest.approx(2.0)
    assert at.loc[("diffusion-n32-k15", "focus"), "episodes"] == [5]
    assert at.loc[("srpo", "all"), "episodes"] == [p.evaluation.episodes]
    text = "\n".join(report._latency_markdown(table, "srpo"))
    assert "nan" not in text  # two runs: the estimate alone, no "[nan, nan]"
    assert "| diffusion-n32-k15 | diffusion | focus | 2 | 5 | mean 50.0 | 6.000 | 2.0 |" in text


@pytest.mark.parametrize("n_seeds", [2, 5])
def test_training_curve_bands_follow_the_interval_rule(tmp_path, n_seeds, monkeypatch):
    """2 seeds: the band is their range (min to max); 5 seeds: mean ± t(0.975, 4) · s / sqrt(5)."""
    rng = np.random.default_rng(0)
    rows = [
        {"task": "hopper-medium", "seed": s, "stage": stage, "metric": metric, "step": step, "value": v}
        for stage, metric, _ in report.CURVES
        for s in range(n_seeds)
        for step, v in zip((10, 20), rng.normal(size=2))
    ]
    curves = pd.DataFrame(rows)
    figs = []
    save = report.artifacts.save_figure
    monkeypatch.setattr(
        report.artifacts, "save_figure", lambda fig, path: (figs.append(fig), save(fig, path))
    )
    monkeypatch.setattr(report.plt, "close", lambda fig: None)
    report.plot_learning_curves(curves, tmp_path / "c.png", 0.95)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    expected = "range of the 2 seeds" if n_seeds == 2 else "95% Student-t bands over 5 seeds"
    assert expected in figs[0]._suptitle.get_text()
    # The band of the first panel (behavior loss) at step 10, against the hand formula.
    x = curves[(curves["stage"] == "behavior") & (curves["step"] == 10)]["value"].to_numpy()
    if n_seeds == 2:
        low, high = x.min(), x.max()
    else:
        half = 2.776445105 * x.std(ddof=1) / np.sqrt(5)  # t(0.975, 4) = 2.7764
        low, high = x.mean() - half, x.mean() + half
    verts = figs[0].axes[0].collections[0].get_paths()[0].vertices
    at10 = verts[np.isclose(verts[:, 0], 10)][:, 1]
    assert at10.min() == pytest.approx(low) and at10.max() == pytest.approx(high)


def test_protocol_deviations_list_what_differs_from_the_paper_and_nothing_else():
    paper = load_params(ROOT / "pipelines/paper/params.yaml")
    # The paper profile trains at the paper's settings and evaluates as the authors do: only the data differs.
    assert report.protocol_deviations(paper, generated=False) == []
    assert [k for k, _, _ in report.protocol_deviations(paper, generated=True)] == ["datasets"]
    p = load_params(ROOT / "params.yaml")
    rows = {k: (a, b) for k, a, b in report.protocol_deviations(p, False)}
    width = p.train.overrides.get("behavior.width")
    if width is not None and int(width) != 256:  # the paper's residual width is 256
        assert rows["behavior.width"] == ("256", str(width))
    assert rows["behavior.steps"][0] == "2,000,000" and rows["policy.steps"][0] == "1,000,000"
    assert "critic.batch_size" not in rows  # 256 in both
