"""The evaluation environment version follows the dataset's provenance (method §5), or is set."""

import json
import warnings
from pathlib import Path

import pytest
import yaml

from srpo_bench.eval.datasets import collection_env_version, load_d4rl_hdf5, resolve_env_version
from srpo_bench.eval.rollout import env_id_for_task, env_spec_for_task
from srpo_bench.params import load_params
from tests.test_datasets import d4rl_arrays, write_hdf5


@pytest.mark.parametrize("source,version", [("d4rl-hdf5", "v4"), ("minari", "v5")])
def test_provenance_picks_the_version_it_was_collected_closest_to(source, version):
    assert collection_env_version(source) == version
    assert resolve_env_version("auto", source)[0] == version


def test_a_d4rl_hdf5_file_is_evaluated_on_v4(tmp_path):
    write_hdf5(tmp_path / "d.hdf5", d4rl_arrays())
    ds = load_d4rl_hdf5(tmp_path / "d.hdf5", env="hopper-medium")
    version, why = resolve_env_version("auto", ds.transitions.info["source"])
    assert version == "v4" and "d4rl-hdf5" in why
    assert env_spec_for_task("hopper-medium", version).env_id == "Hopper-v4"


def test_override_and_unknown_provenance():
    assert resolve_env_version("v5", "d4rl-hdf5") == ("v5", "set by env_version")
    assert resolve_env_version("v4", "minari")[0] == "v4"
    assert resolve_env_version("auto", None)[0] == "v5"  # our data's version when nothing says otherwise
    assert env_id_for_task("walker2d-medium-replay", "v4") == "Walker2d-v4"


@pytest.mark.parametrize(
    "call",
    [
        lambda: resolve_env_version("v3", "minari", "--env-version"),
        lambda: env_id_for_task("hopper-medium", "v3"),
    ],
)
def test_a_bad_version_gets_one_line(call):
    with pytest.raises(ValueError, match=r"must be one of (auto, )?v4, v5, got 'v3'$"):
        call()


def test_a_bad_version_in_the_params_file_is_refused_in_one_line(tmp_path):
    raw = yaml.safe_load((Path(__file__).parents[1] / "pipelines/smoke/params.yaml").read_text())
    raw["evaluation"]["env_version"] = "v3"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as exc:
        load_params(tmp_path / "p.yaml")
    assert "\n" not in str(exc.value)
    assert str(exc.value).endswith("evaluation.env_version must be one of auto, v4, v5, got 'v3'")


def test_v4_walker2d_keeps_the_right_foot_friction_of_gym_v3():
    """The model difference that matters (method §5): v4 (= gym v3's model) has the right foot's
    friction at 0.9, v5 raises it to 1.9 like the left foot's."""
    import gymnasium as gym
    import mujoco

    def foot_friction(version):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gym.make(env_id_for_task("walker2d-medium", version))
        model = env.unwrapped.model
        geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "foot_geom")
        friction = float(model.geom_friction[geom][0])
        env.close()
        return friction

    assert foot_friction("v4") == pytest.approx(0.9)
    assert foot_friction("v5") == pytest.approx(1.9)


def test_srpo_evaluate_reads_the_runs_provenance_also_for_a_snapshot(tmp_path, capsys):
    from srpo_bench.cli import _dataset_source, main

    (tmp_path / "metrics.json").write_text(json.dumps({"dataset": {"source": "d4rl-hdf5"}}))
    assert _dataset_source(tmp_path / "policy.pt") == "d4rl-hdf5"
    assert _dataset_source(tmp_path / "snapshots" / "step0000100.pt") == "d4rl-hdf5"
    assert _dataset_source(tmp_path / "elsewhere" / "policy.pt") is None
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(tmp_path), "--env-version", "v3"])
    assert "invalid choice: 'v3'" in capsys.readouterr().err
