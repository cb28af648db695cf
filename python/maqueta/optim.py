"""Optimizers. Each updates a model's whole parameter buffer with one native kernel call.

The original notebook's Adam is ``Adam(lr=0.01, betas=(0.95, 0.99), eps=1e-7, bias_correction=False)``:
no bias correction, eps added after the square root. (Its code also divided the batch's summed
gradient by the batch size before the moments, which the mean loss here already does.)
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .backend import kernels

__all__ = ["Optimizer", "Adam", "SGD", "OPTIMIZERS"]


def _real(value, name, low=0.0, high=math.inf, high_open=False):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < low or (number >= high if high_open else number > high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")
    return number


class Optimizer:
    """Base class. ``state_arrays()`` and ``step`` work on the flat parameter vector of one model."""

    def __init__(self, lr):
        self.lr = lr
        self.iterations = 0       # updates applied so far
        self._size = None
        self._dtype = None

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _real(value, "lr", high=1e30)   # the update kernels' own bound

    def check_binding(self, size, dtype):
        """Raise unless this optimizer can update a parameter vector of this size and dtype."""
        if self._size is not None and (self._size, self._dtype) != (size, np.dtype(dtype)):
            raise ValueError(f"this {type(self).__name__} holds state for {self._size} {self._dtype} parameters; "
                             f"the model has {size} {np.dtype(dtype)} parameters. Use a new optimizer for another model.")

    def bind(self, size, dtype):
        """Allocate state for a parameter vector of this size and dtype (once)."""
        self.check_binding(size, dtype)
        if self._size is None:
            self._size, self._dtype = size, np.dtype(dtype)
            self._allocate()

    def _allocate(self):
        pass

    def state_arrays(self) -> dict:
        """{name: flat array} of the per-parameter state (empty before the first step)."""
        return {}

    def load_state(self, iterations, arrays):
        """Restore what state_arrays() and iterations held (the optimizer must be bound); all or
        nothing, and only finite state: a NaN there would reach every weight at the next step."""
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or not 0 <= iterations < 2**62:
            raise ValueError(f"iterations must be an int in [0, 2**62), got {iterations!r}")
        for name, target in self.state_arrays().items():
            value = np.asarray(arrays[name])
            if value.shape != target.shape or not np.isfinite(value).all():
                raise ValueError(f"optimizer state {name!r} must be {target.shape} finite numbers")
            if name == "v" and (value < 0).any():
                raise ValueError("Adam's second moment 'v' cannot be negative")
        self.iterations = int(iterations)
        for name, target in self.state_arrays().items():
            target[...] = arrays[name]

    def get_config(self) -> dict:
        raise NotImplementedError

    def step(self, params, grads):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam``: Kingma & Ba (2015), eps after the square root, L2 weight decay."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, bias_correction=True):
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_real(betas[0], "betas[0]", 0.0, 1.0, True), _real(betas[1], "betas[1]", 0.0, 1.0, True))
        self.eps = _real(eps, "eps", high=1e30)
        self.weight_decay = _real(weight_decay, "weight_decay", high=1e30)
        self.bias_correction = bool(bias_correction)
        self.m = self.v = None

    def _allocate(self):
        self.m = np.zeros(self._size, self._dtype)
        self.v = np.zeros(self._size, self._dtype)

    def state_arrays(self):
        return {} if self.m is None else {"m": self.m, "v": self.v}

    def get_config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "bias_correction": self.bias_correction}

    def step(self, params, grads):
        self.iterations += 1
        kernels().adam_update(params, grads, self.m, self.v, self.iterations, self.lr, self.betas[0],
                              self.betas[1], self.eps, self.weight_decay, self.bias_correction)


class SGD(Optimizer):
    """Stochastic gradient descent as ``torch.optim.SGD`` (dampening 0), optionally with momentum."""

    def __init__(self, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum = _real(momentum, "momentum", high=1e30)
        self.weight_decay = _real(weight_decay, "weight_decay", high=1e30)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.velocity = None

    def _allocate(self):
        if self.momentum:
            self.velocity = np.zeros(self._size, self._dtype)

    def state_arrays(self):
        return {} if self.velocity is None else {"velocity": self.velocity}

    def get_config(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def step(self, params, grads):
        self.iterations += 1
        kernels().sgd_update(params, grads, self.velocity, self.lr, self.momentum, self.weight_decay, self.nesterov)


OPTIMIZERS = {"Adam": Adam, "SGD": SGD}
