#!/usr/bin/env python3
"""Train a small VGG-style CNN (batch normalisation, dropout, padded 3x3 convolutions) on Fashion-MNIST.

    python examples/train_cnn.py                          # maqueta: 15 epochs, AdamW + one-cycle, flips
    python examples/train_cnn.py --framework both         # then PyTorch from the same initial weights
    python examples/train_cnn.py --checkpoint run.maq --resume     # continue an interrupted run

The network (maqueta.models.small_vgg): two blocks of [Conv2D 3x3 "same", BatchNorm2D, ReLU] x2 +
2x2 max-pool + dropout 0.25, with 32 and 64 channels, then dense 128 with BatchNorm1D and dropout
0.5, and the classifier. The recipe: AdamW (weight decay 0.01) under a one-cycle schedule peaking at
3e-3, label smoothing 0.1, random horizontal flips, batch 128 (--crop-padding adds random crops:
with 2 pixels they cost accuracy in 15 epochs; the README has both runs). The test set is
evaluated after every epoch; the accuracy reported is the last epoch's, not the best one.
Fashion-MNIST comes from Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist),
--data-dir, or a download.

--framework torch (or both) trains the same network in PyTorch (torch.nn layers, torch.optim.AdamW
and OneCycleLR, CrossEntropyLoss with the same label smoothing) from maqueta's initial weights,
copied through state_dict, on batches shuffled and augmented by the same maqueta transforms: only
the kernels and the random draws differ. Each side prints its accuracy and wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import maqueta as mq
from maqueta import datasets
from maqueta.augment import Compose, RandomCrop, RandomHorizontalFlip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist")
    p.add_argument("--data-dir", help="folder with the IDX files")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="files to train on; 'test' trains on the first 80%% of the test files and tests on the rest "
                        "(MNIST's test files ship with maqueta, so this works offline)")
    p.add_argument("--limit", type=positive(int), help="train on only the first N training images")
    p.add_argument("--framework", choices=["maqueta", "torch", "both"], default="maqueta")
    p.add_argument("--epochs", type=positive(int), default=15)
    p.add_argument("--batch-size", type=positive(int), default=128)
    p.add_argument("--max-lr", type=positive(float), default=3e-3, help="the one-cycle schedule's peak")
    p.add_argument("--weight-decay", type=positive(float, zero=True), default=0.01, help="AdamW's, decoupled")
    p.add_argument("--label-smoothing", type=positive(float, zero=True), default=0.1)
    p.add_argument("--widths", type=int_list, default=(32, 64), help="channels of each convolution block")
    p.add_argument("--dense", type=positive(int), default=128)
    p.add_argument("--crop-padding", type=positive(int, zero=True), default=0,
                   help="random crops from the images padded by this many pixels (0: none)")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--seed", type=positive(int, zero=True), default=0)
    p.add_argument("--threads", type=positive(int), help="kernel threads of both frameworks (default: all cores)")
    p.add_argument("--checkpoint", help="maqueta: save model and optimizer here after every epoch")
    p.add_argument("--resume", action="store_true", help="maqueta: continue from --checkpoint when it exists")
    p.add_argument("--stop-after", type=positive(int),
                   help="maqueta: stop after this epoch, as an interrupted run would (--resume continues it)")
    p.add_argument("--results", help="write the accuracies and wall times as JSON here")
    args = p.parse_args(argv)
    if args.resume and not args.checkpoint:
        p.error("--resume needs --checkpoint PATH")
    if args.label_smoothing > 1:
        p.error(f"--label-smoothing {args.label_smoothing} is not in [0, 1]")
    for option in ("checkpoint", "results"):   # fail now, not after an hour of training
        path = getattr(args, option)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            p.error(f"--{option} {path}: its folder does not exist")
    return args


def positive(kind, zero=False):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not (value >= 0 if zero else value > 0) or not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} must be {'>= 0' if zero else '> 0'}")
        return value
    return parse


def int_list(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every width must be >= 1")
    return values


def load(args):
    """Standardised float32 images (N, 1, 28, 28) and labels: train and test."""
    loader = datasets.load_fashion_mnist if args.dataset == "fashion-mnist" else datasets.load_mnist
    try:
        X, y = loader(args.split, data_dir=args.data_dir)
        if args.split == "train":
            X_test, y_test = loader("test", data_dir=args.data_dir)
        else:
            cut = len(X) * 4 // 5
            X, y, X_test, y_test = X[:cut], y[:cut], X[cut:], y[cut:]
    except (datasets.DatasetNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
    if args.limit:
        X, y = X[:args.limit], y[:args.limit]
    X = datasets.scale(X)
    X_test = datasets.scale(X_test)
    mean, std = float(X.mean()), float(X.std())
    return datasets.standardize(X, mean, std), y, datasets.standardize(X_test, mean, std), y_test


def augmentation(args):
    transforms = [RandomCrop(28, padding=args.crop_padding)] if args.crop_padding else []
    if not args.no_flip:
        transforms.append(RandomHorizontalFlip())
    return Compose(transforms)


class EpochLine(mq.callbacks.Callback):
    """One line per epoch: loss, accuracies, seconds."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(f"maqueta epoch {epoch + 1:2d}: loss {logs['loss']:.4f}  train {logs['accuracy']:.4f}  "
              f"test {logs['val_accuracy']:.4f}  {time.perf_counter() - self.start:.1f} s", flush=True)


