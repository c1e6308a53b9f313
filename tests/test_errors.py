"""Bad input gets a clear error that says what is wrong, and leaves no half-written output."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from srpo import artifacts
from srpo.config import make_config
from srpo.transitions import Transitions


def transitions(n=10, obs_dim=3, act_dim=2, **changes):
    fields = dict(
        observations=np.zeros((n, obs_dim), np.float32),
        actions=np.zeros((n, act_dim), np.float32),
        rewards=np.zeros(n, np.float32),
        next_observations=np.zeros((n, obs_dim), np.float32),
        terminals=np.zeros(n, np.float32),
        timeouts=np.zeros(n, np.float32),
        name="toy",
    )
    fields.update(changes)
    return Transitions(**fields)


def test_valid_transitions():
    assert len(transitions()) == 10


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"actions": np.zeros((9, 2), np.float32)}, "actions has shape"),
        ({"rewards": np.zeros(11, np.float32)}, "rewards has shape"),
        ({"next_observations": np.zeros((10, 4), np.float32)}, "next_observations has shape"),
        ({"actions": np.full((10, 2), np.nan, np.float32)}, "actions contains 20 NaN"),
        ({"rewards": np.array([np.inf] + [0] * 9, np.float32)}, "rewards contains 1 NaN/inf"),
        ({"actions": np.full((10, 2), 1.5, np.float32)}, r"actions must lie in \[-1, 1\]"),
        ({"observations": np.zeros(10, np.float32)}, "must be 2-D"),
    ],
)
def test_bad_transitions(changes, message):
    with pytest.raises(ValueError, match=message):
        transitions(**changes)


def test_empty_dataset():
    with pytest.raises(ValueError, match="empty"):
        transitions(n=0)


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="unknown task 'hopper-mediun'.*hopper-medium"):
        make_config("hopper-mediun")


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        make_config("hopper-medium", "fast")


@pytest.mark.parametrize(
    "override,message",
    [
        ({"policy.beta": "0"}, "beta must be > 0"),
        ({"policy.beta": "-0.1"}, "beta must be > 0"),
        ({"policy.t_fixed": "1.0"}, r"t_fixed must be in \(0, 1\)"),
        ({"policy.t_fixed": "0"}, r"t_fixed must be in \(0, 1\)"),
        ({"policy.t_range": "0,0.98"}, "t_range must satisfy"),
        ({"policy.t_range": "0.5,0.2"}, "t_range must satisfy"),
        ({"policy.weighting": "sigma"}, "cannot parse policy.weighting"),
        ({"policy.baseline": "maybe"}, "cannot parse policy.baseline"),
        ({"policy.gamma": "0.9"}, "unknown config field 'policy.gamma'"),
        ({"actor.beta": "0.9"}, "unknown config section 'actor'"),
        ({"critic.expectile": "1.2"}, "expectile must be in"),
        ({"behavior.steps": "-1"}, "steps must be >= 0"),
        ({"behavior.t_min": "0"}, r"t_min must be in \(0, 1\)"),
    ],
)
def test_bad_params(override, message):
    with pytest.raises(ValueError, match=message):
        make_config("hopper-medium", "smoke", 0, override)


def test_overrides_are_typed():
    cfg = make_config(
        "hopper-medium",
        "smoke",
        0,
        {
            "policy.baseline": "true",
            "policy.t_fixed": "0.3",
            "policy.t_range": "0.1,0.9",
            "policy.weighting": "score",
            "critic.hidden": "64,64",
            "seed": "3",
        },
    )
    assert cfg.policy.baseline is True and cfg.policy.t_fixed == 0.3 and cfg.policy.t_range == (0.1, 0.9)
    assert cfg.policy.weighting == "score" and cfg.critic.hidden == (64, 64) and cfg.seed == 3
    assert make_config("hopper-medium", "smoke", 0, {"policy.t_fixed": "none"}).policy.t_fixed is None


def test_presets_match_spec():
    """method §6 temperatures and §4/§5 AntMaze settings."""
    assert make_config("halfcheetah-medium-expert", "paper").policy.beta == 0.01
    assert make_config("walker2d-medium-replay", "paper").policy.beta == 0.5
    am = make_config("antmaze-large-play", "paper")
    assert am.policy.beta == 0.06 and am.critic.expectile == 0.9 and am.policy.normalize_q_grad
    assert am.reward_mode == "antmaze" and len(am.policy.hidden) == 4
    paper = make_config("hopper-medium", "paper")
    assert (paper.behavior.steps, paper.behavior.batch_size) == (2_000_000, 2048)
    assert (paper.critic.steps, paper.policy.steps) == (1_500_000, 1_000_000)
    assert paper.policy.weighting == "sigma2" and paper.policy.t_range == (0.02, 0.98)
    assert paper.policy.baseline is False  # the public code's default


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    artifacts.write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        artifacts.write_json(target, {"bad": object()})
    assert target.read_text() == '{\n  "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_ctrl_c_during_a_write_finishes_the_file_then_interrupts(tmp_path):
    """A Ctrl-C inside a writer (torch's zip writer turns one into a RuntimeError) is held until
    the file is complete and renamed into place, then raised as a KeyboardInterrupt."""
    target = tmp_path / "plot.png"
    handler = signal.getsignal(signal.SIGINT)

    class Figure:  # stands in for matplotlib: interrupted halfway through writing its bytes
        def savefig(self, f, format, dpi, bbox_inches):
            f.write(b"first half,")
            os.kill(os.getpid(), signal.SIGINT)
            f.write(b"second half")

    with pytest.raises(KeyboardInterrupt):
        artifacts.save_figure(Figure(), target)
    assert target.read_bytes() == b"first half,second half"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert signal.getsignal(signal.SIGINT) is handler


def test_json_is_strict_nonfinite_become_null(tmp_path):
    target = tmp_path / "out.json"
    artifacts.write_json(
        target,
        {
            "low": float("nan"),
            "x": [1.5, float("inf")],
            "t": torch.tensor([float("-inf"), 2.0]),
            "a": np.array([np.nan, 3.0]),
        },
    )
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    # a strict parser (what jq and JavaScript are) accepts it
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert strict == {"low": None, "x": [1.5, None], "t": [None, 2.0], "a": [None, 3.0]}


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        artifacts.load_torch(tmp_path / "nope.pt")


def test_written_files_have_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    mask = os.umask(0o022)
    try:
        artifacts.write_json(tmp_path / "out.json", {"ok": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
