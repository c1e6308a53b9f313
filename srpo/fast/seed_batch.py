"""Seeds as a batch dimension: S independent runs of one stage, trained as one.

Each seed's modules are stacked parameter-wise (``torch.func.stack_module_state``):
every tensor gains a leading seed dimension, the stage's loss - the same pure
functions the reference loops of :mod:`srpo.train` call - is ``vmap``-ed over it,
and one optimizer steps all seeds. Adam and AdamW act elementwise, so one optimizer
over stacked tensors *is* S independent optimizers, and the learning-rate schedule
depends on the step only. Seed k draws its batch indices, noise and dropout masks
from its own generator in the order the reference loop draws them, so seed k of a
batched run equals the single run with seed k up to float rounding
(tests/test_seed_batch.py).

The fast path, beyond batching: a fused optimizer step, the target EMA as one
``_foreach`` op, data indexed on the device, metrics kept on the device and read
once every ``log_every`` steps (one host sync for all seeds and metrics), and on a
CUDA device each update - draws, forward, backward, optimizer, EMA, metric sums -
captured once as a CUDA graph and replayed (:mod:`srpo.fast.cuda_graph`; ``cuda_graphs=False``
turns it off). Optionally (``compile=True``) the vmapped losses go through ``torch.compile``,
which fuses the elementwise work between the matmuls; and each stage runs at its config's
``precision`` (:mod:`srpo.precision`: fp32 by default, TF32 or bf16), as the reference loop does.

Checkpoints are the reference's: one ``<stage>.pt`` per seed with the same schema,
so a batched run resumes from, and is read by, everything that reads single runs.
The S files of one checkpoint are committed in two phases (all written beside their
targets, then all renamed), so a kill never leaves the seeds at different steps.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from srpo import artifacts, behavior, critic as iql, policy as srpo_policy, precision
from srpo.behavior import NoisePredictor
from srpo.config import RunConfig
from srpo.critic import Critic
from srpo.fast.cuda_graph import CaptureTurns, DeviceLr, capturable_optimizer, graphed
from srpo.policy import DeterministicPolicy
from srpo.stage_loop import (
    STAGES,
    UPSTREAM,
    RunningMeans,
    StageState,
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
from srpo.train import load_finished, preprocess_rewards
from srpo.transitions import Transitions

# ---------------------------------------------------------------------------------------
# Stacked modules and vmapped calls
# ---------------------------------------------------------------------------------------


class Stacked:
    """S modules of one architecture as tensors with a leading seed dimension.

    ``modules`` stay the per-seed view (what checkpoints hold): :meth:`write_back`
    copies the stacked tensors into them, :meth:`reload` copies them back after a resume.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.base = copy.deepcopy(self.modules[0]).to("meta")
        params, self.buffers = torch.func.stack_module_state(self.modules)
        trainable = {n: p.requires_grad for n, p in self.modules[0].named_parameters()}
        self.params = {n: p.detach().requires_grad_(trainable[n]) for n, p in params.items()}

    def parameters(self, prefix: str = "", trainable: bool | None = None) -> list[Tensor]:
        """Stacked parameters whose name starts with ``prefix``, in the modules' registration order."""
        return [
            p
            for n, p in self.params.items()
            if n.startswith(prefix) and (trainable is None or p.requires_grad == trainable)
        ]

    def tensors(self) -> dict[str, Tensor]:
        return {**self.params, **self.buffers}

    @torch.no_grad()
    def write_back(self) -> None:
        for k, module in enumerate(self.modules):
            for n, t in (*module.named_parameters(), *module.named_buffers()):
                t.copy_(self.tensors()[n][k])

    @torch.no_grad()
    def reload(self) -> None:
        named = [dict((*m.named_parameters(), *m.named_buffers())) for m in self.modules]
        for n, t in self.tensors().items():
            t.copy_(torch.stack([d[n] for d in named]))


