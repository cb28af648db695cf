#!/usr/bin/env python3
"""Kernel by kernel: conv2d forward and backward (dx+dw+db, and dw+db only), max-pool forward and
backward, and the Adam update over LeNet-5's 61,706 parameters, at LeNet-5's shapes for batch 32
and 256 and one larger convolution; maqueta against PyTorch's kernels (same threads) and against
maqueta's NumPy reference, in the same run. Every native result is checked against the reference
before it is timed. GFLOP/s are read against the machine's float32 multiply-add peak (fma_peak.c;
the best large torch.mm without a C compiler). Both libraries' kernels allocate their outputs; the
script restarts itself with glibc keeping freed memory (common.KEEP_FREED_MEMORY), so that no
fresh output faults its pages in; --os-malloc keeps the defaults.

    python benchmarks/bench_kernels.py                 # 2 threads, table and results/bench_kernels.json
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fma_peak, keep_freed_memory, machine, save_json, set_threads, table, time_call  # noqa: E402

import maqueta as mq  # noqa: E402
from maqueta import ops, reference  # noqa: E402

# name, (N, C, H, W), (O, KH, KW), stride, padding
CONVS = [
    ("conv1 b32", (32, 1, 32, 32), (6, 5, 5), 1, 0),
    ("conv2 b32", (32, 6, 14, 14), (16, 5, 5), 1, 0),
    ("conv1 b256", (256, 1, 32, 32), (6, 5, 5), 1, 0),
    ("conv2 b256", (256, 6, 14, 14), (16, 5, 5), 1, 0),
    ("conv 32->64 3x3 p1 b64", (64, 32, 32, 32), (64, 3, 3), 1, 1),
]
POOLS = [("pool1 b32", (32, 6, 28, 28)), ("pool2 b32", (32, 16, 10, 10)),
         ("pool1 b256", (256, 6, 28, 28)), ("pool2 b256", (256, 16, 10, 10))]


def check(name, got, want, dtype=np.float32):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        if g is None and w is None:
            continue
        scale = max(float(np.abs(w).max()), 1e-30)
        err = float(np.abs(np.asarray(g, np.float64) - w).max()) / scale
        if err > 1e-4:
            raise SystemExit(f"{name}: native result differs from the reference by {err:.2e}; not timing it")


def gemm_peak(torch, sizes=(1024, 1536, 2048, 3072), repeats=5):
    """The machine's practical float32 peak: the best of torch.mm (MKL/oneDNN) over a few square
    sizes, each the median of repeats (one size alone can understate it)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        seconds, _ = time_call(lambda: torch.mm(a, b), repeats=repeats, min_seconds=0.2 if repeats > 1 else 0.0)
        best = max(best, 2 * n ** 3 / seconds / 1e9)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-reference", action="store_true", help="skip timing the (slow) NumPy reference")
    parser.add_argument("--out", help="JSON file (default results/bench_kernels.json; --quick writes none "
                                      "unless asked, so it never replaces real results)")
    parser.add_argument("--os-malloc", action="store_true",
                        help="keep glibc's default allocation thresholds (fresh outputs then fault their pages in)")
    parser.add_argument("--quick", action="store_true",
                        help="one timing per kernel and a small GEMM: checks the script runs, measures nothing")
    args = parser.parse_args()
    allocator = "the C library's defaults" if args.os_malloc else keep_freed_memory()
    if args.quick:
        args.repeats, args.no_reference = 1, True
    elif args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_kernels.json")
    try:
        import torch
        F = torch.nn.functional
    except ImportError:
        torch = None
    set_threads(args.threads)
    rng = np.random.default_rng(0)
    peak = None if torch is None else gemm_peak(torch, (256,), 1) if args.quick else gemm_peak(torch)
    rows, records = [], []

    def measure(name, flops, ours, theirs, ref):
        least = 0.0 if args.quick else 0.05
        t_ours, spread = time_call(ours, repeats=args.repeats, min_seconds=least)
        t_torch = time_call(theirs, repeats=args.repeats, min_seconds=least)[0] if theirs and torch is not None else None
        t_ref = time_call(ref, repeats=3, min_seconds=0.0, warmup=0)[0] if ref and not args.no_reference else None
        gflops = flops / t_ours / 1e9 if flops else None
        records.append({"kernel": name, "maqueta_s": t_ours, "maqueta_spread_s": spread, "torch_s": t_torch,
                        "reference_s": t_ref, "gflops": gflops})
        rows.append([name, f"{t_ours * 1e6:,.0f}", f"{spread[0] * 1e6:,.0f}-{spread[1] * 1e6:,.0f}",
                     f"{gflops:.1f}" if gflops else "", gflops,   # of peak: filled in once the peak is known
                     f"{t_torch * 1e6:,.0f}" if t_torch else "", f"{t_torch / t_ours:.2f}x" if t_torch else "",
                     f"{t_ref / t_ours:,.0f}x" if t_ref else ""])
        print(" ".join(str(c or "") for c in rows[-1]), file=sys.stderr, flush=True)

    for name, xs, (o, kh, kw), stride, padding in CONVS:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal((o, xs[1], kh, kw)).astype(np.float32) * 0.1
        b = rng.standard_normal(o).astype(np.float32)
        y = ops.conv2d_forward(x, w, b, stride, padding)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        flops = 2.0 * y.size * xs[1] * kh * kw
        small = slice(0, 2)   # the reference is checked on a slice of the batch: it is slow
        check(name, ops.conv2d_forward(x[small], w, b, stride, padding), reference.conv2d_forward(x[small], w, b, stride, padding))
        check(name, ops.conv2d_backward(dy[small], x[small], w, stride, padding),
              reference.conv2d_backward(dy[small], x[small], w, stride, padding))
        if torch is not None:
            xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
            conv_bwd = lambda mask: torch.ops.aten.convolution_backward(dyt, xt, wt, [o], [stride] * 2, [padding] * 2,
                                                                         [1, 1], False, [0, 0], 1, mask)
        measure(f"{name} forward", flops, lambda: ops.conv2d_forward(x, w, b, stride, padding),
                (lambda: F.conv2d(xt, wt, bt, stride, padding)) if torch is not None else None,
                lambda: reference.conv2d_forward(x, w, b, stride, padding))
        measure(f"{name} backward dx+dw+db", 2 * flops, lambda: ops.conv2d_backward(dy, x, w, stride, padding),
                (lambda: conv_bwd([True, True, True])) if torch is not None else None,
                lambda: reference.conv2d_backward(dy, x, w, stride, padding))
        measure(f"{name} backward dw+db", flops, lambda: ops.conv2d_backward(dy, x, w, stride, padding, need_dx=False),
                (lambda: conv_bwd([False, True, True])) if torch is not None else None,
                lambda: reference.conv2d_backward(dy, x, w, stride, padding, need_dx=False))

    for name, xs in POOLS:
        x = np.maximum(rng.standard_normal(xs).astype(np.float32), 0)
        y, idx = ops.maxpool2d_forward(x, 2)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        check(name, ops.maxpool2d_forward(x, 2)[0], reference.maxpool2d_forward(x, 2)[0])
        check(name, ops.maxpool2d_backward(dy, idx, xs), reference.maxpool2d_backward(dy, idx, xs))
        if torch is not None:
            xt, dyt, it = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(idx)
        measure(f"{name} forward", None, lambda: ops.maxpool2d_forward(x, 2),
                (lambda: torch.ops.aten.max_pool2d_with_indices(xt, [2, 2], [2, 2])) if torch is not None else None,
                lambda: reference.maxpool2d_forward(x, 2))
        measure(f"{name} backward", None, lambda: ops.maxpool2d_backward(dy, idx, xs),
                (lambda: torch.ops.aten.max_pool2d_with_indices_backward(dyt, xt, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                         False, it)) if torch is not None else None,
                lambda: reference.maxpool2d_backward(dy, idx, xs))

    # The batch-lane kernels: what LeNet-5 training and inference run once a batch holds at least V
    # images (V = one vector of floats): images sit in the vector lanes, [N/V][C][H][W][V]. Outputs
    # go to preallocated buffers, as in training; the rows above allocate theirs.
    from maqueta import _core
    V = _core._lanes_width(np.float32)
    to_lanes = lambda a: np.empty((-(-len(a) // V), *a.shape[1:], V), np.float32)

    def packed(a):
        out = to_lanes(a)
        _core._lanes_pack(a, out)
        return out

    def unpacked(lanes, n):
        out = np.empty((n, *lanes.shape[1:4]), np.float32)
        _core._lanes_unpack(lanes, out)
        return out

    for name, xs, (o, kh, kw), stride, padding in CONVS[:4]:
        n = xs[0]
        x = np.maximum(rng.standard_normal(xs).astype(np.float32), 0)
        w = rng.standard_normal((o, xs[1], kh, kw)).astype(np.float32) * 0.1
        b = rng.standard_normal(o).astype(np.float32)
        want = ops.conv2d_forward(x, w, b)
        dy = rng.standard_normal(want.shape).astype(np.float32)
        xl, dyl, yl = packed(x), packed(dy), to_lanes(want)
        dxl, dw, db = to_lanes(x), np.empty_like(w), np.empty_like(b)
        _core._lanes_conv2d_forward(xl, w, b, False, yl)
        check(f"{name} lanes", unpacked(yl, n), want)
        need_dx = name.startswith("conv2")   # LeNet-5's first conv needs no dx
        _core._lanes_conv2d_backward(dyl, xl, w, False, dxl if need_dx else None, dw, db)
        dx_want, dw_want, db_want = ops.conv2d_backward(dy, x, w, need_dx=need_dx)
        check(f"{name} lanes", (unpacked(dxl, n) if need_dx else None, dw, db), (dx_want, dw_want, db_want))
        flops = 2.0 * want.size * xs[1] * kh * kw
        if torch is not None:
            xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
            mask = [need_dx, True, True]
            conv_bwd = lambda mask=mask: torch.ops.aten.convolution_backward(dyt, xt, wt, [o], [1, 1], [0, 0], [1, 1],
                                                                             False, [0, 0], 1, mask)
        measure(f"{name} forward, lanes", flops, lambda: _core._lanes_conv2d_forward(xl, w, b, False, yl),
                (lambda: F.conv2d(xt, wt, bt)) if torch is not None else None, None)
        measure(f"{name} backward {'dx+dw+db' if need_dx else 'dw+db'}, lanes", flops * (2 if need_dx else 1),
                lambda: _core._lanes_conv2d_backward(dyl, xl, w, False, dxl if need_dx else None, dw, db),
                conv_bwd if torch is not None else None, None)

    for name, xs in POOLS:
        n = xs[0]
        x = np.maximum(rng.standard_normal(xs).astype(np.float32), 0)
        y, idx = ops.maxpool2d_forward(x, 2)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        xl, dyl, yl, dxl = packed(x), packed(dy), to_lanes(y), to_lanes(x)
        code = np.empty(yl.shape, np.int32)
        _core._lanes_maxpool2x2_forward(xl, yl, code)
        _core._lanes_maxpool2x2_backward(dyl, code, None, dxl)
        check(f"{name} lanes", (unpacked(yl, n), unpacked(dxl, n)), (y, ops.maxpool2d_backward(dy, idx, xs)))
        if torch is not None:
            xt, dyt, it = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(idx)
        measure(f"{name} forward, lanes", None, lambda: _core._lanes_maxpool2x2_forward(xl, yl, code),
                (lambda: torch.ops.aten.max_pool2d_with_indices(xt, [2, 2], [2, 2])) if torch is not None else None,
                None)
        measure(f"{name} backward, lanes", None, lambda: _core._lanes_maxpool2x2_backward(dyl, code, None, dxl),
                (lambda: torch.ops.aten.max_pool2d_with_indices_backward(dyt, xt, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                         False, it)) if torch is not None else None,
                None)

    # What LeNet-5 training runs: each convolution with its 2x2 pool inside, both ways (the forward
    # stores only the pooled output and its codes; the backward takes the gradient at the pool's
    # output), against PyTorch's convolution and max-pool pair. FLOPs count the convolution only.
    for (name, xs, (o, kh, kw), stride, padding), (pool_name, _) in zip(CONVS[:4], POOLS):
        n, pair = xs[0], name.split()[0] + "+" + pool_name
        x = np.maximum(rng.standard_normal(xs).astype(np.float32), 0)
        w = rng.standard_normal((o, xs[1], kh, kw)).astype(np.float32) * 0.1
        b = rng.standard_normal(o).astype(np.float32)
        full = ops.conv2d_forward(x, w, b)
        pooled, idx = ops.maxpool2d_forward(full, 2)
        gp = rng.standard_normal(pooled.shape).astype(np.float32)
        xl, gl, yl = packed(x), packed(gp), to_lanes(pooled)
        code = np.empty(yl.shape, np.int32)
        dxl, dw, db = to_lanes(x), np.empty_like(w), np.empty_like(b)
        _core._lanes_conv2d_forward(xl, w, b, False, yl, code)
        check(f"{pair} lanes", unpacked(yl, n), pooled)
        need_dx = name.startswith("conv2")
        _core._lanes_conv2d_backward(gl, xl, w, False, dxl if need_dx else None, dw, db, code)
        want = ops.conv2d_backward(ops.maxpool2d_backward(gp, idx, full.shape), x, w, need_dx=need_dx)
        check(f"{pair} lanes", (unpacked(dxl, n) if need_dx else None, dw, db), want)
        flops = 2.0 * full.size * xs[1] * kh * kw
        if torch is not None:
            xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, gp))
            full_t = F.conv2d(xt, wt, bt)
            it = torch.ops.aten.max_pool2d_with_indices(full_t, [2, 2], [2, 2])[1]
            mask = [need_dx, True, True]
            pair_fwd = lambda: torch.ops.aten.max_pool2d_with_indices(F.conv2d(xt, wt, bt), [2, 2], [2, 2])
            pair_bwd = lambda mask=mask, full_t=full_t, it=it: torch.ops.aten.convolution_backward(
                torch.ops.aten.max_pool2d_with_indices_backward(gt, full_t, [2, 2], [2, 2], [0, 0], [1, 1], False, it),
                xt, wt, [o], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
        measure(f"{pair} forward, lanes", flops, lambda: _core._lanes_conv2d_forward(xl, w, b, False, yl, code),
                pair_fwd if torch is not None else None, None)
        measure(f"{pair} backward {'dx+dw+db' if need_dx else 'dw+db'}, lanes", flops * (2 if need_dx else 1),
                lambda: _core._lanes_conv2d_backward(gl, xl, w, False, dxl if need_dx else None, dw, db, code),
                pair_bwd if torch is not None else None, None)

    size = mq.models.lenet5().count_params()
    p, g = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    state = {"t": 0}

    def adam():
        state["t"] += 1
        ops.adam_update(p, g, m, v, state["t"])

    rp, rm, rv = p.copy(), m.copy(), v.copy()
    if torch is not None:
        pt = torch.nn.Parameter(torch.from_numpy(p.copy()))
        pt.grad = torch.from_numpy(g)
        opt = torch.optim.Adam([pt], lr=1e-3)
    measure(f"Adam update, {size:,} params", None, adam, opt.step if torch is not None else None,
            lambda: reference.adam_update(rp, g, rm, rv, 1))

    # The peak again after the kernels: this machine's speed drifts by tens of percent over minutes,
    # and one low GEMM measurement would inflate every "of peak"
    if torch is not None and not args.quick:
        peak = max(peak, gemm_peak(torch))
    # "of peak" is of the multiply-add ceiling where it can be measured (a BLAS may not use every
    # vector width the CPU has: here torch.mm reaches half of it)
    fma = None if args.quick else fma_peak(args.threads)
    for row in rows:
        row[4] = f"{row[4] / (fma or peak):.0%}" if row[4] and (fma or peak) else ""
    print(f"\nfloat32, {args.threads} thread(s); median of {args.repeats} timings; "
          f"{machine()['cpu']}, maqueta {mq.build_info()['isa']}"
          + (f"; multiply-add peak (fma_peak.c) {fma:.1f} GFLOP/s" if fma else "")
          + (f"; best torch.mm (n = 1024..3072, before and after) {peak:.1f} GFLOP/s" if peak else "")
          + f"; malloc: {allocator}")
    print(table(rows, ["kernel", "maqueta us", "spread", "GFLOP/s", "of peak", "PyTorch us", "PyTorch/maqueta",
                       "reference/maqueta"]))
    if args.out:
        save_json(args.out, {"machine": machine(), "threads": args.threads, "gemm_peak_gflops": peak,
                             "fma_peak_gflops": fma, "allocator": allocator,
                             "kernels": records})


if __name__ == "__main__":
    main()
