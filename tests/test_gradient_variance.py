"""Gradient variance of E6 (validation/gradient_variance.py): exactness of the per-sample
gradients, the statistics on known distributions, and the measurement of a real run."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from srpo import artifacts, policy as srpo_policy, schedule
from srpo.behavior import NoisePredictor
from srpo.config import make_config
from srpo.critic import Critic
from srpo.policy import WEIGHTINGS, DeterministicPolicy, srpo_loss
from srpo.train import train, train_policy
from srpo_bench.eval import bandit_tasks
from srpo_bench.validation import bandits, gradient_variance as gv

F64 = torch.float64
CPU = torch.device("cpu")
TINY = {
    "policy.steps": "40",
    "policy.batch_size": "32",
    "policy.hidden": "32,32",
    "log_every": "5",
    "checkpoint_every": "25",
}


def learned_models(state_dim=3, action_dim=2, seed=0):
    """A small random policy, eps_psi and critic in float64: states vary, the score is not exact."""
    torch.manual_seed(seed)
    pi = DeterministicPolicy(state_dim, action_dim, (8, 8)).to(F64)
    bm = (
        NoisePredictor(state_dim, action_dim, width=16, n_blocks=1, dropout=0.0, time_features=8)
        .to(F64)
        .eval()
    )
    critic = Critic(state_dim, action_dim, (16, 16)).to(F64)
    return pi, bm, critic


def draws(m, state_dim, action_dim, pc, seed=1):
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(64, state_dim, generator=g, dtype=F64)
    return gv.draw_samples(pool, action_dim, pc, m, g)


def flat_grad(module, loss):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(module.parameters()))])


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("baseline,normalize", [(True, False), (False, False), (True, True)])
def test_per_sample_gradients_equal_autograd_on_a_batch_of_one(weighting, baseline, normalize):
    pi, bm, critic = learned_models()
    pc = make_config("hopper-medium", "smoke", overrides={"policy.normalize_q_grad": str(normalize)}).policy
    s, t, eps = draws(5, 3, 2, pc)
    g, layers = gv.per_sample_gradients(
        pi, bm, critic, s, t, eps, pc, baseline=baseline, weighting=weighting, chunk=2
    )
    assert g.shape == (5, sum(p.numel() for p in pi.parameters())) and g.dtype == F64
    assert [n for n, _ in layers] == ["net.0", "net.2", "net.4"] and layers[-1][1].stop == g.shape[1]
    for i in range(5):
        # The training computation (srpo_loss's steps) on the single draw i, by plain autograd.
        si, ti, ei = s[i : i + 1], t[i : i + 1], eps[i : i + 1]
        a = pi(si)
        with torch.no_grad():
            eps_pred = bm(schedule.diffuse(a.detach(), ti, ei), si, ti)
        q_grad = srpo_policy.q_action_grad(critic.target_q_mean, si, a)
        if normalize:
            q_grad = srpo_policy.normalize_q_grad(q_grad)
        direction = srpo_policy.behavior_direction(eps_pred, ei, ti, weighting, baseline)
        ref = flat_grad(pi, srpo_policy.surrogate_loss(a, direction, q_grad, pc.beta).mean())
        torch.testing.assert_close(g[i], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("baseline", [True, False])
def test_mean_of_per_sample_gradients_is_the_training_batch_gradient(baseline):
    """On the training loop's (t, eps), the mean per-sample gradient is srpo_loss's autograd gradient."""
    pi, bm, critic = learned_models(seed=3)
    cfg = make_config(
        "walker2d-medium", "smoke", overrides={"policy.baseline": str(baseline), "policy.weighting": "score"}
    )
    s = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    pc = cfg.policy
    t, eps = srpo_policy.sample_surrogate_noise(
        16, 2, pc.t_range, pc.t_fixed, torch.Generator().manual_seed(7), CPU, F64
    )
    loss, _ = srpo_loss(pi, bm, critic.target_q_mean, s, t, eps, pc)
    ref = flat_grad(pi, loss.mean())
    g, _ = gv.per_sample_gradients(
        pi, bm, critic, s, t, eps, cfg.policy, baseline=baseline, weighting="score"
    )
    torch.testing.assert_close(g.mean(0), ref, rtol=1e-10, atol=1e-12)


def test_factored_layer_grams_equal_the_grams_of_the_vmap_gradients():
    pi, _, _ = learned_models(state_dim=4, action_dim=3)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(30, 4, generator=g, dtype=F64)
    ds = [torch.randn(30, 3, generator=g, dtype=F64) for _ in range(2)]
    grams = gv.linear_layer_grams(pi, s, ds)
    for d, gram in zip(ds, grams):
        rows, layers = gv.policy_vjp(pi, s, d)
        ref = torch.stack([rows[:, sl] @ rows[:, sl].T for _, sl in layers])
        torch.testing.assert_close(gram, ref, rtol=1e-10, atol=1e-12)
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    assert gv.linear_modules(other) is None
    with pytest.raises(ValueError, match="nn.Linear"):
        gv.linear_layer_grams(other, s, ds)


def test_measure_checkpoint_same_numbers_with_factored_and_vmap_grams():
    pi, bm, critic = learned_models(seed=5)
    pc = make_config("hopper-medium", "smoke").policy
    pool = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = dict(n_samples=40, batch_size=16, reps=60, seed=2)  # layers 32 and 18 wide: rows; 72: a Gram
    a = gv.measure_checkpoint(pi, bm, critic, pool, pc, method="factored", **kw)
    b = gv.measure_checkpoint(pi, bm, critic, pool, pc, method="vmap", **kw)
    assert (a["method"], b["method"]) == ("factored", "vmap")
    fa, fb = (np.array(leaves(x["weightings"])) for x in (a, b))
    np.testing.assert_allclose(fa, fb, rtol=1e-8, atol=1e-12)


def leaves(tree):
    """Every number of a nested record, in order."""
    if isinstance(tree, dict):
        return [v for k in sorted(tree) for v in leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [v for x in tree for v in leaves(x)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def gaussian_rows(m, mean, cov_factor, seed):
    g = torch.Generator().manual_seed(seed)
    return mean + torch.randn(m, cov_factor.shape[1], generator=g, dtype=F64) @ cov_factor.T


def test_batch_stats_cover_known_mean_and_covariance():
    """Coverage of the 95% bootstrap CIs over 40 independent Gaussian data sets with known moments.

    The count of covering CIs is Binomial(40, 0.95) if they are calibrated; >= 34 fails with
    probability about 1.4% for calibrated CIs (the data are seeded, so the outcome is fixed).
    The total-variance CI must also be about as wide as the Gaussian theory says:
    sd(tr S) = sqrt(2 tr Sigma^2 / (M - 1)).
    """
    p, m, b, n_sets = 12, 1000, 16, 40
    g0 = torch.Generator().manual_seed(100)
    mean = 0.1 * torch.randn(p, generator=g0, dtype=F64)
    factor = torch.randn(p, p, generator=g0, dtype=F64) / math.sqrt(p)
    cov = factor @ factor.T
    truth = {"total_variance": float(torch.trace(cov)) / b, "mean_sq_norm": float(mean @ mean)}
    truth["snr"] = truth["mean_sq_norm"] / truth["total_variance"]
    layers = [("a", slice(0, 5)), ("b", slice(5, 12))]
    covered = {q: 0 for q in truth}
    widths = []
    for seed in range(n_sets):
        st = gv.batch_gradient_stats(gaussian_rows(m, mean, factor, seed), b, layers, reps=200, seed=seed)
        for q, v in truth.items():
            covered[q] += st[q]["low"] <= v <= st[q]["high"]
            assert st[q]["n_samples"] == m
        widths.append(st["total_variance"]["high"] - st["total_variance"]["low"])
    assert all(c >= 34 for c in covered.values()), covered
    theory = 2 * 1.96 * math.sqrt(2 * float(torch.trace(cov @ cov)) / (m - 1)) / b
    assert np.mean(widths) == pytest.approx(theory, rel=0.2)


def test_batch_stats_point_estimates_and_layers():
    p, m, b = 12, 500, 16
    rows = gaussian_rows(m, torch.ones(p, dtype=F64), torch.eye(p, dtype=F64), 0)
    st = gv.batch_gradient_stats(rows, b, [("a", slice(0, 5)), ("b", slice(5, 12))], reps=50)
    # Point estimates are the textbook ones: ddof-1 trace over B, and the U-statistic of ||mean||^2.
    x = rows.numpy()
    assert st["total_variance"]["value"] == pytest.approx(np.trace(np.cov(x.T)) / b, rel=1e-10)
    gram = x @ x.T
    assert st["mean_sq_norm"]["value"] == pytest.approx(
        (gram.sum() - np.trace(gram)) / (m * (m - 1)), rel=1e-9
    )
    assert st["snr"]["value"] == pytest.approx(st["mean_sq_norm"]["value"] / st["total_variance"]["value"])
    per = st["per_layer"]
    assert per["a"]["n_params"] == 5 and per["b"]["n_params"] == 7
    for q in ("total_variance", "mean_sq_norm"):
        assert per["a"][q]["value"] + per["b"][q]["value"] == pytest.approx(st[q]["value"], rel=1e-12)
    with pytest.raises(ValueError, match="layers cover 5 parameters"):
        gv.batch_gradient_stats(rows, b, [("a", slice(0, 5))])


def test_sign_flip_test_accepts_a_zero_mean_and_detects_a_shift():
    p, m = 40, 1000
    factor = torch.eye(p, dtype=F64)
    zero = gaussian_rows(m, torch.zeros(p, dtype=F64), factor, 0)
    off = gaussian_rows(m, torch.zeros(p, dtype=F64), factor, 1)
    # Rank-deficient mean-zero differences (like a bandit's) and full-rank ones are both accepted...
    for diff in (
        zero,
        zero[:, :2] @ torch.randn(2, p, generator=torch.Generator().manual_seed(0), dtype=F64),
    ):
        res = gv.compare_baseline(off + diff, off, 8, reps=500, seed=0)
        assert res["unbiasedness"]["agree"], res["unbiasedness"]
        assert res["mean_diff_sq_norm"]["low"] <= 0 <= res["mean_diff_sq_norm"]["high"]
    # ... and a shift of ||delta||^2 = 6 sqrt(2 p) / m (6 null standard deviations of T / m(m-1)) is found.
    shift = torch.full((p,), math.sqrt(6 * math.sqrt(2 * p) / m / p), dtype=F64)
    res = gv.compare_baseline(off + zero + shift, off, 8, reps=500, seed=0)
    assert not res["unbiasedness"]["agree"] and res["unbiasedness"]["p_value"] < 0.01
    assert res["unbiasedness"]["z"] > 3


def test_noise_floor_is_the_standard_error_of_the_mean_difference_relative_to_the_gradient():
    """sqrt(tr Cov d / M) / ||E g_off||: with d ~ N(0, I_p) and ||E g_off|| = 2, sqrt(40 / 1000) / 2 = 0.1."""
    p, m = 40, 1000
    mean = torch.zeros(p, dtype=F64)
    mean[0] = 2.0
    off = gaussian_rows(m, mean, 0.5 * torch.eye(p, dtype=F64), 1)
    d = gaussian_rows(m, torch.zeros(p, dtype=F64), torch.eye(p, dtype=F64), 0)
    res = gv.compare_baseline(off + d, off, 8, reps=200, seed=0)
    assert res["noise_floor"] == pytest.approx(0.1, rel=0.05)
    # A relative difference of pure noise is of the floor's order, not near zero.
    assert 0.2 * res["noise_floor"] < res["relative_mean_diff"]["high"] < 5 * res["noise_floor"]


def test_baseline_keeps_the_mean_on_an_exact_bandit():
    bandit = bandit_tasks.get_bandit("bandit-ring8")
    bm, critic = bandits.ExactNoisePredictor(bandit), bandits.ExactCritic(bandit)
    torch.manual_seed(0)
    pi = DeterministicPolicy(1, 2, (16, 16)).to(F64)
    pc = make_config("bandit-ring8", "smoke").policy
    res = gv.measure_checkpoint(
        pi,
        bm,
        critic,
        torch.zeros(8, 1, dtype=F64),
        pc,
        n_samples=2000,
        batch_size=256,
        confidence=0.95,
        reps=400,
        seed=0,
    )
    for w in WEIGHTINGS:
        comp = res["weightings"][w]["compare"]
        # A false alarm has probability 1% per weighting if the baseline is unbiased (it is: E eps = 0).
        assert comp["unbiasedness"]["p_value"] > 0.01, (w, comp["unbiasedness"])
        ratio = comp["variance_ratio"]
        assert math.isfinite(ratio["value"]) and ratio["value"] > 0 and 0 < ratio["low"] <= ratio["high"]
        for side in ("on", "off"):
            st = res["weightings"][w][side]
            assert st["total_variance"]["value"] > 0 and math.isfinite(st["snr"]["value"])
    # sigma2: w = sigma_t^2 is ~1 where t is large, and there eps*(a_t) ~ eps (a_t is mostly noise),
    # so subtracting eps removes most of the regularizer's noise; where eps* does not track eps
    # (small t) sigma_t^2 is small. Measured here: ratio 0.012 [0.010, 0.013]; 0.1 is an 8x margin.
    assert res["weightings"]["sigma2"]["compare"]["variance_ratio"]["high"] < 0.1
    assert res["layers"][0] == {"name": "net.0", "n_params": 32}


def same(a, b):
    """Equal records, NaN included (a relative difference is NaN when ||E g_off||^2 is not positive)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def tiny_bandit_cfg(seed=0, **extra):
    return make_config("bandit-ring8", "smoke", seed, {**TINY, **extra})


