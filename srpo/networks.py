"""Network building blocks shared by the critic, the policy and the behavior model (method §5)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: type[nn.Module] = nn.ReLU,
    output_activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """A plain multilayer perceptron: Linear -> activation, repeated, then a linear head."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


def mish_one_exp(x: Tensor) -> Tensor:
    """Mish, x tanh(softplus(x)), written with one exponential: x n / (n + 2), n = e^x (e^x + 2).

    The identity tanh(log(1 + e^x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1) = n / (n + 2). Computed
    in float32 and rounded once to x's dtype, as torch's kernel does; the clamp keeps e^x finite
    (above x = 20 the ratio is 1 in float32, and so is its slope).
    """
    x32 = x.float()
    e = torch.exp(x32.clamp(max=20.0))
    n = e * (e + 2.0)
    return (x32 * (n / (n + 2.0))).to(x.dtype)  # the ratio first: x n alone overflows for x > 1e21


class Mish(nn.Module):
    """The behavior model's activation (method §5): torch's Mish kernel eagerly, :func:`mish_one_exp`
    compiled.

    Under ``torch.compile`` the one-exponential form fuses into a single loop, where inductor's
    lowering of tanh(softplus(x)) evaluates three transcendental functions per element: on a CPU
    that made compiled seed-batched updates 15-19% slower (benchmarks/compile_probe.py --mish).
    Eagerly, torch's single kernel beats the formula's five, so uncompiled runs keep it.
    """

    def forward(self, x: Tensor) -> Tensor:
        return mish_one_exp(x) if torch.compiler.is_compiling() else nn.functional.mish(x)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of the diffusion time: [sin(2 pi W t), cos(2 pi W t)].

    W ~ N(0, scale^2) is drawn once at construction (from the generator passed in,
    so model construction is seeded) and never trained (method §5: 64 features, scale 30).
    """

    def __init__(self, dim: int = 64, scale: float = 30.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.register_buffer("W", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, t: Tensor) -> Tensor:
        proj = 2.0 * math.pi * t[..., None] * self.W
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block: x + Linear(Mish(Linear(LayerNorm(dropout(x))))).

    Dropout is an argument, not a module: the caller passes the scaled keep mask
    (entries 0 or 1 / (1 - p)) drawn from its own generator, so that a training run
    never touches the global RNG and S seeds trained as one batch draw exactly the
    masks that S single runs draw. Without a mask the block is deterministic.
    """

    def __init__(self, width: int, expansion: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width * expansion),
            Mish(),
            nn.Linear(width * expansion, width),
        )

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        return x + self.net(x if keep is None else x * keep)
