"""The graph-safe pieces of the fast path, and (on a CUDA machine) graphed runs against eager ones.

The CPU tests check what capture relies on - metric sums added to in place, a learning
rate schedule that writes a device tensor, optimizer state that keeps the reference
checkpoint format - and run in CI. The ``cuda`` tests need a GPU: CI skips them; the
device check (benchmarks/device_check.sh) runs them.
"""

import numpy as np
import pytest
import torch

from srpo import artifacts
from srpo.fast import seed_batch
from srpo.fast.cuda_graph import DeviceLr, capturable_optimizer
from srpo.stage_loop import Interrupted, RunningMeans
from srpo.train import train
from tests.test_seed_batch import assert_close_params
from tests.test_train import final_params, tiny_config, tiny_data

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("shape", [(), (3,)])
def test_running_means_average_in_place_and_reset(shape):
    rng = np.random.default_rng(0)
    means = RunningMeans()
    for round_ in range(2):
        values = rng.standard_normal((5, *shape)).astype(np.float32)
        for v in values:
            means.add({"a": torch.tensor(v), "b": torch.tensor(2 * v)})
        if round_ == 0:
            addresses = [t.data_ptr() for t in means._sums.values()]
        got = means.pop()
        assert [t.data_ptr() for t in means._sums.values()] == addresses  # a captured graph's sums stay valid
        np.testing.assert_allclose(got["a"], values.mean(0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["b"], 2 * values.mean(0), rtol=1e-6, atol=1e-7)
    assert means.pop() == {}  # nothing added since the last pop


def test_running_means_of_bf16_metrics_accumulate_in_float32():
    """bf16 training (srpo/precision.py) logs bf16 values: their sums must not round in bf16."""
    means = RunningMeans()
    for _ in range(1000):
        means.add({"loss": torch.tensor(1.0078125, dtype=torch.bfloat16)})  # exact in bf16
    assert means.pop()["loss"] == pytest.approx(1.0078125, rel=1e-6)


def test_device_lr_follows_the_reference_schedule_and_saves_its_state():
    """Cosine decay into a tensor lr: the reference scheduler's lr at every step, and its state_dict."""

    def cosine(o):
        return torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7)

    p = torch.nn.Parameter(torch.randn(4))
    fast = capturable_optimizer(torch.optim.Adam, [p], torch.device("cpu"), False, 3e-4)
    fast.param_groups[0]["lr"] = torch.tensor(3e-4)  # what the CUDA-graph path builds
    lr = DeviceLr(fast, 3e-4, cosine)
    q = torch.nn.Parameter(torch.randn(4))
    ref_opt = torch.optim.Adam([q], lr=3e-4)
    ref = cosine(ref_opt)
    for _ in range(9):
        q.grad = torch.ones(4)
        ref_opt.step()
        ref.step()
        lr.step()
        assert float(lr.lr) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
    assert lr.state_dict() == ref.state_dict()
    # a resume: schedule state from the checkpoint; the schedule goes on from the scheduler's own
    # float (exactly the reference's), not from the device tensor's float32 rounding of it
    fast.param_groups[0]["lr"] = torch.tensor(3e-4)  # a fresh run's tensor, before the resume
    again = DeviceLr(fast, 3e-4, cosine)
    again.load_state_dict(ref.state_dict())
    again.sync_from_optimizer()
    assert float(again.lr) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
    for _ in range(3):
        again.step()
        ref.step()
        assert again.mirror.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]


def test_a_tensor_lr_optimizer_saves_the_reference_format_and_keeps_its_tensor_on_resume():
    stack = seed_batch.Stacked([torch.nn.Linear(3, 2) for _ in range(2)])
    opt = torch.optim.Adam(stack.parameters(), lr=torch.tensor(1e-3), foreach=False)
    for p in stack.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    saved = [seed_batch._SeedOptimizer(opt, k, {}).state_dict() for k in range(2)]
    group = saved[0]["param_groups"][0]
    assert isinstance(group["lr"], float) and group["capturable"] is False and group["fused"] is None
    ref = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5e-4)
    ref.load_state_dict(saved[0])  # the reference loop reads it
    tensor_lr = opt.param_groups[0]["lr"]
    saved[0]["param_groups"][0]["lr"] = saved[1]["param_groups"][0]["lr"] = 2e-3
    seed_batch._load_stacked(opt, saved)
    assert opt.param_groups[0]["lr"] is tensor_lr and float(tensor_lr) == pytest.approx(2e-3)


