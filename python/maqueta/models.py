"""Ready-made architectures."""
from __future__ import annotations

from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .model import Sequential

__all__ = ["lenet5"]


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
