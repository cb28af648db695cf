"""Data augmentation for ``fit``: random crops, flips and translations of each training batch.

    augment = mq.augment.Compose([mq.augment.RandomCrop(32, padding=4), mq.augment.RandomHorizontalFlip()])
    model.fit(X, y, epochs=10, augment=augment)

A transform changes a batch of images, ndarray (N, C, H, W), in place: fit gathers each training
batch into an array it reuses and augments it there, so the data set is never copied and
validation data is never touched. The random numbers come from the generator fit passes in (the
model's ``state.augment_rng``, seeded from the model's seed and saved in checkpoints), so a run is
fixed by its seed and a resumed run ends bit-identical to an uninterrupted one. Every transform
draws the same count of numbers per batch whatever their values, for the same reason.

Each transform checks the shape of one sample against its settings (``check``) before training
starts, and describes itself with ``get_config()`` (JSON-ready; ``from_config`` rebuilds it).
"""
from __future__ import annotations

import numbers
import threading

import numpy as np

from ._args import pair

__all__ = ["Augmentation", "Compose", "RandomCrop", "RandomHorizontalFlip", "RandomTranslate", "from_config"]


class Augmentation:
    """Base class: ``transform(batch, rng)`` changes batch (N, C, H, W) in place and returns it."""

    def check(self, sample_shape):
        """Raise ValueError unless samples of this shape (C, H, W) can be augmented so."""
        _image_size(sample_shape, type(self).__name__)

    def __call__(self, batch, rng):
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


def _image_size(sample_shape, who):
    sample_shape = tuple(sample_shape)
    if len(sample_shape) != 3:
        raise ValueError(f"{who} augments images (N, C, H, W); the samples have shape {sample_shape}")
    return sample_shape[1], sample_shape[2]


