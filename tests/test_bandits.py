"""The exact-score bandit suite: its ground truth, and SRPO extraction landing on it."""

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from srpo import mixture, policy, schedule
from srpo.config import make_config
from srpo.train import train_behavior, train_policy
from srpo_bench.eval import bandit_tasks
from srpo_bench.validation import bandits

SHAPES = sorted(bandit_tasks.BANDITS)

# Stated tolerances (distance in action space, actions in [-1, 1]^2).
EXACT_SCORE_TOL = 0.02  # exact eps* and exact Q: only SGD noise separates the policy from the optimum
LEARNED_SCORE_TOL = 0.15  # learned eps_psi (small CPU budget) with the exact Q


@functools.lru_cache(maxsize=None)
def optimum(shape: str) -> bandits.SurrogateOptimum:
    cfg = make_config(f"bandit-{shape}", "smoke")
    return bandits.surrogate_optimum(bandit_tasks.BANDITS[shape], cfg.policy)


def test_suite_has_the_four_shapes():
    assert {"ring8", "grid25", "aniso2", "unequal6"} <= set(SHAPES)
    assert len(bandit_tasks.BANDITS["ring8"].behavior.weights) == 8
    assert len(bandit_tasks.BANDITS["grid25"].behavior.weights) == 25
    w = bandit_tasks.BANDITS["unequal6"].behavior.weights
    assert len(set(w.tolist())) == len(w)  # unequal weights


def test_unknown_bandit():
    with pytest.raises(ValueError, match="known: bandit-"):
        bandit_tasks.get_bandit("bandit-spiral")


@pytest.mark.parametrize("shape", SHAPES)
def test_dataset(shape):
    b = bandit_tasks.BANDITS[shape]
    d1, d2 = bandit_tasks.make_dataset(b, 2000, 3), bandit_tasks.make_dataset(b, 2000, 3)
    assert np.array_equal(d1.actions, d2.actions)
    assert np.abs(d1.actions).max() <= 1.0 and d1.terminals.all() and d1.state_dim == 1
    assert np.allclose(d1.rewards, b.reward(torch.as_tensor(d1.actions)).numpy(), atol=1e-6)
    # The sample's mean matches the mixture's mean (4.5 standard errors).
    mean = (b.behavior.weights[:, None] * b.behavior.means).sum(0).numpy()
    se = d1.actions.std(0) / math.sqrt(2000)
    assert np.all(np.abs(d1.actions.mean(0) - mean) < 4.5 * se)


@settings(max_examples=8)
@given(st.sampled_from(SHAPES), st.sampled_from(["sigma2", "one"]), st.integers(0, 1000))
def test_quadrature_objective_gradient_is_the_mean_e6_direction(shape, weighting, seed):
    """grad J(a) (quadrature, autograd) equals E[beta grad Q - w (eps* - eps)] (Monte Carlo) within 5 SE."""
    b = bandit_tasks.BANDITS[shape]
    pc = make_config(f"bandit-{shape}", "smoke", overrides={"policy.weighting": weighting}).policy
    g = torch.Generator().manual_seed(seed)
    a = (1.4 * torch.rand(1, 2, generator=g, dtype=torch.float64) - 0.7).requires_grad_(True)
    (grad_j,) = torch.autograd.grad(bandits.surrogate_objective(b, a, pc, n_t=64, n_eps=16).sum(), a)
    n = 40_000
    t = policy.sample_policy_time(n, pc.t_range, None, g, torch.device("cpu"), torch.float64)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    a_t = schedule.diffuse(a.detach().expand(n, 2), t, eps)
    reg = policy.behavior_direction(
        mixture.exact_eps(b.behavior, a_t, t), eps, t, pc.weighting, baseline=True
    )
    draws = pc.beta * b.reward_grad(a.detach()) - reg
    se = draws.std(0) / math.sqrt(n)
    assert torch.all((draws.mean(0) - grad_j[0]).abs() < 5 * se + 1e-6), (draws.mean(0), grad_j)


def _quadrature_e6_gradient(b, a, pc, n_t=16, n_eps=6):
    """The library's mean E6 direction, beta grad Q - E[w (eps*)], on the oracle's quadrature nodes."""
    ts, wt = bandits._t_quadrature(pc, n_t)
    eps, we = bandits._eps_quadrature(n_eps)
    t = ts.repeat_interleave(len(eps))
    e = eps.repeat(len(ts), 1)
    a_t = schedule.diffuse(a.expand(len(t), 2), t, e)
    reg = policy.behavior_direction(mixture.exact_eps(b.behavior, a_t, t), e, t, pc.weighting, False)
    mean_reg = ((wt.repeat_interleave(len(eps)) * we.repeat(len(ts)))[:, None] * reg).sum(0)
    return pc.beta * b.reward_grad(a)[0] - mean_reg


