"""Baselines in the harness: BC, IQL-AWR, diffusion selection; loading every checkpoint kind."""

import numpy as np
import pytest
import torch

from srpo.behavior import sample_actions
from srpo.config import make_config
from srpo.train import train
from srpo.transitions import Transitions
from srpo_bench.eval import bandit_tasks, baselines
from srpo_bench.eval.checkpoints import load_behavior, load_critic, load_policy
from srpo_bench.validation import bandits

TINY = {
    "behavior.steps": "40",
    "behavior.batch_size": "32",
    "behavior.width": "32",
    "behavior.n_blocks": "1",
    "critic.steps": "40",
    "critic.batch_size": "32",
    "critic.hidden": "32,32",
    "policy.steps": "60",
    "policy.batch_size": "32",
    "policy.hidden": "32,32",
    "log_every": "10",
    "checkpoint_every": "20",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = make_config("bandit-ring8", "smoke", 0, TINY)
    data = bandit_tasks.make_dataset(bandit_tasks.get_bandit("bandit-ring8"), 500, 0)
    result = train(cfg, data, out, progress=False, stages=("behavior", "critic"))
    return cfg, data, out, result


def test_awr_with_unit_weights_is_bc():
    g = torch.Generator().manual_seed(0)
    pred, act = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    assert torch.allclose(baselines.awr_loss(pred, act, torch.ones(64)), baselines.bc_loss(pred, act))
    assert float(baselines.bc_loss(act, act)) == 0.0


def test_awr_weights_are_monotone_and_clipped():
    adv = torch.linspace(-5, 5, 101)
    w = baselines.awr_weights(adv, temperature=3.0, clip=100.0)
    assert torch.all(w[1:] >= w[:-1])
    assert float(w.max()) == pytest.approx(100.0)
    assert torch.allclose(w[:40], torch.exp(3.0 * adv[:40]))
    assert torch.isfinite(baselines.awr_weights(torch.tensor([1e6]), 10.0, 100.0)).all()


def test_awr_temperature_follows_the_task():
    assert baselines.BaselineConfig().awr_temperature("locomotion") == 3.0
    assert baselines.BaselineConfig().awr_temperature("antmaze") == 10.0
    assert baselines.BaselineConfig(temperature=0.5).awr_temperature("antmaze") == 0.5
    with pytest.raises(ValueError, match="temperature"):
        baselines.BaselineConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="n_candidates"):
        baselines.BaselineConfig(n_candidates=0)


@pytest.mark.parametrize("method", ["bc", "iql-awr"])
def test_regression_baselines_train_resume_and_load(run, tmp_path, method):
    cfg, data, out, result = run
    critic = result.modules["critic"] if method == "iql-awr" else None
    bcfg = baselines.BaselineConfig()
    pi, hist = baselines.train_regression_policy(
        method, cfg, bcfg, data, critic, tmp_path, torch.device("cpu"), progress=False
    )
    assert len(hist) == 6 and all(np.isfinite(h["loss"]) for h in hist)
    # Finished: a second call loads the checkpoint and trains nothing.
    again, hist2 = baselines.train_regression_policy(
        method, cfg, bcfg, data, critic, tmp_path, torch.device("cpu"), progress=False
    )
    assert hist2 == hist
    loaded, meta = load_policy(tmp_path)
    s = torch.zeros(4, data.state_dim)
    assert torch.equal(loaded(s), pi(s)) and meta["done"]
    # Another config is refused unless restart_on_change.
    other = baselines.BaselineConfig(temperature=1.0 if method == "iql-awr" else None, weight_clip=50.0)
    with pytest.raises(ValueError, match="different"):
        baselines.train_regression_policy(
            method, cfg, other, data, critic, tmp_path, torch.device("cpu"), progress=False
        )
    baselines.train_regression_policy(
        method,
        cfg,
        other,
        data,
        critic,
        tmp_path,
        torch.device("cpu"),
        progress=False,
        restart_on_change=True,
    )


def test_bc_fits_a_deterministic_behavior(tmp_path):
    """BC on actions that are a function of the state drives its regression loss down."""
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((2000, 4)).astype(np.float32)
    data = bandit_tasks.make_dataset(bandit_tasks.get_bandit("bandit-ring8"), 2000, 0)

    data = Transitions(
        obs,
        np.tanh(obs[:, :2]).astype(np.float32),
        data.rewards,
        obs,
        data.terminals,
        data.timeouts,
        name="linear",
    )
    cfg = make_config("bandit-ring8", "smoke", 0, {**TINY, "policy.steps": "300", "policy.batch_size": "128"})
    _, hist = baselines.train_regression_policy(
        "bc", cfg, baselines.BaselineConfig(), data, None, tmp_path, torch.device("cpu"), progress=False
    )
    assert hist[-1]["loss"] < 0.25 * hist[0]["loss"]


def test_awr_needs_a_critic(run, tmp_path):
    cfg, data, _, _ = run
    with pytest.raises(ValueError, match="critic"):
        baselines.train_regression_policy(
            "iql-awr",
            cfg,
            baselines.BaselineConfig(),
            data,
            None,
            tmp_path,
            torch.device("cpu"),
            progress=False,
        )


def test_diffusion_selection_picks_the_best_candidate_by_q():
    bandit = bandit_tasks.get_bandit("bandit-ring8")
    model, critic = bandits.ExactNoisePredictor(bandit), bandits.ExactCritic(bandit)
    states = torch.zeros(3, 1)
    pi = baselines.DiffusionSelectionPolicy(model, critic, 16, 4, torch.Generator().manual_seed(5))
    chosen = pi(states)

    cand = sample_actions(
        model, states.repeat_interleave(16, 0), 4, torch.Generator().manual_seed(5)
    ).reshape(3, 16, 2)
    best = bandit.reward(cand).argmax(1)
    assert torch.equal(chosen, cand[torch.arange(3), best])
    # More candidates can only raise the expected Q of the choice; with 64 it beats a single draw.
    one = baselines.DiffusionSelectionPolicy(model, critic, 1, 4, torch.Generator().manual_seed(1))
    many = baselines.DiffusionSelectionPolicy(model, critic, 64, 4, torch.Generator().manual_seed(1))
    s = torch.zeros(200, 1)
    assert float(bandit.reward(many(s)).mean()) > float(bandit.reward(one(s)).mean())


def test_checkpoint_loaders_rebuild_the_modules(run, tmp_path):
    cfg, data, out, result = run
    b, c = load_behavior(out / "behavior.pt"), load_critic(out / "critic.pt")
    a, s, t = torch.rand(5, 2) * 2 - 1, torch.zeros(5, 1), torch.rand(5)
    result.modules["behavior"].eval()
    assert torch.equal(b(a, s, t), result.modules["behavior"](a, s, t))
    assert torch.equal(c.target_q_mean(s, a), result.modules["critic"].target_q_mean(s, a))
    # The diffusion baseline's policy.pt is rebuilt from its run's behavior model and critic.
    baselines.write_selection_checkpoint(
        out / "diffusion" / "policy.pt", cfg, baselines.BaselineConfig(n_candidates=8, solver_steps=2)
    )
    pi, meta = load_policy(out / "diffusion", seed=3)
    assert isinstance(pi, baselines.DiffusionSelectionPolicy) and pi.n_candidates == 8 and meta["step"] == 0
    assert pi(torch.zeros(2, 1)).shape == (2, 2)
    with pytest.raises(ValueError, match="'critic' checkpoint, expected 'behavior'"):
        load_behavior(out / "critic.pt")
    with pytest.raises(FileNotFoundError, match="run the critic stage"):
        load_critic(tmp_path / "critic.pt")
