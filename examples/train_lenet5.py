#!/usr/bin/env python3
"""Train LeNet-5 on handwritten digits (or clothes) with maqueta, on the CPU.

    python examples/train_lenet5.py                             # MNIST; offline, its test files shipped with maqueta (8,000 / 2,000)
    python examples/train_lenet5.py --dataset fashion-mnist     # 60,000 training images, tested on 10,000
    python examples/train_lenet5.py --split test --validation-split 0.2   # MNIST's test files: 8,000 / 2,000
    python examples/train_lenet5.py --checkpoint run.ckpt --resume        # continue an interrupted run
    mpiexec -n 4 python examples/train_lenet5.py --distributed            # data-parallel over 4 processes

The defaults (inputs standardized, Adam with a cosine learning-rate schedule) beat PyTorch's plain
recipe; see the README for measured accuracies and the exact commands. --help lists every option.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

import maqueta as mq
from maqueta import datasets

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "digits": "scikit-learn digits"}
CLASS_NAMES = {"fashion-mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Boot"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=["auto", "mnist", "fashion-mnist", "digits"], default="auto",
                      help="auto: MNIST, downloading its training files when missing; with no network, the "
                           "10,000 test images shipped with maqueta (80%% train, 20%% held out)")
    data.add_argument("--data-dir", help="folder with the IDX files (also searched: $MAQUETA_DATA, ~/.cache/maqueta)")
    data.add_argument("--split", choices=["train", "test"], default="train",
                      help="files to train on; with 'test' the held-out part of the test files is the test set")
    data.add_argument("--validation-split", type=number(0.0, 1.0, high_open=True), default=None,
                      help="fraction of the training images held out (last ones); default 0 with --split train "
                           "(the test set then validates each epoch), 0.2 with --split test")
    data.add_argument("--limit", type=count(1), help="use only the first N images of the training files")
    data.add_argument("--resize", choices=["pad", "bilinear"], default="pad", help="28x28 -> 32x32")
    data.add_argument("--pixels", choices=["standardize", "unit", "raw"], default="standardize",
                      help="standardize: [0, 1] then zero mean, unit variance (training set's); unit: [0, 1]; "
                           "raw: 0..255 as the original notebook")
    data.add_argument("--no-download", action="store_true", help="never try to download missing files")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=count(1, 1_000_000), default=10)
    train.add_argument("--batch-size", type=count(1, 1 << 24), default=64)
    train.add_argument("--optimizer", choices=["adam", "sgd", "notebook-adam"], default="adam",
                       help="notebook-adam: betas (0.95, 0.99), eps 1e-7, no bias correction")
    train.add_argument("--lr", type=number(0.0, 1e30, low_open=True), default=2e-3)
    train.add_argument("--schedule", choices=["cosine", "none"], default="cosine",
                       help="cosine: lr decays along half a cosine to 1%% of --lr at the last epoch")
    train.add_argument("--momentum", type=number(0.0, 1e30), default=0.9, help="for --optimizer sgd")
    train.add_argument("--weight-decay", type=number(0.0, 1e30), default=0.0)
    train.add_argument("--seed", type=count(0, 2**64 - 1), default=0)
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--backend", choices=["native", "plain", "reference"], default="native")
    train.add_argument("--threads", type=count(1, 4096), help="kernel threads (default: OMP_NUM_THREADS, else all cores; "
                                                                "with --distributed, the cores shared out among the machine's ranks)")
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel over the processes of an MPI job (mpiexec -n N ...; needs mpi4py): "
                            "--batch-size is the global batch, rank 0 alone prints and saves")
    out = p.add_argument_group("output")
    out.add_argument("--save", help="where to save the trained model (default: runs/lenet5-<dataset>.maq)")
    out.add_argument("--checkpoint", help="save model and optimizer here after every epoch")
    out.add_argument("--resume", action="store_true", help="continue from --checkpoint when it exists")
    out.add_argument("--plot", help="write a PNG of the loss and accuracy curves and the test confusion matrix")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.resume and not args.checkpoint:
        p.error("--resume needs --checkpoint PATH")
    if args.validation_split is None:
        args.validation_split = 0.2 if args.split == "test" else 0.0
    for option in ("save", "checkpoint", "plot"):   # fail now, not after an hour of training
        path = getattr(args, option)
        problem = path and unwritable(path, create=option == "save")
        if problem:
            p.error(f"--{option} {path}: {problem}")
    return args


def number(low, high, low_open=False, high_open=False):
    """An argparse type: a finite float in the given interval."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low) \
                or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"{text} is not in {'(' if low_open else '['}{low:g}, "
                                             f"{high:g}{')' if high_open else ']'}")
        return value
    return parse


