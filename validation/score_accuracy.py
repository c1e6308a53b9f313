"""Score accuracy of the diffusion behavior model on held-out data (method §9, last claim).

SRPO never samples from its behavior model: it only queries the score
grad_a log mu_t(a|s) = -eps_psi(a_t|s,t) / sigma_t (E5) inside the policy gradient
(E6). This module measures how accurate that score is on data the model was not
trained on, as a function of the diffusion time t.

(a) Exact ground truth (bandits). On the bandit suite the behavior policy is a
    Gaussian mixture, so eps*(a_t, t) is exact (method §2, :func:`srpo.mixture.exact_eps`).
    :func:`score_error_by_time` compares the learned eps_psi with eps* on fresh
    actions from the mixture (a seed the training set did not use): relative error
    of the score, cosine similarity, and the DSM loss (E4) of eps_psi next to that
    of eps* (its irreducible floor).
(b) Real datasets. The exact score is unknown, so :func:`episode_split` holds out
    whole episodes (transitions of one episode are strongly correlated: a
    transition-level split would leak), the model is trained on the rest, and
    :func:`dsm_loss_by_time` evaluates the DSM loss (E4) per diffusion-time bin on
    train and held-out with the *same* noise draws. Their difference, the
    generalization gap, is the measurable part of the score error: the irreducible
    part of E4 is the same on both splits (same distribution) and cancels.
    Dividing the per-sample loss by sigma_t^2 puts it in score units,
    ||s_psi(a_t) + eps / sigma_t||^2, which is what the t -> 0 question is about.

How the pieces fit:

    pure math on tensors          episode_split, dsm_loss_per_sample, dsm_loss_by_time,
                                  score_error_by_time
    one (target, seed) record     bandit_record, dataset_record: train eps_psi with the real
                                  stage (srpo.train.train_behavior, checkpoint under ``work``,
                                  so a killed run resumes), evaluate, return a JSON-able dict
    over seeds                    summarize: mean over seeds with percentile-bootstrap CIs
                                  (srpo_bench.eval.stats.task_estimate) and n_runs, per t / t-bin, and
                                  the "t -> 0 vs mid t" comparison (the reason SRPO
                                  ensembles t ~ U(0.02, 0.98), method §3)
    output                        plot (seaborn PNG, atomic), markdown (report lines, every
                                  sentence computed from the summary)

A stage command writes each record with :func:`srpo.artifacts.write_json`, then
``summarize`` -> ``plot`` / ``markdown``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srpo import artifacts, behavior, mixture, schedule
from srpo.config import RunConfig
from srpo.stage_loop import stage_seed
from srpo.train import train_behavior
from srpo.transitions import Transitions
from srpo_bench.eval import bandit_tasks, stats

# Held-out bandit actions come from make_dataset with this offset on the run seed, so they
# are fresh draws from the mixture that the training set (seed itself) did not use.
HELDOUT_SEED_OFFSET = 10_000_019
# Points per model call: bounds memory on large datasets without changing any result.
DEFAULT_CHUNK = 65_536
# Defaults for stage commands. The grid reaches down to 1e-3 (E4's t_min) and up to
# 0.98 (the top of SRPO's time range); the bins tile the whole DSM range [1e-3, 1].
DEFAULT_T_GRID = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.98)
DEFAULT_T_EDGES = (0.001, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


# ---------------------------------------------------------------------------
# Splitting by episode
# ---------------------------------------------------------------------------


def episode_ids(data: Transitions) -> np.ndarray:
    """Episode index of every row: episodes end at a terminal or timeout (a trailing
    incomplete episode, with no end marker, is an episode too)."""
    ends = data.episode_ends
    return np.concatenate(([0], np.cumsum(ends[:-1]))).astype(np.int64)


def episode_split(data: Transitions, heldout_fraction: float, seed: int) -> tuple[Transitions, Transitions]:
    """Split ``data`` into (train, held-out) by whole episodes.

    round(heldout_fraction x episodes) episodes, at least one and at most all but one,
    are drawn without replacement by ``numpy.random.default_rng(seed)``. Rows keep
    their original order, so every complete episode still ends with its end marker
    and the trailing incomplete episode (if any) stays last in its split: the episode
    structure of each part is exactly the episodes assigned to it.
    """
    try:
        frac = float(heldout_fraction)
    except (TypeError, ValueError):
        frac = math.nan
    if not 0.0 < frac < 1.0:  # also rejects NaN
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    ids = episode_ids(data)
    n_ep = int(ids[-1]) + 1
    if n_ep < 2:
        raise ValueError(
            f"dataset {data.name!r} has {n_ep} episode; an episode split needs at least 2 "
            "(one for training, one held out)"
        )
    n_held = min(max(int(round(frac * n_ep)), 1), n_ep - 1)
    held = np.zeros(n_ep, dtype=bool)
    held[np.random.default_rng(seed).choice(n_ep, size=n_held, replace=False)] = True
    mask = held[ids]

    def part(rows: np.ndarray, split: str, episodes: int) -> Transitions:
        return Transitions(
            observations=data.observations[rows],
            actions=data.actions[rows],
            rewards=data.rewards[rows],
            next_observations=data.next_observations[rows],
            terminals=data.terminals[rows],
            timeouts=data.timeouts[rows],
            name=f"{data.name}[{split}]",
            info={**data.info, "split": split, "parent": data.name, "episodes": episodes,
                  "split_seed": seed, "heldout_fraction": frac},
        )

    return part(~mask, "train", n_ep - n_held), part(mask, "heldout", n_held)


# ---------------------------------------------------------------------------
# Pure evaluation on tensors
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_cpu_generator(generator: torch.Generator) -> None:
    # Noise is drawn on the CPU in float64 and then moved: the draws, and so the numbers,
    # are then the same whichever device evaluates the model.
    if generator.device.type != "cpu":
        raise ValueError(f"pass a CPU torch.Generator (noise is drawn on the CPU), got one on {generator.device}")


def dsm_loss_per_sample(
    model: nn.Module, states: Tensor, actions: Tensor, t: Tensor, eps: Tensor, chunk_size: int = DEFAULT_CHUNK
) -> Tensor:
    """Per-sample DSM loss (E4, :func:`srpo.behavior.dsm_loss`), shape (N,), for N beyond one batch.

    No mean is taken, so callers can bin, weight or pair it. Evaluated without
    gradients, in eval mode (no dropout; the model's mode is restored afterwards) and
    in chunks of ``chunk_size`` rows. Inputs must share the model's device and dtype.
    """
    n = actions.shape[0]
    if not (states.shape[0] == n and t.shape == (n,) and eps.shape == actions.shape):
        raise ValueError(
            f"expected states (N, ds), actions (N, d), t (N,), eps (N, d) with one N; got "
            f"{tuple(states.shape)}, {tuple(actions.shape)}, {tuple(t.shape)}, {tuple(eps.shape)}"
        )
    out = []
    with torch.no_grad(), _eval_mode(model):
        for i in range(0, n, chunk_size):
            sl = slice(i, i + chunk_size)
            out.append(behavior.dsm_loss(model, states[sl], actions[sl], t[sl], eps[sl]))
    return torch.cat(out) if out else actions.new_zeros(0)


def _check_edges(t_edges: Sequence[float]) -> Tensor:
    e = torch.as_tensor([float(x) for x in t_edges], dtype=torch.float64)
    if e.numel() < 2 or not (e[0] > 0 and e[-1] <= 1 and torch.all(e[1:] > e[:-1])):
        raise ValueError(f"t_edges must be at least 2 increasing times in (0, 1], got {list(t_edges)}")
    return e


def dsm_loss_by_time(
    model: nn.Module,
    states: Tensor,
    actions: Tensor,
    t_edges: Sequence[float],
    draws_per_bin: int,
    generator: torch.Generator,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """DSM loss (E4) per diffusion-time bin [t_k, t_{k+1}).

    Per bin, ``draws_per_bin`` draws of t ~ U(bin) and eps ~ N(0, I), each paired with a
    row of (states, actions): a fresh random permutation of the rows, cycled when
    draws_per_bin > N (every row then serves floor or ceil(draws/N) times), truncated
    when smaller (a random subset without replacement).

    All t and eps are drawn from ``generator`` (CPU) before any row is chosen, so they
    do not depend on N: two datasets evaluated with generators seeded alike see exactly
    the same noise, and their difference (the generalization gap) is paired in noise.

    Returns per bin (lists): ``loss`` (mean of E4), ``loss_se`` (its Monte-Carlo
    standard error; None for a single draw), ``loss_per_dim`` (loss / action_dim) and ``score_loss``, the mean
    of loss / sigma_t^2 = ||s_psi(a_t) + eps / sigma_t||^2, the same loss in score
    units (E5), where errors near t -> 0 are not shrunk by sigma_t^2.
    """
    edges = _check_edges(t_edges)
    if draws_per_bin < 1:
        raise ValueError(f"draws_per_bin must be >= 1, got {draws_per_bin}")
    _check_cpu_generator(generator)
    n, d = actions.shape
    k = edges.numel() - 1
    lo, hi = edges[:-1], edges[1:]
    t_all = lo[:, None] + (hi - lo)[:, None] * torch.rand(k, draws_per_bin, generator=generator, dtype=torch.float64)
    eps_all = torch.randn(k, draws_per_bin, d, generator=generator, dtype=torch.float64)
    dev, dt = actions.device, actions.dtype
    loss, loss_se, score_loss = [], [], []
    for b in range(k):
        idx = torch.randperm(n, generator=generator)[torch.arange(draws_per_bin) % n].to(dev)
        per = dsm_loss_per_sample(model, states[idx], actions[idx], t_all[b].to(dev, dt), eps_all[b].to(dev, dt),
                                  chunk_size).double().cpu()
        loss.append(float(per.mean()))
        # None, not NaN, for a single draw: records stay strict JSON.
        loss_se.append(float(per.std() / math.sqrt(draws_per_bin)) if draws_per_bin > 1 else None)
        score_loss.append(float((per / schedule.sigma(t_all[b]) ** 2).mean()))
    return {
        "t_edges": edges.tolist(),
        "t_mid": ((lo + hi) / 2).tolist(),
        "loss": loss,
        "loss_se": loss_se,
        "loss_per_dim": [x / d for x in loss],
        "score_loss": score_loss,
        "draws_per_bin": draws_per_bin,
        "n_samples": n,
    }


def _predict(model: nn.Module, a_t: Tensor, states: Tensor, t: Tensor, chunk_size: int) -> Tensor:
    with torch.no_grad(), _eval_mode(model):
        return torch.cat([model(a_t[i:i + chunk_size], states[i:i + chunk_size], t[i:i + chunk_size])
                          for i in range(0, a_t.shape[0], chunk_size)])


def score_error_by_time(
    model: nn.Module,
    bandit: bandit_tasks.Bandit,
    states: Tensor,
    actions: Tensor,
    t_grid: Sequence[float],
    generator: torch.Generator,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Learned eps_psi against the exact eps* of ``bandit``'s behavior mixture, per t.

    ``actions`` are held-out draws a0 from the mixture (N, d), ``states`` the matching
    dummy states; both in the model's device and dtype. For each t, with eps ~ N(0, I)
    from ``generator`` (CPU, float64):

        a_t = alpha_t a0 + sigma_t eps,   eps_true = eps*(a_t, t) (method §2, float64),
        eps_pred = eps_psi(a_t | s, t)    (the model sees a_t cast to its dtype)

    and reports

    - ``rel_error`` = mean ||eps_pred - eps_true||^2 / mean ||eps_true||^2: the relative
      error of the *score*. Since score = -eps / sigma_t (E5) at a fixed t, the factor
      1/sigma_t^2 cancels in the ratio, so it is the same for eps and for the score;
    - ``cosine``: mean cosine similarity of eps_pred and eps_true (= of the scores);
    - ``eps_mse`` and ``score_mse`` = eps_mse / sigma_t^2 (absolute errors);
    - ``dsm_learned`` and ``dsm_exact``: the DSM loss (E4) at t of eps_psi and of eps*
      on the same (a0, eps). eps* minimizes E4, so dsm_exact is its irreducible floor
      and dsm_learned - dsm_exact estimates eps_mse (their cross term has mean zero).

    The bandit datasets drop the rare draws outside [-1, 1]^2; eps* is that of the
    untruncated mixture, a negligible difference for the suite's mixtures.
    """
    _check_cpu_generator(generator)
    ts = [float(t) for t in t_grid]
    if not ts or not all(0.0 < t <= 1.0 for t in ts):
        raise ValueError(f"t_grid must be non-empty times in (0, 1], got {list(t_grid)}")
    if actions.shape[-1] != bandit.behavior.dim:
        raise ValueError(f"actions have dim {actions.shape[-1]}, bandit {bandit.name!r} has {bandit.behavior.dim}")
    dev, dt = actions.device, actions.dtype
    mix = bandit.behavior.to(device=dev, dtype=torch.float64)
    a0 = actions.double()
    n, d = a0.shape
    keys = ("rel_error", "cosine", "eps_mse", "score_mse", "true_sq", "dsm_learned", "dsm_exact")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for t in ts:
        eps = torch.randn(n, d, generator=generator, dtype=torch.float64).to(dev)
        tt = torch.tensor(t, dtype=torch.float64, device=dev)
        a_t = schedule.alpha(tt) * a0 + schedule.sigma(tt) * eps
        # exact_eps with a scalar t factorizes the diffused covariances once for all points.
        eps_true = torch.cat([mixture.exact_eps(mix, a_t[i:i + chunk_size], tt) for i in range(0, n, chunk_size)])
        eps_pred = _predict(model, a_t.to(dt), states, tt.to(dt).expand(n), chunk_size).double()
        err = ((eps_pred - eps_true) ** 2).sum(-1).mean()
        true_sq = (eps_true**2).sum(-1).mean()
        sig2 = schedule.sigma(tt) ** 2
        out["rel_error"].append(float(err / true_sq))
        out["cosine"].append(float(F.cosine_similarity(eps_pred, eps_true, dim=-1).mean()))
        out["eps_mse"].append(float(err))
        out["score_mse"].append(float(err / sig2))
        out["true_sq"].append(float(true_sq))
        out["dsm_learned"].append(float(behavior.denoising_error(eps_pred, eps).mean()))
        out["dsm_exact"].append(float(behavior.denoising_error(eps_true, eps).mean()))
    return {"t": ts, "sigma": [float(schedule.sigma(torch.tensor(t, dtype=torch.float64))) for t in ts],
            "n_samples": n, **out}


# ---------------------------------------------------------------------------
# Records: one (target, seed), trained with the real behavior stage
# ---------------------------------------------------------------------------


def _check_seed(cfg: RunConfig, seed: int) -> None:
    if cfg.seed != seed:
        raise ValueError(f"cfg.seed is {cfg.seed} but the record is for seed {seed}; build cfg with this seed")


def _behavior_info(cfg: RunConfig, history: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(cfg.behavior),
        "steps": history[-1]["step"] if history else 0,
        "final_train_loss": history[-1].get("loss") if history else None,
        "profile": cfg.profile,
    }


def bandit_record(
    shape: str,
    seed: int,
    cfg: RunConfig,
    work: Path,
    n_train: int,
    n_heldout: int,
    t_grid: Sequence[float] = DEFAULT_T_GRID,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> dict[str, Any]:
    """Score accuracy (a) for one bandit and seed.

    Trains eps_psi on ``bandit_tasks.make_dataset(bandit, n_train, seed)`` with the real
    behavior stage (checkpoint ``work/behavior.pt``: a killed run resumes, a finished
    one is loaded), then runs :func:`score_error_by_time` on ``n_heldout`` fresh
    actions (``make_dataset`` with seed + HELDOUT_SEED_OFFSET, clipped alike).
    ``cfg`` is ``make_config(f"bandit-{shape}", profile, seed, overrides)``.
    """
    task = f"bandit-{shape.removeprefix('bandit-')}"
    if cfg.task != task:
        raise ValueError(f"cfg is for task {cfg.task!r}, not {task!r}")
    _check_seed(cfg, seed)
    bandit = bandit_tasks.get_bandit(task)
    device = torch.device(device)
    t0 = time.perf_counter()
    train = bandit_tasks.make_dataset(bandit, n_train, seed)
    model, history = train_behavior(cfg, train, Path(work), device, dtype, progress)
    held = bandit_tasks.make_dataset(bandit, n_heldout, seed + HELDOUT_SEED_OFFSET).to_tensors(device, dtype)
    gen = torch.Generator().manual_seed(stage_seed(seed, "score-accuracy-eval"))
    res = score_error_by_time(model, bandit, held["obs"], held["act"], t_grid, gen)
    return {
        "kind": "bandit",
        "target": task,
        "seed": seed,
        "n_train": n_train,
        "n_heldout": n_heldout,
        "heldout_seed": seed + HELDOUT_SEED_OFFSET,
        "behavior": _behavior_info(cfg, history),
        **res,
        "wall_s": time.perf_counter() - t0,
    }


def dataset_record(
    task: str,
    data: Transitions,
    seed: int,
    cfg: RunConfig,
    work: Path,
    heldout_fraction: float = 0.2,
    t_edges: Sequence[float] = DEFAULT_T_EDGES,
    draws_per_bin: int = 20_000,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> dict[str, Any]:
    """Score accuracy (b) for one real dataset and seed: train vs held-out DSM loss per t-bin.

    Splits ``data`` by episode (split seed derived from ``seed``, so seeds differ in
    split as well as in training), trains eps_psi on the train split only with the
    real behavior stage (checkpoint ``work/behavior.pt``; ``work`` must be specific
    to this task and seed), then evaluates :func:`dsm_loss_by_time` on both splits
    with identically seeded generators (paired noise). ``gap`` = held-out - train.
    """
    _check_seed(cfg, seed)
    device = torch.device(device)
    t0 = time.perf_counter()
    split_seed = stage_seed(seed, "score-accuracy-split")
    train, held = episode_split(data, heldout_fraction, split_seed)
    model, history = train_behavior(cfg, train, Path(work), device, dtype, progress)
    eval_seed = stage_seed(seed, "score-accuracy-eval")
    res = {}
    for name, part in (("train", train), ("heldout", held)):
        d = part.to_tensors(device, dtype)
        res[name] = dsm_loss_by_time(model, d["obs"], d["act"], t_edges, draws_per_bin,
                                     torch.Generator().manual_seed(eval_seed))
    return {
        "kind": "dataset",
        "target": task,
        "seed": seed,
        "dataset": data.name,
        "split": {
            "heldout_fraction": heldout_fraction,
            "split_seed": split_seed,
            "train": {"episodes": train.info["episodes"], "transitions": len(train)},
            "heldout": {"episodes": held.info["episodes"], "transitions": len(held)},
        },
        "behavior": _behavior_info(cfg, history),
        "t_edges": res["train"]["t_edges"],
        "t_mid": res["train"]["t_mid"],
        "draws_per_bin": draws_per_bin,
        "train_loss": res["train"]["loss"],
        "heldout_loss": res["heldout"]["loss"],
        "gap": [h - t for h, t in zip(res["heldout"]["loss"], res["train"]["loss"])],
        "train_loss_se": res["train"]["loss_se"],
        "heldout_loss_se": res["heldout"]["loss_se"],
        "train_score_loss": res["train"]["score_loss"],
        "heldout_score_loss": res["heldout"]["score_loss"],
        "score_gap": [h - t for h, t in zip(res["heldout"]["score_loss"], res["train"]["score_loss"])],
        "action_dim": data.action_dim,
        "wall_s": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------
# Over seeds
# ---------------------------------------------------------------------------

BANDIT_METRICS = ("rel_error", "cosine", "eps_mse", "score_mse", "dsm_learned", "dsm_exact")
DATASET_METRICS = ("train_loss", "heldout_loss", "gap", "train_score_loss", "heldout_score_loss", "score_gap")


def _estimate(values: Sequence[float], confidence: float, reps: int, seed: int) -> dict[str, Any] | None:
    """Mean over seeds with its percentile-bootstrap CI (strict JSON: NaN bounds become None).

    None when a value is not finite (e.g. a 0/0 ratio): there is nothing to estimate.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return None
    est, std = stats.task_estimate(x, confidence, reps, seed)
    d = est.to_dict()
    d["std"] = std
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _nearest(ts: Sequence[float], target: float) -> int:
    return int(np.argmin(np.abs(np.asarray(ts) - target)))


def summarize(records: list[dict], confidence: float = 0.95, reps: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Group records by target; per t (bandits) or t-bin (datasets) the mean over seeds.

    Every number is an estimate dict (value, low, high, n_runs, confidence, std) from
    :func:`srpo_bench.eval.stats.task_estimate`: percentile bootstrap over seeds; one seed gives
    ``low = high = None``. ``near_zero_vs_mid`` compares the smallest t (bin) with the t
    (bin midpoint) closest to 0.5: the per-seed ratio, with its CI over seeds.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("kind") not in ("bandit", "dataset"):
            raise ValueError(f"record kind must be 'bandit' or 'dataset', got {r.get('kind')!r}")
        groups.setdefault((r["kind"], r["target"]), []).append(r)
    out: dict[str, Any] = {"confidence": confidence, "reps": reps, "bandit": {}, "dataset": {}}
    for (kind, target), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        seeds = [r["seed"] for r in rs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{target}: seed repeated among records {seeds}")
        axis = "t" if kind == "bandit" else "t_edges"
        if any(r[axis] != rs[0][axis] for r in rs):
            raise ValueError(f"{target}: records use different {axis}; evaluate every seed on one grid")
        est = lambda xs: _estimate(xs, confidence, reps, seed)  # noqa: E731
        metrics = BANDIT_METRICS if kind == "bandit" else DATASET_METRICS
        n_points = len(rs[0][metrics[0]])
        s: dict[str, Any] = {"n_runs": len(rs), "seeds": seeds}
        for m in metrics:
            s[m] = [est([r[m][i] for r in rs]) for i in range(n_points)]
        if kind == "bandit":
            ts = rs[0]["t"]
            s["t"] = ts
            near, mid = int(np.argmin(ts)), _nearest(ts, 0.5)
            s["near_zero_vs_mid"] = {
                "t_near": ts[near], "t_mid": ts[mid],
                "rel_error_ratio": None if near == mid else est([r["rel_error"][near] / r["rel_error"][mid] for r in rs]),
                "rel_error_near": s["rel_error"][near], "rel_error_mid": s["rel_error"][mid],
                "cosine_near": s["cosine"][near], "cosine_mid": s["cosine"][mid],
            }
        else:
            edges = rs[0]["t_edges"]
            mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            s["t_edges"], s["t_mid"] = edges, mids
            s["split"] = {part: {k: est([r["split"][part][k] for r in rs]) for k in ("episodes", "transitions")}
                          for part in ("train", "heldout")}
            near, mid = 0, _nearest(mids, 0.5)
            s["near_zero_vs_mid"] = {
                "bin_near": edges[near:near + 2], "bin_mid": edges[mid:mid + 2],
                "heldout_loss_ratio": None if near == mid else est(
                    [r["heldout_loss"][near] / r["heldout_loss"][mid] for r in rs]),
                "gap_near": s["gap"][near], "gap_mid": s["gap"][mid],
                "score_gap_near": s["score_gap"][near], "score_gap_mid": s["score_gap"][mid],
            }
        out[kind][target] = s
    return out


# ---------------------------------------------------------------------------
# Output: figure and report lines
# ---------------------------------------------------------------------------


def _band(ests: list[dict | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values and CI bounds as float arrays (NaN where missing: the band is then not drawn)."""
    def get(e: dict | None, k: str) -> float:
        return np.nan if e is None or e.get(k) is None else float(e[k])

    return tuple(np.array([get(e, k) for e in ests]) for k in ("value", "low", "high"))  # type: ignore[return-value]


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bandits (top row): relative score error vs t (log-log) and cosine vs t, one line per
    bandit; datasets (bottom row): DSM loss per t-bin, train vs held-out, one panel per
    task. Lines are means over seeds, bands their bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    bd, dd = summary.get("bandit", {}), summary.get("dataset", {})
    if not bd and not dd:
        raise ValueError("summary holds no bandit and no dataset results: nothing to plot")
    conf = 100 * float(summary.get("confidence", 0.95))
    rows = [k for k, v in (("bandit", bd), ("dataset", dd)) if v]
    cols = max(2, len(dd))
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.4 * cols, 3.0 * len(rows)), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for r, kind in enumerate(rows):
        if kind == "bandit":
            colors = sns.color_palette("colorblind", len(bd))
            for (panel, metric, label), ax in zip(
                (("err", "rel_error", "relative score error"), ("cos", "cosine", "cosine(ε_ψ, ε*)")), axes[r]
            ):
                ax.set_visible(True)
                for (target, s), color in zip(bd.items(), colors):
                    v, lo, hi = _band(s[metric])
                    ax.plot(s["t"], v, marker=".", color=color, label=f"{target} (n={s['n_runs']})")
                    ax.fill_between(s["t"], lo, hi, color=color, alpha=0.2)
                ax.set_xscale("log")
                if metric == "rel_error":
                    ax.set_yscale("log")
                ax.set_xlabel("diffusion time t")
                ax.set_ylabel(label)
                ax.set_title(f"bandits, held-out: {label}", fontsize=9)
            axes[r][0].legend(fontsize=7)
        else:
            colors = sns.color_palette("colorblind", 2)
            for ax, (target, s) in zip(axes[r], dd.items()):
                ax.set_visible(True)
                for metric, label, color in (("train_loss", "train", colors[0]), ("heldout_loss", "held-out", colors[1])):
                    v, lo, hi = _band(s[metric])
                    ax.plot(s["t_mid"], v, marker=".", color=color, label=label)
                    ax.fill_between(s["t_mid"], lo, hi, color=color, alpha=0.2)
                # Log t, as for the bandits: the bins near t -> 0 are the ones in question.
                ax.set_xscale("log")
                if np.all(np.asarray(_band(s["train_loss"])[0]) > 0):
                    ax.set_yscale("log")
                ax.set_xlabel("diffusion time t (bin midpoint)")
                ax.set_ylabel("DSM loss (E4)")
                ax.set_title(f"{target} (n={s['n_runs']} seeds)", fontsize=9)
                ax.legend(fontsize=7)
    fig.suptitle(f"Score accuracy on held-out data, {conf:.0f}% bootstrap CIs over seeds", fontsize=10)
    sns.despine(fig)
    fig.tight_layout()
    try:
        artifacts.save_figure(fig, path)
    finally:
        plt.close(fig)


def _fmt(e: dict | None, digits: int = 3) -> str:
    """``0.0123 [0.0101, 0.0150]`` with ``digits`` significant digits; ``n/a`` where missing."""
    if e is None:
        return "n/a"
    v = f"{e['value']:.{digits}g}"
    if e.get("low") is None or e.get("high") is None:
        return f"{v} [n/a]"
    return f"{v} [{e['low']:.{digits}g}, {e['high']:.{digits}g}]"


def markdown(summary: dict[str, Any]) -> list[str]:
    """The report section's body (the caller writes its heading): what is measured, a table per
    kind, and the t -> 0 vs mid-t comparison stated from the numbers in ``summary`` (nothing
    hard-coded)."""
    conf = 100 * float(summary.get("confidence", 0.95))
    bd, dd = summary.get("bandit", {}), summary.get("dataset", {})
    L = ["SRPO uses only the behavior model's score, -ε_ψ(a_t|s,t)/σ_t (E5). Here it is checked on data the "
         f"model was not trained on, per diffusion time t. Values are means over seeds with {conf:.0f}% "
         "percentile-bootstrap CIs over seeds; n is the number of seeds.", ""]
    if bd:
        L += ["#### Bandits: learned against exact score", "",
              "Fresh actions from each bandit's behavior mixture (a seed the training set did not use). Relative "
              "error = E‖ε_ψ − ε*‖² / E‖ε*‖², which equals the relative error of the score since score = −ε/σ_t; "
              "cosine between ε_ψ and ε*; DSM loss (E4) at t of ε_ψ and of the exact ε* (its irreducible floor).", "",
              "| bandit | t | relative error | cosine | DSM loss ε_ψ | DSM loss ε* | n |",
              "|---|---|---|---|---|---|---|"]
        for target, s in bd.items():
            for i, t in enumerate(s["t"]):
                L.append(f"| {target} | {t:g} | {_fmt(s['rel_error'][i])} | {_fmt(s['cosine'][i], 4)} | "
                         f"{_fmt(s['dsm_learned'][i])} | {_fmt(s['dsm_exact'][i])} | {s['n_runs']} |")
        L.append("")
        for target, s in bd.items():
            c = s["near_zero_vs_mid"]
            if c["rel_error_ratio"] is None:
                continue
            L.append(f"- {target}: the relative score error at t = {c['t_near']:g} is {_fmt(c['rel_error_ratio'])} "
                     f"times that at t = {c['t_mid']:g} ({_fmt(c['rel_error_near'])} vs {_fmt(c['rel_error_mid'])}); "
                     f"cosine {_fmt(c['cosine_near'], 4)} vs {_fmt(c['cosine_mid'], 4)} (n = {s['n_runs']}).")
        L.append("")
    if dd:
        L += ["#### Datasets: train against held-out episodes", "",
              "Each dataset is split by whole episodes; the behavior model is trained on the train split only. "
              "DSM loss (E4) per t-bin on both splits with the same noise draws; gap = held-out − train. The exact "
              "score is unknown here, but the irreducible part of E4 is the same on both splits, so the gap is the "
              "measurable generalization error. Score units: the per-sample loss divided by σ_t², "
              "‖s_ψ(a_t) + ε/σ_t‖².", "",
              "| task | t-bin | train loss | held-out loss | gap | gap, score units | n |",
              "|---|---|---|---|---|---|---|"]
        for target, s in dd.items():
            e = s["t_edges"]
            for i in range(len(e) - 1):
                L.append(f"| {target} | [{e[i]:g}, {e[i + 1]:g}) | {_fmt(s['train_loss'][i])} | "
                         f"{_fmt(s['heldout_loss'][i])} | {_fmt(s['gap'][i])} | {_fmt(s['score_gap'][i])} | "
                         f"{s['n_runs']} |")
        L.append("")
        for target, s in dd.items():
            c, sp = s["near_zero_vs_mid"], s["split"]
            if c["heldout_loss_ratio"] is None:
                continue
            (a, b), (m0, m1) = c["bin_near"], c["bin_mid"]
            L.append(f"- {target} ({sp['train']['episodes']['value']:.0f} train / "
                     f"{sp['heldout']['episodes']['value']:.0f} held-out episodes): the held-out DSM loss in "
                     f"t ∈ [{a:g}, {b:g}) is {_fmt(c['heldout_loss_ratio'])} times that in [{m0:g}, {m1:g}); the gap "
                     f"is {_fmt(c['gap_near'])} vs {_fmt(c['gap_mid'])}, in score units {_fmt(c['score_gap_near'])} "
                     f"vs {_fmt(c['score_gap_mid'])} (n = {s['n_runs']}).")
        L.append("")
    if not bd and not dd:
        L += ["No score-accuracy records were given.", ""]
    return L
