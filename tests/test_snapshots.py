"""Policy snapshots for the evaluation curve: where they go, what they hold, and exact resume."""

from pathlib import Path

import pytest
import torch

from srpo import artifacts
from srpo.fast import seed_batch
from srpo.stage_loop import Interrupted, snapshot_due, snapshot_path
from srpo.train import train
from srpo_bench.eval import baselines
from srpo_bench.eval.checkpoints import list_snapshots, load_policy
from tests.test_train import tiny_config, tiny_data

# policy.steps is 40 in tiny_config: snapshots at 15 and 30, and at the last step 40.
EVERY = {"policy.snapshot_every": "15"}
STEPS = [15, 30, 40]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """Behavior model and critic of seeds 0 and 1 (trained once; every test trains only policies)."""
    root = tmp_path_factory.mktemp("up")
    data = tiny_data()
    for s in (0, 1):
        train(tiny_config(s), data, root / f"seed{s}", progress=False, stages=("behavior", "critic"))
    return root, data


def policy_weights(path: Path) -> dict[str, torch.Tensor]:
    return artifacts.load_torch(path)["modules"]["policy"]


def test_snapshot_schedule_and_path():
    assert [s for s in range(1, 41) if snapshot_due(s, 40, 15)] == STEPS
    assert not any(snapshot_due(s, 40, 0) for s in range(1, 41))
    assert snapshot_path(Path("run"), 20000) == Path("run/snapshots/step0020000.pt")


def test_reference_loop_keeps_loadable_snapshots_and_a_killed_run_rewrites_them_identically(
    upstream, tmp_path
):
    root, data = upstream
    cfg = tiny_config(0, **EVERY)
    up = root / "seed0"
    train(cfg, data, tmp_path / "full", progress=False, stages=("policy",), upstream=up)
    snaps = list_snapshots(tmp_path / "full")
    assert snaps == [(s, tmp_path / "full" / "snapshots" / f"step{s:07d}.pt") for s in STEPS]
    # The last snapshot is the final policy; earlier ones are the policy of their step.
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            policy_weights(snaps[-1][1]).values(), policy_weights(tmp_path / "full" / "policy.pt").values()
        )
    )
    pi15, meta = load_policy(snaps[0][1])
    assert meta["step"] == 15 and not meta["done"]
    s = torch.ones(3, data.state_dim)
    assert not torch.equal(pi15(s), load_policy(tmp_path / "full")[0](s))
    # Killed at step 18 (last checkpoint 10, after snapshot 15), then resumed from step 10: the same
    # snapshots, bit for bit (15 rewritten).
    with pytest.raises(Interrupted):
        train(
            cfg,
            data,
            tmp_path / "killed",
            progress=False,
            stages=("policy",),
            upstream=up,
            stop_after={"policy": 18},
        )
    assert [st for st, _ in list_snapshots(tmp_path / "killed")] == [15]
    train(cfg, data, tmp_path / "killed", progress=False, stages=("policy",), upstream=up)
    resumed = list_snapshots(tmp_path / "killed")
    assert [st for st, _ in resumed] == STEPS
    for (_, a), (_, b) in zip(resumed, snaps):
        wa, wb = policy_weights(a), policy_weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_a_policy_stage_starting_over_deletes_the_snapshots_of_the_earlier_run(upstream, tmp_path):
    root, data = upstream
    train(
        tiny_config(0, **EVERY), data, tmp_path, progress=False, stages=("policy",), upstream=root / "seed0"
    )
    (tmp_path / "snapshots" / "notes.txt").write_text("not a snapshot")
    assert len(list_snapshots(tmp_path)) == 3  # other files are not listed
    train(
        tiny_config(0),
        data,
        tmp_path,
        progress=False,
        stages=("policy",),
        upstream=root / "seed0",
        restart_on_change=True,
    )
    assert list_snapshots(tmp_path) == [] and list_snapshots(tmp_path / "policy.pt") == []


def test_seed_batched_snapshots_match_the_reference_loop_and_resume_bit_exactly(upstream, tmp_path):
    root, data = upstream
    seeds = (0, 1)
    cfgs = [tiny_config(s, **EVERY) for s in seeds]
    ups = [root / f"seed{s}" for s in seeds]

    def run(name, **kw):
        outs = [tmp_path / name / f"seed{s}" for s in seeds]
        seed_batch.train(cfgs, data, outs, progress=False, stages=("policy",), upstreams=ups, **kw)
        return outs

    full = run("full")
    with pytest.raises(Interrupted):
        run("killed", stop_after={"policy": 18})
    killed = run("killed")
    single = tmp_path / "single"
    train(cfgs[1], data, single, progress=False, stages=("policy",), upstream=ups[1])
    for a, b in zip(full, killed):
        sa, sb = list_snapshots(a), list_snapshots(b)
        assert [s for s, _ in sa] == [s for s, _ in sb] == STEPS
        for (_, pa), (_, pb) in zip(sa, sb):
            wa, wb = policy_weights(pa), policy_weights(pb)
            assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for (_, pa), (_, pb) in zip(list_snapshots(full[1]), list_snapshots(single)):
        wa, wb = policy_weights(pa), policy_weights(pb)
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_regression_baselines_keep_snapshots_too(upstream, tmp_path):
    _, data = upstream
    cfg = tiny_config(0, **EVERY)
    baselines.train_regression_policy(
        "bc", cfg, baselines.BaselineConfig(), data, None, tmp_path, torch.device("cpu"), progress=False
    )
    snaps = list_snapshots(tmp_path)
    assert [s for s, _ in snaps] == STEPS
    pi, meta = load_policy(snaps[1][1])
    assert meta["step"] == 30 and meta["config"]["method"] == "bc"


def test_snapshot_every_must_not_be_negative():
    with pytest.raises(ValueError, match="policy.snapshot_every must be >= 0"):
        tiny_config(0, **{"policy.snapshot_every": "-5"})
