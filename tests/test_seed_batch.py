"""Seeds as a batch dimension: each seed of a batched run equals the single run with that seed."""

from pathlib import Path

import pytest
import torch

from srpo import artifacts
from srpo.fast import seed_batch
from srpo.stage_loop import Interrupted
from srpo.train import train
from tests.test_train import final_params, tiny_config, tiny_data

SEEDS = (0, 1, 2)


def batched(tmp_path: Path, name: str, seeds=SEEDS, **kw) -> list[Path]:
    outs = [tmp_path / name / f"seed{s}" for s in seeds]
    seed_batch.train([tiny_config(s) for s in seeds], tiny_data(), outs, progress=False, **kw)
    return outs


def assert_close_params(a: dict, b: dict, rtol=1e-4, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


def test_each_seed_of_a_batched_run_equals_the_single_run_with_that_seed(tmp_path):
    """All three stages, 40 steps each (Adam amplifies any difference in the draws): float tolerance only."""
    outs = batched(tmp_path, "batched")
    data = tiny_data()
    for seed, out in zip(SEEDS, outs):
        single = tmp_path / "single" / f"seed{seed}"
        train(tiny_config(seed), data, single, progress=False)
        assert_close_params(final_params(out), final_params(single))
        for stage in ("behavior", "critic", "policy"):
            hb = artifacts.load_torch(out / f"{stage}.pt")["history"]
            hs = artifacts.load_torch(single / f"{stage}.pt")["history"]
            assert [e["step"] for e in hb] == [e["step"] for e in hs]
            for eb, es in zip(hb, hs):
                assert eb.keys() == es.keys()
                for k in eb:
                    assert eb[k] == pytest.approx(es[k], rel=1e-4, abs=1e-5), (stage, k)
    # and the seeds really are different runs
    p0, p1 = final_params(outs[0]), final_params(outs[1])
    assert not torch.allclose(p0["policy.policy.net.0.weight"], p1["policy.policy.net.0.weight"])


def test_a_single_run_resumes_from_a_batched_checkpoint_and_vice_versa(tmp_path):
    """Checkpoints share one schema: a batched run killed at step 20 finishes as single runs, and back."""
    data = tiny_data()
    outs = [tmp_path / "mixed" / f"seed{s}" for s in SEEDS]
    with pytest.raises(Interrupted):
        seed_batch.train(
            [tiny_config(s) for s in SEEDS],
            data,
            outs,
            progress=False,
            stages=("behavior",),
            stop_after={"behavior": 20},
        )
    for s, out in zip(SEEDS, outs):
        train(tiny_config(s), data, out, progress=False, stages=("behavior",))
        single = tmp_path / "single" / f"seed{s}"
        train(tiny_config(s), data, single, progress=False, stages=("behavior",))
        a, b = artifacts.load_torch(out / "behavior.pt"), artifacts.load_torch(single / "behavior.pt")
        assert a["step"] == b["step"] == 40 and a["done"]
        assert_close_params(a["modules"]["model"], b["modules"]["model"])
    # single runs stopped at step 20, finished as one batch
    outs2 = [tmp_path / "back" / f"seed{s}" for s in SEEDS]
    for s, out in zip(SEEDS, outs2):
        with pytest.raises(Interrupted):
            train(tiny_config(s), data, out, progress=False, stages=("critic",), stop_after={"critic": 20})
    seed_batch.train([tiny_config(s) for s in SEEDS], data, outs2, progress=False, stages=("critic",))
    for s, out in zip(SEEDS, outs2):
        single = tmp_path / "single" / f"seed{s}"
        train(tiny_config(s), data, single, progress=False, stages=("critic",))
        assert_close_params(
            artifacts.load_torch(out / "critic.pt")["modules"]["critic"],
            artifacts.load_torch(single / "critic.pt")["modules"]["critic"],
        )


@pytest.mark.parametrize("stage,at", [("behavior", 20), ("critic", 10), ("policy", 30)])
def test_killed_and_resumed_batched_run_is_bit_identical(tmp_path, stage, at):
    ref = batched(tmp_path, "ref")
    outs = [tmp_path / "killed" / f"seed{s}" for s in SEEDS]
    cfgs, data = [tiny_config(s) for s in SEEDS], tiny_data()
    with pytest.raises(Interrupted):
        seed_batch.train(cfgs, data, outs, progress=False, stop_after={stage: at})
    seed_batch.train(cfgs, data, outs, progress=False)
    for a, b in zip(outs, ref):
        pa, pb = final_params(a), final_params(b)
        assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_a_commit_killed_after_writing_is_finished_and_one_killed_while_writing_is_dropped(tmp_path):
    cfgs, data = [tiny_config(s) for s in SEEDS], tiny_data()
    outs = [tmp_path / f"seed{s}" for s in SEEDS]
    with pytest.raises(Interrupted):
        seed_batch.train(cfgs, data, outs, progress=False, stages=("critic",), stop_after={"critic": 20})
    paths = [o / "critic.pt" for o in outs]
    step20 = [artifacts.load_torch(p) for p in paths]
    # killed during phase 2: seed 0 renamed, seeds 1 and 2 still pending -> finished
    older = {**step20[0], "step": 10}
    artifacts.save_torch(paths[1].with_name("critic.pt.next"), step20[1])
    artifacts.save_torch(paths[2].with_name("critic.pt.next"), step20[2])
    artifacts.save_torch(paths[1], older)
    artifacts.save_torch(paths[2], older)
    seed_batch._recover(paths)
    assert [artifacts.load_torch(p)["step"] for p in paths] == [20, 20, 20]
    assert not any(p.with_name("critic.pt.next").exists() for p in paths)
    # killed during phase 1: only seed 0's next file written -> dropped, step 20 stands
    artifacts.save_torch(paths[0].with_name("critic.pt.next"), {**step20[0], "step": 30})
    seed_batch._recover(paths)
    assert [artifacts.load_torch(p)["step"] for p in paths] == [20, 20, 20]
    assert not paths[0].with_name("critic.pt.next").exists()


def test_bad_seed_groups_are_refused_clearly(tmp_path):
    data = tiny_data()
    with pytest.raises(ValueError, match="share every setting but the seed"):
        seed_batch.train(
            [tiny_config(0), tiny_config(1, **{"critic.lr": "1e-3"})],
            data,
            [tmp_path / "a", tmp_path / "b"],
            progress=False,
            stages=("critic",),
        )
    with pytest.raises(ValueError, match="distinct"):
        seed_batch.train(
            [tiny_config(0), tiny_config(0)], data, [tmp_path / "a", tmp_path / "b"], progress=False
        )


def test_adding_a_seed_trains_only_the_new_one_and_mixed_steps_resume_in_lockstep_groups(tmp_path):
    data = tiny_data()
    outs = {s: tmp_path / f"seed{s}" for s in (0, 1, 2, 3)}
    seed_batch.train(
        [tiny_config(s) for s in (0, 1)], data, [outs[0], outs[1]], progress=False, stages=("critic",)
    )
    before = (outs[0] / "critic.pt").read_bytes()
    with pytest.raises(Interrupted):  # seed 2 stops at step 20; seed 3 has no checkpoint
        seed_batch.train(
            [tiny_config(2)], data, [outs[2]], progress=False, stages=("critic",), stop_after={"critic": 20}
        )
    seed_batch.train(
        [tiny_config(s) for s in (0, 1, 2, 3)], data, list(outs.values()), progress=False, stages=("critic",)
    )
    assert (outs[0] / "critic.pt").read_bytes() == before  # finished: loaded, not retrained
    ref = batched(tmp_path, "ref", seeds=(2, 3), stages=("critic",))
    for s, r in zip((2, 3), ref):
        a, b = artifacts.load_torch(outs[s] / "critic.pt"), artifacts.load_torch(r / "critic.pt")
        assert a["done"] and a["step"] == 40
        assert_close_params(a["modules"]["critic"], b["modules"]["critic"])


@pytest.mark.slow  # torch.compile on a CPU: about a minute; the pipeline's CPU profiles run eager
def test_a_compiled_batched_run_equals_the_eager_batched_run(tmp_path):
    """torch.compile fuses the losses' kernels (the GPU fast path's option): only rounding changes."""
    eager, compiled = batched(tmp_path, "eager"), batched(tmp_path, "compiled", compile=True)
    for e, c in zip(eager, compiled):
        assert_close_params(final_params(e), final_params(c), rtol=1e-3, atol=1e-4)  # Adam amplifies rounding


def test_behavior_and_critic_side_by_side_equal_them_in_turn(tmp_path):
    """overlap=True: the two independent stages in two threads (on a CPU in turn): same results, bitwise."""
    in_turn, side = batched(tmp_path, "in_turn"), batched(tmp_path, "side", overlap=True)
    for a, b in zip(in_turn, side):
        for stage in ("behavior", "critic", "policy"):
            ca, cb = artifacts.load_torch(a / f"{stage}.pt"), artifacts.load_torch(b / f"{stage}.pt")
            assert ca["history"] == cb["history"]
            for name, modules in ca["modules"].items():
                for k, t in modules.items():
                    assert torch.equal(t, cb["modules"][name][k]), (stage, name, k)


def test_side_by_side_raises_a_jobs_error_after_all_jobs_stop(tmp_path):
    finished = []

    def fails(turns):
        raise RuntimeError("job failed")

    def works(turns):
        finished.append(True)
        return 1

    with pytest.raises(RuntimeError, match="job failed"):
        seed_batch.side_by_side({"a": fails, "b": works}, torch.device("cpu"))
    assert finished == [True]
    assert seed_batch.side_by_side({"b": works}, torch.device("cpu"))["b"][0] == 1


def test_fp32_and_tf32_stages_are_refused_side_by_side(tmp_path):
    cfg = tiny_config(0, **{"critic.precision": "tf32"})
    with pytest.raises(ValueError, match="cannot train side by side"):
        seed_batch.check_overlap(cfg)
    seed_batch.check_overlap(tiny_config(0, **{"behavior.precision": "bf16", "critic.precision": "tf32"}))
