"""benchmarks/profile_update.py: the per-update op table that explains the throughput benchmark's rates."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_update  # noqa: E402


def test_the_reference_critic_update_is_split_into_ops_per_update():
    result = profile_update.profile("critic", "reference", 1, steps=4, device=torch.device("cpu"), top=50)
    ops = {op["op"]: op for op in result["ops"]}
    # The reference critic's Linear layers are addmm (one per layer and pass): they must be found and counted.
    assert "aten::addmm" in ops and ops["aten::addmm"]["calls_per_update"] >= 6
    assert 0 < result["gemm_share"] < 1
    # the table is the top ops by self time, and each row's share and per-update time are one measurement
    ms = [op["self_ms_per_update"] for op in result["ops"]]
    assert ms == sorted(ms, reverse=True)
    for op in result["ops"]:
        assert op["share"] * result["self_cpu_s_total"] * 1e3 / result["steps"] == pytest.approx(
            op["self_ms_per_update"], rel=1e-9
        )
    # per update: every update runs the same ops, so a whole number of calls each
    assert ops["aten::addmm"]["calls_per_update"] == int(ops["aten::addmm"]["calls_per_update"])
