"""The diagnostics of one run, as records: critic accuracy, policy support and extraction, bandit scores.

The math is in :mod:`.diagnostics` (pure functions); this module applies it to trained modules
and datasets and returns JSON-able dicts, one per (task, seed) or (bandit, seed), that the
pipeline's ``diagnose`` stages write and :mod:`.diagnostics_report` summarizes over seeds.

- :func:`critic_accuracy`: a critic trained with the run's critic config on the training
  episodes (the real stage, :func:`srpo.train.train_critic`), checked at a few points of its
  training against the discounted Monte Carlo return of the held-out episodes' own actions
  (method §4: IQL's Q is the behavior policy's Q with an expectile-optimistic bootstrap).
- :func:`diagnose_policy`: everything about ONE loaded policy (so that it applies to each
  snapshot of a policy's training as well as to the final policy): how typical pi(s) is for
  the behavior model (E4's denoising error), how far it lies from the data's actions at
  similar states, the two terms of the E6 gradient, and Q(s, pi(s)) against Q(s, a_data).
- :func:`score_at_policy`: on an exact-score bandit, the learned score's error at the
  policy's actions against its error at the data's actions (method §2: the exact score of a
  Gaussian mixture); the bandit ablation stage applies it to every learned-score policy it trains.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from srpo import artifacts, behavior as srpo_behavior, critic as iql, policy as srpo_policy, schedule
from srpo.config import PolicyConfig, RunConfig
from srpo.stage_loop import Interrupted, stage_seed
from srpo.train import train_critic
from srpo.transitions import Transitions
from srpo_bench.eval.checkpoints import list_snapshots, load_behavior, load_critic, load_policy
from srpo_bench.validation import diagnostics
from srpo_bench.validation.score_accuracy.splits import episode_ids, episode_split

# Diffusion times of the per-t measures: low, middle and high noise inside SRPO's t-range (0.02, 0.98).
DEFAULT_T_GRID = (0.05, 0.2, 0.5, 0.8)


def return_rewards(cfg: RunConfig, fit: Transitions, rewards: np.ndarray) -> np.ndarray:
    """``rewards`` preprocessed as the critic trained on ``fit`` saw them (method §4).

    The locomotion scale 1000 / (max - min episode return) is ``fit``'s, so that the Monte
    Carlo returns of held-out episodes are in the units of a critic trained on ``fit``.
    """
    if cfg.reward_mode == "locomotion":
        return np.asarray(rewards, np.float64) * iql.locomotion_reward_scale(fit.rewards, fit.terminals)
    if cfg.reward_mode == "antmaze":
        return iql.shift_rewards_antmaze(np.asarray(rewards, np.float64))
    return np.asarray(rewards, np.float64)


def monte_carlo_targets(cfg: RunConfig, fit: Transitions, part: Transitions) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``part`` whose discounted return is complete (:func:`.diagnostics.discounted_returns`),
    and those returns, in the reward units of a critic trained on ``fit``."""
    g, complete = diagnostics.discounted_returns(
        return_rewards(cfg, fit, part.rewards), part.terminals > 0, part.episode_ends, cfg.critic.gamma
    )
    rows = np.flatnonzero(complete)
    if rows.size < 2:
        raise ValueError(
            f"{part.name}: fewer than 2 rows have a complete discounted return (episodes too short before "
            "a timeout); hold out more episodes (validation.diagnostics.heldout_fraction)"
        )
    return rows, g[rows]


@torch.no_grad()
def critic_agreement(critic: iql.Critic, obs: Tensor, act: Tensor, returns: np.ndarray) -> dict[str, Any]:
    """Q(s, a) (mean of the target heads: the Q the policy ascends, method §3) and V(s) against the
    Monte Carlo return: :class:`.diagnostics.Agreement` of each, and the mean prediction."""
    q = critic.target_q_mean(obs, act).double().cpu().numpy()
    v = critic.v(obs).double().cpu().numpy()
    return {
        "q": diagnostics.agreement(q, returns).to_dict(),
        "v": diagnostics.agreement(v, returns).to_dict(),
        "q_mean": float(q.mean()),
        "q_std": float(q.std()),
        "v_mean": float(v.mean()),
    }


