"""ONNX export: the file passes onnx's checker, and ONNX Runtime computes what the model computes
(LeNet-5 trained on real MNIST, and a net with every exportable layer), for batches of 1, 7 and 256.
Skipped without the onnx and onnxruntime packages (pip install ".[onnx]")."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import maqueta as mq
from maqueta.layers import LAYERS
from maqueta.onnx import ONNXExportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 7, 256)
TOL = 1e-5   # float32: ONNX Runtime sums in another order than maqueta's kernels


def run_onnx(path, x, output=None):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(output, {"input": x})[0]


def assert_same_outputs(model, path, inputs):
    """ONNX Runtime and model(x) agree within TOL and predict the same classes, batch by batch."""
    for n in BATCHES:
        x = inputs[:n]
        expected, got = model(x), run_onnx(path, x)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL, err_msg=f"batch {n}")
        np.testing.assert_array_equal(got.argmax(axis=1), model.predict(x), err_msg=f"batch {n}")


@pytest.fixture(scope="module")
def mnist():
    """The MNIST test set as LeNet-5's standardized float32 inputs: the copy shipped in the package."""
    images, labels = mq.datasets.load_mnist("test", download=False)
    return mq.datasets.prepare(images[:1280], mean=0.1, std=0.3), labels[:1280]


@pytest.fixture(scope="module")
def trained_lenet5(mnist):
    X, y = mnist
    model = mq.models.lenet5(seed=0)
    model.fit(X[:1024], y[:1024], epochs=2, batch_size=32, optimizer=mq.Adam(2e-3), verbose=0)   # 64 steps
    return model


def every_layer_net():
    """A small net using each exportable layer, with strides, paddings ("same" with an even kernel
    too), non-square kernels, layers without bias, and batch statistics moved off their start by
    a few training steps."""
    model = mq.Sequential([
        mq.Conv2D(1, 4, 3, padding=1), mq.BatchNorm2D(4), mq.Tanh(), mq.MaxPool2D(3, stride=2, padding=1),
        mq.Conv2D(4, 6, (3, 2), stride=(2, 1), padding=(1, 0)), mq.Sigmoid(), mq.MaxPool2D((2, 1)),
        mq.Conv2D(6, 8, 3, padding="same", bias=False), mq.LeakyReLU(0.1), mq.Dropout2D(0.3),
        mq.AvgPool2D(2, padding=1), mq.Conv2D(8, 8, 2, padding="same"), mq.ELU(0.5), mq.GlobalAvgPool2D(),
        mq.Flatten(), mq.Dense(8, 16, bias=False), mq.BatchNorm1D(16), mq.GELU(), mq.Dropout(0.2),
        mq.Dense(16, 12), mq.GELU("tanh"), mq.Dense(12, 10), mq.ReLU(), mq.Dense(10, 10), mq.Softmax(),
    ], seed=3, input_shape=(1, 32, 32))
    assert {type(layer).__name__ for layer in model.layers} == set(LAYERS), "a layer is missing from this net"
    rng = np.random.default_rng(5)
    for _ in range(3):
        model.train_on_batch(rng.standard_normal((16, 1, 32, 32)).astype(np.float32) * 2 + 1,
                             rng.integers(0, 10, 16), loss="mse")
    return model


def test_lenet5_trained_on_mnist_matches_onnx_runtime(trained_lenet5, mnist, tmp_path):
    X, y = mnist
    assert trained_lenet5.accuracy(X[1024:], y[1024:]) > 0.5   # trained (79 %), not chance (10 %)
    path = tmp_path / "lenet5.onnx"
    proto = trained_lenet5.export_onnx(path)
    onnx.checker.check_model(str(path), full_check=True)
    assert [node.op_type for node in proto.graph.node] == [
        "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert sorted(i.name for i in proto.graph.initializer) == sorted(trained_lenet5.state_dict())
    assert_same_outputs(trained_lenet5, path, X[1024:])


def test_every_exportable_layer_matches_onnx_runtime(tmp_path, rng):
    model = every_layer_net()
    path = tmp_path / "every-layer.onnx"
    mq.onnx.export(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    assert_same_outputs(model, path, rng.standard_normal((256, 1, 32, 32)).astype(np.float32))


def test_probabilities_add_a_final_softmax(trained_lenet5, mnist, tmp_path):
    X, _ = mnist
    path = tmp_path / "proba.onnx"
    proto = trained_lenet5.export_onnx(path, probabilities=True)
    assert proto.graph.node[-1].op_type == "Softmax" and proto.graph.output[0].name == "probabilities"
    np.testing.assert_allclose(run_onnx(path, X[:7]), trained_lenet5.predict_proba(X[:7]), rtol=TOL, atol=TOL)


def test_a_float64_model_exports_as_float32_for_onnx_runtime(tmp_path, rng):
    model = mq.models.lenet5(seed=4, dtype="float64")
    x = rng.standard_normal((7, 1, 32, 32))
    assert model.export_onnx(tmp_path / "f64.onnx").graph.initializer[0].data_type == onnx.TensorProto.DOUBLE
    mq.onnx.export(model, tmp_path / "f32.onnx", dtype="float32")
    np.testing.assert_allclose(run_onnx(tmp_path / "f32.onnx", x.astype(np.float32)), model(x), rtol=TOL, atol=TOL)


def test_graph_interface(trained_lenet5, tmp_path):
    proto = trained_lenet5.export_onnx(tmp_path / "m.onnx", opset=13)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    assert inp.name == "input" and dims(inp) == ["batch", 1, 32, 32]
    assert out.name == "logits" and dims(out) == ["batch", 10]
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    assert proto.producer_name == "maqueta"
    assert not list((tmp_path).glob("*.part"))   # written atomically


def test_a_layer_with_no_onnx_form_is_named(tmp_path):
    class Doubler(mq.Layer):
        def forward(self, x, training=False):
            return 2 * x, None

    model = mq.Sequential([mq.Flatten(), mq.Dense(4, 3), Doubler()], input_shape=(1, 2, 2))
    with pytest.raises(ONNXExportError, match=r"layer 2 \(Doubler\(\)\) cannot be exported to ONNX"):
        model.export_onnx(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_bad_arguments(trained_lenet5, tmp_path):
    for opset in (12, 10_000, 17.0, True):
        with pytest.raises(ValueError, match="opset must be an int from 13"):
            trained_lenet5.export_onnx(tmp_path / "x.onnx", opset=opset)
    with pytest.raises(TypeError, match="probabilities must be True or False"):
        trained_lenet5.export_onnx(tmp_path / "x.onnx", probabilities="yes")
    unknown = mq.Sequential([mq.Flatten(), mq.Dense(4, 2)])
    with pytest.raises(ONNXExportError, match="input shape is unknown: pass input_shape"):
        unknown.export_onnx(tmp_path / "x.onnx")
    unknown.export_onnx(tmp_path / "x.onnx", input_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="expects 400 input features"):
        trained_lenet5.export_onnx(tmp_path / "x.onnx", input_shape=(1, 28, 28))


def test_missing_onnx_says_how_to_install(trained_lenet5, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r'pip install onnx .*pip install "maqueta\[onnx\]"'):
        trained_lenet5.export_onnx(tmp_path / "x.onnx")
