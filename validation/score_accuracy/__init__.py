"""Score accuracy of the diffusion behavior model on held-out data (method §9, last claim).

SRPO never samples from its behavior model: it only queries the score
grad_a log mu_t(a|s) = -eps_psi(a_t|s,t) / sigma_t (E5) inside the policy gradient
(E6). This module measures how accurate that score is on data the model was not
trained on, as a function of the diffusion time t.

(a) Exact ground truth (bandits). On the bandit suite the behavior policy is a
    Gaussian mixture, so eps*(a_t, t) is exact (method §2, :func:`srpo.mixture.exact_eps`).
    :func:`score_error_by_time` compares the learned eps_psi with eps* on fresh
    actions from the mixture (a seed the training set did not use): relative error
    of the score, cosine similarity, and the DSM loss (E4) of eps_psi next to that
    of eps* (its irreducible floor).
(b) Real datasets. The exact score is unknown, so :func:`episode_split` holds out
    whole episodes (transitions of one episode are strongly correlated: a
    transition-level split would leak), the model is trained on the rest, and
    :func:`dsm_loss_by_time` evaluates the DSM loss (E4) per diffusion-time bin on
    train and held-out with the *same* noise draws. Their difference, the
    generalization gap, is the measurable part of the score error: the irreducible
    part of E4 is the same on both splits (same distribution) and cancels.
    Dividing the per-sample loss by sigma_t^2 puts it in score units,
    ||s_psi(a_t) + eps / sigma_t||^2, which is what the t -> 0 question is about.

How the pieces fit:

    pure math on tensors          episode_split, dsm_loss_per_sample, dsm_loss_by_time,
                                  score_error_by_time
    one (target, seed) record     bandit_record, dataset_record: train eps_psi with the real
                                  stage (srpo.train.train_behavior, checkpoint under ``work``,
                                  so a killed run resumes), evaluate, return a JSON-able dict
    over seeds                    summarize: mean over seeds with the per-task interval rule
                                  (srpo_bench.eval.stats.task_estimate) and n_runs, per t / t-bin, and
                                  the "t -> 0 vs mid t" comparison (the reason SRPO
                                  ensembles t ~ U(0.02, 0.98), method §3)
    output                        plot (seaborn PNG, atomic), markdown (report lines, every
                                  sentence computed from the summary)

A stage command writes each record with :func:`srpo.artifacts.write_json`, then
``summarize`` -> ``plot`` / ``markdown``. Modules, one job each: :mod:`.splits`,
:mod:`.measures`, :mod:`.records`, :mod:`.summary`, :mod:`.render`.
"""

from srpo_bench.validation.score_accuracy.measures import (
    DEFAULT_CHUNK,
    dsm_loss_by_time,
    dsm_loss_per_sample,
    score_error_by_time,
)
from srpo_bench.validation.score_accuracy.records import (
    DEFAULT_T_EDGES,
    DEFAULT_T_GRID,
    HELDOUT_SEED_OFFSET,
    bandit_record,
    dataset_record,
)
from srpo_bench.validation.score_accuracy.render import markdown, plot
from srpo_bench.validation.score_accuracy.splits import episode_ids, episode_split
from srpo_bench.validation.score_accuracy.summary import BANDIT_METRICS, DATASET_METRICS, summarize

__all__ = [
    "BANDIT_METRICS",
    "DATASET_METRICS",
    "DEFAULT_CHUNK",
    "DEFAULT_T_EDGES",
    "DEFAULT_T_GRID",
    "HELDOUT_SEED_OFFSET",
    "bandit_record",
    "dataset_record",
    "dsm_loss_by_time",
    "dsm_loss_per_sample",
    "episode_ids",
    "episode_split",
    "markdown",
    "plot",
    "score_error_by_time",
    "summarize",
]
