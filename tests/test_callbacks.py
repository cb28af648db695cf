"""The Keras callbacks: ReduceLROnPlateau against a hand-computed sequence, ModelCheckpoint's
files and the runs they resume, CSVLogger's exact contents, TerminateOnNaN's graceful stop."""
from __future__ import annotations

import types

import numpy as np
import pytest

import maqueta as mq
from conftest import small_data


def drive(callback, values, lr=1.0, monitor="val_loss"):
    """Feed callback one epoch end per value; returns the lr after each epoch and each epoch's logs."""
    model = types.SimpleNamespace(optimizer=mq.SGD(lr), stop_training=False)
    callback.set_model(model)
    callback.on_train_begin()
    lrs, logged = [], []
    for epoch, value in enumerate(values):
        logs = {monitor: value, "lr": model.optimizer.lr}
        callback.on_epoch_end(epoch, logs)
        lrs.append(model.optimizer.lr)
        logged.append(logs["lr"])
    return lrs, logged


# ------------------------------------------------------------------------------------------ ReduceLROnPlateau
def test_reduce_lr_on_plateau_follows_keras_by_hand():
    # patience 2, cooldown 1, factor 0.5, min_delta 0.1, min_lr 0.2; by hand (Keras's algorithm):
    # e0 1.0 best=1.0 | e1 0.95 (not by 0.1) wait 1 | e2 0.95 wait 2 -> lr 0.5, cooldown 1
    # e3 0.9 cooldown 1->0, wait 0, not better, in cooldown no more (counter 0 now) -> wait 1
    # e4 0.5 better: best 0.5 wait 0 | e5 0.5 wait 1 | e6 0.5 wait 2 -> lr 0.25, cooldown 1
    # e7 0.5 cooldown -> 0, wait 1 | e8 0.5 wait 2 -> 0.125 clipped to min_lr 0.2 | e9 0.5 cooldown
    # e10 0.5 wait 1 | e11 0.5 wait 2, lr 0.2 is not above min_lr: stays
    values = [1.0, 0.95, 0.95, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    callback = mq.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.1, cooldown=1, min_lr=0.2)
    lrs, logged = drive(callback, values)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]
    assert logged == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]   # the lr each epoch used


def test_reduce_lr_on_plateau_modes_and_patience_zero():
    lrs, _ = drive(mq.ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=0, min_delta=0),
                   [0.5, 0.6, 0.6, 0.4], monitor="val_accuracy")
    # auto mode maximises accuracy; patience 0 reduces at the first epoch without improvement
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.01])
    lrs, _ = drive(mq.ReduceLROnPlateau(monitor="score", mode="max", patience=1), [1, 2, 3], monitor="score")
    assert lrs == [1.0, 1.0, 1.0]


def test_reduce_lr_on_plateau_in_fit_and_its_refusals():
    X, y = small_data(20)
    model = mq.models.lenet5()
    history = model.fit(X, y, epochs=3, batch_size=10, optimizer=mq.SGD(0.0), validation_split=0.5, verbose=0,
                        callbacks=[mq.ReduceLROnPlateau(factor=0.5, patience=0)])
    # lr 0 learns nothing, so val_loss never improves after the first epoch
    assert history.history["lr"] == [0.0, 0.0, 0.0]
    model = mq.models.lenet5()
    history = model.fit(X, y, epochs=3, batch_size=10, optimizer=mq.SGD(1e-9), validation_split=0.5, verbose=0,
                        callbacks=[mq.ReduceLROnPlateau(factor=0.5, patience=0, min_delta=1.0)])
    # the first epoch improves on nothing (best starts at inf); each later one misses min_delta
    assert history.history["lr"] == [1e-9, 1e-9, 5e-10] and model.optimizer.lr == 2.5e-10
    with pytest.raises(KeyError, match="ReduceLROnPlateau monitors 'val_loss'"):
        mq.models.lenet5().fit(X, y, callbacks=[mq.ReduceLROnPlateau()], verbose=0)
    for kwargs, message in [({"factor": 1.0}, "factor"), ({"factor": 0}, "factor"), ({"patience": -1}, "patience"),
                            ({"cooldown": 1.5}, "cooldown"), ({"min_lr": -1}, "min_lr"), ({"mode": "up"}, "mode"),
                            ({"min_delta": float("nan")}, "min_delta")]:
        with pytest.raises(ValueError, match=message):
            mq.ReduceLROnPlateau(**kwargs)


