"""The communication behind ``fit(..., distributed=True)``: the ranks agree on what they train,
start from rank 0's state, split every global batch, sum their gradients, and fail together.

The arithmetic (training.py's ``data_parallel_step``): the gradient of the mean loss over a global
batch of B samples is the sum over ranks of (sum of the rank's per-sample gradients) / B. A loss
kernel divides by the n samples it sees, so each rank scales its loss gradient by n / B and one
in-place allreduce (SUM) of the flat gradient buffer gives every rank the global gradient. A rank
whose slice is empty (a global batch smaller than the number of ranks) contributes zeros. Every
rank then takes the same optimizer step on the same numbers, so the replicas stay identical; the
end of each epoch checks that they are.

Layers whose training forward mixes the samples of a batch or draws per batch (batch norm,
dropout) get the rank's offset into the global batch and a reduction over the ranks through their
Call (``Call.batch_offset``, ``Call.allreduce_sum``): batch norm computes the global batch's
statistics (as PyTorch's SyncBatchNorm), dropout hashes each value's index in the global batch,
so those layers too give the result of one process (see layers/norm.py, layers/dropout.py).
With augmentation, every rank augments the whole global batch from the shared generator and
trains on its slice (training.data_parallel_step).

What one rank alone decides cannot stop the others: they wait for it in the next collective. So
whatever can be decided together is (bad arguments, divergence, early stopping) and raises on
every rank; any other exception inside ``fit`` ends the job (see ``distributed.abort``).
"""
from __future__ import annotations

import time
import zlib
from contextlib import contextmanager

import numpy as np

from . import distributed
from .distributed import DistributedError

__all__ = ["group_for", "DataParallel", "on_every_rank"]


def on_every_rank(error):
    """Mark ``error`` as raised by every rank alike: the failure guard lets it through instead of
    ending the job."""
    error.raised_on_every_rank = True
    return error


def group_for(distributed_arg):
    """The DataParallel group ``fit(distributed=...)`` asks for: None for False/None, the whole job
    for True, or the ranks of an mpi4py communicator."""
    if distributed_arg is None or distributed_arg is False:
        return None
    if distributed_arg is True:
        return DataParallel(distributed.world())
    if all(hasattr(distributed_arg, name) for name in ("Allreduce", "Bcast", "allgather", "Get_rank")):
        distributed.world()   # initialise as True does (the failure hook)
        return DataParallel(distributed_arg)
    raise TypeError(f"distributed must be True, False or an mpi4py communicator, got {distributed_arg!r}")


def _crc(array) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8))


