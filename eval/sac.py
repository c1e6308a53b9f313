"""Soft actor-critic, the online agent that generates our D4RL-style datasets.

D4RL recorded each locomotion dataset family from one SAC run per environment
(docs/method.md §8). This is SAC as in Haarnoja et al. 2018b ("Soft Actor-Critic
Algorithms and Applications", arXiv 1812.05905, Table 1): one environment, one gradient
step per environment step, twin Q with Polyak-averaged targets, a tanh-squashed Gaussian
actor and a learned temperature with target entropy -dim(A). The values of
:class:`SACConfig` are that table's.

It is self-contained (torch, numpy, gymnasium) on purpose: the data-generating run takes
hours, and the pipeline reruns it whenever this file changes, so it must not change when the
SRPO library does.

Resumable bit for bit: at the first episode end after every ``checkpoint_every`` steps, the
networks, optimizers, replay buffer and every random state (torch, the buffer's sampler,
the environment's) are written to ``workdir``; a run killed at any point continues from the
last checkpoint and produces the same weights as a run that was never interrupted. Because
nothing in SAC depends on the total budget, raising ``env_steps`` later continues the same
run. Every ``snapshot_every`` steps the actor is saved with a deterministic evaluation, so
that a medium and an expert policy can be chosen afterwards, and the replay buffer can be
rebuilt from the policies that filled it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters: Haarnoja et al. 2018b, Table 1, unless noted."""

    env_steps: int = 1_000_000  # environment steps (= gradient steps after start_steps)
    start_steps: int = 10_000  # uniform random actions first (softlearning's and RL Zoo's MuJoCo value)
    batch_size: int = 256
    lr: float = 3e-4  # Adam, actor, critics and temperature
    hidden: tuple[int, ...] = (256, 256)  # two ReLU layers of 256 for actor and each Q
    gamma: float = 0.99
    tau: float = 0.005  # target smoothing, every step
    max_episode_steps: int = 1000  # D4RL's episode cut
    # Ours, not the paper's: bookkeeping for dataset generation.
    snapshot_every: int = 5_000  # env steps between saved, evaluated actor snapshots
    eval_episodes: int = 10  # deterministic evaluation episodes of each snapshot
    checkpoint_every: int = 50_000  # env steps between resumable checkpoints

    def __post_init__(self) -> None:
        for name in (
            "env_steps",
            "batch_size",
            "max_episode_steps",
            "snapshot_every",
            "eval_episodes",
            "checkpoint_every",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"sac.{name} must be >= 1, got {getattr(self, name)}")
        if self.start_steps < 0:
            raise ValueError(f"sac.start_steps must be >= 0, got {self.start_steps}")
        for name in ("lr", "tau"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and 0 < v <= 1):
                raise ValueError(f"sac.{name} must be in (0, 1], got {v}")
        if not 0 <= self.gamma < 1:
            raise ValueError(f"sac.gamma must be in [0, 1), got {self.gamma}")


def _mlp(inp: int, hidden: tuple[int, ...], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), nn.ReLU()]
        inp = h
    return nn.Sequential(*layers, nn.Linear(inp, out))


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), a in (-1, 1)^d."""

    def __init__(self, state_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = _mlp(state_dim, hidden, 2 * action_dim)

    def forward(self, state: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.net(state).chunk(2, dim=-1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, state: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterized action and its log-probability (with the tanh change of variables)."""
        mu, log_std = self(state)
        std = log_std.exp()
        u = mu + std * torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        # log |det d tanh(u)/du| = sum log(1 - tanh(u)^2) = sum 2 (log 2 - u - softplus(-2u)): stable.
        logp = (-0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), logp

    def deterministic(self, state: Tensor) -> Tensor:
        return torch.tanh(self(state)[0])


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied in one batched matmul (faster than ``n`` Linears on a CPU)."""

    def __init__(self, n: int, inp: int, out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, inp, out))
        self.bias = nn.Parameter(torch.empty(n, 1, out))
        bound = 1.0 / math.sqrt(inp)  # nn.Linear's default initialization, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:  # (n, batch, inp) -> (n, batch, out)
        return torch.baddbmm(self.bias, x, self.weight)


class TwinQ(nn.Module):
    """Q_1, Q_2 (s, a): two independent MLPs evaluated together; returns (2, batch)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        sizes = (state_dim + action_dim, *hidden, 1)
        self.layers = nn.ModuleList(EnsembleLinear(2, i, o) for i, o in zip(sizes[:-1], sizes[1:]))

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        x = torch.cat([state, action], -1).expand(2, -1, -1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x).squeeze(-1)