# ------------------------------------------------------------------------------------------ ModelCheckpoint
def test_checkpoint_every_epoch_formats_names_as_keras(tmp_path):
    X, y = small_data(20)
    model = mq.models.lenet5()
    checkpoint = mq.ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}-{val_loss:.4f}.maq")
    history = model.fit(X, y, epochs=3, batch_size=10, validation_split=0.5, callbacks=[checkpoint], verbose=0)
    expected = [f"ckpt-{e + 1:02d}-{v:.4f}.maq" for e, v in enumerate(history.history["val_loss"])]
    assert [p.split("/")[-1] for p in checkpoint.saved] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    np.testing.assert_array_equal(mq.load(checkpoint.saved[-1]).get_flat_parameters(), model.get_flat_parameters())


def test_checkpoint_best_only_picks_the_improving_epochs_and_resumes(tmp_path):
    X, y = small_data(30)
    val_losses = [0.9, 0.7, 0.8, 0.6, 0.6]   # the metric is scripted: the epochs that improve are 1, 2 and 4

    class Scripted(mq.Callback):   # before the checkpoint in the list, so it sees these values
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = val_losses[epoch]

    checkpoint = mq.ModelCheckpoint(tmp_path / "best-{epoch}.maq", save_best_only=True)
    snapshots = []

    class Snap(mq.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(self.model.get_flat_parameters().copy())

    model = mq.models.lenet5(seed=4)
    model.fit(X, y, epochs=5, batch_size=10, callbacks=[Scripted(), checkpoint, Snap()], verbose=0)
    assert [p.split("/")[-1] for p in checkpoint.saved] == ["best-1.maq", "best-2.maq", "best-4.maq"]
    assert checkpoint.best == 0.6
    best = mq.load(tmp_path / "best-4.maq")
    np.testing.assert_array_equal(best.get_flat_parameters(), snapshots[3])
    # the best file resumes: 4 epochs from it plus one more equal the straight run's 5
    assert best.epochs_trained == 4 and best.optimizer.iterations == 12
    best.fit(X, y, epochs=5, initial_epoch=best.epochs_trained, batch_size=10, verbose=0)
    np.testing.assert_array_equal(best.get_flat_parameters(), model.get_flat_parameters())


def test_checkpoint_without_optimizer_and_by_batches(tmp_path):
    X, y = small_data(20)
    model = mq.models.lenet5()
    checkpoint = mq.ModelCheckpoint(tmp_path / "new" / "b-{epoch}-{loss:.3f}.maq", save_freq=3,
                                    include_optimizer=False)
    model.fit(X, y, epochs=2, batch_size=5, callbacks=[checkpoint], verbose=0)   # 8 batches: saves after 3 and 6
    assert len(checkpoint.saved) == 2 and checkpoint.saved[0].split("/")[-1].startswith("b-1-")
    assert checkpoint.saved[1].split("/")[-1].startswith("b-2-")
    assert mq.load(checkpoint.saved[1]).optimizer is None


def test_checkpoint_refusals(tmp_path):
    X, y = small_data(10)
    with pytest.raises(KeyError, match="ModelCheckpoint monitors 'val_loss'"):
        mq.models.lenet5().fit(X, y, verbose=0, callbacks=[mq.ModelCheckpoint(tmp_path / "m", save_best_only=True)])
    with pytest.raises(KeyError, match=r"names \['val_acc'\], which are not among the logged values"):
        mq.models.lenet5().fit(X, y, verbose=0, callbacks=[mq.ModelCheckpoint(tmp_path / "{val_acc}")])
    with pytest.raises(ValueError, match="not a valid format string"):
        mq.ModelCheckpoint(tmp_path / "{epoch")
    with pytest.raises(ValueError, match="named fields"):
        mq.ModelCheckpoint(tmp_path / "{}")
    with pytest.raises(ValueError, match="save_freq"):
        mq.ModelCheckpoint(tmp_path / "m", save_freq=0)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ CSVLogger
def test_csv_logger_writes_exact_rows_and_appends_under_one_header(tmp_path):
    path = tmp_path / "log.csv"
    logger = mq.CSVLogger(path)
    drive(logger, [0.5, 0.25])
    assert path.read_text() == "epoch,lr,val_loss\n0,1.0,0.5\n1,1.0,0.25\n"
    drive(mq.CSVLogger(path, append=True), [0.125])
    assert path.read_text() == "epoch,lr,val_loss\n0,1.0,0.5\n1,1.0,0.25\n0,1.0,0.125\n"
    drive(mq.CSVLogger(path, separator=";"), [2.0])   # not appending: a new file
    assert path.read_text() == "epoch;lr;val_loss\n0;1.0;2.0\n"
    fresh = tmp_path / "fresh.csv"
    drive(mq.CSVLogger(fresh, append=True), [1.5])   # appending to nothing writes the header
    assert fresh.read_text() == "epoch,lr,val_loss\n0,1.0,1.5\n"


def test_csv_logger_rows_are_on_disk_each_epoch_and_columns_must_match(tmp_path):
    X, y = small_data(10)
    path = tmp_path / "fit.csv"
    seen = []

    class Reader(mq.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(path.read_text().count("\n"))

    history = mq.models.lenet5().fit(X, y, epochs=2, batch_size=5, verbose=0, callbacks=[mq.CSVLogger(path), Reader()])
    assert seen == [2, 3]
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,accuracy,loss,lr,seconds"
    assert lines[2].split(",")[:3] == ["1", repr(history.history["accuracy"][1]), repr(history.history["loss"][1])]
    with pytest.raises(ValueError, match="has the columns"):
        drive(mq.CSVLogger(path, append=True), [1.0])
    with pytest.raises(ValueError, match="separator"):
        mq.CSVLogger(path, separator="::")


# ------------------------------------------------------------------------------------------ TerminateOnNaN
class Events(mq.Callback):
    def __init__(self):
        self.events = []

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, logs=None):
        self.events.append(("train_end",))


def test_terminate_on_nan_stops_at_the_batch_and_keeps_the_weights(capsys):
    X, y = small_data(40)
    model = mq.models.lenet5()
    snapshots = []

    class Poison(mq.Callback):   # the 3rd batch of the 2nd epoch overflows to a NaN loss
        def on_batch_begin(self, batch, logs=None):
            snapshots.append(self.model.get_flat_parameters().copy())
            if (len(snapshots), batch) == (7, 2):
                self.model.layers[11].weight[...] = 3e38

    stopper, events = mq.TerminateOnNaN(), Events()
    history = model.fit(X, y, epochs=3, batch_size=10, callbacks=[Poison(), stopper, events], verbose=0)
    assert model.stop_training and stopper.stopped_epoch == 1 and stopper.stopped_batch == 2
    assert "epoch 2, step 3: the loss is nan" in stopper.reason
    assert "invalid loss, terminating training" in capsys.readouterr().out
    assert history.epoch == [0] and len(history.history["loss"]) == 1 and model.history is history
    assert events.events == [("epoch_end", 0), ("train_end",)]
    assert model.epochs_trained == 1 and model.optimizer.iterations == 6
    before = mq.models.lenet5()
    before.set_flat_parameters(snapshots[-1])   # the weights when the poisoned batch began
    after = model.state_dict()
    assert (after.pop("11.weight") == np.float32(3e38)).all()   # the poison itself, but no update applied
    for key, value in after.items():
        np.testing.assert_array_equal(value, before.state_dict()[key])


def test_without_terminate_on_nan_divergence_still_raises():
    X, y = small_data(16)
    model = mq.models.lenet5()
    model.layers[11].weight[...] = 3e38
    events = Events()
    with pytest.raises(FloatingPointError, match="epoch 1, step 1: the loss is nan"):
        model.fit(X, y, batch_size=8, callbacks=[events], verbose=0)
    assert events.events == []


def test_the_loop_asks_every_callback_through_one_hook():
    """Any callback may end training on divergence: the loop knows no callback by its type."""
    X, y = small_data(16)
    model = mq.models.lenet5()
    model.layers[11].weight[...] = 3e38
    heard = []

    class Listener(mq.Callback):
        def on_divergence(self, batch, error):
            heard.append((type(self).__name__, batch, error.epoch, error.step))
            return False

    class Decider(Listener):
        def on_divergence(self, batch, error):
            super().on_divergence(batch, error)
            return True

    history = model.fit(X, y, epochs=2, batch_size=8, callbacks=[Decider(), Listener()], verbose=1)
    assert heard == [("Decider", 0, 1, 1), ("Listener", 0, 1, 1)] and history.epoch == []
