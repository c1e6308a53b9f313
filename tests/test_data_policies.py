"""The data-generating SAC run: exact resume, reproducibility, selection, export, and its params."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from srpo_bench.eval import data_policies
from srpo_bench.eval.data_policies import DataPolicyParams, PolicyArtifact
from srpo_bench.eval.sac import SACConfig, SACRun

TINY = SACConfig(
    env_steps=600,
    start_steps=100,
    batch_size=32,
    hidden=(32, 32),
    snapshot_every=100,
    eval_episodes=2,
    checkpoint_every=100,
    max_episode_steps=50,
)
REPO = Path(__file__).resolve().parents[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> SACRun:
    torch.set_num_threads(1)
    run = SACRun("Hopper-v5", TINY, 0, tmp_path_factory.mktemp("straight"))
    run.train(progress=False)
    return run


def test_same_seed_same_policy_and_a_raised_budget_continues_the_same_run(straight, tmp_path):
    # A run stopped at 300 steps, then given the full budget, resumes from its last checkpoint
    # (an episode end) and must end on the very weights of the run that was never stopped.
    short = SACRun("Hopper-v5", dataclasses.replace(TINY, env_steps=300), 0, tmp_path)
    short.train(progress=False)
    resumed = SACRun("Hopper-v5", TINY, 0, tmp_path)
    assert 0 < resumed.step <= 300, "the resumed run did not start from a checkpoint"
    resumed.train(progress=False)
    assert _same(_weights(straight.snapshot_path(600)), _weights(resumed.snapshot_path(600)))
    assert straight.record()["snapshots"] == resumed.record()["snapshots"]
    assert resumed.record()["pieces"] == 2 and resumed.record()["finished"]


def test_a_killed_process_resumes_to_the_same_policy(straight, tmp_path):
    params = {
        "data_policies": {
            "seed": 0,
            "env_steps": {"hopper": TINY.env_steps},
            "work_dir": str(tmp_path / "work"),
            "out_dir": str(tmp_path / "out"),
            "sac": {**dataclasses.asdict(TINY), "hidden": list(TINY.hidden)},
        }
    }
    params["data_policies"]["sac"].pop("env_steps")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "srpo_bench.eval.data_policies",
        "--params",
        str(path),
        "--env",
        "hopper",
        "--train-only",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = tmp_path / "work" / "hopper-seed0" / "checkpoint" / "state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "600 SAC steps" in done.stdout and "2 piece(s)" in done.stdout
    snapshot = tmp_path / "work" / "hopper-seed0" / "snapshots" / "00000600.pt"
    assert _same(_weights(straight.snapshot_path(600)), _weights(snapshot))


def test_select_and_export_write_a_small_artifact_that_loads_back(straight, tmp_path):
    params = DataPolicyParams(
        env_steps={"hopper": TINY.env_steps},
        select_episodes=3,
        expert_candidates=2,
        medium_candidates=3,
        work_dir=str(tmp_path),
        sac=TINY,
    )
    choice = data_policies.select(straight, params)
    snaps = {s["env_step"]: s["eval_return"] for s in straight.record()["snapshots"]}
    # The expert is one of the two best snapshots by training-time evaluation, chosen by the re-measurement.
    best_two = sorted(snaps, key=lambda k: -snaps[k])[:2]
    trials = {t["env_step"]: t["mean"] for t in choice["expert_trials"]}
    assert set(trials) == set(best_two)
    assert choice["expert"]["env_step"] == max(trials, key=trials.get)
    assert choice["medium"]["env_step"] <= choice["expert"]["env_step"]
    assert choice["expert"]["episodes"] == 3
    out = data_policies.export("hopper", straight, params, choice, tmp_path / "out")
    artifact = PolicyArtifact.load(out)
    assert _same(
        artifact.actor("expert").state_dict(), _weights(straight.snapshot_path(choice["expert"]["env_step"]))
    )
    medium_step = choice["medium"]["env_step"]
    # Every window that acted before the medium snapshot has its policy, in float16.
    assert artifact.replay_steps == list(range(TINY.start_steps, medium_step, TINY.snapshot_every))
    for step in artifact.replay_steps:
        original = _weights(straight.snapshot_path(step))
        stored = artifact.actor(f"replay/{step:08d}").state_dict()
        assert all(torch.equal(stored[k], original[k].half().float()) for k in original)
    card = artifact.card
    assert card["replay"]["env_steps"] == medium_step
    assert card["medium_over_expert"] == pytest.approx(card["medium"]["mean"] / card["expert"]["mean"])
    ref_min, ref_max = -20.272305, 3234.3  # D4RL hopper references
    assert card["expert"]["d4rl_normalized"] == pytest.approx(
        100 * (card["expert"]["mean"] - ref_min) / (ref_max - ref_min)
    )
    prefix = card["replay"]["original_buffer"]
    if medium_step <= straight.record()["step"]:
        assert prefix is None or prefix["transitions"] == medium_step
    assert not list((tmp_path / "out").glob(".*")), "a temporary directory was left behind"


def test_a_corrupt_or_missing_artifact_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data-policies"):
        PolicyArtifact.load(tmp_path)
    (tmp_path / "card.json").write_text("{}")
    (tmp_path / "policies.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable policy artifact"):
        PolicyArtifact.load(tmp_path)


def test_a_checkpoint_of_another_configuration_is_refused(straight, tmp_path):
    other = SACRun("Hopper-v5", dataclasses.replace(TINY, env_steps=200), 0, tmp_path)
    other.train(progress=False)
    with pytest.raises(RuntimeError, match="another environment, seed or configuration"):
        SACRun("Hopper-v5", dataclasses.replace(TINY, lr=1e-3), 0, tmp_path)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"env_steps": {"ant": 10}}, "unknown environment"),
        ({"colour": 1}, "unknown data_policies key"),
        ({"sac": {"learning_rate": 1}}, "unknown data_policies.sac key"),
        ({"sac": {"lr": float("inf")}}, "sac.lr must be in"),
        ({"sac": {"gamma": 1.0}}, "sac.gamma must be in"),
        ({"select_episodes": 0}, "select_episodes must be >= 1"),
    ],
)
def test_bad_params_are_refused_with_the_key(raw, message):
    with pytest.raises(ValueError, match=message):
        DataPolicyParams.from_dict(raw)


def test_the_committed_params_parse_and_name_every_environment():
    params = data_policies.load_params(REPO / "pipelines" / "data_policies" / "params.yaml")
    assert set(params.env_steps) == set(data_policies.ENV_IDS)
    # Haarnoja et al. 2018b, Table 1.
    sac = params.sac
    assert (sac.lr, sac.batch_size, sac.hidden, sac.gamma, sac.tau) == (3e-4, 256, (256, 256), 0.99, 0.005)
    assert json.loads(json.dumps(dataclasses.asdict(params)))  # serializable as a record
    assert np.isfinite(params.sac_for("hopper").env_steps)


def test_medium_is_the_steadiest_in_band_snapshot_that_stays_in_band_on_fresh_seeds(monkeypatch):
    # The expert (600) measures 3000, so the medium band is [900, 1350]. Snapshot 400 is inside
    # but bimodal (std 900); 200 is the steadiest but leaves the band on fresh seeds; 300 is the answer.
    trial = {
        100: (500, 20),
        200: (1000, 50),
        300: (1100, 100),
        400: (1200, 900),
        500: (2500, 10),
        600: (3000, 10),
    }
    fresh = {600: (3000, 12), 200: (700, 40), 300: (1150, 90)}
    first_fresh = 3_000_000

    def measure(run, step, episodes, seed):
        mean, std = (fresh if seed >= first_fresh else trial)[step]
        return {"env_step": step, "mean": float(mean), "std": float(std), "episodes": episodes, "seed": seed}

    class Run:
        workdir = Path("unused")

        def record(self):
            return {"snapshots": [{"env_step": s, "eval_return": trial[s][0]} for s in trial]}

    monkeypatch.setattr(data_policies, "_measure", measure)
    params = DataPolicyParams(select_episodes=20, expert_candidates=2, medium_candidates=5)
    choice = data_policies.select(Run(), params)
    assert choice["expert"]["env_step"] == 600 and choice["expert"]["seed"] >= first_fresh
    assert [c["env_step"] for c in choice["medium_confirmations"]] == [200, 300]
    assert choice["medium"]["env_step"] == 300 and choice["medium"]["mean"] == 1150.0
    assert choice["medium_in_band"]
    # Nothing holds the band on fresh seeds: the nearest to a third is taken, and the card says so.
    fresh.update({300: (1400, 90), 400: (1500, 900)})
    choice = data_policies.select(Run(), params)
    assert not choice["medium_in_band"] and choice["medium"]["seed"] >= first_fresh
    assert [c["env_step"] for c in choice["medium_confirmations"]] == [200, 300, 400]
    assert choice["medium"]["env_step"] == 200  # trial mean 1000, nearest to 3000 / 3