def _rows_crc(X) -> int:
    """A checksum of at most 17 evenly spaced rows: catches another data set, order or scaling
    on one rank at no cost; it is a sanity check, not a proof."""
    return _crc(X[::max(1, len(X) // 16)])


def fit_signature(model, setup) -> dict:
    """What must be the same on every rank for their training to be one: the architecture and
    dtype (not the seed: rank 0's weights are broadcast), the optimizer, the data and the settings."""
    config = model.get_config()
    config.pop("seed")
    optimizer = setup.optimizer
    validation = setup.validation
    return {
        "architecture": config,
        "parameters": int(model.state.params.size),
        "optimizer": (type(optimizer).__name__, optimizer.get_config()),
        "loss": setup.loss if isinstance(setup.loss, str) else getattr(setup.loss, "__qualname__", repr(setup.loss)),
        "samples": (len(setup.X), tuple(setup.X.shape[1:]), _rows_crc(setup.X), _crc(setup.targets)),
        "classes": [str(c) for c in setup.classes],
        "validation": None if validation is None else (len(validation[0]), _rows_crc(validation[0])),
        "settings": {"epochs": setup.epochs, "batch_size": setup.batch_size, "initial_epoch": setup.initial_epoch,
                     "shuffle": bool(setup.shuffle)},
    }


class DataParallel:
    """One data-parallel training over the ranks of ``comm``."""

    def __init__(self, comm):
        self.MPI = distributed._mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.scalars = np.zeros(2, np.float64)   # a step's loss sum and correct predictions
        self.allreduce_seconds = 0.0
        self.position = None                      # (epoch, steps it has completed), for failure messages
        self._global_batches = {}                 # size -> the array a global batch is augmented in

    # ------------------------------------------------------------------ agreeing before training
    def agree(self, model, check):
        """Run ``check()`` (the fit's argument checks; returns its setup) on every rank, then make
        sure every rank passed and that all hold the same model, data and settings. Raises on
        every rank alike otherwise: the rank's own error where it failed, DistributedError
        naming the failing or differing ranks elsewhere."""
        own = setup = signature = None
        try:
            setup = check()
            signature = fit_signature(model, setup)
        except Exception as error:   # reported to the others below, then raised here
            own = error
        with distributed.waiting("the check that every rank holds the same model and data", self.comm):
            reports = self.comm.allgather((None if own is None else f"{type(own).__name__}: {own}", signature))
        failed = [(r, report) for r, (report, _) in enumerate(reports) if report is not None]
        if failed:
            where = "; ".join(f"rank {r}: {report}" for r, report in failed)
            if own is not None:
                if hasattr(own, "add_note"):
                    own.add_note(f"(data-parallel fit refused on {len(failed)} of {self.size} ranks: {where})")
                raise on_every_rank(own)
            raise on_every_rank(DistributedError(f"fit was refused on {len(failed)} of {self.size} ranks, so no "
                                                 f"rank trains: {where}"))
        reference = reports[0][1]
        differences = [f"rank {r}'s {key} differs from rank 0's ({theirs[key]!r} against {reference[key]!r})"
                       for r, (_, theirs) in enumerate(reports) for key in reference if theirs[key] != reference[key]]
        if differences:
            raise on_every_rank(DistributedError(
                "the ranks of a data-parallel fit must hold the same model, optimizer, data and settings: "
                + "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")))
        return setup

    def broadcast_state(self, model):
        """Give every rank rank 0's parameters, buffers, optimizer state and random generators."""
        if self.size == 1:
            return
        optimizer = model.optimizer
        with distributed.waiting("the broadcast of rank 0's state", self.comm):
            for array in (model.state.params, *model.state.buffers.values(), *optimizer.state_arrays().values()):
                self.comm.Bcast(array, root=0)
            optimizer.iterations = self.comm.bcast(optimizer.iterations, root=0)
            model.state.set_generator_states(self.comm.bcast(model.state.generator_states(), root=0))

    # ------------------------------------------------------------------ one step
    def local_slice(self, start, stop):
        """This rank's part [lo, hi) of the global batch [start, stop): contiguous, sizes differing
        by at most one, possibly empty."""
        size = stop - start
        return start + size * self.rank // self.size, start + size * (self.rank + 1) // self.size

    def allreduce_gradients(self, grads, loss_sum, hits):
        """Sum the flat gradient buffer in place over the ranks (one call for the whole model),
        then the step's loss sum and correct predictions; returns those two sums."""
        started = time.perf_counter()
        with distributed.waiting(self._describe_step, self.comm):
            self.comm.Allreduce(self.MPI.IN_PLACE, grads, op=self.MPI.SUM)
            self.scalars[0], self.scalars[1] = loss_sum, hits
            self.comm.Allreduce(self.MPI.IN_PLACE, self.scalars, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - started
        return float(self.scalars[0]), int(self.scalars[1])

    def global_batch(self, n, X):
        """An array for n samples like X's, reused for every global batch of that size."""
        whole = self._global_batches.get(n)
        if whole is None or whole.shape[1:] != X.shape[1:] or whole.dtype != X.dtype:
            whole = self._global_batches[n] = np.empty((n, *X.shape[1:]), X.dtype)
        return whole

    @property
    def layer_allreduce(self):
        """What the layers of a step reduce with (Call.allreduce): an in-place sum over the ranks,
        or None in a job of one, where the layers run exactly as without distributed=True."""
        return self._layer_allreduce if self.size > 1 else None

    def _layer_allreduce(self, array):
        started = time.perf_counter()
        with distributed.waiting(self._describe_layer_step, self.comm):
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - started

    def _describe_layer_step(self):
        return f"a layer's reduction (batch statistics) in epoch {self.position[0] + 1}, step {self.position[1] + 1}"

    def _describe_step(self):
        return f"the gradient allreduce of epoch {self.position[0] + 1}, step {self.position[1] + 1}"

    def take_allreduce_seconds(self) -> float:
        """Seconds spent in the step allreduces since the last call (waiting for the slowest rank
        included)."""
        seconds, self.allreduce_seconds = self.allreduce_seconds, 0.0
        return seconds

    # ------------------------------------------------------------------ epochs
    def evaluate(self, model, X, y, batch_size, loss):
        """model.evaluate over the ranks: each takes a contiguous share of (X, y), the sums are
        reduced; every rank gets the same result."""
        lo, hi = self.local_slice(0, len(X))
        sums = np.zeros(2, np.float64)
        if hi > lo:
            result = model.evaluate(X[lo:hi], np.asarray(y)[lo:hi], batch_size=batch_size, loss=loss)
            sums[:] = result["loss"] * (hi - lo), round(result["accuracy"] * (hi - lo))
        with distributed.waiting("the sums of the validation", self.comm):
            self.comm.Allreduce(self.MPI.IN_PLACE, sums, op=self.MPI.SUM)
        return {"loss": float(sums[0]) / len(X), "accuracy": float(sums[1]) / len(X)}

    def end_epoch(self, model, epoch) -> bool:
        """Check that every rank still holds the same parameters and buffers, and agree whether to
        stop (a callback on one rank may ask to). Returns whether training stops."""
        crcs = (_crc(model.state.params), *(_crc(buffer) for buffer in model.state.buffers.values()))
        with distributed.waiting(f"the end of epoch {epoch + 1}", self.comm):
            reports = self.comm.allgather((crcs, bool(model.stop_training)))
        differing = [r for r, (crc, _) in enumerate(reports) if crc != reports[0][0]]
        if differing:
            raise on_every_rank(DistributedError(
                f"after epoch {epoch + 1} the parameters or buffers of rank(s) {differing} differ from rank 0's; the "
                f"replicas should stay identical (same allreduce results, same optimizer step): this is a bug, "
                f"please report it"))
        model.stop_training = any(stop for _, stop in reports)
        return model.stop_training

    # ------------------------------------------------------------------ failures
    @contextmanager
    def failures_end_the_job(self):
        """An exception that only this rank may have raised ends the job with a message naming
        the rank: the other ranks wait for it in a collective call and would never return.
        Errors raised on every rank alike pass, as does any error in a job of one."""
        try:
            yield
        except BaseException as error:
            if getattr(error, "raised_on_every_rank", False) or self.size == 1:
                raise
            import traceback
            traceback.print_exc()
            where = "" if self.position is None else \
                f" in epoch {self.position[0] + 1} after {self.position[1]} of its steps"
            distributed.abort(f"fit failed{where} with {type(error).__name__}: {error}; stopping every rank of the "
                              f"job so that none waits for this one forever", self.comm)
