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


# --- the diagnostics as the pipeline runs them (validation/diagnose.py, diagnostics_report.py) ---


def test_data_spacing_leaves_each_query_s_own_group_out():
    # Four rows at one state, actions 0, 0.1, 0.3, 0.6 on one axis. Each row its own group: the
    # nearest *other* action is 0.1, 0.1, 0.2, 0.3 away. Episodes {0, 1} and {2, 3}: the nearest
    # action of the other episode is 0.3, 0.2, 0.2, 0.5 away.
    states = torch.zeros(4, 2)
    actions = torch.tensor([[0.0], [0.1], [0.3], [0.6]])
    rows = torch.arange(4)
    d = diagnostics.nearest_action_distance(
        states, actions, states, actions, query_groups=rows, data_groups=rows
    )
    assert torch.allclose(d, torch.tensor([0.1, 0.1, 0.2, 0.3]), atol=1e-6)
    ep = torch.tensor([0, 0, 1, 1])
    d = diagnostics.nearest_action_distance(states, actions, states, actions, query_groups=ep, data_groups=ep)
    assert torch.allclose(d, torch.tensor([0.3, 0.2, 0.2, 0.5]), atol=1e-6)
    with pytest.raises(ValueError, match="one group id per query"):
        diagnostics.nearest_action_distance(
            states, actions, states, actions, query_groups=rows[:3], data_groups=rows
        )
    with pytest.raises(ValueError, match="holds every dataset row"):
        one = torch.zeros(4, dtype=torch.long)
        diagnostics.nearest_action_distance(
            states, actions, states, actions, query_groups=one, data_groups=one
        )


def _chain_transitions(n_states: int, episodes: int):
    from srpo.transitions import Transitions

    d = _chain(n_states, episodes)
    return Transitions(
        d["obs"], d["act"], d["rew"], d["next_obs"], d["term"], np.zeros_like(d["term"]), name="chain"
    )


def _chain_config(steps: int):
    from srpo.config import make_config

    sets = {
        "critic.steps": steps,
        "critic.hidden": "64,64",
        "critic.lr": 3e-3,
        "critic.batch_size": 64,
        "critic.gamma": 0.9,
        "critic.target_ema": 0.05,
        "log_every": 50,
    }
    return make_config("bandit-ring8", "smoke", 0, {k: str(v) for k, v in sets.items()})


def test_held_out_critic_on_a_chain_matches_the_known_values_and_converges(tmp_path):
    from srpo_bench.validation import diagnose

    n, gamma = 6, 0.9
    data = _chain_transitions(n, 20)
    res = diagnose.critic_accuracy(_chain_config(480), data, tmp_path, 0.25, 4, 0.05)
    # 5 of 20 episodes held out, every return complete (each episode ends in a terminal).
    assert res["split"]["heldout"]["episodes"] == 5 and res["split"]["rows_with_complete_return"] == 5 * n
    truth = gamma ** (n - 1 - np.arange(n))  # Q(s_i) = V(s_i) = gamma^(n-1-i): one reward at the end
    assert res["return_mean"] == pytest.approx(truth.mean()) and res["return_std"] == pytest.approx(
        truth.std()
    )
    assert [c["step"] for c in res["checks"]] == [120, 240, 360, 480]
    for head in ("q", "v"):
        assert abs(res["final"][head]["bias"]) < 0.05 and res["final"][head]["spearman"] > 0.99
    assert res["convergence"]["converged"] and res["convergence"]["drift"] <= 0.05
    # Stopped early, the critic is still climbing towards the values: not converged.
    early = diagnose.critic_accuracy(_chain_config(40), data, tmp_path / "early", 0.25, 2, 0.05)
    assert not early["convergence"]["converged"] and early["convergence"]["drift"] > 0.05
    assert early["final"]["q"]["bias"] < -0.1  # from Q ~ 0 at initialization: below the truth


