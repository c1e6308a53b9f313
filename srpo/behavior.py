"""Diffusion behavior model: noise prediction network, DSM loss (E4), score (E5), sampler.

SRPO §3 pretrains eps_psi(a_t | s, t) on the dataset actions and afterwards only
ever *queries* it for its score; sampling from it is needed here solely for the
diffusion-sampling baselines and for checking the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srpo import schedule
from srpo.networks import GaussianFourierEmbedding, Mish, ResidualBlock


class NoisePredictor(nn.Module):
    """eps_psi(a_t | s, t): residual MLP over [a_t, s, emb(t)] (method §5).

    Time goes through Gaussian Fourier features (64, scale 30) and an MLP
    64 -> 128 -> 128; the result is concatenated with s and a_t, projected to
    ``width``, passed through ``n_blocks`` pre-norm residual blocks (inner width
    4 x width, LayerNorm, dropout, Mish) and read out by Mish then Linear, with no
    LayerNorm in the read-out, as the authors' code does (method §5). Dropout (rate
    ``dropout``) applies only when the caller passes the masks of
    :func:`sample_dropout_masks`, i.e. in the training loss.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        width: int = 256,
        n_blocks: int = 3,
        dropout: float = 0.1,
        time_features: int = 64,
        time_scale: float = 30.0,
        time_hidden: int = 128,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.width = width
        self.n_blocks = n_blocks
        self.dropout = dropout
        self.time_embed = nn.Sequential(
            GaussianFourierEmbedding(time_features, time_scale, generator=generator),
            nn.Linear(time_features, time_hidden),
            Mish(),
            nn.Linear(time_hidden, time_hidden),
        )
        self.inp = nn.Linear(action_dim + state_dim + time_hidden, width)
        self.blocks = nn.ModuleList([ResidualBlock(width, 4) for _ in range(n_blocks)])
        self.out = nn.Sequential(Mish(), nn.Linear(width, action_dim))

    def forward(self, a_t: Tensor, state: Tensor, t: Tensor, dropout_masks: Tensor | None = None) -> Tensor:
        """eps_psi(a_t | s, t); ``dropout_masks`` (n_blocks, batch, width) applies dropout."""
        if a_t.shape[-1] != self.action_dim or state.shape[-1] != self.state_dim:
            raise ValueError(
                f"NoisePredictor built for state dim {self.state_dim} and action dim {self.action_dim}, "
                f"called with state {tuple(state.shape)} and action {tuple(a_t.shape)}"
            )
        h = self.inp(torch.cat([a_t, state, self.time_embed(t)], dim=-1))
        for i, block in enumerate(self.blocks):
            h = block(h, None if dropout_masks is None else dropout_masks[i])
        return self.out(h)


def dsm_loss(
    model: nn.Module,
    state: Tensor,
    action: Tensor,
    t: Tensor,
    eps: Tensor,
    dropout_masks: Tensor | None = None,
) -> Tensor:
    """Denoising score-matching loss (E4) per sample, for given (t, eps) and, optionally, dropout masks.

    ||eps_psi(alpha_t a + sigma_t eps | s, t) - eps||^2, shape (batch,); E4 is its mean, which
    the caller takes (training), or not (validation bins it by t). Randomness is an argument,
    so the function is deterministic and the caller owns the generator.
    """
    a_t = schedule.diffuse(action, t, eps)
    pred = model(a_t, state, t) if dropout_masks is None else model(a_t, state, t, dropout_masks)
    return denoising_error(pred, eps)


def denoising_error(eps_pred: Tensor, eps: Tensor) -> Tensor:
    """||eps_pred - eps||^2 per sample, summed over action dimensions: the integrand of E4."""
    return ((eps_pred - eps) ** 2).sum(-1)


def sample_dsm_noise(
    batch: int,
    action_dim: int,
    t_min: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """t ~ U(t_min, 1) and eps ~ N(0, I) for one DSM batch (method §2: t_min = 1e-3)."""
    t = t_min + (1.0 - t_min) * torch.rand(batch, generator=generator, device=device, dtype=dtype)
    eps = torch.randn(batch, action_dim, generator=generator, device=device, dtype=dtype)
    return t, eps


def sample_dropout_masks(
    model: NoisePredictor, batch: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Tensor | None:
    """Inverted-dropout keep masks for every residual block: Bernoulli(1 - p) / (1 - p), or None if p = 0."""
    p = model.dropout
    if p == 0:
        return None
    keep = torch.empty(model.n_blocks, batch, model.width, device=device, dtype=dtype)
    return keep.bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)


def score_from_eps(eps_pred: Tensor, t: Tensor) -> Tensor:
    """grad_{a_t} log mu_t(a_t | s) = -eps*(a_t | s, t) / sigma_t   (E5)."""
    return -eps_pred / schedule.sigma(t).reshape(t.shape + (1,) * (eps_pred.dim() - t.dim()))


@torch.no_grad()
def sample_actions(
    model: nn.Module,
    state: Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    t_end: float = 1e-3,
    clip: float = 1.0,
) -> Tensor:
    """Draw one action per state from mu(a|s) with the first-order DPM-Solver (= DDIM).

    Starts from a_1 ~ N(0, I) and takes ``n_steps`` steps uniform in log-SNR
    lambda from t = 1 to t = ``t_end``. Each step is the DDIM update
    a_{t'} = alpha_{t'} x0_hat + sigma_{t'} eps_hat, which is exactly DPM-Solver-1
    (Lu et al. 2022). The denoised estimate x0_hat is clipped to the action box
    at every step, as is usual for bounded actions.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    model_was_training = model.training
    model.eval()
    b, dev, dt = state.shape[0], state.device, state.dtype
    x = torch.randn(b, model.action_dim, generator=generator, device=dev, dtype=dt)
    lam = torch.linspace(
        float(schedule.log_snr(torch.tensor(1.0, dtype=torch.float64))),
        float(schedule.log_snr(torch.tensor(t_end, dtype=torch.float64))),
        n_steps + 1,
        dtype=torch.float64,
    )
    ts = schedule.t_from_log_snr(lam).to(dt)
    for i in range(n_steps):
        t, t_next = ts[i], ts[i + 1]
        eps = model(x, state, t.expand(b).to(dev))
        x0 = ((x - schedule.sigma(t) * eps) / schedule.alpha(t)).clamp(-clip, clip)
        # Re-derive eps from the clipped x0 so the step stays on the data manifold's box.
        eps = (x - schedule.alpha(t) * x0) / schedule.sigma(t)
        x = schedule.alpha(t_next) * x0 + schedule.sigma(t_next) * eps
    model.train(model_was_training)
    return x.clamp(-clip, clip)
