"""In evaluation mode a BatchNorm2D after a Conv2D runs inside the convolution: its scale multiplies
each filter's weights as the kernel packs them (``weight_scale``) and its shift joins the bias.
The kernels against the oracle on every tier, ISA and algorithm; the plans that fold and those that
must not; models with folding against the same models without it, against PyTorch, and with
statistics changed between calls (nothing is cached)."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from conftest import RTOL, assert_close
from maqueta import ops, plain, reference
from maqueta.executor import Executor

TIERS = [ops, plain]
TIER_IDS = ["native", "plain"]
SHAPES = [  # N, C, O, H, W, kernel, stride, padding
    (2, 3, 5, 9, 9, 3, 1, 1), (3, 4, 17, 8, 11, 3, 2, 1), (1, 16, 32, 14, 14, 3, 2, 1),
    (4, 1, 6, 28, 28, 5, 1, 2), (2, 8, 33, 7, 7, 1, 1, 0), (5, 32, 16, 6, 5, 3, 1, 0), (1, 2, 3, 1, 1, 1, 1, 0),
    (1, 32, 64, 16, 16, 3, 1, 1)]   # one image, work enough for bands of rows: a team packs the weights


def case(shape, dtype, seed=0):
    N, C, O, H, W, k, _, _ = shape
    rng = np.random.default_rng(seed + sum(shape))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, k, k)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    scale = (rng.standard_normal(O) * 2).astype(dtype)
    return x, w, b, scale


@pytest.mark.parametrize("tier", TIERS, ids=TIER_IDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_scale_matches_the_oracle(tier, shape, dtype, each_isa, each_conv_algo):
    x, w, b, scale = case(shape, dtype)
    stride, padding = shape[6], shape[7]
    for bias, relu in ((b, True), (None, False)):
        expected = reference.conv2d_forward(x, w, bias, stride, padding, relu=relu, weight_scale=scale)
        terms = reference.conv2d_forward(np.abs(x), np.abs(w), None if bias is None else np.abs(bias), stride,
                                         padding, weight_scale=np.abs(scale))   # what rounding is measured on
        got = tier.conv2d_forward(x, w, bias, stride, padding, relu=relu, weight_scale=scale)
        assert_close(got, expected, scale=float(terms.max()), what=f"{tier.__name__} bias={bias is not None}")
        # the oracle's own meaning: the scaled filters, rounded to the dtype, then the convolution
        scaled = (w * scale[:, None, None, None]).astype(dtype)
        assert_close(got, reference.conv2d_forward(x, scaled, bias, stride, padding, relu=relu),
                     scale=float(terms.max()))


@pytest.mark.parametrize("tier", TIERS, ids=TIER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_scale_of_one_changes_no_bit(tier, dtype, each_conv_algo):
    for shape in SHAPES:
        x, w, b, _ = case(shape, dtype)
        ones = np.ones(w.shape[0], dtype)
        np.testing.assert_array_equal(tier.conv2d_forward(x, w, b, shape[6], shape[7], weight_scale=ones),
                                      tier.conv2d_forward(x, w, b, shape[6], shape[7]))


def test_the_native_fold_equals_prescaled_weights_bit_for_bit(each_conv_algo):
    """The kernel rounds w * scale once, as NumPy does, and then runs the same convolution."""
    for shape in SHAPES:
        x, w, b, scale = case(shape, np.float32)
        scaled = w * scale[:, None, None, None]
        np.testing.assert_array_equal(ops.conv2d_forward(x, w, b, shape[6], shape[7], weight_scale=scale),
                                      ops.conv2d_forward(x, scaled, b, shape[6], shape[7]))


@pytest.mark.parametrize("tier", TIERS, ids=TIER_IDS)
def test_bad_weight_scales_are_refused_by_name(tier):
    x, w = np.ones((1, 3, 5, 5), np.float32), np.ones((4, 3, 3, 3), np.float32)
    for bad, error, words in [(np.ones(5, np.float32), ValueError, "weight_scale must have shape (4,)"),
                              (np.ones((4, 1), np.float32), ValueError, "weight_scale must have shape (4,)"),
                              (np.ones(4, np.float64), TypeError, "weight_scale has dtype float64"),
                              ("scale", (TypeError, ValueError), "weight_scale")]:
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
            tier.conv2d_forward(x, w, weight_scale=bad)
    out = np.empty((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="out"):   # an output may not share memory with an input
        tier.conv2d_forward(x, w, weight_scale=out.reshape(-1)[:4], out=out)


def steps(model, inference=True):
    plan = model.executor.inference_plan if inference else model.executor.plan
    return [(type(model.layers[s.index]).__name__, s.relu, s.folds) for s in plan.steps]


def test_the_inference_plan_folds_each_batch_norm_into_its_convolution():
    model = mq.Sequential([mq.Conv2D(3, 4, 3, padding=1, bias=False), mq.BatchNorm2D(4), mq.ReLU(),
                           mq.Conv2D(4, 4, 3, stride=2, padding=1), mq.BatchNorm2D(4),
                           mq.ReLU(), mq.GlobalAvgPool2D(), mq.Dense(4, 2)], input_shape=(3, 8, 8))
    assert steps(model) == [("Conv2D", True, 1), ("Conv2D", True, 4), ("GlobalAvgPool2D", False, None),
                            ("Dense", False, None)]
    # training keeps both layers (batch statistics); the pooling cannot mask the last ReLU's gradient,
    # so the batch norm before it applies that gradient itself (its epilogue)
    assert steps(model, inference=False) == [
        ("Conv2D", False, None), ("BatchNorm2D", True, None), ("Conv2D", False, None), ("BatchNorm2D", False, None),
        ("GlobalAvgPool2D", False, None), ("Dense", False, None)]
    model.executor = Executor(model, fold=False)
    assert [s[2] for s in steps(model)] == [None] * 6


@pytest.mark.parametrize("layers", [
    # a batch norm after something else, or not right after the convolution, stays a layer
    lambda: [mq.Flatten(), mq.Dense(12, 4), mq.BatchNorm1D(4), mq.Dense(4, 2)],
    lambda: [mq.Conv2D(3, 4, 3), mq.ReLU(), mq.BatchNorm2D(4), mq.Flatten(), mq.Dense(4 * 4 * 4, 2)],
    lambda: [mq.Conv2D(3, 4, 3), mq.MaxPool2D(2), mq.BatchNorm2D(4), mq.Flatten(), mq.Dense(4 * 2 * 2, 2)],
])
def test_nothing_else_folds(layers):
    model = mq.Sequential(layers(), input_shape=(3, 6, 6) if layers()[0].__class__ is not mq.Flatten else (3, 2, 2))
    assert all(fold is None for _, _, fold in steps(model))


def test_a_convolution_in_the_lane_segment_keeps_its_batch_norm_apart():
    """The lane kernels take no weight scale: LeNet-style convolutions that run in lanes at a full
    vector of images leave the batch norm after them a layer of its own."""
    model = mq.Sequential([mq.Conv2D(1, 6, 5), mq.BatchNorm2D(6), mq.ReLU(), mq.MaxPool2D(2), mq.Flatten(),
                           mq.Dense(6 * 12 * 12, 3)], input_shape=(1, 28, 28))
    plan = model.executor.inference_plan
    assert plan.lane_steps == 1 and steps(model)[:2] == [("Conv2D", False, None), ("BatchNorm2D", True, None)]


def network(dtype, seed=5):
    """Every case the fold meets: bias or none, affine or not, stride, uneven 'same' padding (padded
    in Python), a following ReLU or LeakyReLU (which stays a layer), and a batch norm not after a conv."""
    layers = [mq.Conv2D(3, 8, 3, padding="same", bias=False), mq.BatchNorm2D(8), mq.ReLU(),
              mq.Conv2D(8, 8, 3, stride=2, padding="same"), mq.BatchNorm2D(8, affine=False), mq.LeakyReLU(0.1),
              mq.Conv2D(8, 16, 3, stride=2, padding=1), mq.BatchNorm2D(16), mq.MaxPool2D(2),
              mq.Flatten(), mq.Dense(16 * 2 * 2, 6), mq.BatchNorm1D(6), mq.ReLU(), mq.Dense(6, 4)]
    return mq.Sequential(layers, seed=seed, dtype=dtype, input_shape=(3, 16, 16))


def trained(dtype):
    """A network whose running statistics and affine parameters are no longer 0 and 1."""
    model = network(dtype)
    rng = np.random.default_rng(1)
    x, y = (rng.standard_normal((64, 3, 16, 16)) * 3 + 1).astype(dtype), rng.integers(0, 4, 64)
    model.fit(x, y, epochs=2, batch_size=16, optimizer=mq.Adam(1e-2), verbose=0)
    return model, x[:24]


@pytest.mark.parametrize("backend", ["native", "plain", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_models_predict_as_separate_layers(backend, dtype):
    model, x = trained(dtype)
    assert sum(s.folds is not None for s in model.executor.inference_plan.steps) == 3
    separate = network(dtype)
    separate.load_state_dict(model.state_dict())
    separate.executor = Executor(separate, fold=False)
    with mq.use_backend(backend):
        folded, apart = model(x), separate(x)
    magnitude = np.abs(apart).max() * 10   # the logits' terms: the rounding of a few hundred products
    assert_close(folded, apart, rtol=RTOL[dtype], scale=magnitude)
    assert not np.array_equal(folded, apart) or dtype == np.float64   # float32 rounding does differ
    with mq.use_backend(backend):   # training mode is untouched: batch statistics, bit for bit
        model.train(), separate.train()
        np.testing.assert_array_equal(model(x), separate(x))
        model.eval(), separate.eval()


def test_folded_models_match_pytorch_in_evaluation():
    torch = pytest.importorskip("torch")
    model, x = trained(np.float64)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same", bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(8, 8, 3, stride=2),
                        nn.BatchNorm2d(8, affine=False), nn.LeakyReLU(0.1), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.BatchNorm2d(16), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 6), nn.BatchNorm1d(6),
                        nn.ReLU(), nn.Linear(6, 4)).double().eval()
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                         zip(net.state_dict(), model.state_dict().values())})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(model(x), expected, scale=np.abs(expected).max() * 10)


def test_changed_statistics_and_weights_apply_at_once():
    """The fold is made in every call from the current parameters and running statistics."""
    model, x = trained(np.float64)
    before = model(x).copy()
    state = model.state_dict()
    state["1.running_mean"] = state["1.running_mean"] + 0.5   # loaded ...
    model.load_state_dict(state)
    model.layers[4]._buffers["running_var"][...] *= 4.0       # ... and changed in place
    model.layers[0].weight = model.layers[0].weight * 1.5
    separate = network(np.float64)
    separate.load_state_dict(model.state_dict())
    separate.executor = Executor(separate, fold=False)
    after = model(x)
    assert not np.allclose(after, before)
    assert_close(after, separate(x), scale=np.abs(after).max() * 10)
