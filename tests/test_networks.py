"""The behavior model's Mish: torch's kernel eagerly, the one-exponential form under torch.compile."""

import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from srpo.networks import Mish, mish_one_exp

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


def _mish64(x: torch.Tensor) -> torch.Tensor:
    return F.mish(x.double())


@given(st.lists(finite, min_size=1, max_size=64))
def test_one_exp_mish_equals_mish_in_float32(values):
    x = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    y = mish_one_exp(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    x64 = x.detach().double().requires_grad_()
    y64 = _mish64(x64)
    (grad64,) = torch.autograd.grad(y64.sum(), x64)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y64, atol=1e-6, rtol=2e-6)
    torch.testing.assert_close(grad.double(), grad64, atol=1e-6, rtol=2e-6)


def test_one_exp_mish_rounds_bf16_once_like_torch():
    x = torch.linspace(-50, 50, 20001).to(torch.bfloat16)
    assert mish_one_exp(x).dtype == torch.bfloat16
    torch.testing.assert_close(mish_one_exp(x), F.mish(x), atol=0, rtol=2**-7)


def test_one_exp_mish_tails_are_finite_and_right():
    x = torch.tensor([-1e30, -100.0, -20.0, 0.0, 20.0, 100.0, 1e30, float("inf")], requires_grad=True)
    y = mish_one_exp(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y[:-1]).all() and torch.isfinite(grad).all()
    assert y[3] == 0 and y[4] == 20.0 and y[-1] == float("inf")
    assert grad[0] == 0 and grad[-2] == 1


def test_mish_module_is_torchs_kernel_when_eager():
    x = torch.randn(1000) * 10
    assert torch.equal(Mish()(x), F.mish(x))


def test_behavior_read_out_is_mish_then_linear_with_no_layernorm():
    # The authors' noise predictor ends its residual trunk with Mish -> Linear (method §5): with the
    # trunk's output h, eps = W mish(h) + b, where mish(x) = x tanh(softplus(x)).
    from srpo.behavior import NoisePredictor

    g = torch.Generator().manual_seed(0)
    model = NoisePredictor(state_dim=5, action_dim=3, generator=g).eval()
    a_t, s, t = torch.randn(4, 3, generator=g), torch.randn(4, 5, generator=g), torch.rand(4, generator=g)
    h = model.inp(torch.cat([a_t, s, model.time_embed(t)], dim=-1))
    for block in model.blocks:
        h = block(h, None)
    linear = model.out[-1]
    expected = (h * torch.tanh(F.softplus(h))) @ linear.weight.T + linear.bias
    assert torch.allclose(model(a_t, s, t), expected, atol=1e-6)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.out.modules())
