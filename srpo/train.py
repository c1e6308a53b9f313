"""SRPO training, SRPO Alg. 1: behavior model -> IQL critic -> policy extraction.

This is the reference: one seed, plain eager PyTorch, each stage one loop you can
read top to bottom. :mod:`srpo.seed_batch` trains S seeds at once with the same
math and the same random draws, and is what the pipeline runs; every speed-up is
measured against these loops (benchmarks/train_throughput.py).

Around each loop a :class:`StageState` owns what makes a run reproducible and
resumable: the seeded generator that draws data indices, noise and dropout masks,
the optimizer, the loss history, and the atomic checkpoint that holds all of them.
A run killed at any point resumes from its last checkpoint and finishes with
bit-identical parameters on CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from srpo import artifacts, behavior, critic as iql, policy as srpo_policy, precision
from srpo.behavior import NoisePredictor
from srpo.config import RunConfig
from srpo.critic import Critic
from srpo.policy import DeterministicPolicy
from srpo.transitions import Transitions


class Interrupted(RuntimeError):
    """Raised when ``stop_after`` ends a stage early: a simulated kill, progress since the last checkpoint lost."""


def stage_seed(seed: int, stage: str) -> int:
    """A distinct, stable 63-bit seed per (run seed, stage)."""
    return (seed * 1_000_003 + zlib.crc32(stage.encode())) % (2**63)


class RunningMeans:
    """Per-metric sums since the last read, kept on the device and added to in place.

    In place, with the step count on the device too, so that adding has fixed addresses
    and no host sync: a captured CUDA graph of a whole update (:mod:`srpo.cuda_graph`)
    adds to the same sums on every replay. Works for any metric shape (one value per
    seed in the seed-batched loops); :meth:`pop` is the one host read.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._count: Tensor | None = None

    def add(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            if k not in self._sums:  # float32 at least: a bf16 sum of 1000 steps would round away most of them
                self._sums[k] = torch.zeros_like(v, dtype=torch.promote_types(v.dtype, torch.float32))
            self._sums[k].add_(v.detach())
        if self._count is None:
            self._count = torch.zeros((), device=next(iter(values.values())).device)
        self._count.add_(1)

    def pop(self) -> dict[str, Any]:
        """The means since the last pop (floats, or lists for per-seed metrics); resets the sums in place."""
        if self._count is None:
            return {}
        names = list(self._sums)
        shape = self._sums[names[0]].shape
        count, *sums = torch.stack([t.double() for t in (self._count.expand(shape), *self._sums.values())]).tolist()
        for t in (self._count, *self._sums.values()):
            t.zero_()
        n = count[0] if shape else count  # the same for every seed
        if n == 0:
            return {}
        return {name: [v / n for v in s] if shape else s / n for name, s in zip(names, sums)}


@dataclass
class StageState:
    """Resumable state of one stage: modules, optimizer, generator, step and history."""

    name: str
    path: Path
    config: dict[str, Any]
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    scheduler: Any = None
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    means: RunningMeans = field(default_factory=RunningMeans)
    _t0: float = field(default_factory=time.perf_counter)
    _elapsed_before: float = 0.0

    def resume(self) -> bool:
        """Load the checkpoint if one exists; True if the stage had already finished."""
        if not self.path.exists():
            return False
        ckpt = artifacts.load_torch(self.path)
        if ckpt.get("config") != self.config:
            raise ValueError(
                f"{self.path} was written by a run with a different {self.name} config; "
                "use another --out directory or delete the checkpoint to start over"
            )
        for key, module in self.modules.items():
            module.load_state_dict(ckpt["modules"][key])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.step, self.history = ckpt["step"], ckpt["history"]
        self._elapsed_before = ckpt.get("elapsed_s", 0.0)
        return bool(ckpt["done"])

    def save(self, done: bool, path: Path | None = None) -> None:
        """Write the checkpoint atomically to ``path`` (default: :attr:`path`)."""
        artifacts.save_torch(
            self.path if path is None else path,
            {
                "stage": self.name,
                "config": self.config,
                "step": self.step,
                "done": done,
                "modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "history": self.history,
                "elapsed_s": self.elapsed,
            },
        )

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._t0

    def record(self, **values: Tensor) -> None:
        """Accumulate detached metrics on device; no host sync until :meth:`flush`."""
        self.means.add(values)

    def flush(self) -> dict[str, float]:
        """Average what :meth:`record` gathered since the last flush into the history."""
        return self.log({"step": self.step, **self.means.pop()})

    def log(self, entry: dict[str, float]) -> dict[str, float]:
        """Append one history entry, refusing non-finite values (the last good checkpoint stays)."""
        bad = [k for k, v in entry.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"{self.name}: {', '.join(bad)} became non-finite by step {self.step}; the last good "
                f"checkpoint is kept in {self.path}. Check the data's scale or lower the learning rate."
            )
        self.history.append(entry)
        return entry


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (module init draws from it), seed it, restore it afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def run_loop(
    st: StageState,
    total: int,
    log_every: int,
    checkpoint_every: int,
    step_fn,
    progress: bool,
    stop_after: int | None,
) -> None:
    """Drive ``step_fn`` from the resumed step to ``total`` with logging and checkpoints.

    ``st`` is a :class:`StageState` or anything with its ``name``, ``path``, ``step``,
    ``flush`` and ``save`` (the seed-batched stages pass a group of them).
    """
    bar = tqdm(total=total, initial=st.step, desc=st.name, disable=not progress, dynamic_ncols=True, leave=False)
    while st.step < total:
        if stop_after is not None and st.step >= stop_after:
            bar.close()
            raise Interrupted(f"{st.name} stopped at step {st.step} (last checkpoint kept)")
        step_fn()
        st.step += 1
        bar.update(1)
        ckpt_due = st.step % checkpoint_every == 0 or st.step == total
        if st.step % log_every == 0 or ckpt_due:
            # Flushing before every checkpoint keeps the saved history exact, and the
            # finiteness check below guarantees that no diverged state is ever saved.
            entry = st.flush()
            bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k != "step"})
        if ckpt_due:
            st.save(done=st.step == total)
    bar.close()
    if total == 0 or not st.path.exists():
        st.save(done=True)


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
            data.state_dim, data.action_dim, bc.width, bc.n_blocks, bc.dropout, bc.time_features, bc.time_scale,
            generator=init_gen,
        ).to(device=device, dtype=dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=bc.lr, weight_decay=bc.weight_decay)
        gen = torch.Generator(device=device).manual_seed(seed)
        st = StageState("behavior", out / "behavior.pt", stage_config(cfg, "behavior", data), {"model": model}, opt, gen)
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
    """Reward preprocessing of SPEC §4, chosen by the task's reward mode."""
    if cfg.reward_mode == "locomotion":
        return iql.scale_rewards_locomotion(data.rewards, data.episode_ends)
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
    """Stage 2: IQL. Expectile regression of V on min target Q; TD regression of twin Q (SPEC §4)."""
    cc = cfg.critic
    seed = stage_seed(cfg.seed, "critic")
    with seeded_global_rng(seed, device):
        critic = Critic(data.state_dim, data.action_dim, cc.hidden).to(device=device, dtype=dtype)
        opt = torch.optim.Adam([*critic.q.parameters(), *critic.v.parameters()], lr=cc.lr)
        gen = torch.Generator(device=device).manual_seed(seed)
        st = StageState("critic", out / "critic.pt", stage_config(cfg, "critic", data), {"critic": critic}, opt, gen)
        done = st.resume()
        d = data.to_tensors(device, dtype, rewards=preprocess_rewards(cfg, data))
        n = len(data)

        def step() -> None:
            idx = torch.randint(n, (cc.batch_size,), generator=gen, device=device)
            with precision.forward(cc.precision, device):
                v_loss, q_loss, q_mean = (x.mean() for x in iql.iql_losses(
                    critic, d["obs"][idx], d["act"][idx], d["rew"][idx], d["next_obs"][idx], d["done"][idx],
                    cc.expectile, cc.gamma))
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
        t, eps = srpo_policy.sample_surrogate_noise(pc.batch_size, data.action_dim, pc.t_range, pc.t_fixed, gen,
                                                    device, dtype)
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
            run_loop(st, pc.steps, cfg.log_every, cfg.checkpoint_every, step, progress, stop_after)
    pi.eval()
    return pi, st.history