def test_measure_run_measures_the_uninterrupted_run(tmp_path):
    bandit = bandit_tasks.get_bandit("bandit-ring8")
    bm, critic = bandits.ExactNoisePredictor(bandit), bandits.ExactCritic(bandit)
    cfg, data = tiny_bandit_cfg(), bandit_tasks.make_dataset(bandit, 500, 0)
    kw = dict(fractions=(0.0, 0.25, 0.5, 1.0), n_samples=64, reps=50, seed=3)
    rec = gv.measure_run(cfg, data, bm, critic, tmp_path / "m", **kw)
    assert [c["step"] for c in rec["checkpoints"]] == [0, 10, 20, 40]
    ref_pi, _ = train_policy(cfg, data, bm, critic, tmp_path / "ref", CPU, progress=False)
    final = artifacts.load_torch(tmp_path / "m" / "policy.pt")
    ref = artifacts.load_torch(tmp_path / "ref" / "policy.pt")
    assert final["done"] and final["step"] == 40
    for k, v in ref["modules"]["policy"].items():
        assert torch.equal(v, final["modules"]["policy"][k]), k
    # What was measured at the last checkpoint is that policy; at step 0, train_policy's initial policy.
    again = gv.measure_checkpoint(
        ref_pi,
        bm,
        critic,
        data.to_tensors(CPU, torch.float32)["obs"],
        cfg.policy,
        64,
        None,
        torch.Generator().manual_seed(rec["draw_seed"]),
        reps=50,
        seed=3,
    )
    assert same(again["weightings"], rec["checkpoints"][-1]["weightings"])
    init_pi, _ = train_policy(
        tiny_bandit_cfg(**{"policy.steps": "0"}), data, bm, critic, tmp_path / "init", CPU, progress=False
    )
    for k, v in init_pi.state_dict().items():
        assert torch.equal(v, gv.initial_policy(cfg, data, CPU, torch.float32).state_dict()[k]), k
    snaps = {
        k: artifacts.load_torch(tmp_path / "m" / "gradient_variance" / f"policy_step{k}.pt") for k in (10, 20)
    }
    assert not torch.equal(snaps[10]["policy"]["net.2.weight"], snaps[20]["policy"]["net.2.weight"])
    # A second call (e.g. after a kill) reuses the snapshots kept on the way and measures the same.
    assert same(gv.measure_run(cfg, data, bm, critic, tmp_path / "m", **kw), rec)


