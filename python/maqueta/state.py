"""A model's numbers, in one place: its parameters, their gradients, its layers' buffers and its
random generators.

Every trainable parameter lives in one flat buffer and every gradient in another, both in
state_dict order, so that an optimizer step is a single kernel call; ``layer.weight`` and
``layer.bias`` are views into the first. Buffers are the layers' non-trainable state (running
statistics, counters), saved and loaded with the parameters under PyTorch's names.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["ModelState", "checked_values"]


def checked_values(values, target, name, whose):
    """values as an array that may be copied into ``target`` unchanged in meaning: same shape,
    real numbers (no bools), integers for an integer target, and finite once in target's dtype
    (1e39 is finite in float64 but inf in float32)."""
    try:
        values = np.asarray(values)
    except Exception as error:
        raise TypeError(f"{name} could not be read as an array: {error}") from None
    if values.shape != target.shape:
        raise ValueError(f"{name} has shape {values.shape}, but {whose} {target.shape}")
    allowed = "iu" if target.dtype.kind in "iu" else "iuf"
    if values.dtype.kind not in allowed:
        raise TypeError(f"{name} has dtype {values.dtype}; expected "
                        f"{'integers' if allowed == 'iu' else 'real numbers (not bool)'}")
    if target.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            converted = values.astype(target.dtype)
        if not np.isfinite(converted).all():
            raise ValueError(f"{name} contains NaN or Inf" + (" once converted to " + target.dtype.name
                                                               if np.isfinite(values).all() else ""))
        return converted
    if values.size and (values.min() < np.iinfo(target.dtype).min or values.max() > np.iinfo(target.dtype).max):
        raise ValueError(f"{name} holds integers outside the range of {target.dtype}")
    return values.astype(target.dtype)


class ModelState:
    """Parameters, gradients, buffers and generators of the layers of one model.

    layers: the model's layers, already checked; their views are attached here.
    dtype: float32 or float64, of the parameters and gradients.
    seed: int; parameters are drawn from it as PyTorch's defaults draw them, and so are the
        order of shuffled batches and any random masks the layers draw.
    """

    def __init__(self, layers, dtype, seed):
        sizes = [int(np.prod(shape)) for layer in layers for shape in layer.parameter_shapes().values()]
        self.params = np.zeros(sum(sizes), dtype)
        self.grads = np.zeros(sum(sizes), dtype)
        self.buffers = OrderedDict()   # state_dict key -> array
        self.entries = []              # (state_dict key, layer, name, is_parameter) in state_dict order
        self.shuffle_rng = np.random.default_rng([seed, 1])
        self.layer_rng = np.random.default_rng([seed, 2])
        init_rng = np.random.default_rng([seed, 0])
        offset = 0
        for i, layer in enumerate(layers):
            values = layer.initial_parameters(init_rng)
            for name, shape in layer.parameter_shapes().items():
                size = int(np.prod(shape))
                layer._params[name] = self.params[offset:offset + size].reshape(shape)
                layer._params[name][...] = values[name]
                layer._grads[name] = self.grads[offset:offset + size].reshape(shape)
                self.entries.append((f"{i}.{name}", layer, name, True))
                offset += size
            initial = layer.initial_buffers()
            for name, (shape, buffer_dtype) in layer.buffer_shapes().items():
                array = np.zeros(shape, buffer_dtype or dtype)
                array[...] = initial.get(name, 0)
                layer._buffers[name] = self.buffers[f"{i}.{name}"] = array
                self.entries.append((f"{i}.{name}", layer, name, False))

    def _array(self, layer, name, is_parameter):
        return layer._params[name] if is_parameter else layer._buffers[name]

    def state_dict(self):
        """OrderedDict of copies of every parameter and buffer, keyed as torch.nn.Sequential keys them."""
        return OrderedDict((key, self._array(layer, name, p).copy()) for key, layer, name, p in self.entries)

    def shapes(self):
        """{key: (shape, dtype)} of what state_dict() returns, without copying anything."""
        return OrderedDict((key, (self._array(layer, name, p).shape, self._array(layer, name, p).dtype))
                           for key, layer, name, p in self.entries)

    def load_state_dict(self, state):
        """Copy every entry in from a mapping with exactly these keys and shapes, all or nothing.
        Values may be NumPy arrays or anything np.asarray accepts (a CPU torch tensor, say)."""
        expected = {key: (layer, name, p) for key, layer, name, p in self.entries}
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match the model: missing keys {missing}, unexpected keys {unexpected}")
        staged = []
        for key, (layer, name, is_parameter) in expected.items():
            target = self._array(layer, name, is_parameter)
            staged.append((target, checked_values(state[key], target, f"state_dict[{key!r}]",
                                                  f"{layer.describe()} needs")))
        for target, value in staged:
            target[...] = value

    def set_flat_parameters(self, values):
        self.params[...] = checked_values(values, self.params, "values", "the model has")

    def generator_states(self) -> dict:
        """JSON-ready states of the generators, to resume a run exactly."""
        return {"shuffle_rng": self.shuffle_rng.bit_generator.state, "layer_rng": self.layer_rng.bit_generator.state}

    def set_generator_states(self, states):
        self.shuffle_rng.bit_generator.state = states["shuffle_rng"]
        if "layer_rng" in states:   # files written before layers drew random numbers have none
            self.layer_rng.bit_generator.state = states["layer_rng"]
