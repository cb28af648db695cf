"""Cases that used to kill the interpreter. Each runs in its own process, under a memory limit
where that is what provokes it, and must end with a Python exception, never a crash or an exit."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("MAQUETA_EXPECT_SANITIZE") == "1",
                                reason="AddressSanitizer reserves terabytes of address space: no memory limit there")

LIMIT = '''
import resource, numpy as np
def limit_memory(extra_mb):
    """Cap this process's address space a little above what it uses now."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + extra_mb * 2**20, resource.RLIM_INFINITY))
'''


def run(code):
    out = subprocess.run([sys.executable, "-c", LIMIT + textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_targets_that_cannot_be_converted_raise_memory_error():
    """softmax_cross_entropy copies int32 targets to int64; that copy failing was a segfault."""
    out = run("""
        from maqueta import ops
        n = 2**25
        logits, targets = np.zeros((n, 2), np.float32), np.zeros(n, np.int32)
        grad = np.empty_like(logits)
        limit_memory(64)
        try:
            ops.softmax_cross_entropy(logits, targets, grad_out=grad)
        except MemoryError:
            print("MemoryError")
    """)
    assert "MemoryError" in out


def test_pool_indices_that_cannot_be_converted_raise_memory_error():
    out = run("""
        from maqueta import ops
        dy = np.zeros((1, 1, 4096, 4096), np.float32)
        indices = np.zeros(dy.shape, np.int64).transpose(0, 1, 3, 2)   # not C order: a 128 MB copy
        dx = np.empty((1, 1, 8192, 8192), np.float32)
        limit_memory(64)
        try:
            ops.maxpool2d_backward(dy, indices, dx.shape, out=dx)
        except MemoryError:
            print("MemoryError")
    """)
    assert "MemoryError" in out


@pytest.mark.skipif(os.environ.get("MAQUETA_EXPECT_OPENMP") == "0", reason="a build without OpenMP starts no threads")
def test_a_refused_thread_team_is_an_exception_not_an_exit():
    """libgomp ends the process when it cannot start a thread; set_num_threads asks first."""
    out = run("""
        import maqueta as mq
        from maqueta import ops
        mq.set_num_threads(1)
        mq.set_num_threads(10**6)                      # capped: at most 4 per processor
        print("capped", mq.get_num_threads() == (4 * len(__import__("os").sched_getaffinity(0)) if mq.openmp_enabled() else 1))
        mq.set_num_threads(1)
        x = np.ones((64, 3, 32, 32), np.float32)
        w = np.ones((8, 3, 3, 3), np.float32)
        limit_memory(24)                               # room for a thread stack or two, not eight
        try:
            mq.set_num_threads(8)
        except RuntimeError as error:
            print("refused:", error)
        y = ops.conv2d_forward(x, w)                   # still works, on the threads it had
        print("threads", mq.get_num_threads(), "sum", float(y.sum()))
    """)
    assert "capped True" in out
    assert "refused: the system refused to start more than" in out and "threads 1 sum" in out


def test_out_of_range_thread_counts_are_clear_errors():
    import maqueta as mq
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n >= 1"):
            mq.set_num_threads(bad)
    with pytest.raises(TypeError):
        mq.set_num_threads(2.5)
