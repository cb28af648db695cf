#!/usr/bin/env python3
"""Thread scaling against PyTorch: the zoo (bench_zoo.py, a fresh process per thread count, quick
settings, no torch.compile) and bench_lenet5.py over the same thread counts, gathered into one
table: for each network and case, maqueta's images/s and its ratio to PyTorch at each count, and
how far each library's batch-256 training scales from one thread. Made to run as one prepared
command on a many-core machine (the speed issue asks for 1, 2, 4, 8 and 16 threads); counts above
the machine's cores are skipped and said so. PyTorch runs with freed memory kept, as in the zoo.

    python benchmarks/scaling.py                        # 1,2,4,8,16 threads, every zoo network
    python benchmarks/scaling.py --threads 1,2 --networks lenet5,cifar-gap --seconds 0.2
    python benchmarks/scaling.py --table results/scaling.json   # the tables again, from a saved run

The JSON is rewritten after every step and the benchmarks' own tables go to a .log beside it, so a
run cut short (a device lease running out) still leaves what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import KEEP_FREED_MEMORY, machine, median_spread, save_json, table  # noqa: E402
from zoo import ZOO  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run(script, args, env, log):
    """Run a benchmark script; its table goes to log, its failure into the result."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.join(HERE, script), *args], capture_output=True, text=True,
                         env=env)
    log.write(out.stdout)
    print(f"  {script} {' '.join(args[:2])}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def threads_label(t):
    return f"{t} thread" + ("s" if t > 1 else "")


def rates(entry, key):
    """The median of a case's list of rates (or of 1/seconds for a latency), or None."""
    values = entry.get(key)
    return median_spread(values)[0] if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--networks", default=",".join(ZOO))
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--seconds", type=float, default=0.3, help="about how long each timed training run lasts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--infer-images", type=int, default=1024)
    parser.add_argument("--no-lenet5", action="store_true", help="skip bench_lenet5.py")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "scaling.json"))
    parser.add_argument("--table", metavar="JSON", help="print the tables of a saved run and stop")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            results = json.load(f)
        results["zoo"] = {int(t): zoo for t, zoo in results["zoo"].items()}  # JSON keys are strings
        report(results)
        return 1 if results["errors"] else 0
    cores = os.cpu_count() or 1
    wanted = [int(t) for t in args.threads.split(",")]
    counts = [t for t in wanted if 1 <= t <= cores]
    if len(counts) < len(wanted):
        print(f"{cores} cores: skipping {[t for t in wanted if t not in counts]} threads", file=sys.stderr)
    if not counts:
        parser.error(f"no thread count fits this machine's {cores} cores")
    env = dict(os.environ, GLIBC_TUNABLES=KEEP_FREED_MEMORY)
    results = {"machine": machine(), "cores": cores, "threads": counts, "networks": args.networks.split(","),
               "batches": args.batches.split(","), "repeats": args.repeats, "zoo": {}, "lenet5": None, "errors": {}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    parts = os.path.splitext(args.out)[0]
    with open(parts + ".log", "w") as log:
        for t in counts:
            path = f"{parts}.zoo{t}.json"
            error = run("bench_zoo.py", ["--threads", str(t), "--networks", args.networks, "--batches", args.batches,
                                         "--seconds", str(args.seconds), "--repeats", str(args.repeats),
                                         "--infer-images", str(args.infer_images), "--no-compile", "--no-memory",
                                         "--out", path], env, log)
            if error:
                results["errors"][f"zoo {t}"] = error
            else:
                with open(path) as f:
                    results["zoo"][t] = json.load(f)
                os.remove(path)
            save_json(args.out, results)
        if not args.no_lenet5:
            path = parts + ".lenet5.json"
            error = run("bench_lenet5.py", ["--threads", ",".join(map(str, counts)), "--batches", args.batches,
                                            "--repeats", str(args.repeats), "--images", "4096", "--no-memory",
                                            "--out", path], env, log)
            if error:
                results["errors"]["lenet5"] = error
            else:
                with open(path) as f:
                    results["lenet5"] = json.load(f)
                os.remove(path)
            save_json(args.out, results)
    report(results)
    return 1 if results["errors"] else 0


def report(results):
    """Print the scaling tables of a run (finished or cut short)."""
    counts = sorted(results["zoo"]) or results["threads"]
    networks, batches, repeats = results["networks"], results["batches"], results["repeats"]
    cores = results["cores"]
    rows = []
    for name in networks:
        cases = next((r["networks"][name]["cases"] for r in results["zoo"].values() if name in r["networks"]), {})
        for case in cases:
            row = [name, case]
            for t in counts:
                entry = results["zoo"].get(t, {}).get("networks", {}).get(name, {}).get("cases", {}).get(case)
                ours, theirs = (rates(entry, "maqueta"), rates(entry, "eager")) if entry else (None, None)
                if ours and theirs and case.startswith("latency"):
                    row.append(f"{ours * 1e6:.0f} us ({theirs / ours:.2f}x)")
                elif ours and theirs:
                    row.append(f"{ours:,.0f} ({ours / theirs:.2f}x)")
                else:
                    row.append("")
            rows.append(row)
    print(f"\nThe zoo at 1-{max(counts)} threads ({results['machine']['cpu']}, {cores} cores): maqueta img/s "
          f"(maqueta/PyTorch); latency in us (how many times faster). Medians of {repeats} alternating runs.")
    print(table(rows, ["network", "case", *map(threads_label, counts)]))
    if len(counts) > 1 and counts[0] == 1:
        last = f"train b{batches[-1]}"
        scale = []
        for name in networks:
            got = [results["zoo"].get(t, {}).get("networks", {}).get(name, {}).get("cases", {}).get(last)
                   for t in counts]
            if all(got):
                one_m, one_t = rates(got[0], "maqueta"), rates(got[0], "eager")
                scale.append([name, *(f"{rates(g, 'maqueta') / one_m:.2f} / {rates(g, 'eager') / one_t:.2f}"
                                      for g in got)])
        print(f"\n{last}: speed-up over one thread, maqueta / PyTorch")
        print(table(scale, ["network", *map(threads_label, counts)]))
    if results["lenet5"]:
        rows = []
        for entry in sorted(results["lenet5"]["runs"], key=lambda e: e["threads"]):
            if entry["case"] == "latency b1":
                ours, theirs = rates(entry, "maqueta_seconds"), rates(entry, "torch_seconds")
                rows.append([entry["threads"], "latency b1 (us)", f"{ours * 1e6:.0f}",
                             f"{theirs * 1e6:.0f}" if theirs else "", f"{theirs / ours:.2f}x faster" if theirs else ""])
            else:
                ours, theirs = rates(entry, "maqueta_images_per_s"), rates(entry, "torch_images_per_s")
                rows.append([entry["threads"], entry["case"], f"{ours:,.0f}", f"{theirs:,.0f}" if theirs else "",
                             f"{ours / theirs:.2f}x" if theirs else ""])
        print("\nbench_lenet5.py (MNIST-like 1x32x32):")
        print(table(rows, ["threads", "case", "maqueta img/s", "PyTorch img/s", "ratio"]))
    for what, error in results["errors"].items():
        print(f"\n{what} failed: {error}")


if __name__ == "__main__":
    sys.exit(main())
