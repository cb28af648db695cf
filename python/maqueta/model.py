"""The Sequential model: a stack of layers with fit / evaluate / predict, following Keras and PyTorch.

The model ties the pieces together, each in its own module: its numbers live in a ``ModelState``
(state.py), it runs through an ``Executor`` (executor.py) that walks the layers' own methods,
training is training.py's loop, data checks and labels are inputs.py's, and files are io.py's.
"""
from __future__ import annotations

import numbers
import threading

import numpy as np

from . import io, losses, training
from .executor import Executor
from .inputs import check_input, encode_labels
from .layers import LAYERS, Layer
from .layers.base import format_shape, positive_int
from .optim import OPTIMIZERS
from .state import ModelState

__all__ = ["Sequential", "load"]


class Sequential:
    """A stack of layers applied in order.

    layers: list of Layer instances (each may belong to one model only, and only once).
    seed: int; parameters are drawn from it as PyTorch's defaults draw them (uniform in
        +-1/sqrt(fan_in)), and so are the order of shuffled batches and any random masks.
    dtype: "float32" (default) or "float64": of the parameters and of every computation.
    input_shape: optional (C, H, W) or (features,) of one sample; when given, the whole stack is
        checked at construction, else at the first call.

    A model is in evaluation mode unless it is training: ``fit`` and ``train_on_batch`` switch it
    to training mode for their steps and back; ``model.train()`` and ``model.eval()`` switch it by
    hand, which only changes what ``model(x)`` computes for layers that differ between the modes.
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
            if any(other is layer for other in layers[:i]):
                raise ValueError(f"layer {i} ({layer!r}) is the same object as an earlier layer; a layer appears "
                                 f"once in one model (to reuse weights, create a new layer and copy them)")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        self.dtype = _model_dtype(dtype)
        self.layers = layers
        self.seed = int(seed)
        self.input_shape = None
        self._checked = {}  # input shape -> per-layer output shapes
        for i, layer in enumerate(layers):
            layer.index = i
        try:   # check the stack before any array exists
            if input_shape is not None:
                self.input_shape = tuple(positive_int(s, "input_shape entries") for s in input_shape)
                self.layer_shapes(self.input_shape)
            elif layers[0].input_template() is not None:
                self.layer_shapes(layers[0].input_template(), record=False)
        except Exception:
            for layer in layers:  # leave the layers free for a corrected model
                layer.index = None
            raise
        self.classes_ = None
        self.optimizer = None
        self.loss = "cross_entropy"
        self.stop_training = False
        self.epochs_trained = 0
        self.history = None
        self.metadata = {}  # JSON-ready notes saved with the model (preprocessing, run settings)
        self.training = False
        self._training_lock = threading.Lock()
        self.state = ModelState(layers, self.dtype, self.seed)
        trainable = [i for i, layer in enumerate(layers) if layer.parameter_shapes()]
        self.first_trainable = trainable[0] if trainable else len(layers)
        for layer in layers:
            layer._model = self
        self.executor = Executor(self)

    # ------------------------------------------------------------------ mode and shapes
    def train(self):
        """Training mode for ``model(x)``: layers use batch statistics and draw random masks."""
        self.training = True
        return self

    def eval(self):
        """Evaluation mode (the default): layers use their running statistics and no randomness."""
        self.training = False
        return self

    def layer_shapes(self, input_shape, record=True):
        """Output shape of every layer for one sample of input_shape (raises on a mismatch). The
        first full shape seen becomes the model's ``input_shape``; other sizes are refused."""
        input_shape = tuple(input_shape)
        if input_shape in self._checked:
            return self._checked[input_shape]
        shapes, shape = [], input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        if record and self.input_shape is not None and None not in input_shape and input_shape != self.input_shape:
            raise ValueError(f"the model takes samples of shape {format_shape(self.input_shape)}, got "
                             f"{format_shape(input_shape)}")
        if record and None not in input_shape:
            self._checked[input_shape] = shapes
            if self.input_shape is None:
                self.input_shape = input_shape
        return shapes

    def output_units(self, input_shape):
        """K, the number of outputs (classes) per sample; raises unless the model ends in (N, K)."""
        out = self.layer_shapes(input_shape)[-1]
        if len(out) != 1:
            raise ValueError(f"the model's output has shape {format_shape(out)}; classification needs (N, K): "
                             f"end the model with Flatten and Dense layers")
        return out[0]

    # ------------------------------------------------------------------ inference
    def forward(self, x):
        """Outputs (logits) for x: ndarray (N, C, H, W) or (N, features), in the current mode."""
        x = check_input(self, x, "x")
        return self.executor.forward(x, self.training)

    __call__ = forward

    def _outputs_in_batches(self, X, batch_size):
        """(start, outputs) for each batch of X (already checked), in evaluation mode. The outputs
        live in arrays that the next batch overwrites and that belong to this call alone, so
        concurrent predictions never share them."""
        batch_size = positive_int(batch_size, "batch_size")
        run = None
        for s in range(0, len(X), batch_size):
            chunk = X[s:s + batch_size]
            if run is None or len(chunk) != run.n:
                run = self.executor.run(len(chunk), X.shape[1:])
            yield s, run.forward(chunk)

    def _batched(self, X, batch_size, fn):
        X = check_input(self, X)
        return np.concatenate([fn(out) for _, out in self._outputs_in_batches(X, batch_size)])

    def predict_proba(self, X, batch_size=256):
        """Softmax of the outputs: ndarray (N, K) of class probabilities, rows summing to 1."""
        return self._batched(X, batch_size, losses.softmax)

    def predict(self, X, batch_size=256):
        """Predicted class labels, ndarray (N,) of values from ``classes_`` (0..K-1 before training)."""
        indices = self._batched(X, batch_size, lambda out: out.argmax(axis=1))
        return indices if self.classes_ is None else self.classes_[indices]

    def evaluate(self, X, y, batch_size=256, loss=None):
        """{"loss": mean loss, "accuracy": fraction correct} on (X, y), in evaluation mode."""
        X = check_input(self, X)
        targets, _ = encode_labels(self, y, len(X), X.shape[1:])
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
            validation_data=None, validation_split=0.0, verbose=1, callbacks=None, initial_epoch=0, augment=None,
            distributed=False):
        """Train on (X, y) in minibatches; returns a History (also kept as ``model.history``).

        X: ndarray (N, C, H, W) or (N, features); y: (N,) class labels (any integers, or strings;
        mapped through the sorted labels kept in ``classes_``). The last partial batch is trained on.
        optimizer: an Optimizer (default: the model's current one, else Adam()); its state carries
        over between calls. loss: "cross_entropy" (on logits) or "mse". validation_data: (X_val,
        y_val); else validation_split holds out that last fraction of X, as Keras does. verbose: 1
        shows a progress bar per epoch, 0 nothing. callbacks: list of Callback (told of every
        batch and epoch). initial_epoch: the epoch to start from when resuming (epochs is the
        index of the last epoch plus one). augment: a ``maqueta.augment`` transform (``Compose([...])``)
        applied to each training batch as it is gathered, never to validation data, drawing from
        the model's own generator (so a resumed run stays exact). distributed: True to train
        data-parallel with the other processes of an MPI job (or an mpi4py communicator for some
        of them; see maqueta.distributed): every rank calls fit with the same data and settings,
        batch_size is the global batch, and the weights after each step are those one process
        would have. Only rank 0 shows the progress bar. Every argument is checked before the
        model changes.
        """
        return training.fit(self, X, y, epochs, batch_size, optimizer, loss, shuffle, validation_data,
                            validation_split, verbose, callbacks, initial_epoch, augment, distributed)

    def train_on_batch(self, x, y, optimizer=None, loss="cross_entropy"):
        """One update on exactly this batch (as Keras's train_on_batch); returns its loss before
        the update. The optimizer defaults to the model's current one, else Adam()."""
        return training.train_on_batch(self, x, y, optimizer, loss)

    # ------------------------------------------------------------------ parameters and state
    def count_params(self) -> int:
        return int(self.state.params.size)

    def get_flat_parameters(self):
        """The buffer every parameter lives in (a view: copy it to keep a snapshot)."""
        return self.state.params

    def set_flat_parameters(self, values):
        self.state.set_flat_parameters(values)

    def state_dict(self):
        """OrderedDict of parameter and buffer copies keyed as torch.nn.Sequential keys them ("0.weight", ...)."""
        return self.state.state_dict()

    def load_state_dict(self, state):
        """Copy parameters and buffers in from a mapping with exactly this model's keys and shapes
        (all or nothing). Values may be NumPy arrays or anything np.asarray accepts (a CPU torch tensor)."""
        self.state.load_state_dict(state)

    def get_config(self) -> dict:
        """The architecture, JSON-ready: ``Sequential.from_config(model.get_config())`` rebuilds it
        with fresh weights."""
        return {"dtype": self.dtype.name, "seed": self.seed,
                "input_shape": list(self.input_shape) if self.input_shape is not None else None,
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """A new model (fresh weights) of the architecture ``config`` describes (see get_config)."""
        return cls(_layers_from_config(config), seed=config["seed"], dtype=config["dtype"],
                   input_shape=config["input_shape"])

    @staticmethod
    def describe_config(config) -> dict:
        """{state_dict key: (shape, dtype)} of the model ``config`` describes, without allocating
        any of it: what a file must hold before the model is built."""
        dtype = _model_dtype(config["dtype"])
        entries = {}
        for i, layer in enumerate(_layers_from_config(config)):
            for name, shape in layer.parameter_shapes().items():
                entries[f"{i}.{name}"] = (tuple(shape), dtype)
            for name, (shape, buffer_dtype) in layer.buffer_shapes().items():
                entries[f"{i}.{name}"] = (tuple(shape), np.dtype(buffer_dtype or dtype))
        return entries

    def training_state(self) -> dict:
        """JSON-ready progress of training: what resuming needs besides weights and optimizer."""
        return {"epochs_trained": self.epochs_trained, **self.state.generator_states()}

    def set_training_state(self, state):
        epochs = state["epochs_trained"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs < 2**31:
            raise ValueError(f"epochs_trained must be an int in [0, 2**31), got {epochs!r}")
        self.state.set_generator_states(state)
        self.epochs_trained = epochs

    # ------------------------------------------------------------------ description and files
    def summary(self, print_fn=print):
        """Print a table of layers, output shapes and parameter counts (LeNet-5: 61,706)."""
        shapes = self.layer_shapes(self.input_shape) if self.input_shape is not None else None
        rows = [("#", "Layer", "Output shape", "Params")]
        for i, layer in enumerate(self.layers):
            count = sum(int(np.prod(s)) for s in layer.parameter_shapes().values())
            rows.append((str(i), repr(layer), format_shape(shapes[i]) if shapes else "?", f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)
        text = [f"Sequential ({self.dtype.name}, seed {self.seed}"
                + (f", input {format_shape(self.input_shape)})" if self.input_shape else ")"), line]
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
        io.save_model(self, path, include_optimizer=include_optimizer, metadata=metadata)


def _model_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dtype


def _layers_from_config(config):
    specs = config["layers"]
    if not isinstance(specs, list):
        raise ValueError("layers must be a list")
    layers = []
    for i, spec in enumerate(specs):
        kind = spec["class_name"]
        if not isinstance(kind, str) or kind not in LAYERS:
            raise ValueError(f"layer {i} has unknown type {kind!r} (known: {sorted(LAYERS)})")
        if not isinstance(spec["config"], dict):
            raise ValueError(f"layer {i} has no valid config")
        layers.append(LAYERS[kind](**spec["config"]))
    return layers


def load(path) -> Sequential:
    """Rebuild the model saved at ``path`` (with its optimizer and training state when saved).
    Raises ModelFileError for any file that is not a whole, consistent maqueta model."""
    return io.load_model(path, Sequential.describe_config, Sequential.from_config, OPTIMIZERS)