def test_measure_bandit_summary_figure_and_report(tmp_path):
    recs = [
        gv.measure_bandit(
            "ring8",
            s,
            tiny_bandit_cfg(s),
            tmp_path / f"s{s}",
            n_data=500,
            fractions=(0.5, 1.0),
            n_samples=96,
            reps=100,
        )
        for s in (0, 1)
    ]
    for rec in recs:
        for ck in rec["checkpoints"]:
            for w, res in ck["weightings"].items():
                for side in ("on", "off"):
                    for q in gv.QUANTITIES:
                        e = res[side][q]
                        assert all(math.isfinite(e[k]) for k in ("value", "low", "high")), (w, side, q, e)
    one = gv.summarize(recs[:1])
    two = gv.summarize(recs)
    # Records read back from JSON carry null for a NaN noise floor: the summary takes them.
    nulled = copy.deepcopy(recs)
    for rec in nulled:
        for ck in rec["checkpoints"]:
            for res in ck["weightings"].values():
                res["compare"]["noise_floor"] = None
    floors = gv.summarize(nulled)["targets"]["bandit-ring8"]["checkpoints"][0]["baseline"]
    assert all(math.isnan(b["noise_floor"]) for b in floors.values())
    e1 = one["targets"]["bandit-ring8"]["checkpoints"][1]["settings"]["sigma2"]["on"]["total_variance"]
    e2 = two["targets"]["bandit-ring8"]["checkpoints"][1]["settings"]["sigma2"]["on"]["total_variance"]
    assert e1["ci_over"] == "samples" and e1["n_seeds"] == 1 and e1["n_samples"] == 96
    assert e2["ci_over"] == "seeds" and e2["n_seeds"] == 2
    vals = [r["checkpoints"][1]["weightings"]["sigma2"]["on"]["total_variance"]["value"] for r in recs]
    assert e2["value"] == pytest.approx(np.mean(vals))
    gv.plot(two, tmp_path / "fig" / "gradient_variance.png")
    assert (tmp_path / "fig" / "gradient_variance.png").stat().st_size > 0
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["gradient_variance.png"]
    lines = gv.markdown(two)
    text = "\n".join(lines)
    assert "#### bandit-ring8" in text and "| step | weighting | baseline | tr Cov g_B | SNR |" in text
    assert sum(line.startswith("| 40 | ") for line in lines) == 2 * len(WEIGHTINGS) + len(WEIGHTINGS)
    for w in WEIGHTINGS:
        verdicts = [line for line in lines if line.startswith(f"- **{w}**: ")]
        assert len(verdicts) == 1 and (
            "no difference between the means" in verdicts[0] or "the means differ" in verdicts[0]
        ), verdicts
        if "no difference" in verdicts[0]:  # not detecting a difference is not shown to be none
            assert "does not show the means are equal" in verdicts[0]
            assert "noise floor" in verdicts[0] or "is not resolved from sampling noise" in verdicts[0]


