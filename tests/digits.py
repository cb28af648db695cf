"""Real handwritten digits for tests: the MNIST test set ($MAQUETA_TEST_MNIST, the shared data folder,
else the copy shipped inside the package), else scikit-learn's bundled 8x8 digits. Never the network."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def mnist_test_dir():
    """The folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or None."""
    from maqueta import datasets
    candidates = [os.environ.get("MAQUETA_TEST_MNIST"), HERE.parent.parent / "shared" / "data" / "mnist",
                  "/work/shared/data/mnist", *datasets.DATASETS["mnist"]["package_dirs"]]
    for folder in candidates:
        if folder and (Path(folder) / "t10k-images-idx3-ubyte.gz").is_file() \
                and (Path(folder) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(folder)
    return None


def real_digits(n):
    """(images float64 in [0, 1] of shape (n, 1, S, S), labels int64 (n,), source name)."""
    folder = mnist_test_dir()
    if folder is not None:
        with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
        with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
        return images[:n] / 255.0, labels[:n], "MNIST test set"
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images[:n, None] / 16.0, digits.target[:n].astype(np.int64), "scikit-learn digits"
