"""The DVC pipeline end to end, smoke profile, in a scratch copy of the repository.

The default test runs the pipeline once and checks the report, then checks that a second
`dvc repro` does nothing. The slow test also changes one seed and checks that only that
seed's stages (and the report) run again.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from srpo import artifacts
from srpo.config import make_config
from srpo_bench.params import load_params
from srpo_bench.pipeline import caching
from srpo_bench.pipeline.caching import (
    claim_for_current_code,
    trained_earlier,
    training_code_fingerprint,
    write_stage_metrics,
)
from srpo_bench.pipeline.cli import main as pipeline_main
from tests.test_train import tiny_data

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "pipelines/smoke/dvc.yaml"


def _copy_repo(dst: Path) -> Path:
    """The working tree as git sees it (tracked and new files, nothing ignored), symlinks kept."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def _dvc(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(?:[^']*:)?([^']+)'", output))


# The smoke profile cut down for the test: the same data, every stage, table and figure, fewer
# training steps, evaluation episodes and validation draws. `make smoke` runs the real profile.
TEST_SIZES = {
    "generation": {"profile": "tiny"},  # seconds of SAC instead of the smoke profile's minute
    "train": {
        "overrides": {
            "behavior.steps": 60,
            "critic.steps": 80,
            "policy.steps": 60,
            "log_every": 20,
            "checkpoint_every": 40,
        }
    },
    "validation": {
        "bandit_overrides": {"behavior.steps": 60, "policy.steps": 60},
        "score_accuracy": {"n_train": 1000, "n_heldout": 256, "draws_per_bin": 500},
        "gradient_variance": {"n_samples": 128, "bootstrap_reps": 50},
        "diagnostics": {"critic_points": 2, "n_states": 128},
    },
    # The evaluation curve at two snapshots (policy steps 30 and 60) of one episode each.
    "evaluation": {"episodes": 2, "num_envs": 2, "every": 30, "curve_episodes": 1},
}


def _shrink(params: Path) -> None:
    p = yaml.safe_load(params.read_text())
    for section, values in TEST_SIZES.items():
        for key, value in values.items():
            p[section][key] = {**p[section][key], **value} if isinstance(value, dict) else value
    p["threads"] = 1  # each stage on one core: the test suite's other worker has the other
    params.write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    repo = _copy_repo(tmp_path_factory.mktemp("repo"))
    _shrink(repo / "pipelines/smoke/params.yaml")
    out = _dvc(repo, "repro", SMOKE)
    return repo, out