class Compose(Augmentation):
    """Apply ``transforms`` in order (a list of Augmentation)."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, transform in enumerate(transforms):
            if not isinstance(transform, Augmentation):
                raise TypeError(f"transforms[{i}] is {transform!r}, not a maqueta.augment transform")
        self.transforms = transforms

    def check(self, sample_shape):
        for transform in self.transforms:
            transform.check(sample_shape)

    def __call__(self, batch, rng):
        for transform in self.transforms:
            transform(batch, rng)
        return batch

    def get_config(self):
        return {"transforms": [{"class_name": type(t).__name__, "config": t.get_config()} for t in self.transforms]}

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class _Shifter:
    """Moves each image of a batch by its own offset, filling with zeros: the batch is copied into
    the middle of a zero-bordered array and every image read back at its offset with one gather.
    The bordered array and the gather's indices are kept between batches (per thread, so two
    models may train with one transform)."""

    def __init__(self):
        self._local = threading.local()

    def shift(self, batch, top, left, pad_h, pad_w):
        """batch[i] = bordered image i read from row top[i], column left[i] (0..2*pad): top = pad
        leaves it in place, top = 0 moves its content down by pad rows."""
        n, c, h, w = batch.shape
        hp, wp = h + 2 * pad_h, w + 2 * pad_w
        key = (batch.shape, batch.dtype, pad_h, pad_w)
        if not hasattr(self._local, "cache"):
            self._local.cache = {}
        cache = self._local.cache   # a few batch shapes: an epoch's full batches and its last, partial one
        if key not in cache:
            if len(cache) >= 4:
                cache.clear()
            padded = np.zeros((n, c, hp, wp), batch.dtype)
            within = (np.arange(c)[:, None, None] * (hp * wp) + np.arange(h)[None, :, None] * wp
                      + np.arange(w)[None, None, :])                     # (C, H, W) offsets inside one image
            cache[key] = (padded, within, np.empty((n, c, h, w), np.intp))
        padded, within, index = cache[key]
        padded[:, :, pad_h:pad_h + h, pad_w:pad_w + w] = batch           # the border stays zero
        start = np.arange(n) * (c * hp * wp) + np.asarray(top) * wp + np.asarray(left)
        np.add(start[:, None, None, None], within, out=index)
        np.take(padded.reshape(-1), index, out=batch)
        return batch


class RandomCrop(Augmentation):
    """Zero-pad every image by ``padding`` pixels and crop ``size`` at a random offset drawn for
    each image, as torchvision's ``RandomCrop(size, padding)``. fit feeds the model batches of
    the data's own size, so ``size`` must be the images' size: RandomCrop(32, padding=4) on 32x32
    images shows each one shifted by up to 4 pixels. size, padding: int or (height, width)."""

    def __init__(self, size, padding=0):
        self.size = pair(size, "size", 1)
        self.padding = pair(padding, "padding", 0)
        self._shifter = _Shifter()

    def check(self, sample_shape):
        image = _image_size(sample_shape, "RandomCrop")
        if self.size != image:
            raise ValueError(f"RandomCrop size {self.size} must equal the images' size {image}: fit feeds the model "
                             f"batches of the data's shape (use padding to crop shifted views of the same size)")
        if self.padding[0] >= image[0] or self.padding[1] >= image[1]:
            raise ValueError(f"RandomCrop padding {self.padding} must be smaller than the images' size {image}, "
                             f"or a crop could miss the image entirely")

    def __call__(self, batch, rng):
        n = len(batch)
        top = rng.integers(0, 2 * self.padding[0] + 1, n)
        left = rng.integers(0, 2 * self.padding[1] + 1, n)
        if self.padding != (0, 0):
            self._shifter.shift(batch, top, left, *self.padding)
        return batch

    def get_config(self):
        return {"size": list(self.size), "padding": list(self.padding)}


class RandomTranslate(Augmentation):
    """Move every image by a random whole number of pixels, drawn for each image uniformly in
    [-max_shift, max_shift] along each axis, filling with zeros. max_shift: int or (rows, columns)."""

    def __init__(self, max_shift):
        self.max_shift = pair(max_shift, "max_shift", 0)
        self._shifter = _Shifter()

    def check(self, sample_shape):
        image = _image_size(sample_shape, "RandomTranslate")
        if self.max_shift[0] >= image[0] or self.max_shift[1] >= image[1]:
            raise ValueError(f"RandomTranslate max_shift {self.max_shift} must be smaller than the images' size "
                             f"{image}, or an image could move entirely out of view")

    def __call__(self, batch, rng):
        n = len(batch)
        rows, columns = self.max_shift
        shift_y = rng.integers(-rows, rows + 1, n)
        shift_x = rng.integers(-columns, columns + 1, n)
        if self.max_shift != (0, 0):   # content moves down by shift_y: read from max_shift - shift_y
            self._shifter.shift(batch, rows - shift_y, columns - shift_x, rows, columns)
        return batch

    def get_config(self):
        return {"max_shift": list(self.max_shift)}


class RandomHorizontalFlip(Augmentation):
    """Mirror each image left to right with probability ``p`` (in [0, 1])."""

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, batch, rng):
        flip = np.flatnonzero(rng.random(len(batch)) < self.p)
        if len(flip):
            batch[flip] = batch[flip, :, :, ::-1]
        return batch

    def get_config(self):
        return {"p": self.p}


_TRANSFORMS = {cls.__name__: cls for cls in (Compose, RandomCrop, RandomTranslate, RandomHorizontalFlip)}


def from_config(item):
    """The transform ``{"class_name": ..., "config": ...}`` describes (as Compose.get_config lists them)."""
    if not isinstance(item, dict) or item.get("class_name") not in _TRANSFORMS or not isinstance(item.get("config"), dict):
        raise ValueError(f"not a transform description {{'class_name': one of {sorted(_TRANSFORMS)}, 'config': {{...}}}}: "
                         f"{item!r}")
    config = dict(item["config"])
    if item["class_name"] == "Compose":
        config["transforms"] = [from_config(t) for t in config.get("transforms", [])]
    return _TRANSFORMS[item["class_name"]](**config)