def count(low, high=2**63 - 1):
    """An argparse type: an int in [low, high]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in [{low}, {high}]")
        return value
    return parse


def unwritable(path, create=False):
    """Why a file cannot be written at path, or None: its folder is missing (unless create) or
    refuses new files (read-only, permissions), or the path is a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a folder"
    if not os.path.isdir(folder):
        if create:
            return None
        return f"the folder {folder} does not exist"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"cannot write in {folder}: {error.strerror}"
    return None


# ----------------------------------------------------------------------------------------- data
def load_images(args):
    """(train images, train labels, test images or None, test labels, name, description of the source)."""
    def idx(name, split):
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        return loader(split, data_dir=args.data_dir, download=not args.no_download, return_paths=True)

    name = args.dataset
    if name == "auto":
        try:
            return _split(args, "mnist", idx("mnist", args.split), idx("mnist", "test") if args.split == "train" else None)
        except datasets.DatasetNotFoundError as missing:
            if args.split == "train":
                try:   # the test files alone still make a proper MNIST run: 80% to train, 20% held out
                    images = idx("mnist", "test")
                    why = "not found and could not be downloaded" if "Downloading failed" in str(missing) \
                        else "not found (downloading is off)" if "Downloading is off" in str(missing) else "missing"
                    print(f"MNIST's training files are {why}; training on its 10,000 real test images instead "
                          f"(last {max(args.validation_split, 0.2):.0%} held out).")
                    args.split = "test"
                    args.validation_split = args.validation_split or 0.2
                    return _split(args, "mnist", images, None)
                except datasets.DatasetNotFoundError:
                    pass
            # Last resort: only when the package's own MNIST files are gone (a trimmed install).
            why = str(missing).splitlines()[0].rstrip(".")
            if "Downloading failed" in str(missing):
                why += "; downloading them failed (offline?)"
            print(f"MNIST not available ({why}); using scikit-learn's bundled handwritten "
                  f"digits instead (1,797 real 8x8 scans, upsampled).")
            name = "digits"
    if name == "digits":
        train = datasets.load_digits(args.split if args.split == "test" else "train")
        test = datasets.load_digits("test") if args.split == "train" else None
        return _split(args, "digits", (*train, None), (*test, None) if test else None)
    return _split(args, name, idx(name, args.split), idx(name, "test") if args.split == "train" else None)


def _split(args, name, train, test):
    images, labels, paths = train
    if name == "digits":
        source = "scikit-learn's bundled digits (1,797 real 8x8 scans, upsampled to 28x28; last 20% for testing)"
    elif datasets.shipped_with_maqueta(paths[0]):
        source = f"{TITLES[name]} {args.split} files shipped with maqueta ({os.path.dirname(str(paths[0]))})"
    else:
        source = f"{TITLES[name]} {args.split} files in {os.path.dirname(str(paths[0]))}"
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    held = None
    if args.validation_split:
        cut = int(len(images) * (1 - args.validation_split))
        held = (images[cut:], labels[cut:])
        images, labels = images[:cut], labels[:cut]
    if test is not None:
        test_images, test_labels, _ = test
        test_desc = f"{TITLES[name]} test set"
    elif held is not None:
        test_images, test_labels = held
        test_desc = f"held-out last {len(held[1]):,} of the {args.split} files"
        held = None
    else:
        test_images = test_labels = None
        test_desc = None
    return dict(name=name, source=source, train=(images, labels), val=held, test=(test_images, test_labels),
                test_desc=test_desc)


def preprocess(data, args, stats=None):
    """Float inputs for LeNet-5; standardization uses the training images' mean and std."""
    pixels = "raw" if args.pixels == "raw" else "unit"
    convert = lambda images, mean=None, std=None: datasets.prepare(images, 32, args.resize, pixels, mean, std, args.dtype)
    train = convert(data["train"][0])
    if args.pixels == "standardize":
        if stats is None:
            stats = {"mean": float(train.mean(dtype=np.float64)), "std": float(train.std(dtype=np.float64))}
        train -= np.dtype(args.dtype).type(stats["mean"])
        train /= np.dtype(args.dtype).type(stats["std"])
    mean, std = (stats["mean"], stats["std"]) if stats else (None, None)
    val = convert(data["val"][0], mean, std) if data["val"] is not None else None
    test = convert(data["test"][0], mean, std) if data["test"][0] is not None else None
    return train, val, test, stats or {}


