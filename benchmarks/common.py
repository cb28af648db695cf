"""Shared helpers for the benchmarks: timing, machine description, data, the PyTorch LeNet-5."""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def median_spread(samples):
    """(median, (min, max)) of a list of numbers."""
    return statistics.median(samples), (min(samples), max(samples))


def time_call(fn, repeats=7, min_seconds=0.05, warmup=2):
    """Seconds per call of fn(): the median of `repeats` timings, each of enough calls to last
    at least min_seconds; also the (min, max) of those timings."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(min_seconds / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return median_spread(samples)


def fma_peak(threads):
    """GFLOP/s of fma_peak.c (independent vector multiply-add chains on every thread), compiled
    here with -march=native: the ceiling no kernel can pass. None without a C compiler."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fma_peak.c")
    with tempfile.TemporaryDirectory() as scratch:
        binary = os.path.join(scratch, "fma_peak")
        built = subprocess.run([compiler, "-O2", "-march=native", "-fopenmp", source, "-o", binary],
                               capture_output=True, text=True)
        if built.returncode != 0:
            print(f"fma_peak.c did not compile: {built.stderr.strip()[:300]}", file=sys.stderr)
            return None
        ran = subprocess.run([binary, str(threads), "0.3"], capture_output=True, text=True, timeout=60)
        return float(ran.stdout.split()[-1]) if ran.returncode == 0 else None


def machine():
    """What the numbers were measured on."""
    import maqueta as mq
    info = {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count(),
            "maqueta": mq.__version__, "maqueta_isa": mq.build_info()["isa"]}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


# glibc returns a freed block of more than its mmap threshold (128 KiB at first, raised up to 32 MiB
# as such blocks are freed) to the system, and the next allocation faults its pages in again.
# PyTorch allocates every activation afresh, so in a fresh process on this VM its training and
# inference ran at half or a third of the speed they reach once the thresholds have risen, and
# which one a run got depended on what the process had done before. These settings keep freed
# memory in the heap from the start: every library is measured at its best, reproducibly.
KEEP_FREED_MEMORY = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"


def keep_freed_memory():
    """Run this script again under KEEP_FREED_MEMORY (glibc reads it at start) unless it already
    is, or the C library is not glibc; returns the setting in effect."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "malloc.mmap_threshold" in tunables or platform.libc_ver()[0] != "glibc":
        return tunables or "the C library's defaults"
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, KEEP_FREED_MEMORY])))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def default_malloc_env(**extra):
    """os.environ (with extra) for a subprocess that measures memory: glibc's own thresholds, since
    kept freed memory would hide growth in pages freed before the measurement; the benchmarks
    folder ahead of PYTHONPATH."""
    env = dict(os.environ, **extra)
    tunables = env.pop("GLIBC_TUNABLES", "").replace(KEEP_FREED_MEMORY, "").strip(":")
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    return env


def set_threads(n):
    import maqueta as mq
    mq.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def mnist_like(n, seed=0):
    """n MNIST test images as LeNet-5 inputs (float32, 1x32x32) with labels, if the files are
    installed; else random images of the same shape and value range."""
    from maqueta import datasets
    candidates = [os.environ.get("MAQUETA_TEST_MNIST"), ROOT.parent / "shared" / "data" / "mnist",
                  "/work/shared/data/mnist"]
    for folder in candidates:
        if folder and (Path(folder) / "t10k-images-idx3-ubyte.gz").is_file():
            images, labels = datasets.load_mnist("test", data_dir=folder, download=False)
            reps = -(-n // len(images))
            images, labels = np.concatenate([images] * reps)[:n], np.concatenate([labels] * reps)[:n]
            return datasets.prepare(images, mean=0.1, std=0.3), labels, "MNIST test images"
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 1, 28, 28)) < 0.2) * rng.integers(0, 256, (n, 1, 28, 28))
    return datasets.prepare(images.astype(np.uint8), mean=0.1, std=0.3), rng.integers(0, 10, n), "random images"


def torch_lenet5():
    import torch
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, 10))


def save_json(path, payload):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}", file=sys.stderr)


def table(rows, headers):
    """A plain text table (also valid Markdown)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
