"""The training loop behind ``Sequential.fit`` and ``train_on_batch``: arguments checked before
anything changes, one global shuffle per epoch, one forward/backward/update per batch through the
model's executor, divergence caught before it reaches the weights, callbacks told of every batch
and epoch, and a progress bar."""
from __future__ import annotations

import math
import numbers
import time

import numpy as np

from . import _core, losses
from .callbacks import Callback, History
from .inputs import check_input, encode_labels
from .layers.base import positive_int
from .optim import Adam, Optimizer

__all__ = ["fit", "train_on_batch"]


def _non_negative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _choose_optimizer(model, optimizer):
    """The optimizer a training call uses (the given one, else the model's, else Adam()),
    checked against the model's parameters; binding and keeping it is left to the caller."""
    if optimizer is None:
        optimizer = model.optimizer if model.optimizer is not None else Adam()
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a maqueta optimizer (Adam, SGD), got {optimizer!r}")
    optimizer.check_binding(model.state.params.size, model.dtype)
    return optimizer


def _adopt(model, optimizer, loss, classes):
    """Everything was checked: now the call may change the model."""
    optimizer.bind(model.state.params.size, model.dtype)
    model.optimizer = optimizer
    model.loss = loss if isinstance(loss, str) else model.loss
    model.classes_ = classes


def fit(model, *args, **kwargs):
    """See Sequential.fit."""
    with _one_training_call(model):
        return _fit(model, *args, **kwargs)


def train_on_batch(model, *args, **kwargs):
    """See Sequential.train_on_batch."""
    with _one_training_call(model):
        return _train_on_batch(model, *args, **kwargs)


