"""The kernels against PyTorch's own (skipped when PyTorch is not installed)."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import ops
from conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.usefixtures("threads")

CONV_SHAPES = [
    (8, 1, 32, 32, 6, 5, 5, 1, 0), (8, 6, 14, 14, 16, 5, 5, 1, 0), (2, 3, 13, 8, 5, 3, 2, 1, 0),
    (2, 2, 11, 9, 3, 3, 3, 2, 0), (2, 3, 8, 8, 4, 3, 3, 1, 1), (2, 2, 7, 9, 3, 5, 5, 1, 2),
    (2, 4, 9, 10, 7, 3, 3, (2, 1), (1, 2)), (4, 32, 8, 8, 64, 3, 3, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv2d_matches_torch(shape, dtype, rng):
    N, C, H, W, O, KH, KW, stride, padding = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    y = ops.conv2d_forward(x, w, b, stride, padding)
    assert_close(y, yt.detach().numpy(), dtype, what="y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.from_numpy(dy))
    dx, dw, db = ops.conv2d_backward(dy, x, w, stride, padding)
    assert_close(dx, xt.grad.numpy(), dtype, what="dx")
    assert_close(dw, wt.grad.numpy(), dtype, what="dw")
    assert_close(db, bt.grad.numpy(), dtype, what="db")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [((8, 6, 28, 28), 2, None), ((8, 16, 10, 10), 2, None), ((2, 3, 9, 7), 3, 2),
                                  ((2, 2, 8, 11), (2, 3), (1, 2)), ((2, 3, 7, 9), 2, None)], ids=str)
def test_maxpool2d_matches_torch(case, dtype, rng):
    shape, kernel, stride = case
    x = rng.standard_normal(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, kernel, stride, return_indices=True)
    y, idx = ops.maxpool2d_forward(x, kernel, stride)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    dy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.from_numpy(dy))
    assert_close(ops.maxpool2d_backward(dy, idx, shape), xt.grad.numpy(), dtype)


def test_maxpool2d_ties_match_torch():
    x = np.random.default_rng(1).integers(0, 2, (2, 3, 8, 8)).astype(np.float32)
    y, idx = ops.maxpool2d_forward(x, 2)
    yt, it = F.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx, it.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_matches_torch(dtype, rng):
    x = rng.standard_normal((32, 400)).astype(dtype)
    w = rng.standard_normal((120, 400)).astype(dtype)
    b = rng.standard_normal(120).astype(dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = F.linear(xt, wt, bt)
    assert_close(ops.linear_forward(x, w, b), yt.detach().numpy(), dtype)
    dy = rng.standard_normal((32, 120)).astype(dtype)
    yt.backward(torch.from_numpy(dy))
    for got, want in zip(ops.linear_backward(dy, x, w), (xt.grad, wt.grad, bt.grad)):
        assert_close(got, want.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("settings", [dict(lr=1e-3), dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)],
                         ids=["defaults", "custom"])
def test_adam_matches_torch(settings, dtype, rng):
    p = rng.standard_normal(5000).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    pt = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.Adam([pt], **settings)
    beta1, beta2 = settings.get("betas", (0.9, 0.999))
    for step in range(1, 11):
        g = rng.standard_normal(p.shape).astype(dtype)
        pt.grad = torch.from_numpy(g.copy())
        opt.step()
        ops.adam_update(p, g, m, v, step, lr=settings["lr"], beta1=beta1, beta2=beta2,
                        eps=settings.get("eps", 1e-8), weight_decay=settings.get("weight_decay", 0.0))
        state = opt.state[pt]
        # float32: the same operations in the same order; FMA contraction may round differently,
        # by an ulp or so per step.
        tol = 1e-12 if dtype == np.float64 else 1e-5
        assert_close(p, pt.detach().numpy(), dtype, rtol=tol, what=f"param, step {step}")
        assert_close(m, state["exp_avg"].numpy(), dtype, rtol=tol, what="exp_avg")
        assert_close(v, state["exp_avg_sq"].numpy(), dtype, rtol=tol, what="exp_avg_sq")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-3), (0.9, True, 0.0)])
def test_sgd_matches_torch(momentum, nesterov, wd, dtype, rng):
    p = rng.standard_normal(3000).astype(dtype)
    vel = np.zeros_like(p)
    pt = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.SGD([pt], lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    for _ in range(8):
        g = rng.standard_normal(p.shape).astype(dtype)
        pt.grad = torch.from_numpy(g.copy())
        opt.step()
        ops.sgd_update(p, g, vel, 0.05, momentum, wd, nesterov)
        assert_close(p, pt.detach().numpy(), dtype, rtol=1e-12 if dtype == np.float64 else 1e-5)
