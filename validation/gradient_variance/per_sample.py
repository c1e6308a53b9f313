"""Per-sample gradients of the E6 surrogate in the policy parameters; their per-layer Gram matrices."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from srpo import policy as srpo_policy
from srpo.config import PolicyConfig

Layers = list[tuple[str, slice]]


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (no dropout in eps_psi, as in the policy stage), then restore."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@dataclasses.dataclass(frozen=True)
class SurrogateTerms:
    """The theta-independent pieces of E6 for M draws, at the policy's current actions.

    They do not depend on the weighting or the baseline, so one evaluation of eps_psi and
    grad_a Q serves every setting measured on the same draws.
    """

    t: Tensor  # (M,)
    eps: Tensor  # (M, A)
    eps_pred: Tensor  # (M, A) eps_psi(alpha_t pi(s) + sigma_t eps | s, t)
    q_grad: Tensor  # (M, A) grad_a Q(s, a) at a = pi(s), RMS-normalized if pc.normalize_q_grad


@torch.no_grad()
def surrogate_terms(
    policy: nn.Module,
    behavior_model: nn.Module,
    critic: Any,
    states: Tensor,
    t: Tensor,
    eps: Tensor,
    pc: PolicyConfig,
    chunk: int = 4096,
) -> SurrogateTerms:
    """eps_psi and grad_a Q at a = pi(s) for each draw: :func:`srpo.policy.surrogate_inputs`, as training."""
    if not (len(states) == len(t) == len(eps)):
        raise ValueError(
            f"states, t and eps need one row per draw; got {len(states)}, {len(t)} and {len(eps)}"
        )
    preds, qgs = [], []
    with _eval_mode(policy, behavior_model):
        for i in range(0, len(states), chunk):
            s, tt, e = states[i : i + chunk], t[i : i + chunk], eps[i : i + chunk]
            eps_pred, q_grad = srpo_policy.surrogate_inputs(
                policy(s), behavior_model, critic.target_q_mean, s, tt, e, pc.normalize_q_grad
            )
            preds.append(eps_pred)
            qgs.append(q_grad)
    return SurrogateTerms(t, eps, torch.cat(preds), torch.cat(qgs))


def surrogate_direction(parts: SurrogateTerms, pc: PolicyConfig, weighting: str, baseline: bool) -> Tensor:
    """d_i = w(t_i)(eps_psi - [eps_i]) - beta grad_a Q: d surrogate_loss / d a on a batch of one (E6)."""
    reg = srpo_policy.behavior_direction(parts.eps_pred, parts.eps, parts.t, weighting, baseline)
    return srpo_policy.action_direction(reg, parts.q_grad, pc.beta)


def parameter_layers(policy: nn.Module) -> Layers:
    """(layer name, slice of the flattened parameter vector) per module owning parameters, in order."""
    layers: Layers = []
    start = 0
    for name, p in policy.named_parameters():
        layer = name.rpartition(".")[0] or name
        stop = start + p.numel()
        if layers and layers[-1][0] == layer:
            layers[-1] = (layer, slice(layers[-1][1].start, stop))
        else:
            layers.append((layer, slice(start, stop)))
        start = stop
    return layers


def policy_vjp(
    policy: nn.Module, states: Tensor, directions: Tensor, chunk: int = 256
) -> tuple[Tensor, Layers]:
    """Per-sample J_theta pi(s_i)^T d_i, flattened to (M, P), with the layer slices.

    It is the per-sample gradient of pi(s_i) . d_i, i.e. of ``surrogate_loss`` on a batch of
    one with d_i as its (detached) direction. ``vmap`` over samples of ``grad`` of a
    ``functional_call``; chunks bound the memory to ``chunk`` x P.
    """
    names = [n for n, _ in policy.named_parameters()]
    params = {n: p.detach() for n, p in policy.named_parameters()}
    buffers = {n: b.detach() for n, b in policy.named_buffers()}

    def one(p: dict[str, Tensor], s: Tensor, d: Tensor) -> Tensor:
        return (functional_call(policy, (p, buffers), (s[None],))[0] * d).sum()

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    out = []
    with _eval_mode(policy):
        for i in range(0, len(states), chunk):
            g = per_sample(params, states[i : i + chunk], directions[i : i + chunk])
            out.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1))
    return torch.cat(out), parameter_layers(policy)


def per_sample_gradients(
    policy: nn.Module,
    behavior_model: nn.Module,
    critic: Any,
    states: Tensor,
    t: Tensor,
    eps: Tensor,
    pc: PolicyConfig,
    *,
    baseline: bool,
    weighting: str,
    chunk: int = 256,
) -> tuple[Tensor, Layers]:
    """Per-sample E6 gradients (M, P) w.r.t. the policy parameters, and the layer slices.

    Row i is the gradient of ``surrogate_loss`` (method §3) on the batch of one (s_i, t_i, eps_i),
    with ``weighting`` and ``baseline`` in place of ``pc``'s (beta and normalize_q_grad come
    from ``pc``). Its mean over a batch is the gradient training computes for that batch.
    """
    parts = surrogate_terms(policy, behavior_model, critic, states, t, eps, pc)
    return policy_vjp(policy, states, surrogate_direction(parts, pc, weighting, baseline), chunk)


def linear_modules(policy: nn.Module) -> list[tuple[str, nn.Linear]] | None:
    """The policy's parameter-owning modules in :func:`parameter_layers` order, if all are nn.Linear."""
    modules = dict(policy.named_modules())
    out = []
    for name, _ in parameter_layers(policy):
        mod = modules.get(name)
        if (
            not isinstance(mod, nn.Linear)
            or [n for n, _ in mod.named_parameters()] != ["weight", "bias"][: len(list(mod.parameters()))]
        ):
            return None
        out.append((name, mod))
    return out


