"""Denoising score matching (E4/E5): the exact eps* minimizes the loss."""

import torch
from hypothesis import given, strategies as st
from strategies import mixtures

from srpo import behavior, mixture, schedule


class _Predictor(torch.nn.Module):
    """eps* + delta(a_t), delta a fixed affine perturbation (delta = 0 gives the exact predictor)."""

    def __init__(self, mix, shift, slope):
        super().__init__()
        self.mix, self.shift, self.slope = mix, shift, slope

    def forward(self, a_t, state, t):
        return mixture.exact_eps(self.mix, a_t, t) + self.shift + a_t @ self.slope


@given(mixtures(max_components=4, max_dim=2), st.floats(0.1, 1.0), st.integers(0, 10_000))
def test_exact_eps_beats_any_perturbation(mix, size, seed):
    """L(eps* + delta) - L(eps*) = E||delta||^2 + 2 E[(eps* - eps) . delta] and the cross term has mean 0.

    With 20k samples shared by both losses the cross term's noise is far below E||delta||^2
    for perturbation norms >= 0.1, so the exact predictor must have the lower loss.
    """
    g = torch.Generator().manual_seed(seed)
    n, d = 20_000, mix.dim
    a0 = mix.sample(n, g)
    state = torch.zeros(n, 1, dtype=torch.float64)
    t, eps = behavior.sample_dsm_noise(n, d, 1e-3, g, torch.device("cpu"), torch.float64)
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    shift = size * direction / direction.norm()
    slope = 0.3 * size * torch.randn(d, d, generator=g, dtype=torch.float64)
    zero = torch.zeros(d, dtype=torch.float64)
    exact = behavior.dsm_loss(_Predictor(mix, zero, 0 * slope), state, a0, t, eps).mean()
    perturbed = behavior.dsm_loss(_Predictor(mix, shift, slope), state, a0, t, eps).mean()
    assert exact < perturbed


def test_dsm_loss_of_exact_eps_matches_its_conditional_variance():
    """At the optimum, L = E||eps - E[eps|a_t]||^2 < d: a sanity value, not just an ordering."""
    mix = mixture.GaussianMixture(
        torch.tensor([1.0], dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        0.04 * torch.eye(2, dtype=torch.float64)[None],
    )
    g = torch.Generator().manual_seed(0)
    n = 50_000
    a0 = mix.sample(n, g)
    t = torch.full((n,), 0.5, dtype=torch.float64)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    loss = behavior.dsm_loss(lambda a, s, tt: mixture.exact_eps(mix, a, tt), None, a0, t, eps).mean()
    # Single Gaussian: Var(eps | a_t) = alpha^2 s^2 / (alpha^2 s^2 + sigma^2) per dimension.
    a2 = schedule.alpha(t[0]) ** 2 * 0.04
    expected = 2 * a2 / (a2 + schedule.sigma(t[0]) ** 2)
    assert abs(float(loss) - float(expected)) < 0.01


def test_score_from_eps_inverts_e5():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    sc = torch.randn(3, 2, dtype=torch.float64)
    eps = -schedule.sigma(t)[:, None] * sc
    assert torch.allclose(behavior.score_from_eps(eps, t), sc)
