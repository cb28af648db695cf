#!/usr/bin/env python3
"""End-to-end LeNet-5: training images/s (Adam, cross-entropy, batch 32, 64, 256), inference
images/s (batch 256) and single-image latency, maqueta against PyTorch in the same process with
the same thread count, runs alternating; plus the peak memory of a Fashion-MNIST training epoch.
Like bench_zoo.py it restarts itself with glibc keeping freed memory (common.KEEP_FREED_MEMORY),
so that PyTorch pays no page faults; --os-malloc keeps the defaults.

    python benchmarks/bench_lenet5.py                       # 2 threads, the table and results/bench_lenet5.json
    python benchmarks/bench_lenet5.py --threads 1,2,4,8,16  # a scaling table
"""
from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (default_malloc_env, keep_freed_memory, machine, median_spread, mnist_like,  # noqa: E402
                    save_json, set_threads, table, torch_lenet5)

import maqueta as mq  # noqa: E402


def maqueta_epoch(model, X, y, batch):
    start = time.perf_counter()
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
    return len(X) / (time.perf_counter() - start)


def torch_epoch(net, opt, Xt, yt, batch):
    import torch
    F = torch.nn.functional
    start = time.perf_counter()
    perm = torch.randperm(len(Xt))
    for s in range(0, len(Xt), batch):
        index = perm[s:s + batch]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(Xt[index]), yt[index]).backward()
        opt.step()
    return len(Xt) / (time.perf_counter() - start)


def training(X, y, batch, repeats, with_torch):
    model = mq.models.lenet5(seed=0)
    model.optimizer = mq.Adam(1e-3)
    ours, theirs = [], []
    if with_torch:
        import torch
        net = torch_lenet5()
        net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    maqueta_epoch(model, X[:2048], y[:2048], batch)              # warm up both
    if with_torch:
        torch_epoch(net, opt, Xt[:2048], yt[:2048], batch)
    for _ in range(repeats):
        ours.append(maqueta_epoch(model, X, y, batch))
        if with_torch:
            theirs.append(torch_epoch(net, opt, Xt, yt, batch))
    return ours, theirs


def inference(X, repeats, with_torch):
    model = mq.models.lenet5(seed=0)
    ours, theirs = [], []
    if with_torch:
        import torch
        net = torch_lenet5().eval()
        Xt = torch.from_numpy(X)
    for r in range(repeats + 1):
        start = time.perf_counter()
        model.predict_proba(X, batch_size=256)
        rate = len(X) / (time.perf_counter() - start)
        if r:
            ours.append(rate)
        if with_torch:
            with torch.inference_mode():
                start = time.perf_counter()
                for s in range(0, len(Xt), 256):
                    torch.softmax(net(Xt[s:s + 256]), dim=1)
                rate = len(X) / (time.perf_counter() - start)
            if r:
                theirs.append(rate)
    return ours, theirs


def latency(X, calls, with_torch):
    model = mq.models.lenet5(seed=0)
    one = X[:1]
    ours, theirs = [], []
    if with_torch:
        import torch
        net = torch_lenet5().eval()
        one_t = torch.from_numpy(one)
    for _ in range(20):
        model(one)
    for _ in range(calls):
        start = time.perf_counter()
        model(one)
        ours.append(time.perf_counter() - start)
    if with_torch:
        with torch.inference_mode():
            for _ in range(20):
                net(one_t)
            for _ in range(calls):
                start = time.perf_counter()
                net(one_t)
                theirs.append(time.perf_counter() - start)
    return ours, theirs


PEAK_SNIPPET = r"""
import gc, sys, time
import numpy as np
import maqueta as mq
from maqueta import datasets
which, threads = sys.argv[1], int(sys.argv[2])
images, labels = datasets.load_fashion_mnist("train", download=False)
X = datasets.prepare(images, mean=0.286, std=0.353)
del images
gc.collect()
def status(key):
    with open("/proc/self/status") as f:
        return int(next(l.split()[1] for l in f if l.startswith(key))) * 1024
if which == "torch":
    import torch
    torch.set_num_threads(threads)
    net = __import__("common").torch_lenet5()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(labels)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                      # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
start = time.perf_counter()
if which == "maqueta":
    mq.set_num_threads(threads)
    mq.models.lenet5().fit(X, labels, epochs=1, batch_size=64, verbose=0, optimizer=mq.Adam(1e-3))
else:
    F = torch.nn.functional
    perm = torch.randperm(len(Xt))
    for s in range(0, len(Xt), 64):
        i = perm[s:s + 64]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(Xt[i]), yt[i]).backward()
        opt.step()
print(X.nbytes, before, status("VmHWM:"), time.perf_counter() - start)
"""