class _Apply(nn.Module):
    """``fn(*modules, *args)`` as a module's forward, so that ``functional_call`` can run it."""

    def __init__(self, fn: Callable[..., Any], modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.fn = fn
        self.m = nn.ModuleList(modules)

    def forward(self, *args: Any) -> Any:
        return self.fn(*self.m, *args)


def vmapped(fn: Callable[..., Any], *stacks: Stacked) -> Callable[..., Any]:
    """``fn(module_1, ..., module_j, *args)`` for every seed at once.

    Module i is seed k's slice of ``stacks[i]``; every tensor in ``args`` has a leading
    seed dimension. Returns ``fn``'s outputs with a leading seed dimension.
    """
    wrapper = _Apply(fn, [s.base for s in stacks])

    def call(*args: Any) -> Any:
        tensors = {f"m.{i}.{n}": t for i, s in enumerate(stacks) for n, t in s.tensors().items()}
        return torch.func.vmap(lambda p, *a: torch.func.functional_call(wrapper, p, a))(tensors, *args)

    return call


def _means(per_sample: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Each per-sample loss reduced to its batch mean (inside vmap: per seed)."""
    return tuple(x.mean() for x in per_sample)


def maybe_compiled(loss_fn: Callable[..., Any], enabled: bool) -> Callable[..., Any]:
    """``loss_fn`` through ``torch.compile`` if ``enabled``: its forward and backward become fused kernels.

    The elementwise chains between the matmuls (Mish, LayerNorm, dropout, residuals) are then
    one kernel each instead of several passes over memory - what bounds a GPU update once the
    launches are gone (CUDA graphs) and the matmuls run on tensor cores. Compilation happens on
    the first call (a CUDA graph's eager warm-up); numerics change by rounding only. Every
    stage compiles the same wrapper code with other modules: torch's recompile limit (8 per
    process by default) bounds how many stages one process can compile; past it they run eagerly.
    """
    return torch.compile(loss_fn, dynamic=False) if enabled else loss_fn


# ---------------------------------------------------------------------------------------
# S stage states in lockstep
# ---------------------------------------------------------------------------------------


class _SeedOptimizer:
    """Seed k's slice of a stacked optimizer, seen as the reference run's optimizer.

    :class:`StageState` saves ``state_dict()`` and resumes with ``load_state_dict()``;
    this view slices the stacked state on save and collects each seed's state on
    resume, for :meth:`SeedGroup.resume` to stack.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int, loaded: dict[int, dict]) -> None:
        self.optimizer, self.k, self.loaded = optimizer, k, loaded

    def state_dict(self) -> dict[str, Any]:
        sd = self.optimizer.state_dict()
        return {
            "state": {
                i: {n: v[self.k].clone() if torch.is_tensor(v) and v.dim() > 0 else v for n, v in s.items()}
                for i, s in sd["state"].items()
            },
            # The reference loop's optimizer picks its own implementation, with a float lr.
            "param_groups": [
                {**g, "fused": None, "foreach": None, "capturable": False, "lr": float(g["lr"])}
                for g in sd["param_groups"]
            ],
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.loaded[self.k] = sd


def _load_stacked(optimizer: torch.optim.Optimizer, sds: list[dict]) -> None:
    """Load S single-run optimizer states (one per seed) into the stacked optimizer."""
    first = sds[0]
    state = {
        i: {
            n: torch.stack([sd["state"][i][n] for sd in sds]) if torch.is_tensor(v) and v.dim() > 0 else v
            for n, v in s.items()
        }
        for i, s in first["state"].items()
    }
    groups = [
        {**g, "fused": mine["fused"], "foreach": mine["foreach"], "capturable": mine["capturable"]}
        for g, mine in zip(first["param_groups"], optimizer.param_groups)
    ]  # ours keeps its implementation
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    for g, lr in zip(optimizer.param_groups, lrs):
        if torch.is_tensor(lr):  # a captured update reads this very tensor: keep it, with the loaded value
            g["lr"] = lr.fill_(g["lr"])


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def _recover(paths: Sequence[Path]) -> None:
    """Finish, or roll back, a two-phase checkpoint commit that a kill interrupted."""
    pending = [p for p in paths if _pending(p).exists()]
    if not pending:
        return
    step = artifacts.load_torch(_pending(pending[0]))["step"]
    committed = [
        p
        for p in paths
        if not _pending(p).exists() and p.exists() and artifacts.load_torch(p)["step"] == step
    ]
    if len(pending) + len(committed) == len(paths):  # every file was written: finish the renames
        for p in pending:
            os.replace(_pending(p), p)
    else:  # killed while writing: the previous checkpoint stands
        for p in pending:
            _pending(p).unlink()


class SeedGroup:
    """S :class:`StageState` s that move in lockstep: what :func:`srpo.stage_loop.run_loop` drives."""

    def __init__(
        self,
        states: list[StageState],
        stacks: list[Stacked],
        optimizer: torch.optim.Optimizer,
        loaded: dict[int, dict],
    ) -> None:
        self.states, self.stacks, self.optimizer, self._loaded = states, stacks, optimizer, loaded
        self.name, self.path = states[0].name, states[0].path
        self.means = RunningMeans()

    @property
    def step(self) -> int:
        return self.states[0].step

    @step.setter
    def step(self, value: int) -> None:
        for st in self.states:
            st.step = value

    def resume(self) -> bool:
        """Load every seed's checkpoint (all or none); True if the stage had already finished."""
        _recover([st.path for st in self.states])
        found = [st.path.exists() for st in self.states]
        if any(found) and not all(found):
            missing = [str(st.path) for st, f in zip(self.states, found) if not f]
            raise ValueError(
                f"{self.name}: checkpoints of some seeds exist but not of {', '.join(missing)}; "
                "resume with the same seeds, or delete the checkpoints to start over"
            )
        cuda = list(range(torch.cuda.device_count()))
        with torch.random.fork_rng(devices=cuda):  # a reference checkpoint restores the global RNG: keep ours
            done = [st.resume() for st in self.states]
        if not any(found):
            return False
        steps = {st.step for st in self.states}
        if len(steps) > 1 or len(set(done)) > 1:
            raise ValueError(
                f"{self.name}: the seeds' checkpoints are at different steps {sorted(steps)}; "
                "they were not written by one batched run. Delete them to start over"
            )
        for stack in self.stacks:
            stack.reload()
        if self._loaded:
            sds = [self._loaded[k] for k in range(len(self.states))]
            _load_stacked(self.optimizer, sds)
        return done[0]

    def record(self, **values: Tensor) -> None:
        """Accumulate per-seed metrics of shape (S,) on the device; no host sync."""
        self.means.add(values)

    def flush(self) -> dict[str, float]:
        """One host sync for every seed and metric; each seed's history gets its own row."""
        table = self.means.pop()
        for k, st in enumerate(self.states):
            st.log({"step": self.step, **{n: row[k] for n, row in table.items()}})
        return {"step": self.step, **{n: sum(r) / len(r) for n, r in table.items()}}  # the progress bar's

    def snapshot(self, total: int) -> None:
        """Every seed's :meth:`StageState.snapshot` (the stacked weights copied to the modules first)."""
        for stack in self.stacks:
            stack.write_back()
        for st in self.states:
            st.snapshot(total)

    def clear_snapshots(self) -> None:
        for st in self.states:
            st.clear_snapshots()

    def save(self, done: bool) -> None:
        for stack in self.stacks:
            stack.write_back()
        for st in self.states:
            st.save(done, _pending(st.path))
        for st in self.states:
            os.replace(_pending(st.path), st.path)


def _group(
    name: str,
    cfgs: Sequence[RunConfig],
    outs: Sequence[Path],
    data: Transitions,
    modules: list[dict[str, nn.Module]],
    stacks: list[Stacked],
    optimizer: torch.optim.Optimizer,
    gens: list[torch.Generator],
    scheduler: Any = None,
) -> SeedGroup:
    loaded: dict[int, dict] = {}
    states = [
        StageState(
            name,
            Path(out) / f"{name}.pt",
            stage_config(cfg, name, data),
            mods,
            _SeedOptimizer(optimizer, k, loaded),
            gen,
            scheduler,
        )  # type: ignore[arg-type]
        for k, (cfg, out, mods, gen) in enumerate(zip(cfgs, outs, modules, gens))
    ]
    return SeedGroup(states, stacks, optimizer, loaded)


def _shared(cfgs: Sequence[RunConfig], outs: Sequence[Path]) -> RunConfig:
    """The seeds' common config: configs may differ in the seed only."""
    if not cfgs:
        raise ValueError("no seeds to train")
    if len(cfgs) != len(outs):
        raise ValueError(f"{len(cfgs)} configs but {len(outs)} output directories")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    ref = cfgs[0].to_dict() | {"seed": None}
    for c in cfgs[1:]:
        if c.to_dict() | {"seed": None} != ref:
            raise ValueError(
                f"seed-batched runs must share every setting but the seed; seed {c.seed}'s config "
                f"differs from seed {cfgs[0].seed}'s"
            )
    return cfgs[0]


def _in_seed_context(
    cfgs: Sequence[RunConfig], stage: str, device: torch.device, build: Callable[[int], Any]
) -> list:
    """``build(seed)`` under each seed's seeded global RNG, as the reference loop builds its modules."""
    out = []
    for cfg in cfgs:
        seed = stage_seed(cfg.seed, stage)
        with seeded_global_rng(seed, device):
            out.append(build(seed))
    return out


# ---------------------------------------------------------------------------------------
# The three stages (SRPO Alg. 1), S seeds at a time
# ---------------------------------------------------------------------------------------


def _behavior_batch(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    outs: Sequence[Path],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
    cuda_graphs: bool = True,
    compile: bool = False,
    turns: CaptureTurns | None = None,
) -> tuple[list[NoisePredictor], list[list[dict[str, float]]]]:
    """Stage 1 for S seeds at one step: :func:`srpo.train.train_behavior`'s loop, vmapped over seeds."""
    bc = _shared(cfgs, outs).behavior
    models = _in_seed_context(
        cfgs,
        "behavior",
        device,
        lambda seed: NoisePredictor(
            data.state_dim,
            data.action_dim,
            bc.width,
            bc.n_blocks,
            bc.dropout,
            bc.time_features,
            bc.time_scale,
            generator=torch.Generator().manual_seed(seed),
        ).to(device=device, dtype=dtype),
    )
    gens = [torch.Generator(device=device).manual_seed(stage_seed(c.seed, "behavior")) for c in cfgs]
    stack = Stacked(models)
    opt = capturable_optimizer(
        torch.optim.AdamW,
        stack.parameters(trainable=True),
        device,
        cuda_graphs,
        bc.lr,
        weight_decay=bc.weight_decay,
    )
    group = _group("behavior", cfgs, outs, data, [{"model": m} for m in models], [stack], opt, gens)
    done = group.resume()
    d = data.to_tensors(device, dtype)
    n, b = len(data), bc.batch_size
    with_dropout = bc.dropout > 0
    loss_fn = maybe_compiled(vmapped(lambda m, *batch: behavior.dsm_loss(m, *batch).mean(), stack), compile)

    def draw(gen: torch.Generator) -> list[Tensor]:
        idx = torch.randint(n, (b,), generator=gen, device=device)
        t, eps = behavior.sample_dsm_noise(b, data.action_dim, bc.t_min, gen, device, dtype)
        masks = behavior.sample_dropout_masks(models[0], b, gen, device, dtype)
        return [idx, t, eps] + ([masks] if with_dropout else [])

    def step() -> None:
        idx, *noise = (torch.stack(x) for x in zip(*(draw(g) for g in gens)))
        with precision.forward(bc.precision, device):
            loss = loss_fn(d["obs"][idx], d["act"][idx], *noise)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # seeds are independent: the sum's gradient is each seed's own
        opt.step()
        group.record(loss=loss)

    if not done:
        with precision.stage(bc.precision, device):
            run_loop(
                group,
                bc.steps,
                cfgs[0].log_every,
                cfgs[0].checkpoint_every,
                graphed(step, gens, device, cuda_graphs, turns),
                progress,
                stop_after,
            )
    stack.write_back()
    return [m.eval() for m in models], [st.history for st in group.states]


def _critic_batch(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    outs: Sequence[Path],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
    cuda_graphs: bool = True,
    compile: bool = False,
    turns: CaptureTurns | None = None,
) -> tuple[list[Critic], list[list[dict[str, float]]]]:
    """Stage 2 for S seeds at one step: :func:`srpo.train.train_critic`'s loop (IQL), vmapped over seeds."""
    cfg0 = _shared(cfgs, outs)
    cc = cfg0.critic
    critics = _in_seed_context(
        cfgs,
        "critic",
        device,
        lambda seed: Critic(data.state_dim, data.action_dim, cc.hidden).to(device=device, dtype=dtype),
    )
    gens = [torch.Generator(device=device).manual_seed(stage_seed(c.seed, "critic")) for c in cfgs]
    stack = Stacked(critics)
    opt = capturable_optimizer(torch.optim.Adam, stack.parameters(trainable=True), device, cuda_graphs, cc.lr)
    group = _group("critic", cfgs, outs, data, [{"critic": c} for c in critics], [stack], opt, gens)
    done = group.resume()
    d = data.to_tensors(device, dtype, rewards=preprocess_rewards(cfg0, data))
    n, b = len(data), cc.batch_size
    targets, online = stack.parameters("q_target."), stack.parameters("q.")
    loss_fn = maybe_compiled(
        vmapped(lambda c, *batch: _means(iql.iql_losses(c, *batch, cc.expectile, cc.gamma)), stack), compile
    )

    def step() -> None:
        idx = torch.stack([torch.randint(n, (b,), generator=g, device=device) for g in gens])
        with precision.forward(cc.precision, device):
            v_loss, q_loss, q_mean = loss_fn(
                d["obs"][idx], d["act"][idx], d["rew"][idx], d["next_obs"][idx], d["done"][idx]
            )
        opt.zero_grad(set_to_none=True)
        (v_loss + q_loss).sum().backward()
        opt.step()
        iql.ema_(targets, online, cc.target_ema)
        group.record(v_loss=v_loss, q_loss=q_loss, q_mean=q_mean)

    if not done:
        with precision.stage(cc.precision, device):
            run_loop(
                group,
                cc.steps,
                cfg0.log_every,
                cfg0.checkpoint_every,
                graphed(step, gens, device, cuda_graphs, turns),
                progress,
                stop_after,
            )
    stack.write_back()
    return [c.eval() for c in critics], [st.history for st in group.states]


def _policy_batch(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    behavior_models: Sequence[nn.Module],
    critics: Sequence[Critic],
    outs: Sequence[Path],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
    cuda_graphs: bool = True,
    compile: bool = False,
) -> tuple[list[DeterministicPolicy], list[list[dict[str, float]]]]:
    """Stage 3 for S seeds at one step: :func:`srpo.train.train_policy`'s loop (E6), vmapped over seeds.

    Seed k's policy is regularized by seed k's behavior model and ascends seed k's critic.
    """
    cfg0 = _shared(cfgs, outs)
    pc = cfg0.policy
    if not len(behavior_models) == len(critics) == len(cfgs):
        raise ValueError(
            f"{len(cfgs)} seeds need as many behavior models and critics, got "
            f"{len(behavior_models)} and {len(critics)}"
        )
    for m in behavior_models:
        if getattr(m, "action_dim", data.action_dim) != data.action_dim:
            raise ValueError(
                f"behavior model predicts {m.action_dim}-dim actions but dataset {data.name!r} has "
                f"{data.action_dim}-dim actions; train the behavior model on this dataset"
            )
    frozen = [Stacked([m.eval().requires_grad_(False) for m in ms]) for ms in (behavior_models, critics)]
    policies = _in_seed_context(
        cfgs,
        "policy",
        device,
        lambda seed: DeterministicPolicy(data.state_dim, data.action_dim, pc.hidden).to(
            device=device, dtype=dtype
        ),
    )
    gens = [torch.Generator(device=device).manual_seed(stage_seed(c.seed, "policy")) for c in cfgs]
    stack = Stacked(policies)
    graphs = cuda_graphs and device.type == "cuda"
    opt = capturable_optimizer(torch.optim.Adam, stack.parameters(trainable=True), device, graphs, pc.lr)
    sched: Any = None
    if pc.cosine_decay:

        def cosine(o: torch.optim.Optimizer) -> Any:
            return torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(pc.steps, 1))

        sched = DeviceLr(opt, pc.lr, cosine) if graphs else cosine(opt)
    group = _group("policy", cfgs, outs, data, [{"policy": p} for p in policies], [stack], opt, gens, sched)
    done = group.resume()
    if isinstance(sched, DeviceLr):
        sched.sync_from_optimizer()
    d = data.to_tensors(device, dtype)
    n, b = len(data), pc.batch_size

    def batch_loss(pi: nn.Module, bm: nn.Module, c: Critic, s: Tensor, t: Tensor, eps: Tensor) -> Any:
        loss, diag = srpo_policy.srpo_loss(pi, bm, c.target_q_mean, s, t, eps, pc)
        return loss.mean(), {k: v.mean() for k, v in diag.items()}

    loss_fn = maybe_compiled(vmapped(batch_loss, stack, *frozen), compile)

    def draw(gen: torch.Generator) -> list[Tensor]:
        idx = torch.randint(n, (b,), generator=gen, device=device)
        return [
            idx,
            *srpo_policy.sample_surrogate_noise(
                b, data.action_dim, pc.t_range, pc.t_fixed, gen, device, dtype
            ),
        ]

    def update() -> None:
        idx, t, eps = (torch.stack(x) for x in zip(*(draw(g) for g in gens)))
        with precision.forward(pc.precision, device):
            loss, diag = loss_fn(d["obs"][idx], t, eps)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        group.record(loss=loss, **diag)

    fast_update = graphed(update, gens, device, graphs)

    def step() -> None:
        fast_update()
        if sched is not None:  # on the host: the schedule depends on the step only
            sched.step()

    if not done:
        with precision.stage(pc.precision, device):
            run_loop(
                group,
                pc.steps,
                cfg0.log_every,
                cfg0.checkpoint_every,
                step,
                progress,
                stop_after,
                pc.snapshot_every,
            )
    stack.write_back()
    return [p.eval() for p in policies], [st.history for st in group.states]


def _progress(path: Path, config: dict[str, Any]) -> int | None:
    """The step of ``path``'s checkpoint if it is this run's (-1: finished), else None (start over)."""
    if not path.exists():
        return None
    ckpt = artifacts.load_torch(path)
    if ckpt.get("config") != config:
        return None  # StageState.resume refuses it with a clear message
    return -1 if ckpt["done"] else ckpt["step"]


def _in_lockstep(
    stage: str,
    cfgs: Sequence[RunConfig],
    data: Transitions,
    outs: Sequence[Path],
    train_batch: Callable[[list[int]], tuple[list, list]],
) -> tuple[list, list]:
    """Run ``train_batch`` on each set of seeds that can move in lockstep; results in seed order.

    Seeds resumed at the same step (or starting together) form one batch; a seed added to
    a finished group trains alone instead of retraining the others.
    """
    paths = [Path(o) / f"{stage}.pt" for o in outs]
    _recover(paths)
    groups: dict[int | None, list[int]] = {}
    for k, (cfg, path) in enumerate(zip(cfgs, paths)):
        groups.setdefault(_progress(path, stage_config(cfg, stage, data)), []).append(k)
    modules: list = [None] * len(cfgs)
    histories: list = [None] * len(cfgs)
    for ks in groups.values():
        mods, hists = train_batch(ks)
        for k, m, h in zip(ks, mods, hists):
            modules[k], histories[k] = m, h
    return modules, histories


def train_behavior(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    outs: Sequence[Path],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
    cuda_graphs: bool = True,
    compile: bool = False,
    turns: CaptureTurns | None = None,
) -> tuple[list[NoisePredictor], list[list[dict[str, float]]]]:
    """Stage 1 (DSM, E4) for S seeds, vmapped over seeds; resumes each seed from its checkpoint."""
    _shared(cfgs, outs)
    return _in_lockstep(
        "behavior",
        cfgs,
        data,
        outs,
        lambda ks: _behavior_batch(
            [cfgs[k] for k in ks],
            data,
            [outs[k] for k in ks],
            device,
            dtype,
            progress,
            stop_after,
            cuda_graphs,
            compile,
            turns,
        ),
    )


def train_critic(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    outs: Sequence[Path],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
    cuda_graphs: bool = True,
    compile: bool = False,
    turns: CaptureTurns | None = None,
) -> tuple[list[Critic], list[list[dict[str, float]]]]:
    """Stage 2 (IQL) for S seeds, vmapped over seeds; resumes each seed from its checkpoint."""
    _shared(cfgs, outs)
    return _in_lockstep(
        "critic",
        cfgs,
        data,
        outs,
        lambda ks: _critic_batch(
            [cfgs[k] for k in ks],
            data,
            [outs[k] for k in ks],
            device,
            dtype,
            progress,
            stop_after,
            cuda_graphs,
            compile,
            turns,
        ),
    )


def train_policy(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    behavior_models: Sequence[nn.Module],
    critics: Sequence[Critic],
    outs: Sequence[Path],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: int | None = None,
    cuda_graphs: bool = True,
    compile: bool = False,
) -> tuple[list[DeterministicPolicy], list[list[dict[str, float]]]]:
    """Stage 3 (E6) for S seeds, vmapped over seeds: seed k uses seed k's behavior model and critic."""
    _shared(cfgs, outs)
    return _in_lockstep(
        "policy",
        cfgs,
        data,
        outs,
        lambda ks: _policy_batch(
            [cfgs[k] for k in ks],
            data,
            [behavior_models[k] for k in ks],
            [critics[k] for k in ks],
            [outs[k] for k in ks],
            device,
            dtype,
            progress,
            stop_after,
            cuda_graphs,
            compile,
        ),
    )


@dataclass
class SeedsResult:
    """Per stage: one module and one history per seed, and the stage's wall time (all seeds together)."""

    modules: dict[str, list[nn.Module]]
    histories: dict[str, list[list[dict[str, float]]]]
    wall_s: dict[str, float]


def side_by_side(
    jobs: dict[str, Callable[[CaptureTurns], Any]], device: torch.device
) -> dict[str, tuple[Any, float]]:
    """Run each job in its own thread; per job its result and wall seconds.

    The jobs take turns (:class:`srpo.fast.cuda_graph.CaptureTurns`, passed to the job) from
    their start until their update is captured as a CUDA graph: model construction (which
    draws from the global RNG), compilation and capture happen one job at a time. On a CUDA
    device each thread then replays its graphs on its own stream, beside the other's. On a
    CPU nothing is captured, so the jobs run one after the other (a CPU's cores are shared
    anyway). The first error of any job is raised once all have stopped.
    """
    cuda = device.type == "cuda"
    turns = CaptureTurns(len(jobs))
    streams = {name: torch.cuda.Stream(device) if cuda else None for name in jobs}  # distinct: made in a row
    results: dict[str, tuple[Any, float]] = {}
    errors: list[BaseException] = []

    def work(name: str, job: Callable[[CaptureTurns], Any]) -> None:
        try:
            t0 = time.perf_counter()
            with torch.cuda.stream(streams[name]) if cuda else contextlib.nullcontext(), turns.turn():
                out = job(turns)
                if cuda:
                    streams[name].synchronize()
            results[name] = out, time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=item, name=f"srpo-{item[0]}") for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def check_overlap(cfg: RunConfig) -> None:
    """Raise a clear error if the behavior and critic stages of ``cfg`` cannot train side by side.

    The float32 matmul precision is one setting of the process: a TF32 stage sets it for the
    whole stage (:func:`srpo.precision.stage`), which would turn the matmuls of an fp32 stage
    running beside it into TF32. bf16 matmuls are unaffected, so bf16 pairs with either.
    """
    pair = {cfg.behavior.precision, cfg.critic.precision}
    if pair == {"fp32", "tf32"}:
        raise ValueError(
            f"behavior.precision={cfg.behavior.precision} and critic.precision={cfg.critic.precision} "
            "cannot train side by side (TF32 is a process-wide switch that would change the fp32 "
            "stage's matmuls); give both the same precision, make one bf16, or train them in turn"
        )


