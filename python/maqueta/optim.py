"""Optimizers. Each updates a model's whole parameter buffer with one native kernel call.

Every optimizer takes ``lr`` as a number or a schedule (``maqueta.schedules``: the lr as a function
of the updates applied so far), and ``global_clipnorm``: when the gradient's L2 norm over every
parameter exceeds it, the gradient is scaled down to it first (``torch.nn.utils.clip_grad_norm_``).

The original notebook's Adam is ``Adam(lr=0.01, betas=(0.95, 0.99), eps=1e-7, bias_correction=False)``:
no bias correction, eps added after the square root. (Its code also divided the batch's summed
gradient by the batch size before the moments, which the mean loss here already does.)
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import schedules
from .backend import kernels

__all__ = ["Optimizer", "Adam", "AdamW", "SGD", "RMSprop", "OPTIMIZERS"]


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
    """Base class. ``state_arrays()`` and ``step`` work on the flat parameter vector of one model;
    subclasses implement ``_update(params, grads, lr)``."""

    def __init__(self, lr, global_clipnorm=None):
        self.schedule = None
        self.lr = lr
        self.global_clipnorm = None if global_clipnorm is None else _real(global_clipnorm, "global_clipnorm", high=1e30)
        if self.global_clipnorm == 0:
            raise ValueError("global_clipnorm must be > 0 (or None for no clipping)")
        self.iterations = 0       # updates applied so far
        self._size = None
        self._dtype = None

    @property
    def lr(self):
        """The learning rate of the next update (the schedule's value there, with a schedule)."""
        return self._lr if self.schedule is None else self.schedule(self.iterations)

    @lr.setter
    def lr(self, value):
        if isinstance(value, dict):   # a saved schedule
            value = schedules.from_config(value)
        if isinstance(value, schedules.Schedule):
            self.schedule = value
            return
        if self.schedule is not None:
            raise TypeError(f"this optimizer's lr follows {self.schedule!r}; it cannot also be set by hand "
                            f"(callbacks that set lr need an optimizer created with a number)")
        self._lr = _real(value, "lr", high=1e30)   # the update kernels' own bound

    def step(self, params, grads):
        """One update of params (in place) from grads; grads may be scaled in place by clipping."""
        # a number was checked when set; a schedule's value is checked as it comes
        lr = self._lr if self.schedule is None else _real(self.schedule(self.iterations), "the schedule's lr", high=1e30)
        if self.global_clipnorm is not None:
            norm = math.sqrt(float(np.dot(grads, grads))) if grads.dtype == np.float64 else \
                math.sqrt(float(np.dot(grads.astype(np.float64), grads.astype(np.float64))))
            coefficient = self.global_clipnorm / (norm + 1e-6)
            if coefficient < 1.0:
                grads *= grads.dtype.type(coefficient)
        self.iterations += 1
        self._update(params, grads, lr)

    def _base_config(self):
        config = {"lr": self.schedule and {"class_name": type(self.schedule).__name__,
                                           "config": self.schedule.get_config()} or self._lr}
        if self.global_clipnorm is not None:
            config["global_clipnorm"] = self.global_clipnorm
        return config

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
            if name in ("v", "square_avg") and (value < 0).any():
                raise ValueError(f"the running square {name!r} cannot be negative")
        self.iterations = int(iterations)
        for name, target in self.state_arrays().items():
            target[...] = arrays[name]

    def get_config(self) -> dict:
        raise NotImplementedError

    def _update(self, params, grads, lr):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam``: Kingma & Ba (2015), eps after the square root, L2 weight decay."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, bias_correction=True,
                 global_clipnorm=None):
        super().__init__(lr, global_clipnorm)
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
        return {**self._base_config(), "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "bias_correction": self.bias_correction}

    def _update(self, params, grads, lr):
        kernels().adam_update(params, grads, self.m, self.v, self.iterations, lr, self.betas[0],
                              self.betas[1], self.eps, self.weight_decay, self.bias_correction)


class AdamW(Adam):
    """AdamW as ``torch.optim.AdamW`` (Loshchilov & Hutter): weight decay decoupled from the
    gradient, params *= 1 - lr * weight_decay before the Adam step (default weight_decay 0.01)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, global_clipnorm=None):
        super().__init__(lr, betas, eps, weight_decay, True, global_clipnorm)

    def get_config(self):
        config = super().get_config()
        del config["bias_correction"]
        return config

    def _update(self, params, grads, lr):
        if self.weight_decay:
            params *= params.dtype.type(1.0 - lr * self.weight_decay)
        kernels().adam_update(params, grads, self.m, self.v, self.iterations, lr, self.betas[0], self.betas[1],
                              self.eps, 0.0, True)


class SGD(Optimizer):
    """Stochastic gradient descent as ``torch.optim.SGD`` (dampening 0), optionally with momentum."""

    def __init__(self, lr, momentum=0.0, weight_decay=0.0, nesterov=False, global_clipnorm=None):
        super().__init__(lr, global_clipnorm)
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
        return {**self._base_config(), "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov}

    def _update(self, params, grads, lr):
        kernels().sgd_update(params, grads, self.velocity, lr, self.momentum, self.weight_decay, self.nesterov)


class RMSprop(Optimizer):
    """RMSprop as ``torch.optim.RMSprop`` (Hinton's lecture 6e): square_avg = alpha square_avg +
    (1 - alpha) g^2; centered subtracts the squared running mean of g; the step is
    lr g / (sqrt(...) + eps), through a momentum buffer when momentum > 0; L2 weight decay."""

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 global_clipnorm=None):
        super().__init__(lr, global_clipnorm)
        self.alpha = _real(alpha, "alpha", 0.0, 1.0)
        self.eps = _real(eps, "eps", high=1e30)
        self.weight_decay = _real(weight_decay, "weight_decay", high=1e30)
        self.momentum = _real(momentum, "momentum", high=1e30)
        self.centered = bool(centered)
        self.square_avg = self.grad_avg = self.momentum_buffer = None

    def _allocate(self):
        self.square_avg = np.zeros(self._size, self._dtype)
        if self.centered:
            self.grad_avg = np.zeros(self._size, self._dtype)
        if self.momentum:
            self.momentum_buffer = np.zeros(self._size, self._dtype)

    def state_arrays(self):
        names = {"square_avg": self.square_avg, "grad_avg": self.grad_avg, "momentum_buffer": self.momentum_buffer}
        return {k: v for k, v in names.items() if v is not None}

    def get_config(self):
        return {**self._base_config(), "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "centered": self.centered}

    def _update(self, params, grads, lr):
        kernels().rmsprop_update(params, grads, self.square_avg, self.grad_avg, self.momentum_buffer, lr, self.alpha,
                                 self.eps, self.weight_decay, self.momentum)


OPTIMIZERS = {cls.__name__: cls for cls in (Adam, AdamW, SGD, RMSprop)}
