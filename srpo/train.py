"""SRPO training, SRPO Alg. 1: behavior model -> IQL critic -> policy extraction.

This is the reference: one seed, plain eager PyTorch, each stage one loop you can read
top to bottom (the losses are in :mod:`srpo.behavior`, :mod:`srpo.critic` and
:mod:`srpo.policy`). The machinery around the loops - seeds, checkpoints, running means,
interrupt and resume - is :mod:`srpo.stage_loop`. :mod:`srpo.fast` trains S seeds at once
with the same math and the same random draws, and is what the pipeline runs; every
speed-up is measured against these loops (benchmarks/train_throughput.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srpo import artifacts, behavior, critic as iql, policy as srpo_policy, precision
from srpo.behavior import NoisePredictor
from srpo.config import RunConfig
from srpo.critic import Critic
from srpo.policy import DeterministicPolicy
from srpo.stage_loop import (
    STAGES,
    UPSTREAM,
    StageState,
    TrainResult,
    Upstream,
    check_device_available,
    check_resumable,
    discard_stale,
    run_loop,
    seeded_global_rng,
    stage_config,
    stage_seed,
    upstream_dir,
)
from srpo.transitions import Transitions


def train_behavior(
    cfg: RunConfig,
    data: Transitions,
    out: Path,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[NoisePredictor, list[dict[str, float]]]:
    """Stage 1: fit eps_psi by denoising score matching (E4) on the dataset's (s, a)."""
    bc = cfg.behavior
    seed = stage_seed(cfg.seed, "behavior")
    with seeded_global_rng(seed, device):
        init_gen = torch.Generator().manual_seed(seed)
        model = NoisePredictor(
            data.state_dim,
            data.action_dim,
            bc.width,
            bc.n_blocks,
            bc.dropout,
            bc.time_features,
            bc.time_scale,
            generator=init_gen,
        ).to(device=device, dtype=dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=bc.lr, weight_decay=bc.weight_decay)
        gen = torch.Generator(device=device).manual_seed(seed)
        st = StageState(
            "behavior", out / "behavior.pt", stage_config(cfg, "behavior", data), {"model": model}, opt, gen
        )
        done = st.resume()
        d = data.to_tensors(device, dtype)
        n = len(data)

        def step() -> None:
            idx = torch.randint(n, (bc.batch_size,), generator=gen, device=device)
            t, eps = behavior.sample_dsm_noise(bc.batch_size, data.action_dim, bc.t_min, gen, device, dtype)
            masks = behavior.sample_dropout_masks(model, bc.batch_size, gen, device, dtype)
            with precision.forward(bc.precision, device):
                loss = behavior.dsm_loss(model, d["obs"][idx], d["act"][idx], t, eps, masks).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            st.record(loss=loss)

        if not done:
            with precision.stage(bc.precision, device):
                run_loop(st, bc.steps, cfg.log_every, cfg.checkpoint_every, step, progress, stop_after)
    model.eval()
    return model, st.history


def preprocess_rewards(cfg: RunConfig, data: Transitions) -> np.ndarray:
    """Reward preprocessing of method §4, chosen by the task's reward mode."""
    if cfg.reward_mode == "locomotion":
        return iql.scale_rewards_locomotion(data.rewards, data.terminals)
    if cfg.reward_mode == "antmaze":
        return iql.shift_rewards_antmaze(data.rewards)
    return data.rewards


