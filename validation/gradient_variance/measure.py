"""Measuring policies: draws, one checkpoint, checkpoints of a real training run, bandits and tasks."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from srpo import artifacts, policy as srpo_policy
from srpo.config import PolicyConfig, RunConfig
from srpo.policy import WEIGHTINGS, DeterministicPolicy
from srpo.stage_loop import Interrupted, seeded_global_rng, stage_seed, upstream_dir
from srpo.train import load_finished, train_policy
from srpo.transitions import Transitions
from srpo_bench.eval import bandit_tasks
from srpo_bench.validation import bandits
from srpo_bench.validation.gradient_variance.gram_stats import (
    _compare,
    _factored_block,
    _Quad,
    _quads,
    _stats,
    _sums,
)
from srpo_bench.validation.gradient_variance.per_sample import (
    _linear_factors,
    linear_modules,
    parameter_layers,
    policy_vjp,
    surrogate_direction,
    surrogate_terms,
)


def draw_samples(
    states_pool: Tensor, action_dim: int, pc: PolicyConfig, n_samples: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """n independent draws (s, t, eps) as training makes them: s uniform over the pool, t as
    :func:`srpo.policy.sample_policy_time` (U(t_range) or t_fixed), eps ~ N(0, I)."""
    dev, dt = states_pool.device, states_pool.dtype
    s = states_pool[torch.randint(len(states_pool), (n_samples,), generator=generator, device=dev)]
    t = srpo_policy.sample_policy_time(n_samples, pc.t_range, pc.t_fixed, generator, dev, dt)
    eps = torch.randn(n_samples, action_dim, generator=generator, device=dev, dtype=dt)
    return s, t, eps


def measure_checkpoint(
    policy: nn.Module,
    behavior_model: nn.Module,
    critic: Any,
    states_pool: Tensor,
    pc: PolicyConfig,
    n_samples: int = 2048,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    confidence: float = 0.95,
    reps: int = 1000,
    seed: int = 0,
    weightings: Sequence[str] = WEIGHTINGS,
    chunk: int = 256,
    method: str = "auto",
) -> dict[str, Any]:
    """Gradient statistics of one policy for baseline on/off x each weighting, on one set of draws.

    Using the same draws for every setting makes the on/off comparison paired and the
    weightings comparable draw by draw. ``batch_size`` defaults to the training batch.
    ``method``: "vmap" forms the per-sample gradients (:func:`policy_vjp`) and, for blocks wider
    than M, their Grams (M^2 P work); "factored" builds the same blocks from layer inputs and
    output gradients (:func:`_linear_factors`; a wide layer's Gram costs M^2 (in + out), ~100x
    less for a 256-256 MLP); "auto" picks "factored" when every parameter is in an nn.Linear.
    Returns ``{"n_samples", "batch_size", "layers", "method", "weightings": {w: {"on", "off", "compare"}}}``.
    """
    batch_size = batch_size or pc.batch_size
    if generator is None:
        generator = torch.Generator(device=states_pool.device).manual_seed(seed)
    with torch.no_grad():
        action_dim = policy(states_pool[:1]).shape[-1]
    s, t, eps = draw_samples(states_pool, action_dim, pc, n_samples, generator)
    parts = surrogate_terms(policy, behavior_model, critic, s, t, eps, pc)
    out: dict[str, Any] = {"n_samples": n_samples, "batch_size": batch_size, "weightings": {}}
    if method not in ("auto", "factored", "vmap"):
        raise ValueError(f"method must be auto, factored or vmap, got {method!r}")
    factored = method == "factored" or (method == "auto" and linear_modules(policy) is not None)
    layers = parameter_layers(policy)
    names, sizes = [n for n, _ in layers], [sl.stop - sl.start for _, sl in layers]
    out["layers"] = [{"name": n, "n_params": k} for n, k in zip(names, sizes)]
    out["method"] = "factored" if factored else "vmap"
    for w in weightings:
        d_on, d_off = surrogate_direction(parts, pc, w, True), surrogate_direction(parts, pc, w, False)
        if not (torch.isfinite(d_on).all() and torch.isfinite(d_off).all()):
            raise ValueError(f"non-finite E6 directions with weighting {w!r}")
        # The blocks of the per-layer sums: layers of g_on, layers of g_off, and g_on - g_off whole.
        if factored:
            f_on, f_off, f_diff = _linear_factors(policy, s, [d_on, d_off, d_on - d_off])
            blocks = [_factored_block([f]) for f in (*f_on, *f_off)] + [_factored_block(f_diff)]
        else:
            g_on, _ = policy_vjp(policy, s, d_on, chunk)
            g_off, _ = policy_vjp(policy, s, d_off, chunk)
            blocks = _quads(g_on, layers) + _quads(g_off, layers) + [_Quad(g_on - g_off)]
            del g_on, g_off
        # One pass of resamples over all blocks gives every statistic (totals add up over
        # layers), all on the same resamples.
        sums = _sums(blocks, reps, seed)
        n_l = len(layers)
        on, off = sums.pick(slice(0, n_l)), sums.pick(slice(n_l, 2 * n_l))
        out["weightings"][w] = {
            "on": _stats(on, names, sizes, batch_size, confidence, reps),
            "off": _stats(off, names, sizes, batch_size, confidence, reps),
            "compare": _compare(
                on.total(), off.total(), sums.pick([2 * n_l]), blocks[-1], batch_size, confidence, reps, seed
            ),
        }
    return out


def snapshot_steps(total: int, fractions: Sequence[float]) -> list[int]:
    """Distinct training steps round(f * total), sorted; fractions must lie in [0, 1]."""
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"checkpoint fractions must lie in [0, 1], got {list(fractions)}")
    return sorted({int(round(f * total)) for f in fractions})


def initial_policy(
    cfg: RunConfig, data: Transitions, device: torch.device, dtype: torch.dtype
) -> DeterministicPolicy:
    """The policy at step 0, built exactly as ``train_policy`` builds it (same seed, same RNG stream)."""
    with seeded_global_rng(stage_seed(cfg.seed, "policy"), device):
        return DeterministicPolicy(data.state_dim, data.action_dim, cfg.policy.hidden).to(
            device=device, dtype=dtype
        )


def _policy_at(
    step: int,
    cfg: RunConfig,
    data: Transitions,
    behavior_model: nn.Module,
    critic: Any,
    work: Path,
    device: torch.device,
    dtype: torch.dtype,
    progress: bool,
) -> DeterministicPolicy:
    """Advance the real training run to ``step`` (train_policy's stop_after) and return its policy there.

    Each snapshot's weights are also kept in ``work/gradient_variance/``, so that a killed
    measurement resumes: train_policy's own checkpoint has by then moved past earlier steps.
    """
    pi = initial_policy(cfg, data, device, dtype)  # forks the global RNG: the caller's stream is untouched
    if step == 0:
        return pi.eval()
    try:
        train_policy(cfg, data, behavior_model, critic, work, device, dtype, progress, stop_after=step)
    except Interrupted:
        pass  # the simulated kill at `step`: its checkpoint (a multiple of checkpoint_every) is kept
    ckpt = artifacts.load_torch(work / "policy.pt")  # train_policy has checked its config against cfg
    snap = work / "gradient_variance" / f"policy_step{step}.pt"
    if ckpt["step"] == step:
        artifacts.save_torch(
            snap, {"config": ckpt["config"], "step": step, "policy": ckpt["modules"]["policy"]}
        )
        state = ckpt["modules"]["policy"]
    elif (
        snap.exists() and (s := artifacts.load_torch(snap))["config"] == ckpt["config"] and s["step"] == step
    ):
        state = s["policy"]
    else:
        raise ValueError(
            f"{work / 'policy.pt'} is at step {ckpt['step']}, past the snapshot at step {step}, and no "
            f"snapshot of step {step} was kept; use an empty work directory"
        )
    pi.load_state_dict(state)
    return pi.eval()


def measure_run(
    cfg: RunConfig,
    data: Transitions,
    behavior_model: nn.Module,
    critic: Any,
    work: Path,
    fractions: Sequence[float] = (0.1, 0.5, 1.0),
    n_samples: int = 2048,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    confidence: float = 0.95,
    reps: int = 1000,
    seed: int = 0,
    target: str | None = None,
) -> dict[str, Any]:
    """Train the policy with ``srpo.train.train_policy`` and measure it at ``fractions`` of its steps.

    No second training loop: checkpoint_every is set to the gcd of the snapshot steps (it is
    not part of a checkpoint's config key, so this is the same run), training is stopped with
    ``stop_after`` at each snapshot step (``Interrupted``, checkpoint kept), the policy is read
    from ``work/policy.pt`` and measured, and the next call resumes from there. A fraction of
    0 measures the policy at initialization. Every checkpoint is measured on the same draws
    (a generator seeded from ``seed`` and the run seed), so differences between checkpoints
    are not draw noise; runs with other seeds get independent draws. ``seed`` also seeds the
    bootstrap and the sign flips.
    """
    device = torch.device(device)
    work = Path(work)
    # Draws shared by the checkpoints of this run, independent across runs (run seeds), so
    # that per-seed results, and the p-values combined in summarize(), are independent.
    draw_seed = stage_seed(cfg.seed, f"gradient-variance-{seed}")
    steps = snapshot_steps(cfg.policy.steps, fractions)
    positive = [k for k in steps if k > 0]
    run_cfg = dataclasses.replace(cfg, checkpoint_every=math.gcd(*positive)) if positive else cfg
    pool = data.to_tensors(device, dtype)["obs"]
    checkpoints = []
    for k in steps:
        pi = _policy_at(k, run_cfg, data, behavior_model, critic, work, device, dtype, progress)
        gen = torch.Generator(device=device).manual_seed(draw_seed)
        res = measure_checkpoint(
            pi, behavior_model, critic, pool, cfg.policy, n_samples, batch_size, gen, confidence, reps, seed
        )
        checkpoints.append({"step": k, "fraction": k / cfg.policy.steps if cfg.policy.steps else 0.0, **res})
    return {
        "target": target or cfg.task,
        "seed": cfg.seed,
        "steps": cfg.policy.steps,
        "measure_seed": seed,
        "draw_seed": draw_seed,
        "checkpoints": checkpoints,
        "policy": dataclasses.asdict(cfg.policy),
    }


def measure_bandit(
    shape: str,
    seed: int,
    cfg: RunConfig,
    work: Path,
    n_data: int = 10_000,
    measure_seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`measure_run` on an exact-score bandit: exact eps* and exact Q (validation/bandits.py).

    With the exact score and critic, and the bandit's single (dummy) state, all gradient noise
    comes from sampling (t, eps). The dataset is ``make_dataset(bandit, n_data, seed)``;
    ``cfg`` must be the bandit's config with the same (run) seed. ``measure_seed`` is
    :func:`measure_run`'s ``seed`` (draws and bootstrap); other keywords go to it as well.
    """
    task = shape if shape.startswith("bandit-") else f"bandit-{shape}"
    bandit = bandit_tasks.get_bandit(task)
    if cfg.task != task or cfg.seed != seed:
        raise ValueError(f"cfg is for task {cfg.task!r} seed {cfg.seed}, not {task!r} seed {seed}")
    data = bandit_tasks.make_dataset(bandit, n_data, seed)
    return measure_run(
        cfg,
        data,
        bandits.ExactNoisePredictor(bandit),
        bandits.ExactCritic(bandit),
        work,
        target=task,
        seed=measure_seed,
        **kwargs,
    )


def measure_task(
    cfg: RunConfig,
    data: Transitions,
    upstream: Path | dict[str, Path],
    work: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`measure_run` with the finished behavior model and IQL critic in ``upstream``."""
    device = torch.device(device)
    behavior_model = load_finished("behavior", cfg, data, upstream_dir(upstream, "behavior"), device, dtype)
    critic = load_finished("critic", cfg, data, upstream_dir(upstream, "critic"), device, dtype)
    return measure_run(cfg, data, behavior_model, critic, work, device=device, dtype=dtype, **kwargs)
