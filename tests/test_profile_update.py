"""benchmarks/profile_update.py: the per-update op table that explains the throughput benchmark's rates."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_update  # noqa: E402


def test_the_reference_critic_update_is_split_into_ops_per_update():
    result = profile_update.profile("critic", "reference", 1, steps=4, device=torch.device("cpu"), top=50)
    ops = {op["op"]: op for op in result["ops"]}
    # The reference critic's Linear layers are addmm (one per layer and pass): they must be found and counted.
    assert "aten::addmm" in ops and ops["aten::addmm"]["calls_per_update"] >= 6
    assert 0 < result["gemm_share"] < 1
    assert sum(op["share"] for op in result["ops"]) <= 1 + 1e-9
    assert all(op["self_ms_per_update"] >= 0 for op in result["ops"])
