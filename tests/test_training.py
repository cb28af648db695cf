"""fit and train_on_batch: learning, batches, validation, callbacks, divergence, refusals."""
from __future__ import annotations


import numpy as np
import pytest

import maqueta as mq
from conftest import small_data


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
