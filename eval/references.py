"""Normalization references and the D4RL-normalized score (method §7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# D4RL v2 locomotion reference returns (random policy, expert policy), method §7.
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
            raise ValueError(
                f"reference max ({self.ref_max}) must exceed min ({self.ref_min}); source: {self.source}"
            )

    def normalize(self, returns: np.ndarray | float) -> np.ndarray:
        """D4RL-normalized score 100 (R - R_random) / (R_expert - R_random)."""
        return 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min) / (self.ref_max - self.ref_min)


def d4rl_reference(env: str) -> Reference:
    """The D4RL reference of a locomotion environment name (``hopper``, ``hopper-medium-v2``, ...)."""
    base = env.split("-")[0].lower()
    if base not in D4RL_LOCOMOTION:
        raise ValueError(f"no D4RL reference returns for {env!r}; known: {', '.join(D4RL_LOCOMOTION)}")
    lo, hi = D4RL_LOCOMOTION[base]
    return Reference(lo, hi, f"D4RL v2 reference returns for {base} (method §7)")


# D4RL AntMaze: the sparse reward is 1 at the goal, so a successful episode scores 100.
ANTMAZE_REFERENCE = Reference(0.0, 1.0, "D4RL AntMaze: normalized score = 100 x success rate")


# The paper's Table 1 (D4RL locomotion -v2, normalized scores; method §10), for the report's
# comparison column. Measured on D4RL's datasets, not on the ones this suite generates.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "halfcheetah-medium-expert": {
        "SfBC": 92.6,
        "Diffusion-QL": 96.8,
        "QGPO": 93.5,
        "IDQL": 95.9,
        "SRPO": 92.2,
    },
    "hopper-medium-expert": {
        "SfBC": 108.6,
        "Diffusion-QL": 111.1,
        "QGPO": 108.0,
        "IDQL": 108.6,
        "SRPO": 100.1,
    },
    "walker2d-medium-expert": {
        "SfBC": 109.8,
        "Diffusion-QL": 110.1,
        "QGPO": 110.7,
        "IDQL": 112.7,
        "SRPO": 114.0,
    },
    "halfcheetah-medium": {"SfBC": 45.9, "Diffusion-QL": 51.1, "QGPO": 54.1, "IDQL": 51.0, "SRPO": 60.4},
    "hopper-medium": {"SfBC": 57.1, "Diffusion-QL": 90.5, "QGPO": 98.0, "IDQL": 65.4, "SRPO": 95.5},
    "walker2d-medium": {"SfBC": 77.9, "Diffusion-QL": 87.0, "QGPO": 86.0, "IDQL": 82.5, "SRPO": 84.4},
    "halfcheetah-medium-replay": {
        "SfBC": 37.1,
        "Diffusion-QL": 47.8,
        "QGPO": 47.6,
        "IDQL": 45.9,
        "SRPO": 51.4,
    },
    "hopper-medium-replay": {"SfBC": 86.2, "Diffusion-QL": 100.7, "QGPO": 96.9, "IDQL": 92.1, "SRPO": 101.2},
    "walker2d-medium-replay": {"SfBC": 65.1, "Diffusion-QL": 95.5, "QGPO": 84.4, "IDQL": 85.1, "SRPO": 84.6},
}
