"""LeakyReLU, ELU and GELU (exact and tanh) against PyTorch and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from layer_checks import backends_for, check_gradients, model_of, run_layer, torch_or_skip

BACKENDS = backends_for("activation_forward", "activation_backward")

CASES = [
    (lambda: mq.LeakyReLU(), lambda t, F: F.leaky_relu(t, 0.01)),
    (lambda: mq.LeakyReLU(0.2), lambda t, F: F.leaky_relu(t, 0.2)),
    (lambda: mq.ELU(), lambda t, F: F.elu(t)),
    (lambda: mq.ELU(0.5), lambda t, F: F.elu(t, 0.5)),
    (lambda: mq.GELU(), lambda t, F: F.gelu(t)),
    (lambda: mq.GELU("tanh"), lambda t, F: F.gelu(t, approximate="tanh")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make,torch_fn", CASES, ids=lambda v: repr(v()) if v.__code__.co_argcount == 0 else None)
def test_matches_pytorch_and_finite_differences(make, torch_fn, dtype, backend):
    torch = torch_or_skip()
    layer = make()
    model_of(layer, dtype=dtype)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200) * 4, [0.0, -1e-3, 1e-3, -30.0, 30.0, -700.0]]).astype(dtype)
    x = x.reshape(2, -1)
    with mq.use_backend(backend):
        y, call = run_layer(layer, x)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch_fn(xt, torch.nn.functional)
        dy = rng.standard_normal(y.shape).astype(dtype)
        yt.backward(torch.from_numpy(dy))
        tol = 1e-12 if dtype == "float64" else 1e-5   # float32 tanh and exp near saturation differ by ulps
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(layer.backward(dy, call), xt.grad.numpy(), rtol=tol, atol=tol)
        assert y.dtype == x.dtype
        if dtype == "float64":
            check_gradients(layer, x[:, :50] + 0.01)


def test_configs_round_trip_and_bad_arguments():
    for layer in (mq.LeakyReLU(0.2), mq.ELU(0.5), mq.GELU("tanh")):
        assert type(layer)(**layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="approximate"):
        mq.GELU("fast")
    with pytest.raises(ValueError, match="negative_slope"):
        mq.LeakyReLU(float("nan"))
