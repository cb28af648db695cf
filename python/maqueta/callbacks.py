"""Training callbacks and the History that ``fit`` returns, following Keras: EarlyStopping,
LearningRateScheduler, ReduceLROnPlateau, ModelCheckpoint, CSVLogger and TerminateOnNaN."""
from __future__ import annotations

import csv
import math
import numbers
import os
import string

import numpy as np

__all__ = ["Callback", "History", "EarlyStopping", "LearningRateScheduler", "ReduceLROnPlateau",
           "ModelCheckpoint", "CSVLogger", "TerminateOnNaN"]


class Callback:
    """Override the events you need. ``self.model`` is set when training begins; setting
    ``self.model.stop_training = True`` ends training after the current epoch.

    Batch events get logs too: ``on_batch_begin`` {"size"}, ``on_batch_end`` {"loss", "accuracy",
    "size"} of that batch alone. Only callbacks that override them are called per batch."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    def on_divergence(self, batch, error) -> bool:
        """Called when the loss or the gradients of batch ``batch`` are not finite, before any
        update (``error``: the FloatingPointError fit would raise, with ``.epoch`` and ``.step``
        counted from 1). Return True to end training there instead of raising; fit then stops
        as if ``stop_training`` had been set, without ending the epoch."""
        return False


class History(Callback):
    """``history[name]`` is the list of per-epoch values of loss, accuracy, val_loss, val_accuracy,
    lr and seconds (the epoch's training time, validation excluded)."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; optionally
    put back the weights of the best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", restore_best_weights=False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.restore_best_weights = restore_best_weights
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None
        self.best_epoch = None
        self.stopped_epoch = None

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which is not among the logged values "
                           f"{sorted(logs)} (val_ values need validation data)")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_flat_parameters().copy()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch is not None:
            self.model.set_flat_parameters(self.best_weights)


class LearningRateScheduler(Callback):
    """Before each epoch, set the optimizer's lr to ``schedule(epoch, lr)`` (epochs count from 0)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError("schedule must be callable as schedule(epoch, lr) -> lr")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = float(self.schedule(epoch, optimizer.lr))
        if not np.isfinite(lr) or lr < 0:
            raise ValueError(f"the schedule returned lr={lr!r} for epoch {epoch}")
        optimizer.lr = lr


def _monitor_mode(mode, monitor):
    """Keras's rule: 'auto' maximises metrics whose name holds 'acc' and minimises the rest."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode if mode != "auto" else ("max" if "acc" in monitor else "min")


def _monitored(logs, monitor, who):
    if monitor not in logs:
        raise KeyError(f"{who} monitors {monitor!r}, which is not among the logged values {sorted(logs)} "
                       f"(val_ values need validation data)")
    return logs[monitor]


def _count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _non_negative(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's lr by ``factor`` once ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, as Keras does: after a reduction, ``cooldown`` epochs
    pass before waiting starts again, and lr never goes below ``min_lr``. The epoch's logs keep
    under "lr" the lr that epoch trained with (as in Keras); a reduction shows in the next epoch's."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0, verbose=0):
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1): lr is multiplied by it, got {factor!r}")
        self.monitor = str(monitor)
        self.factor = float(factor)
        self.patience = _count(patience, "patience")
        self.mode = _monitor_mode(mode, self.monitor)
        self.min_delta = _non_negative(min_delta, "min_delta")
        self.cooldown = _count(cooldown, "cooldown")
        self.min_lr = _non_negative(min_lr, "min_lr")
        self.verbose = verbose
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["lr"] = optimizer.lr
        value = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and optimizer.lr > self.min_lr:
                optimizer.lr = max(optimizer.lr * self.factor, self.min_lr)
                self.cooldown_counter, self.wait = self.cooldown, 0
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate to {optimizer.lr:.6g}.")


