"""Ready-made architectures."""
from __future__ import annotations

from .layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .model import Sequential

__all__ = ["lenet5", "small_vgg"]


def lenet5(num_classes=10, in_channels=1, seed=0, dtype="float32"):
    """LeNet-5 as the original notebook built it, for (in_channels, 32, 32) inputs: conv 5x5 to 6
    channels, ReLU, 2x2 max-pool, conv 5x5 to 16, ReLU, 2x2 max-pool, flatten, dense 400 -> 120 -> 84
    -> num_classes with ReLU between; 61,706 parameters for 1 channel and 10 classes. Its
    state_dict keys are those of the same torch.nn.Sequential (0, 3, 7, 9, 11)."""
    return Sequential([
        Conv2D(in_channels, 6, 5), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(16 * 5 * 5, 120), ReLU(),
        Dense(120, 84), ReLU(),
        Dense(84, num_classes),
    ], seed=seed, dtype=dtype, input_shape=(in_channels, 32, 32))


def small_vgg(num_classes=10, in_channels=1, input_size=28, widths=(32, 64), dense=128, dropout=(0.25, 0.25, 0.5),
              seed=0, dtype="float32"):
    """A small VGG-style network for 28x28 or 32x32 images: for each width, two blocks of
    [Conv2D 3x3 "same", BatchNorm2D, ReLU] and a 2x2 max-pool then Dropout; then Flatten,
    Dense(dense), BatchNorm1D, ReLU, Dropout and Dense(num_classes). dropout: one rate per pooled
    block, then the dense one (0 removes nothing but keeps the layer, so state_dict keys stay).
    The layers before a batch normalisation have no bias: it would cancel out, and its gradient
    is rounding noise that Adam would amplify."""
    layers, channels, size = [], in_channels, input_size
    for width, rate in zip(widths, dropout):
        for _ in range(2):
            layers += [Conv2D(channels, width, 3, padding="same", bias=False), BatchNorm2D(width), ReLU()]
            channels = width
        layers += [MaxPool2D(2), Dropout(rate)]
        size //= 2
    layers += [Flatten(), Dense(channels * size * size, dense, bias=False), BatchNorm1D(dense), ReLU(), Dropout(dropout[-1]),
               Dense(dense, num_classes)]
    return Sequential(layers, seed=seed, dtype=dtype, input_shape=(in_channels, input_size, input_size))
