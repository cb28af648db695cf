"""The executor: which layers fuse, which run in lanes, and that every fused path trains exactly
(or to rounding) as separate layers do."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta.executor import Executor
from test_layers import numeric_gradient


def summary(model):
    return [(model.layers[s.index].__class__.__name__, s.relu, s.relu_input) for s in model.executor.plan.steps]


def epilogues(model):
    return [s.epilogue for s in model.executor.plan.steps]


def test_lenet5_plan():
    assert summary(mq.models.lenet5()) == [
        ("Conv2D", True, False), ("MaxPool2D", False, True), ("Conv2D", True, False), ("MaxPool2D", False, True),
        ("Flatten", False, False), ("Dense", True, False), ("Dense", True, True), ("Dense", False, True)]


RELU = ("relu", 0.0)


@pytest.mark.parametrize("layers,shape,expected,own", [
    # the ReLU's consumer cannot apply its gradient: the layer before it does, from its output
    ([mq.Dense(4, 5), mq.ReLU(), mq.Sigmoid(), mq.Dense(5, 3)], (4,),
     [("Dense", False, False), ("Sigmoid", False, False), ("Dense", False, False)], [RELU, None, None]),
    ([mq.Dense(4, 3), mq.ReLU()], (4,), [("Dense", False, False)], [RELU]),
    ([mq.Conv2D(1, 2, 3), mq.ReLU(), mq.GlobalAvgPool2D(), mq.Dense(2, 3)], (1, 6, 6),
     [("Conv2D", False, False), ("GlobalAvgPool2D", False, False), ("Dense", False, False)], [RELU, None, None]),
    # through a Flatten into a Dense
    ([mq.Conv2D(1, 2, 3), mq.ReLU(), mq.Flatten(), mq.Dense(32, 3)], (1, 6, 6),
     [("Conv2D", True, False), ("Flatten", False, False), ("Dense", False, True)], [None] * 3),
    # a ReLU after a ReLU or a pool: nothing before it can apply it, so it stays a layer
    ([mq.Conv2D(1, 2, 3), mq.ReLU(), mq.Conv2D(2, 2, 3), mq.ReLU(), mq.ReLU(), mq.Flatten(), mq.Dense(8, 3)],
     (1, 6, 6), [("Conv2D", True, False), ("Conv2D", False, True), ("ReLU", False, False), ("Flatten", False, False),
                 ("Dense", False, False)], [None, RELU, None, None, None]),
    ([mq.MaxPool2D(2), mq.ReLU(), mq.Flatten(), mq.Dense(16, 3)], (1, 8, 8),
     [("MaxPool2D", False, False), ("ReLU", False, False), ("Flatten", False, False), ("Dense", False, False)],
     [None] * 4),
])
def test_fusion_and_where_the_relus_gradient_goes(layers, shape, expected, own):
    model = mq.Sequential(layers, input_shape=shape)
    assert summary(model) == expected
    assert epilogues(model) == own


def replan(model, **options):
    model.executor = Executor(model, **options)
    return model


def unfused(model):
    return replan(model, fuse=False, lanes=False)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_fused_training_equals_separate_layers(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    fused, plain = replan(mq.models.lenet5(seed=1), lanes=False), unfused(mq.models.lenet5(seed=1))
    assert all(not s.relu for s in plain.executor.plan.steps)
    with mq.use_backend(backend):
        for model in (fused, plain):
            model.fit(X, y, epochs=2, batch_size=8, verbose=0, optimizer=mq.Adam(1e-2))
    np.testing.assert_array_equal(fused.get_flat_parameters(), plain.get_flat_parameters())
    np.testing.assert_array_equal(fused.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("backend", ["native", "plain", "reference"])
def test_relus_applied_from_the_output_train_as_separate_layers(backend):
    """Conv2D -> ReLU -> GlobalAvgPool2D and Dense -> ReLU -> Dropout: the ReLU in the kernel and
    its gradient in the same layer's backward, bit for bit as the layers apart."""
    def net():
        return mq.Sequential([mq.Conv2D(2, 4, 3, padding=1), mq.ReLU(), mq.Conv2D(4, 6, 3, stride=2), mq.ReLU(),
                              mq.GlobalAvgPool2D(), mq.Dense(6, 5), mq.ReLU(), mq.Dropout(0.3), mq.Dense(5, 3)],
                             seed=4, input_shape=(2, 9, 9))
    fused, apart = replan(net(), lanes=False), unfused(net())
    assert epilogues(fused) == [None, RELU, None, RELU, None, None]
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((10, 2, 9, 9)).astype(np.float32), rng.integers(0, 3, 10)
    with mq.use_backend(backend):
        for model in (fused, apart):
            model.fit(X, y, epochs=2, batch_size=4, verbose=0, optimizer=mq.Adam(1e-2))
    np.testing.assert_array_equal(fused.get_flat_parameters(), apart.get_flat_parameters())
    np.testing.assert_array_equal(fused.predict_proba(X), apart.predict_proba(X))


