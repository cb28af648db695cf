"""Threads, build information, the GIL, and results across thread counts."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import maqueta
from maqueta import ops
from conftest import assert_close


def test_build_info():
    info = maqueta.build_info()
    assert info["version"] == maqueta.__version__
    assert info["openmp"] == maqueta.openmp_enabled()
    assert info["isa"] in info["available_isas"]
    assert info["num_threads"] == maqueta.get_num_threads() >= 1


def test_build_matches_what_ci_asked_for():
    """CI sets these when it builds a variant, so a silent fallback cannot pass for the real thing."""
    if "MAQUETA_EXPECT_OPENMP" in os.environ:
        assert maqueta.openmp_enabled() == (os.environ["MAQUETA_EXPECT_OPENMP"] == "1")
    if "MAQUETA_EXPECT_SANITIZE" in os.environ:
        assert maqueta.build_info()["sanitize"] == (os.environ["MAQUETA_EXPECT_SANITIZE"] == "1")


def test_set_and_get_threads():
    before = maqueta.get_num_threads()
    try:
        maqueta.set_num_threads(3)
        assert maqueta.get_num_threads() == (3 if maqueta.openmp_enabled() else 1)
        maqueta.set_num_threads(1)
        assert maqueta.get_num_threads() == 1
    finally:
        maqueta.set_num_threads(before)


def _threads_in_subprocess(env_value):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if env_value is not None:
        env["OMP_NUM_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", "import maqueta; print(maqueta.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not maqueta.openmp_enabled(), reason="a build without OpenMP always uses one thread")
def test_default_threads_follow_omp_num_threads():
    assert _threads_in_subprocess("3") == 3
    assert _threads_in_subprocess(None) == len(os.sched_getaffinity(0))


def test_results_agree_across_thread_counts():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((13, 6, 14, 14))
    w = rng.standard_normal((16, 6, 5, 5))
    dy = rng.standard_normal((13, 16, 10, 10))
    before = maqueta.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 4):
            maqueta.set_num_threads(n)
            results[n] = [ops.conv2d_forward(x, w), *ops.conv2d_backward(dy, x, w)]
    finally:
        maqueta.set_num_threads(before)
    for n in (2, 4):
        # forward and dx never depend on the split; dw and db are summed per thread, in order
        np.testing.assert_array_equal(results[n][0], results[1][0])
        np.testing.assert_array_equal(results[n][1], results[1][1])
        for a, b in zip(results[n][2:], results[1][2:]):
            assert_close(a, b)


def test_kernels_release_the_gil():
    """While a long kernel runs in one thread, Python code keeps running in another."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32, 32, 32)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    start = time.perf_counter()
    ops.conv2d_forward(x, w, padding=1)
    single = time.perf_counter() - start
    ticks = 0
    done = threading.Event()

    def work():
        for _ in range(3):
            ops.conv2d_forward(x, w, padding=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(single / 50)
    t.join()
    # holding the GIL for the whole call would allow at most a tick or two per call
    assert ticks > 20, f"main thread ran only {ticks} times during 3 kernel calls"


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 3, 16, 16)) for _ in range(6)]
    w = rng.standard_normal((5, 3, 3, 3))
    expected = [ops.conv2d_forward(x, w) for x in xs]
    results = [None] * len(xs)

    def run(i):
        for _ in range(20):
            results[i] = ops.conv2d_forward(xs[i], w)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