def test_eval_steps_and_convergence_by_hand():
    from srpo_bench.validation import diagnose

    assert diagnose.eval_steps(10, 4) == [3, 6, 9, 10] and diagnose.eval_steps(8, 4) == [2, 4, 6, 8]
    # Issue 25's critic: mean Q from 3 to 106 over the last interval: it moved 103/106 of its scale.
    checks = [{"q_mean": 3.0, "q_std": 1.0}, {"q_mean": 106.0, "q_std": 5.0}]
    res = diagnose.convergence(checks, 0.05)
    assert res["drift"] == pytest.approx(103 / 106) and not res["converged"]
    # Mean Q near 0: the spread of Q over states is the scale (0.01 / 0.5 = 0.02 <= 0.05).
    near_zero = [{"q_mean": 0.0, "q_std": 0.4}, {"q_mean": 0.01, "q_std": 0.5}]
    assert diagnose.convergence(near_zero, 0.05)["drift"] == pytest.approx(0.02)
    assert diagnose.convergence(near_zero, 0.05)["converged"]
    assert not diagnose.convergence(checks[:1], 0.05)["converged"]


class _Lookup(torch.nn.Module):
    """A policy placed exactly on the data: at a dataset state it returns that row's action."""

    def __init__(self, states, actions):
        super().__init__()
        self.states, self.actions = states, actions

    def forward(self, s):
        return self.actions[torch.cdist(s, self.states).argmin(1)]


def test_a_policy_placed_on_the_data_is_typical_near_and_no_better_by_q():
    from srpo.behavior import NoisePredictor
    from srpo.config import PolicyConfig
    from srpo_bench.validation import diagnose

    g = torch.Generator().manual_seed(1)
    states, actions = torch.randn(300, 4, generator=g), torch.rand(300, 2, generator=g) * 2 - 1
    model = NoisePredictor(4, 2, 32, 1, 0.0, generator=g).eval()
    w = torch.tensor([1.0, -2.0])
    rows = torch.arange(0, 300, 3)
    res = diagnose.diagnose_policy(
        _Lookup(states, actions), model, lambda s, a: a @ w, states[rows], actions[rows], states, actions,
        PolicyConfig(beta=0.5), seed=0, groups=(rows, torch.arange(300)),
    )  # fmt: skip
    assert res["denoise_ratio"] == [1.0] * 4  # the same actions with the same noise
    assert res["nn_distance_policy"] == 0.0 and res["nn_distance_data"] > 0
    assert res["q"]["advantage"] == 0.0 and res["q"]["better_fraction"] == 0.0
    assert res["terms"]["q_term_norm"] == pytest.approx(0.5 * float(w.norm()))


def test_e6_terms_of_a_policy_by_hand():
    from srpo.config import PolicyConfig
    from srpo_bench.validation import diagnose

    states = torch.zeros(8, 3)
    pi = lambda s: torch.full((s.shape[0], 2), 0.2)  # noqa: E731
    pc = PolicyConfig(beta=0.5, weighting="one", baseline=False)
    # Q(s, a) = -a_0: the Q term is beta (-1, 0); eps_psi = (2, 0): the score term is -(2, 0). Same way.
    same = diagnose.diagnose_policy(
        pi, lambda a, s, t: torch.tensor([2.0, 0.0]).expand_as(a), lambda s, a: -a[:, 0],
        states, torch.zeros(8, 2), states, torch.zeros(8, 2), pc, seed=0,
    )  # fmt: skip
    t = same["terms"]
    assert (t["q_term_norm"], t["score_term_norm"], t["cosine"], t["opposed_fraction"]) == pytest.approx(
        (0.5, 2.0, 1.0, 0.0)
    )
    # eps_psi = (0, -3): the score term (0, 3) is orthogonal to the Q term.
    ortho = diagnose.diagnose_policy(
        pi, lambda a, s, t: torch.tensor([0.0, -3.0]).expand_as(a), lambda s, a: -a[:, 0],
        states, torch.zeros(8, 2), states, torch.zeros(8, 2), pc, seed=0,
    )  # fmt: skip
    assert ortho["terms"]["cosine"] == pytest.approx(0.0) and ortho["terms"]["score_term_norm"] == 3.0
    assert ortho["q"]["advantage"] == pytest.approx(-0.2)  # Q(pi) = -0.2 against Q(data) = 0


