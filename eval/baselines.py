"""Baselines that SRPO is measured against, trained and evaluated in the same harness.

All three read the same dataset and, where they need one, the same IQL critic and
behavior diffusion model as the SRPO run of that task and seed, so the only thing that
differs between them is how the policy is extracted:

- ``bc``: a deterministic MLP regressed on the dataset actions (behavior cloning);
- ``iql-awr``: IQL's policy extraction, advantage-weighted regression on the run's critic
  (Kostrikov et al. 2022, Eq. 7): weights exp(temperature * A(s, a)) clipped at 100, with
  temperature 3 for locomotion and 10 for AntMaze. With a deterministic policy the
  log-likelihood of a fixed-variance Gaussian is a squared error, so AWR is a weighted
  regression;
- ``diffusion``: no policy network at all: draw N candidate actions per state from the
  behavior diffusion model with a K-step solver and keep the one with the highest Q
  (SfBC / IDQL-style selection). This is what SRPO claims to match at a fraction of the
  action-sampling cost (SRPO §1, Fig. 1).

BC and AWR use the SRPO policy's network, budget and optimizer (``PolicyConfig``: steps,
batch size, learning rate with cosine decay, hidden sizes), so their scores differ from
SRPO's only by the loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from srpo import artifacts, precision
from srpo.behavior import sample_actions
from srpo.config import RunConfig
from srpo.critic import Critic
from srpo.policy import DeterministicPolicy
from srpo.stage_loop import run_loop
from srpo.train import policy_state
from srpo.transitions import Transitions

Method = Literal["srpo", "bc", "iql-awr", "diffusion"]
METHODS: tuple[str, ...] = ("srpo", "bc", "iql-awr", "diffusion")


@dataclass(frozen=True)
class BaselineConfig:
    """The knobs of the baselines; the network and budget come from ``RunConfig.policy``."""

    temperature: float | None = None  # AWR inverse temperature; None: 3 (locomotion) or 10 (AntMaze)
    weight_clip: float = 100.0  # AWR exp-weights are clipped here (IQL)
    n_candidates: int = 32  # diffusion selection: N candidates per state
    solver_steps: int = 5  # diffusion selection: K solver steps per candidate

    def __post_init__(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.weight_clip > 0:
            raise ValueError(f"weight_clip must be > 0, got {self.weight_clip}")
        if self.n_candidates < 1 or self.solver_steps < 1:
            raise ValueError(
                f"n_candidates and solver_steps must be >= 1, got {self.n_candidates}, {self.solver_steps}"
            )

    def awr_temperature(self, reward_mode: str) -> float:
        """IQL's temperatures: 10 on AntMaze, 3 elsewhere, unless set."""
        if self.temperature is not None:
            return self.temperature
        return 10.0 if reward_mode == "antmaze" else 3.0


def bc_loss(pred: Tensor, action: Tensor) -> Tensor:
    """Behavior cloning: mean over the batch of ||pi(s) - a||^2."""
    return ((pred - action) ** 2).sum(-1).mean()


def awr_weights(advantage: Tensor, temperature: float, clip: float) -> Tensor:
    """exp(temperature * A), clipped from above at ``clip`` (IQL, Eq. 7 and its code)."""
    # Clipping the exponent instead of the weight avoids inf for large advantages.
    return torch.exp((temperature * advantage).clamp(max=math.log(clip)))


def awr_loss(pred: Tensor, action: Tensor, weights: Tensor) -> Tensor:
    """Advantage-weighted regression: mean over the batch of w(s, a) ||pi(s) - a||^2."""
    return (weights.detach() * ((pred - action) ** 2).sum(-1)).mean()


@torch.no_grad()
def iql_advantage(critic: Critic, state: Tensor, action: Tensor) -> Tensor:
    """A(s, a) = min_i Qbar_i(s, a) - V(s), the advantage IQL's policy extraction weights by."""
    q1, q2 = critic.q_target(state, action)
    return torch.minimum(q1, q2) - critic.v(state)


