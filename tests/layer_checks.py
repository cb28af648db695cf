"""Shared checks for a layer: its backward against finite differences, and forward and backward
against the same PyTorch module, on every backend that has its kernels."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta import ops, plain
from maqueta.layers import Call
from test_layers import numeric_gradient


def backends_for(*kernel_names):
    """The backends to test a layer on: the oracle, the fast kernels and the plain loops, each of
    which has every kernel the layer names."""
    assert all(hasattr(k, name) for k in (ops, plain) for name in kernel_names), kernel_names
    return ["reference", "native", "plain"]


def run_layer(layer, x, training=True):
    """(y, call) from one forward of a layer that belongs to a float64 model of its own."""
    call = Call(layer, layer.index or 0, training)
    call.need_dx = True
    call.rng = layer._model.state.layer_rng if layer._model is not None else None
    return layer.forward(x, call), call


def check_gradients(layer, x, seed=0, training=True, rtol=1e-6):
    """Backward of a model-owned layer against central differences of sum(forward(x) * r)."""
    rng = np.random.default_rng(seed)
    y, call = run_layer(layer, x, training)
    r = rng.standard_normal(y.shape)
    rng_state = call.rng.bit_generator.state if call.rng is not None else None
    snapshot = {k: v.copy() for k, v in layer._buffers.items()}

    def loss():
        for k, v in snapshot.items():   # the same statistics and masks on every evaluation
            layer._buffers[k][...] = v
        if rng_state is not None:
            call.rng.bit_generator.state = rng_state
        out = run_layer(layer, x, training)[0]
        return float(np.sum(out * r))

    if rng_state is not None:
        call.rng.bit_generator.state = rng_state
        y, call = run_layer(layer, x, training)
    dx = layer.backward(r, call)
    grads = {k: v.copy() for k, v in call.grads.items()}
    scale = lambda a: max(1.0, float(np.abs(a).max()))
    numeric = numeric_gradient(loss, x)
    assert np.abs(dx - numeric).max() <= rtol * scale(numeric), "dx"
    for name, grad in grads.items():
        numeric = numeric_gradient(loss, getattr(layer, name))
        assert np.abs(grad - numeric).max() <= rtol * scale(numeric), name


def torch_or_skip():
    return pytest.importorskip("torch")


def model_of(*layers, dtype="float64", input_shape=None):
    return mq.Sequential(list(layers), seed=3, dtype=dtype, input_shape=input_shape)
