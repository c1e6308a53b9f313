"""Reference implementation of SRPO, Score Regularized Policy Optimization through
Diffusion Behavior (Chen et al., ICLR 2024, arXiv 2310.07297).

Modules, one concept each: ``schedule`` (VP-SDE, E3), ``behavior`` (eps_psi, DSM loss
E4, score E5, sampler), ``critic`` (IQL losses), ``policy`` (the E6 surrogate), ``mixture``
(exact Gaussian-mixture scores), ``config`` (typed configs, task presets, profiles),
``precision`` (per-stage float formats), ``train`` (the three training stages, one page),
``stage_loop`` (seeds, checkpoints, running means, resume), and ``fast`` (the same stages
for many seeds at once). The ``srpo`` command is :mod:`srpo_bench.cli`.

"method §N" in docstrings and comments is section N of docs/method.md.
"""

__version__ = "0.1.0"
