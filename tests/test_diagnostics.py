"""Diagnostics on known answers: hand-computed returns, a chain MDP's critic, a policy on the data."""

import numpy as np
import pytest
import torch

from srpo_bench.validation import diagnostics


def test_discounted_returns_by_hand():
    # Two episodes: rows 0-2 end in a terminal, rows 3-4 are cut by a timeout. gamma = 0.5:
    # G_0 = 1 + .5 + .25, G_1 = 1 + .5, G_2 = 1; G_3 = 2 + .5 * 2, G_4 = 2.
    rewards = [1.0, 1.0, 1.0, 2.0, 2.0]
    terminals = [0, 0, 1, 0, 0]
    ends = [0, 0, 1, 0, 1]
    g, complete = diagnostics.discounted_returns(rewards, terminals, ends, gamma=0.5, tolerance=0.2)
    assert np.allclose(g, [1.75, 1.5, 1.0, 3.0, 2.0])
    # The cut episode misses gamma^2 = 0.25 (row 3) and gamma^1 = 0.5 (row 4) of its discount mass.
    assert complete.tolist() == [True, True, True, False, False]
    _, loose = diagnostics.discounted_returns(rewards, terminals, ends, gamma=0.5, tolerance=0.25)
    assert loose.tolist() == [True, True, True, True, False]


def _chain(n_states: int, episodes: int) -> dict[str, np.ndarray]:
    """A chain s_0 -> s_1 -> ... -> s_{n-1}, one action, reward 1 on the last step, then a terminal."""
    obs = np.eye(n_states, dtype=np.float32)
    s = np.tile(np.arange(n_states), episodes)
    nxt = np.minimum(s + 1, n_states - 1)
    last = s == n_states - 1
    return {
        "obs": obs[s],
        "next_obs": obs[nxt],
        "act": np.zeros((len(s), 1), np.float32),
        "rew": last.astype(np.float32),
        "term": last.astype(np.float32),
        "state": s,
    }


def test_critic_accuracy_on_a_chain_whose_values_are_known():
    from srpo.critic import Critic, ema_update, iql_losses

    torch.manual_seed(0)
    n, gamma = 8, 0.9
    data = _chain(n, 4)
    true_q = gamma ** (n - 1 - data["state"])  # Q(s_i, a) = gamma^(n-1-i): one reward at the end
    g, complete = diagnostics.discounted_returns(data["rew"], data["term"], data["term"], gamma)
    assert complete.all() and np.allclose(g, true_q)
    critic = Critic(n, 1, (64, 64))
    opt = torch.optim.Adam([*critic.q.parameters(), *critic.v.parameters()], lr=3e-3)
    t = {k: torch.as_tensor(v) for k, v in data.items() if k != "state"}
    for _ in range(1500):
        v_loss, q_loss, _ = iql_losses(
            critic, t["obs"], t["act"], t["rew"], t["next_obs"], t["term"], 0.7, gamma
        )
        opt.zero_grad()
        (v_loss.mean() + q_loss.mean()).backward()
        opt.step()
        ema_update(critic.q_target, critic.q, 0.05)
    with torch.no_grad():
        q = torch.minimum(*critic.q(t["obs"], t["act"])).numpy()
        v = critic.v(t["obs"]).numpy()
    for pred in (q, v):
        a = diagnostics.agreement(pred, g)
        assert abs(a.bias) < 0.05 and a.rmse < 0.05 and a.spearman > 0.99 and a.n == len(g)
    # An over-estimating critic shows up as bias, not as a loss of rank correlation.
    off = diagnostics.agreement(q + 5.0, g)
    assert off.bias == pytest.approx(5.0 + (q - g).mean()) and off.spearman > 0.99


def test_agreement_refuses_bad_input_and_has_no_correlation_for_constants():
    with pytest.raises(ValueError, match="equally long"):
        diagnostics.agreement([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        diagnostics.agreement([1.0, np.nan], [1.0, 2.0])
    a = diagnostics.agreement([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])
    assert np.isnan(a.pearson) and a.bias == 0.0


def test_a_policy_placed_on_the_data_is_at_distance_zero():
    g = torch.Generator().manual_seed(0)
    states, actions = torch.randn(500, 5, generator=g), torch.rand(500, 3, generator=g) * 2 - 1
    assert torch.equal(
        diagnostics.nearest_action_distance(states, actions, states, actions, chunk=64), torch.zeros(500)
    )
    # Shifted by a known offset in one coordinate: every nearest dataset action is at least
    # that far from the shifted action unless another row's action is closer; bound from above.
    shifted = actions + torch.tensor([0.3, 0.0, 0.0])
    d = diagnostics.nearest_action_distance(states, shifted, states, actions, k_states=1)
    assert torch.allclose(d, torch.full((500,), 0.3), atol=1e-6)


def test_term_comparison_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    s = torch.tensor([[-2.0, 0.0], [0.0, 2.0]])
    c = diagnostics.compare_terms(q, s)
    # norms: Q (1, 2) -> 1.5; score (2, 2) -> 2; cosines -1 and +1.
    assert (c.q_term_norm, c.score_term_norm, c.norm_ratio, c.cosine, c.opposed_fraction) == (
        1.5,
        2.0,
        2.0 / 1.5,
        0.0,
        0.5,
    )


def test_policy_vs_data_and_relative_error():
    p = diagnostics.policy_vs_data(torch.tensor([2.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert (p.q_policy, p.q_data, p.advantage, p.better_fraction) == pytest.approx((7 / 3, 1.0, 4 / 3, 2 / 3))
    err = diagnostics.relative_error(
        torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 4.0], [1.0, 0.0]])
    )
    assert torch.allclose(err, torch.tensor([0.75, 0.0]))
