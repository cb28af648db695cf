"""Cases that test_distributed.py runs under ``mpiexec -n N python tests/distributed_cases.py CASE...``.

Every rank runs every named case in order and prints ``OK <case> rank <r>`` when it passes (an
assertion error fails the job). Exactness cases train the one-process reference in the same
process, with the normal fit, and compare. Only NumPy and maqueta: random data, no files.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

import maqueta as mq
from maqueta import distributed as dist

RANK, SIZE = dist.rank(), dist.size()


def data(n, seed=0, dtype="float64"):
    rng = np.random.default_rng([seed, 99])
    return rng.standard_normal((n, 1, 32, 32)).astype(dtype), rng.integers(0, 10, n)


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_same_training(single, parallel, tol, what):
    """Weights and every logged number of two trainings agree to tol (accuracies exactly)."""
    err = relative_error(parallel.get_flat_parameters(), single.get_flat_parameters())
    assert err <= tol, f"{what}: weights differ from one process's by {err:.3e} relative (rank {RANK})"
    for key, values in single.history.history.items():
        if key in ("seconds",):
            continue
        got = parallel.history.history[key]
        if "accuracy" in key:
            assert got == values, f"{what}: {key} {got} != {values}"
        else:
            np.testing.assert_allclose(got, values, rtol=tol, atol=0, err_msg=f"{what}: {key}")
    return err


def case_exactness():
    """float64, 20 steps of LeNet-5 with Adam and with SGD-momentum: N processes with global batch
    B end where one process with batch B ends, to 1e-10. Batches are split unevenly (B = 10, 16
    over 3), and the last batch is smaller than N (1 and 2 samples): some ranks train on nothing."""
    for optimizer, batch, n, shuffle in ((lambda: mq.Adam(2e-3), 10, 191, True),
                                         (lambda: mq.SGD(0.05, momentum=0.9, nesterov=True), 16, 306, False)):
        X, y = data(n + 40)
        fit = dict(epochs=1, batch_size=batch, shuffle=shuffle, verbose=0, validation_data=(X[n:], y[n:]))
        single = mq.models.lenet5(seed=1, dtype="float64")
        single.fit(X[:n], y[:n], optimizer=optimizer(), **fit)
        parallel = mq.models.lenet5(seed=1 + RANK, dtype="float64")   # rank 0's weights are broadcast
        history = parallel.fit(X[:n], y[:n], optimizer=optimizer(), distributed=True, **fit)
        assert parallel.optimizer.iterations == 20 and history.params["processes"] == SIZE
        err = assert_same_training(single, parallel, 1e-10, type(single.optimizer).__name__)
        allreduce = history.history["allreduce_seconds"][0]
        if RANK == 0:
            print(f"exactness {type(single.optimizer).__name__} B={batch} n={n} over {SIZE}: relative error "
                  f"{err:.2e}, allreduce {allreduce / 20 * 1e6:.0f} us/step", flush=True)


def batchnorm_net(seed, second_norm=True):
    """Conv2D + BatchNorm2D + ReLU + Dropout2D + MaxPool + Dropout + Dense (+ BatchNorm1D + ReLU) +
    Dense, float64. The layers before a batch norm have no bias, as usual: the batch norm removes
    it, so its gradient is zero up to rounding, and Adam would magnify that rounding noise."""
    head = [mq.Dense(4 * 15 * 15, 16, bias=False), mq.BatchNorm1D(16), mq.ReLU(), mq.Dense(16, 10)] if second_norm \
        else [mq.Dense(4 * 15 * 15, 10)]
    return mq.Sequential([mq.Conv2D(1, 4, 3, bias=False), mq.BatchNorm2D(4, momentum=None), mq.ReLU(),
                          mq.Dropout2D(0.2), mq.MaxPool2D(2), mq.Dropout(0.3), mq.Flatten(), *head],
                         seed=seed, dtype="float64")


def assert_same_buffers(single, parallel, tol, what):
    for key, value in single.state.buffers.items():
        err = relative_error(parallel.state.buffers[key], value) if value.dtype.kind == "f" else 0.0
        assert err <= tol and (value.dtype.kind == "f" or parallel.state.buffers[key] == value), \
            f"{what}: buffer {key} differs from one process's ({err:.3e} relative, rank {RANK})"


def case_batchnorm_dropout():
    """Batch norm (statistics of the global batch) and dropout (masks of the global batch) give
    one process's training too: 20 Adam steps, weights and running statistics to 1e-10. Batches
    split unevenly; the last global batch (2, then 1 sample) leaves some ranks with nothing."""
    for second_norm, batch, n, shuffle in ((True, 10, 192, True), (False, 16, 305, False)):
        X, y = data(n + 30)
        fit = dict(epochs=1, batch_size=batch, shuffle=shuffle, verbose=0, validation_data=(X[n:], y[n:]))
        single = batchnorm_net(1, second_norm)
        single.fit(X[:n], y[:n], optimizer=mq.Adam(3e-3), **fit)
        parallel = batchnorm_net(1 + RANK, second_norm)   # rank 0's weights are broadcast
        parallel.fit(X[:n], y[:n], optimizer=mq.Adam(3e-3), distributed=True, **fit)
        assert parallel.optimizer.iterations == 20
        what = f"batch norm and dropout, B={batch}"
        err = assert_same_training(single, parallel, 1e-10, what)
        assert_same_buffers(single, parallel, 1e-10, what)
        assert not np.array_equal(single.get_flat_parameters(), batchnorm_net(1, second_norm).get_flat_parameters())
        if RANK == 0:
            print(f"{what} n={n} over {SIZE}: relative error {err:.2e}", flush=True)


def case_augment():
    """Augmented batches are the global batch's: every rank augments it whole from the shared
    generator, so N processes end as one, with and without shuffling, uneven slices included."""
    for batch, n, shuffle in ((10, 192, True), (16, 100, False)):
        X, y = data(n)
        augment = mq.augment.Compose([mq.augment.RandomCrop(32, padding=2), mq.augment.RandomHorizontalFlip(),
                                      mq.augment.RandomTranslate(1)])
        fit = dict(epochs=2, batch_size=batch, shuffle=shuffle, verbose=0, augment=augment)
        single = batchnorm_net(1)
        single.fit(X, y, optimizer=mq.Adam(3e-3), **fit)
        parallel = batchnorm_net(1 + RANK)
        parallel.fit(X, y, optimizer=mq.Adam(3e-3), distributed=True, **fit)
        what = f"augment, B={batch}"
        err = assert_same_training(single, parallel, 1e-10, what)
        assert_same_buffers(single, parallel, 1e-10, what)
        plain = batchnorm_net(1)
        plain.fit(X, y, optimizer=mq.Adam(3e-3), **{**fit, "augment": None})
        assert relative_error(plain.get_flat_parameters(), single.get_flat_parameters()) > 1e-6   # it did augment
        if RANK == 0:
            print(f"{what} n={n} over {SIZE}: relative error {err:.2e}", flush=True)


def case_float32():
    """float32 runs the batch-lane kernels on full slices: close to one process at float32 rounding."""
    X, y = data(256, seed=2, dtype="float32")
    single, parallel = mq.models.lenet5(seed=3), mq.models.lenet5(seed=3)
    single.fit(X, y, epochs=1, batch_size=64, optimizer=mq.SGD(0.01), verbose=0)
    parallel.fit(X, y, epochs=1, batch_size=64, optimizer=mq.SGD(0.01), verbose=0, distributed=True)
    err = relative_error(parallel.get_flat_parameters(), single.get_flat_parameters())
    assert err < 1e-5, f"float32: weights differ by {err:.3e} relative"


def case_communicator():
    """distributed= takes an mpi4py communicator: ranks {0, 1} train as one job, rank 2 (if any)
    alone, and both end where one process ends."""
    part = dist.world().Split(color=RANK // 2, key=RANK)
    X, y = data(60, seed=4)
    single, parallel = mq.models.lenet5(seed=5, dtype="float64"), mq.models.lenet5(seed=5, dtype="float64")
    single.fit(X, y, epochs=1, batch_size=12, optimizer=mq.SGD(0.02, momentum=0.9), verbose=0)
    history = parallel.fit(X, y, epochs=1, batch_size=12, optimizer=mq.SGD(0.02, momentum=0.9), verbose=0,
                           distributed=part)
    assert history.params["processes"] == part.Get_size() == min(2, SIZE - RANK // 2 * 2)
    assert_same_training(single, parallel, 1e-10, "communicator")
    part.Free()


def case_bad_input():
    """NaN in the data of the last rank only: every rank raises, none hangs; the last rank its own
    ValueError, the others a DistributedError that names it."""
    X, y = data(40)
    if RANK == SIZE - 1:
        X[7, 0, 3, 3] = np.nan
    try:
        mq.models.lenet5(dtype="float64").fit(X, y, batch_size=8, verbose=0, distributed=True)
    except ValueError as error:
        assert RANK == SIZE - 1 and "X contains NaN or Inf (first in sample 7)" in str(error), error
    except dist.DistributedError as error:
        assert RANK != SIZE - 1 and f"rank {SIZE - 1}: ValueError: X contains NaN" in str(error), error
    else:
        raise AssertionError("a NaN on one rank was not refused")


def case_mismatch():
    """Another architecture on one rank (or another dtype, or other data) is refused on every rank."""
    X, y = data(40)
    hidden = 120 if RANK == 0 else 100
    model = mq.Sequential([mq.Flatten(), mq.Dense(1024, hidden), mq.ReLU(), mq.Dense(hidden, 10)], dtype="float64")
    for fit, expected in ((lambda: model.fit(X, y, verbose=0, distributed=True), "rank 1's architecture differs"),
                          (lambda: mq.models.lenet5(dtype="float64" if RANK else "float32").fit(
                              X, y, verbose=0, distributed=True), "rank 1's architecture differs"),
                          (lambda: mq.models.lenet5(dtype="float64").fit(
                              X, (y + RANK) % 10, verbose=0, distributed=True), "rank 1's samples differ"),
                          (lambda: mq.models.lenet5(dtype="float64").fit(
                              X, y, batch_size=8 + RANK, verbose=0, distributed=True), "rank 1's settings differ")):
        try:
            fit()
        except dist.DistributedError as error:
            assert expected in str(error), error
        else:
            raise AssertionError(f"not refused: {expected}")


def case_diverge():
    """Divergence is decided on the summed loss, so every rank raises it at the same step."""
    X, y = data(64)
    X *= 1e200   # squared errors of outputs ~1e200 overflow: the loss is inf
    try:
        mq.models.lenet5(dtype="float64").fit(X, y, batch_size=16, loss="mse", verbose=0, distributed=True)
    except FloatingPointError as error:
        assert "diverged at epoch 1, step 1" in str(error), error
    else:
        raise AssertionError("no divergence reported")


class StopOnOneRank(mq.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if RANK == SIZE - 1 and epoch == 1:
            self.model.stop_training = True


def case_one_rank_stops():
    """A callback on one rank stopping training stops every rank after the same epoch."""
    X, y = data(48)
    model = mq.models.lenet5(dtype="float64")
    model.fit(X, y, epochs=5, batch_size=16, verbose=0, distributed=True, callbacks=[StopOnOneRank()])
    assert model.epochs_trained == 2, model.epochs_trained


class Checkpoint(mq.Callback):
    """Save after epoch 1 (rank 0 alone writes), then stop: a run interrupted in epoch 2."""

    def __init__(self, path):
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if RANK == 0:
            self.model.save(self.path, include_optimizer=True)
        self.model.stop_training = True


RESUME = dict(epochs=3, batch_size=12, verbose=0)
RESUMED = {"lenet5": lambda: mq.models.lenet5(seed=2, dtype="float64"), "batchnorm": lambda: batchnorm_net(2)}


def case_resume_save():
    X, y = data(100, seed=5)
    for name, build in RESUMED.items():
        build().fit(X, y, optimizer=mq.Adam(1e-3), distributed=True,
                    callbacks=[Checkpoint(f"{os.environ['CHECKPOINT']}.{name}")], **RESUME)


def case_resume_load():
    """A checkpoint written by any number of processes resumes in any number and ends where one
    uninterrupted process ends: weights, and the batch norms' running statistics."""
    X, y = data(100, seed=5)
    for name, build in RESUMED.items():
        straight = build()
        straight.fit(X, y, optimizer=mq.Adam(1e-3), **RESUME)
        resumed = mq.load(f"{os.environ['CHECKPOINT']}.{name}")
        assert resumed.epochs_trained == 1
        resumed.fit(X, y, distributed=True, initial_epoch=resumed.epochs_trained, **RESUME)
        err = relative_error(resumed.get_flat_parameters(), straight.get_flat_parameters())
        assert err <= 1e-10, f"{name} resumed in {SIZE}: weights differ by {err:.3e} relative"
        assert_same_buffers(straight, resumed, 1e-10, f"{name} resumed in {SIZE}")
        if RANK == 0:
            print(f"{name} resumed in {SIZE} process(es): relative error {err:.2e}", flush=True)