def peak_memory(threads, with_torch):
    """Peak resident memory of one Fashion-MNIST epoch (batch 64), in a fresh process each."""
    out = {}
    for which in (["maqueta", "torch"] if with_torch else ["maqueta"]):
        result = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, which, str(threads)], capture_output=True,
                                text=True, env=default_malloc_env())
        if result.returncode != 0:
            return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
        dataset, before, peak, seconds = result.stdout.split()
        out[which] = {"dataset_mb": int(dataset) / 2**20, "rss_before_mb": int(before) / 2**20,
                      "peak_mb": int(peak) / 2**20, "above_dataset_mb": (int(peak) - int(dataset)) / 2**20,
                      "epoch_seconds": float(seconds)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="2", help="comma-separated thread counts")
    parser.add_argument("--batches", default="32,64,256")
    parser.add_argument("--images", type=int, default=8192, help="images per timed training run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--os-malloc", action="store_true",
                        help="keep glibc's default allocation thresholds (PyTorch then pays page faults)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "bench_lenet5.json"))
    args = parser.parse_args()
    allocator = "the C library's defaults" if args.os_malloc else keep_freed_memory()
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed: measuring maqueta alone", file=sys.stderr)
            with_torch = False
    X, y, source = mnist_like(args.images)
    results = {"machine": machine(), "data": source, "images_per_run": args.images, "repeats": args.repeats,
               "allocator": allocator, "runs": []}
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        set_threads(threads)
        cases = [(f"train b{b}", lambda b=b: training(X, y, b, args.repeats, with_torch)) for b in
                 (int(v) for v in args.batches.split(","))]
        cases.append(("infer b256", lambda: inference(X, args.repeats, with_torch)))
        for name, run in cases:
            gc.collect()
            ours, theirs = run()
            entry = {"threads": threads, "case": name, "maqueta_images_per_s": ours, "torch_images_per_s": theirs}
            results["runs"].append(entry)
            m, (lo, hi) = median_spread(ours)
            row = [threads, name, f"{m:,.0f}", f"{lo:,.0f}-{hi:,.0f}"]
            if theirs:
                t, (tlo, thi) = median_spread(theirs)
                row += [f"{t:,.0f}", f"{tlo:,.0f}-{thi:,.0f}", f"{m / t:.2f}x"]
            rows.append(row)
            print(" ".join(map(str, row)), file=sys.stderr, flush=True)
        ours, theirs = latency(X, 400, with_torch)
        results["runs"].append({"threads": threads, "case": "latency b1", "maqueta_seconds": ours, "torch_seconds": theirs})
        m = median_spread(ours)[0] * 1e6
        row = [threads, "latency b1 (us)", f"{m:.0f}", ""]
        if theirs:
            t = median_spread(theirs)[0] * 1e6
            row += [f"{t:.0f}", "", f"{t / m:.2f}x faster"]
        rows.append(row)
    headers = ["threads", "case", "maqueta img/s", "spread", "PyTorch img/s", "spread", "ratio"]
    if not with_torch:
        headers = headers[:4]
    print(f"\nLeNet-5, float32, {source}; medians of {args.repeats} runs of {args.images} images; "
          f"{results['machine']['cpu']}; maqueta {results['machine']['maqueta_isa']}, torch {results['machine']['torch']}; "
          f"malloc: {allocator}")
    print(table(rows, headers))
    if not args.no_memory:
        threads = int(args.threads.split(",")[-1])
        memory = peak_memory(threads, with_torch)
        results["peak_memory_fashion_epoch"] = memory
        if "error" in memory:
            print(f"\npeak memory: not measured ({memory['error']})")
        else:
            print("\nPeak RSS of one Fashion-MNIST epoch (batch 64, dataset as float32 1x32x32):")
            print(table([[k, f"{v['dataset_mb']:.0f}", f"{v['rss_before_mb']:.0f}", f"{v['peak_mb']:.0f}",
                          f"{v['above_dataset_mb']:.0f}", f"{v['epoch_seconds']:.1f}"] for k, v in memory.items()],
                        ["library", "dataset MB", "RSS before MB", "peak MB", "peak - dataset MB", "epoch s"]))
    save_json(args.out, results)


if __name__ == "__main__":
    main()
