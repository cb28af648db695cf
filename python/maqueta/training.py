"""The training loop behind ``Sequential.fit`` and ``train_on_batch``: arguments checked before
anything changes, one global shuffle per epoch, one forward/backward/update per batch through the
model's executor, divergence caught before it reaches the weights, callbacks told of every batch
and epoch, and a progress bar."""
from __future__ import annotations

import math
import numbers
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import numpy as np

from . import _core, data_parallel, losses
from .augment import Augmentation
from .callbacks import Callback, History
from .inputs import check_input, encode_labels
from .layers.base import positive_int
from .optim import Adam, Optimizer

__all__ = ["fit", "train_on_batch", "TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """A batch whose loss or gradients are not finite; its update was not applied. ``epoch`` and
    ``step`` count from 1."""

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch, self.step = epoch, step


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


@dataclass
class FitSetup:
    """A fit call's arguments, checked; nothing of the model has changed yet."""
    X: np.ndarray
    targets: np.ndarray
    classes: np.ndarray
    validation: tuple | None
    optimizer: Optimizer
    callbacks: list
    loss: object
    loss_fn: object
    epochs: int
    batch_size: int
    initial_epoch: int
    shuffle: bool
    augment: Augmentation | None


def check_fit(model, X, y, epochs, batch_size, optimizer, loss, shuffle, validation_data, validation_split,
              callbacks, initial_epoch, augment=None, distributed=False) -> FitSetup:
    """Every check of a fit call, before anything changes."""
    X = check_input(model, X)
    targets, classes = encode_labels(model, y, len(X), X.shape[1:])
    batch_size = positive_int(batch_size, "batch_size")
    epochs = _non_negative_int(epochs, "epochs")
    initial_epoch = _non_negative_int(initial_epoch, "initial_epoch")
    loss_fn = losses.get(loss)
    if (loss == "cross_entropy" or isinstance(loss, losses.CrossEntropy)) and model.layers[-1].activation == "softmax":
        raise ValueError("loss='cross_entropy' applies softmax to the model's outputs itself; remove the final "
                         "Softmax layer (predict_proba gives the probabilities)")
    if hasattr(loss_fn, "check_outputs"):
        loss_fn.check_outputs(model.output_units(X.shape[1:]))
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
    if augment is not None:
        if not isinstance(augment, Augmentation):
            raise TypeError(f"augment must be a maqueta.augment transform (Compose, RandomCrop, ...), got {augment!r}")
        augment.check(X.shape[1:])
    optimizer = _choose_optimizer(model, optimizer)
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {cb!r}")
    return FitSetup(X, targets, classes, validation, optimizer, callbacks, loss, loss_fn, epochs, batch_size,
                    initial_epoch, shuffle, augment)


def fit(model, *args, **kwargs):
    """See Sequential.fit."""
    with _one_training_call(model):
        return _fit(model, *args, **kwargs)


def train_on_batch(model, *args, **kwargs):
    """See Sequential.train_on_batch."""
    with _one_training_call(model):
        return _train_on_batch(model, *args, **kwargs)


def _fit(model, X, y, epochs=1, batch_size=32, optimizer=None, loss="cross_entropy", shuffle=True,
         validation_data=None, validation_split=0.0, verbose=1, callbacks=None, initial_epoch=0, augment=None,
         distributed=False):
    """With ``distributed``, every rank runs this on the same data (see maqueta.data_parallel); the
    loop below is the same, but a step trains on the rank's slice of the global batch and sums the
    gradients over the ranks."""
    group = data_parallel.group_for(distributed)
    arguments = (model, X, y, epochs, batch_size, optimizer, loss, shuffle, validation_data, validation_split,
                 callbacks, initial_epoch, augment, group is not None)
    setup = check_fit(*arguments) if group is None else group.agree(model, lambda: check_fit(*arguments))
    X, targets, validation, optimizer = setup.X, setup.targets, setup.validation, setup.optimizer
    epochs, batch_size, loss, loss_fn, augment = setup.epochs, setup.batch_size, setup.loss, setup.loss_fn, setup.augment
    _adopt(model, optimizer, loss, setup.classes)
    if group is not None:
        group.broadcast_state(model)
        verbose = verbose if group.rank == 0 else 0   # one progress bar for the job

    history = History()
    history.params = {"epochs": epochs, "batch_size": batch_size, "samples": len(X)}
    if group is not None:
        history.params["processes"] = group.size
    model.history = history
    everyone = [history, *setup.callbacks]
    # only callbacks that listen to batches are called per batch: the others cost nothing there
    batch_begin = [cb for cb in everyone if type(cb).on_batch_begin is not Callback.on_batch_begin]
    batch_end = [cb for cb in everyone if type(cb).on_batch_end is not Callback.on_batch_end]
    for cb in everyone:
        cb.set_model(model)
    model.stop_training = False
    n = len(X)
    steps = -(-n // batch_size)
    executor = model.executor
    try:
        with nullcontext() if group is None else group.failures_end_the_job():
            for cb in everyone:
                cb.on_train_begin()
            for epoch in range(setup.initial_epoch, epochs):
                for cb in everyone:
                    cb.on_epoch_begin(epoch)
                started = time.perf_counter()
                if group is not None:
                    group.position = (epoch, 0)
                order = model.state.shuffle_rng.permutation(n) if setup.shuffle else None
                bar = _progress(steps, f"Epoch {epoch + 1}/{epochs}", verbose)
                total_loss, correct, diverged = 0.0, 0, False
                model.train()
                for step in range(steps):
                    size = min(batch_size, n - step * batch_size)
                    for cb in batch_begin:
                        cb.on_batch_begin(step, {"size": size})
                    try:
                        if group is not None:
                            value, hits = data_parallel_step(model, group, X, targets, order, step * batch_size,
                                                             step * batch_size + size, loss_fn, epoch, step, augment)
                        else:
                            if order is None:
                                xb = X[step * batch_size:step * batch_size + size]
                                tb = targets[step * batch_size:step * batch_size + size]
                                if augment is not None:   # xb is a view of X: augment a copy in the run's batch array
                                    xb = _copy_into(executor.training_run(size).batch, xb)
                            else:
                                index = order[step * batch_size:(step + 1) * batch_size]
                                xb = np.take(X, index, axis=0, out=executor.training_run(size).batch)
                                tb = targets[index]
                            if augment is not None:
                                augment(xb, model.state.augment_rng)
                            value, hits = train_step(model, xb, tb, loss_fn, epoch, step)
                    except TrainingDiverged as error:
                        # every callback hears of it; any of them may end training here instead of raising
                        # (every rank decides alike: the checks read values summed over the ranks)
                        answers = [cb.on_divergence(step, error) for cb in everyone]
                        if not any(answers):
                            raise
                        model.stop_training = diverged = True
                        break
                    total_loss += value * size
                    correct += hits
                    for cb in batch_end:
                        cb.on_batch_end(step, {"loss": value, "accuracy": hits / size, "size": size})
                    if bar is not None:
                        seen = min(n, (step + 1) * batch_size)
                        bar.update(1, loss=total_loss / seen, accuracy=correct / seen)
                if diverged:   # an epoch cut short is not an epoch: no logs, no on_epoch_end
                    model.eval()
                    if bar is not None:
                        bar.bar.close()
                    break
                model.eval()
                logs = {"loss": total_loss / n, "accuracy": correct / n, "seconds": time.perf_counter() - started}
                if group is not None:
                    logs["allreduce_seconds"] = group.take_allreduce_seconds()
                if validation is not None:
                    evaluate = model.evaluate if group is None else partial(group.evaluate, model)
                    result = evaluate(validation[0], validation[1], batch_size=max(batch_size, 256), loss=loss)
                    logs["val_loss"], logs["val_accuracy"] = result["loss"], result["accuracy"]
                logs["lr"] = optimizer.lr
                model.epochs_trained = epoch + 1
                if bar is not None:
                    bar.close(logs)
                for cb in everyone:
                    cb.on_epoch_end(epoch, logs)
                if model.stop_training if group is None else group.end_epoch(model, epoch):
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
    if hasattr(loss_fn, "check_outputs"):
        loss_fn.check_outputs(model.output_units(x.shape[1:]))
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
            raise _diverged(f"the loss is {value}", epoch, step)
        hits = int(np.count_nonzero(outputs.argmax(axis=1) == tb))
        if not _core.all_finite(model.state.grads):
            raise _diverged("the gradients hold NaN or Inf", epoch, step)
        _update(model, model.state.grads, epoch, step)
    return value, hits


def _update(model, grads, epoch, step):
    model.optimizer.step(model.state.params, grads)
    if not _core.all_finite(model.state.params):   # finite gradients can still overflow the update
        raise FloatingPointError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: the update overflowed, so the weights "
            f"now hold NaN or Inf. Load the last checkpoint or saved weights (model.load_state_dict) before "
            f"going on, and lower the learning rate.")


def data_parallel_step(model, group, X, targets, order, start, stop, loss_fn, epoch, step, augment=None):
    """train_step on the global batch [start, stop) of the epoch's order, of which this rank
    computes its slice: the loss gradient is scaled by (slice size / global batch size) so that
    the sum over the ranks is the global batch's mean-loss gradient (a rank with an empty slice
    adds zeros). Returns the global batch's (mean loss, correct predictions), the same on every
    rank, and so are the divergence checks: they read the summed values.

    Layers that work per batch (batch norm, dropout) see the rank's offset into the global batch
    and reduce their statistics over the ranks (group.layer_allreduce); on a rank with an empty
    slice they still run, on no samples, to take part in those reductions and draws.

    With ``augment``, every rank gathers and augments the whole global batch, drawing from the
    generator all ranks share, as one process would, and trains on its slice of the result: the
    transforms are cheap next to a step, and this keeps the run independent of the ranks."""
    lo, hi = group.local_slice(start, stop)
    grads = model.state.grads
    if augment is not None:
        whole = group.global_batch(stop - start, X)
        if order is None:
            whole[...] = X[start:stop]
        else:
            np.take(X, order[start:stop], axis=0, out=whole)
        augment(whole, model.state.augment_rng)
    with np.errstate(over="ignore", invalid="ignore"):
        if hi > lo:
            if augment is not None:
                xb, tb = whole[lo - start:hi - start], targets[lo:hi] if order is None else targets[order[lo:hi]]
            elif order is None:
                xb, tb = X[lo:hi], targets[lo:hi]
            else:
                index = order[lo:hi]
                xb, tb = np.take(X, index, axis=0, out=model.executor.training_run(hi - lo).batch), targets[index]
            value, outputs = model.executor.gradients(xb, tb, _scaled_gradient(loss_fn, (hi - lo) / (stop - start)),
                                                      offset=lo - start, allreduce=group.layer_allreduce)
            loss_sum, hits = value * (hi - lo), int(np.count_nonzero(outputs.argmax(axis=1) == tb))
        else:
            grads.fill(0)
            model.executor.take_part_without_samples(group.layer_allreduce)
            loss_sum, hits = 0.0, 0
        loss_sum, hits = group.allreduce_gradients(grads, loss_sum, hits)
        value = loss_sum / (stop - start)
        if not math.isfinite(value):
            raise data_parallel.on_every_rank(_diverged(f"the loss is {value}", epoch, step))
        if not _core.all_finite(grads):
            raise data_parallel.on_every_rank(_diverged("the gradients hold NaN or Inf", epoch, step))
        try:
            _update(model, grads, epoch, step)
        except FloatingPointError as error:   # every rank updates alike, so every rank overflows alike
            raise data_parallel.on_every_rank(error) from None
    group.position = (epoch, step + 1)
    return value, hits


def _scaled_gradient(loss_fn, scale):
    """loss_fn whose gradient is multiplied by scale (the loss value is left as it is)."""
    if scale == 1.0:
        return loss_fn

    def scaled(outputs, targets):
        value, gradient = loss_fn(outputs, targets)
        gradient *= scale   # a fresh array from the loss, consumed by the backward pass at once
        return value, gradient
    return scaled


def _diverged(what, epoch, step):
    return TrainingDiverged(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {what}. The update was not applied: the "
        f"weights are those after the previous step. Try a lower learning rate or inputs scaled to about [0, 1].",
        epoch + 1, step + 1)


def _copy_into(out, values):
    np.copyto(out, values)
    return out


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