class ReplayBuffer:
    """Chronological transitions (never overwritten: SAC's 1M buffer holds the whole run)."""

    FIELDS = ("obs", "act", "rew", "next_obs", "term")

    def __init__(self, capacity: int, state_dim: int, action_dim: int) -> None:
        self.obs = np.zeros((capacity, state_dim), np.float32)
        self.act = np.zeros((capacity, action_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, state_dim), np.float32)
        self.term = np.zeros(capacity, np.float32)
        self.size = 0

    def add(self, obs, act, rew, next_obs, term) -> None:
        i = self.size
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.term[i] = obs, act, rew, next_obs, term
        self.size += 1

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, Tensor]:
        idx = rng.integers(0, self.size, batch)
        return {k: torch.from_numpy(getattr(self, k)[idx]) for k in self.FIELDS}

    def save(self, path: Path) -> None:
        np.savez(path, **{k: getattr(self, k)[: self.size] for k in self.FIELDS})

    def load(self, path: Path) -> None:
        with np.load(path) as data:
            self.size = len(data["rew"])
            for k in self.FIELDS:
                getattr(self, k)[: self.size] = data[k]


@dataclass
class SACNets:
    actor: TanhGaussianActor
    q: TwinQ
    q_target: TwinQ
    log_alpha: Tensor
    opt_actor: torch.optim.Adam
    opt_q: torch.optim.Adam
    opt_alpha: torch.optim.Adam
    target_entropy: float

    @classmethod
    def create(cls, state_dim: int, action_dim: int, cfg: SACConfig) -> SACNets:
        actor = TanhGaussianActor(state_dim, action_dim, cfg.hidden)
        q = TwinQ(state_dim, action_dim, cfg.hidden)
        q_target = TwinQ(state_dim, action_dim, cfg.hidden).requires_grad_(False)
        q_target.load_state_dict(q.state_dict())
        log_alpha = torch.zeros((), requires_grad=True)
        return cls(
            actor,
            q,
            q_target,
            log_alpha,
            torch.optim.Adam(actor.parameters(), lr=cfg.lr),
            torch.optim.Adam(q.parameters(), lr=cfg.lr),
            torch.optim.Adam([log_alpha], lr=cfg.lr),
            -float(action_dim),
        )

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "opt_actor": self.opt_actor.state_dict(),
            "opt_q": self.opt_q.state_dict(),
            "opt_alpha": self.opt_alpha.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("opt_actor", "opt_q", "opt_alpha"):
            getattr(self, name).load_state_dict(state[name])


def sac_update(
    nets: SACNets, batch: dict[str, Tensor], gamma: float, tau: float, generator: torch.Generator
) -> None:
    """One SAC gradient step (Haarnoja et al. 2018b, Algorithm 1): critics, actor, temperature, targets."""
    alpha = nets.log_alpha.detach().exp()
    with torch.no_grad():
        next_action, next_logp = nets.actor.sample(batch["next_obs"], generator)
        soft_v = nets.q_target(batch["next_obs"], next_action).min(0).values - alpha * next_logp
        target = batch["rew"] + gamma * (1.0 - batch["term"]) * soft_v
    q_loss = ((nets.q(batch["obs"], batch["act"]) - target) ** 2).sum(0).mean()  # J_Q of both heads
    nets.opt_q.zero_grad(set_to_none=True)
    q_loss.backward()
    nets.opt_q.step()

    action, logp = nets.actor.sample(batch["obs"], generator)
    nets.q.requires_grad_(False)  # the actor needs dQ/da only
    q_pi = nets.q(batch["obs"], action).min(0).values
    nets.q.requires_grad_(True)
    actor_loss = (alpha * logp - q_pi).mean()
    nets.opt_actor.zero_grad(set_to_none=True)
    actor_loss.backward()
    nets.opt_actor.step()

    alpha_loss = -(nets.log_alpha * (logp.detach() + nets.target_entropy)).mean()
    nets.opt_alpha.zero_grad(set_to_none=True)
    alpha_loss.backward()
    nets.opt_alpha.step()

    with torch.no_grad():
        for p, p_target in zip(nets.q.parameters(), nets.q_target.parameters()):
            p_target.lerp_(p, tau)


