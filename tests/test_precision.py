"""Reduced-precision training (srpo/precision.py): bf16 runs stay close to fp32 runs; tf32 needs CUDA.

bf16 changes the arithmetic, so a bf16 run is not the fp32 run up to rounding. What must hold:
the run trains (losses fall as in fp32), it stays close to the fp32 run, seeds batched in bf16
match single bf16 runs as closely as bf16 allows, and a bf16 run resumes bit-identically.
"""

import pytest
import torch

from srpo import artifacts, precision
from srpo.config import CriticConfig, make_config
from srpo.fast import seed_batch
from srpo.stage_loop import Interrupted
from srpo.train import train
from tests.test_seed_batch import assert_close_params
from tests.test_train import final_params, tiny_config, tiny_data

BF16 = {f"{stage}.precision": "bf16" for stage in ("behavior", "critic", "policy")}


def _losses(out, stage, key="loss"):
    return [e[key] for e in artifacts.load_torch(out / f"{stage}.pt")["history"]]


def test_unknown_or_misplaced_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="cannot parse behavior.precision='fp16'"):
        make_config("hopper-medium", "smoke", overrides={"behavior.precision": "fp16"})
    with pytest.raises(ValueError, match="critic.precision must be one of fp32, tf32, bf16"):
        CriticConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
        with precision.stage("tf32", torch.device("cpu")):
            pass


def test_a_run_whose_stage_the_device_cannot_run_fails_before_any_work(tmp_path):
    cfgs = [tiny_config(s, **{"policy.precision": "tf32"}) for s in (0, 1)]
    with pytest.raises(ValueError, match="policy.precision=tf32 needs a CUDA device"):
        train(cfgs[0], tiny_data(), tmp_path / "single", progress=False)
    with pytest.raises(ValueError, match="policy.precision=tf32 needs a CUDA device"):
        seed_batch.train(cfgs, tiny_data(), [tmp_path / "b0", tmp_path / "b1"], progress=False)
    assert not any(tmp_path.iterdir())  # not even the behavior stage ran


def test_tf32_stage_restores_the_matmul_setting_even_on_error():
    before = torch.get_float32_matmul_precision()
    with pytest.raises(ValueError):
        with precision.stage("tf32", torch.device("cpu")):
            pass
    assert torch.get_float32_matmul_precision() == before


def test_bf16_forward_runs_matmuls_in_bf16_and_keeps_parameters_and_grads_fp32():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with precision.forward("bf16", torch.device("cpu")):
        y = lin(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lin.weight.dtype == lin.weight.grad.dtype == torch.float32
    with precision.forward("fp32", torch.device("cpu")):
        assert lin(x).dtype == torch.float32


def test_a_bf16_run_trains_like_the_fp32_run(tmp_path):
    """Same seed, 3 stages: the bf16 loss curves follow the fp32 ones (within 5% per logged mean, 2% at the
    end
    of the behavior stage) and the final parameters differ by bf16-sized amounts, not by a different run."""
    data = tiny_data()
    runs = {}
    for name, sets in (("fp32", {}), ("bf16", BF16)):
        runs[name] = tmp_path / name
        train(tiny_config(0, **sets), data, runs[name], progress=False)
    for stage, key in (("behavior", "loss"), ("critic", "q_loss"), ("critic", "v_loss"), ("policy", "loss")):
        a, b = _losses(runs["fp32"], stage, key), _losses(runs["bf16"], stage, key)
        assert a != b, "bf16 must change the arithmetic"
        scale = max(abs(v) for v in a)
        assert all(abs(x - y) <= 0.05 * scale for x, y in zip(a, b)), (stage, key, a, b)
    pa, pb = final_params(runs["fp32"]), final_params(runs["bf16"])
    other_seed = tmp_path / "fp32-seed1"
    train(tiny_config(1), data, other_seed, progress=False)
    pc = final_params(other_seed)
    w = "behavior.model.blocks.0.net.1.weight"
    # bf16 vs fp32 at one seed: far closer than two fp32 seeds are to each other
    assert (pa[w] - pb[w]).norm() < 0.2 * (pa[w] - pc[w]).norm()


def test_seeds_batched_in_bf16_match_single_bf16_runs(tmp_path):
    seeds = (0, 1)
    data = tiny_data()
    outs = [tmp_path / "batched" / f"seed{s}" for s in seeds]
    seed_batch.train([tiny_config(s, **BF16) for s in seeds], data, outs, progress=False)
    for s, out in zip(seeds, outs):
        single = tmp_path / "single" / f"seed{s}"
        train(tiny_config(s, **BF16), data, single, progress=False)
        # batched and single matmuls round differently in bf16: bf16 tolerance, not fp32's
        assert_close_params(final_params(out), final_params(single), rtol=0.05, atol=0.02)


def test_a_killed_bf16_batched_run_resumes_bit_identically(tmp_path):
    seeds, data = (0, 1), tiny_data()
    cfgs = [tiny_config(s, **BF16) for s in seeds]
    ref = [tmp_path / "ref" / f"seed{s}" for s in seeds]
    seed_batch.train(cfgs, data, ref, progress=False)
    outs = [tmp_path / "killed" / f"seed{s}" for s in seeds]
    with pytest.raises(Interrupted):
        seed_batch.train(cfgs, data, outs, progress=False, stop_after={"behavior": 20})
    seed_batch.train(cfgs, data, outs, progress=False)
    for a, b in zip(ref, outs):
        assert_close_params(final_params(a), final_params(b), rtol=0, atol=0)


def test_a_checkpoint_of_one_precision_is_not_resumed_by_another(tmp_path):
    data = tiny_data()
    train(tiny_config(0), data, tmp_path, progress=False, stages=("behavior",))
    with pytest.raises(ValueError, match="config"):
        train(tiny_config(0, **BF16), data, tmp_path, progress=False, stages=("behavior",))
