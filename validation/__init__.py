"""srpo-bench validation: exact-score ground truth and the experiments that test SRPO's mechanisms."""
