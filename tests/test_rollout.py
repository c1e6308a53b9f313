"""Policy rollouts on Gymnasium MuJoCo vector environments."""

import json
import sys

import numpy as np
import pytest

from srpo import artifacts
from srpo.config import make_config
from srpo.policy import DeterministicPolicy
from srpo_bench.cli import main
from srpo_bench.eval.references import ANTMAZE_REFERENCE, d4rl_reference
from srpo_bench.eval.rollout import (
    EnvSpec,
    EvaluationUnavailable,
    env_id_for_task,
    env_spec_for_task,
    evaluate,
)


def zero_policy(obs):
    return np.zeros((len(obs), 3))


def test_seeded_rollouts_are_reproducible_and_scored():
    ref = d4rl_reference("hopper")
    a = evaluate(
        zero_policy, "Hopper-v5", episodes=5, seed=3, num_envs=2, reference=ref, max_episode_steps=50
    )
    b = evaluate(
        zero_policy, "Hopper-v5", episodes=5, seed=3, num_envs=4, reference=ref, max_episode_steps=50
    )
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

    cfg = make_config("hopper-medium", "smoke", overrides={"policy.hidden": "16,16"})
    pi = DeterministicPolicy(11, 3, (16, 16))
    artifacts.save_torch(
        tmp_path / "policy.pt",
        {
            "stage": "policy",
            "done": True,
            "step": 1,
            "config": {"task": cfg.task, "policy": {"hidden": [16, 16]}},
            "modules": {"policy": pi.state_dict()},
        },
    )
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--episodes", "3", "--num-envs", "3"]) == 0
    out = json.loads((tmp_path / "evaluation.json").read_text())
    assert out["env_id"] == "Hopper-v5" and out["episodes"] == 3 and out["mean_normalized"] is not None
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no policy checkpoint" in capsys.readouterr().err


class _GoalToy:
    """A 1-D toy that reports info['success'] once its position passes 3: success-scoring without MuJoCo."""

    @staticmethod
    def make(**kwargs):
        import gymnasium as gym

        class Toy(gym.Env):
            observation_space = gym.spaces.Dict(
                {
                    "achieved_goal": gym.spaces.Box(-100, 100, (1,)),
                    "observation": gym.spaces.Box(-1, 1, (1,)),
                    "desired_goal": gym.spaces.Box(-100, 100, (1,)),
                }
            )
            action_space = gym.spaces.Box(-1, 1, (1,))

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                self.x = 0.0
                return self._obs(), {}

            def _obs(self):
                return {
                    "achieved_goal": np.array([self.x], np.float32),
                    "observation": np.zeros(1, np.float32),
                    "desired_goal": np.array([3.0], np.float32),
                }

            def step(self, action):
                self.x += float(action[0])
                return self._obs(), float(self.x >= 3), False, False, {"success": self.x >= 3}

        return Toy()


def test_success_scoring_counts_an_episode_that_reached_the_goal_once():
    import gymnasium as gym

    gym.register("SrpoGoalToy-v0", entry_point=_GoalToy.make)
    seen = []

    def policy(obs):  # moves forward only when the flat observation starts with x (achieved_goal first)
        seen.append(obs.copy())
        return np.where(obs[:, -1:] == 3.0, 1.0, -1.0)

    res = evaluate(
        policy,
        EnvSpec("SrpoGoalToy-v0", "success", 10),
        episodes=3,
        seed=0,
        num_envs=2,
        reference=ANTMAZE_REFERENCE,
    )
    assert seen[0].shape == (2, 3) and np.all(
        seen[0][:, 2] == 3.0
    )  # achieved_goal, observation, desired_goal
    assert np.array_equal(res.successes, [True, True, True])
    assert np.allclose(res.normalized, 100.0) and res.to_dict()["success_rate"] == 1.0
    stuck = evaluate(
        lambda o: -np.ones((len(o), 1)),
        EnvSpec("SrpoGoalToy-v0", "success", 10),
        episodes=2,
        reference=ANTMAZE_REFERENCE,
    )
    assert np.array_equal(stuck.successes, [False, False]) and np.allclose(stuck.normalized, 0.0)


def test_antmaze_without_gymnasium_robotics_is_skipped_with_a_clear_message(monkeypatch, tmp_path, capsys):

    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # import now raises ImportError
    with pytest.raises(EvaluationUnavailable, match=r"pip install 'srpo-bench\[antmaze\]'"):
        env_spec_for_task("antmaze-umaze")
    pi = DeterministicPolicy(31, 8, (16, 16))
    artifacts.save_torch(
        tmp_path / "policy.pt",
        {
            "stage": "policy",
            "done": True,
            "step": 1,
            "config": {"task": "antmaze-umaze", "policy": {"hidden": [16, 16]}},
            "modules": {"policy": pi.state_dict()},
        },
    )
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--episodes", "2"]) == 0
    assert "gymnasium-robotics" in json.loads((tmp_path / "evaluation.json").read_text())["skipped"]
    assert "skipping the evaluation of antmaze-umaze" in capsys.readouterr().err


def test_antmaze_rollout_when_gymnasium_robotics_is_installed():
    pytest.importorskip("gymnasium_robotics")

    spec = env_spec_for_task("antmaze-umaze")
    assert spec.scoring == "success" and spec.max_episode_steps == 700
    res = evaluate(
        lambda o: np.zeros((len(o), 8)), spec, episodes=2, max_episode_steps=20, reference=ANTMAZE_REFERENCE
    )
    assert res.successes is not None and np.array_equal(res.lengths, [20, 20])
    assert np.allclose(res.normalized, 100.0 * res.successes)
