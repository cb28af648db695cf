"""examples/train_cnn.py: the small VGG recipe runs offline on the shipped MNIST files, resumes
exactly, and its PyTorch twin starts from the same weights."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import maqueta as mq
from conftest import EXAMPLES, example_module, offline_env

SCRIPT = EXAMPLES / "train_cnn.py"
SMALL = ["--dataset", "mnist", "--split", "test", "--limit", "2048", "--widths", "8,16", "--dense", "32",
         "--batch-size", "64", "--max-lr", "0.01", "--threads", "2"]


def run_script(tmp_path, *args):
    out = subprocess.run([sys.executable, str(SCRIPT), *SMALL, *args], cwd=tmp_path, env=offline_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def script_module():
    with example_module("train_cnn") as module:
        yield module


def test_trains_offline_and_writes_its_results(tmp_path):
    out = run_script(tmp_path, "--epochs", "4", "--results", "r.json")
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["maqueta"]["epochs"] == 4 and results["dataset"] == "mnist"
    assert results["maqueta"]["test_accuracy"] >= 0.85, out     # 2,048 images, 4 epochs, 2,000 held out
    assert out.count("maqueta epoch") == 4 and "maqueta: test accuracy" in out


def test_an_interrupted_run_resumes_bit_identical(tmp_path):
    run_script(tmp_path, "--epochs", "3", "--checkpoint", "straight.maq")
    run_script(tmp_path, "--epochs", "3", "--checkpoint", "cut.maq", "--stop-after", "1")
    assert mq.load(tmp_path / "cut.maq").epochs_trained == 1
    out = run_script(tmp_path, "--epochs", "3", "--checkpoint", "cut.maq", "--resume")
    assert "resuming from cut.maq after epoch 1" in out and out.count("maqueta epoch") == 2
    straight, resumed = mq.load(tmp_path / "straight.maq"), mq.load(tmp_path / "cut.maq")
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


def test_the_pytorch_twin_starts_from_the_same_network(script_module):
    """Same architecture and weights: in evaluation mode both compute the same outputs."""
    torch = pytest.importorskip("torch")
    args = script_module.parse_args(SMALL)
    model = mq.models.small_vgg(widths=args.widths, dense=args.dense, seed=4)
    model.fit(np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32), np.arange(64) % 10,
              epochs=1, batch_size=32, verbose=0)    # running statistics away from their initial values
    net = script_module.torch_network(torch, model, args).eval()
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), model(x), rtol=1e-4, atol=1e-5)


def test_both_frameworks_report_side_by_side(tmp_path):
    pytest.importorskip("torch")
    out = run_script(tmp_path, "--epochs", "1", "--framework", "both", "--results", "r.json")
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results) >= {"maqueta", "torch"}
    for side in ("maqueta", "torch"):
        assert 0.5 <= results[side]["test_accuracy"] <= 1 and results[side]["seconds"] > 0, out
    assert "PyTorch: test accuracy" in out


@pytest.mark.parametrize("argv, message", [
    (["--widths", "8,0"], "every width must be >= 1"),
    (["--label-smoothing", "1.5"], "--label-smoothing 1.5 is not in [0, 1]"),
    (["--resume"], "--resume needs --checkpoint PATH"),
    (["--results", "/no/such/folder/r.json"], "its folder does not exist"),
    (["--epochs", "0"], "must be > 0"),
])
def test_bad_arguments_are_refused_before_training(script_module, capsys, argv, message):
    with pytest.raises(SystemExit):
        script_module.parse_args(argv)
    assert message in capsys.readouterr().err


def test_the_defaults_are_the_readme_recipe(script_module):
    """The README quotes the accuracy of `python examples/train_cnn.py` with these settings."""
    args = script_module.parse_args([])
    assert (args.dataset, args.epochs, args.batch_size, args.widths, args.dense) == ("fashion-mnist", 15, 128, (32, 64), 128)
    assert (args.max_lr, args.weight_decay, args.label_smoothing, args.crop_padding, args.no_flip, args.seed) == \
        (3e-3, 0.01, 0.1, 0, False, 0)
