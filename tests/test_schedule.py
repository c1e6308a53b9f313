"""VP schedule identities (E3) for arbitrary t."""

import math

import torch
from hypothesis import given, strategies as st

from srpo import schedule

times = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
open_times = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)


@given(times)
def test_alpha_sigma_on_unit_circle(t):
    tt = torch.tensor(t, dtype=torch.float64)
    assert torch.allclose(
        schedule.alpha(tt) ** 2 + schedule.sigma(tt) ** 2, torch.tensor(1.0, dtype=torch.float64)
    )


@given(times, times)
def test_monotone(t1, t2):
    lo, hi = sorted((t1, t2))
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    assert schedule.alpha(lo_t) >= schedule.alpha(hi_t)
    assert schedule.sigma(lo_t) <= schedule.sigma(hi_t)
    if hi - lo > 1e-6:
        assert schedule.log_snr(torch.clamp(lo_t, min=1e-6)) > schedule.log_snr(hi_t)


def test_endpoints():
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    assert schedule.alpha(zero) == 1.0 and schedule.sigma(zero) == 0.0
    # log alpha_1 = -(20 - 0.1)/4 - 0.1/2 = -5.025
    assert math.isclose(float(schedule.log_alpha(one)), -5.025, rel_tol=1e-12)
    assert float(schedule.sigma(one)) > 0.9999


@given(open_times)
def test_beta_is_minus_twice_dlogalpha(t):
    tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(schedule.log_alpha(tt), tt)
    assert torch.allclose(-2 * g, schedule.beta(tt.detach()))


@given(st.floats(min_value=1e-3, max_value=1.0))
def test_log_snr_inverse(t):
    tt = torch.tensor(t, dtype=torch.float64)
    assert torch.allclose(schedule.t_from_log_snr(schedule.log_snr(tt)), tt, atol=1e-9)


def test_sigma_precise_near_zero():
    # Naive sqrt(1 - alpha^2) loses all digits here; the expm1 form must not.
    t = torch.tensor(1e-9, dtype=torch.float32)
    expected = math.sqrt(2 * (0.1 * 1e-9 / 2))  # 1 - alpha^2 ~ -2 log alpha for tiny t
    assert math.isclose(float(schedule.sigma(t)), expected, rel_tol=1e-3)


@given(times)
def test_diffuse_matches_definition(t):
    a0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tt = torch.full((5,), t, dtype=torch.float64)
    expected = schedule.alpha(tt)[:, None] * a0 + schedule.sigma(tt)[:, None] * eps
    assert torch.allclose(schedule.diffuse(a0, tt, eps), expected)
