"""Exact mixture scores (method §2): the ground truth must itself be right."""

import math

import pytest
import torch
from hypothesis import given, strategies as st
from strategies import mixtures

from srpo import mixture, schedule

times = st.floats(min_value=0.0, max_value=1.0)


@given(mixtures(), times, st.integers(0, 1000))
def test_score_is_gradient_of_log_density(mix, t, seed):
    x = (
        2 * torch.rand(16, mix.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1
    ).requires_grad_(True)
    (auto,) = torch.autograd.grad(mixture.log_prob(mix, x, t).sum(), x)
    assert torch.allclose(mixture.score(mix, x.detach(), t), auto, rtol=1e-6, atol=1e-6)


@given(mixtures(), st.integers(0, 1000))
def test_per_sample_times_agree_with_scalar_time(mix, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(8, mix.dim, generator=g, dtype=torch.float64)
    t = torch.rand(8, generator=g, dtype=torch.float64)
    per_sample = mixture.exact_eps(mix, x, t)
    one_by_one = torch.cat([mixture.exact_eps(mix, x[i : i + 1], t[i]) for i in range(8)])
    assert torch.allclose(per_sample, one_by_one)


@given(mixtures(max_dim=2), st.floats(0.05, 1.0))
def test_diffused_density_is_the_law_of_a_t(mix, t):
    """mu_t from the closed form vs the moments of alpha_t a + sigma_t eps, a ~ mu."""
    g = torch.Generator().manual_seed(0)
    n = 200_000
    a_t = schedule.alpha(torch.tensor(t, dtype=torch.float64)) * mix.sample(n, g)
    a_t = a_t + schedule.sigma(torch.tensor(t, dtype=torch.float64)) * torch.randn(
        n, mix.dim, generator=g, dtype=torch.float64
    )
    # E[grad log mu_t(a_t)] = 0 under mu_t (the score has zero mean), within Monte-Carlo error.
    s = mixture.score(mix, a_t, t)
    se = s.std(0) / math.sqrt(n)
    assert torch.all((s.mean(0)).abs() < 5 * se + 1e-9)


def test_normalized_in_one_dimension():
    mix = mixture.GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-0.5], [0.4]], dtype=torch.float64),
        torch.tensor([[[0.01]], [[0.04]]], dtype=torch.float64),
    )
    x = torch.linspace(-8, 8, 40001, dtype=torch.float64)[:, None]
    for t in (0.0, 0.3, 0.9):
        mass = torch.trapezoid(mixture.log_prob(mix, x, t).exp(), x[:, 0])
        assert abs(float(mass) - 1.0) < 1e-6


@given(mixtures(), st.floats(1e-3, 1.0), st.integers(0, 1000))
def test_exact_eps_is_minus_sigma_score(mix, t, seed):
    x = torch.rand(4, mix.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    sig = schedule.sigma(torch.tensor(t, dtype=torch.float64))
    assert torch.allclose(mixture.exact_eps(mix, x, t), -sig * mixture.score(mix, x, t))


def test_bad_mixtures_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        mixture.GaussianMixture(torch.tensor([0.5, 0.6]), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="covs must have shape"):
        mixture.GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.eye(3)[None])