# ---------------------------------------------------------------------------------------
# On a GPU: graphed runs equal eager runs
# ---------------------------------------------------------------------------------------

SEEDS = (0, 1)


def _gpu_run(tmp_path, name, graphs, **kw):
    outs = [tmp_path / name / f"seed{s}" for s in SEEDS]
    seed_batch.train(
        [tiny_config(s) for s in SEEDS],
        tiny_data(),
        outs,
        device="cuda",
        progress=False,
        cuda_graphs=graphs,
        **kw,
    )
    return outs


@cuda
def test_a_graphed_run_equals_the_eager_batched_run_and_the_single_runs(tmp_path):
    graphed, eager = _gpu_run(tmp_path, "graphed", True), _gpu_run(tmp_path, "eager", False)
    for s, g, e in zip(SEEDS, graphed, eager):
        assert_close_params(final_params(g), final_params(e), rtol=1e-5, atol=1e-6)
        single = tmp_path / "single" / f"seed{s}"
        train(tiny_config(s), tiny_data(), single, device="cuda", progress=False)
        assert_close_params(final_params(g), final_params(single))
        for stage in ("behavior", "critic", "policy"):
            hg = artifacts.load_torch(g / f"{stage}.pt")["history"]
            he = artifacts.load_torch(e / f"{stage}.pt")["history"]
            assert len(hg) == len(he)
            for a, b in zip(hg, he):
                assert a == pytest.approx(b, rel=1e-5, abs=1e-6), stage


@cuda
def test_a_killed_graphed_run_resumes_to_the_same_result(tmp_path):
    ref = _gpu_run(tmp_path, "ref", True)
    outs = [tmp_path / "killed" / f"seed{s}" for s in SEEDS]
    cfgs = [tiny_config(s) for s in SEEDS]
    with pytest.raises(Interrupted):
        seed_batch.train(cfgs, tiny_data(), outs, device="cuda", progress=False, stop_after={"policy": 30})
    seed_batch.train(cfgs, tiny_data(), outs, device="cuda", progress=False)
    for a, b in zip(ref, outs):
        assert_close_params(final_params(a), final_params(b), rtol=1e-5, atol=1e-6)


@cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_a_graphed_reduced_precision_run_equals_the_eager_one(tmp_path, precision):
    """The captured graph replays the TF32 / bf16 kernels the eager update runs (and re-casts the weights)."""
    sets = {f"{stage}.precision": precision for stage in ("behavior", "critic", "policy")}
    runs = {}
    for graphs in (True, False):
        outs = [tmp_path / f"{graphs}" / f"seed{s}" for s in SEEDS]
        seed_batch.train(
            [tiny_config(s, **sets) for s in SEEDS],
            tiny_data(),
            outs,
            device="cuda",
            progress=False,
            cuda_graphs=graphs,
        )
        runs[graphs] = outs
    for g, e in zip(runs[True], runs[False]):
        assert_close_params(final_params(g), final_params(e), rtol=1e-4, atol=1e-5)


@cuda
def test_a_compiled_graphed_run_equals_the_eager_batched_run(tmp_path):
    """torch.compile's kernels captured in the CUDA graph: same run up to rounding."""
    graphed, eager = _gpu_run(tmp_path, "compiled", True, compile=True), _gpu_run(tmp_path, "eager", False)
    for g, e in zip(graphed, eager):
        assert_close_params(final_params(g), final_params(e), rtol=1e-3, atol=1e-4)


@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_graphed_stages_side_by_side_equal_them_in_turn(tmp_path, compile):
    """overlap=True: behavior and critic warm up, compile, capture in turn, then replay on two streams."""
    sets = {"behavior.precision": "bf16", "critic.precision": "tf32", "policy.precision": "tf32"}
    runs = {}
    for overlap in (False, True):
        outs = [tmp_path / f"{overlap}" / f"seed{s}" for s in SEEDS]
        seed_batch.train(
            [tiny_config(s, **sets) for s in SEEDS],
            tiny_data(),
            outs,
            device="cuda",
            progress=False,
            compile=compile,
            overlap=overlap,
        )
        runs[overlap] = outs
    for a, b in zip(runs[False], runs[True]):
        assert_close_params(final_params(a), final_params(b), rtol=1e-5, atol=1e-6)