def test_measure_bandit_rejects_a_mismatched_config(tmp_path):
    with pytest.raises(ValueError, match="not 'bandit-ring8' seed 1"):
        gv.measure_bandit("ring8", 1, tiny_bandit_cfg(0), tmp_path)
    with pytest.raises(ValueError, match="fractions must lie in"):
        gv.snapshot_steps(10, (0.5, 1.5))


def test_measure_task_uses_the_finished_behavior_model_and_critic(tmp_path):
    """The locomotion path (learned eps_psi and IQL critic from an upstream run), on a tiny run."""
    cfg = tiny_bandit_cfg(
        **{
            "behavior.steps": "20",
            "behavior.batch_size": "32",
            "behavior.width": "32",
            "behavior.n_blocks": "1",
            "critic.steps": "20",
            "critic.batch_size": "32",
            "critic.hidden": "32,32",
            "policy.steps": "20",
        }
    )
    data = bandit_tasks.make_dataset(bandit_tasks.get_bandit("bandit-ring8"), 300, 0)
    train(cfg, data, tmp_path / "up", progress=False, stages=("behavior", "critic"))
    rec = gv.measure_task(
        cfg, data, tmp_path / "up", tmp_path / "w", fractions=(0.5, 1.0), n_samples=64, reps=50
    )
    assert rec["target"] == "bandit-ring8" and [c["step"] for c in rec["checkpoints"]] == [10, 20]
    assert rec["checkpoints"][0]["method"] == "factored"
    for ck in rec["checkpoints"]:
        for res in ck["weightings"].values():
            assert res["on"]["total_variance"]["value"] > 0 and math.isfinite(
                res["compare"]["variance_ratio"]["value"]
            )


