"""AvgPool2D, GlobalAvgPool2D and padded MaxPool2D against finite differences and PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from layer_checks import backends_for, check_gradients, model_of, run_layer, torch_or_skip

AVG_BACKENDS = backends_for("avgpool2d_forward", "avgpool2d_backward")


def torch_pair(layer, torch):
    F = torch.nn.functional
    if isinstance(layer, mq.AvgPool2D):
        return lambda t: F.avg_pool2d(t, layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, mq.MaxPool2D):
        return lambda t: F.max_pool2d(t, layer.kernel_size, layer.stride, layer.padding)
    return lambda t: t.mean(dim=(2, 3))


CASES = [
    (lambda: mq.AvgPool2D(2), (2, 3, 6, 4), AVG_BACKENDS),
    (lambda: mq.AvgPool2D(3, stride=2, padding=1), (2, 2, 7, 6), AVG_BACKENDS),
    (lambda: mq.AvgPool2D((2, 3), stride=1), (1, 2, 5, 5), AVG_BACKENDS),
    (lambda: mq.GlobalAvgPool2D(), (3, 4, 5, 2), AVG_BACKENDS),
    (lambda: mq.MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 6), ["reference", "native"]),
    (lambda: mq.MaxPool2D(2, padding=1), (2, 3, 5, 5), ["reference", "native"]),
]


@pytest.mark.parametrize("make,shape,backends", CASES, ids=lambda v: repr(v()) if callable(v) else None)
def test_forward_and_backward_match_pytorch_and_finite_differences(make, shape, backends):
    torch = torch_or_skip()
    for backend in backends:
        layer = make()
        model_of(layer)
        rng = np.random.default_rng(0)
        x = rng.permutation(np.linspace(-3, 3, int(np.prod(shape)))).reshape(shape)   # no ties
        with mq.use_backend(backend):
            y, call = run_layer(layer, x)
            xt = torch.tensor(x, requires_grad=True)
            yt = torch_pair(layer, torch)(xt)
            dy = rng.standard_normal(y.shape)
            yt.backward(torch.from_numpy(dy))
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(layer.backward(dy, call), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
            check_gradients(layer, x)


def test_shapes_and_errors():
    model = mq.Sequential([mq.Conv2D(1, 4, 3, padding=1), mq.AvgPool2D(2), mq.MaxPool2D(3, 2, padding=1),
                           mq.GlobalAvgPool2D(), mq.Dense(4, 2)], input_shape=(1, 8, 8))
    assert [s for s in model.layer_shapes((1, 8, 8))] == [(4, 8, 8), (4, 4, 4), (4, 2, 2), (4,), (2,)]
    assert repr(model.layers[2]) == "MaxPool2D(3, stride=(2, 2), padding=(1, 1))"
    with pytest.raises(ValueError, match="padding .* at most half the kernel_size"):
        mq.AvgPool2D(2, padding=2)
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D\(\)\) expects input of shape \(N, C, H, W\)"):
        mq.Sequential([mq.Dense(3, 3), mq.GlobalAvgPool2D()])
    assert not mq.MaxPool2D(2, padding=1).lane_pool2x2
