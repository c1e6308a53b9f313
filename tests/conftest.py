import os

import torch
from hypothesis import HealthCheck, settings

# Deterministic example generation: a failing example reproduces on every machine.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "30")),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")
# One torch thread per pytest-xdist worker (`make test` runs one worker per core): two workers
# of two threads each on two cores would oversubscribe them, and small ops then crawl.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """The smoke pipeline (one module fixture of several minutes) first: with pytest-xdist's
    whole-file scheduling its worker starts on it while the other runs the rest, instead of
    taking it on last and running minutes past everything else."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_pipeline.py") else 1)
