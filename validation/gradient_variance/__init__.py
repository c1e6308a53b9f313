"""Variance of the SRPO policy gradient (E6): what the baseline term and the weighting buy.

method §3 (E6) trains pi_theta with the stochastic gradient

    g(s, t, eps) = [ w(t)(eps_psi(a_t|s,t) - [eps]) - beta grad_a Q(s,a) ]^T d pi_theta(s)/d theta,
    a = pi_theta(s),  a_t = alpha_t a + sigma_t eps,

written here as the gradient of ``srpo.policy.surrogate_loss`` on a batch of one (so it
is what training's autograd hands to Adam: minus the ascent direction of E6). A training
batch averages B such per-sample gradients over independent draws (s, t, eps), so

    E g_B = E g,      Cov g_B = Cov g / B.

method §9 claims that the baseline (subtracting eps, which has mean zero given s) leaves
E g unchanged and reduces its variance. This module measures both, at fixed policy
checkpoints of a real training run:

- :func:`per_sample_gradients`: the per-sample gradients g_i (M, P) for M draws, by
  ``torch.func`` (``vmap`` of ``grad`` over ``functional_call``). Since the regularizer
  direction and grad_a Q are detached in the surrogate, g_i = J_theta pi(s_i)^T d_i with
  d_i = w(t_i)(eps_psi - [eps_i]) - beta grad_a Q computed once, batched, without a graph.
- :func:`batch_gradient_stats`: ||E g||^2 (unbiased), tr Cov g_B, per-layer traces and the
  signal-to-noise ratio SNR = ||E g||^2 / tr Cov g_B, each with a bootstrap CI over the M
  draws. Everything needed is a quadratic form c^T G c in the (per-layer) Gram matrix
  G = g g^T, so a resample costs min(P, M) per row, never a pass over an M x P copy.
- :func:`compare_baseline`: on the same draws, the mean of g_on - g_off (a sign-flip test
  that it is zero, and its size relative to ||E g_off||) and the variance ratio
  tr Cov g_on / tr Cov g_off with a paired bootstrap CI.
- :func:`measure_checkpoint`: all of the above for baseline on/off x every weighting, on
  one set of draws.
- :func:`measure_run`: trains with the real :func:`srpo.train.train_policy`, stopping it
  (``stop_after``) at each checkpoint fraction of the budget and resuming it afterwards,
  so the measured policies are exactly those of an uninterrupted run.
- :func:`measure_bandit` (exact eps* and exact Q: all noise comes from (t, eps)) and
  :func:`measure_task` (learned behavior model and IQL critic, e.g. a locomotion task).
- :func:`summarize`, :func:`plot`, :func:`markdown`: across seeds, a figure, report lines.

Modules, one job each: :mod:`.per_sample` (per-sample gradients), :mod:`.gram_stats`
(statistics from Gram matrices, bootstrap), :mod:`.measure` (draws, checkpoints, runs),
:mod:`.summary` (over seeds) and :mod:`.render` (figure, report lines).
"""

from srpo_bench.validation.gradient_variance.gram_stats import batch_gradient_stats, compare_baseline
from srpo_bench.validation.gradient_variance.measure import (
    draw_samples,
    initial_policy,
    measure_bandit,
    measure_checkpoint,
    measure_run,
    measure_task,
    snapshot_steps,
)
from srpo_bench.validation.gradient_variance.per_sample import (
    SurrogateTerms,
    linear_layer_grams,
    linear_modules,
    parameter_layers,
    per_sample_gradients,
    policy_vjp,
    surrogate_direction,
    surrogate_terms,
)
from srpo_bench.validation.gradient_variance.render import markdown, plot
from srpo_bench.validation.gradient_variance.summary import QUANTITIES, summarize

__all__ = [
    "QUANTITIES",
    "SurrogateTerms",
    "batch_gradient_stats",
    "compare_baseline",
    "draw_samples",
    "initial_policy",
    "linear_layer_grams",
    "linear_modules",
    "markdown",
    "measure_bandit",
    "measure_checkpoint",
    "measure_run",
    "measure_task",
    "parameter_layers",
    "per_sample_gradients",
    "plot",
    "policy_vjp",
    "snapshot_steps",
    "summarize",
    "surrogate_direction",
    "surrogate_terms",
]