def train_regression_policy(
    method: Literal["bc", "iql-awr"],
    cfg: RunConfig,
    bcfg: BaselineConfig,
    data: Transitions,
    critic: Critic | None,
    out: Path,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    restart_on_change: bool = False,
) -> tuple[DeterministicPolicy, list[dict[str, float]]]:
    """Train BC or IQL-AWR into ``out/policy.pt`` (resumable, like the SRPO stages)."""
    if method not in ("bc", "iql-awr"):
        raise ValueError(f"train_regression_policy trains bc or iql-awr, got {method!r}")
    if method == "iql-awr" and critic is None:
        raise ValueError("iql-awr needs the run's IQL critic")
    pc = cfg.policy
    temperature = bcfg.awr_temperature(cfg.reward_mode)
    config = {
        "method": method,
        "task": cfg.task,
        "seed": cfg.seed,
        "data": data.fingerprint(),
        "policy": asdict(pc),
        "baseline": asdict(bcfg) | {"temperature": temperature},
    }
    if method == "iql-awr":
        config["critic"] = asdict(cfg.critic)
    path = Path(out) / "policy.pt"
    if restart_on_change and path.exists() and artifacts.load_torch(path).get("config") != config:
        print(f"{path} was made with another config or dataset: starting over", flush=True)
        path.unlink()
    if critic is not None:
        critic.eval().requires_grad_(False)
    st, done = policy_state(cfg, data, path, config, device, dtype)
    pi, opt, sched, gen = st.modules["policy"], st.optimizer, st.scheduler, st.generator
    d = data.to_tensors(device, dtype)
    n = len(data)

    def step() -> None:
        idx = torch.randint(n, (pc.batch_size,), generator=gen, device=device)
        s, a = d["obs"][idx], d["act"][idx]
        with precision.forward(pc.precision, device):
            pred = pi(s)
            if method == "bc":
                loss = bc_loss(pred, a)
                st.record(loss=loss)
            else:
                w = awr_weights(iql_advantage(critic, s, a), temperature, bcfg.weight_clip)
                loss = awr_loss(pred, a, w)
                st.record(
                    loss=loss, weight_mean=w.mean(), weight_clipped=(w >= bcfg.weight_clip).float().mean()
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

    if not done:
        with precision.stage(pc.precision, device):
            run_loop(
                st, pc.steps, cfg.log_every, cfg.checkpoint_every, step, progress, None, pc.snapshot_every
            )
    pi.eval()
    return pi, st.history


class DiffusionSelectionPolicy(nn.Module):
    """a(s) = argmax_{a_i ~ mu(.|s), i <= N} Q(s, a_i), the a_i drawn with a K-step solver.

    Candidates come from :func:`srpo.behavior.sample_actions` (DPM-Solver-1 / DDIM,
    ``solver_steps`` steps); Q is the mean of the two target heads, the Q that SRPO's
    policy ascends. ``generator`` makes the candidates, and so the rollouts, reproducible.
    """

    def __init__(
        self,
        behavior_model: nn.Module,
        critic: Critic,
        n_candidates: int,
        solver_steps: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.behavior_model = behavior_model.eval().requires_grad_(False)
        self.critic = critic.eval().requires_grad_(False)
        self.n_candidates, self.solver_steps, self.generator = n_candidates, solver_steps, generator

    @torch.no_grad()
    def forward(self, state: Tensor) -> Tensor:
        b, n = state.shape[0], self.n_candidates
        states = state.repeat_interleave(n, dim=0)  # (B N, ds): candidate j of state i at row i N + j
        cand = sample_actions(self.behavior_model, states, self.solver_steps, self.generator)
        q = self.critic.target_q_mean(states, cand).reshape(b, n)
        best = q.argmax(dim=1)
        return cand.reshape(b, n, -1)[torch.arange(b, device=state.device), best]


def write_selection_checkpoint(path: Path, cfg: RunConfig, bcfg: BaselineConfig) -> None:
    """The diffusion baseline trains nothing: its ``policy.pt`` records how to build it."""
    artifacts.save_torch(
        Path(path),
        {
            "stage": "policy",
            "method": "diffusion",
            "step": 0,
            "done": True,
            "config": {
                "method": "diffusion",
                "task": cfg.task,
                "seed": cfg.seed,
                "baseline": {"n_candidates": bcfg.n_candidates, "solver_steps": bcfg.solver_steps},
            },
        },
    )
