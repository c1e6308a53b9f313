"""Arithmetic precision of a training stage: exact fp32, TF32 matmuls, or bf16 mixed precision.

- ``fp32``: the paper's and the public code's arithmetic; the default everywhere.
- ``tf32`` (CUDA only): float32 matrix products on tensor cores with inputs rounded to
  TensorFloat-32 (10-bit mantissa, float32 accumulation and outputs). Everything else,
  activations and values included, stays float32.
- ``bf16``: the forward pass under ``torch.autocast(bfloat16)``: matrix products take
  and return bfloat16 (float32 accumulation); parameters, gradients, optimizer state,
  LayerNorm and the loss reductions stay float32. No loss scaling is needed (bfloat16
  has float32's exponent range). Network *outputs* carry bfloat16's 8-bit mantissa, which
  suits the behavior model (eps ~ N(0, I)) but not a critic whose Q-values reach ~100
  (resolution 0.5 there): use tf32 or fp32 for the critic.

Runs in tf32 or bf16 are not equal to fp32 runs up to rounding, only close in
distribution: tests/test_precision.py measures how close, reports/bench/ how much faster.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator, Literal

import torch

Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


def check(precision: str, where: str) -> None:
    """Raise a clear error for an unknown precision name."""
    if precision not in PRECISIONS:
        raise ValueError(f"{where} must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_device(precision: str, device: torch.device | str, where: str = "precision") -> None:
    """Raise a clear error for a precision that ``device`` cannot run (TF32 exists on CUDA only)."""
    check(precision, where)
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise ValueError(
            f"{where}=tf32 needs a CUDA device (TF32 is a tensor-core format), got {device}; "
            "use fp32 or bf16 here"
        )


@contextlib.contextmanager
def stage(precision: Precision, device: torch.device) -> Iterator[None]:
    """The context a whole training stage (forward and backward passes) runs in.

    For ``tf32`` it lets float32 matmuls use TF32 and restores the previous setting on
    exit, so nothing outside the stage changes; a CUDA graph captured inside keeps the
    TF32 kernels it recorded.
    """
    check_device(precision, device)
    if precision != "tf32":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def forward(precision: Precision, device: torch.device) -> ContextManager[None]:
    """The context one training step's forward pass runs in (the backward follows its dtypes).

    Cast weights are not cached (``cache_enabled=False``): every step changes them, and a
    captured CUDA graph must re-cast them on every replay.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
