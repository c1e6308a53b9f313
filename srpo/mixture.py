"""Gaussian mixtures and their exact diffused scores (method §2, last paragraph).

If mu(a) = sum_k w_k N(a; m_k, S_k) then the VP-diffused marginal is again a
mixture: mu_t(a_t) = sum_k w_k N(a_t; alpha_t m_k, alpha_t^2 S_k + sigma_t^2 I).
Its score, and therefore the optimal noise predictor of the denoising
score-matching loss (E4/E5), eps*(a_t, t) = -sigma_t grad log mu_t(a_t), is
available in closed form. This is the ground truth every score estimator in
the suite is checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from srpo import schedule


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of full-covariance Gaussians in R^d.

    weights: (K,) positive, summing to one; means: (K, d); covs: (K, d, d)
    symmetric positive definite.
    """

    weights: Tensor
    means: Tensor
    covs: Tensor

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(self.weights.shape)}")
        if self.covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(self.covs.shape)}")
        if not torch.all(self.weights > 0):
            raise ValueError("mixture weights must be positive")
        if abs(float(self.weights.sum()) - 1.0) > 1e-5:
            raise ValueError(f"mixture weights must sum to 1, got {float(self.weights.sum()):.6f}")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "GaussianMixture":
        return GaussianMixture(
            self.weights.to(device=device, dtype=dtype),
            self.means.to(device=device, dtype=dtype),
            self.covs.to(device=device, dtype=dtype),
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n samples (n, d) using ``generator`` for all randomness."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        return self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)


def _diffused_precisions(mix: GaussianMixture, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each t in (U,): means (U, K, d), precisions C^{-1} (U, K, d, d), log det C (U, K)."""
    a = schedule.alpha(t)[:, None, None]
    s2 = schedule.sigma(t)[:, None, None, None] ** 2
    eye = torch.eye(mix.dim, dtype=mix.means.dtype, device=mix.means.device)
    covs = a[..., None] ** 2 * mix.covs[None] + s2 * eye
    chol = torch.linalg.cholesky(covs)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return a * mix.means[None], torch.cholesky_inverse(chol), logdet


def _component_terms(mix: GaussianMixture, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Per-component log w_k N(x; m_k(t), C_k(t)) (T, N, K) and C_k^{-1}(x - m_k) (T, N, K, d).

    ``x`` is (T, N, d) with one diffusion time per row in ``t`` (T,): covariances
    depend on t alone, so they are factorized once per row, not once per point.
    """
    means, prec, logdet = _diffused_precisions(mix, t)
    diff = x[:, :, None, :] - means[:, None]
    z = torch.einsum("tkij,tnkj->tnki", prec, diff)
    maha = (diff * z).sum(-1)
    log_norm = -0.5 * (mix.dim * math.log(2.0 * math.pi) + logdet)
    return (torch.log(mix.weights) + log_norm)[:, None] - 0.5 * maha, z


def _as_grid(x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Lay out points x (B, d) and t (scalar or (B,)) as a (T, N, d) grid for _component_terms."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return x[None], t[None]
    if t.shape != x.shape[:1]:
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return x[:, None], t


def log_prob(mix: GaussianMixture, x: Tensor, t: Tensor | float = 0.0) -> Tensor:
    """log mu_t(x) for x (B, d) at diffusion time t (scalar or (B,)); t = 0 is mu itself."""
    logp, _ = _component_terms(mix, *_as_grid(x, t))
    return torch.logsumexp(logp, dim=-1).reshape(x.shape[0])


def log_prob_grid(mix: GaussianMixture, x: Tensor, t: Tensor) -> Tensor:
    """log mu_t(x) for a grid of points x (T, N, d), row i at time t[i]; returns (T, N)."""
    logp, _ = _component_terms(mix, x, t)
    return torch.logsumexp(logp, dim=-1)


def score(mix: GaussianMixture, x: Tensor, t: Tensor | float = 0.0) -> Tensor:
    """Exact score grad_x log mu_t(x), shape (B, d).

    grad log sum_k p_k(x) = -sum_k r_k(x) C_k^{-1}(x - m_k) with responsibilities
    r_k = p_k / sum_j p_j.
    """
    logp, z = _component_terms(mix, *_as_grid(x, t))
    resp = torch.softmax(logp, dim=-1)
    return -(resp[..., None] * z).sum(-2).reshape(x.shape)


def exact_eps(mix: GaussianMixture, x: Tensor, t: Tensor | float) -> Tensor:
    """The optimal noise predictor eps*(a_t, t) = -sigma_t grad log mu_t(a_t)   (E5)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    sig = schedule.sigma(t)
    return -(sig[:, None] if sig.dim() else sig) * score(mix, x, t)
