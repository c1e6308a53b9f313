"""Deterministic policy and the score-regularized policy gradient (method §3, E6; SRPO §3.2-3.3).

The policy a = pi_theta(s) is trained by the surrogate gradient

    grad_theta = E_{s,t,eps}[ beta grad_a Q(s,a)|_{a=pi(s)} - w(t)(eps_psi(a_t|s,t) - eps) ] d pi(s)/d theta,
    a_t = alpha_t pi(s) + sigma_t eps,

written as a loss whose autograd gradient is the negative of that expression. This module
is the surrogate's one home: :func:`srpo_loss` is what training (and the seed-batched fast
path, by vmap) minimizes, and validation measures the same pieces (:func:`surrogate_inputs`,
:func:`behavior_direction`, :func:`action_direction`). Each option the paper and the public
code disagree on is an explicit argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from srpo import schedule
from srpo.networks import mlp

if TYPE_CHECKING:  # srpo.config imports this module (WEIGHTINGS)
    from srpo.config import PolicyConfig

Weighting = Literal["sigma2", "one", "score"]
WEIGHTINGS: tuple[str, ...] = ("sigma2", "one", "score")


class DeterministicPolicy(nn.Module):
    """pi_theta(s): MLP with a tanh output in [-1, 1]^d (method §5: 256-256, AntMaze 4 layers)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.net = mlp(state_dim, hidden, action_dim, nn.ReLU, nn.Tanh)

    def forward(self, state: Tensor) -> Tensor:
        return self.net(state)


def weight(t: Tensor, kind: Weighting) -> Tensor:
    """w(t), the paper's omega(t) with its alpha_t / sigma_t factor folded in (method §3).

    - "sigma2": w = sigma_t^2, the paper's choice and the public code's default;
    - "one":    w = 1;
    - "score":  w = alpha_t / sigma_t, an unweighted ensemble of KL terms.
    """
    if kind == "sigma2":
        return schedule.sigma(t) ** 2
    if kind == "one":
        return torch.ones_like(t)
    if kind == "score":
        return schedule.alpha(t) / schedule.sigma(t)
    raise ValueError(f"unknown weighting {kind!r}; choose one of {WEIGHTINGS}")


def sample_policy_time(
    batch: int,
    t_range: tuple[float, float],
    t_fixed: float | None,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Diffusion times for one policy batch: U(t_range) (public code: (0.02, 0.98)) or fixed."""
    if t_fixed is not None:
        return torch.full((batch,), t_fixed, device=device, dtype=dtype)
    lo, hi = t_range
    return lo + (hi - lo) * torch.rand(batch, generator=generator, device=device, dtype=dtype)


def sample_surrogate_noise(
    batch: int,
    action_dim: int,
    t_range: tuple[float, float],
    t_fixed: float | None,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """(t, eps) for one policy batch, drawn in this order from ``generator`` (E6 averages over both)."""
    t = sample_policy_time(batch, t_range, t_fixed, generator, device, dtype)
    return t, torch.randn(batch, action_dim, generator=generator, device=device, dtype=dtype)


def normalize_q_grad(q_grad: Tensor, eps: float = 1e-8) -> Tensor:
    """Divide each sample's grad_a Q by its root-mean-square over action dims ("regq", AntMaze)."""
    rms = q_grad.pow(2).mean(-1, keepdim=True).sqrt()
    return q_grad / (rms + eps)


def behavior_direction(
    eps_pred: Tensor, eps: Tensor, t: Tensor, weighting: Weighting, baseline: bool
) -> Tensor:
    """The regularizer's per-sample direction w(t) (eps_psi - eps) of E6 (without the minus sign).

    ``baseline`` subtracts eps (the paper's Alg. 1); the public code's default does not.
    Subtracting eps leaves the expectation unchanged because E[eps] = 0 and eps does not
    depend on theta or s.
    """
    direction = eps_pred - eps if baseline else eps_pred
    return weight(t, weighting)[:, None] * direction


def action_direction(reg_direction: Tensor, q_grad: Tensor, beta: float) -> Tensor:
    """d = w(t)(eps_psi - [eps]) - beta grad_a Q per sample: the surrogate's gradient in the action (E6)."""
    return reg_direction - beta * q_grad


def surrogate_loss(action: Tensor, reg_direction: Tensor, q_grad: Tensor, beta: float) -> Tensor:
    """Per sample, a loss whose gradient w.r.t. theta is minus that sample's E6 gradient.

    loss_b = (w (eps_psi - eps) - beta grad_a Q)_detached . a_b (method §3: "as a loss for
    autograd"); its batch mean is the training loss.
    """
    return (action_direction(reg_direction.detach(), q_grad.detach(), beta) * action).sum(-1)


def surrogate_inputs(
    action: Tensor,
    behavior_model: Callable[[Tensor, Tensor, Tensor], Tensor],
    critic_q: Callable[[Tensor, Tensor], Tensor],
    state: Tensor,
    t: Tensor,
    eps: Tensor,
    normalize: bool,
) -> tuple[Tensor, Tensor]:
    """eps_psi(alpha_t a + sigma_t eps | s, t) and grad_a Q(s, a) at the policy's actions ``a``.

    Neither depends on the weighting, the baseline or beta, so validation evaluates them once
    for every setting it measures. ``normalize``: per-sample RMS normalization of grad_a Q.
    """
    with torch.no_grad():
        eps_pred = behavior_model(schedule.diffuse(action.detach(), t, eps), state, t)
    q_grad = q_action_grad(critic_q, state, action)
    if normalize:
        q_grad = normalize_q_grad(q_grad)
    return eps_pred, q_grad


def q_action_grad(critic_q: Callable[[Tensor, Tensor], Tensor], state: Tensor, action: Tensor) -> Tensor:
    """grad_a Q(s, a) at the given actions, per sample, with no graph kept.

    Written with ``torch.func.grad`` so that it also runs under ``vmap`` (seeds as a batch dimension).
    """
    with torch.enable_grad():
        g = torch.func.grad(lambda a: critic_q(state, a).sum())(action.detach())
    return g.detach()


def srpo_loss(
    pi: nn.Module,
    behavior_model: nn.Module,
    critic_q: Callable[[Tensor, Tensor], Tensor],
    state: Tensor,
    t: Tensor,
    eps: Tensor,
    pc: PolicyConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One batch of the E6 surrogate, per sample: a = pi(s), a_t = alpha_t a + sigma_t eps.

    Returns the per-sample loss (the training loss is its mean) and per-sample diagnostics,
    the norms of grad_a Q and of the regularizer's direction. ``critic_q(s, a)`` is the Q the
    policy ascends (the mean of the target heads, method §3); ``t`` and ``eps`` come from
    :func:`sample_surrogate_noise`.
    """
    action = pi(state)
    eps_pred, q_grad = surrogate_inputs(action, behavior_model, critic_q, state, t, eps, pc.normalize_q_grad)
    direction = behavior_direction(eps_pred, eps, t, pc.weighting, pc.baseline)
    loss = surrogate_loss(action, direction, q_grad, pc.beta)
    return loss, {"q_grad_norm": q_grad.norm(dim=-1), "reg_norm": direction.norm(dim=-1)}
