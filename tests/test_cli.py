"""The `srpo` command line."""

import json
import math
import subprocess
import sys

import pytest

from srpo_bench.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "srpo_bench.cli", *args], capture_output=True, text=True)


def test_help_documents_e6_options():
    out = run("--help")
    assert out.returncode == 0
    for option in (
        "policy.weighting",
        "policy.t_range",
        "policy.t_fixed",
        "policy.baseline",
        "policy.normalize_q_grad",
    ):
        assert option in out.stdout
    train_help = run("train", "--help")
    assert train_help.returncode == 0 and "--profile" in train_help.stdout and "--seed" in train_help.stdout


def test_tasks_lists_presets(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "antmaze-umaze" in out and "bandit-ring8" in out


def test_config_applies_overrides(capsys):
    assert (
        main(["config", "--task", "hopper-medium", "--profile", "paper", "--set", "policy.baseline=true"])
        == 0
    )
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["policy"]["baseline"] is True and cfg["policy"]["beta"] == 0.05


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--task", "nope", "--profile", "smoke"], "unknown task 'nope'"),
        (["train", "--task", "bandit-ring8", "--set", "policy.beta=0"], "beta must be > 0"),
        (["train", "--task", "bandit-ring8", "--set", "policy.beta"], "--set expects KEY=VALUE"),
        (["train", "--task", "hopper-medium", "--profile", "smoke"], "task 'hopper-medium' needs --dataset"),
        (["train", "--task", "bandit-ring8", "--dataset", "x.hdf5"], "generates its own data"),
        (["train", "--task", "bandit-ring8", "--compile"], "add --seeds"),
        (["train", "--task", "bandit-ring8", "--overlap"], "add --seeds"),
        (
            ["train", "--task", "bandit-ring8", "--set", "behavior.precision=fp16"],
            "cannot parse behavior.precision",
        ),
        (
            ["train", "--task", "bandit-ring8", "--set", "critic.precision=tf32"],
            "critic.precision=tf32 needs a CUDA",
        ),
    ],
)
def test_errors_exit_2_with_message(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_smoke_train_writes_checkpoints_and_metrics(tmp_path):
    # The README's one-minute example, at a fifth of its steps (the smoke profile's 500 per stage).
    fewer = ["--set", "behavior.steps=100", "--set", "critic.steps=100", "--set", "policy.steps=100"]
    out = run(
        "train",
        "--task",
        "bandit-ring8",
        "--profile",
        "smoke",
        *fewer,
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    for stage in ("behavior", "critic", "policy"):
        assert (tmp_path / f"{stage}.pt").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    bandit = metrics["bandit"]
    # the optimum is the surrogate's maximum, and the global optimum is one of the local ones
    assert bandit["policy_surrogate"] <= bandit["optimum_surrogate"] + 1e-6 * abs(bandit["optimum_surrogate"])
    assert bandit["distance_to_nearest_local_optimum"] <= bandit["distance_to_optimum"] + 1e-12
    assert bandit["distance_to_optimum"] == pytest.approx(
        math.dist(bandit["policy_action"], bandit["optimum_action"]), abs=1e-9
    )
    assert set(metrics["history"]) == {"behavior", "critic", "policy"}
    assert metrics["final"]["policy"]["step"] == 100


def test_train_with_seeds_trains_them_together_and_writes_each_seed_like_a_single_run(tmp_path, capsys):
    tiny = [
        "--set",
        "behavior.steps=20",
        "--set",
        "critic.steps=20",
        "--set",
        "policy.steps=20",
        "--set",
        "log_every=5",
        "--set",
        "checkpoint_every=10",
    ]
    base = ["train", "--task", "bandit-ring8", "--profile", "smoke", "--no-progress", *tiny]
    # all seeds share one dataset; a bandit generates it from the first seed, as the single run with seed 1
    # does
    assert main([*base, "--seeds", "1", "2", "--out", str(tmp_path / "batch")]) == 0
    assert main([*base, "--seed", "1", "--out", str(tmp_path / "single")]) == 0
    batched = json.loads((tmp_path / "batch/seed1/metrics.json").read_text())
    single = json.loads((tmp_path / "single/metrics.json").read_text())
    assert batched["seed"] == 1 and batched["wall_s"]["seeds_in_process"] == 2
    assert batched["final"]["policy"]["step"] == 20 and (tmp_path / "batch/seed2/policy.pt").exists()
    assert batched["bandit"]["distance_to_optimum"] == pytest.approx(
        single["bandit"]["distance_to_optimum"], rel=1e-3, abs=1e-4
    )