def test_smoke_pipeline_writes_the_report_with_every_table_and_figure(smoke_repo):
    repo, out = smoke_repo
    assert {
        "datasets@hopper",
        "behavior@hopper-medium",
        "critic@hopper-medium",
        "policy@hopper-medium-bc",
        "policy@hopper-medium-iql-awr",
        "evaluate@hopper-medium-1-diffusion-n32-k5",
        "focus_policy@hopper-medium-srpo-baseline",
        "focus_evaluate@hopper-medium-0-t-fixed-0p3",
        "evaluate@hopper-medium-0-srpo",
        "diagnose@hopper-medium",
        "report",
    } <= _ran(out)
    rep = repo / "reports/smoke"
    text = (rep / "report.md").read_text()
    for section in (
        "## The paper's claims",
        "## Per-task scores",
        "## Aggregate scores",
        "### Probability of improvement",
        "## Figures",
        "## Focus variants",
        "## Action-selection latency vs score",
        "## Datasets",
        "## Run metadata",
        "## Diagnostics: critic, support, extraction",
        "**hopper-medium.** Critic (80 steps, held-out episodes)",
        "paper SRPO (D4RL)",
        "not** comparable",
    ):
        assert section in text, section
    for fig in (
        "learning_curves",
        "performance_profiles",
        "aggregate_intervals",
        "latency_vs_score",
        "evaluation_curves",
    ):
        assert (rep / "figures" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{fig}.png" in text
    metrics = json.loads((rep / "metrics.json").read_text())
    assert metrics["n_runs"] == 2 and metrics["n_tasks"] == 1
    iqm = metrics["aggregate"]["srpo"]["iqm"]
    # Two runs per task support no aggregate interval: the estimate stands alone, and says so.
    assert iqm["kind"] == "none" and iqm["low"] is None and iqm["high"] is None and iqm["n_runs"] == 2
    assert "without intervals" in text and "(range " in text
    assert {"srpo > bc", "srpo > iql-awr", "srpo > diffusion-n32-k5"} == set(
        metrics["probability_of_improvement"]
    )
    assert set(metrics["focus"]["poi"]) == {"srpo-baseline", "t-fixed-0p3"}
    lat = {(r["variant"], r["tasks"]): r["latency_ms"] for r in metrics["latency_vs_score"]}
    assert all(v > 0 for v in lat.values()) and ("t-fixed-0p3", "focus") in lat
    assert (rep / "plots" / "performance_profile.csv").exists()
    # The tables use the final evaluation; the curve is the snapshots', seeded apart from it.
    assert "## Evaluation curves" in text and "The tables use the final evaluation" in text
    ev = json.loads((repo / "runs/smoke/hopper-medium/evaluation/srpo/seed1.json").read_text())
    assert ev["env_id"] == "Hopper-v5" and ev["env_version"] == "v5" and ev["policy_step"] == 60
    assert [(c["step"], c["episodes"]) for c in ev["curve"]] == [(30, 1), (60, 1)]
    assert ev["seeds"] == [101000, 101001]  # final: seed + 1000 S + i; the curve's are apart from them
    assert [c["seed"] for c in ev["curve"]] == [1_101_000, 1_101_000]
    assert {(f["task"], f["variant"]) for f in metrics["evaluation_curves"]} >= {("hopper-medium", "srpo")}
    diffusion = json.loads(
        (repo / "runs/smoke/hopper-medium/evaluation/diffusion-n32-k5/seed0.json").read_text()
    )
    assert diffusion["curve"] == []  # it trains nothing, so it has no snapshots
    diag = metrics["diagnostics"]["tasks"]["hopper-medium"]
    assert diag["n_runs"] == 2 and set(diag["policies"]) == {
        "srpo",
        "bc",
        "iql-awr",
        "srpo-baseline",
        "t-fixed-0p3",
    }
    assert [c["step"] for c in diag["critic_over_training"]] == [40, 80]
    assert (
        diag["critic"]["q_spearman"]["kind"] == "range" and metrics["diagnostics"]["bandits"]["bandit-ring8"]
    )
    shown = _dvc(repo, "metrics", "show", "--json")
    assert "reports/smoke/metrics.json" in shown


def test_second_repro_is_a_no_op(smoke_repo):
    repo, _ = smoke_repo
    out = _dvc(repo, "repro", SMOKE)
    assert not _ran(out), out


@pytest.mark.slow
def test_replacing_a_seed_trains_only_the_new_seed_and_drops_the_old_one(smoke_repo):
    repo, _ = smoke_repo
    run = repo / "runs/smoke/hopper-medium"
    kept = {
        f: (run / f).read_bytes()
        for f in ("behavior/seed0/behavior.pt", "critic/seed0/critic.pt", "policy/srpo/seed0/policy.pt")
    }
    params_path = repo / "pipelines/smoke/params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["seeds"] = [0, 2]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(_dvc(repo, "repro", SMOKE))
    assert {
        "behavior@hopper-medium",
        "critic@hopper-medium",
        "policy@hopper-medium-srpo",
        "evaluate@hopper-medium-2-srpo",
        "score_dataset@hopper-medium-2",
        "report",
    } <= ran, ran
    assert "score_dataset@hopper-medium-0" not in ran  # it trains its own model: untouched by the others
    for f, data in kept.items():
        assert (run / f).read_bytes() == data, f"{f} was retrained"
    assert (run / "policy/srpo/seed2/policy.pt").exists() and not (run / "behavior/seed1").exists()


def test_bad_params_are_refused_before_any_work(tmp_path, capsys):
    good = yaml.safe_load((ROOT / "pipelines/smoke/params.yaml").read_text())
    cases = {
        "unknown task": {**good, "tasks": ["hopper-mediocre"]},
        "tasks must be distinct": {**good, "tasks": ["hopper-medium", "hopper-medium"]},
        "their environment is not in envs": {**good, "tasks": ["hopper-medium", "walker2d-medium"]},
        "reference_variant": {**good, "report": {**good["report"], "reference_variant": "nope"}},
        "lacks key": {k: v for k, v in good.items() if k != "seeds"},
        "unknown key": {**good, "sedes": [0]},
        "distinct integers": {**good, "seeds": [0, 0]},
        "unknown method": {**good, "variants": {**good["variants"], "x": {"method": "cql"}}},
        "apply to baselines only": {**good, "variants": {**good["variants"], "x": {"n_candidates": 4}}},
        "may not contain": {**good, "variants": {**good["variants"], "t0.3": {"policy.t_fixed": 0.3}}},
        "n_candidates and solver_steps": {
            **good,
            "variants": {**good["variants"], "x": {"method": "diffusion", "solver_steps": 0}},
        },
        "not among the tasks": {**good, "focus": {**good["focus"], "tasks": ["hopper-medium-expert"]}},
        "appear in variants and focus": {
            **good,
            "focus": {**good["focus"], "variants": {"bc": {"method": "bc"}}},
        },
        "compile must be true or false": {**good, "compile": "yes"},
        "policy.precision=tf32 needs a CUDA device": {
            **good,
            "train": {**good["train"], "overrides": {"policy.precision": "tf32"}},
        },
        "cannot parse critic.precision": {
            **good,
            "train": {**good["train"], "overrides": {"critic.precision": "fp8"}},
        },
    }
    for message, params in cases.items():
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        with pytest.raises(ValueError, match=message):
            load_params(path)
    assert pipeline_main(["report", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_variants_focus_and_beta_scale_compose_the_run_config():
    p = load_params(ROOT / "params.yaml")
    focus_task = p.focus_tasks[0]
    other = next(t for t in p.tasks if t not in p.focus_tasks)
    assert set(p.variants_of(other)) == set(p.variants)
    assert set(p.variants_of(focus_task)) == set(p.variants) | set(p.focus.variants)
    base = p.run_config(focus_task, 0, "srpo")
    assert p.run_config(focus_task, 0, "beta-x4").policy.beta == pytest.approx(4 * base.policy.beta)
    assert p.run_config(focus_task, 0, "t-fixed-0p7").policy.t_fixed == 0.7
    assert p.run_config(focus_task, 0, "srpo-baseline").policy.baseline is True
    assert p.run_config(focus_task, 0, "weighting-one").policy.weighting == "one"
    # Baseline knobs and evaluation episodes are not RunConfig overrides.
    spec = p.variant_spec("diffusion-n32-k5")
    assert spec.method == "diffusion" and spec.baseline.n_candidates == 32 and spec.baseline.solver_steps == 5
    assert spec.overrides == p.variant_spec("srpo").overrides == {} and spec.episodes == 5
    assert p.run_config(other, 1, "bc") == p.run_config(other, 1, "srpo")
    with pytest.raises(ValueError, match="unknown variant"):
        p.variant_spec("nope")


def test_a_checkpoint_made_by_other_training_code_is_retrained_and_one_made_by_this_code_resumes(tmp_path):
    code = training_code_fingerprint()
    assert code == training_code_fingerprint() and len(code) == 16
    out = tmp_path / "seed0"
    out.mkdir()
    (out / "behavior.pt").write_bytes(b"made before code.json existed")
    claim_for_current_code(out, "behavior.pt", code)
    assert not (out / "behavior.pt").exists()  # unknown maker: retrain
    (out / "behavior.pt").write_bytes(b"this code's (killed or finished) run")
    claim_for_current_code(out, "behavior.pt", code)
    assert (out / "behavior.pt").exists()  # same code: resume or reuse
    (out / "behavior.pt.next").write_bytes(b"half-committed")
    claim_for_current_code(out, "behavior.pt", "another-version")
    assert not (out / "behavior.pt").exists() and not (out / "behavior.pt.next").exists()
    assert json.loads((out / "code.json").read_text()) == {"training_code": "another-version"}
    (out / "code.json").write_text("{not json")  # a corrupt marker counts as unknown code
    (out / "behavior.pt").write_bytes(b"x")
    claim_for_current_code(out, "behavior.pt", code)
    assert not (out / "behavior.pt").exists() and json.loads((out / "code.json").read_text()) == {
        "training_code": code
    }


def test_validation_scratch_is_kept_for_a_resume_and_emptied_when_code_or_params_change(
    tmp_path, monkeypatch
):

    p = dataclasses.replace(load_params(ROOT / "pipelines/smoke/params.yaml"), run_dir="runs/x")
    monkeypatch.chdir(tmp_path)  # the pipeline's paths are relative to the repository root, its working dir
    work = caching.validation_scratch(p, "bandits", "ring8", "seed0")
    assert work.is_dir() and work.parent.parent.parent == p.validation_dir / "work"
    (work / "behavior.pt").write_bytes(b"a killed run's checkpoint")
    assert (caching.validation_scratch(p, "bandits", "ring8", "seed0") / "behavior.pt").exists()  # resumes
    sc = dataclasses.replace(p.validation.score_accuracy, n_train=7)
    changed = dataclasses.replace(p, validation=dataclasses.replace(p.validation, score_accuracy=sc))
    assert not (caching.validation_scratch(changed, "bandits", "ring8", "seed0") / "behavior.pt").exists()
    (work / "behavior.pt").write_bytes(b"x")
    monkeypatch.setattr(caching, "training_code_fingerprint", lambda *packages: "other code")
    assert not (caching.validation_scratch(changed, "bandits", "ring8", "seed0") / "behavior.pt").exists()


def test_a_reused_seed_keeps_the_metrics_of_the_run_that_trained_it(tmp_path):
    """Adding a seed reuses the finished ones: their wall time must stay the training's, not the loading's."""
    cfg, data, out = make_config("hopper-medium", "smoke"), tiny_data(), tmp_path / "seed0"
    out.mkdir()
    assert not trained_earlier(out, "critic", cfg, data)  # nothing there
    artifacts.save_torch(out / "critic.pt", {"done": False})
    write_stage_metrics(out, "critic", "hopper-medium", 0, None, cfg, data, [], 120.0, 3)
    assert not trained_earlier(out, "critic", cfg, data)  # killed run: it resumes and rewrites its metrics
    artifacts.save_torch(out / "critic.pt", {"done": True})
    assert trained_earlier(out, "critic", cfg, data)
    assert json.loads((out / "critic_metrics.json").read_text())["wall_s"] == 40.0
    other = make_config("hopper-medium", "smoke", overrides={"critic.steps": "7"})
    assert not trained_earlier(out, "critic", other, data)  # another config: retrained, new metrics
    assert not trained_earlier(out, "critic", cfg, tiny_data(seed=1))  # another dataset
    assert not trained_earlier(out, "critic", cfg, data, baseline={"awr": 1})  # other baseline knobs
    (out / "critic_metrics.json").write_text("{corrupt")
    assert not trained_earlier(out, "critic", cfg, data)


@pytest.mark.slow
def test_changing_the_training_code_retrains_instead_of_reusing_finished_checkpoints(smoke_repo):
    repo, _ = smoke_repo
    ckpt = repo / "runs/smoke/hopper-medium/critic/seed0/critic.pt"
    before = ckpt.stat().st_mtime_ns
    with open(repo / "srpo/critic.py", "a") as f:
        f.write("\n# a change to the training code\n")
    ran = _ran(_dvc(repo, "repro", SMOKE))
    assert "critic@hopper-medium" in ran, ran
    assert ckpt.stat().st_mtime_ns > before, "the finished checkpoint was reused, not retrained"
