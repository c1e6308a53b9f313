"""Generating D4RL-style datasets: policies of a tiny SAC run rolled out, written as real Minari datasets."""

import json

import numpy as np
import pytest

from srpo_bench.eval.datasets import load_minari
from srpo_bench.eval.generate import GENERATION_PROFILES, KINDS, dataset_id, generate_env, train_here


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH")
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


@pytest.mark.parametrize("env", ["hopper", "halfcheetah", "walker2d"])
def test_tiny_generation_writes_five_minari_datasets(store, env):
    import minari

    result = generate_env(env, "tiny", 0, store, progress=False)
    assert set(result["cards"]) == set(KINDS)
    local = minari.list_local_datasets()
    for kind in KINDS:
        did = dataset_id(env, kind)
        assert did in local
        ds = minari.load_dataset(did)
        ours = load_minari(did)
        returns = np.array([0.0, 1000.0])
        assert np.allclose(ours.reference.normalize(returns), 100 * minari.get_normalized_score(ds, returns))
        card = json.loads((store / did / "srpo_card.json").read_text())
        assert (
            card["seed"] == 0 and card["budget"]["profile"] == "tiny" and "srpo-bench" in card["code_version"]
        )
        assert card["transitions"] == len(ours.transitions)
    cards = result["cards"]
    assert (
        cards["medium-expert"]["transitions"]
        == cards["medium"]["transitions"] + cards["expert"]["transitions"]
    )
    n = GENERATION_PROFILES["tiny"].transitions
    assert cards["random"]["transitions"] == n
    medium_step = cards["medium"]["policies"]["card"]["replay"]["env_steps"]
    assert cards["medium-replay"]["transitions"] == min(medium_step, GENERATION_PROFILES["tiny"].max_replay)
    assert not list(store.glob(".staging-*")), "a staging directory was left behind"


def test_unknown_env_and_profile(store):
    with pytest.raises(ValueError, match="unknown environment 'ant'"):
        generate_env("ant", "tiny", 0, store)
    with pytest.raises(ValueError, match="unknown generation profile 'huge'"):
        generate_env("hopper", "huge", 0, store)


def _transitions(root, did):
    import os

    old = os.environ["MINARI_DATASETS_PATH"]
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        return load_minari(did).transitions
    finally:
        os.environ["MINARI_DATASETS_PATH"] = old


def test_datasets_from_a_committed_style_artifact_are_reproducible(store, tmp_path):
    prof = GENERATION_PROFILES["tiny"]
    train_here("hopper", prof, 0, tmp_path / "work", tmp_path / "policies", progress=False)
    a = generate_env("hopper", "tiny", 0, tmp_path / "a", progress=False, policies=tmp_path / "policies")
    b = generate_env("hopper", "tiny", 0, tmp_path / "b", progress=False, policies=tmp_path / "policies")
    assert a["cards"]["expert"]["policies"]["fingerprint"] == b["cards"]["expert"]["policies"]["fingerprint"]
    for kind in KINDS:
        ta, tb = (
            _transitions(tmp_path / "a", dataset_id("hopper", kind)),
            _transitions(tmp_path / "b", dataset_id("hopper", kind)),
        )
        assert np.array_equal(ta.actions, tb.actions) and np.array_equal(ta.rewards, tb.rewards), kind
    # The replay's first start_steps actions are SAC's uniform warm-up: spread over the whole box.
    replay = _transitions(tmp_path / "a", dataset_id("hopper", "medium-replay"))
    warmup = np.asarray(replay.actions[: prof.sac.start_steps])
    assert warmup.min() < -0.9 and warmup.max() > 0.9 and abs(warmup.mean()) < 0.1
