"""The Sequential API: training, prediction, callbacks, labels, errors, threads."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import maqueta as mq
from digits import real_digits


@pytest.fixture(scope="module")
def digits():
    X, y, _ = real_digits(1200)
    return X.astype(np.float32), y


def small_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


# ------------------------------------------------------------------------ construction
def test_default_initialisation_matches_pytorch_distribution():
    model = mq.models.lenet5(seed=0)
    for layer in (model.layers[0], model.layers[3], model.layers[7], model.layers[9], model.layers[11]):
        fan_in = int(np.prod(layer.weight.shape[1:]))
        bound = 1 / math.sqrt(fan_in)
        for values in (layer.weight, layer.bias):
            assert values.dtype == np.float32
            assert np.abs(values).max() <= bound
    w = model.layers[7].weight   # 48,000 draws of U(-1/20, 1/20)
    assert abs(w.mean()) < 1e-3
    assert w.var() == pytest.approx((1 / 20) ** 2 / 3, rel=0.03)
    assert np.abs(w).max() > 0.99 / 20


def test_seed_decides_the_weights():
    a, b, c = mq.models.lenet5(seed=3), mq.models.lenet5(seed=3), mq.models.lenet5(seed=4)
    np.testing.assert_array_equal(a.get_flat_parameters(), b.get_flat_parameters())
    assert not np.array_equal(a.get_flat_parameters(), c.get_flat_parameters())


def test_weights_are_writable_views():
    model = mq.models.lenet5()
    conv = model.layers[0]
    assert conv.weight.shape == (6, 1, 5, 5) and model.layers[7].weight.shape == (120, 400)
    conv.weight[0, 0, 0, 0] = 7.0
    conv.bias = np.arange(6)
    assert model.state_dict()["0.weight"][0, 0, 0, 0] == 7.0
    np.testing.assert_array_equal(model.state_dict()["0.bias"], np.arange(6))
    with pytest.raises(ValueError, match=r"weight of layer 0 .* must have shape \(6, 1, 5, 5\)"):
        conv.weight = np.zeros((6, 5, 5))


def test_summary(capsys):
    mq.models.lenet5().summary()
    out = capsys.readouterr().out
    assert "Total parameters: 61,706" in out
    assert "(N, 6, 28, 28)" in out and "(N, 16, 5, 5)" in out and "48,120" in out


def test_float64_model():
    model = mq.models.lenet5(dtype="float64")
    X, y = small_data(8)
    assert model(X).dtype == np.float64
    model.fit(X, y, verbose=0)
    assert model.get_flat_parameters().dtype == np.float64


# ------------------------------------------------------------------------ training
def test_fit_learns_real_digits(digits):
    X, y = digits
    X = np.pad(X, ((0, 0), (0, 0), (2, 2), (2, 2))) if X.shape[-1] == 28 else X
    model = mq.models.lenet5(seed=0, in_channels=1) if X.shape[-1] == 32 else \
        mq.Sequential([mq.Conv2D(1, 6, 3), mq.ReLU(), mq.Flatten(), mq.Dense(6 * 6 * 6, 10)], seed=0)
    history = model.fit(X[:1000], y[:1000], epochs=3, batch_size=32, optimizer=mq.Adam(2e-3),
                        validation_data=(X[1000:], y[1000:]), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert all(len(v) == 3 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.8
    assert model.evaluate(X[1000:], y[1000:]) == {"loss": history.history["val_loss"][-1],
                                                  "accuracy": history.history["val_accuracy"][-1]}


def test_perceptron_mode_learns(digits):
    """The notebook's perceptron: dense layers with sigmoid outputs, squared error, plain SGD."""
    X, y = digits
    X = X.reshape(len(X), -1)
    model = mq.Sequential([mq.Dense(X.shape[1], 64), mq.Sigmoid(), mq.Dense(64, 10), mq.Sigmoid()], seed=0)
    model.fit(X[:1000], y[:1000], epochs=10, batch_size=32, optimizer=mq.SGD(5.0), loss="mse", verbose=0)
    assert model.accuracy(X[1000:], y[1000:]) > 0.6   # chance is 0.1


