"""benchmarks/train_throughput.py: the runs it times are the configured ones."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_throughput as tt  # noqa: E402

from srpo.config import make_config  # noqa: E402


@pytest.mark.parametrize("profile", ["paper", "default"])
def test_the_timed_configs_take_the_profiles_batch_sizes_and_the_paths_precision(profile):
    expected = make_config(tt.TASK, profile)
    for stage in tt.STAGES:
        cfgs = tt._configs(stage, 7, 3, "bf16", profile)
        assert [c.seed for c in cfgs] == [0, 1, 2]
        for c in cfgs:
            sub = getattr(c, stage)
            assert sub.steps == 7 and sub.precision == "bf16"
            assert sub.batch_size == getattr(expected, stage).batch_size
    # The benchmark's point: the paper's behavior batch is 8x the default profile's.
    assert tt._configs("behavior", 1, 1, profile="paper")[0].behavior.batch_size == 2048
    assert tt._configs("behavior", 1, 1, profile="default")[0].behavior.batch_size == 256


def test_a_runner_trains_the_fast_path_and_the_reference_at_the_default_profile(monkeypatch):
    """Each runner trains its stage for the steps asked, on as many seeds, at the profile's batch size."""
    calls = []

    def recording(module, name):
        original = getattr(module, name)

        def wrapped(cfgs, *args, **kwargs):
            result = original(cfgs, *args, **kwargs)
            calls.append((name, cfgs, result))
            return result

        monkeypatch.setattr(module, name, wrapped)

    for stage in tt.STAGES:
        recording(tt.reference, f"train_{stage}")
        recording(tt.seed_batch, f"train_{stage}")
    data = tt.synthetic_dataset()
    expected = make_config(tt.TASK, "default")
    for stage in tt.STAGES:
        for path, seeds in (("reference", 1), ("fast", 2)):
            calls.clear()
            tt._runner(stage, path, seeds, data, torch.device("cpu"), profile="default")(2)
            [(name, cfgs, (modules, histories))] = calls
            assert name == f"train_{stage}"
            cfgs = [cfgs] if path == "reference" else cfgs
            histories = [histories] if path == "reference" else histories
            assert len(cfgs) == seeds == len(histories)
            assert getattr(cfgs[0], stage).batch_size == getattr(expected, stage).batch_size
            for history in histories:  # two steps taken, the last one logged
                assert history[-1]["step"] == 2