def evaluate_actor(
    actor: TanhGaussianActor, env_id: str, episodes: int, seed: int, max_episode_steps: int
) -> np.ndarray:
    """Returns of ``episodes`` deterministic episodes; episode i is reset with ``seed + i``."""
    import gymnasium as gym

    env = gym.make(env_id, max_episode_steps=max_episode_steps)
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                with torch.no_grad():
                    action = actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy()
                obs, reward, term, trunc, _ = env.step(action)
                returns[i] += reward
                done = term or trunc
    finally:
        env.close()
    return returns


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class SACRun:
    """One resumable SAC run on ``env_id`` with its files in ``workdir``.

    ``workdir`` holds ``checkpoint/`` (the last resumable state), ``snapshots/<step>.pt`` (actor
    weights every ``snapshot_every`` steps) and ``snapshots.json`` (their evaluations).
    """

    def __init__(self, env_id: str, cfg: SACConfig, seed: int, workdir: Path) -> None:
        import gymnasium as gym

        self.env_id, self.cfg, self.seed, self.workdir = env_id, cfg, seed, Path(workdir)
        (self.workdir / "snapshots").mkdir(parents=True, exist_ok=True)
        self.env = gym.make(env_id, max_episode_steps=cfg.max_episode_steps)
        self.state_dim = self.env.observation_space.shape[0]
        self.action_dim = self.env.action_space.shape[0]
        torch.manual_seed(seed)  # network initialization
        self.nets = SACNets.create(self.state_dim, self.action_dim, cfg)
        self.buffer = ReplayBuffer(cfg.env_steps, self.state_dim, self.action_dim)
        self.rng = np.random.default_rng(seed)  # buffer sampling and the random warm-up actions
        self.torch_rng = torch.Generator().manual_seed(seed + 1)  # the actor's sampling noise
        self.obs, _ = self.env.reset(seed=seed)
        self.step = 0
        self.episode_returns: list[float] = []  # training episodes' returns, for the log
        self.episode_return = 0.0
        self.snapshots: list[dict] = []
        self.train_seconds = 0.0  # wall time spent training, summed over the pieces of the run
        self.pieces = 0  # how many processes the run took
        self._resume()

    # -- persistence -------------------------------------------------------------------------
    def _resume(self) -> None:
        ckpt = self.workdir / "checkpoint"
        if not (ckpt / "state.pt").exists():
            return
        state = torch.load(ckpt / "state.pt", weights_only=False)
        if (
            state["env_id"] != self.env_id
            or state["seed"] != self.seed
            or {k: v for k, v in state["config"].items() if k != "env_steps"}
            != {k: v for k, v in _config_record(self.cfg).items() if k != "env_steps"}
        ):
            raise RuntimeError(
                f"{ckpt} holds a SAC run of another environment, seed or configuration "
                f"({state['env_id']}, seed {state['seed']}); use another work directory or delete it"
            )
        if state["step"] > self.cfg.env_steps:
            raise RuntimeError(f"{ckpt} is at step {state['step']}, beyond env_steps={self.cfg.env_steps}")
        self.nets.load_state_dict(state["nets"])
        self.buffer.load(ckpt / "buffer.npz")
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.env.unwrapped.np_random.bit_generator.state = state["env_rng"]
        self.obs, _ = self.env.reset()  # checkpoints are taken at episode ends: the next step resets
        self.step = state["step"]
        self.episode_returns = state["episode_returns"]
        self.snapshots = [s for s in state["snapshots"]]
        self.train_seconds = state["train_seconds"]
        self.pieces = state["pieces"]

    def _checkpoint(self) -> None:
        """Called right after an episode ended and before the next reset."""
        ckpt, tmp = self.workdir / "checkpoint", self.workdir / f".checkpoint.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.buffer.save(tmp / "buffer.npz")
        torch.save(
            {
                "env_id": self.env_id,
                "seed": self.seed,
                "config": _config_record(self.cfg),
                "step": self.step,
                "nets": self.nets.state_dict(),
                "rng": self.rng.bit_generator.state,
                "torch_rng": self.torch_rng.get_state(),
                "env_rng": self.env.unwrapped.np_random.bit_generator.state,
                "episode_returns": self.episode_returns,
                "snapshots": self.snapshots,
                "train_seconds": self.train_seconds,
                "pieces": self.pieces,
            },
            tmp / "state.pt",
        )
        old = self.workdir / f".checkpoint.old{os.getpid()}"
        if ckpt.exists():
            os.replace(ckpt, old)
        os.replace(tmp, ckpt)
        shutil.rmtree(old, ignore_errors=True)

    def _snapshot(self) -> None:
        index = len(self.snapshots)
        returns = evaluate_actor(
            self.nets.actor,
            self.env_id,
            self.cfg.eval_episodes,
            self.seed + 1_000_000 + 1000 * index,
            self.cfg.max_episode_steps,
        )
        _atomic_torch_save(self.nets.actor.state_dict(), self.snapshot_path(self.step))
        self.snapshots.append(
            {
                "env_step": self.step,
                "eval_return": float(returns.mean()),
                "eval_std": float(returns.std()),
                "eval_episodes": len(returns),
            }
        )
        self._write_record(finished=False)

    def _write_record(self, finished: bool) -> None:
        """``snapshots.json``: the snapshots' evaluations and where the run stands."""
        record = {
            "env_id": self.env_id,
            "seed": self.seed,
            "config": _config_record(self.cfg),
            "step": self.step,
            "finished": finished,
            "train_seconds": self.train_seconds,
            "pieces": self.pieces,
            "snapshots": self.snapshots,
        }
        tmp = self.workdir / ".snapshots.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.workdir / "snapshots.json")

    def finished(self) -> bool:
        """Whether this work directory holds a finished run of this budget."""
        path = self.workdir / "snapshots.json"
        if not path.exists():
            return False
        record = json.loads(path.read_text())
        return bool(record["finished"]) and record["step"] == self.cfg.env_steps

    def record(self) -> dict:
        return json.loads((self.workdir / "snapshots.json").read_text())

    def snapshot_path(self, step: int) -> Path:
        return self.workdir / "snapshots" / f"{step:08d}.pt"

    # -- training ----------------------------------------------------------------------------
    def train(self, progress: bool = True, log=None) -> None:
        """Run (or continue) until ``cfg.env_steps`` environment steps.

        ``progress`` shows a bar; ``log(line)``, if given, gets one line per snapshot (for log files).
        """
        cfg, nets = self.cfg, self.nets
        if self.finished():
            return
        self.pieces += 1
        next_checkpoint = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        t0, seconds_before = time.perf_counter(), self.train_seconds
        bar = tqdm(
            total=cfg.env_steps,
            initial=self.step,
            desc=f"SAC {self.env_id}",
            disable=not progress,
            dynamic_ncols=True,
            mininterval=5.0,
        )
        while self.step < cfg.env_steps:
            if self.step % cfg.snapshot_every == 0 and self.step >= cfg.start_steps:
                self._snapshot()
                s = self.snapshots[-1]
                bar.set_postfix(eval_return=f"{s['eval_return']:.0f}", refresh=False)
                if log is not None:
                    elapsed = seconds_before + time.perf_counter() - t0
                    log(
                        f"{self.env_id} step {self.step}: eval return {s['eval_return']:.0f} "
                        f"± {s['eval_std']:.0f}; {elapsed / 3600:.2f} h of training"
                    )
            if self.step < cfg.start_steps:
                action = self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
            else:
                with torch.no_grad():
                    obs = torch.as_tensor(self.obs, dtype=torch.float32)
                    action = nets.actor.sample(obs, self.torch_rng)[0].numpy()
            next_obs, reward, term, trunc, _ = self.env.step(action)
            self.buffer.add(self.obs, action, reward, next_obs, float(term))
            self.step += 1
            self.episode_return += float(reward)
            if self.step >= cfg.start_steps:
                sac_update(
                    nets, self.buffer.sample(cfg.batch_size, self.rng), cfg.gamma, cfg.tau, self.torch_rng
                )
            bar.update(1)
            if term or trunc:
                self.episode_returns.append(self.episode_return)
                self.episode_return = 0.0
                if self.step >= next_checkpoint or self.step >= cfg.env_steps:
                    self.train_seconds = seconds_before + time.perf_counter() - t0
                    self._checkpoint()
                    next_checkpoint = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                self.obs, _ = self.env.reset()
            else:
                self.obs = next_obs
        if self.step % cfg.snapshot_every == 0:
            self._snapshot()  # the final policy
        self.train_seconds = seconds_before + time.perf_counter() - t0
        bar.close()
        # No checkpoint here unless an episode just ended: checkpoints stay at episode ends, so a
        # later, larger env_steps continues from the last one exactly as an uninterrupted run would.
        self._write_record(finished=True)


def _config_record(cfg: SACConfig) -> dict:
    record = asdict(cfg)
    record["hidden"] = list(record["hidden"])
    return record