def test_last_partial_batch_is_trained_on():
    X, y = small_data(41)
    model = mq.models.lenet5()
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert model.optimizer.iterations == 2 * 6   # 5 full batches and 1 of a single sample, per epoch


def test_validation_split_holds_out_the_last_samples():
    X, y = small_data(50)
    model = mq.models.lenet5()
    history = model.fit(X, y, epochs=1, batch_size=10, validation_split=0.2, verbose=0)
    assert history.params["samples"] == 40 and model.optimizer.iterations == 4
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(X[40:], y[40:])["loss"])


def test_shuffle_off_is_deterministic_order():
    X, y = small_data(20)
    a, b = mq.models.lenet5(seed=1), mq.models.lenet5(seed=1)
    a.fit(X, y, epochs=1, batch_size=5, shuffle=False, verbose=0)
    optimizer = mq.Adam()
    for s in range(0, 20, 5):
        b.train_on_batch(X[s:s + 5], y[s:s + 5], optimizer=optimizer)
    np.testing.assert_array_equal(a.get_flat_parameters(), b.get_flat_parameters())


def test_optimizer_state_carries_over_between_fits():
    X, y = small_data(20)
    model = mq.models.lenet5()
    optimizer = mq.Adam()
    model.fit(X, y, epochs=1, batch_size=10, optimizer=optimizer, verbose=0)
    model.fit(X, y, epochs=1, batch_size=10, verbose=0)
    assert model.optimizer is optimizer and optimizer.iterations == 4


def test_progress_bar_and_silence(capsys):
    X, y = small_data(20)
    model = mq.models.lenet5()
    model.fit(X, y, epochs=1, batch_size=10, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    model.fit(X, y, epochs=2, batch_size=10, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "loss=" in err and "accuracy=" in err


def test_any_integer_labels_map_through_sorted_classes():
    rng = np.random.default_rng(0)
    X = rng.random((30, 4)).astype(np.float32)
    y = rng.choice([-5, 7, 100], 30)
    model = mq.Sequential([mq.Dense(4, 3)])
    model.fit(X, y, epochs=5, verbose=0, optimizer=mq.Adam(0.05))
    np.testing.assert_array_equal(model.classes_, [-5, 7, 100])
    assert set(model.predict(X)) <= {-5, 7, 100}
    assert model.predict_proba(X).shape == (30, 3)


def test_labels_within_outputs_keep_their_meaning():
    X, y = small_data(10)
    model = mq.models.lenet5()
    model.fit(X, np.full(10, 3), verbose=0)
    np.testing.assert_array_equal(model.classes_, np.arange(10))


def test_predict_proba_rows_sum_to_one():
    X, _ = small_data(7)
    p = mq.models.lenet5().predict_proba(X, batch_size=3)
    assert p.shape == (7, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)


# ------------------------------------------------------------------------ callbacks
def test_early_stopping_restores_best_weights():
    X, y = small_data(30)
    model = mq.models.lenet5()
    stopper = mq.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    snapshots = []

    class Snap(mq.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append((logs["val_loss"], self.model.get_flat_parameters().copy()))

    # lr so high that validation loss gets worse after the first epoch
    history = model.fit(X, y, epochs=20, batch_size=10, optimizer=mq.SGD(3.0), validation_split=0.3,
                        callbacks=[stopper, Snap()], verbose=0)
    assert stopper.stopped_epoch is not None and len(history.epoch) < 20
    best = min(snapshots, key=lambda s: s[0])
    np.testing.assert_array_equal(model.get_flat_parameters(), best[1])


def test_early_stopping_needs_its_metric():
    X, y = small_data(10)
    with pytest.raises(KeyError, match="val_loss"):
        mq.models.lenet5().fit(X, y, callbacks=[mq.EarlyStopping()], verbose=0)


def test_learning_rate_scheduler():
    X, y = small_data(10)
    model = mq.models.lenet5()
    history = model.fit(X, y, epochs=3, optimizer=mq.Adam(0.1), verbose=0,
                        callbacks=[mq.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch)])
    assert history.history["lr"] == [0.1, 0.05, 0.025]


# ------------------------------------------------------------------------ errors
def test_wrong_input_shape_names_layer_and_shapes():
    model = mq.models.lenet5()
    with pytest.raises(ValueError) as info:
        model.predict(np.zeros((4, 3, 32, 32), np.float32))
    message = str(info.value)
    assert "(4, 3, 32, 32)" in message and "layer 0" in message and "Conv2D(1, 6, kernel_size=5)" in message
    assert "(N, 1, H, W)" in message
    with pytest.raises(ValueError, match=r"X has shape \(4, 1, 28, 28\).*layer 7 \(Dense\(400, 120\)\) expects 400 "
                                         r"input features, but receives 256"):
        model.predict(np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"X has shape \(1, 32, 32\): layer 0 .* but receives \(N, 32, 32\)"):
        model.predict(np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="batch dimension"):
        mq.Sequential([mq.Dense(3, 2)]).predict(np.zeros(3))


def test_dense_mismatch_reported_at_construction():
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(100, 10\)\) expects 100 input features, but receives 4704"):
        mq.Sequential([mq.Conv2D(1, 6, 5), mq.Flatten(), mq.Dense(100, 10)], input_shape=(1, 32, 32))
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(3, 2\)\) expects 3 input features, but receives 5"):
        mq.Sequential([mq.Dense(4, 5), mq.Dense(3, 2)])
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2D\(3, 4, kernel_size=3\)\) expects input of shape \(N, 3, H, W\)"):
        mq.Sequential([mq.Conv2D(1, 6, 3), mq.ReLU(), mq.Conv2D(3, 4, 3)])


