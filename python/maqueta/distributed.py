"""Data-parallel training over MPI: the job a script runs in, and how a failure ends it.

    mpiexec -n 4 python train.py                      # one machine; see the README for a cluster

    from maqueta import distributed as dist
    model.fit(X, y, batch_size=256, distributed=True)  # every rank, same data; 256 is the global batch
    if dist.rank() == 0:
        model.save("model.maq")                       # one rank writes

Every rank runs the same script on the whole data set; ``fit(..., distributed=True)`` gives each
rank its share of every global batch and sums the gradients with one MPI allreduce per step (see
``maqueta.data_parallel``), so the weights do not depend on the number of processes.

MPI comes from mpi4py (``pip install "maqueta[mpi]"`` brings it with the MPICH wheel and its
``mpiexec``); nothing here imports it until a function below is called, so maqueta without it
works as before. The first call initialises MPI and makes an uncaught exception on any rank stop
the whole job (MPI_Abort) after printing it with the rank's number: the other ranks would
otherwise wait for that rank inside a collective forever.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from contextlib import contextmanager

__all__ = ["DistributedError", "available", "world", "rank", "size", "is_root", "local_size",
           "threads_per_rank", "abort", "set_timeout", "get_timeout", "INSTALL_HINT"]

INSTALL_HINT = ('maqueta.distributed needs mpi4py and an MPI library: pip install "maqueta[mpi]" (mpi4py with '
                'the MPICH wheel, which brings its own mpiexec), or pip install mpi4py against a cluster\'s MPI')


class DistributedError(RuntimeError):
    """The ranks of a data-parallel job disagree (another architecture, other data, other
    settings) or one of them refused the call. Raised on every rank alike, so every rank can
    handle it; none is left waiting."""


def _mpi():
    """mpi4py's MPI module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    return MPI


def available() -> bool:
    """Whether mpi4py is installed (without importing it, which would initialise MPI)."""
    return importlib.util.find_spec("mpi4py") is not None


_hook_installed = False


def world():
    """mpi4py's COMM_WORLD: every process of the job. The first call initialises MPI and installs
    the hook that turns an uncaught exception on one rank into the end of the job."""
    global _hook_installed
    MPI = _mpi()
    if not _hook_installed:
        sys.excepthook = _abort_after(sys.excepthook)
        _hook_installed = True
    return MPI.COMM_WORLD


def rank() -> int:
    """This process's number in the job, 0 .. size() - 1; 0 is the one that prints and saves."""
    return world().Get_rank()


def size() -> int:
    """The number of processes in the job (1 without mpiexec)."""
    return world().Get_size()


def is_root() -> bool:
    """Whether this is rank 0."""
    return rank() == 0


def local_size() -> int:
    """The number of ranks on this machine (that share its memory). Collective: every rank of
    the job must call it."""
    node = world().Split_type(_mpi().COMM_TYPE_SHARED)
    try:
        return node.Get_size()
    finally:
        node.Free()


def threads_per_rank() -> int:
    """The cores this process may use, shared out among the ranks on this machine (at least 1):
    a sensible kernel thread count when OMP_NUM_THREADS is not set, so that ranks do not fight
    over cores. Collective, as local_size()."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // local_size())


def abort(message, comm=None, code=1):
    """Print ``message`` with this rank's number on stderr and end every process of the job
    (MPI_Abort): for a failure on one rank that the others cannot learn of, since they wait
    for it in a collective call."""
    comm = world() if comm is None else comm
    sys.stdout.flush()
    sys.stderr.write(f"maqueta.distributed: rank {comm.Get_rank()} of {comm.Get_size()}: {message}\n")
    sys.stderr.flush()
    # The launcher forwards this rank's stderr through a pipe and stops forwarding once the abort
    # has it kill the job: a loaded machine lost the message that way. Give it a moment first.
    time.sleep(0.5)
    comm.Abort(code)
    os._exit(code)   # MPI_Abort may return before the launcher kills this process: never run on


def _abort_after(previous):
    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        MPI = _mpi()
        if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
            abort(f"uncaught {kind.__name__}; stopping every rank of the job so that none waits for this one "
                  f"forever", MPI.COMM_WORLD)
    return hook


class _Watchdog:
    """A daemon thread that ends the job when this rank has waited longer than ``seconds`` in one
    of fit's collective calls: the only way out when another rank is stuck, or went on without
    calling them (it caught its own error, say), since MPI calls have no timeout."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.since = None   # when the current wait began (time.monotonic), None when not waiting
        self.what = None
        self.comm = None
        threading.Thread(target=self._watch, name="maqueta-distributed-watchdog", daemon=True).start()

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.seconds / 4))
            since, what, comm = self.since, self.what, self.comm
            if since is not None and time.monotonic() - since > self.seconds:
                what = what() if callable(what) else what
                abort(f"waited more than {self.seconds:g} s for the other ranks in {what}: one of them is stuck, or "
                      f"went on without taking part; stopping every rank of the job (see set_timeout)", comm)


_watchdog = None


def set_timeout(seconds):
    """End the job when a rank waits longer than ``seconds`` for the others in one of fit's
    collective calls (None, the default: wait forever). Exceptions and killed ranks end the job
    without it; this also covers a rank that hangs or leaves the collective pattern. Choose it
    above the longest step plus what rank 0 does alone between epochs (saving a checkpoint)."""
    global _watchdog
    if seconds is None:
        if _watchdog is not None:
            _watchdog.seconds = float("inf")
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"timeout must be a number of seconds > 0 or None, got {seconds!r}")
    if _watchdog is None:
        _watchdog = _Watchdog(float(seconds))
    _watchdog.seconds = float(seconds)


def get_timeout():
    """The timeout set_timeout set, or None."""
    if _watchdog is None or _watchdog.seconds == float("inf"):
        return None
    return _watchdog.seconds


@contextmanager
def waiting(what, comm):
    """Mark a collective call on comm, so that the watchdog (when a timeout is set) can end a wait
    too long; ``what`` names the call, or is a function that does (called only then)."""
    watchdog = _watchdog
    if watchdog is None:
        yield
        return
    watchdog.what, watchdog.comm, watchdog.since = what, comm, time.monotonic()
    try:
        yield
    finally:
        watchdog.since = None