def _fit(model, X, y, epochs=1, batch_size=32, optimizer=None, loss="cross_entropy", shuffle=True,
         validation_data=None, validation_split=0.0, verbose=1, callbacks=None, initial_epoch=0):
    X = check_input(model, X)
    targets, classes = encode_labels(model, y, len(X), X.shape[1:])
    batch_size = positive_int(batch_size, "batch_size")
    epochs = _non_negative_int(epochs, "epochs")
    initial_epoch = _non_negative_int(initial_epoch, "initial_epoch")
    loss_fn = losses.get(loss)
    if loss == "cross_entropy" and model.layers[-1].activation == "softmax":
        raise ValueError("loss='cross_entropy' applies softmax to the model's outputs itself; remove the final "
                         "Softmax layer (predict_proba gives the probabilities)")
    validation = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        X_val = check_input(model, validation_data[0], "validation_data[0]")
        encode_labels(model, validation_data[1], len(X_val), X_val.shape[1:], classes)
        validation = (X_val, validation_data[1])
    elif validation_split:
        if not isinstance(validation_split, numbers.Real) or not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split!r}")
        cut = int(len(X) * (1.0 - validation_split))
        if cut < 1 or cut >= len(X):
            raise ValueError(f"validation_split={validation_split} leaves no samples for training or validation "
                             f"out of {len(X)}")
        validation = (X[cut:], np.asarray(y)[cut:])
        X, targets = X[:cut], targets[:cut]
    optimizer = _choose_optimizer(model, optimizer)
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {cb!r}")
    _adopt(model, optimizer, loss, classes)

    history = History()
    history.params = {"epochs": epochs, "batch_size": batch_size, "samples": len(X)}
    model.history = history
    everyone = [history, *callbacks]
    # only callbacks that listen to batches are called per batch: the others cost nothing there
    batch_begin = [cb for cb in everyone if type(cb).on_batch_begin is not Callback.on_batch_begin]
    batch_end = [cb for cb in everyone if type(cb).on_batch_end is not Callback.on_batch_end]
    for cb in everyone:
        cb.set_model(model)
    model.stop_training = False
    for cb in everyone:
        cb.on_train_begin()
    n = len(X)
    steps = -(-n // batch_size)
    executor = model.executor
    try:
        for epoch in range(initial_epoch, epochs):
            for cb in everyone:
                cb.on_epoch_begin(epoch)
            started = time.perf_counter()
            order = model.state.shuffle_rng.permutation(n) if shuffle else None
            bar = _progress(steps, f"Epoch {epoch + 1}/{epochs}", verbose)
            total_loss, correct = 0.0, 0
            model.train()
            for step in range(steps):
                for cb in batch_begin:
                    cb.on_batch_begin(step, {"size": min(batch_size, n - step * batch_size)})
                if order is None:
                    xb, tb = X[step * batch_size:(step + 1) * batch_size], targets[step * batch_size:(step + 1) * batch_size]
                else:
                    index = order[step * batch_size:(step + 1) * batch_size]
                    xb = np.take(X, index, axis=0, out=executor.training_run(len(index)).batch)
                    tb = targets[index]
                value, hits = train_step(model, xb, tb, loss_fn, epoch, step)
                total_loss += value * len(tb)
                correct += hits
                for cb in batch_end:
                    cb.on_batch_end(step, {"loss": value, "accuracy": hits / len(tb), "size": len(tb)})
                if bar is not None:
                    seen = min(n, (step + 1) * batch_size)
                    bar.update(1, loss=total_loss / seen, accuracy=correct / seen)
            model.eval()
            logs = {"loss": total_loss / n, "accuracy": correct / n, "seconds": time.perf_counter() - started}
            if validation is not None:
                result = model.evaluate(validation[0], validation[1], batch_size=max(batch_size, 256), loss=loss)
                logs["val_loss"], logs["val_accuracy"] = result["loss"], result["accuracy"]
            logs["lr"] = optimizer.lr
            model.epochs_trained = epoch + 1
            if bar is not None:
                bar.close(logs)
            for cb in everyone:
                cb.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
    finally:
        model.eval()
    for cb in everyone:
        cb.on_train_end()
    return history


def _train_on_batch(model, x, y, optimizer=None, loss="cross_entropy"):
    x = check_input(model, x, "x")
    targets, classes = encode_labels(model, y, len(x), x.shape[1:])
    loss_fn = losses.get(loss)
    optimizer = _choose_optimizer(model, optimizer)
    _adopt(model, optimizer, loss, classes)
    model.train()
    try:
        value, _ = train_step(model, x, targets, loss_fn, model.epochs_trained, optimizer.iterations)
    finally:
        model.eval()
    return value


def train_step(model, xb, tb, loss_fn, epoch, step):
    """One forward, backward and update on a batch; returns (loss, correct predictions). Overflow
    is checked for explicitly (and reported with its epoch and step), so NumPy's own warnings
    about it are silenced."""
    with np.errstate(over="ignore", invalid="ignore"):
        value, outputs = model.executor.gradients(xb, tb, loss_fn)
        if not math.isfinite(value):
            _diverged(f"the loss is {value}", epoch, step)
        hits = int(np.count_nonzero(outputs.argmax(axis=1) == tb))
        if not _core.all_finite(model.state.grads):
            _diverged("the gradients hold NaN or Inf", epoch, step)
        model.optimizer.step(model.state.params, model.state.grads)
        if not _core.all_finite(model.state.params):   # finite gradients can still overflow the update
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1}, step {step + 1}: the update overflowed, so the weights "
                f"now hold NaN or Inf. Load the last checkpoint or saved weights (model.load_state_dict) before "
                f"going on, and lower the learning rate.")
    return value, hits


def _diverged(what, epoch, step):
    raise FloatingPointError(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {what}. The update was not applied: the "
        f"weights are those after the previous step. Try a lower learning rate or inputs scaled to about [0, 1].")


class _one_training_call:
    """One training call per model at a time: a second one (another thread) raises instead of
    interleaving updates on shared buffers."""

    def __init__(self, model):
        self.lock = model._training_lock

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            raise RuntimeError("this model is already training (fit or train_on_batch in another thread); "
                               "one model trains in one call at a time")

    def __exit__(self, *exc):
        self.lock.release()


class _progress:
    """A tqdm bar for one epoch that refreshes its numbers a few times a second, not every step."""

    def __new__(cls, steps, description, verbose):
        if not verbose:
            return None
        return super().__new__(cls)

    def __init__(self, steps, description, verbose):
        from tqdm.auto import tqdm
        self._time = time.perf_counter
        self._last = 0.0
        self.bar = tqdm(total=steps, desc=description, unit="batch", leave=True, dynamic_ncols=True)

    def update(self, n, **numbers_):
        self.bar.update(n)
        now = self._time()
        if now - self._last > 0.25:
            self._last = now
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in numbers_.items()}, refresh=False)

    def close(self, logs):
        shown = {k: (f"{v:.3g}" if k == "lr" else f"{v:.4f}") for k, v in logs.items() if k != "seconds"}
        self.bar.set_postfix(shown, refresh=True)
        self.bar.close()