def eval_steps(total: int, points: int) -> list[int]:
    """``points`` steps, evenly spaced, the last one ``total``: where the critic is checked."""
    if points < 1 or total < 1:
        raise ValueError(f"need >= 1 eval point and >= 1 critic step, got {points} and {total}")
    every = math.ceil(total / points)
    return sorted({min(every * k, total) for k in range(1, points + 1)})


def convergence(points: list[dict[str, Any]], tol: float) -> dict[str, Any]:
    """Whether the critic has converged: over the last interval between checks, the held-out mean
    Q moved by at most ``tol`` times its own scale, max(|mean Q|, std of Q over states).

    The scale is the critic's, not the returns': a critic far below the returns and creeping
    up (a learning rate small for the reward scale) is not converged, and neither is one still
    climbing above them (the over-estimation IQL's bootstrap can build up), however well it ranks
    states. One check alone cannot show convergence (``converged`` False).
    """
    if len(points) < 2:
        return {"drift": None, "converged": False, "tol": tol}
    last, prev = points[-1], points[-2]
    scale = max(abs(last["q_mean"]), last["q_std"], 1e-12)
    drift = abs(last["q_mean"] - prev["q_mean"]) / scale
    return {"drift": drift, "converged": bool(drift <= tol), "tol": tol}


