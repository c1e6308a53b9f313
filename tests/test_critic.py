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


def test_q_loss_averages_the_two_heads():
    # (1/2) [(q1 - y)^2 + (q2 - y)^2] per sample: (1/2)(1 + 9) = 5 and (1/2)(4 + 0) = 2.
    q1, q2, y = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.0])
    assert torch.allclose(critic.q_loss(q1, q2, y), torch.tensor([5.0, 2.0]))


def _d4rl_like() -> tuple[np.ndarray, np.ndarray, float, float]:
    """Five stretches, built so that the authors' segments differ from the true episodes.

    A: 1000 rows of reward 1, cut by a timeout      -> return 1000
    B: 300 rows of reward 2, ending at a terminal   -> return 600
    D: 700 rows of reward 1, cut by a timeout
    E: 500 rows of reward 1, ending at a terminal
    tail: 120 rows of reward 10, cut by the end of the data
    The authors' scan ignores timeouts: D and E's first 300 rows reach 1000 rows (return 1000),
    E's remaining 200 rows end at its terminal (return 200), the tail is incomplete and dropped.
    Segment returns 1000, 600, 1000, 200: scale 1000 / 800 = 1.25. Counting the true episodes and
    the tail instead (1000, 600, 700, 500, 1200) would give 1000 / 1000 = 1.0.
    """
    parts = [(1000, 1.0, False), (300, 2.0, True), (700, 1.0, False), (500, 1.0, True), (120, 10.0, False)]
    rewards = np.concatenate([np.full(n, r) for n, r, _ in parts]).astype(np.float32)
    terminals = np.zeros(len(rewards), bool)
    for end, (n, _, term) in zip(np.cumsum([n for n, _, _ in parts]) - 1, parts):
        terminals[end] = term
    return rewards, terminals, 1.25, 1.0


def test_reward_scale_is_the_authors_on_a_hand_built_dataset():
    rewards, terminals, theirs, _ = _d4rl_like()
    assert np.allclose(critic.segment_returns(rewards, terminals), [1000.0, 600.0, 1000.0, 200.0])
    assert critic.locomotion_reward_scale(rewards, terminals) == pytest.approx(theirs)
    assert np.allclose(critic.scale_rewards_locomotion(rewards, terminals), rewards * theirs)


def test_a_stretch_of_exactly_the_episode_length_ending_at_a_terminal_is_one_segment():
    rewards = np.ones(8)
    terminals = np.zeros(8, bool)
    terminals[3] = True  # 4 rows then a terminal; then 4 rows with none: one full chunk of 4
    assert np.allclose(critic.segment_returns(rewards, terminals, max_episode_steps=4), [4.0, 4.0])
    terminals[3], terminals[5] = (
        False,
        True,
    )  # 6 rows to a terminal: a chunk of 4, then 2; 2 trailing rows dropped
    assert np.allclose(critic.segment_returns(rewards, terminals, max_episode_steps=4), [4.0, 2.0])


def test_constant_returns_and_no_complete_episode_are_refused():
    with pytest.raises(ValueError, match="same return"):
        critic.scale_rewards_locomotion(np.ones(4), np.array([0, 1, 0, 1], bool))
    with pytest.raises(ValueError, match="no episode ends"):
        critic.scale_rewards_locomotion(np.ones(10), np.zeros(10, bool))


def test_antmaze_shift():
    assert np.allclose(critic.shift_rewards_antmaze(np.array([0.0, 1.0])), [-1.0, 0.0])
