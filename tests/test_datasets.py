"""Dataset loading: D4RL hdf5 files and Minari ids, with clear errors for bad input."""

import h5py
import numpy as np
import pytest

from srpo_bench.eval.datasets import load_d4rl_hdf5, load_dataset, load_minari
from srpo_bench.eval.references import D4RL_LOCOMOTION, Reference, d4rl_reference


def d4rl_arrays(n=50, episode=10, obs_dim=4, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim)).astype(np.float32)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": (np.arange(n) % episode == episode - 1),
    }


def write_hdf5(path, arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def test_hdf5_round_trip_with_next_observations(tmp_path):
    arrays = d4rl_arrays()
    arrays["next_observations"] = np.roll(arrays["observations"], -1, 0)
    ds = load_d4rl_hdf5(write_hdf5(tmp_path / "d.hdf5", arrays), env="hopper-medium")
    t = ds.transitions
    assert len(t) == 50
    for ours, key in [
        (t.observations, "observations"),
        (t.actions, "actions"),
        (t.rewards, "rewards"),
        (t.next_observations, "next_observations"),
        (t.timeouts, "timeouts"),
    ]:
        assert np.array_equal(ours, arrays[key].astype(np.float32))
    assert ds.reference == d4rl_reference("hopper")


def test_hdf5_without_next_observations_drops_timeout_steps(tmp_path):
    arrays = d4rl_arrays()
    arrays["terminals"][24] = True  # a terminal mid-episode keeps its step
    t = load_d4rl_hdf5(write_hdf5(tmp_path / "d.hdf5", arrays), env="walker2d").transitions
    assert len(t) == 45  # 5 episodes ended by timeout lose their last step
    assert np.array_equal(t.next_observations[0], arrays["observations"][1])
    assert t.terminals.sum() == 1


def test_both_hdf5_layouts_keep_the_episode_boundaries(tmp_path):
    # Episodes of 10 rows, ended by timeouts at rows 9, 19, ..., 49; a terminal at row 24 splits the
    # third: boundaries at 9, 19, 24, 29, 39, 49 -> 6 episodes in either layout.
    arrays = d4rl_arrays()
    arrays["terminals"][24] = True
    with_next = {**arrays, "next_observations": np.roll(arrays["observations"], -1, 0)}
    full = load_d4rl_hdf5(write_hdf5(tmp_path / "a.hdf5", with_next), env="hopper").transitions
    dropped = load_d4rl_hdf5(write_hdf5(tmp_path / "b.hdf5", arrays), env="hopper").transitions
    assert full.episode_ends.sum() == 6 and dropped.episode_ends.sum() == 6
    # Without next_observations each timeout row goes, and the row before it now ends the episode:
    # kept rows 0-8 (end at 8), 10-18 (end), 20-24 (terminal), 25-28 (end), 30-38 (end), 40-48 (end).
    assert np.flatnonzero(dropped.episode_ends).tolist() == [8, 17, 22, 26, 35, 44]
    assert np.flatnonzero(dropped.terminals).tolist() == [22]


def test_d4rl_normalized_score():
    ref = d4rl_reference("halfcheetah-medium-v2")
    lo, hi = D4RL_LOCOMOTION["halfcheetah"]
    assert np.isclose(ref.normalize(lo), 0) and np.isclose(ref.normalize(hi), 100)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda a: a.pop("timeouts"), "missing key\\(s\\) timeouts"),
        (lambda a: a.__setitem__("rewards", a["rewards"][:-1]), "mismatched lengths"),
        (lambda a: a["observations"].__setitem__((3, 1), np.nan), "observations contains 1 NaN/inf"),
        (lambda a: a["actions"].__setitem__((0, 0), 1.7), r"actions must lie in \[-1, 1\]"),
    ],
)
def test_hdf5_bad_input(tmp_path, mutate, message):
    arrays = d4rl_arrays()
    mutate(arrays)
    with pytest.raises(ValueError, match=message):
        load_d4rl_hdf5(write_hdf5(tmp_path / "d.hdf5", arrays), env="hopper")


def test_hdf5_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_d4rl_hdf5(tmp_path / "nope.hdf5", env="hopper")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable hdf5 file"):
        load_d4rl_hdf5(bad, env="hopper")


def test_unknown_reference_env():
    with pytest.raises(ValueError, match="no D4RL reference returns for 'ant'"):
        d4rl_reference("ant")
    with pytest.raises(ValueError, match="must exceed"):
        Reference(1.0, 1.0, "test")


def test_locomotion_task_needs_a_dataset():
    with pytest.raises(ValueError, match="needs --dataset"):
        load_dataset("hopper-medium")


@pytest.fixture
def minari_store(tmp_path, monkeypatch):
    """A tiny real Minari dataset in a private store (Pendulum-v1 spaces, random data)."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    episodes = []
    for i, length in enumerate((20, 15, 20)):
        episodes.append(
            EpisodeBuffer(
                id=i,
                observations=rng.standard_normal((length + 1, 3)).astype(np.float32),
                actions=rng.uniform(-1, 1, (length, 1)).astype(np.float32),
                rewards=list(rng.standard_normal(length)),
                terminations=[False] * (length - 1) + [i == 1],
                truncations=[False] * (length - 1) + [i != 1],
            )
        )
    ds = minari.create_dataset_from_buffers(
        "test/pendulum/random-v0",
        episodes,
        env="Pendulum-v1",
        eval_env="Pendulum-v1",
        algorithm_name="random",
        author="srpo-bench tests",
        author_email="tests@srpo-bench.invalid",
        description="random test data",
        ref_min_score=-10.0,
        ref_max_score=5.0,
    )
    return ds


def test_minari_dataset_loads_and_normalizes_like_minari(minari_store):
    import minari

    ds = load_minari("test/pendulum/random-v0")
    assert (
        len(ds.transitions) == 55
        and ds.transitions.terminals.sum() == 1
        and ds.transitions.timeouts.sum() == 2
    )
    returns = np.array([-12.0, 0.0, 4.5])
    assert np.allclose(
        ds.reference.normalize(returns), 100 * minari.get_normalized_score(minari_store, returns)
    )
    via_entry = load_dataset("hopper-medium", "test/pendulum/random-v0")
    assert via_entry.transitions.name == "test/pendulum/random-v0"


def test_unknown_minari_id_lists_local_ones(minari_store):
    with pytest.raises(ValueError, match="not in the local store.*test/pendulum/random-v0.*minari download"):
        load_minari("mujoco/halfcheetah/medium-v0")
