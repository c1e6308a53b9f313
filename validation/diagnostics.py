"""Diagnostics of the three parts SRPO's claims rest on: the critic, the score, the extraction.

Pure functions on arrays and tensors; the pipeline stage that runs them on a trained run
(critic, behavior model, policy, dataset) lives above this module.

- **Critic accuracy** (method §4): Q(s, a) and V(s) on held-out episodes against the
  discounted Monte Carlo return of the dataset's own actions: bias, RMSE, Pearson and
  Spearman correlation. IQL's V is an upper expectile of Q under the behavior policy and Q
  is the behavior policy's Q-function (with expectile-improved bootstrap), so on a dataset
  of one fixed policy both should match the Monte Carlo return up to the expectile's
  optimism; a large positive bias means over-estimation, a low rank correlation means the
  critic cannot order states.
- **Policy support**: how typical the policy's action is for the behavior model (the
  per-sample denoising error at a few diffusion times, method E4, at π(s) against the
  same at the dataset's action), and how far π(s) lies from the nearest dataset action
  among the dataset states nearest to s.
- **Extraction** (method E6): the Q term and the score term of the policy gradient per
  sample, their norms and their cosine; the policy's Q against the dataset action's Q.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor


def discounted_returns(
    rewards: np.ndarray,
    terminals: np.ndarray,
    episode_ends: np.ndarray,
    gamma: float,
    tolerance: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo return G_i = sum_k gamma^k r_{i+k} to the end of row i's episode, and where it is complete.

    ``episode_ends[i]`` marks the last row of an episode (terminal or cut); ``terminals[i]``
    whether it ended in a true terminal state (value 0 after it). A return is *complete*
    when its episode terminated, or when the discount mass it misses past a cut,
    gamma^(rows to the cut), is at most ``tolerance`` of the whole.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    ends = np.asarray(episode_ends, dtype=bool).copy()
    if len(rewards) == 0:
        raise ValueError("no rows")
    ends[-1] = True  # the last row ends its episode, whatever the flags say
    terms = np.asarray(terminals, dtype=bool)
    returns = np.zeros_like(rewards)
    complete = np.zeros(len(rewards), dtype=bool)
    g, rows_to_end, ended_by_terminal = 0.0, 0, False
    for i in range(len(rewards) - 1, -1, -1):
        if ends[i]:
            g, rows_to_end, ended_by_terminal = 0.0, 0, bool(terms[i])
        g = rewards[i] + gamma * g
        rows_to_end += 1
        returns[i] = g
        complete[i] = ended_by_terminal or gamma**rows_to_end <= tolerance
    return returns, complete


@dataclass(frozen=True)
class Agreement:
    """How a prediction agrees with a reference: bias (mean of prediction - reference), RMSE, correlations."""

    bias: float
    rmse: float
    pearson: float
    spearman: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(prediction: np.ndarray, reference: np.ndarray) -> Agreement:
    """Bias, RMSE, Pearson r and Spearman rho; correlations are NaN when either side is constant."""
    p, r = np.asarray(prediction, dtype=np.float64).ravel(), np.asarray(reference, dtype=np.float64).ravel()
    if p.shape != r.shape or p.size < 2:
        raise ValueError(f"need two equally long vectors of >= 2 values, got {p.shape} and {r.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r))):
        raise ValueError("prediction or reference contains NaN or inf")
    d = p - r
    constant = np.ptp(p) == 0 or np.ptp(r) == 0
    return Agreement(
        float(d.mean()),
        float(np.sqrt(np.mean(d**2))),
        np.nan if constant else float(stats.pearsonr(p, r).statistic),
        np.nan if constant else float(stats.spearmanr(p, r).statistic),
        int(p.size),
    )


def nearest_action_distance(
    query_states: Tensor,
    query_actions: Tensor,
    data_states: Tensor,
    data_actions: Tensor,
    k_states: int = 10,
    chunk: int = 1024,
    query_groups: Tensor | None = None,
    data_groups: Tensor | None = None,
) -> Tensor:
    """Per query: the Euclidean distance from its action to the nearest action among the ``k_states``
    dataset rows whose states are nearest to its state (states standardized by the dataset's std).

    A policy that returns exactly the dataset's action at the dataset's states scores 0.
    With ``query_groups`` and ``data_groups`` (a group id per query and per dataset row, e.g.
    episodes), a query's candidates exclude the rows of its own group: for the data's own rows
    grouped by episode, that is the spacing between different episodes' actions at similar
    states (consecutive steps of one episode are near copies), the scale a policy's distance
    is read against.
    """
    if query_states.shape[0] != query_actions.shape[0] or data_states.shape[0] != data_actions.shape[0]:
        raise ValueError("states and actions must have the same number of rows")
    grouped = query_groups is not None or data_groups is not None
    if grouped and (
        query_groups is None
        or data_groups is None
        or query_groups.shape != (query_states.shape[0],)
        or data_groups.shape != (data_states.shape[0],)
    ):
        raise ValueError("query_groups and data_groups need one group id per query and per dataset row")
    k = min(k_states, data_states.shape[0])
    scale = data_states.std(0).clamp_min(1e-6)
    ds = data_states / scale
    out = []
    for i in range(0, query_states.shape[0], chunk):
        qs = query_states[i : i + chunk] / scale
        dist = torch.cdist(qs, ds)
        if grouped:
            dist = dist.masked_fill(query_groups[i : i + chunk, None] == data_groups[None, :], torch.inf)
        near = dist.topk(k, largest=False)  # (q, k) nearest dataset states
        cand = data_actions[near.indices]  # (q, k, action_dim)
        gap = (cand - query_actions[i : i + chunk, None, :]).norm(dim=-1)
        out.append(gap.masked_fill(near.values.isinf(), torch.inf).min(dim=-1).values)
    result = torch.cat(out)
    if grouped and torch.isinf(result).any():
        raise ValueError("a query's group holds every dataset row: nothing outside it to compare with")
    return result


@dataclass(frozen=True)
class TermComparison:
    """The E6 gradient's two terms per sample: their mean norms, the mean cosine between them,
    and the share of samples where they point against each other (cosine < 0)."""

    q_term_norm: float
    score_term_norm: float
    norm_ratio: float  # mean score-term norm / mean Q-term norm
    cosine: float
    opposed_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_terms(q_term: Tensor, score_term: Tensor, eps: float = 1e-12) -> TermComparison:
    """``q_term``: the per-sample ascent direction of the Q part (beta grad_a Q); ``score_term``: the
    per-sample ascent direction of the behavior part (-w(t)(eps_psi - eps)), both (batch, action_dim).

    A cosine near +1 means the behavior model agrees with the critic; near -1, the score pulls
    the policy back from where Q pushes it.
    """
    if q_term.shape != score_term.shape or q_term.ndim != 2:
        raise ValueError(
            f"need two (batch, action_dim) tensors of one shape, got {q_term.shape}, {score_term.shape}"
        )
    qn, sn = q_term.norm(dim=-1), score_term.norm(dim=-1)
    cos = (q_term * score_term).sum(-1) / (qn * sn).clamp_min(eps)
    q_mean, s_mean = float(qn.mean()), float(sn.mean())
    return TermComparison(
        q_mean,
        s_mean,
        s_mean / q_mean if q_mean > 0 else float("inf"),
        float(cos.mean()),
        float((cos < 0).float().mean()),
    )


@dataclass(frozen=True)
class PolicyVsData:
    """The policy's Q against the dataset action's Q at the same states."""

    q_policy: float
    q_data: float
    advantage: float  # mean of Q(s, pi(s)) - Q(s, a_data)
    better_fraction: float  # share of states where Q(s, pi(s)) > Q(s, a_data)

    def to_dict(self) -> dict:
        return asdict(self)


def policy_vs_data(q_policy: Tensor, q_data: Tensor) -> PolicyVsData:
    if q_policy.shape != q_data.shape:
        raise ValueError(f"Q values of different shapes: {q_policy.shape} vs {q_data.shape}")
    diff = q_policy - q_data
    return PolicyVsData(
        float(q_policy.mean()), float(q_data.mean()), float(diff.mean()), float((diff > 0).float().mean())
    )


def relative_error(estimate: Tensor, truth: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-row ||estimate - truth|| / ||truth||: the score error where it is queried."""
    return (estimate - truth).norm(dim=-1) / truth.norm(dim=-1).clamp_min(eps)
