"""Two builds of maqueta side by side: LeNet-5 training (batch 32, 64, 256), inference (batch 256)
and one-image latency, each build in fresh processes, alternating, 2 threads; medians and B/A.
For a change that must not slow anything: build the previous commit's wheel and this one into two
folders (pip install --target A ...), then

    python benchmarks/ab_builds.py A B [repeats]

The images are the MNIST test set maqueta ships (8,192 of them, padded to 32x32)."""
import json, statistics, subprocess, sys
from pathlib import Path

MNIST = str(Path(__file__).resolve().parents[1] / "python" / "maqueta" / "data" / "mnist")   # the shipped files

CHILD = r'''
import json, sys, time
import numpy as np
import maqueta as mq
mq.set_num_threads(2)
from maqueta import datasets
imgs, labels = datasets.load_mnist("test", data_dir=sys.argv[1], download=False)
X = np.zeros((8192, 1, 32, 32), np.float32); X[:, :, 2:30, 2:30] = imgs[:8192] / 255.0
y = labels[:8192]
out = {}
for b in (32, 64, 256):
    m = mq.models.lenet5(seed=0)
    m.fit(X[:1024], y[:1024], epochs=1, batch_size=b, verbose=0, optimizer=mq.Adam(1e-3))  # warm up
    t = time.perf_counter(); m.fit(X, y, epochs=1, batch_size=b, verbose=0); out[f"train b{b}"] = len(X) / (time.perf_counter() - t)
m = mq.models.lenet5(seed=0); m.predict_proba(X[:1024])
t = time.perf_counter(); m.predict_proba(X, batch_size=256); out["infer b256"] = len(X) / (time.perf_counter() - t)
x1 = X[:1]; m.forward(x1)
ts = []
for _ in range(2000):
    t = time.perf_counter(); m.forward(x1); ts.append(time.perf_counter() - t)
out["latency b1 us"] = sorted(ts)[len(ts) // 2] * 1e6
print(json.dumps(out))
'''

a, b = sys.argv[1], sys.argv[2]
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
results = {a: [], b: []}
for r in range(repeats):
    for site in ((a, b) if r % 2 == 0 else (b, a)):
        p = subprocess.run([sys.executable, "-c", CHILD, MNIST], env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin",
                           "OMP_NUM_THREADS": "2", "HOME": "/tmp", "MAQUETA_OFFLINE": "1"},
                           capture_output=True, text=True)
        if p.returncode:
            print(p.stderr); sys.exit(1)
        results[site].append(json.loads(p.stdout))
print(f"{'case':16s} {'A median':>12s} {'B median':>12s} {'B/A':>7s}   (A={a}, B={b}, {repeats} runs each)")
for key in results[a][0]:
    ma = statistics.median(r[key] for r in results[a]); mb = statistics.median(r[key] for r in results[b])
    print(f"{key:16s} {ma:12.1f} {mb:12.1f} {mb / ma:7.3f}")