def policy_state(cfg: RunConfig, data: Transitions, path: Path, config: dict[str, Any], device: torch.device,
                 dtype: torch.dtype) -> tuple[StageState, bool]:
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
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(pc.steps, 1)) if pc.cosine_decay else None
        gen = torch.Generator(device=device).manual_seed(seed)
        st = StageState("policy", path, config, {"policy": pi}, opt, gen, sched)
        done = st.resume()
    return st, done


STAGES = ("behavior", "critic", "policy")
# Bumped when a checkpoint's contents change meaning; 2: dropout masks drawn from the stage generator,
# behavior blocks without a Dropout module.
CHECKPOINT_FORMAT = 2
UPSTREAM = {"behavior": (), "critic": (), "policy": ("behavior", "critic")}


def stage_config(cfg: RunConfig, stage: str, data: Transitions) -> dict[str, Any]:
    """What a stage's checkpoint must agree with to be resumed: its section, the seed, the task, the data."""
    d = cfg.to_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "task": cfg.task,
        "seed": cfg.seed,
        "reward_mode": cfg.reward_mode,
        "data": data.fingerprint(),
        stage: d[stage],
        **{u: d[u] for u in UPSTREAM[stage]},
    }


def load_finished(
    stage: str, cfg: RunConfig, data: Transitions, directory: Path, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """The module of a finished ``behavior`` or ``critic`` checkpoint made with this config and dataset."""
    path = Path(directory) / f"{stage}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the {stage} stage first (srpo train --stage {stage} ...)")
    ckpt = artifacts.load_torch(path)
    if ckpt.get("config") != stage_config(cfg, stage, data):
        raise ValueError(f"{path} was trained with a different {stage} config, seed or dataset than this run; "
                         f"retrain the {stage} stage")
    if not ckpt["done"]:
        raise ValueError(f"{path} is unfinished (step {ckpt['step']}); finish the {stage} stage first")
    trainer = {"behavior": train_behavior, "critic": train_critic}[stage]
    module, _ = trainer(cfg, data, Path(directory), device, dtype, progress=False)  # finished: loads, trains nothing
    return module


