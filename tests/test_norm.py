"""BatchNorm2D and BatchNorm1D: gradients, PyTorch's semantics step by step, state and files."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import maqueta as mq
from maqueta.layers.base import Call
from layer_checks import backends_for, check_gradients, model_of, run_layer, torch_or_skip

BACKENDS = backends_for("batchnorm_forward", "batchnorm_backward", "channel_affine")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,shape", [
    (lambda: mq.BatchNorm2D(3), (4, 3, 5, 2)),
    (lambda: mq.BatchNorm2D(2, affine=False), (3, 2, 3, 3)),
    (lambda: mq.BatchNorm1D(5), (6, 5)),
], ids=["2d", "2d-no-affine", "1d"])
def test_gradients_match_finite_differences(make, shape, backend):
    layer = make()
    model_of(layer)
    rng = np.random.default_rng(1)
    layer._params.get("weight", np.zeros(0))[...] = rng.uniform(0.5, 2, layer.num_features) if layer.affine else 0
    if layer.affine:
        layer.bias = rng.standard_normal(layer.num_features)
    with mq.use_backend(backend):
        check_gradients(layer, rng.standard_normal(shape) * 3 + 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rank,momentum", [(2, 0.1), (2, None), (1, 0.3)])
def test_matches_pytorch_in_training_and_evaluation(backend, rank, momentum):
    torch = torch_or_skip()
    C = 4
    shape = (6, C, 5, 3) if rank == 2 else (8, C)
    layer = (mq.BatchNorm2D if rank == 2 else mq.BatchNorm1D)(C, eps=1e-4, momentum=momentum)
    model = model_of(layer)
    net = (torch.nn.BatchNorm2d if rank == 2 else torch.nn.BatchNorm1d)(C, eps=1e-4, momentum=momentum).double()
    rng = np.random.default_rng(2)
    state = {"weight": rng.uniform(0.5, 2, C), "bias": rng.standard_normal(C)}
    layer.weight, layer.bias = state["weight"], state["bias"]
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert list(model.state_dict()) == [f"0.{k}" for k in net.state_dict()]
    with mq.use_backend(backend):
        for step in range(3):
            x = rng.standard_normal(shape) * (step + 1) + step
            y, call = run_layer(layer, x, training=True)
            xt = torch.tensor(x, requires_grad=True)
            yt = net.train()(xt)
            dy = rng.standard_normal(shape)
            yt.backward(torch.from_numpy(dy))
            dx = layer.backward(dy, call)
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(call.grads["weight"], net.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(call.grads["bias"], net.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
            net.zero_grad()
        for key, value in net.state_dict().items():
            np.testing.assert_allclose(model.state_dict()[f"0.{key}"], value.numpy(), rtol=1e-12, atol=0)
        x = rng.standard_normal(shape)
        y, _ = run_layer(layer, x, training=False)
        np.testing.assert_allclose(y, net.eval()(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_and_running_statistics_move_both_ways_with_pytorch(backend):
    torch = torch_or_skip()

    def build(seed):
        return mq.Sequential([mq.Conv2D(1, 3, 3), mq.BatchNorm2D(3), mq.ReLU(), mq.Flatten(), mq.Dense(12, 4),
                              mq.BatchNorm1D(4)], input_shape=(1, 4, 4), dtype="float64", seed=seed)

    model = build(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4)).double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 4, 4))
    with mq.use_backend(backend):
        model.fit(rng.standard_normal((16, 1, 4, 4)), np.arange(16) % 4, epochs=2, batch_size=8, verbose=0)
        assert model.state_dict()["1.num_batches_tracked"] == 4
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})
        expected = net.eval()(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(model(x), expected, rtol=1e-10, atol=1e-12)
        other = build(9)
        other.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
        np.testing.assert_array_equal(other(x), model(x))


class ThreadSum:
    """An in-place sum over threads, each standing for one process of data-parallel training
    (Call.allreduce): every part adds the arrays in the same order, so all get the same sums."""

    def __init__(self, parts):
        self.barrier, self.arrays = threading.Barrier(parts), [None] * parts

    def for_part(self, k):
        def allreduce(array):
            self.arrays[k] = array.copy()
            self.barrier.wait()
            total = sum(self.arrays[1:], self.arrays[0].copy())
            self.barrier.wait()
            array[...] = total
        return allreduce


def in_threads(function, reduce):
    """[function(k) for each part k], each in its own thread; the first error is raised."""
    parts = len(reduce.arrays)
    results, errors = [None] * parts, []

    def run(k):
        try:
            results[k] = function(k, reduce.for_part(k))
        except BaseException as error:   # noqa: BLE001 - raised below
            errors.append(error)
            reduce.barrier.abort()   # the other parts stop waiting for this one

    threads = [threading.Thread(target=run, args=(k,)) for k in range(parts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make,shape", [
    (lambda: mq.BatchNorm2D(3, momentum=None), (7, 3, 4, 2)),
    (lambda: mq.BatchNorm2D(2, affine=False), (7, 2, 3, 3)),
    (lambda: mq.BatchNorm1D(5), (7, 5)),
], ids=["2d", "2d-no-affine", "1d"])
def test_synchronised_statistics_over_slices_are_those_of_the_whole_batch(make, shape, dtype, relu):
    """A batch split into slices (one empty) whose sums are reduced over the slices, as in
    data-parallel training: outputs, running statistics, dx and the summed parameter gradients
    are those of the whole batch through the fused kernels, to rounding. relu: with a ReLU after
    it whose gradient the batch norm applies (its epilogue)."""
    rng = np.random.default_rng(4)
    x, dy = (rng.standard_normal(shape) * 3 + 2).astype(dtype), rng.standard_normal(shape).astype(dtype)
    bounds = [(0, 3), (3, 3), (3, 7)]

    def layer_of():
        layer = make()
        model_of(layer, dtype=dtype)
        if layer.affine:
            layer.weight, layer.bias = np.linspace(0.5, 2, layer.num_features), np.linspace(-1, 1, layer.num_features)
        return layer

    def train(layer, lo, hi, allreduce=None):
        call = Call(layer, 0, True)
        call.need_dx, call.allreduce, call.batch_offset = True, allreduce, lo
        call.epilogue = ("relu", 0.0) if relu else None
        for _ in range(2):   # two steps: the running statistics move twice
            y = layer.forward(x[lo:hi], call).copy()
            dx = layer.backward(dy[lo:hi], call).copy()
        return y, dx, {k: v.copy() for k, v in layer._grads.items()}, {k: v.copy() for k, v in layer._buffers.items()}

    whole = layer_of()
    y, dx, grads, buffers = train(whole, 0, len(x))
    assert (y.min() == 0) == relu
    parts = in_threads(lambda k, allreduce: train(layer_of(), *bounds[k], allreduce), ThreadSum(len(bounds)))
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), y, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), dx, rtol=tol, atol=tol)
    for name in grads:
        np.testing.assert_allclose(sum(p[2][name] for p in parts), grads[name], rtol=tol, atol=tol)
    for _, _, _, theirs in parts:
        assert theirs["num_batches_tracked"] == buffers["num_batches_tracked"] == 2
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(theirs[name], buffers[name], rtol=tol, atol=0)
            np.testing.assert_array_equal(theirs[name], parts[0][3][name])   # every part alike, bit for bit


def test_synchronised_statistics_refuse_a_global_batch_of_one_value():
    layer = mq.BatchNorm1D(3)
    model_of(layer)
    call = Call(layer, 0, True)
    call.allreduce = lambda array: None   # one process of one
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.forward(np.ones((1, 3)), call)


def test_refuses_what_pytorch_refuses_and_bad_arguments():
    layer = mq.BatchNorm1D(3)
    model_of(layer)
    with pytest.raises(ValueError, match="more than one value per channel"):
        run_layer(layer, np.ones((1, 3)), training=True)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3\)"):
        mq.Sequential([mq.Dense(2, 4), mq.BatchNorm1D(3)])
    with pytest.raises(ValueError, match="momentum must be in"):
        mq.BatchNorm2D(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps must be > 0"):
        mq.BatchNorm2D(3, eps=0)
    with pytest.raises(TypeError, match="num_features"):
        mq.BatchNorm2D(2.5)
