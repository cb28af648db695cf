"""Conv2D(padding="same" | "valid" | int | pair): Keras's "same" for any stride, asymmetric where
the kernel or the stride make it so, against PyTorch and finite differences."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import maqueta as mq
from layer_checks import check_gradients, model_of, run_layer, torch_or_skip


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kernel,stride,size", [(3, 1, (7, 6)), (4, 1, (6, 5)), (3, 2, (7, 8)), (2, 2, (5, 5)),
                                                (5, 3, (9, 7)), ((2, 3), (1, 2), (6, 7))])
def test_same_padding_matches_keras_rule_and_pytorch(kernel, stride, size, backend):
    torch = torch_or_skip()
    F = torch.nn.functional
    layer = mq.Conv2D(2, 3, kernel, stride=stride, padding="same")
    model_of(layer, input_shape=(2, *size))
    sh, sw = layer.stride
    assert model_of(mq.Conv2D(2, 3, kernel, stride=stride, padding="same")).layer_shapes((2, *size))[0] == \
        (3, -(-size[0] // sh), -(-size[1] // sw))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, *size))
    top, bottom, left, right = layer.pads(*size)
    with mq.use_backend(backend):
        y, call = run_layer(layer, x)
        xt = torch.tensor(x, requires_grad=True)
        yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), torch.from_numpy(layer.weight),
                      torch.from_numpy(layer.bias), stride=layer.stride)
        if layer.stride == (1, 1):   # PyTorch's own padding="same" agrees
            with warnings.catch_warnings():   # even kernels: "may require a zero-padded copy"
                warnings.simplefilter("ignore", UserWarning)
                same = F.conv2d(xt, torch.from_numpy(layer.weight), torch.from_numpy(layer.bias), padding="same")
            np.testing.assert_allclose(same.detach().numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.backward(dy, call), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        check_gradients(layer, x)


def test_padding_forms_and_config():
    assert mq.Conv2D(1, 2, 3, padding="valid").padding == (0, 0)
    layer = mq.Conv2D(1, 2, 3, padding="same")
    assert layer.get_config()["padding"] == "same" and repr(layer) == "Conv2D(1, 2, kernel_size=3, padding='same')"
    assert mq.Conv2D(**layer.get_config()).pads(10, 10) == (1, 1, 1, 1)
    assert not layer.has_lane_kernel()
    with pytest.raises(ValueError, match="padding must be 'same', 'valid'"):
        mq.Conv2D(1, 2, 3, padding="full")


def test_same_padding_trains_in_a_model(tmp_path):
    rng = np.random.default_rng(0)
    model = mq.Sequential([mq.Conv2D(1, 4, 4, padding="same"), mq.ReLU(), mq.MaxPool2D(2), mq.Flatten(),
                           mq.Dense(64, 3)], input_shape=(1, 8, 8), dtype="float64")
    model.fit(rng.standard_normal((32, 1, 8, 8)), np.arange(32) % 3, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.maq")
    np.testing.assert_array_equal(mq.load(tmp_path / "m.maq").predict_proba(np.ones((2, 1, 8, 8))),
                                  model.predict_proba(np.ones((2, 1, 8, 8))))
