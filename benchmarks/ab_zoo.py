"""Two builds of maqueta side by side on zoo networks (benchmarks/zoo.py): training images/s at
batch 64 and 256 (Adam, through fit) and inference at batch 256 (predict_proba, median of 7
passes), each build in fresh processes, alternating, 2 threads; medians and B/A. Build the two
commits into two folders (pip install --target A ...), then

    python benchmarks/ab_zoo.py A B cifar-vgg,cifar-gap [repeats]

The images are random (1,536 per run): speed does not depend on them."""
import json
import os
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))

CHILD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[2])
import os
import numpy as np, maqueta as mq
site = os.path.realpath(sys.argv[3])
if not os.path.realpath(mq.__file__).startswith(site + os.sep):   # an installed maqueta would shadow it
    sys.exit(f"maqueta came from {mq.__file__}, not from {site}")
import zoo
mq.set_num_threads(2)
out = {}
for name in sys.argv[1].split(","):
    X = np.random.default_rng(0).standard_normal((1536, *zoo.ZOO[name][0])).astype(np.float32)
    y = np.arange(1536) % 10
    for b in (64, 256):
        m = zoo.maqueta_model(name)
        m.fit(X[:512], y[:512], epochs=1, batch_size=b, verbose=0, optimizer=mq.Adam(1e-3))   # warm up
        start = time.perf_counter()
        m.fit(X, y, epochs=1, batch_size=b, verbose=0)
        out[f"{name} train b{b}"] = len(X) / (time.perf_counter() - start)
    m.predict_proba(X[:512])
    rates = []
    for _ in range(7):
        start = time.perf_counter()
        m.predict_proba(X, batch_size=256)
        rates.append(len(X) / (time.perf_counter() - start))
    out[f"{name} infer b256"] = sorted(rates)[3]
print(json.dumps(out))
'''


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    a, b, nets = sys.argv[1:4]
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    results = {a: [], b: []}
    for r in range(repeats):
        for site in (a, b) if r % 2 == 0 else (b, a):
            env = dict(os.environ, PYTHONPATH=site, OMP_NUM_THREADS="2")
            run = subprocess.run([sys.executable, "-c", CHILD, nets, BENCH, site], env=env, capture_output=True,
                                 text=True)
            if run.returncode:
                sys.exit(run.stderr)
            results[site].append(json.loads(run.stdout))
    print(f"{'case':28s} {'A':>10s} {'B':>10s} {'B/A':>7s}  ({repeats} runs each; A={a}, B={b})")
    for key in results[a][0]:
        ma = statistics.median(r[key] for r in results[a])
        mb = statistics.median(r[key] for r in results[b])
        print(f"{key:28s} {ma:10.0f} {mb:10.0f} {mb / ma:7.3f}")


if __name__ == "__main__":
    main()
