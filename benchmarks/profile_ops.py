"""Where a zoo network's training step goes: every kernel call made through maqueta.ops during
`fit` is timed, and the totals per kernel are shown per step and as a share of the epoch.

    python benchmarks/profile_ops.py cifar-vgg-bn [batch] [threads]

A profile of the Python side (py-spy, cProfile) shows the same calls as one native frame each;
this splits them by kernel. The timing wrapper costs about a microsecond per call."""
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import maqueta as mq  # noqa: E402
from maqueta import ops  # noqa: E402
from zoo import ZOO, maqueta_model  # noqa: E402


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ZOO:
        sys.exit(__doc__ + f"\nnetworks: {', '.join(ZOO)}")
    name = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    mq.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    seconds = collections.defaultdict(float)

    def timed(kernel, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[kernel] += time.perf_counter() - start
        return call

    for kernel in ops.__all__:
        setattr(ops, kernel, timed(kernel, getattr(ops, kernel)))
    steps = 32
    X = np.random.default_rng(0).standard_normal((batch * steps, *ZOO[name][0])).astype(np.float32)
    y = np.arange(len(X)) % 10
    model = maqueta_model(name)
    model.fit(X[:batch * 4], y[:batch * 4], epochs=1, batch_size=batch, verbose=0, optimizer=mq.Adam(1e-3))
    seconds.clear()
    start = time.perf_counter()
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
    epoch = time.perf_counter() - start
    print(f"{name}, batch {batch}: {epoch / steps * 1e3:.2f} ms per step ({len(X) / epoch:,.0f} img/s), "
          f"kernels {sum(seconds.values()) / steps * 1e3:.2f} ms")
    for kernel, total in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {kernel:28s} {total / steps * 1e3:8.3f} ms  {100 * total / epoch:5.1f} %")


if __name__ == "__main__":
    main()
