"""Normalization references and the D4RL-normalized score (SPEC §7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# D4RL v2 locomotion reference returns (random policy, expert policy), SPEC §7.
D4RL_LOCOMOTION: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
}


@dataclass(frozen=True)
class Reference:
    """Returns that map to normalized scores 0 (``ref_min``) and 100 (``ref_max``)."""

    ref_min: float
    ref_max: float
    source: str

    def __post_init__(self) -> None:
        if not self.ref_max > self.ref_min:
            raise ValueError(f"reference max ({self.ref_max}) must exceed min ({self.ref_min}); source: {self.source}")

    def normalize(self, returns: np.ndarray | float) -> np.ndarray:
        """D4RL-normalized score 100 (R - R_random) / (R_expert - R_random)."""
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min) / (self.ref_max - self.ref_min)


def d4rl_reference(env: str) -> Reference:
    """The D4RL reference of a locomotion environment name (``hopper``, ``hopper-medium-v2``, ...)."""
    base = env.split("-")[0].lower()
    if base not in D4RL_LOCOMOTION:
        raise ValueError(f"no D4RL reference returns for {env!r}; known: {', '.join(D4RL_LOCOMOTION)}")
    lo, hi = D4RL_LOCOMOTION[base]
    return Reference(lo, hi, f"D4RL v2 reference returns for {base} (SPEC §7)")