def train(
    cfgs: Sequence[RunConfig],
    data: Transitions,
    outs: Sequence[Path],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    stop_after: dict[str, int] | None = None,
    stages: tuple[str, ...] = STAGES,
    upstreams: Sequence[Upstream] | None = None,
    restart_on_change: bool = False,
    cuda_graphs: bool = True,
    compile: bool = False,
    overlap: bool = False,
) -> SeedsResult:
    """:func:`srpo.train.train` for S seeds of one task: run (or resume) ``stages`` in order.

    ``cfgs[k]`` and ``outs[k]`` are seed k's config and checkpoint directory; the policy
    stage reads finished upstream checkpoints from ``upstreams[k]`` (default ``outs[k]``; a
    directory, or one per stage as in :func:`srpo.train.train`). With ``overlap`` the
    behavior and critic stages, which do not depend on each other (SRPO Alg. 1), train at
    the same time on a GPU (:func:`side_by_side`): the critic's small updates then fill
    what the behavior model's leave idle; every seed's result is the same as in turn.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    _shared(cfgs, outs)
    device = torch.device(device)
    check_device_available(device)
    for stage in stages:  # before any work: a stage the device cannot run must not fail hours in
        precision.check_device(getattr(cfgs[0], stage).precision, device, f"{stage}.precision")
    overlap = overlap and {"behavior", "critic"} <= set(stages)
    if overlap:
        check_overlap(cfgs[0])
    outs = [Path(o) for o in outs]
    upstreams = list(upstreams) if upstreams is not None else outs
    if not restart_on_change:
        for cfg, out in zip(cfgs, outs):
            check_resumable(out, cfg, stages, data)
    for cfg, out in zip(cfgs, outs):
        out.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(out / "config.json", cfg.to_dict())
    stop_after = stop_after or {}
    modules: dict[str, list[nn.Module]] = {}
    histories: dict[str, list[list[dict[str, float]]]] = {}
    wall: dict[str, float] = {}

    def fresh(stage: str) -> None:
        if restart_on_change:
            for cfg, out in zip(cfgs, outs):
                discard_stale(out / f"{stage}.pt", stage_config(cfg, stage, data))

    def upstream(stage: str, turns: CaptureTurns | None = None) -> tuple[list, list]:
        fresh(stage)
        trainer = {"behavior": train_behavior, "critic": train_critic}[stage]
        return trainer(
            cfgs,
            data,
            outs,
            device,
            dtype,
            progress,
            stop_after.get(stage),
            cuda_graphs,
            compile,
            turns=turns,
        )

    if overlap:
        for stage, ((mods, hists), seconds) in side_by_side(
            {st: functools.partial(upstream, st) for st in ("behavior", "critic")}, device
        ).items():
            modules[stage], histories[stage], wall[stage] = mods, hists, seconds
    for stage in STAGES:
        if stage not in stages or stage in wall:
            continue
        t0 = time.perf_counter()
        if stage == "policy":
            fresh(stage)
            for dep in UPSTREAM["policy"]:
                if dep not in modules:
                    modules[dep] = [
                        load_finished(dep, c, data, upstream_dir(u, dep), device, dtype)
                        for c, u in zip(cfgs, upstreams)
                    ]
            modules[stage], histories[stage] = train_policy(
                cfgs,
                data,
                modules["behavior"],
                modules["critic"],
                outs,
                device,
                dtype,
                progress,
                stop_after.get(stage),
                cuda_graphs,
                compile,
            )
        else:
            modules[stage], histories[stage] = upstream(stage)
        wall[stage] = time.perf_counter() - t0
    return SeedsResult(modules, histories, wall)
