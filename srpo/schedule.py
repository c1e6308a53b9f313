"""Variance-preserving (VP-SDE) noise schedule, method §2 (E3).

The forward process is ``a_t = alpha_t * a_0 + sigma_t * eps`` with
``alpha_t**2 + sigma_t**2 = 1`` and a linear beta schedule
``beta(t) = beta_min + t * (beta_max - beta_min)`` on ``t in [0, 1]``
(Song et al. 2021; SRPO §2 and Appendix B use the same VP schedule).

Every function here is pure: tensors in, tensors out, no state. ``t`` may have
any shape; the result has the same shape, dtype and device.
"""

from __future__ import annotations

import torch
from torch import Tensor

BETA_MIN = 0.1
BETA_MAX = 20.0


def beta(t: Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> Tensor:
    """Instantaneous noise rate beta(t) of the VP-SDE."""
    return beta_min + t * (beta_max - beta_min)


def log_alpha(t: Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> Tensor:
    """log alpha_t = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2   (E3)."""
    return -(beta_max - beta_min) * t * t / 4.0 - beta_min * t / 2.0


def alpha(t: Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> Tensor:
    """Signal scale alpha_t of the diffused action."""
    return torch.exp(log_alpha(t, beta_min, beta_max))


def sigma(t: Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> Tensor:
    """Noise scale sigma_t = sqrt(1 - alpha_t^2)   (E3).

    Computed as sqrt(-expm1(2 log alpha_t)) so that small t keeps full precision
    (1 - alpha_t^2 cancels catastrophically near t = 0).
    """
    return torch.sqrt(-torch.expm1(2.0 * log_alpha(t, beta_min, beta_max)))


def log_snr(t: Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> Tensor:
    """Half log signal-to-noise ratio lambda_t = log(alpha_t / sigma_t).

    Strictly decreasing in t; DPM-Solver steps uniformly in this quantity.
    """
    la = log_alpha(t, beta_min, beta_max)
    return la - 0.5 * torch.log(-torch.expm1(2.0 * la))


def t_from_log_snr(lam: Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> Tensor:
    """Inverse of :func:`log_snr`: the diffusion time whose lambda_t is ``lam``.

    From alpha^2 / sigma^2 = exp(2 lambda): log alpha = -softplus(-2 lambda) / 2,
    then solve the quadratic (E3) for its positive root.
    """
    la = -0.5 * torch.nn.functional.softplus(-2.0 * lam)
    a = beta_max - beta_min
    b = beta_min
    return (-b / 2.0 + torch.sqrt(b * b / 4.0 - a * la)) / (a / 2.0)


def diffuse(a0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Forward process sample a_t = alpha_t a_0 + sigma_t eps (method §2).

    ``t`` has shape (B,) and broadcasts over the action dimensions of ``a0``.
    """
    t = t.reshape(t.shape + (1,) * (a0.dim() - t.dim()))
    return alpha(t) * a0 + sigma(t) * eps
