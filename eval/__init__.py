"""srpo-bench evaluation harness: datasets, rollouts, scores and statistics."""