Upstream = Path | dict[str, Path]


def upstream_dir(upstream: Upstream, stage: str) -> Path:
    """Where a finished ``stage`` checkpoint lives: one directory for all stages, or one per stage."""
    return Path(upstream[stage]) if isinstance(upstream, dict) else Path(upstream)


@dataclass
class TrainResult:
    modules: dict[str, nn.Module]
    histories: dict[str, list[dict[str, float]]]
    wall_s: dict[str, float]

    @property
    def policy(self) -> DeterministicPolicy:
        return self.modules["policy"]


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
    so that variants of the policy stage can share one behavior model and critic. With ``restart_on_change`` a checkpoint
    made with another config or dataset is deleted and its stage starts over (a pipeline
    whose parameters changed); without it such a checkpoint is refused.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    device = torch.device(device)
    for stage in stages:  # before any work: a stage the device cannot run must not fail hours in
        precision.check_device(getattr(cfg, stage).precision, device, f"{stage}.precision")
    out = Path(out)
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
                    modules[dep] = load_finished(dep, cfg, data, upstream_dir(upstream or out, dep), device, dtype)
            modules[stage], histories[stage] = train_policy(
                cfg, data, modules["behavior"], modules["critic"], out, device, dtype, progress, stop_after.get(stage))
        else:
            trainer = {"behavior": train_behavior, "critic": train_critic}[stage]
            modules[stage], histories[stage] = trainer(cfg, data, out, device, dtype, progress, stop_after.get(stage))
        wall[stage] = time.perf_counter() - t0
    return TrainResult(modules, histories, wall)


def discard_stale(path: Path, config: dict[str, Any]) -> None:
    if path.exists() and artifacts.load_torch(path).get("config") != config:
        print(f"{path} was made with another config or dataset: starting this stage over", flush=True)
        path.unlink()
