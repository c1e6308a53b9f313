"""The fast path: the reference stages (:mod:`srpo.train`) for S seeds at once, same math, same draws.

- :mod:`srpo.fast.seed_batch`: seeds as a batch dimension (``torch.func.vmap`` of the reference
  losses), per-seed checkpoints in the reference format, optional ``torch.compile``, and the
  behavior and critic stages side by side (``overlap``);
- :mod:`srpo.fast.cuda_graph`: whole updates captured as CUDA graphs, capturable optimizers.

It imports the reference and never the other way round (import-linter contract in pyproject.toml).
"""
