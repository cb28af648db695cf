"""The Sequential model: a stack of layers with fit / evaluate / predict, following Keras and PyTorch.

All parameters of a model live in one flat buffer (``layer.weight`` and ``layer.bias`` are views
into it), and so do their gradients, so that an optimizer step is a single kernel call.
"""
from __future__ import annotations

import math
import numbers
import time
from collections import OrderedDict

import numpy as np

from . import _core, losses
from .callbacks import Callback, History
from .layers import Conv2D, Dense, Layer, Softmax, _fmt
from .optim import Adam, Optimizer
from .plan import Buffers, Plan, lane_width

__all__ = ["Sequential"]

_CHUNK = 4096  # samples per chunk when scanning or predicting, to bound temporary memory


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class Sequential:
    """A stack of layers applied in order.

    layers: list of Layer instances (each may belong to one model only).
    seed: int; parameters are drawn from it as PyTorch's defaults draw them (uniform in
        +-1/sqrt(fan_in)), and so is the order of shuffled batches.
    dtype: "float32" (default) or "float64": of the parameters and of every computation.
    input_shape: optional (C, H, W) or (features,) of one sample; when given, the whole stack is
        checked at construction, else at the first call.
    """

    def __init__(self, layers, seed=0, dtype="float32", input_shape=None):
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {layer!r}, not a maqueta layer (Conv2D, Dense, ReLU, ...)")
            if layer._model is not None:
                raise ValueError(f"layer {i} ({layer!r}) already belongs to another model; create a new layer")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.layers = layers
        self.seed = int(seed)
        self.classes_ = None
        self.optimizer = None
        self.loss = "cross_entropy"
        self.stop_training = False
        self.epochs_trained = 0
        self.history = None
        self.metadata = {}  # JSON-ready notes saved with the model (preprocessing, run settings)
        self._shuffle_rng = np.random.default_rng([self.seed, 1])
        self._checked = {}  # input shape -> per-layer output shapes

        # One buffer for every parameter and one for every gradient, both in state_dict order.
        total = sum(int(np.prod(shape)) for layer in layers for shape in layer.parameter_shapes().values())
        self._params = np.zeros(total, self.dtype)
        self._grads = np.zeros(total, self.dtype)
        self._layer_grads = [dict() for _ in layers]
        self._keys = []  # (state_dict key, layer, parameter name)
        init_rng = np.random.default_rng([self.seed, 0])
        offset = 0
        for i, layer in enumerate(layers):
            layer.index = i
            values = layer.initial_parameters(init_rng)
            for name, shape in layer.parameter_shapes().items():
                size = int(np.prod(shape))
                layer._params[name] = self._params[offset:offset + size].reshape(shape)
                layer._params[name][...] = values[name]
                self._layer_grads[i][name] = self._grads[offset:offset + size].reshape(shape)
                self._keys.append((f"{i}.{name}", layer, name))
                offset += size
        trainable = [i for i, layer in enumerate(layers) if layer.parameter_shapes()]
        self._first_trainable = trainable[0] if trainable else len(layers)
        self._plan = Plan(layers)
        self._train_buffers = {}   # batch size -> Buffers, used by the training thread only

        self.input_shape = None
        try:
            if input_shape is not None:
                self.input_shape = tuple(_positive_int(s, "input_shape entries") for s in input_shape)
                self._shapes(self.input_shape)
            elif self._input_template() is not None:
                self._shapes(self._input_template(), record=False)
        except Exception:
            for layer in layers:  # leave the layers free for a corrected model
                layer._params, layer.index = {}, None
            raise
        for layer in layers:
            layer._model = self

    # ------------------------------------------------------------------ shapes and checks
    def _input_template(self):
        first = self.layers[0]
        if isinstance(first, Conv2D):
            return (first.in_channels, None, None)
        if isinstance(first, Dense):
            return (first.in_features,)
        return None

    def _shapes(self, input_shape, record=True):
        """Output shape of every layer for one sample of input_shape (raises on a mismatch)."""
        input_shape = tuple(input_shape)
        if input_shape in self._checked:
            return self._checked[input_shape]
        shapes, shape = [], input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        if record and None not in input_shape:
            self._checked[input_shape] = shapes
            if self.input_shape is None:
                self.input_shape = input_shape
        return shapes

    def _check_input(self, X, name="X", finite=True):
        """X as a C-contiguous array of the model's dtype, checked against the first layer."""
        if isinstance(X, (str, bytes)) or X is None:
            raise TypeError(f"{name} must be an array of samples, got {type(X).__name__}")
        try:
            array = np.asarray(X)
        except Exception as error:  # e.g. ragged nested lists
            raise TypeError(f"{name} could not be read as an array: {error}") from None
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
        if array.ndim < 2:
            raise ValueError(f"{name} must have a batch dimension first, got shape {array.shape}; "
                             f"for a single sample use {name}[None]")
        if array.shape[0] == 0:
            raise ValueError(f"{name} holds no samples: shape {array.shape}")
        try:
            self._shapes(array.shape[1:])
        except ValueError as error:
            raise ValueError(f"{name} has shape {array.shape}: {error}") from None
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if finite and not _core.all_finite(array):   # one native pass; NumPy only to find the culprit
            for start in range(0, len(array), _CHUNK):
                chunk = array[start:start + _CHUNK]
                if not np.isfinite(chunk).all():
                    bad = start + int(np.argmax(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)))
                    raise ValueError(f"{name} contains NaN or Inf (first in sample {bad})")
        return array

    def _output_units(self, input_shape):
        out = self._shapes(input_shape)[-1]
        if len(out) != 1:
            raise ValueError(f"the model's output has shape {_fmt(out)}; classification needs (N, K): "
                             f"end the model with Flatten and Dense layers")
        return out[0]

    def _classes_for(self, y, units):
        """The sorted class labels a fresh model learns from y: 0..K-1 when y holds such ints."""
        classes = np.unique(y)
        if y.dtype.kind in "biu" and classes[0] >= 0 and classes[-1] < units:
            return np.arange(units, dtype=np.int64)
        if len(classes) != units:
            shown = ", ".join(map(str, classes[:12].tolist())) + (", ..." if len(classes) > 12 else "")
            raise ValueError(f"y has {len(classes)} distinct labels ({shown}) but the model's last layer has "
                             f"{units} outputs: labels must be 0..{units - 1}, or exactly {units} distinct values")
        return classes

    def _targets(self, y, n, input_shape, learn=False):
        """Class indices in [0, K) for labels y, checked against X's length and the known classes."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-D array of class labels, got shape {y.shape}"
                             + ("; for one-hot targets pass y.argmax(axis=1)" if y.ndim == 2 else ""))
        if len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)} labels")
        if y.dtype.kind == "f":
            if not np.isfinite(y).all() or not np.all(y == np.round(y)):
                raise ValueError("y must hold class labels (integers); it holds non-integer or non-finite values")
            y = y.astype(np.int64)
        elif y.dtype.kind not in "biuUS":
            raise TypeError(f"y must hold integer (or string) class labels, got dtype {y.dtype}")
        units = self._output_units(input_shape)
        classes = self.classes_
        if classes is None:
            classes = self._classes_for(y, units)
            if learn:
                self.classes_ = classes
        at = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
        unknown = classes[at] != y
        if unknown.any():
            first = int(np.argmax(unknown))
            raise ValueError(f"y holds labels outside the model's classes {classes[:12].tolist()}"
                             f"{' ...' if len(classes) > 12 else ''}: e.g. {y[first].item()!r} at position {first}")
        return at.astype(np.intp)

    # ------------------------------------------------------------------ inference
    def forward(self, x):
        """Outputs (logits) for x: ndarray (N, C, H, W) or (N, features). Does not change the model."""
        x = self._check_input(x, "x")
        return self._forward(x)

    __call__ = forward

    def _forward(self, x, buffers=None):
        """Outputs for x; with buffers (of x's batch size) the steps write into them."""
        layers, steps = self.layers, self._plan.steps
        start = 0
        if buffers is not None and buffers.lanes is not None:
            x = buffers.lanes.forward(self, x, [None] * len(steps))
            start = self._plan.lane_steps
        for k in range(start, len(steps)):
            step = steps[k]
            x, _ = layers[step.index].forward(x, training=False, **(buffers.forward[k] if buffers is not None else
                                                                    {"relu": True} if step.fused_relu else {}))
        return x

    def _outputs_in_batches(self, X, batch_size):
        """(start, outputs) for each batch of X (already checked). The outputs live in buffers that
        the next batch overwrites, and that belong to this call alone, so concurrent predictions
        never share them."""
        batch_size = _positive_int(batch_size, "batch_size")
        buffers = None
        for s in range(0, len(X), batch_size):
            chunk = X[s:s + batch_size]
            if buffers is None or len(chunk) != buffers.n:
                buffers = Buffers(self, len(chunk), training=False)
            yield s, self._forward(chunk, buffers)

    def _batched(self, X, batch_size, fn):
        X = self._check_input(X)
        return np.concatenate([fn(out) for _, out in self._outputs_in_batches(X, batch_size)])

    def predict_proba(self, X, batch_size=256):
        """Softmax of the outputs: ndarray (N, K) of class probabilities, rows summing to 1."""
        return self._batched(X, batch_size, losses.softmax)

    def predict(self, X, batch_size=256):
        """Predicted class labels, ndarray (N,) of values from ``classes_`` (0..K-1 before training)."""
        indices = self._batched(X, batch_size, lambda out: out.argmax(axis=1))
        return indices if self.classes_ is None else self.classes_[indices]

    def evaluate(self, X, y, batch_size=256, loss=None):
        """{"loss": mean loss, "accuracy": fraction correct} on (X, y), in inference mode."""
        X = self._check_input(X)
        targets = self._targets(y, len(X), X.shape[1:])
        loss_fn = losses.get(loss or self.loss)
        total_loss, correct = 0.0, 0
        for s, out in self._outputs_in_batches(X, batch_size):
            value, _ = loss_fn(out, targets[s:s + len(out)])
            total_loss += value * len(out)
            correct += int(np.count_nonzero(out.argmax(axis=1) == targets[s:s + len(out)]))
        return {"loss": total_loss / len(X), "accuracy": correct / len(X)}

    def accuracy(self, X, y, batch_size=256):
        """Fraction of samples of X whose predicted label equals y."""
        return self.evaluate(X, y, batch_size)["accuracy"]

    # ------------------------------------------------------------------ training
    def fit(self, X, y, epochs=1, batch_size=32, optimizer=None, loss="cross_entropy", shuffle=True,
            validation_data=None, validation_split=0.0, verbose=1, callbacks=None, initial_epoch=0):
        """Train on (X, y) in minibatches; returns a History (also kept as ``model.history``).

        X: ndarray (N, C, H, W) or (N, features); y: (N,) class labels (any integers, or strings;
        mapped through the sorted labels kept in ``classes_``). The last partial batch is trained on.
        optimizer: an Optimizer (default: the model's current one, else Adam()); its state carries
        over between calls. loss: "cross_entropy" (on logits) or "mse". validation_data: (X_val,
        y_val); else validation_split holds out that last fraction of X, as Keras does. verbose: 1
        shows a progress bar per epoch, 0 nothing. callbacks: list of Callback. initial_epoch: the
        epoch to start from when resuming (epochs is the index of the last epoch plus one).
        """
        X = self._check_input(X)
        targets = self._targets(y, len(X), X.shape[1:], learn=True)
        batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or initial_epoch < 0:
            raise ValueError(f"initial_epoch must be an int >= 0, got {initial_epoch!r}")
        loss_fn = losses.get(loss)
        if loss == "cross_entropy" and isinstance(self.layers[-1], Softmax):
            raise ValueError("loss='cross_entropy' applies softmax to the model's outputs itself; remove the final "
                             "Softmax layer (predict_proba gives the probabilities)")
        validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            X_val = self._check_input(validation_data[0], "validation_data[0]")
            validation = (X_val, validation_data[1])
            self._targets(validation_data[1], len(X_val), X_val.shape[1:])
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split!r}")
            cut = int(len(X) * (1.0 - validation_split))
            if cut < 1 or cut >= len(X):
                raise ValueError(f"validation_split={validation_split} leaves no samples for training or validation "
                                 f"out of {len(X)}")
            validation = (X[cut:], np.asarray(y)[cut:])
            X, targets = X[:cut], targets[:cut]
        optimizer = self._take_optimizer(optimizer, loss)
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {cb!r}")

        history = History()
        history.params = {"epochs": epochs, "batch_size": batch_size, "samples": len(X)}
        self.history = history
        everyone = [history, *callbacks]
        for cb in everyone:
            cb.set_model(self)
        self.stop_training = False
        for cb in everyone:
            cb.on_train_begin()
        n = len(X)
        steps = -(-n // batch_size)
        for epoch in range(initial_epoch, epochs):
            for cb in everyone:
                cb.on_epoch_begin(epoch)
            started = time.perf_counter()
            order = self._shuffle_rng.permutation(n) if shuffle else None
            bar = _progress(steps, f"Epoch {epoch + 1}/{epochs}", verbose)
            total_loss, correct = 0.0, 0
            for step in range(steps):
                if order is None:
                    xb, tb = X[step * batch_size:(step + 1) * batch_size], targets[step * batch_size:(step + 1) * batch_size]
                else:
                    index = order[step * batch_size:(step + 1) * batch_size]
                    xb = np.take(X, index, axis=0, out=self._buffers(len(index)).batch)
                    tb = targets[index]
                value, hits = self._train_step(xb, tb, loss_fn, epoch, step)
                total_loss += value * len(tb)
                correct += hits
                if bar is not None:
                    seen = min(n, (step + 1) * batch_size)
                    bar.update(1, loss=total_loss / seen, accuracy=correct / seen)
            logs = {"loss": total_loss / n, "accuracy": correct / n, "seconds": time.perf_counter() - started}
            if validation is not None:
                result = self.evaluate(validation[0], validation[1], batch_size=max(batch_size, 256), loss=loss)
                logs["val_loss"], logs["val_accuracy"] = result["loss"], result["accuracy"]
            logs["lr"] = optimizer.lr
            self.epochs_trained = epoch + 1
            if bar is not None:
                bar.close(logs)
            for cb in everyone:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in everyone:
            cb.on_train_end()
        return history

    def train_on_batch(self, x, y, optimizer=None, loss="cross_entropy"):
        """One update on exactly this batch (as Keras's train_on_batch); returns its loss before
        the update. The optimizer defaults to the model's current one, else Adam()."""
        x = self._check_input(x, "x")
        targets = self._targets(y, len(x), x.shape[1:], learn=True)
        optimizer = self._take_optimizer(optimizer, loss)
        value, _ = self._train_step(x, targets, losses.get(loss), self.epochs_trained, optimizer.iterations)
        return value

    def _take_optimizer(self, optimizer, loss):
        """The optimizer a training call uses (the given one, else the model's, else Adam()),
        bound to this model's parameters and kept, with the loss's name, for the next call."""
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None else Adam()
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a maqueta optimizer (Adam, SGD), got {optimizer!r}")
        optimizer.bind(self._params.size, self.dtype)
        self.optimizer = optimizer
        self.loss = loss if isinstance(loss, str) else self.loss
        return optimizer

    def _train_step(self, xb, tb, loss_fn, epoch, step):
        """One forward, backward and update on a batch; returns (loss, correct predictions).
        Overflow is checked for explicitly below (and reported with its epoch and step), so NumPy's
        own warnings about it are silenced."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._train_step_unchecked(xb, tb, loss_fn, epoch, step)

    def _buffers(self, n):
        buffers = self._train_buffers.get(n)
        if buffers is None or buffers.key != (n, lane_width(self, n)):   # the backend or ISA may change
            if len(self._train_buffers) >= 4:   # a few batch sizes at most (full and last partial)
                self._train_buffers.clear()
            buffers = self._train_buffers[n] = Buffers(self, n, training=True)
        return buffers

    def _gradients(self, xb, tb, loss_fn):
        """Forward and backward on one batch, leaving the gradients in the flat buffer; returns
        (loss, outputs). The outputs live in reused buffers: read them before the next call."""
        layers, steps = self.layers, self._plan.steps
        buffers = self._buffers(len(xb))
        caches = [None] * len(steps)
        lanes = buffers.lanes
        start = self._plan.lane_steps if lanes is not None else 0
        a = lanes.forward(self, xb, caches) if lanes is not None else xb
        for k in range(start, len(steps)):
            a, caches[k] = layers[steps[k].index].forward(a, training=True, **buffers.forward[k])
        value, d = loss_fn(a, tb)
        for k in range(len(steps) - 1, start - 1, -1):
            i = steps[k].index
            if i < self._first_trainable:
                return value, a   # nothing before the first trainable layer needs a gradient
            d = layers[i].backward(d, caches[k], self._layer_grads[i], need_dx=i > self._first_trainable,
                                   **buffers.backward[k])
        if lanes is not None:
            lanes.backward(self, d, caches)
        return value, a

    def _train_step_unchecked(self, xb, tb, loss_fn, epoch, step):
        value, outputs = self._gradients(xb, tb, loss_fn)
        if not math.isfinite(value):
            self._diverged(f"the loss is {value}", epoch, step)
        hits = int(np.count_nonzero(outputs.argmax(axis=1) == tb))
        if not _core.all_finite(self._grads):
            self._diverged("the gradients hold NaN or Inf", epoch, step)
        self.optimizer.step(self._params, self._grads)
        return value, hits

    def _diverged(self, what, epoch, step):
        raise FloatingPointError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: {what}. The update was not applied: the "
            f"weights are those after the previous step. Try a lower learning rate or inputs scaled to about [0, 1].")

    # ------------------------------------------------------------------ parameters
    def count_params(self) -> int:
        return int(self._params.size)

    def get_flat_parameters(self):
        """The buffer every parameter lives in (a view: copy it to keep a snapshot)."""
        return self._params

    def set_flat_parameters(self, values):
        values = np.asarray(values)
        if values.shape != self._params.shape:
            raise ValueError(f"expected {self._params.size} parameters, got shape {values.shape}")
        self._params[...] = values

    def state_dict(self):
        """OrderedDict of parameter copies keyed as torch.nn.Sequential keys them ("0.weight", ...)."""
        return OrderedDict((key, layer._params[name].copy()) for key, layer, name in self._keys)

    def load_state_dict(self, state):
        """Copy parameters in from a mapping with exactly this model's keys and shapes (all or nothing).
        Values may be NumPy arrays or anything np.asarray accepts (a CPU torch tensor, say)."""
        expected = {key: (layer, name) for key, layer, name in self._keys}
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the model: missing keys {missing}, unexpected keys {unexpected}")
        staged = []
        for key, (layer, name) in expected.items():
            value = np.asarray(state[key])
            target = layer._params[name]
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, but {layer.describe()} needs {target.shape}")
            if value.dtype.kind not in "biuf":
                raise TypeError(f"state_dict[{key!r}] has dtype {value.dtype}; expected floating-point numbers")
            if not np.isfinite(value).all():
                raise ValueError(f"state_dict[{key!r}] contains NaN or Inf")
            staged.append((target, value))
        for target, value in staged:
            target[...] = value

    # ------------------------------------------------------------------ description and files
    def summary(self, print_fn=print):
        """Print a table of layers, output shapes and parameter counts (LeNet-5: 61,706)."""
        shapes = None
        if self.input_shape is not None:
            shapes = self._shapes(self.input_shape)
        rows = [("#", "Layer", "Output shape", "Params")]
        for i, layer in enumerate(self.layers):
            count = sum(int(np.prod(s)) for s in layer.parameter_shapes().values())
            rows.append((str(i), repr(layer), _fmt(shapes[i]) if shapes else "?", f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)
        text = [f"Sequential ({self.dtype.name}, seed {self.seed}"
                + (f", input {_fmt(self.input_shape)})" if self.input_shape else ")"), line]
        for j, row in enumerate(rows):
            text.append(f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}")
            if j == 0:
                text.append(line)
        text += [line, f"Total parameters: {self.count_params():,}"]
        print_fn("\n".join(text))

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], dtype={self.dtype.name!r}, seed={self.seed})"

    def export_onnx(self, path, opset=17, probabilities=False, input_shape=None):
        """Write this model as an ONNX file (needs ``pip install onnx``) and return the onnx.ModelProto:
        input ``input`` with a free batch dimension, output ``logits`` (``probabilities`` after a
        final Softmax when asked). See maqueta.onnx.export."""
        from .onnx import export
        return export(self, path, opset=opset, probabilities=probabilities, input_shape=input_shape)

    def save(self, path, include_optimizer=False, metadata=None):
        """Write the architecture, weights, ``metadata`` (default: ``self.metadata``) and, when
        asked, optimizer and training state to one file, atomically. Loading it never runs code;
        see maqueta.load."""
        from .io import save_model
        save_model(self, path, include_optimizer=include_optimizer, metadata=metadata)


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
