"""``python -m srpo_bench.pipeline``: the DVC stages' entry point."""

import sys

from srpo_bench.pipeline.cli import main

sys.exit(main())