def train_critic(
    cfg: RunConfig,
    data: Transitions,
    out: Path,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[Critic, list[dict[str, float]]]:
    """Stage 2: IQL. Expectile regression of V on min target Q; TD regression of twin Q (method §4)."""
    cc = cfg.critic
    seed = stage_seed(cfg.seed, "critic")
    with seeded_global_rng(seed, device):
        critic = Critic(data.state_dim, data.action_dim, cc.hidden).to(device=device, dtype=dtype)
        opt = torch.optim.Adam([*critic.q.parameters(), *critic.v.parameters()], lr=cc.lr)
        gen = torch.Generator(device=device).manual_seed(seed)
        st = StageState(
            "critic", out / "critic.pt", stage_config(cfg, "critic", data), {"critic": critic}, opt, gen
        )
        done = st.resume()
        d = data.to_tensors(device, dtype, rewards=preprocess_rewards(cfg, data))
        n = len(data)

        def step() -> None:
            idx = torch.randint(n, (cc.batch_size,), generator=gen, device=device)
            with precision.forward(cc.precision, device):
                v_loss, q_loss, q_mean = (
                    x.mean()
                    for x in iql.iql_losses(
                        critic,
                        d["obs"][idx],
                        d["act"][idx],
                        d["rew"][idx],
                        d["next_obs"][idx],
                        d["done"][idx],
                        cc.expectile,
                        cc.gamma,
                    )
                )
            opt.zero_grad(set_to_none=True)
            (v_loss + q_loss).backward()
            opt.step()
            iql.ema_update(critic.q_target, critic.q, cc.target_ema)
            st.record(v_loss=v_loss, q_loss=q_loss, q_mean=q_mean)

        if not done:
            with precision.stage(cc.precision, device):
                run_loop(st, cc.steps, cfg.log_every, cfg.checkpoint_every, step, progress, stop_after)
    critic.eval()
    return critic, st.history


def train_policy(
    cfg: RunConfig,
    data: Transitions,
    behavior_model: nn.Module,
    critic: Critic,
    out: Path,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[DeterministicPolicy, list[dict[str, float]]]:
    """Stage 3: SRPO policy extraction with the score-regularized gradient (E6)."""
    pc = cfg.policy
    if getattr(behavior_model, "action_dim", data.action_dim) != data.action_dim:
        raise ValueError(
            f"behavior model predicts {behavior_model.action_dim}-dim actions but dataset {data.name!r} "
            f"has {data.action_dim}-dim actions; train the behavior model on this dataset"
        )
    behavior_model.eval().requires_grad_(False)
    critic.eval().requires_grad_(False)
    st, done = policy_state(cfg, data, out / "policy.pt", stage_config(cfg, "policy", data), device, dtype)
    pi, opt, sched, gen = st.modules["policy"], st.optimizer, st.scheduler, st.generator
    d = data.to_tensors(device, dtype)
    n = len(data)

    def step() -> None:
        s = d["obs"][torch.randint(n, (pc.batch_size,), generator=gen, device=device)]
        t, eps = srpo_policy.sample_surrogate_noise(
            pc.batch_size, data.action_dim, pc.t_range, pc.t_fixed, gen, device, dtype
        )
        with precision.forward(pc.precision, device):
            loss, diag = srpo_policy.srpo_loss(pi, behavior_model, critic.target_q_mean, s, t, eps, pc)
            loss, diag = loss.mean(), {k: v.mean() for k, v in diag.items()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        st.record(loss=loss, **diag)

    if not done:
        with precision.stage(pc.precision, device):
            run_loop(
                st,
                pc.steps,
                cfg.log_every,
                cfg.checkpoint_every,
                step,
                progress,
                stop_after,
                pc.snapshot_every,
            )
    pi.eval()
    return pi, st.history


def policy_state(
    cfg: RunConfig,
    data: Transitions,
    path: Path,
    config: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[StageState, bool]:
    """A policy stage's network, Adam (+ cosine decay), generator and checkpoint, resumed if one exists.

    Shared by SRPO's policy stage and the BC / IQL-AWR baselines, so that only their losses
    differ: same seed, same initial network, same batches. Returns the state and whether the
    stage had finished.
    """
    pc = cfg.policy
    seed = stage_seed(cfg.seed, "policy")
    with seeded_global_rng(seed, device):
        pi = DeterministicPolicy(data.state_dim, data.action_dim, pc.hidden).to(device=device, dtype=dtype)
        opt = torch.optim.Adam(pi.parameters(), lr=pc.lr)
        sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(pc.steps, 1))
            if pc.cosine_decay
            else None
        )
        gen = torch.Generator(device=device).manual_seed(seed)
        st = StageState("policy", path, config, {"policy": pi}, opt, gen, sched)
        done = st.resume()
    return st, done


def load_finished(
    stage: str, cfg: RunConfig, data: Transitions, directory: Path, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """The module of a finished ``behavior`` or ``critic`` checkpoint made with this config and dataset."""
    path = Path(directory) / f"{stage}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run the {stage} stage first (srpo train --stage {stage} ...)"
        )
    ckpt = artifacts.load_torch(path)
    if ckpt.get("config") != stage_config(cfg, stage, data):
        raise ValueError(
            f"{path} was trained with a different {stage} config, seed or dataset than this run; "
            f"retrain the {stage} stage"
        )
    if not ckpt["done"]:
        raise ValueError(f"{path} is unfinished (step {ckpt['step']}); finish the {stage} stage first")
    trainer = {"behavior": train_behavior, "critic": train_critic}[stage]
    module, _ = trainer(
        cfg, data, Path(directory), device, dtype, progress=False
    )  # finished: loads, trains nothing
    return module


def train(
    cfg: RunConfig,
    data: Transitions,
    out: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: dict[str, int] | None = None,
    stages: tuple[str, ...] = STAGES,
    upstream: Upstream | None = None,
    restart_on_change: bool = False,
) -> TrainResult:
    """Run (or resume) ``stages`` in order, writing checkpoints under ``out``.

    The policy stage uses the behavior model and critic trained in this call, or else the
    finished checkpoints in ``upstream`` (default: ``out``; or ``{"behavior": dir, "critic": dir}``),
    so that variants of the policy stage can share one behavior model and critic. With ``restart_on_change``
    a checkpoint
    made with another config or dataset is deleted and its stage starts over (a pipeline
    whose parameters changed); without it such a checkpoint is refused.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    device = torch.device(device)
    check_device_available(device)
    for stage in stages:  # before any work: a stage the device cannot run must not fail hours in
        precision.check_device(getattr(cfg, stage).precision, device, f"{stage}.precision")
    out = Path(out)
    if not restart_on_change:
        check_resumable(out, cfg, stages, data)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(out / "config.json", cfg.to_dict())
    stop_after = stop_after or {}
    modules: dict[str, nn.Module] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    wall: dict[str, float] = {}
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        if restart_on_change:
            discard_stale(out / f"{stage}.pt", stage_config(cfg, stage, data))
        if stage == "policy":
            for dep in UPSTREAM["policy"]:
                if dep not in modules:
                    modules[dep] = load_finished(
                        dep, cfg, data, upstream_dir(upstream or out, dep), device, dtype
                    )
            modules[stage], histories[stage] = train_policy(
                cfg,
                data,
                modules["behavior"],
                modules["critic"],
                out,
                device,
                dtype,
                progress,
                stop_after.get(stage),
            )
        else:
            trainer = {"behavior": train_behavior, "critic": train_critic}[stage]
            modules[stage], histories[stage] = trainer(
                cfg, data, out, device, dtype, progress, stop_after.get(stage)
            )
        wall[stage] = time.perf_counter() - t0
    return TrainResult(modules, histories, wall)