def test_learned_score_error_at_the_policy_is_zero_for_the_exact_score_and_grows_with_an_offset():
    from srpo_bench.eval import bandit_tasks
    from srpo_bench.validation import bandits, diagnose

    bandit = bandit_tasks.get_bandit("bandit-ring8")
    data = bandit_tasks.make_dataset(bandit, 500, 0)
    exact = bandits.ExactNoisePredictor(bandit)
    pi = lambda s: torch.full((s.shape[0], 2), 0.3)  # noqa: E731
    rec = diagnose.score_at_policy(pi, exact, exact, data, 0, n_states=64)
    assert rec["rel_error_policy"] == [0.0] * 4 and rec["rel_error_data"] == [0.0] * 4
    # A model off by a constant 0.1 in eps: its relative error is 0.1 / ||eps*|| wherever it is asked.
    off = lambda a, s, t: exact(a, s, t) + 0.1  # noqa: E731
    rec = diagnose.score_at_policy(pi, off, exact, data, 0, n_states=64)
    assert all(e > 0 for e in rec["rel_error_policy"] + rec["rel_error_data"])


def _record(task, seed, q_bias, converged, advantage):
    """A diagnose record with the fields the summary reads; the rest as a policy on the data."""
    check = {
        "q": {"bias": q_bias, "pearson": 0.9, "spearman": 0.9},
        "v": {"bias": 0.0, "spearman": 0.9},
        "q_mean": 1.0,
    }
    pol = {
        "t_grid": [0.2, 0.5],
        "denoise_ratio": [1.0, 1.0],
        "nn_distance_policy": 0.0,
        "nn_distance_data": 0.1,
        "terms": {"q_term_norm": 1.0, "score_term_norm": 1.0, "cosine": -0.5, "opposed_fraction": 1.0},
        "q": {"advantage": advantage, "better_fraction": 0.5},
    }
    return {
        "task": task,
        "seed": seed,
        "critic_heldout": {
            "critic_steps": 100,
            "return_std": 2.0,
            "checks": [{"step": 100, **check}],
            "final": check,
            "convergence": {"drift": 0.0, "converged": converged},
        },
        "run_critic_in_sample": {"q": {"bias": 0.0, "spearman": 1.0}, "return_std": 1.0},
        "policies": {"srpo": {"final": pol, "snapshots": []}},
    }


def test_summary_means_over_seeds_and_the_paragraph_follows_the_numbers():
    from srpo_bench.validation import diagnostics_report as dr

    recs = [
        _record("hopper-medium", s, b, c, a) for s, b, c, a in [(0, 1.0, True, 0.3), (1, 3.0, False, 0.1)]
    ]
    s = dr.summarize(recs, [], 0.95)["tasks"]["hopper-medium"]
    # bias / return std: 0.5 and 1.5 -> mean 1.0, range 0.5 to 1.5 (2 runs: a range, not a CI)
    assert s["critic"]["q_bias_rel"]["value"] == 1.0 and s["critic"]["q_bias_rel"]["kind"] == "range"
    assert (s["critic"]["q_bias_rel"]["low"], s["critic"]["q_bias_rel"]["high"]) == (0.5, 1.5)
    assert s["critic"]["converged"]["value"] == 0.5
    assert s["policies"]["srpo"]["final"]["advantage"]["value"] == pytest.approx(0.2)
    text = dr.paragraph("hopper-medium", s, "srpo")
    assert "over-estimates the return by 1.00 return std" in text and "converged in 1 of 2 runs" in text
    assert (
        "as typical for the behavior model as the data's own actions" in text
        and "claims an improvement" in text
    )
    under = dr.summarize([_record("hopper-medium", 0, -1.0, True, -0.1)], [], 0.95)["tasks"]["hopper-medium"]
    text = dr.paragraph("hopper-medium", under, "srpo")
    assert "under-estimates the return by 0.50" in text and "does not improve on the data" in text
