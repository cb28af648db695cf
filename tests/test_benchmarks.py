"""The benchmark scripts run end to end (in their smallest setting) and write what BENCHMARKS.md
quotes. They time nothing here: timings belong in benchmarks/, never in tests. bench_kernels also
checks every native kernel against the reference before timing it, so running it catches a wrong
batch-lane kernel too."""
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def run(script, *args):
    out = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def torch_present():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def test_bench_kernels_quick(tmp_path):
    path = tmp_path / "kernels.json"
    table = run("bench_kernels.py", "--quick", "--threads", "1", "--out", str(path))
    result = json.loads(path.read_text())
    names = [k["kernel"] for k in result["kernels"]]
    for wanted in ("conv1 b32 forward", "conv2 b256 backward dx+dw+db", "conv2 b256 backward dw+db",
                   "conv 32->64 3x3 p1 b64 forward", "pool1 b256 backward", "conv2 b256 forward, lanes",
                   "pool1 b256 backward, lanes", "Adam update, 61,706 params"):
        assert wanted in names and wanted in table
    assert all(k["maqueta_s"] > 0 for k in result["kernels"])
    assert all(k["gflops"] > 0 for k in result["kernels"] if k["kernel"].startswith("conv"))
    if torch_present():
        assert result["gemm_peak_gflops"] > 0
        assert all(k["torch_s"] > 0 for k in result["kernels"])


def test_bench_lenet5_small(tmp_path):
    path = tmp_path / "lenet5.json"
    args = ["--threads", "1", "--batches", "32", "--images", "256", "--repeats", "1", "--no-memory", "--out", str(path)]
    if not torch_present():
        args.append("--no-torch")
    table = run("bench_lenet5.py", *args)
    result = json.loads(path.read_text())
    cases = {r["case"]: r for r in result["runs"]}
    assert set(cases) == {"train b32", "infer b256", "latency b1"}
    assert cases["train b32"]["maqueta_images_per_s"][0] > 0 and "train b32" in table
    if torch_present():
        assert cases["train b32"]["torch_images_per_s"][0] > 0
    if platform.libc_ver()[0] == "glibc":   # restarted with freed memory kept, as bench_zoo
        assert "malloc.mmap_threshold=4294967295" in result["allocator"]


def fashion_present():
    from maqueta import datasets
    try:
        datasets.load_fashion_mnist("train", download=False)
        return True
    except Exception:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS is read from /proc")
@pytest.mark.skipif(not fashion_present(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
def test_bench_lenet5_memory_of_a_fashion_epoch(tmp_path):
    """Issue 5's bound: training LeNet-5 on Fashion-MNIST holds the dataset plus < 150 MB."""
    path = tmp_path / "lenet5.json"
    run("bench_lenet5.py", "--threads", "1", "--batches", "32", "--images", "64", "--repeats", "1", "--no-torch",
        "--out", str(path))
    memory = json.loads(path.read_text())["peak_memory_fashion_epoch"]
    assert "error" not in memory, memory
    assert 0 < memory["maqueta"]["above_dataset_mb"] < 150, memory


def mpi_present():
    from maqueta import distributed
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return distributed.available() and (os.path.exists(beside) or shutil.which("mpiexec") is not None)


@pytest.mark.skipif(not mpi_present(), reason='needs mpi4py and mpiexec: pip install ".[mpi]"')
def test_bench_distributed_quick(tmp_path):
    path = tmp_path / "distributed.json"
    table = run("bench_distributed.py", "--quick", "--out", str(path))
    runs = json.loads(path.read_text())["runs"]
    assert {(r["processes"], r["threads"], r["plain_fit"]) for r in runs} == {(1, 2, True), (1, 2, False), (2, 1, False)}
    assert all(r["images_per_s"][0] > 0 for r in runs) and "2 x 1" in table
    two = next(r for r in runs if r["processes"] == 2)
    assert 0 < two["allreduce_share"][0] < 1 and two["allreduce_alone_s"][0] > 0


@pytest.mark.skipif(not torch_present(), reason="the zoo compares with PyTorch")
def test_bench_zoo_quick(tmp_path):
    """Every zoo network builds the same in both libraries (bench_zoo copies the weights by
    position, so a mismatch fails the load), and one runs end to end with its memory probe."""
    sys.path.insert(0, BENCH)
    try:
        import numpy as np
        import torch
        import zoo
        for name in zoo.ZOO:
            model = zoo.maqueta_model(name)
            net = zoo.torch_model(name, model).eval()
            x = np.random.default_rng(0).standard_normal((2, *zoo.ZOO[name][0])).astype(np.float32)
            with torch.no_grad():
                np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), model(x), rtol=1e-4, atol=1e-5,
                                           err_msg=name)
            forward, step = zoo.flops(name)
            assert 0 < forward < step < 3 * forward
    finally:
        sys.path.remove(BENCH)
    path = tmp_path / "zoo.json"
    table = run("bench_zoo.py", "--networks", "strided-mnist", "--batches", "32", "--repeats", "1",
                "--seconds", "0.05", "--no-compile", "--out", str(path))
    result = json.loads(path.read_text())
    cases = result["networks"]["strided-mnist"]["cases"]
    assert set(cases) == {"train b32", "infer b256", "latency b1"} and "strided-mnist" in table
    assert result["gemm_peak_gflops"] > 0
    if platform.libc_ver()[0] == "glibc":   # it restarted itself with freed memory kept (common.KEEP_FREED_MEMORY)
        assert "malloc.mmap_threshold=4294967295" in result["allocator"] and "malloc:" in table
    if shutil.which("cc") or shutil.which("gcc"):   # fma_peak.c compiled and ran
        assert result["fma_peak_gflops"] > 0 and "multiply-add chains" in table
    assert set(result["networks"]["strided-mnist"]["epoch_peak_mb_above_start"]) == {"maqueta", "torch"}


@pytest.mark.skipif(not torch_present(), reason="the scaling table compares with PyTorch")
def test_scaling_gathers_the_zoo_per_thread_count(tmp_path):
    path = tmp_path / "scaling.json"
    cores = os.cpu_count()
    table = run("scaling.py", "--threads", f"1,{cores + 1}", "--networks", "strided-mnist", "--batches", "32",
                "--seconds", "0.05", "--repeats", "1", "--infer-images", "256", "--no-lenet5", "--out", str(path))
    result = json.loads(path.read_text())
    assert result["threads"] == [1] and not result["errors"]   # more threads than cores: skipped
    cases = result["zoo"]["1"]["networks"]["strided-mnist"]["cases"]
    assert set(cases) == {"train b32", "infer b256", "latency b1"}
    assert "| strided-mnist | train b32" in table and "x)" in table


def test_profile_ops_splits_a_step_by_kernel():
    table = run("profile_ops.py", "strided-mnist", "8", "1")
    assert "strided-mnist, batch 8:" in table
    for kernel in ("conv2d_forward", "conv2d_backward", "linear_forward", "adam_update"):
        assert kernel in table


def test_ab_zoo_compares_two_builds():
    """The same build as A and B: the table has every case, with ratios near nothing in particular
    (no timing is asserted), and a bad folder is an error, not a table."""
    import maqueta
    site = os.path.dirname(os.path.dirname(os.path.abspath(maqueta.__file__)))
    table = run("ab_zoo.py", site, site, "strided-mnist", "1")
    for case in ("strided-mnist train b64", "strided-mnist train b256", "strided-mnist infer b256"):
        assert case in table
    bad = subprocess.run([sys.executable, os.path.join(BENCH, "ab_zoo.py"), "/nonexistent", site, "lenet5", "1"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "maqueta" in bad.stderr