def test_dense_mismatch_reported_at_first_call():
    model = mq.Sequential([mq.Flatten(), mq.Dense(100, 10)])
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(100, 10\)\) expects 100 input features, but receives 64"):
        model(np.zeros((2, 1, 8, 8)))


def test_failed_construction_frees_the_layers():
    dense = mq.Dense(100, 10)
    with pytest.raises(ValueError):
        mq.Sequential([mq.Flatten(), dense], input_shape=(1, 8, 8))
    mq.Sequential([mq.Flatten(), dense], input_shape=(1, 10, 10))   # reusable after the failure
    with pytest.raises(ValueError, match="already belongs to another model"):
        mq.Sequential([dense])


def test_label_errors():
    X, y = small_data(10)
    model = mq.models.lenet5()
    with pytest.raises(ValueError, match="X has 10 samples but y has 9 labels"):
        model.fit(X, y[:9], verbose=0)
    with pytest.raises(ValueError, match="y has 11 distinct labels .* but the model's last layer has 10 outputs"):
        model.fit(np.concatenate([X, X[:1]]), np.arange(11) * 3, verbose=0)
    with pytest.raises(ValueError, match="one-hot"):
        model.fit(X, np.eye(10)[y], verbose=0)
    with pytest.raises(ValueError, match="non-integer"):
        model.fit(X, y + 0.5, verbose=0)
    model.fit(X, y, verbose=0)
    with pytest.raises(ValueError, match=r"y holds labels outside the model's classes .*: e.g. 12 at position 3"):
        model.evaluate(X, np.where(np.arange(10) == 3, 12, y))
    mapped = mq.Sequential([mq.Dense(4, 3)])
    mapped.fit(np.ones((3, 4)), [10, 20, 30], verbose=0)
    with pytest.raises(ValueError, match="e.g. 25"):
        mapped.evaluate(np.ones((2, 4)), [10, 25])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_rejected(bad):
    X, y = small_data(10)
    X[6, 0, 3, 4] = bad
    model = mq.models.lenet5()
    for call in (lambda: model.fit(X, y, verbose=0), lambda: model.predict(X), lambda: model.evaluate(X, y)):
        with pytest.raises(ValueError, match="contains NaN or Inf .first in sample 6"):
            call()


