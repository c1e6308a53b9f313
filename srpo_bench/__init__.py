"""srpo-bench: the harness around the :mod:`srpo` library, in layers (each imports only those below it).

- ``srpo_bench.eval`` (folder ``eval/``): datasets, bandit tasks, rollouts, baselines, statistics;
- ``srpo_bench.validation`` (folder ``validation/``): exact-score ground truth and the experiments
  that test SRPO's mechanisms;
- ``srpo_bench.pipeline``, ``srpo_bench.report``, ``srpo_bench.cli``: the DVC pipeline's steps, its
  report, and the ``srpo`` command.

The layers are checked by import-linter (``lint-imports``, contract in ``pyproject.toml``).
"""