def _linear_factors(
    policy: nn.Module, states: Tensor, directions: Sequence[Tensor]
) -> list[list[tuple[Tensor, Tensor]]]:
    """Per direction set, per linear layer: (delta (M, out), h (M, in [+ 1 for the bias])).

    The per-sample gradient of pi(s_i) . d_i w.r.t. a layer z = W h + b is delta_i h_i^T (and
    delta_i for b), delta_i = d(pi(s_i) . d_i)/d z_i; appending a 1 to h covers the bias. One
    batched forward pass gives every h; one backward pass per direction set gives every delta
    (a sample's delta depends on that sample alone: the policy MLP has no batch coupling).
    """
    mods = linear_modules(policy)
    if mods is None:
        raise ValueError("the factored Grams need a policy whose parameters all belong to nn.Linear modules")
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(name: str):
        def save(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[name], outputs[name] = args[0].detach(), out

        return save

    handles = [mod.register_forward_hook(hook(name)) for name, mod in mods]
    try:
        with torch.enable_grad(), _eval_mode(policy):
            # A graph to the layer outputs, even for a policy with frozen parameters.
            action = policy(states.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    zs = [outputs[name] for name, _ in mods]
    hs = [
        torch.cat([inputs[n], torch.ones_like(inputs[n][:, :1])], 1) if mod.bias is not None else inputs[n]
        for n, mod in mods
    ]
    result = []
    for k, d in enumerate(directions):
        deltas = torch.autograd.grad((action * d).sum(), zs, retain_graph=k < len(directions) - 1)
        result.append(list(zip(deltas, hs)))
    return result


def linear_layer_grams(policy: nn.Module, states: Tensor, directions: Sequence[Tensor]) -> list[Tensor]:
    """Per-layer Gram matrices (L, M, M) of the per-sample gradients J_theta pi(s_i)^T d_i, for each
    direction set d in ``directions``, without forming the (M, P) gradients.

    With the factors of :func:`_linear_factors` the Gram entries of a layer factor as

        <g_i, g_j>_layer = (delta_i . delta_j)(h_i . h_j + 1)

    (the per-example gradient trick of Goodfellow 2015): M^2 (in + out) work instead of
    M^2 in out. Requires every parameter to live in an nn.Linear (:func:`linear_modules`);
    the result equals the Gram of :func:`policy_vjp`'s rows (checked in the tests).
    """
    return [
        torch.stack([(dl @ dl.T) * (h @ h.T) for dl, h in f])
        for f in _linear_factors(policy, states, directions)
    ]