class ModelCheckpoint(Callback):
    """Save the model with ``model.save(path, include_optimizer=...)`` (atomic) after every epoch,
    or only when ``monitor`` improves (``save_best_only``), as Keras does.

    filepath: may hold ``{epoch}`` (counted from 1) and the logged values as format fields, e.g.
        "ckpt-{epoch:02d}-{val_loss:.4f}.maq". save_freq: "epoch", or an int n to save every n
        batches instead (the fields are then the batch's loss and accuracy, and the epoch's number).
    include_optimizer: save the optimizer and training state too, so the file resumes training.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", save_freq="epoch",
                 include_optimizer=True, verbose=0):
        filepath = os.fspath(filepath)
        try:
            self.fields = {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(filepath)
                           if name is not None}
        except ValueError as error:
            raise ValueError(f"filepath {filepath!r} is not a valid format string: {error}") from None
        if "" in self.fields or any(name.isdigit() for name in self.fields):
            raise ValueError(f"filepath {filepath!r} may only hold named fields such as {{epoch}} or {{val_loss:.4f}}")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral)
                                     or save_freq < 1):
            raise ValueError(f"save_freq must be 'epoch' or an int >= 1 (batches), got {save_freq!r}")
        self.filepath = filepath
        self.monitor = str(monitor)
        self.save_best_only = bool(save_best_only)
        self.mode = _monitor_mode(mode, self.monitor)
        self.save_freq = save_freq
        self.include_optimizer = bool(include_optimizer)
        self.verbose = verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved = []   # the paths written, in order
        self._epoch = 0
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs or {})

    def on_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, logs or {})

    def _save(self, epoch, logs):
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            improved = value < self.best if self.mode == "min" else value > self.best
            if not improved:
                return
            self.best = value
        missing = sorted(self.fields - set(logs) - {"epoch"})
        if missing:
            raise KeyError(f"ModelCheckpoint filepath {self.filepath!r} names {missing}, which are not among the "
                           f"logged values {sorted(logs)}")
        path = self.filepath.format(**{**logs, "epoch": epoch + 1})
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)   # as Keras: "runs/{epoch}.maq" may name a new folder
        self.model.save(path, include_optimizer=self.include_optimizer)
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved the model to {path}")


class CSVLogger(Callback):
    """One row per epoch to ``filename``: "epoch" (counted from 0, as Keras) then the logged values
    in sorted order; the header is written once, also when ``append`` continues a file that has
    one. The file is opened for each row, so every row is on disk when the epoch ends."""

    def __init__(self, filename, separator=",", append=False):
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, got {separator!r}")
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = bool(append)
        self.columns = self.existing = None

    def on_train_begin(self, logs=None):
        self.columns = None
        self.existing = None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self.existing = header or None
        else:
            open(self.filename, "w").close()   # a fresh file even if no epoch completes

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.columns is None:
            self.columns = ["epoch", *sorted(logs)]
            if self.existing is not None and self.existing != self.columns:
                raise ValueError(f"CSVLogger: {self.filename} has the columns {self.existing}, but this run logs "
                                 f"{self.columns}; append to a file with the same columns, or start a new one")
        with open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator, lineterminator="\n")
            if self.existing is None:
                writer.writerow(self.columns)
                self.existing = self.columns
            writer.writerow([epoch, *(logs.get(key, "NA") for key in self.columns[1:])])


class TerminateOnNaN(Callback):
    """End training at the first batch whose loss or gradients are NaN or Inf, instead of raising:
    that update is not applied (the weights are those after the previous step), the epoch is not
    ended (no on_epoch_end, so History and checkpoints keep only whole epochs), on_train_end is
    still called and fit returns its History. The reason is printed and kept in ``self.reason``;
    ``stopped_epoch`` and ``stopped_batch`` count from 0. An update that overflows finite
    weights into NaN still raises: those weights cannot be kept."""

    def __init__(self):
        self.reason = self.stopped_epoch = self.stopped_batch = None

    def on_train_begin(self, logs=None):
        self.reason = self.stopped_epoch = self.stopped_batch = None

    def on_divergence(self, batch, error):
        self.reason = str(error)
        self.stopped_epoch, self.stopped_batch = error.epoch - 1, batch
        print(f"Batch {batch}: invalid loss, terminating training. {error}")
        return True
