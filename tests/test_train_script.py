"""examples/train_lenet5.py: the default offline run on the shipped MNIST files and its quality bar,
smoke runs, the last-resort digits, backends, checkpoints and resume, the plot."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import maqueta as mq
from conftest import EXAMPLES, example_module, offline_env

SCRIPT = EXAMPLES / "train_lenet5.py"
pytest.importorskip("sklearn")   # the digits most runs here use: small and fast


def run_script(tmp_path, *args, env=None):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quiet", *args], cwd=tmp_path, env=env or offline_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def script_module():
    with example_module("train_lenet5") as module:
        yield module


def test_no_arguments_offline_trains_on_the_shipped_real_mnist(tmp_path):
    """The README's first command on a fresh machine with no network: the MNIST test files shipped in
    the package, 8,000 to train and the last 2,000 held out, >= 98.5% (the README's table)."""
    out = run_script(tmp_path)
    assert "MNIST's training files are not found (downloading is off)" in out
    assert "MNIST test files shipped with maqueta" in out and "scikit-learn" not in out
    assert "train 8,000 images, test 2,000 (held-out last 2,000 of the test files)" in out
    assert "saved the model to runs/lenet5-mnist.maq" in out
    accuracy = float(out.split("test accuracy: ")[1].split("%")[0])
    assert accuracy >= 98.5
    model = mq.load(tmp_path / "runs" / "lenet5-mnist.maq")
    assert model.metadata["run"]["dataset"] == "mnist" and model.metadata["run"]["split"] == "test"


def test_digits_remain_the_last_resort(tmp_path, script_module, monkeypatch, capsys):
    """Only when no MNIST file is anywhere, the shipped ones included (a trimmed install)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAQUETA_DATA", raising=False)
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    monkeypatch.setitem(mq.datasets.DATASETS["mnist"], "package_dirs", [])
    script_module.main(["--quiet", "--epochs", "1", "--limit", "300", "--save", "digits.maq"])
    out = capsys.readouterr().out
    assert "MNIST not available" in out and "scikit-learn's bundled handwritten digits" in out
    assert mq.load(tmp_path / "digits.maq").metadata["run"]["dataset"] == "digits"


def test_smoke_run_reports_everything(tmp_path):
    out = run_script(tmp_path, "--dataset", "digits", "--limit", "300", "--epochs", "2", "--batch-size", "50",
                     "--save", "tiny.maq", "--threads", "1")
    for expected in ("1 thread(s)", "train 300 images", "epoch   1/2", "epoch   2/2", "img/s", "val_acc",
                     "accuracy on the 300 training images", "test accuracy", "saved the model to tiny.maq"):
        assert expected in out, expected
    assert (tmp_path / "tiny.maq").stat().st_size > 100_000


@pytest.mark.parametrize("backend", ["reference", "plain"])
def test_other_backends_match_native(tmp_path, backend):
    args = ["--dataset", "digits", "--split", "test", "--limit", "80", "--epochs", "2", "--batch-size", "16",
            "--dtype", "float64"]
    native = run_script(tmp_path, *args, "--save", "native.maq")
    reference = run_script(tmp_path, *args, "--save", "reference.maq", "--backend", backend)
    strip = lambda text: [line.split("  lr")[0] for line in text.splitlines() if line.startswith(("epoch", "test accuracy"))]
    assert strip(native) == strip(reference)
    a, b = mq.load(tmp_path / "native.maq"), mq.load(tmp_path / "reference.maq")
    np.testing.assert_allclose(a.get_flat_parameters(), b.get_flat_parameters(), rtol=0, atol=1e-10)


def test_interrupted_run_resumes_to_identical_weights(tmp_path, script_module, monkeypatch):
    common = ["--dataset", "digits", "--limit", "600", "--epochs", "3", "--batch-size", "32", "--quiet", "--seed", "4",
              "--threads", "2"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    straight = script_module.main(common + ["--save", "straight.maq", "--checkpoint", "straight.ckpt"])

    # A run killed in its second epoch: its checkpoint holds the state after epoch 1.
    real_step = mq.training.train_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 19 + 7:        # 19 steps per epoch; die 7 steps into epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(mq.training, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        script_module.main(common + ["--save", "resumed.maq", "--checkpoint", "run.ckpt"])
    monkeypatch.setattr(mq.training, "train_step", real_step)
    assert mq.load("run.ckpt").epochs_trained == 1

    resumed = script_module.main(common + ["--save", "resumed.maq", "--checkpoint", "run.ckpt", "--resume"])
    np.testing.assert_array_equal(resumed.get_flat_parameters(), straight.get_flat_parameters())
    np.testing.assert_array_equal(mq.load("resumed.maq").get_flat_parameters(),
                                  mq.load("straight.maq").get_flat_parameters())
    assert mq.load("resumed.maq").metadata["history"]["loss"] == mq.load("straight.maq").metadata["history"]["loss"]


def test_resume_refuses_other_settings(tmp_path):
    run_script(tmp_path, "--dataset", "digits", "--limit", "200", "--epochs", "1", "--checkpoint", "c.ckpt")
    out = subprocess.run([sys.executable, str(SCRIPT), "--quiet", "--dataset", "digits", "--limit", "200", "--epochs",
                          "2", "--lr", "0.1", "--checkpoint", "c.ckpt", "--resume"], cwd=tmp_path,
                         env=offline_env(tmp_path), capture_output=True, text=True)
    assert out.returncode != 0 and "trained with other settings: lr=0.002 (now 0.1)" in out.stderr


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    run_script(tmp_path, "--dataset", "digits", "--limit", "300", "--epochs", "2", "--plot", "curves.png")
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_bad_arguments_are_refused(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--lr", "nan"], cwd=tmp_path, env=offline_env(tmp_path),
                         capture_output=True, text=True)
    assert out.returncode == 2 and "usage:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args,message", [
    (["--resume"], "--resume needs --checkpoint"),
    (["--epochs", "0"], "argument --epochs: 0 is not in [1, 1000000]"),
    (["--validation-split", "1.5"], "argument --validation-split: 1.5 is not in [0, 1)"),
    (["--lr", "nan"], "argument --lr: nan is not in (0, 1e+30]"),
    (["--lr", "0"], "argument --lr: 0 is not in (0, 1e+30]"),
    (["--lr", "fast"], "argument --lr: 'fast' is not a number"),
    (["--weight-decay", "-1"], "argument --weight-decay: -1 is not in [0, 1e+30]"),
    (["--momentum", "inf"], "argument --momentum: inf is not in [0, 1e+30]"),
    (["--seed", "-1"], "argument --seed: -1 is not in [0, 18446744073709551615]"),
    (["--seed", "1.5"], "argument --seed: '1.5' is not an integer"),
    (["--threads", "0"], "argument --threads: 0 is not in [1, 4096]"),
    (["--batch-size", "-3"], "argument --batch-size: -3 is not in [1, 16777216]"),
    (["--limit", "0"], "argument --limit: 0 is not in [1,"),
    (["--checkpoint", "/no/such/folder/run.ckpt"], "--checkpoint /no/such/folder/run.ckpt: the folder /no/such/folder does not exist"),
    (["--plot", "."], "--plot .: is a folder"),
])
def test_argument_errors_are_usage_messages(script_module, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        script_module.parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_read_only_checkpoint_folder_fails_before_training(script_module, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(script_module.tempfile, "TemporaryFile", refuse)
    with pytest.raises(SystemExit):
        script_module.parse_args(["--checkpoint", str(tmp_path / "run.ckpt")])
    assert f"cannot write in {tmp_path}: Read-only file system" in capsys.readouterr().err


def test_resume_from_a_plain_saved_model_says_so(tmp_path):
    run_script(tmp_path, "--dataset", "digits", "--limit", "200", "--epochs", "1", "--save", "plain.maq")
    out = subprocess.run([sys.executable, str(SCRIPT), "--quiet", "--dataset", "digits", "--limit", "200",
                          "--checkpoint", "plain.maq", "--resume"], cwd=tmp_path, env=offline_env(tmp_path),
                         capture_output=True, text=True)
    assert out.returncode != 0 and "is a saved model, not a checkpoint" in out.stderr
    (tmp_path / "junk.ckpt").write_bytes(b"not a model")
    out = subprocess.run([sys.executable, str(SCRIPT), "--quiet", "--dataset", "digits", "--checkpoint", "junk.ckpt",
                          "--resume"], cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True)
    assert out.returncode != 0 and "--resume:" in out.stderr and "not a maqueta model file" in out.stderr


def test_explicit_dataset_does_not_fall_back(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "mnist", "--split", "train"], cwd=tmp_path,
                         env=offline_env(tmp_path), capture_output=True, text=True)
    assert out.returncode != 0 and "MNIST train files not found" in out.stderr
