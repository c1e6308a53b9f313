"""Training throughput of each SRPO stage at the paper's batch sizes (SPEC §5).

For each stage this measures the *marginal* cost of one update of the real
training loop (srpo.train: batch sampling, noise, loss, optimizer step, metric
accumulation, progress bookkeeping) as

    (wall(N_long) - wall(N_short)) / (N_long - N_short),

which cancels model construction and data transfer. As the baseline measured in
the same run it times a bare update (same network, same batch size, one
pre-sampled batch, forward + backward + optimizer step and nothing else); the
ratio loop/bare shows what the loop's bookkeeping costs.

Writes JSON with the machine and library versions:
    python benchmarks/train_throughput.py --out reports/bench/train_throughput.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eval.provenance import machine_info
from srpo import __version__, artifacts, behavior, critic as iql, schedule
from srpo.behavior import NoisePredictor
from srpo.config import make_config
from srpo.critic import Critic
from srpo.policy import DeterministicPolicy
from srpo.train import train_behavior, train_critic, train_policy
from srpo.transitions import Transitions

# A locomotion-sized synthetic dataset (HalfCheetah: 17-dim state, 6-dim action).
STATE_DIM, ACTION_DIM, N_TRANSITIONS = 17, 6, 100_000


def synthetic_dataset(seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((N_TRANSITIONS, STATE_DIM)).astype(np.float32)
    return Transitions(
        observations=obs,
        actions=np.tanh(rng.standard_normal((N_TRANSITIONS, ACTION_DIM))).astype(np.float32),
        rewards=rng.standard_normal(N_TRANSITIONS).astype(np.float32),
        next_observations=np.roll(obs, -1, axis=0),
        terminals=np.zeros(N_TRANSITIONS, np.float32),
        timeouts=(np.arange(N_TRANSITIONS) % 1000 == 999).astype(np.float32),
        name="synthetic-halfcheetah-shape",
    )


def _loop_rate(stage: str, steps_short: int, steps_long: int, data: Transitions, device: torch.device) -> float:
    """Updates/s of the real stage loop, by differencing two budgets."""
    walls = {}
    for steps in (steps_short, steps_long):
        cfg = make_config("halfcheetah-medium", "paper", 0, {
            f"{stage}.steps": str(steps), "log_every": "100", "checkpoint_every": str(10**9),
        })
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            t0 = time.perf_counter()
            if stage == "behavior":
                train_behavior(cfg, data, out, device, progress=False)
            elif stage == "critic":
                train_critic(cfg, data, out, device, progress=False)
            else:
                model = NoisePredictor(STATE_DIM, ACTION_DIM).to(device)
                crit = Critic(STATE_DIM, ACTION_DIM).to(device)
                train_policy(cfg, data, model, crit, out, device, progress=False)
            walls[steps] = time.perf_counter() - t0
    return (steps_long - steps_short) / (walls[steps_long] - walls[steps_short])


def _bare_rate(stage: str, steps: int, device: torch.device, repeats: int = 3) -> tuple[float, list[float]]:
    """Updates/s of a bare update on one pre-sampled batch (median over repeats)."""
    paper = make_config("halfcheetah-medium", "paper")
    torch.manual_seed(0)
    if stage == "behavior":
        b = paper.behavior.batch_size
        model = NoisePredictor(STATE_DIM, ACTION_DIM).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        s, a = torch.randn(b, STATE_DIM, device=device), torch.rand(b, ACTION_DIM, device=device) * 2 - 1
        t, eps = torch.rand(b, device=device), torch.randn(b, ACTION_DIM, device=device)

        def update():
            loss = behavior.dsm_loss(model, s, a, t, eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
    elif stage == "critic":
        b = paper.critic.batch_size
        crit = Critic(STATE_DIM, ACTION_DIM).to(device)
        opt = torch.optim.Adam([*crit.q.parameters(), *crit.v.parameters()], lr=3e-4)
        s, a, s2 = torch.randn(b, STATE_DIM), torch.rand(b, ACTION_DIM) * 2 - 1, torch.randn(b, STATE_DIM)
        r, d = torch.randn(b), torch.zeros(b)

        def update():
            with torch.no_grad():
                q1t, q2t = crit.q_target(s, a)
                vn = crit.v(s2)
            loss = iql.value_loss(torch.minimum(q1t, q2t), crit.v(s), 0.7)
            q1, q2 = crit.q(s, a)
            loss = loss + iql.q_loss(q1, q2, iql.td_target(r, d, vn, 0.99))
            opt.zero_grad()
            loss.backward()
            opt.step()
            iql.ema_update(crit.q_target, crit.q, 0.005)
    else:
        b = paper.policy.batch_size
        model = NoisePredictor(STATE_DIM, ACTION_DIM).to(device).eval().requires_grad_(False)
        crit = Critic(STATE_DIM, ACTION_DIM).to(device).eval().requires_grad_(False)
        pi = DeterministicPolicy(STATE_DIM, ACTION_DIM).to(device)
        opt = torch.optim.Adam(pi.parameters(), lr=3e-4)
        s, t, eps = torch.randn(b, STATE_DIM), torch.rand(b) * 0.96 + 0.02, torch.randn(b, ACTION_DIM)

        def update():
            act = pi(s)
            with torch.no_grad():
                e = model(schedule.diffuse(act.detach(), t, eps), s, t)
            with torch.enable_grad():
                a_ = act.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(crit.target_q_mean(s, a_).sum(), a_)
            loss = ((schedule.sigma(t)[:, None] ** 2 * e - 0.05 * g) * act).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    for _ in range(max(2, steps // 10)):
        update()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            update()
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates), rates


# (short, long) loop budgets and bare steps per stage: each stage ~10-30 s on a 2-core CPU.
BUDGETS = {"behavior": (5, 45, 20), "critic": (100, 1100, 500), "policy": (50, 550, 250)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/bench/train_throughput.json", help="JSON output path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--stages", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = synthetic_dataset()
    paper = make_config("halfcheetah-medium", "paper")
    batch = {"behavior": paper.behavior.batch_size, "critic": paper.critic.batch_size, "policy": paper.policy.batch_size}
    results = {}
    for stage in args.stages:
        short, long, bare_steps = BUDGETS[stage]
        loop = _loop_rate(stage, short, long, data, device)
        bare, bare_all = _bare_rate(stage, bare_steps, device)
        results[stage] = {
            "batch_size": batch[stage],
            "loop_updates_per_s": loop,
            "bare_updates_per_s": bare,
            "bare_updates_per_s_repeats": bare_all,
            "loop_over_bare": loop / bare,
            "paper_steps": getattr(paper, stage).steps,
            "paper_budget_hours_at_loop_rate": getattr(paper, stage).steps / loop / 3600,
        }
        print(f"{stage:9s} batch {batch[stage]:5d}: loop {loop:8.1f} upd/s, bare {bare:8.1f} upd/s, "
              f"loop/bare {loop / bare:.2f}, paper budget {results[stage]['paper_budget_hours_at_loop_rate']:.1f} h")
    artifacts.write_json(Path(args.out), {
        "benchmark": "train_throughput",
        "description": "updates/s of each SRPO stage at the paper's batch sizes; loop = srpo.train stage loop "
                       "(marginal cost by differencing two budgets), bare = forward/backward/step on one fixed batch",
        "dataset_shape": {"state_dim": STATE_DIM, "action_dim": ACTION_DIM, "transitions": N_TRANSITIONS},
        "device": str(device),
        "results": results,
        "machine": machine_info(),
        "srpo_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
