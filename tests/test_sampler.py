"""The behavior sampler (DPM-Solver-1 / DDIM) draws from mu when given the exact eps*."""

import pytest
import torch

from srpo.behavior import sample_actions
from srpo_bench.eval import bandit_tasks
from srpo_bench.validation import bandits


@pytest.mark.parametrize("shape", ["ring8", "aniso2"])
def test_exact_eps_sampler_recovers_the_mixture(shape):
    b = bandit_tasks.BANDITS[shape]
    model = bandits.ExactNoisePredictor(b)
    n = 4000
    state = torch.zeros(n, 1, dtype=torch.float64)
    a = sample_actions(model, state, n_steps=30, generator=torch.Generator().manual_seed(0))
    mix = b.behavior
    mean = (mix.weights[:, None] * mix.means).sum(0)
    second = (mix.weights[:, None, None] * (mix.covs + mix.means[:, :, None] * mix.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    assert torch.allclose(a.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(a.T), cov, atol=0.03)
    # Most samples sit on a mode: within 3 (largest) standard deviations of some component mean.
    radius = 3 * torch.linalg.eigvalsh(mix.covs).max().sqrt()
    near = (torch.cdist(a, mix.means).min(-1).values < radius).float().mean()
    assert near > 0.9


def test_sampler_is_seeded_and_bounded():
    b = bandit_tasks.BANDITS["grid25"]
    model = bandits.ExactNoisePredictor(b)
    state = torch.zeros(64, 1, dtype=torch.float64)
    a1 = sample_actions(model, state, 5, torch.Generator().manual_seed(1))
    a2 = sample_actions(model, state, 5, torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2) and a1.abs().max() <= 1.0


def test_sampler_needs_a_step():
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        sample_actions(bandits.ExactNoisePredictor(bandit_tasks.BANDITS["ring8"]), torch.zeros(2, 1), 0)