def train_maqueta(args, X, y, X_test, y_test, model):
    steps = args.epochs * -(-len(X) // args.batch_size)
    optimizer = mq.AdamW(lr=mq.schedules.OneCycle(args.max_lr, total_steps=steps), weight_decay=args.weight_decay)
    initial_epoch = 0
    if args.resume and os.path.exists(args.checkpoint):
        model = mq.load(args.checkpoint)
        optimizer, initial_epoch = model.optimizer, model.epochs_trained
        print(f"resuming from {args.checkpoint} after epoch {initial_epoch}")
    callbacks = [EpochLine(), mq.callbacks.TerminateOnNaN()]
    if args.checkpoint:
        callbacks.append(mq.callbacks.ModelCheckpoint(args.checkpoint))
    end = min(args.epochs, args.stop_after or args.epochs)
    if initial_epoch >= end:
        return model.evaluate(X_test, y_test)["accuracy"], 0.0, initial_epoch
    start = time.perf_counter()
    model.fit(X, y, epochs=end, batch_size=args.batch_size, optimizer=optimizer,
              loss=mq.losses.CrossEntropy(label_smoothing=args.label_smoothing), validation_data=(X_test, y_test),
              augment=augmentation(args), callbacks=callbacks, initial_epoch=initial_epoch, verbose=0)
    return model.history.history["val_accuracy"][-1], time.perf_counter() - start, end


def torch_network(torch, model, args):
    """maqueta's small_vgg in torch.nn, with maqueta's weights and buffers copied in."""
    nn = torch.nn
    layers, channels = [], 1
    for width, rate in zip(args.widths, (0.25,) * len(args.widths)):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding="same", bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        layers += [nn.MaxPool2d(2), nn.Dropout(rate)]
    size = 28 // 2 ** len(args.widths)
    layers += [nn.Flatten(), nn.Linear(channels * size * size, args.dense, bias=False), nn.BatchNorm1d(args.dense),
               nn.ReLU(), nn.Dropout(0.5), nn.Linear(args.dense, 10)]
    net = nn.Sequential(*layers)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return net


def train_torch(args, X, y, X_test, y_test, model):
    import torch
    torch.manual_seed(args.seed)
    net = torch_network(torch, model, args)
    steps_per_epoch = -(-len(X) // args.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.max_lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.max_lr, total_steps=args.epochs * steps_per_epoch,
                                                   cycle_momentum=False)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    augment, rng = augmentation(args), np.random.default_rng(args.seed)
    batch = np.empty((args.batch_size,) + X.shape[1:], X.dtype)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        began, net = time.perf_counter(), net.train()
        order, total, correct = rng.permutation(len(X)), 0.0, 0
        for first in range(0, len(X), args.batch_size):
            rows = order[first:first + args.batch_size]
            xb = np.take(X, rows, axis=0, out=batch[:len(rows)])
            augment(xb, rng)
            labels = torch.from_numpy(y[rows].astype(np.int64))
            optimizer.zero_grad()
            logits = net(torch.from_numpy(xb))
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(rows)
            correct += int((logits.argmax(1) == labels).sum())
        accuracy = torch_accuracy(torch, net, X_test, y_test)
        print(f"torch   epoch {epoch + 1:2d}: loss {total / len(X):.4f}  train {correct / len(X):.4f}  "
              f"test {accuracy:.4f}  {time.perf_counter() - began:.1f} s", flush=True)
    return accuracy, time.perf_counter() - start


def torch_accuracy(torch, net, X, y, batch_size=1000):
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(torch.from_numpy(X[i:i + batch_size])).argmax(1).numpy() == y[i:i + batch_size]).sum())
                   for i in range(0, len(X), batch_size))
    return hits / len(X)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        mq.set_num_threads(args.threads)
    X, y, X_test, y_test = load(args)
    model = mq.models.small_vgg(widths=args.widths, dense=args.dense,
                                dropout=(0.25,) * len(args.widths) + (0.5,), seed=args.seed)
    initial = {k: np.array(v) for k, v in model.state_dict().items()}
    print(f"{args.dataset}: {len(X):,} training images, {len(X_test):,} test images; {model.count_params():,} "
          f"parameters; {args.epochs} epochs of batch {args.batch_size}, {mq.get_num_threads()} threads", flush=True)
    results = {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
               "threads": mq.get_num_threads()}
    if args.framework in ("maqueta", "both"):
        accuracy, seconds, epochs = train_maqueta(args, X, y, X_test, y_test, model)
        results["maqueta"] = {"test_accuracy": accuracy, "seconds": seconds, "epochs": epochs}
        print(f"maqueta: test accuracy {accuracy:.2%} after {epochs} epochs, {seconds:.0f} s", flush=True)
    if args.framework in ("torch", "both"):
        import torch
        torch.set_num_threads(mq.get_num_threads())
        model.load_state_dict(initial)
        accuracy, seconds = train_torch(args, X, y, X_test, y_test, model)
        results["torch"] = {"test_accuracy": accuracy, "seconds": seconds, "version": torch.__version__}
        print(f"PyTorch: test accuracy {accuracy:.2%} after {args.epochs} epochs, {seconds:.0f} s", flush=True)
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
