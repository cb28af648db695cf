#!/usr/bin/env python3
"""The benchmark zoo: small CNNs people train on CPUs (benchmarks/zoo.py), each built the same way
in maqueta and in PyTorch with the same weights. For each: training images/s (Adam, cross-entropy)
at batch 32, 64 and 256, inference images/s at batch 256, single-image latency, the GFLOP/s a
training step reaches and its share of the machine's peak measured in the same run (the float32
multiply-add ceiling, fma_peak.c; the best BLAS GEMM is reported beside it), PyTorch's
compiled mode (torch.compile; compile time excluded and reported) as a second column, and the peak
memory of a training epoch. Runs alternate between the libraries; each figure is a median.
The script restarts itself with glibc told to keep freed memory (common.KEEP_FREED_MEMORY): with
the defaults PyTorch's speed here depends on page faults and on the process's history.

    python benchmarks/bench_zoo.py                              # every network, 2 threads
    python benchmarks/bench_zoo.py --networks cifar-vgg --no-compile --no-memory
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
from common import (default_malloc_env, fma_peak, keep_freed_memory, machine, median_spread,  # noqa: E402
                    save_json, set_threads, table)
from zoo import ZOO, flops, maqueta_model, torch_model  # noqa: E402

import maqueta as mq  # noqa: E402


def data(name, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *ZOO[name][0])).astype(np.float32), rng.integers(0, 10, n)


def gemm_peak(repeats):
    """GFLOP/s of float32 matrix products (n = 1024 and 2048), the best of numpy's BLAS and PyTorch's."""
    import torch
    best = 0.0
    for n in (1024, 2048):
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        at = torch.from_numpy(a)
        for fn in (lambda: a @ a, lambda: torch.mm(at, at)):
            fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            best = max(best, 2 * n ** 3 / min(times) / 1e9)
    return best


def maqueta_train(model, X, y, batch):
    start = time.perf_counter()
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
    return len(X) / (time.perf_counter() - start)


def torch_train(step, Xt, yt, batch):
    import torch
    start = time.perf_counter()
    perm = torch.randperm(len(Xt))
    for s in range(0, len(Xt), batch):
        index = perm[s:s + batch]
        step(Xt[index], yt[index])
    return len(Xt) / (time.perf_counter() - start)


def torch_step(net):
    import torch
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.functional.cross_entropy

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()
    return step


def training(name, batch, images, repeats, compile_train):
    """img/s lists: maqueta, PyTorch eager, PyTorch compiled (or []), and the compile seconds."""
    import torch
    X, y = data(name, images)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    model = maqueta_model(name)
    model.optimizer = mq.Adam(1e-3)
    net = torch_model(name, model).train()
    eager = torch_step(net)
    runs = [("maqueta", lambda: maqueta_train(model, X, y, batch)), ("eager", lambda: torch_train(eager, Xt, yt, batch))]
    compile_seconds = None
    if compile_train:
        compiled_net = torch_model(name, model).train()
        compiled = torch.compile(torch_step(compiled_net))
        start = time.perf_counter()
        compiled(Xt[:batch], yt[:batch])
        compiled(Xt[:batch], yt[:batch])
        compile_seconds = time.perf_counter() - start
        if len(X) % batch:   # the last partial batch would compile again: time whole batches
            Xt, yt = Xt[:len(X) // batch * batch], yt[:len(X) // batch * batch]
        runs.append(("compiled", lambda: torch_train(compiled, Xt, yt, batch)))
    rates = {key: [] for key, _ in runs}
    for key, run in runs:                      # warm-up
        run()
    for _ in range(repeats):
        for key, run in runs:
            rates[key].append(run())
    return rates, compile_seconds


def inference(name, images, repeats, compile_infer):
    import torch
    X, _ = data(name, images)
    Xt = torch.from_numpy(X)
    model = maqueta_model(name)
    net = torch_model(name, model).eval()

    def ours():
        start = time.perf_counter()
        model.predict_proba(X, batch_size=256)
        return len(X) / (time.perf_counter() - start)

    def theirs(fn):
        def run():
            with torch.inference_mode():
                start = time.perf_counter()
                for s in range(0, len(Xt) // 256 * 256, 256):
                    torch.softmax(fn(Xt[s:s + 256]), dim=1)
                return len(Xt) // 256 * 256 / (time.perf_counter() - start)
        return run
    runs = [("maqueta", ours), ("eager", theirs(net))]
    compile_seconds = None
    if compile_infer:
        compiled = torch.compile(torch_model(name, model).eval())
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(Xt[:256])
        compile_seconds = time.perf_counter() - start
        runs.append(("compiled", theirs(compiled)))
    rates = {key: [] for key, _ in runs}
    for key, run in runs:
        run()
    for _ in range(repeats):
        for key, run in runs:
            rates[key].append(run())
    return rates, compile_seconds


def latency(name, calls):
    import torch
    X, _ = data(name, 1)
    model = maqueta_model(name)
    net = torch_model(name, model).eval()
    Xt = torch.from_numpy(X)
    out = {"maqueta": [], "eager": []}
    with torch.inference_mode():
        for _ in range(20):
            model(X)
            net(Xt)
        for _ in range(calls):
            start = time.perf_counter()
            model(X)
            out["maqueta"].append(time.perf_counter() - start)
            start = time.perf_counter()
            net(Xt)
            out["eager"].append(time.perf_counter() - start)
    return out


MEMORY_SNIPPET = r"""
import sys, time
import numpy as np
from bench_zoo import data, maqueta_model, torch_model, torch_step, torch_train
import maqueta as mq
which, name, threads, images = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
X, y = data(name, images)
def status(key):
    with open("/proc/self/status") as f:
        return int(next(l.split()[1] for l in f if l.startswith(key))) * 1024
