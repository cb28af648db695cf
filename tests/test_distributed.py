"""Data-parallel training (maqueta.distributed, fit(distributed=True)) under mpiexec -n 1, 2 and 3.

Each test launches ``mpiexec -n N python tests/distributed_cases.py CASE...`` in a subprocess with
a timeout, so pytest itself never waits on a hung job, and reads what every rank printed. They skip
where mpi4py or an mpiexec is missing (CI installs the project's [mpi] extra: mpi4py and MPICH).
Without mpi4py the API must say how to install it: that test runs everywhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import maqueta as mq

HERE = Path(__file__).resolve().parent
CASES = HERE / "distributed_cases.py"
SCRIPT = HERE.parent / "examples" / "train_lenet5.py"


def find_mpiexec():
    """The mpiexec beside this Python (the MPICH wheel puts it in the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_present():
    from maqueta import distributed
    return distributed.available() and find_mpiexec() is not None


needs_mpi = pytest.mark.skipif(not mpi_present(), reason='needs mpi4py and mpiexec: pip install ".[mpi]"')


def env(**extra):
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    # the package this test imported, whether installed or on PYTHONPATH
    root = str(Path(mq.__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH")) if p)
    return environment


def mpirun(n, *args, timeout=60, check=True, cwd=None, **extra):
    """Run ``mpiexec -n n python args...``; returns (exit code, stdout + stderr, seconds)."""
    started = time.perf_counter()
    try:
        out = subprocess.run([find_mpiexec(), "-n", str(n), sys.executable, *map(str, args)], capture_output=True,
                             text=True, timeout=timeout, env=env(**extra), cwd=cwd)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"mpiexec -n {n} {args} still ran after {timeout} s: a hang") from expired
    text = out.stdout + out.stderr
    if check:
        assert out.returncode == 0, text[-6000:]
    return out.returncode, text, time.perf_counter() - started


def every_rank_passed(text, n, *names):
    for name in names:
        for rank in range(n):
            assert f"OK {name} rank {rank}" in text, f"{name} on rank {rank}:\n{text[-6000:]}"


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_n_processes_train_as_one(n):
    """float64, 20 steps with Adam and SGD-momentum, with and without batch norm, dropout and
    augmentation: the
    same weights (and running statistics) as one process with the same global batch, to 1e-10
    relative; refused inputs, divergence and early stopping on every rank."""
    names = ["exactness", "batchnorm-dropout", "augment", "float32", "communicator", "bad-input", "mismatch", "diverge",
             "one-rank-stops"]
    _, text, _ = mpirun(n, CASES, *names)
    every_rank_passed(text, n, *names)


@needs_mpi
def test_checkpoint_of_two_processes_resumes_in_one_and_three(tmp_path):
    checkpoint = tmp_path / "run.maq"
    every_rank_passed(mpirun(2, CASES, "resume-save", CHECKPOINT=checkpoint)[1], 2, "resume-save")
    for n in (1, 3):
        every_rank_passed(mpirun(n, CASES, "resume-load", CHECKPOINT=checkpoint)[1], n, "resume-load")


@needs_mpi
def test_a_rank_that_raises_ends_the_job_naming_it():
    code, text, seconds = mpirun(2, CASES, "raise", check=False, timeout=30)
    assert code != 0 and seconds < 20, (code, seconds, text)
    assert "rank 1 of 2: fit failed in epoch 1 after 4 of its steps with RuntimeError: rank 1 fails on purpose" in text
    assert "OK raise" not in text


@needs_mpi
def test_a_killed_rank_ends_the_job():
    code, text, seconds = mpirun(2, CASES, "kill", check=False, timeout=30)
    assert code != 0 and seconds < 20, (code, seconds, text)
    assert "OK kill" not in text


@needs_mpi
@pytest.mark.parametrize("case, where", [("stuck", "the gradient allreduce of epoch 1, step 3"),
                                         ("skips-fit", "the check that every rank holds the same model")])
def test_with_a_timeout_a_stuck_rank_ends_the_job(case, where):
    code, text, seconds = mpirun(2, CASES, case, check=False, timeout=40)
    assert code != 0 and seconds < 20, (code, seconds, text)
    assert f"rank 0 of 2: waited more than 2 s for the other ranks in {where}" in text, text


@needs_mpi
def test_an_uncaught_exception_outside_fit_ends_the_job():
    """The hook maqueta.distributed installs: without it, rank 0 would wait in the allreduce forever."""
    program = ("import numpy as np; from maqueta import distributed as dist\n"
               "comm = dist.world()\n"
               "if comm.Get_rank() == 1: raise KeyError('only rank 1')\n"
               "comm.allreduce(1)\n")
    code, text, seconds = mpirun(2, "-c", program, check=False, timeout=30)
    assert code != 0 and seconds < 20, (code, seconds, text)
    assert "rank 1 of 2: uncaught KeyError" in text


@needs_mpi
def test_training_script_distributed_resumes_in_other_process_counts(tmp_path):
    """examples/train_lenet5.py --distributed: rank 0 alone prints and saves; a checkpoint written by
    2 processes resumes in 3 and in 1 and ends where one uninterrupted process ends."""
    pytest.importorskip("sklearn")
    common = ["--quiet", "--dataset", "digits", "--limit", "240", "--batch-size", "25", "--dtype", "float64",
              "--schedule", "none", "--no-download"]
    extra = dict(HOME=str(tmp_path / "home"), MAQUETA_OFFLINE="1")

    def script(n, *args):
        _, text, _ = mpirun(n, SCRIPT, *common, *args, cwd=tmp_path, **extra)
        return text

    first = script(2, "--distributed", "--epochs", "1", "--checkpoint", "two.ckpt", "--save", "one-epoch.maq")
    assert first.count("epoch   1/1") == 1 and "2 processes" in first and first.count("saved the model") == 1
    shutil.copy(tmp_path / "two.ckpt", tmp_path / "copy.ckpt")
    script(3, "--distributed", "--epochs", "2", "--checkpoint", "two.ckpt", "--resume", "--save", "in-three.maq")
    script(1, "--epochs", "2", "--checkpoint", "copy.ckpt", "--resume", "--save", "in-one.maq")
    script(1, "--epochs", "2", "--save", "straight.maq")
    straight = mq.load(tmp_path / "straight.maq").get_flat_parameters()
    for name in ("in-three.maq", "in-one.maq"):
        resumed = mq.load(tmp_path / name).get_flat_parameters()
        assert np.max(np.abs(resumed - straight)) <= 1e-10 * np.max(np.abs(straight)), name


def test_without_mpi4py_the_api_says_how_to_install_it():
    program = ("import sys; sys.modules['mpi4py'] = None\n"
               "import numpy as np, maqueta as mq\n"
               "from maqueta import distributed\n"
               "X, y = np.zeros((4, 1, 32, 32)), np.arange(4)\n"
               "for call in (distributed.rank, lambda: mq.models.lenet5().fit(X, y, verbose=0, distributed=True)):\n"
               "    try:\n"
               "        call()\n"
               "    except ImportError as error:\n"
               "        print(error)\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('pip install "maqueta[mpi]"') == 2, out.stdout


def test_distributed_argument_is_checked():
    X, y = np.zeros((4, 1, 32, 32)), np.arange(4)
    with pytest.raises(TypeError, match="distributed must be True, False or an mpi4py communicator, got 'yes'"):
        mq.models.lenet5().fit(X, y, verbose=0, distributed="yes")


@pytest.mark.skipif(not mq.distributed.available(), reason='needs mpi4py: pip install ".[mpi]"')
def test_a_job_of_one_process_trains_batch_norm_and_dropout_as_without_distributed():
    """In a job of one (no mpiexec) the layers get no reduction: the same fused kernels, bit for bit."""
    X, y = np.random.default_rng(0).standard_normal((30, 4)), np.arange(30) % 3
    models = [mq.Sequential([mq.Dense(4, 8), mq.BatchNorm1D(8), mq.ReLU(), mq.Dropout(0.5), mq.Dense(8, 3)],
                            seed=0, dtype="float64") for _ in range(2)]
    for model, distributed in zip(models, (False, True)):
        model.fit(X, y, epochs=2, batch_size=8, verbose=0, distributed=distributed)
    assert models[1].history.params["processes"] == 1
    for (key, ours), theirs in zip(models[1].state_dict().items(), models[0].state_dict().values()):
        np.testing.assert_array_equal(ours, theirs, err_msg=key)
