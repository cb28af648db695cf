"""The benchmark zoo's networks: each written once as a list of layer specs, built from it in
maqueta and in PyTorch (same weights, copied through state_dict), with its multiply-add count.

A spec is a tuple: ("conv", in, out, kernel, stride, padding, bias), ("bn2d", c), ("bn1d", n),
("relu",), ("maxpool", k), ("avgpool", k), ("gap",), ("flatten",), ("dense", in, out, bias),
("dropout", p).
"""
from __future__ import annotations

import numpy as np

import maqueta as mq


def _vgg(batch_norm):
    def block(c_in, c_out):
        conv = ("conv", c_in, c_out, 3, 1, 1, not batch_norm)
        return [conv, ("bn2d", c_out), ("relu",)] if batch_norm else [conv, ("relu",)]
    dense = [("dense", 64 * 8 * 8, 128, not batch_norm)] + ([("bn1d", 128)] if batch_norm else [])
    return (block(3, 32) + block(32, 32) + [("maxpool", 2)] + block(32, 64) + block(64, 64) + [("maxpool", 2)]
            + [("flatten",)] + dense + [("relu",), ("dense", 128, 10, True)])


ZOO = {
    # name: (input shape, specs, what it stands for)
    "lenet5": ((1, 32, 32), [
        ("conv", 1, 6, 5, 1, 0, True), ("relu",), ("maxpool", 2), ("conv", 6, 16, 5, 1, 0, True), ("relu",),
        ("maxpool", 2), ("flatten",), ("dense", 400, 120, True), ("relu",), ("dense", 120, 84, True), ("relu",),
        ("dense", 84, 10, True)], "LeNet-5 as maqueta's notebook: 32x32 inputs"),
    "lenet5-28": ((1, 28, 28), [
        ("conv", 1, 6, 5, 1, 2, True), ("relu",), ("maxpool", 2), ("conv", 6, 16, 5, 1, 0, True), ("relu",),
        ("maxpool", 2), ("flatten",), ("dense", 400, 120, True), ("relu",), ("dense", 120, 84, True), ("relu",),
        ("dense", 84, 10, True)], "LeNet-5 as tutorials write it: 28x28, first conv padded by 2"),
    "strided-mnist": ((1, 28, 28), [
        ("conv", 1, 16, 3, 2, 1, True), ("relu",), ("conv", 16, 32, 3, 2, 1, True), ("relu",),
        ("conv", 32, 64, 3, 2, 1, True), ("relu",), ("flatten",), ("dense", 64 * 4 * 4, 10, True)],
        "all-convolutional MNIST net: three stride-2 3x3 convolutions"),
    "cifar-vgg": ((3, 32, 32), _vgg(False), "CIFAR-sized VGG: 3->32->32, pool, 32->64->64, pool, dense 128"),
    "cifar-vgg-bn": ((3, 32, 32), _vgg(True), "the same with batch normalisation after every conv and the dense"),
    "cifar-gap": ((3, 32, 32), [
        ("conv", 3, 32, 3, 1, 1, False), ("bn2d", 32), ("relu",), ("conv", 32, 64, 3, 2, 1, False), ("bn2d", 64),
        ("relu",), ("conv", 64, 128, 3, 2, 1, False), ("bn2d", 128), ("relu",), ("gap",), ("dense", 128, 10, True)],
        "strided convs with batch norm, global average pooling, one dense"),
}


def maqueta_model(name, seed=0):
    shape, specs, _ = ZOO[name]
    L = mq.layers
    build = {
        "conv": lambda i, o, k, s, p, b: L.Conv2D(i, o, k, stride=s, padding=p, bias=b),
        "bn2d": L.BatchNorm2D, "bn1d": L.BatchNorm1D, "relu": L.ReLU, "maxpool": L.MaxPool2D,
        "avgpool": L.AvgPool2D, "gap": L.GlobalAvgPool2D, "flatten": L.Flatten,
        "dense": lambda i, o, b: L.Dense(i, o, bias=b), "dropout": L.Dropout,
    }
    return mq.Sequential([build[s[0]](*s[1:]) for s in specs], seed=seed, input_shape=shape)


def torch_model(name, model=None):
    """The PyTorch twin; with model, its weights and buffers are copied in."""
    import torch
    nn = torch.nn
    build = {
        "conv": lambda i, o, k, s, p, b: nn.Conv2d(i, o, k, stride=s, padding=p, bias=b),
        "bn2d": nn.BatchNorm2d, "bn1d": nn.BatchNorm1d, "relu": nn.ReLU, "maxpool": nn.MaxPool2d,
        "avgpool": nn.AvgPool2d, "gap": lambda: nn.AdaptiveAvgPool2d(1), "flatten": nn.Flatten,
        "dense": lambda i, o, b: nn.Linear(i, o, bias=b), "dropout": nn.Dropout,
    }
    layers = []
    for spec in ZOO[name][1]:
        layers.append(build[spec[0]](*spec[1:]))
        if spec[0] == "gap":
            layers.append(nn.Flatten())   # maqueta's GlobalAvgPool2D gives (N, C)
    net = nn.Sequential(*layers)
    if model is not None:
        theirs = list(net.state_dict())
        ours = model.state_dict()
        net.load_state_dict(dict(zip(theirs, (torch.from_numpy(np.array(v)) for v in ours.values()))))
    return net


def flops(name):
    """Floating-point operations per image (a multiply-add counts 2) of the convolutions and dense
    layers: (forward, training step). A training step is the forward, the weight gradient (as many
    as the forward) and the input gradient (as many again, except for the first layer)."""
    shape, specs, _ = ZOO[name]
    c, h, w = shape
    forward, first = 0, None
    for spec in specs:
        kind = spec[0]
        if kind == "conv":
            _, c_in, c_out, k, s, p, _ = spec
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            work, c = 2 * c_in * c_out * k * k * h * w, c_out
        elif kind == "dense":
            work, c, h, w = 2 * spec[1] * spec[2], spec[2], 1, 1
        elif kind in ("maxpool", "avgpool"):
            h, w, work = h // spec[1], w // spec[1], 0
        elif kind == "gap":
            h, w, work = 1, 1, 0
        else:
            work = 0
        if work and first is None:
            first = work
        forward += work
    return forward, 3 * forward - first