class FailAtStep(mq.Callback):
    def __init__(self, how):
        self.how = how

    def on_batch_begin(self, batch, logs=None):
        if RANK == 1 and batch == 4:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 fails on purpose at step 5")


class StuckAtStep(mq.Callback):
    def on_batch_begin(self, batch, logs=None):
        if RANK == 1 and batch == 2:
            time.sleep(60)


def case_stuck():
    """Rank 1 hangs in step 3; with a timeout, rank 0 ends the job instead of waiting forever."""
    dist.set_timeout(2)
    X, y = data(200)
    mq.models.lenet5().fit(X, y, epochs=3, batch_size=8, verbose=0, distributed=True, callbacks=[StuckAtStep()])


def case_skips_fit():
    """Rank 1 never calls fit (it caught an error of its own, say): rank 0 does not wait forever."""
    dist.set_timeout(2)
    if RANK != 1:
        X, y = data(40)
        mq.models.lenet5().fit(X, y, verbose=0, distributed=True)
    time.sleep(60)


def case_raise():
    X, y = data(200)
    mq.models.lenet5().fit(X, y, epochs=3, batch_size=8, verbose=0, distributed=True, callbacks=[FailAtStep("raise")])


def case_kill():
    X, y = data(200)
    mq.models.lenet5().fit(X, y, epochs=3, batch_size=8, verbose=0, distributed=True, callbacks=[FailAtStep("kill")])


if __name__ == "__main__":
    for name in sys.argv[1:]:
        globals()["case_" + name.replace("-", "_")]()
        print(f"OK {name} rank {RANK}", flush=True)
