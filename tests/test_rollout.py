"""Policy rollouts on Gymnasium MuJoCo vector environments."""

import numpy as np
import pytest

from eval.references import d4rl_reference
from eval.rollout import env_id_for_task, evaluate


def zero_policy(obs):
    return np.zeros((len(obs), 3))


def test_seeded_rollouts_are_reproducible_and_scored():
    ref = d4rl_reference("hopper")
    a = evaluate(zero_policy, "Hopper-v5", episodes=5, seed=3, num_envs=2, reference=ref, max_episode_steps=50)
    b = evaluate(zero_policy, "Hopper-v5", episodes=5, seed=3, num_envs=4, reference=ref, max_episode_steps=50)
    assert np.array_equal(a.seeds, [3, 4, 5, 6, 7])
    assert np.allclose(a.returns, b.returns) and np.array_equal(a.lengths, b.lengths)
    assert np.all(a.lengths <= 50) and np.all(a.lengths > 0)
    assert np.allclose(a.normalized, 100 * (a.returns - ref.ref_min) / (ref.ref_max - ref.ref_min))
    d = a.to_dict()
    assert d["episodes"] == 5 and len(d["returns"]) == 5


def test_different_seeds_differ():
    def noisy(obs):
        return np.tanh(obs[:, :3])  # deterministic in the observation, which depends on the reset seed

    a = evaluate(noisy, "Hopper-v5", episodes=2, seed=0, max_episode_steps=30)
    b = evaluate(noisy, "Hopper-v5", episodes=2, seed=100, max_episode_steps=30)
    assert not np.allclose(a.returns, b.returns)


def test_bad_arguments():
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate(zero_policy, "Hopper-v5", episodes=0)
    with pytest.raises(ValueError, match="no evaluation environment for task 'ant-medium'"):
        env_id_for_task("ant-medium")
    assert env_id_for_task("walker2d-medium-replay") == "Walker2d-v5"


def test_cli_evaluate_a_trained_policy(tmp_path, capsys):
    """A policy checkpoint shaped for Hopper (11 -> 3) is rolled out and scored by `srpo evaluate`."""
    import json


    from srpo import artifacts
    from srpo.cli import main
    from srpo.config import make_config
    from srpo.policy import DeterministicPolicy

    cfg = make_config("hopper-medium", "smoke", overrides={"policy.hidden": "16,16"})
    pi = DeterministicPolicy(11, 3, (16, 16))
    artifacts.save_torch(tmp_path / "policy.pt", {
        "stage": "policy", "done": True, "step": 1, "config": {"task": cfg.task, "policy": {"hidden": [16, 16]}},
        "modules": {"policy": pi.state_dict()},
    })
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--episodes", "3", "--num-envs", "3"]) == 0
    out = json.loads((tmp_path / "evaluation.json").read_text())
    assert out["env_id"] == "Hopper-v5" and out["episodes"] == 3 and out["mean_normalized"] is not None
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no policy checkpoint" in capsys.readouterr().err
