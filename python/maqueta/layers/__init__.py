"""Layers of a :class:`maqueta.Sequential` model, with PyTorch's layouts and defaults: one class
per layer, one file per family. ``base.py`` says what a layer declares and implements."""
from __future__ import annotations

from .activations import ReLU, Sigmoid, Softmax, Tanh
from .base import Call, Layer
from .conv import Conv2D
from .dense import Dense
from .pool import MaxPool2D
from .shape import Flatten


def _layer_classes(cls=Layer):
    for sub in cls.__subclasses__():
        if sub.__module__.startswith(__name__ + "."):
            yield sub
        yield from _layer_classes(sub)


LAYERS = {cls.__name__: cls for cls in _layer_classes()}
"""Every layer class of this package by name: what a saved model's architecture may name. A new
layer's file needs only its import line above to be registered, exported and loadable."""

__all__ = ["Layer", "Call", "LAYERS", *LAYERS]