# ----------------------------------------------------------------------------------------- training
class EpochReport(mq.Callback):
    """One line per epoch; also saves the checkpoint (when given one: rank 0 alone of a job)."""

    def __init__(self, n_train, checkpoint, metadata, start):
        self.n_train, self.checkpoint, self.metadata, self.start = n_train, checkpoint, metadata, start

    def on_epoch_end(self, epoch, logs=None):
        line = (f"epoch {epoch + 1:>3}/{self.model.history.params['epochs']}  loss {logs['loss']:.4f}  "
                f"acc {logs['accuracy']:.2%}")
        if "val_loss" in logs:
            line += f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.2%}"
        line += f"  lr {logs['lr']:.2e}  {self.n_train / logs['seconds']:,.0f} img/s"
        if "allreduce_seconds" in logs:   # time in the gradient allreduce, waiting for the slowest rank included
            steps = -(-self.n_train // self.model.history.params["batch_size"])
            line += f"  allreduce {logs['allreduce_seconds'] / steps * 1e3:.2f} ms/step"
        line += f"  elapsed {time.perf_counter() - self.start:.1f} s"
        print(line, flush=True)
        if self.checkpoint:
            history = self.metadata.setdefault("history", {})
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            self.model.save(self.checkpoint, include_optimizer=True, metadata=self.metadata)


def make_optimizer(args):
    if args.optimizer == "adam":
        return mq.Adam(args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "notebook-adam":
        return mq.Adam(args.lr, betas=(0.95, 0.99), eps=1e-7, weight_decay=args.weight_decay, bias_correction=False)
    return mq.SGD(args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def schedule(args):
    def lr_at(epoch, _lr):
        if args.schedule == "none" or args.epochs == 1:
            return args.lr
        floor = 0.01 * args.lr
        return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * epoch / (args.epochs - 1)))
    return lr_at


RUN_KEYS = ["dataset", "split", "validation_split", "limit", "resize", "pixels", "epochs", "batch_size", "optimizer",
            "lr", "schedule", "momentum", "weight_decay", "seed", "dtype"]


def join_job(args):
    """(rank, size) of the MPI job with --distributed, else (0, 1). The other ranks run this same
    script silently: their stdout goes nowhere, their errors still reach stderr, with their rank."""
    if not args.distributed:
        return 0, 1
    from maqueta import distributed
    try:
        rank, size = distributed.rank(), distributed.size()
    except ImportError as error:
        sys.exit(f"--distributed: {error}")
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
    if not args.threads and "OMP_NUM_THREADS" not in os.environ:
        args.threads = distributed.threads_per_rank()
    return rank, size


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    rank, processes = join_job(args)
    if args.threads:
        mq.set_num_threads(args.threads)
    mq.set_backend(args.backend)

    if rank == 0:
        data = load_images(args)
    if args.distributed:   # rank 0 has downloaded what was missing; the others read it after
        from maqueta import distributed
        distributed.world().Barrier()
    if rank != 0:
        data = load_images(args)
    run = {k: getattr(args, k) for k in RUN_KEYS}
    run["dataset"] = data["name"]
    model, stats, history = None, None, {}
    if args.resume and os.path.exists(args.checkpoint):
        try:
            model = mq.load(args.checkpoint)
        except mq.ModelFileError as error:
            sys.exit(f"--resume: {error}")
        if model.optimizer is None or "run" not in model.metadata:
            sys.exit(f"--resume: {args.checkpoint} is a saved model, not a checkpoint: it holds no optimizer or "
                     f"training state to continue from (write checkpoints with --checkpoint)")
        saved = model.metadata.get("run", {})
        changed = {k: (saved.get(k), run[k]) for k in RUN_KEYS if k != "epochs" and saved.get(k) != run[k]}
        if changed:
            sys.exit(f"--resume: {args.checkpoint} was trained with other settings: "
                     + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in changed.items()))
        stats = model.metadata.get("preprocessing")
        history = model.metadata.get("history", {})
    X_train, X_val, X_test, stats = preprocess(data, args, stats)
    y_train, y_test = data["train"][1], data["test"][1]
    if model is None:
        model = mq.models.lenet5(num_classes=10, seed=args.seed, dtype=args.dtype)

    info = mq.build_info()
    print(f"maqueta {info['version']}  backend {args.backend}  {info['isa']}  {mq.get_num_threads()} thread(s)"
          + (f" x {processes} processes (data-parallel)" if args.distributed else "") + f"  dtype {args.dtype}")
    print(f"data: {data['source']}")
    print(f"      train {len(y_train):,} images" + (f", validation {len(data['val'][1]):,}" if X_val is not None else "")
          + (f", test {len(y_test):,} ({data['test_desc']})" if X_test is not None else ", no test set"))
    print(f"      inputs 32x32 by {args.resize}, pixels {args.pixels}"
          + (f" (mean {stats['mean']:.4f}, std {stats['std']:.4f})" if stats else ""))
    print(f"model: LeNet-5, {model.count_params():,} parameters, seed {args.seed}")
    print(f"training: {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr:g}"
          f" ({args.schedule} schedule)" + (f", weight decay {args.weight_decay:g}" if args.weight_decay else ""))

    validation = (X_val, data["val"][1]) if X_val is not None else (X_test, y_test) if X_test is not None else None
    metadata = {"run": run, "preprocessing": stats, "history": history}
    if model.epochs_trained:
        print(f"resuming from {args.checkpoint} after epoch {model.epochs_trained}")
    if model.epochs_trained < args.epochs:
        optimizer = model.optimizer if model.optimizer is not None else make_optimizer(args)
        model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
                  validation_data=validation, verbose=0 if args.quiet else 1, initial_epoch=model.epochs_trained,
                  callbacks=[mq.LearningRateScheduler(schedule(args)),
                             EpochReport(len(y_train), args.checkpoint if rank == 0 else None, metadata, start)],
                  distributed=args.distributed)
        if not args.checkpoint:
            for key, values in model.history.history.items():
                history.setdefault(key, []).extend(values)
    history = metadata["history"] if args.checkpoint else history
    if rank != 0:   # the trained model is rank 0's to evaluate, save and plot
        return model

    train_acc = model.accuracy(X_train, y_train)
    print(f"accuracy on the {len(y_train):,} training images after training: {train_acc:.2%}")
    if X_test is not None:
        result = model.evaluate(X_test, y_test)
        errors = int(round((1 - result["accuracy"]) * len(y_test)))
        print(f"test accuracy: {result['accuracy']:.2%} ({len(y_test) - errors:,} / {len(y_test):,} correct, "
              f"loss {result['loss']:.4f}) on the {data['test_desc']}")
    save = args.save or os.path.join("runs", f"lenet5-{data['name']}.maq")
    os.makedirs(os.path.dirname(os.path.abspath(save)), exist_ok=True)
    model.metadata = {"run": run, "preprocessing": stats, "history": history}
    model.save(save)
    print(f"saved the model to {save}  (elapsed {time.perf_counter() - start:.1f} s)")
    if args.plot:
        plot(args.plot, history, model, X_test, y_test, data)
        print(f"wrote {args.plot}")
    return model


def plot(path, history, model, X_test, y_test, data):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install matplotlib (or the project's [examples] extra)")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history.get(key, []), "o-", label="train")
        if history.get("val_" + key):
            ax.plot(epochs, history["val_" + key], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax = axes[2]
    if X_test is not None:
        predicted = model.predict(X_test)
        confusion = np.zeros((10, 10), np.int64)
        np.add.at(confusion, (y_test, predicted), 1)
        ax.imshow(confusion, cmap="Blues")
        for i in range(10):
            for j in range(10):
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
        names = CLASS_NAMES.get(data["name"], [str(i) for i in range(10)])
        ax.set_xticks(range(10), names, rotation=45, ha="right")
        ax.set_yticks(range(10), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix: {np.trace(confusion) / confusion.sum():.2%} correct\n({data['test_desc']})",
                     fontsize=10)
    else:
        ax.axis("off")
        ax.set_title("no test set")
    fig.suptitle(f"LeNet-5 on {data['source']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
