"""IQL pieces (method §4)."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from srpo import critic


@given(st.floats(0.5, 0.99), st.integers(0, 1000))
def test_expectile_loss_weights(tau, seed):
    u = torch.randn(100, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = torch.where(u < 0, 1 - tau, tau) * u**2
    assert torch.allclose(critic.expectile_loss(u, tau).mean(), expected.mean())


def test_expectile_minimizer_is_the_expectile():
    """argmin_v E L2^tau(x - v) is the tau-expectile: above the mean for tau > 0.5."""
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([v], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = critic.expectile_loss(x - v, 0.9).mean()
        loss.backward()
        return loss

    opt.step(closure)
    v = v.detach()
    w = torch.where(x - v < 0, 0.1, 0.9)
    assert abs(float((w * (x - v)).mean())) < 1e-5  # first-order condition
    assert v > x.mean()


def test_td_target_stops_at_terminals():
    r, v = torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0])
    out = critic.td_target(r, torch.tensor([0.0, 1.0]), v, 0.99)
    assert torch.allclose(out, torch.tensor([1.0 + 9.9, 1.0]))


def test_ema_update():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    critic.ema_update(a, b, 0.25)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_reward_scaling_uses_episode_return_spread():
    rewards = np.array([1.0, 1.0, 1.0, 5.0, 5.0], dtype=np.float32)
    ends = np.array([0, 0, 1, 0, 1], dtype=bool)  # episodes: returns 3 and 10
    assert np.allclose(critic.episode_returns(rewards, ends), [3.0, 10.0])
    assert np.allclose(critic.scale_rewards_locomotion(rewards, ends), rewards * 1000 / 7)


def test_trailing_partial_episode_counts():
    assert np.allclose(critic.episode_returns(np.ones(5), np.array([0, 1, 0, 0, 0], bool)), [2.0, 3.0])


def test_constant_returns_rejected():
    with pytest.raises(ValueError, match="same return"):
        critic.scale_rewards_locomotion(np.ones(4), np.array([0, 1, 0, 1], bool))


def test_antmaze_shift():
    assert np.allclose(critic.shift_rewards_antmaze(np.array([0.0, 1.0])), [-1.0, 0.0])