def test_argument_errors():
    X, y = small_data(10)
    model = mq.models.lenet5()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.fit(X, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="epochs must be an int >= 0"):
        model.fit(X, y, epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="validation_split must be in"):
        model.fit(X, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        model.fit(X, y, loss="hinge", verbose=0)
    with pytest.raises(TypeError, match="optimizer must be a maqueta optimizer"):
        model.fit(X, y, optimizer="adam", verbose=0)
    with pytest.raises(TypeError, match="must hold numbers"):
        model.predict(np.array([["a"]]))
    with pytest.raises(ValueError, match="dtype must be"):
        mq.Sequential([mq.ReLU()], dtype="int32")
    with pytest.raises(TypeError, match="not a maqueta layer"):
        mq.Sequential([mq.ReLU(), "relu"])
    with pytest.raises(ValueError, match="remove the final Softmax"):
        mq.Sequential([mq.Dense(3, 2), mq.Softmax()]).fit(np.ones((2, 3)), [0, 1], verbose=0)
    with pytest.raises(ValueError, match=r"betas must be"):
        mq.Adam(betas=0.9)
    with pytest.raises(ValueError, match=r"lr must be in"):
        mq.SGD(lr=-1)


def test_diverging_loss_stops_with_epoch_and_step():
    X, y = small_data(64)
    model = mq.models.lenet5()
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch 1, step \d+: the (loss|gradients)") as info:
        model.fit(X * 1e4, y, epochs=3, batch_size=8, optimizer=mq.SGD(1e6), verbose=0)
    assert "weights are those after the previous step" in str(info.value)
    assert np.isfinite(model.get_flat_parameters()).all()


def test_non_finite_loss_leaves_weights_untouched():
    X, y = small_data(8)
    model = mq.models.lenet5()
    model.layers[11].weight[...] = 3e38    # logits overflow to inf: the very first loss is NaN
    before = model.get_flat_parameters().copy()
    with pytest.raises(FloatingPointError, match="epoch 1, step 1: the loss is nan"):
        model.fit(X, y, verbose=0)
    np.testing.assert_array_equal(model.get_flat_parameters(), before)


def test_load_state_dict_is_all_or_nothing():
    model = mq.models.lenet5()
    good = model.state_dict()
    before = model.get_flat_parameters().copy()
    bad = dict(good)
    bad["11.bias"] = np.zeros(9)
    with pytest.raises(ValueError, match=r"state_dict\['11.bias'\] has shape \(9,\)"):
        model.load_state_dict({k: v + 1 for k, v in bad.items()})
    with pytest.raises(ValueError, match=r"missing keys \['0.weight'\], unexpected keys \['conv.weight'\]"):
        model.load_state_dict({("conv.weight" if k == "0.weight" else k): v for k, v in good.items()})
    nan = dict(good)
    nan["3.weight"] = np.full_like(good["3.weight"], np.nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.load_state_dict(nan)
    np.testing.assert_array_equal(model.get_flat_parameters(), before)


# ------------------------------------------------------------------------ threads
def test_predict_is_thread_safe():
    X, y = small_data(96, seed=3)
    model = mq.models.lenet5(seed=2)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    chunks = [X[i::6] for i in range(6)]
    # the same batch size as the threads use: sizes of a lane block or more sum in another order
    expected = [model.predict_proba(c, batch_size=5 + i) for i, c in enumerate(chunks)]
    results = [[] for _ in chunks]

    def work(i):
        for _ in range(15):
            results[i].append(model.predict_proba(chunks[i], batch_size=5 + i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(expected, results):
        assert len(got) == 15
        for g in got:
            np.testing.assert_array_equal(g, want)


def test_inference_keeps_no_state_on_layers():
    X, y = small_data(16)
    model = mq.models.lenet5()
    before = [dict(vars(layer)) for layer in model.layers]
    model.predict(X)
    model.fit(X, y, verbose=0)
    for layer, attrs in zip(model.layers, before):
        assert set(vars(layer)) == set(attrs)


def test_same_layer_twice_is_refused():
    relu = mq.ReLU()
    with pytest.raises(ValueError, match="layer 3 .* same object as an earlier layer"):
        mq.Sequential([mq.Dense(4, 4), relu, mq.Dense(4, 4), relu, mq.Dense(4, 2)])
    mq.Sequential([mq.Dense(4, 2), relu])   # still free for a corrected model


def test_refused_fit_changes_nothing():
    model = mq.Sequential([mq.Dense(4, 3)], seed=0)
    X, y = np.ones((10, 4), np.float32), np.array([5, 7, 9] * 3 + [5])
    before = model.get_flat_parameters().copy()
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(X, y, validation_split=1.5, verbose=0)
    with pytest.raises(TypeError, match="callbacks"):
        model.fit(X, y, callbacks=[object()], verbose=0)
    assert model.classes_ is None and model.optimizer is None
    np.testing.assert_array_equal(model.get_flat_parameters(), before)
    model.fit(X, np.array([0, 1, 2] * 3 + [0]), verbose=0)   # other labels are fine: nothing was learned
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])


def test_second_input_size_is_refused_before_any_kernel():
    model = mq.Sequential([mq.Conv2D(1, 2, 3), mq.ReLU(), mq.MaxPool2D(2)])
    model(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"takes samples of shape \(N, 1, 8, 8\), got \(N, 1, 10, 10\)"):
        model(np.zeros((2, 1, 10, 10), np.float32))


class BatchRecorder(mq.Callback):
    def __init__(self):
        self.events = []

    def on_batch_begin(self, batch, logs=None):
        self.events.append(("begin", batch, logs["size"]))

    def on_batch_end(self, batch, logs=None):
        assert set(logs) == {"loss", "accuracy", "size"} and np.isfinite(logs["loss"])
        self.events.append(("end", batch, logs["size"]))


def test_batch_events_reach_callbacks():
    model = mq.Sequential([mq.Dense(4, 3)], seed=0)
    recorder = BatchRecorder()
    model.fit(np.ones((10, 4), np.float32), np.arange(10) % 3, epochs=2, batch_size=4, callbacks=[recorder],
              verbose=0)
    one_epoch = [("begin", 0, 4), ("end", 0, 4), ("begin", 1, 4), ("end", 1, 4), ("begin", 2, 2), ("end", 2, 2)]
    assert recorder.events == one_epoch * 2


def test_training_runs_through_the_layer_methods(monkeypatch):
    """A breakpoint in a layer fires for the code that really runs: in the lane layout and in NCHW."""
    seen = []
    for cls, names in ((mq.Conv2D, ("forward_lanes", "backward_lanes")), (mq.Dense, ("forward", "backward"))):
        for name in names:
            real = getattr(cls, name)
            monkeypatch.setattr(cls, name, lambda self, a, call, real=real, name=name, cls=cls:
                                (seen.append((cls.__name__, name)), real(self, a, call))[1])
    model = mq.models.lenet5()
    model.fit(np.zeros((64, 1, 32, 32), np.float32), np.arange(64) % 10, epochs=1, batch_size=64, verbose=0)
    expected = {("Dense", "forward"), ("Dense", "backward")}
    if model.executor.training_runs[64].lanes is not None:   # 64 images fill the lanes on every ISA
        expected |= {("Conv2D", "forward_lanes"), ("Conv2D", "backward_lanes")}
    assert model.executor.training_runs[64].lanes is not None and expected <= set(seen)