model = maqueta_model(name)
if which == "torch":
    import torch
    torch.set_num_threads(threads)
    step = torch_step(torch_model(name, model).train())
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                      # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
if which == "maqueta":
    mq.set_num_threads(threads)
    model.fit(X, y, epochs=1, batch_size=64, verbose=0, optimizer=mq.Adam(1e-3))
else:
    torch_train(step, Xt, yt, 64)
print(before, status("VmHWM:"))
"""


def peak_memory(name, threads, images):
    """MB the peak resident size of a training epoch (batch 64) rises above the size before it,
    in a fresh process per library."""
    out = {}
    env = default_malloc_env()   # kept memory would hide the epoch's growth in the data draw's freed pages
    for which in ("maqueta", "torch"):
        result = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, which, name, str(threads), str(images)],
                                capture_output=True, text=True, env=env)
        if result.returncode != 0:
            return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
        before, peak = map(int, result.stdout.split())
        out[which] = (peak - before) / 2**20
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(ZOO), help="comma-separated names: " + ", ".join(ZOO))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="32,64,256")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long each timed training run lasts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on 2 cores)")
    parser.add_argument("--compile-train", default="64",
                        help="batch sizes at which compiled training is timed too (each compiles anew)")
    parser.add_argument("--infer-images", type=int, default=4096, help="images per timed inference run")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--os-malloc", action="store_true",
                        help="keep glibc's default allocation thresholds (PyTorch then pays page faults)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "bench_zoo.json"))
    args = parser.parse_args()
    names = args.networks.split(",")
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown networks {unknown}; the zoo has {list(ZOO)}")
    allocator = "the C library's defaults" if args.os_malloc else keep_freed_memory()
    import torch
    set_threads(args.threads)
    gemm, fma = gemm_peak(args.repeats), fma_peak(args.threads)
    print(f"{args.threads} threads: best GEMM (float32, n = 1024, 2048) {gemm:.1f} GFLOP/s, multiply-add peak "
          f"{fma} GFLOP/s", file=sys.stderr, flush=True)
    results = {"machine": machine(), "threads": args.threads, "gemm_peak_gflops": gemm, "fma_peak_gflops": fma,
               "repeats": args.repeats, "allocator": allocator, "networks": {}}
    rows = []
    for name in names:
        forward, step_flops = flops(name)
        entry = results["networks"][name] = {"description": ZOO[name][2], "params": maqueta_model(name).count_params(),
                                             "forward_flops": forward, "train_flops": step_flops, "cases": {}}
        probe, _ = training(name, 64, 256, 1, False)          # sizes each timed run to about --seconds
        rate = median_spread(probe["maqueta"])[0]
        for batch in (int(b) for b in args.batches.split(",")):
            images = max(batch, int(rate * args.seconds) // batch * batch)
            gc.collect()
            compile_train = not args.no_compile and str(batch) in args.compile_train.split(",")
            rates, compile_seconds = training(name, batch, images, args.repeats, compile_train)
            entry["cases"][f"train b{batch}"] = {"images": images, **rates, "compile_seconds": compile_seconds}
            rows.append(row(name, f"train b{batch}", rates, step_flops, compile_seconds))
            print(" ".join(map(str, rows[-1][:8])), file=sys.stderr, flush=True)
        rates, compile_seconds = inference(name, max(256, args.infer_images), args.repeats, not args.no_compile)
        entry["cases"]["infer b256"] = {**rates, "compile_seconds": compile_seconds}
        rows.append(row(name, "infer b256", rates, forward, compile_seconds))
        times = latency(name, 200)
        entry["cases"]["latency b1"] = times
        m, t = median_spread(times["maqueta"])[0] * 1e6, median_spread(times["eager"])[0] * 1e6
        rows.append([name, "latency b1 (us)", f"{m:.0f}", f"{t:.0f}", f"{t / m:.2f}x", "", "", "", None, None])
        print(" ".join(map(str, rows[-2][:8])), file=sys.stderr, flush=True)
        if not args.no_memory:
            entry["epoch_peak_mb_above_start"] = peak_memory(name, args.threads, 8192)
    # again, in case the first was disturbed; shares are of the multiply-add peak where it was measured
    gemm = results["gemm_peak_gflops"] = max(gemm, gemm_peak(args.repeats))
    fma = results["fma_peak_gflops"] = max(fma or 0.0, fma_peak(args.threads) or 0.0) or None
    peak = fma or gemm
    rows = [row[:8] + [share(r, peak) for r in row[8:]] for row in rows]
    info = results["machine"]
    print(f"\nThe zoo, float32, {args.threads} threads, medians of {args.repeats} alternating runs; {info['cpu']}; "
          f"maqueta {info['maqueta_isa']}, torch {info['torch']}; peak {peak:.0f} GFLOP/s "
          f"({'multiply-add chains' if fma else 'best GEMM'}; best GEMM {gemm:.0f}); malloc: {allocator}")
    print(table(rows, ["network", "case", "maqueta img/s", "PyTorch img/s", "maqueta/PyTorch", "compiled img/s",
                       "maqueta/compiled", "compile s", "maqueta GFLOP/s (% peak)",
                       "PyTorch GFLOP/s (% peak)"]))
    if not args.no_memory:
        print("\nPeak resident memory of a training epoch (8,192 images, batch 64) above the size before it, MB:")
        print(table([[n, *(f"{e['epoch_peak_mb_above_start'].get(k, float('nan')):.1f}" for k in ("maqueta", "torch"))]
                     for n, e in results["networks"].items()], ["network", "maqueta", "PyTorch"]))
    save_json(args.out, results)


def row(name, case, rates, flops_per_image, compile_seconds):
    """A table row: img/s of each side, ratios, compile time, and the GFLOP/s of each side (made
    a share of the peak at the end, by share)."""
    ours, eager = median_spread(rates["maqueta"])[0], median_spread(rates["eager"])[0]
    compiled = median_spread(rates["compiled"])[0] if rates.get("compiled") else None
    return [name, case, f"{ours:,.0f}", f"{eager:,.0f}", f"{ours / eager:.2f}x",
            f"{compiled:,.0f}" if compiled else "", f"{ours / compiled:.2f}x" if compiled else "",
            f"{compile_seconds:.1f}" if compile_seconds else "", ours * flops_per_image / 1e9,
            eager * flops_per_image / 1e9]


def share(gflops, peak):
    return "" if gflops is None else f"{gflops:.0f} ({100 * gflops / peak:.0f} %)"


if __name__ == "__main__":
    main()