def make_fd_models():
    return [
        mq.models.lenet5(dtype="float64", seed=2),
        mq.Sequential([mq.Conv2D(1, 3, 3, padding=1), mq.ReLU(), mq.Conv2D(3, 2, 3, stride=2), mq.ReLU(),
                       mq.Flatten(), mq.Dense(2 * 4 * 4, 5), mq.ReLU(), mq.Dense(5, 3)], dtype="float64", seed=1,
                      input_shape=(1, 10, 10)),
        mq.Sequential([mq.Flatten(), mq.Dense(64, 6), mq.ReLU(), mq.Sigmoid(), mq.Dense(6, 4), mq.Tanh(),
                       mq.Dense(4, 3)], dtype="float64", seed=1, input_shape=(1, 8, 8)),
        # the last ReLU's gradient in the batch norm before it (the pool cannot apply it)
        mq.Sequential([mq.Conv2D(3, 4, 3, padding=1, bias=False), mq.BatchNorm2D(4), mq.ReLU(),
                       mq.Conv2D(4, 6, 3, stride=2, padding=1, bias=False), mq.BatchNorm2D(6), mq.ReLU(),
                       mq.GlobalAvgPool2D(), mq.Dense(6, 3)], dtype="float64", seed=2, input_shape=(3, 8, 8)),
    ]


@pytest.mark.parametrize("index,batch", [(0, 4), (0, 9), (1, 4), (2, 4), (3, 4)],
                         ids=["lenet5", "lenet5-lanes", "conv-relu-conv", "relu-sigmoid", "bn-relu-gap"])
def test_fused_gradients_match_finite_differences(index, batch):
    """The model's own training path (fusion, and with 9 images the float64 lane blocks: one full,
    one partial) against central differences of its loss."""
    model = make_fd_models()[index]
    rng = np.random.default_rng(0)
    x = rng.random((batch, *model.input_shape))
    targets = rng.integers(0, 3, batch)
    if batch >= 8 and mq.build_info()["isa"] == "avx512":
        model.executor.gradients(x, targets, mq.losses.cross_entropy)
        assert model.executor.training_run(batch).lanes is not None
    model.executor.gradients(x, targets, mq.losses.cross_entropy)
    analytic = model.state.grads.copy()
    model.train()   # the loss through the batch statistics, as the gradients (and the running ones are not read)
    params = model.get_flat_parameters()
    coords = rng.choice(params.size, size=min(40, params.size), replace=False)
    numeric = numeric_gradient(lambda: mq.losses.cross_entropy(model.forward(x), targets)[0], params, h=1e-5,
                               coords=[(int(c),) for c in coords])
    for c in coords:
        assert abs(analytic[c] - numeric[c]) <= 1e-7 + 1e-5 * abs(numeric[c]), (c, analytic[c], numeric[c])