def _oracle_gradient(b, a, pc, n_t=16, n_eps=6):
    a = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bandits.surrogate_objective(b, a, pc, n_t=n_t, n_eps=n_eps).sum(), a)
    return g[0]


@pytest.mark.parametrize("weighting", ["sigma2", "one", "score"])
def test_library_e6_gradient_equals_the_oracle_gradient(weighting):
    """Same quadrature nodes on both sides: equal up to rounding, for every weighting (deterministic)."""
    b = bandit_tasks.BANDITS["ring8"]
    pc = make_config("bandit-ring8", "smoke", overrides={"policy.weighting": weighting}).policy
    for a in ([[0.3, -0.2]], [[-0.6, 0.5]], [[0.0, 0.8]]):
        a = torch.tensor(a, dtype=torch.float64)
        assert torch.allclose(_quadrature_e6_gradient(b, a, pc), _oracle_gradient(b, a, pc), atol=1e-9)


def test_oracle_catches_a_wrong_library_weighting(monkeypatch):
    """weight("sigma2") returning sigma instead of sigma^2 must break the agreement with the oracle."""
    b = bandit_tasks.BANDITS["ring8"]
    pc = make_config("bandit-ring8", "smoke", overrides={"policy.weighting": "sigma2"}).policy
    a = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    right = _quadrature_e6_gradient(b, a, pc)
    monkeypatch.setattr(policy, "weight", lambda t, kind: schedule.sigma(t))
    wrong = _quadrature_e6_gradient(b, a, pc)
    oracle = _oracle_gradient(b, a, pc)
    assert torch.allclose(right, oracle, atol=1e-9)
    assert (wrong - oracle).norm() > 1e-2 * oracle.norm(), (wrong, oracle)


@pytest.mark.parametrize("shape", SHAPES)
def test_optimum_is_a_stationary_maximum(shape):
    b, opt = bandit_tasks.BANDITS[shape], optimum(shape)
    pc = make_config(f"bandit-{shape}", "smoke").policy
    a = opt.action[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bandits.surrogate_objective(b, a, pc).sum(), a)
    assert float(g.norm()) < 1e-3
    angles = torch.arange(16, dtype=torch.float64) * math.pi / 8
    ring = opt.action + 0.03 * torch.stack([angles.cos(), angles.sin()], -1)
    assert torch.all(bandits.surrogate_objective(b, ring, pc) < opt.value)


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_score_extraction_lands_on_the_optimum(shape, tmp_path):
    b = bandit_tasks.BANDITS[shape]
    cfg = make_config(f"bandit-{shape}", "smoke", overrides={"policy.steps": "2000", "log_every": "500"})
    data = bandit_tasks.make_dataset(b, 2000, 0)
    pi, _ = train_policy(
        cfg,
        data,
        bandits.ExactNoisePredictor(b),
        bandits.ExactCritic(b),
        tmp_path,
        torch.device("cpu"),
        progress=False,
    )
    report = bandits.policy_report(b, pi, cfg.policy, optimum(shape))
    assert report["distance_to_optimum"] < EXACT_SCORE_TOL, report


def _learned_score_distance(shape: str, tmp_path, steps: str) -> dict:
    """Learned eps_psi (real behavior stage) + exact Q: isolates the score's effect on extraction."""
    b = bandit_tasks.BANDITS[shape]
    cfg = make_config(
        f"bandit-{shape}",
        "smoke",
        overrides={
            "behavior.steps": steps,
            "behavior.width": "128",
            "behavior.n_blocks": "2",
            "policy.steps": "2000",
            "log_every": "500",
            "checkpoint_every": "100000",
        },
    )
    data = bandit_tasks.make_dataset(b, 10_000, 0)
    model, _ = train_behavior(cfg, data, tmp_path, torch.device("cpu"), progress=False)
    pi, _ = train_policy(
        cfg, data, model, bandits.ExactCritic(b), tmp_path, torch.device("cpu"), progress=False
    )
    return bandits.policy_report(b, pi, cfg.policy, optimum(shape))


def test_learned_score_extraction_near_the_optimum(tmp_path):
    report = _learned_score_distance("ring8", tmp_path, "2000")
    assert report["distance_to_optimum"] < LEARNED_SCORE_TOL, report


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_learned_score_extraction_near_the_optimum_every_shape(shape, tmp_path):
    report = _learned_score_distance(shape, tmp_path, "10000")
    assert report["distance_to_optimum"] < LEARNED_SCORE_TOL, report
