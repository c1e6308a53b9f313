"""Hypothesis strategies shared by the score-estimator tests."""

import torch
from hypothesis import strategies as st

from srpo.mixture import GaussianMixture


@st.composite
def mixtures(draw, max_components: int = 5, max_dim: int = 3) -> GaussianMixture:
    """Random full-covariance Gaussian mixtures in [-1, 1]^d with well-conditioned covariances."""
    k = draw(st.integers(1, max_components))
    d = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.05
    means = 1.6 * torch.rand(k, d, generator=g, dtype=torch.float64) - 0.8
    scale = draw(st.floats(0.02, 0.4))
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64) * scale
    covs = a @ a.transpose(-1, -2) + (scale**2) * 0.1 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(weights / weights.sum(), means, covs)