def test_lenet5_lane_segment():
    assert mq.models.lenet5().executor.plan.lane_steps == 4   # conv1, pool1, conv2, pool2
    padded = mq.Sequential([mq.Conv2D(1, 4, 3, padding=1), mq.ReLU(), mq.MaxPool2D(2), mq.Flatten(), mq.Dense(64, 3)])
    assert padded.executor.plan.lane_steps == 2               # the first layer's padding goes on as it is packed
    assert padded.executor.plan.lane_input_pads == (1, 1, 1, 1)
    second = mq.Sequential([mq.Conv2D(1, 4, 3), mq.ReLU(), mq.Conv2D(4, 4, 3, padding=1), mq.Flatten(),
                            mq.Dense(4 * 36, 3)])
    assert second.executor.plan.lane_steps == 1               # a later padded conv: the NCHW kernels from there
    strided = mq.Sequential([mq.Conv2D(1, 4, 3, stride=2, padding=1), mq.Flatten(), mq.Dense(64, 3)])
    assert strided.executor.plan.lane_steps == 0
    alone = mq.Sequential([mq.Conv2D(3, 8, 3, padding=1), mq.ReLU(), mq.Conv2D(8, 8, 3, padding=1), mq.Flatten(),
                           mq.Dense(8 * 64, 3)])
    assert alone.executor.plan.lane_steps == 0                # a padded first conv alone does not pay for packing
    assert mq.Sequential([mq.MaxPool2D(2), mq.Flatten(), mq.Dense(16, 2)]).executor.plan.lane_steps == 0   # no conv


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lane_segment_trains_like_the_nchw_kernels(dtype, threads):
    """The same training with the conv segment in the batch-lane layout and without: equal to
    rounding (the sums run in another order), and predictions too."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((70, 1, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, 70)
    lanes, nchw = mq.models.lenet5(seed=2, dtype=dtype), replan(mq.models.lenet5(seed=2, dtype=dtype), lanes=False)
    for model in (lanes, nchw):
        model.fit(X, y, epochs=2, batch_size=32, verbose=0, optimizer=mq.SGD(0.05, momentum=0.9))
    assert lanes.executor.training_runs[32].lanes is not None and nchw.executor.training_runs[32].lanes is None
    rtol = 1e-10 if dtype == "float64" else 2e-4
    a, b = lanes.get_flat_parameters(), nchw.get_flat_parameters()
    assert np.abs(a - b).max() <= rtol * np.abs(b).max()
    np.testing.assert_allclose(lanes.predict_proba(X), nchw.predict_proba(X), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("padding", [2, "same", (1, 0)], ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_padded_first_conv_in_lanes_trains_like_the_nchw_kernels(dtype, padding, threads):
    """A padded first convolution runs in lanes on the input padded as it is packed: the same
    training as the NCHW kernels to rounding, predictions too, in batches that leave the last
    vector part empty. "same" with a 4x4 kernel pads one more row and column after the image
    than before it."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((70, 1, 12, 12)).astype(dtype)
    y = rng.integers(0, 10, 70)

    def net():
        k = 4 if padding == "same" else 3
        features = {2: 8 * 5 * 5, "same": 8 * 4 * 4, (1, 0): 8 * 4 * 3}[padding]
        return mq.Sequential([mq.Conv2D(1, 6, k, padding=padding), mq.ReLU(), mq.MaxPool2D(2), mq.Conv2D(6, 8, 3),
                              mq.ReLU(), mq.Flatten(), mq.Dense(features, 10)], dtype=dtype, seed=7,
                             input_shape=(1, 12, 12))

    lanes, nchw = net(), replan(net(), lanes=False)
    for model in (lanes, nchw):
        model.fit(X, y, epochs=2, batch_size=24, verbose=0, optimizer=mq.SGD(0.05, momentum=0.9))
    if mq.build_info()["isa"] == "avx512":   # batches of 24 and 22: two vectors of 16 floats, the last part full
        assert lanes.executor.training_runs[24].lanes.padded is not None
    assert nchw.executor.training_runs[24].lanes is None
    rtol = 1e-10 if dtype == "float64" else 2e-4
    a, b = lanes.get_flat_parameters(), nchw.get_flat_parameters()
    assert np.abs(a - b).max() <= rtol * np.abs(b).max()
    np.testing.assert_allclose(lanes.predict_proba(X), nchw.predict_proba(X), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pools_inside_convolutions_train_like_separate_pools(dtype, threads):
    """LeNet-5's conv -> pool pairs run as one kernel each way; the same training with every
    pool as its own kernel ends equal to rounding (dw and db are summed block by block)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((70, 1, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, 70)
    fused = mq.models.lenet5(seed=5, dtype=dtype)
    fused.fit(X, y, epochs=2, batch_size=32, verbose=0, optimizer=mq.Adam(1e-3))
    separate = replan(mq.models.lenet5(seed=5, dtype=dtype), fuse_pools=False)
    separate.fit(X, y, epochs=2, batch_size=32, verbose=0, optimizer=mq.Adam(1e-3))
    assert [s.absorbs for s in fused.executor.plan.steps[:4]] == [True, False, True, False]
    assert [s.absorbs for s in separate.executor.plan.steps[:4]] == [False] * 4
    fused_lanes, separate_lanes = fused.executor.training_runs[32].lanes, separate.executor.training_runs[32].lanes
    assert [type(c.layer).__name__ for c in fused_lanes.calls] == ["Conv2D", "Conv2D"]
    assert [type(c.layer).__name__ for c in separate_lanes.calls] == ["Conv2D", "MaxPool2D"] * 2
    assert [c.out is None for c in fused_lanes.calls] == [True, True]   # never stored at full size
    rtol = 1e-10 if dtype == "float64" else 2e-4
    a, b = fused.get_flat_parameters(), separate.get_flat_parameters()
    assert np.abs(a - b).max() <= rtol * np.abs(b).max()
    np.testing.assert_allclose(fused.predict_proba(X), separate.predict_proba(X), rtol=rtol, atol=rtol)


def test_evaluation_calls_reuse_a_run_per_thread_and_keep_no_activations():
    model = mq.models.lenet5(seed=0)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    Z = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    first = model(X)
    want = first.copy()
    kept = model.executor._kept.run[1]
    assert all(call.cache is None for call in kept.all_calls)   # nothing of the call stays behind
    other = model(Z)
    assert model.executor._kept.run[1] is kept and other is not first
    np.testing.assert_array_equal(first, want)                   # a later call writes elsewhere
    np.testing.assert_array_equal(model(X), want)
    model(X[:1])                                                 # another batch size: another Run
    assert model.executor._kept.run[1] is not kept
    model.train()                                                # training mode keeps none
    model(X)
    assert model.executor._kept.run[0] == (1, (1, 32, 32))
    model.eval()

    import threading
    inputs = [rng.standard_normal((3, 1, 32, 32)).astype(np.float32) for _ in range(4)]
    expected = [model(x).copy() for x in inputs]
    errors = []

    def predict(k):
        try:
            for _ in range(30):
                np.testing.assert_array_equal(model(inputs[k]), expected[k])
        except AssertionError as error:
            errors.append(error)
    threads = [threading.Thread(target=predict, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
