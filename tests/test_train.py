"""Training stages: seeded determinism, exact resume after a kill, clear failures."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from srpo import artifacts
from srpo.behavior import NoisePredictor
from srpo.config import make_config
from srpo.critic import Critic
from srpo.stage_loop import Interrupted
from srpo.train import train, train_policy
from srpo_bench.eval import bandit_tasks

TINY = {
    "behavior.steps": "40",
    "behavior.batch_size": "32",
    "behavior.width": "32",
    "behavior.n_blocks": "1",
    "critic.steps": "40",
    "critic.batch_size": "32",
    "critic.hidden": "32,32",
    "policy.steps": "40",
    "policy.batch_size": "32",
    "policy.hidden": "32,32",
    "log_every": "5",
    "checkpoint_every": "10",
}


def tiny_config(seed=0, **extra):
    return make_config("bandit-ring8", "smoke", seed, {**TINY, **extra})


def tiny_data(seed=0):
    return bandit_tasks.make_dataset(bandit_tasks.get_bandit("bandit-ring8"), 500, seed)


def final_params(out: Path) -> dict[str, torch.Tensor]:
    params = {}
    for stage in ("behavior", "critic", "policy"):
        for name, sd in artifacts.load_torch(out / f"{stage}.pt")["modules"].items():
            params.update({f"{stage}.{name}.{k}": v for k, v in sd.items()})
    return params


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    data = tiny_data()
    train(tiny_config(), data, tmp_path / "a", progress=False)
    train(tiny_config(), data, tmp_path / "b", progress=False)
    train(tiny_config(seed=1), data, tmp_path / "c", progress=False)
    pa, pb, pc = (final_params(tmp_path / x) for x in "abc")
    assert_bitwise_equal(pa, pb)
    assert not torch.equal(pa["policy.policy.net.0.weight"], pc["policy.policy.net.0.weight"])


@pytest.mark.parametrize("stage,at", [("behavior", 17), ("critic", 23), ("policy", 31)])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, stage, at):
    """A kill at step ``at`` loses the steps since the last checkpoint; the resumed run redoes them alike."""
    data = tiny_data()
    ref = train(tiny_config(), data, tmp_path / "ref", progress=False)
    with pytest.raises(Interrupted):
        train(tiny_config(), data, tmp_path / "run", progress=False, stop_after={stage: at})
    assert artifacts.load_torch(tmp_path / "run" / f"{stage}.pt")["step"] == (at // 10) * 10
    resumed = train(tiny_config(), data, tmp_path / "run", progress=False)
    assert_bitwise_equal(final_params(tmp_path / "ref"), final_params(tmp_path / "run"))
    assert resumed.histories == ref.histories


def test_finished_stages_are_not_retrained(tmp_path):
    data = tiny_data()
    train(tiny_config(), data, tmp_path, progress=False)
    stamp = {s: (tmp_path / f"{s}.pt").stat().st_mtime_ns for s in ("behavior", "critic", "policy")}
    train(tiny_config(), data, tmp_path, progress=False)
    assert stamp == {s: (tmp_path / f"{s}.pt").stat().st_mtime_ns for s in ("behavior", "critic", "policy")}


def test_resume_with_other_config_is_refused(tmp_path):
    data = tiny_data()
    train(tiny_config(), data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different behavior config"):
        train(tiny_config(**{"behavior.lr": "1e-3"}), data, tmp_path, progress=False)


def test_changing_only_the_policy_reuses_behavior_and_critic(tmp_path):
    data = tiny_data()
    train(tiny_config(), data, tmp_path, progress=False)
    before = {s: (tmp_path / f"{s}.pt").stat().st_mtime_ns for s in ("behavior", "critic")}
    (tmp_path / "policy.pt").unlink()
    train(tiny_config(**{"policy.beta": "0.2"}), data, tmp_path, progress=False)
    assert artifacts.load_torch(tmp_path / "policy.pt")["config"]["policy"]["beta"] == 0.2
    assert before == {s: (tmp_path / f"{s}.pt").stat().st_mtime_ns for s in ("behavior", "critic")}


def test_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / "behavior.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        train(tiny_config(), tiny_data(), tmp_path, progress=False)


def test_divergence_stops_without_saving_a_bad_state(tmp_path):
    data = tiny_data()
    huge = type(data)(**{**data.__dict__, "rewards": np.full(500, 1e30, dtype=np.float32)})
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(tiny_config(), huge, tmp_path, progress=False)
    assert not (tmp_path / "critic.pt").exists()


def test_policy_stage_rejects_mismatched_behavior_model(tmp_path):
    data = tiny_data()
    with pytest.raises(ValueError, match="3-dim actions"):
        train_policy(
            tiny_config(),
            data,
            NoisePredictor(1, 3, 16, 1),
            Critic(1, 2, (8,)),
            tmp_path,
            torch.device("cpu"),
            progress=False,
        )


def test_noise_predictor_rejects_wrong_action_dim():
    model = NoisePredictor(4, 2, 16, 1)
    with pytest.raises(ValueError, match="action dim 2"):
        model(torch.zeros(3, 5), torch.zeros(3, 4), torch.rand(3))


def _srpo_cmd(out: Path, *extra: str) -> list[str]:
    sets = []
    for k, v in {**TINY, "behavior.steps": "400", "checkpoint_every": "50", "log_every": "50"}.items():
        sets += ["--set", f"{k}={v}"]
    return [
        sys.executable,
        "-m",
        "srpo_bench.cli",
        "train",
        "--task",
        "bandit-ring8",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        *sets,
        *extra,
    ]


def test_sigkill_and_resume_via_cli_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_srpo_cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        _srpo_cmd(tmp_path / "run"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = tmp_path / "run" / "behavior.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run never wrote a checkpoint"
    assert artifacts.load_torch(ckpt)["done"] is False, "kill came too late to test resume"
    subprocess.run(_srpo_cmd(tmp_path / "run"), check=True, env=env, capture_output=True)
    assert_bitwise_equal(final_params(tmp_path / "ref"), final_params(tmp_path / "run"))
    assert not list((tmp_path / "run").glob(".*.tmp")), "a temporary file was left behind"


def test_stages_run_separately_equal_one_full_run_and_policy_variants_share_upstream(tmp_path):
    """The pipeline trains behavior, critic and policy as separate steps; the result must not change."""
    data = tiny_data()
    train(tiny_config(), data, tmp_path / "full", progress=False)
    for stage in ("behavior", "critic"):
        train(tiny_config(), data, tmp_path / "staged", progress=False, stages=(stage,))
    assert not (tmp_path / "staged" / "policy.pt").exists()
    train(
        tiny_config(),
        data,
        tmp_path / "variant",
        progress=False,
        stages=("policy",),
        upstream=tmp_path / "staged",
    )
    assert not (tmp_path / "variant" / "behavior.pt").exists()
    full = final_params(tmp_path / "full")
    staged = {k: v for k, v in full.items() if not k.startswith("policy")}
    for stage in ("behavior", "critic"):
        for name, sd in artifacts.load_torch(tmp_path / "staged" / f"{stage}.pt")["modules"].items():
            for k, v in sd.items():
                assert torch.equal(v, staged.pop(f"{stage}.{name}.{k}"))
    assert not staged
    policy = artifacts.load_torch(tmp_path / "variant" / "policy.pt")["modules"]["policy"]
    for k, v in policy.items():
        assert torch.equal(v, full[f"policy.policy.{k}"])


def test_policy_stage_refuses_missing_unfinished_or_foreign_upstream(tmp_path):
    data = tiny_data()
    with pytest.raises(FileNotFoundError, match="run the behavior stage first"):
        train(
            tiny_config(),
            data,
            tmp_path / "p",
            progress=False,
            stages=("policy",),
            upstream=tmp_path / "none",
        )
    with pytest.raises(Interrupted):
        train(
            tiny_config(),
            data,
            tmp_path / "u",
            progress=False,
            stages=("behavior",),
            stop_after={"behavior": 15},
        )
    train(tiny_config(), data, tmp_path / "u", progress=False, stages=("critic",))
    with pytest.raises(ValueError, match="unfinished"):
        train(
            tiny_config(), data, tmp_path / "p", progress=False, stages=("policy",), upstream=tmp_path / "u"
        )
    train(tiny_config(), data, tmp_path / "u", progress=False, stages=("behavior",))
    other_data = tiny_data(seed=5)  # same config, other dataset: the fingerprint differs
    with pytest.raises(ValueError, match="different behavior config, seed or dataset"):
        train(
            tiny_config(),
            other_data,
            tmp_path / "p",
            progress=False,
            stages=("policy",),
            upstream=tmp_path / "u",
        )
    with pytest.raises(ValueError, match="unknown stage"):
        train(tiny_config(), data, tmp_path / "p", progress=False, stages=("actor",))


def test_restart_on_change_starts_a_stale_stage_over_instead_of_refusing(tmp_path):
    data = tiny_data()
    train(tiny_config(), data, tmp_path / "r", progress=False, stages=("critic",))
    changed = tiny_config(**{"critic.lr": "1e-3"})
    with pytest.raises(ValueError, match="different critic config"):
        train(changed, data, tmp_path / "r", progress=False, stages=("critic",))
    train(changed, data, tmp_path / "r", progress=False, stages=("critic",), restart_on_change=True)
    train(changed, data, tmp_path / "fresh", progress=False, stages=("critic",))
    a = artifacts.load_torch(tmp_path / "r" / "critic.pt")["modules"]["critic"]
    b = artifacts.load_torch(tmp_path / "fresh" / "critic.pt")["modules"]["critic"]
    assert all(torch.equal(a[k], b[k]) for k in a)
