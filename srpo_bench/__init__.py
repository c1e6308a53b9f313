"""srpo-bench: the harness around the :mod:`srpo` library, in layers (each imports only those below it).

- ``srpo_bench.eval`` (folder ``eval/``): datasets, bandit tasks, rollouts, baselines, statistics;
- ``srpo_bench.validation`` (folder ``validation/``): exact-score ground truth and the experiments
  that test SRPO's mechanisms;
- ``srpo_bench.params`` (a pipeline profile's typed parameters), ``srpo_bench.report`` (its report),
  then ``srpo_bench.pipeline`` (the DVC stages' steps) and ``srpo_bench.cli`` (the ``srpo`` command).

The layers are checked by import-linter (``lint-imports``, contract in ``pyproject.toml``).
"""
