"""The score-regularized policy gradient (E6) and its options."""

import math

import pytest
import torch
from hypothesis import given, strategies as st
from strategies import mixtures

from srpo import mixture, policy, schedule
from srpo.policy import DeterministicPolicy

T = st.floats(min_value=1e-3, max_value=0.999)


def _documented_weight(t: float, kind: str) -> float:
    """w(t) from docs/method.md §2-§3 in plain floats: log alpha_t = -(20 - 0.1) t^2 / 4 - 0.1 t / 2."""
    alpha = math.exp(-(20 - 0.1) * t * t / 4 - 0.1 * t / 2)
    sigma = math.sqrt(1 - alpha * alpha)
    return {"sigma2": sigma**2, "one": 1.0, "score": alpha / sigma}[kind]


@pytest.mark.parametrize("kind", ["sigma2", "one", "score"])
def test_weightings_match_the_documented_formula(kind):
    ts = [0.02, 0.1, 0.3, 0.5, 0.7, 0.98]
    got = policy.weight(torch.tensor(ts, dtype=torch.float64), kind).tolist()
    assert got == pytest.approx([_documented_weight(t, kind) for t in ts], rel=1e-9)


def test_weightings_pinned_at_t_half():
    """Literal values (computed once by hand from the formula): a change of schedule shows here too."""
    half = torch.tensor([0.5], dtype=torch.float64)
    assert float(policy.weight(half, "sigma2")) == pytest.approx(0.9209361875468395, rel=1e-12)
    assert float(policy.weight(half, "score")) == pytest.approx(0.2930043761500848, rel=1e-12)


def test_unknown_weighting():
    with pytest.raises(ValueError, match="unknown weighting 'sigma'"):
        policy.weight(torch.tensor([0.5]), "sigma")


@given(st.integers(1, 6), st.integers(0, 1000))
def test_normalized_q_grad_has_unit_rms(d, seed):
    g = torch.randn(32, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 7
    rms = policy.normalize_q_grad(g).pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones(32, dtype=torch.float64), atol=1e-6)


def test_surrogate_loss_gradient_is_minus_e6():
    """d loss / d a = (w (eps_psi - eps) - beta grad Q) / B, so ascent on E6 = descent on the loss."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    direction, q_grad = (
        torch.randn(8, 3, generator=g, dtype=torch.float64),
        torch.randn(8, 3, generator=g, dtype=torch.float64),
    )
    (grad,) = torch.autograd.grad(policy.surrogate_loss(a, direction, q_grad, beta=0.3).mean(), a)
    assert torch.allclose(grad, (direction - 0.3 * q_grad) / 8)


def test_time_sampling_range_and_fixed():
    g = torch.Generator().manual_seed(0)
    t = policy.sample_policy_time(10_000, (0.02, 0.98), None, g, torch.device("cpu"), torch.float64)
    assert t.min() >= 0.02 and t.max() <= 0.98 and abs(float(t.mean()) - 0.5) < 0.01
    t = policy.sample_policy_time(5, (0.02, 0.98), 0.3, g, torch.device("cpu"), torch.float64)
    assert torch.all(t == 0.3)


def _regularizer_draws(mix, action, weighting, baseline, n, seed):
    """n independent draws of w(t)(eps*(a_t, t) - [eps]) at a fixed action (the E6 regularizer)."""
    g = torch.Generator().manual_seed(seed)
    t = policy.sample_policy_time(n, (0.02, 0.98), None, g, torch.device("cpu"), torch.float64)
    eps = torch.randn(n, mix.dim, generator=g, dtype=torch.float64)
    a_t = schedule.diffuse(action.expand(n, -1), t, eps)
    return policy.behavior_direction(mixture.exact_eps(mix, a_t, t), eps, t, weighting, baseline)


@given(
    mixtures(max_components=4, max_dim=2), st.sampled_from(["sigma2", "one", "score"]), st.integers(0, 10_000)
)
def test_baseline_leaves_expected_gradient_unchanged(mix, weighting, seed):
    """Paired z-test on the difference of the two estimators (= w(t) eps, mean zero).

    Tolerance: |mean difference| < 4.5 standard errors per coordinate, a false-alarm
    rate below 1e-5 per coordinate if the baseline is unbiased.
    """
    action = (
        1.6 * torch.rand(1, mix.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.8
    )
    n = 20_000
    with_b = _regularizer_draws(mix, action, weighting, True, n, seed)
    without_b = _regularizer_draws(mix, action, weighting, False, n, seed)
    diff = without_b - with_b
    z = diff.mean(0) / (diff.std(0) / math.sqrt(n))
    assert torch.all(z.abs() < 4.5), z


def test_baseline_term_does_not_depend_on_theta():
    """With the same generator, the eps subtracted is identical whatever the policy's parameters."""
    state = torch.zeros(64, 3)
    grads = []
    for init_seed in (0, 1):
        torch.manual_seed(init_seed)
        pi = DeterministicPolicy(3, 2, (16,))
        g = torch.Generator().manual_seed(123)
        a = pi(state)
        t = policy.sample_policy_time(64, (0.02, 0.98), None, g, torch.device("cpu"), torch.float32)
        eps = torch.randn(a.shape, generator=g)
        # Only the baseline part: its gradient contribution is -w eps d pi / d theta.
        only_baseline = policy.behavior_direction(torch.zeros_like(eps), eps, t, "sigma2", True)
        grads.append(only_baseline)
    assert torch.equal(grads[0], grads[1])


def test_baseline_reduces_variance_at_small_noise():
    """Sanity check of the mechanism (method §9) on a narrow Gaussian: not a claim about every case."""
    mix = mixture.GaussianMixture(
        torch.tensor([1.0], dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        0.01 * torch.eye(2, dtype=torch.float64)[None],
    )
    action = torch.tensor([[0.05, -0.02]], dtype=torch.float64)
    v_with = _regularizer_draws(mix, action, "sigma2", True, 20_000, 0).var(0).sum()
    v_without = _regularizer_draws(mix, action, "sigma2", False, 20_000, 0).var(0).sum()
    assert v_with < v_without