@pytest.mark.slow
def test_sign_flip_test_is_calibrated_on_the_exact_bandit():
    """Size of the unbiasedness test where it is hardest: a bandit's gradients span only 2 directions
    (one state), with the exact score and Q, so the baseline is exactly unbiased. Over 200 independent
    draw sets, a test that keeps its size rejects at level 0.05 at most Binomial(200, 0.05) times:
    more than 18 rejections has probability < 1% then."""
    bandit = bandit_tasks.get_bandit("bandit-unequal6")
    bm, critic = bandits.ExactNoisePredictor(bandit), bandits.ExactCritic(bandit)
    torch.manual_seed(0)
    pi = DeterministicPolicy(1, 2, (16, 16)).to(F64)
    pc = make_config("bandit-unequal6", "smoke").policy
    rejected = {w: 0 for w in WEIGHTINGS}
    for seed in range(200):
        res = gv.measure_checkpoint(
            pi,
            bm,
            critic,
            torch.zeros(4, 1, dtype=F64),
            pc,
            n_samples=256,
            batch_size=64,
            reps=200,
            seed=seed,
        )
        for w in WEIGHTINGS:
            rejected[w] += not res["weightings"][w]["compare"]["unbiasedness"]["agree"]
    assert all(r <= 18 for r in rejected.values()), rejected
