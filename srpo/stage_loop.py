"""The machinery around each training stage: seeds, checkpoints, running means, interrupt and resume.

A :class:`StageState` owns what makes a run reproducible and resumable: the seeded
generator that draws data indices, noise and dropout masks, the optimizer, the loss
history, and the atomic checkpoint that holds all of them. :func:`run_loop` drives a
stage's update from the resumed step to the last one, logging and checkpointing; a run
killed at any point resumes from its last checkpoint and finishes with bit-identical
parameters on CPU. The stages themselves are in :mod:`srpo.train`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from srpo import artifacts
from srpo.config import RunConfig
from srpo.transitions import Transitions

# Policy snapshots for the evaluation curve: <run dir>/snapshots/step<NNNNNNN>.pt, beside the stage's
# checkpoint, each loadable like the final policy.pt (srpo_bench.eval.checkpoints.load_policy).
SNAPSHOT_DIR = "snapshots"


def snapshot_path(directory: Path, step: int) -> Path:
    """Where the snapshot of ``step`` lives: ``directory/snapshots/step0020000.pt`` (7 digits)."""
    return Path(directory) / SNAPSHOT_DIR / f"step{step:07d}.pt"


def snapshot_due(step: int, total: int, every: int) -> bool:
    """Every ``every`` steps and at the last step (0: never)."""
    return every > 0 and (step % every == 0 or step == total)


class Interrupted(RuntimeError):
    """Raised when ``stop_after`` ends a stage early: a simulated kill (later steps lost)."""


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; its message says where training stopped and what resumes it."""


def stage_seed(seed: int, stage: str) -> int:
    """A distinct, stable 63-bit seed per (run seed, stage)."""
    return (seed * 1_000_003 + zlib.crc32(stage.encode())) % (2**63)


class RunningMeans:
    """Per-metric sums since the last read, kept on the device and added to in place.

    In place, with the step count on the device too, so that adding has fixed addresses
    and no host sync: a captured CUDA graph of a whole update (:mod:`srpo.fast.cuda_graph`)
    adds to the same sums on every replay. Works for any metric shape (one value per
    seed in the seed-batched loops); :meth:`pop` is the one host read.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._count: Tensor | None = None

    def add(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            if (
                k not in self._sums
            ):  # float32 at least: a bf16 sum of 1000 steps would round away most of them
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
        count, *sums = torch.stack(
            [t.double() for t in (self._count.expand(shape), *self._sums.values())]
        ).tolist()
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

    def snapshot(self, total: int) -> None:
        """Write this step's modules (no optimizer, no generator) to :func:`snapshot_path`.

        Nothing random is drawn or advanced, so snapshots leave the run's trajectory unchanged; a
        resumed run rewrites the snapshots after its checkpoint with the same contents.
        """
        artifacts.save_torch(
            snapshot_path(self.path.parent, self.step),
            {
                "stage": self.name,
                "snapshot": True,
                "config": self.config,
                "step": self.step,
                "done": self.step == total,
                "modules": {k: m.state_dict() for k, m in self.modules.items()},
            },
        )

    def clear_snapshots(self) -> None:
        """Delete the snapshots of an earlier run: called when the stage starts from step 0."""
        shutil.rmtree(self.path.parent / SNAPSHOT_DIR, ignore_errors=True)

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
            kept = (
                f"the last good checkpoint is kept in {self.path}"
                if self.path.exists()
                else "no checkpoint of this stage was written before it"
            )
            raise FloatingPointError(
                f"{self.name}: {', '.join(bad)} became non-finite by step {self.step}; {kept}. "
                "Check the data's scale or lower the learning rate."
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
    snapshot_every: int | None = None,
) -> None:
    """Drive ``step_fn`` from the resumed step to ``total`` with logging and checkpoints.

    ``st`` is a :class:`StageState` or anything with its ``name``, ``path``, ``step``,
    ``flush``, ``save``, ``snapshot`` and ``clear_snapshots`` (the seed-batched stages pass a
    group of them). A stage that keeps snapshots (the policy stages: ``snapshot_every`` not
    None) owns the run directory's ``snapshots/``: starting from step 0 it first deletes those of
    an earlier run, then with ``snapshot_every`` > 0 keeps its modules every that many steps and
    at the last (:meth:`StageState.snapshot`). ``None``: the stage leaves ``snapshots/`` alone (the
    behavior and critic stages, which may share the policy's run directory).
    """
    if snapshot_every is not None and st.step == 0:
        st.clear_snapshots()
    bar = tqdm(
        total=total, initial=st.step, desc=st.name, disable=not progress, dynamic_ncols=True, leave=False
    )
    try:
        while st.step < total:
            if stop_after is not None and st.step >= stop_after:
                bar.close()
                raise Interrupted(f"{st.name} stopped at step {st.step} (last checkpoint kept)")
            step_fn()
            st.step += 1
            bar.update(1)
            if snapshot_every and snapshot_due(st.step, total, snapshot_every):
                st.snapshot(total)
            ckpt_due = st.step % checkpoint_every == 0 or st.step == total
            if st.step % log_every == 0 or ckpt_due:
                # Flushing before every checkpoint keeps the saved history exact, and the
                # finiteness check below guarantees that no diverged state is ever saved.
                entry = st.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k != "step"})
            if ckpt_due:
                st.save(done=st.step == total)
    except KeyboardInterrupt:
        bar.close()
        saved = st.step // checkpoint_every * checkpoint_every
        kept = (
            f"its checkpoint {st.path} holds step {saved}"
            if st.path.exists() and saved > 0
            else "no checkpoint of it was written yet"
        )
        raise StageInterrupted(
            f"interrupted in the {st.name} stage at step {st.step} of {total}; {kept} (earlier stages "
            "are finished). Run the same command again to resume"
        ) from None
    bar.close()
    if total == 0 or not st.path.exists():
        st.save(done=True)


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
    def policy(self) -> nn.Module:
        return self.modules["policy"]


def check_device_available(device: torch.device) -> None:
    """Refuse, before anything is written, a device this torch cannot use (a CPU-only build and cuda)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "was built without CUDA" if torch.version.cuda is None else "sees no CUDA device"
        raise ValueError(f"device {device} is not available: this torch ({torch.__version__}) {why}; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} is not available on this machine; use cpu")


def check_resumable(out: Path, cfg: RunConfig, stages: tuple[str, ...], data: Transitions) -> None:
    """Refuse a run directory whose checkpoints another config made, before anything in it is rewritten.

    The same check as :meth:`StageState.resume`, done up front so that a refused run leaves the
    directory (its ``config.json`` included) byte for byte as it was.
    """
    for stage in stages:
        path = Path(out) / f"{stage}.pt"
        if path.exists() and artifacts.load_torch(path).get("config") != stage_config(cfg, stage, data):
            raise ValueError(
                f"{path} was written by a run with a different {stage} config; "
                "use another --out directory or delete the checkpoint to start over"
            )


def discard_stale(path: Path, config: dict[str, Any]) -> None:
    if path.exists() and artifacts.load_torch(path).get("config") != config:
        print(f"{path} was made with another config or dataset: starting this stage over", flush=True)
        path.unlink()
