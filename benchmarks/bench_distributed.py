#!/usr/bin/env python3
"""Data-parallel LeNet-5 training: P processes x T threads on the same cores, images/s and the
share of a step spent in the gradient allreduce; plus the allreduce alone, timed after a barrier.

    python benchmarks/bench_distributed.py                         # 1 x 2 against 2 x 1 on Fashion-MNIST
    python benchmarks/bench_distributed.py --cores 16 --processes 1,2,4,8
    python benchmarks/bench_distributed.py --quick                 # smoke run (what the tests run)

Every configuration trains the same model on the same images with the same global batch, one
epoch per repeat, configurations alternating; the median is reported. "1 x T (plain)" is the
normal fit; the others run fit(distributed=True) under mpiexec. "allreduce share" is the time
inside the step allreduces over the epoch's time, waiting for the slower rank included; "allreduce
alone" times the same call on the gradient buffer after a barrier, so it is the transfer itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cores", type=int, default=2, help="cores shared out: each of P processes gets cores // P threads")
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--batches", default="64,256", help="comma-separated global batch sizes")
    p.add_argument("--images", type=int, default=60000, help="training images per epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per configuration")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--quick", action="store_true", help="smoke run: 512 images, batch 64, 1 repeat")
    p.add_argument("--out", default=str(HERE / "results" / "bench_distributed.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.batches, args.repeats = 512, "64", 1
    return args


def load_images(n, dtype):
    """(X, y, source): Fashion-MNIST's training images when installed, else MNIST-like ones."""
    import numpy as np
    from maqueta import datasets
    try:
        images, labels = datasets.load_fashion_mnist("train", download=False)
        reps = -(-n // len(images))
        images, labels = [np.concatenate([a] * reps)[:n] for a in (images, labels)]
        return datasets.prepare(images, mean=0.286, std=0.353, dtype=dtype), labels, "Fashion-MNIST train"
    except Exception:
        from common import mnist_like
        X, y, source = mnist_like(n)
        return X.astype(dtype), y, source


def worker(args):
    """One configuration, on every rank; rank 0 prints one JSON line."""
    import maqueta as mq
    distributed = not args.plain
    comm = None
    if distributed:
        from maqueta import distributed as dist
        comm = dist.world()
    X, y, source = load_images(args.images, args.dtype)
    model = mq.models.lenet5(seed=0, dtype=args.dtype)
    model.optimizer = mq.Adam(1e-3)
    model.fit(X[:1024], y[:1024], batch_size=args.batch, verbose=0, distributed=distributed)   # warm up
    rates, shares = [], []
    for _ in range(args.repeats):
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        history = model.fit(X, y, batch_size=args.batch, verbose=0, distributed=distributed)
        rates.append(len(X) / (time.perf_counter() - start))
        if distributed:
            shares.append(history.history["allreduce_seconds"][0] / history.history["seconds"][0])
    alone = None
    if comm is not None:
        from mpi4py import MPI
        grads, samples = model.state.grads, []
        for i in range(220):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
            if i >= 20:
                samples.append(time.perf_counter() - start)
        alone = statistics.median(samples)
    if comm is None or comm.Get_rank() == 0:
        print("RESULT " + json.dumps({"images_per_s": rates, "allreduce_share": shares, "allreduce_alone_s": alone,
                                      "source": source, "gradient_bytes": model.state.grads.nbytes}),
              flush=True)


def launch(args, processes, threads, batch, plain):
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--batch", str(batch), "--images",
               str(args.images), "--repeats", "1", "--dtype", args.dtype]
    if plain:
        command.append("--plain")
    else:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        command = [str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec"), "-n", str(processes), *command]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}{out.stderr[-4000:]}")
    return json.loads(next(line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from common import machine, save_json, table
    counts = [int(p) for p in args.processes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    configs = [(1, args.cores, True)] + [(p, max(1, args.cores // p), False) for p in counts]
    runs = {}
    for _ in range(args.repeats):   # alternate configurations so that noise spreads over all of them
        for batch in batches:
            for processes, threads, plain in configs:
                result = launch(args, processes, threads, batch, plain)
                entry = runs.setdefault((batch, processes, threads, plain), {**result, "images_per_s": [],
                                                                             "allreduce_share": [], "alone": []})
                entry["images_per_s"] += result["images_per_s"]
                entry["allreduce_share"] += result["allreduce_share"]
                if result["allreduce_alone_s"] is not None:
                    entry["alone"].append(result["allreduce_alone_s"])
    rows, records = [], []
    for (batch, processes, threads, plain), entry in runs.items():
        rate = statistics.median(entry["images_per_s"])
        share = statistics.median(entry["allreduce_share"]) if entry["allreduce_share"] else None
        alone = statistics.median(entry["alone"]) if entry["alone"] else None
        step_ms = 1e3 * batch / rate
        name = f"{processes} x {threads}" + (" (plain fit)" if plain else "")
        spread = f"{min(entry['images_per_s']):,.0f}-{max(entry['images_per_s']):,.0f}"
        rows.append([f"b{batch}", name, f"{rate:,.0f}", spread,
                     f"{step_ms:.2f}", "-" if share is None else f"{share:.1%}",
                     "-" if alone is None else f"{alone * 1e6:.0f} us"])
        records.append({"batch": batch, "processes": processes, "threads": threads, "plain_fit": plain,
                        "images_per_s": entry["images_per_s"], "allreduce_share": entry["allreduce_share"],
                        "allreduce_alone_s": entry["alone"], "source": entry["source"],
                        "gradient_bytes": entry["gradient_bytes"]})
    text = table(rows, ["batch", "processes x threads", "images/s", "range", "ms/step", "allreduce share",
                        "allreduce alone"])
    source = records[0]["source"]
    print(f"LeNet-5, {args.dtype}, {source}, {args.images:,} images per epoch, Adam, median of {args.repeats}")
    print(text)
    save_json(args.out, {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "worker"},
                         "runs": records})


if __name__ == "__main__":
    main()