def critic_accuracy(
    cfg: RunConfig,
    data: Transitions,
    work: Path,
    heldout_fraction: float,
    points: int,
    tol: float,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Critic accuracy on held-out episodes at ``points`` steps of a critic trained on the others.

    The split is the score-accuracy stage's (same split seed), so both diagnostics hold out the
    same episodes. The critic is :func:`srpo.train.train_critic` with ``cfg`` (checkpointed in
    ``work``); it is stopped at each check with ``stop_after`` and resumed from its checkpoint,
    which restores the generator, so the checks do not change the critic that training makes.
    """
    device = torch.device(device)
    split_seed = stage_seed(cfg.seed, "score-accuracy-split")
    train, held = episode_split(data, heldout_fraction, split_seed)
    rows, returns = monte_carlo_targets(cfg, train, held)
    steps = eval_steps(cfg.critic.steps, points)
    # Checkpoints land on every check (and the last step), so each stop resumes exactly there.
    cfg = dataclasses.replace(cfg, checkpoint_every=steps[0])
    d = held.to_tensors(device, dtype)
    obs, act = d["obs"][rows], d["act"][rows]
    work = Path(work)
    # A finished checkpoint would answer every stop with the final critic: the checks start over.
    (work / "critic.pt").unlink(missing_ok=True)
    checks = []
    for k in steps:
        try:
            critic, _ = train_critic(cfg, train, work, device, dtype, progress=False, stop_after=k)
        except Interrupted:  # stopped at step k: its checkpoint holds the critic of step k
            critic = iql.Critic(data.state_dim, data.action_dim, cfg.critic.hidden).to(device, dtype)
            critic.load_state_dict(artifacts.load_torch(work / "critic.pt")["modules"]["critic"])
        checks.append({"step": k, **critic_agreement(critic.eval(), obs, act, returns)})
    return {
        "split": {
            "heldout_fraction": heldout_fraction,
            "split_seed": split_seed,
            "train": {"episodes": train.info["episodes"], "transitions": len(train)},
            "heldout": {"episodes": held.info["episodes"], "transitions": len(held)},
            "rows_with_complete_return": int(rows.size),
        },
        "critic_steps": cfg.critic.steps,
        "gamma": cfg.critic.gamma,
        "expectile": cfg.critic.expectile,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "checks": checks,
        "final": checks[-1],
        "convergence": convergence(checks, tol),
    }


@torch.no_grad()
def denoising_by_time(
    behavior_model: Callable[[Tensor, Tensor, Tensor], Tensor],
    states: Tensor,
    actions: Tensor,
    t_grid: Sequence[float],
    generator: torch.Generator,
) -> list[float]:
    """Mean denoising error ||eps_psi(alpha_t a + sigma_t eps | s, t) - eps||^2 (E4's integrand) per t."""
    out = []
    for t in t_grid:
        tt = torch.full((states.shape[0],), float(t), device=states.device, dtype=states.dtype)
        eps = torch.randn(actions.shape, generator=generator, device="cpu", dtype=states.dtype)
        eps = eps.to(states.device)
        pred = behavior_model(schedule.diffuse(actions, tt, eps), states, tt)
        out.append(float(srpo_behavior.denoising_error(pred, eps).mean()))
    return out


def diagnose_policy(
    policy: nn.Module,
    behavior_model: Callable[[Tensor, Tensor, Tensor], Tensor],
    critic_q: Callable[[Tensor, Tensor], Tensor],
    states: Tensor,
    data_actions: Tensor,
    pool_states: Tensor,
    pool_actions: Tensor,
    pc: PolicyConfig,
    seed: int,
    t_grid: Sequence[float] = DEFAULT_T_GRID,
    k_states: int = 10,
    groups: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """Support and extraction diagnostics of ONE policy at ``states`` (dataset rows, with their
    actions ``data_actions``); ``pool_*``: the dataset the nearest neighbours come from.

    - ``denoise_policy`` / ``denoise_data``: E4's denoising error per t of ``t_grid`` at pi(s) and at
      the data's action, with the same noise draws (paired); ``denoise_ratio`` = policy / data. An
      action the behavior model finds typical has a ratio near 1.
    - ``nn_distance_policy``: mean distance from pi(s) to the nearest data action among the
      ``k_states`` nearest dataset states; ``nn_distance_data``: the same for the data's own action
      among other episodes' rows (``groups``: the episode of each state and of each pool row), the
      data's spacing; None without ``groups``.
    - ``terms``: the E6 gradient's two terms at pi(s), Q term beta grad_a Q and score term
      -w(t)(eps_psi - [eps]) with t, eps drawn as in training (``pc``): norms, cosine (method §3).
    - ``q``: Q(s, pi(s)) against Q(s, a_data) with the Q the policy ascends.

    Every draw comes from generators seeded by ``seed``, so two policies are compared on the same noise.
    """
    dev, dt = states.device, states.dtype
    with torch.no_grad():
        a_pi = policy(states).to(dt)
    den_pi = denoising_by_time(behavior_model, states, a_pi, t_grid, torch.Generator().manual_seed(seed))
    den_data = denoising_by_time(
        behavior_model, states, data_actions, t_grid, torch.Generator().manual_seed(seed)
    )
    nn_pi = diagnostics.nearest_action_distance(states, a_pi, pool_states, pool_actions, k_states)
    nn_data = (
        None
        if groups is None
        else diagnostics.nearest_action_distance(
            states,
            data_actions,
            pool_states,
            pool_actions,
            k_states,
            query_groups=groups[0],
            data_groups=groups[1],
        )
    )
    gen = torch.Generator().manual_seed(seed + 1)
    t, eps = srpo_policy.sample_surrogate_noise(
        states.shape[0], a_pi.shape[1], pc.t_range, pc.t_fixed, gen, torch.device("cpu"), dt
    )
    t, eps = t.to(dev), eps.to(dev)
    eps_pred, q_grad = srpo_policy.surrogate_inputs(
        a_pi, behavior_model, critic_q, states, t, eps, pc.normalize_q_grad
    )
    reg = srpo_policy.behavior_direction(eps_pred, eps, t, pc.weighting, pc.baseline)
    terms = diagnostics.compare_terms(pc.beta * q_grad, -reg)
    with torch.no_grad():
        q = diagnostics.policy_vs_data(critic_q(states, a_pi), critic_q(states, data_actions))
    return {
        "n_states": int(states.shape[0]),
        "t_grid": list(t_grid),
        "denoise_policy": den_pi,
        "denoise_data": den_data,
        "denoise_ratio": [p / d if d > 0 else None for p, d in zip(den_pi, den_data)],
        "nn_distance_policy": float(nn_pi.mean()),
        "nn_distance_data": None if nn_data is None else float(nn_data.mean()),
        "terms": terms.to_dict(),
        "q": q.to_dict(),
        "action_abs_mean": float(a_pi.abs().mean()),
    }


@torch.no_grad()
def score_at_policy(
    policy: nn.Module,
    behavior_model: Callable[[Tensor, Tensor, Tensor], Tensor],
    exact_model: Callable[[Tensor, Tensor, Tensor], Tensor],
    data: Transitions,
    seed: int,
    n_states: int = 1024,
    t_grid: Sequence[float] = DEFAULT_T_GRID,
) -> dict[str, Any]:
    """The learned score's error where the policy queries it, against where the data puts it.

    At a_t = alpha_t a + sigma_t eps for a = pi(s) and for the data's actions a (same states, same
    eps), the relative error ||eps_psi - eps*|| / ||eps*|| per t, equal to the score's (E5: both
    scale by -1 / sigma_t). ``exact_model``: the exact eps* (a bandit's mixture, method §2).
    """
    d = data.to_tensors(torch.device("cpu"), torch.float32)
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n_states]
    states, a_data = d["obs"][rows], d["act"][rows]
    a_pi = policy(states)
    out: dict[str, Any] = {"t_grid": list(t_grid), "rel_error_policy": [], "rel_error_data": []}
    for t in t_grid:
        tt = torch.full((len(rows),), float(t))
        eps = torch.randn(a_pi.shape, generator=torch.Generator().manual_seed(stage_seed(seed, f"score-{t}")))
        for key, a in (("rel_error_policy", a_pi), ("rel_error_data", a_data)):
            a_t = schedule.diffuse(a, tt, eps)
            err = diagnostics.relative_error(behavior_model(a_t, states, tt), exact_model(a_t, states, tt))
            out[key].append(float(err.mean()))
    return out


def task_record(
    task: str,
    seed: int,
    data: Transitions,
    cfg: RunConfig,
    variants: dict[str, tuple[RunConfig, Path]],
    upstream: dict[str, Path],
    work: Path,
    heldout_fraction: float,
    critic_points: int,
    convergence_tol: float,
    n_states: int,
    k_states: int,
    t_grid: Sequence[float] = DEFAULT_T_GRID,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Every diagnostic of one (task, seed): critic accuracy on held-out episodes (its result cached
    in ``work`` with what made it, so a rerun for a changed policy does not retrain it), the run's
    own critic against the Monte Carlo return on all its data (in-sample), and
    :func:`diagnose_policy` on each variant's final policy and on its snapshots, if any.

    ``cfg``: the run's config (its critic section configures the held-out critic); ``variants``:
    name -> (the variant's config, its seed's policy directory); ``upstream``: the run's behavior
    and critic directories.
    """
    device = torch.device(device)
    work = Path(work)
    key = {
        "critic": dataclasses.asdict(cfg.critic),
        "seed": seed,
        "data": data.fingerprint(),
        "heldout_fraction": heldout_fraction,
        "points": critic_points,
        "tol": convergence_tol,
    }
    cache = work / "critic_accuracy.json"
    cached = _read_cache(cache)
    if cached is not None and cached.get("key") == json.loads(json.dumps(key)):
        held_out = cached["result"]
    else:
        held_out = critic_accuracy(cfg, data, work, heldout_fraction, critic_points, convergence_tol, device)
        artifacts.write_json(cache, {"key": key, "result": held_out})

    behavior_model = load_behavior(upstream["behavior"] / "behavior.pt", device)
    critic = load_critic(upstream["critic"] / "critic.pt", device)
    d = data.to_tensors(device, torch.float32)
    rows, returns = monte_carlo_targets(cfg, data, data)
    run_critic = critic_agreement(critic, d["obs"][rows], d["act"][rows], returns)

    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(stage_seed(seed, "diagnose")))
    pick = pick[: min(n_states, len(data))].to(device)
    states, a_data = d["obs"][pick], d["act"][pick]
    episodes = torch.as_tensor(episode_ids(data), device=device)

    def one(policy: nn.Module, pc: PolicyConfig) -> dict[str, Any]:
        return diagnose_policy(
            policy, behavior_model, critic.target_q_mean, states, a_data, d["obs"], d["act"], pc,
            stage_seed(seed, "diagnose-noise"), t_grid, k_states, (episodes[pick], episodes),
        )  # fmt: skip

    policies = {}
    for name, (vcfg, pdir) in variants.items():
        pi, meta = load_policy(pdir, device)
        policies[name] = {
            "final": {"step": meta["step"], **one(pi, vcfg.policy)},
            "snapshots": [
                {"step": step, **one(load_policy(path, device)[0], vcfg.policy)}
                for step, path in list_snapshots(pdir)
            ],
        }
    return {
        "task": task,
        "seed": seed,
        "dataset": data.name,
        "critic_heldout": held_out,
        "run_critic_in_sample": {
            **run_critic,
            "rows": int(rows.size),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
        },
        "policies": policies,
    }


def _read_cache(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
