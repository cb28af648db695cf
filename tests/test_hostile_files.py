"""Model files built to hurt: decompression bombs, lying headers, absurd architectures and
training state, random damage. Loading must refuse each with a ModelFileError, quickly and with
memory in proportion to the file; saving must keep permissions, links and folders clean."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maqueta as mq
from maqueta import ModelFileError
from test_io import members, meta_of, with_meta, write


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    model = mq.Sequential([mq.Conv2D(1, 2, 3), mq.ReLU(), mq.MaxPool2D(2), mq.Flatten(), mq.Dense(18, 3)],
                          seed=1, input_shape=(1, 8, 8))
    model.fit(rng.random((12, 1, 8, 8)).astype(np.float32), np.arange(12) % 3, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("models") / "small.maq"
    model.save(path, include_optimizer=True)
    return path, model


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def peak_allocation_of(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA])
def test_compressed_members_are_refused_before_inflating(small_file, tmp_path, method):
    path, _ = small_file
    bomb = tmp_path / "bomb.maq"
    labels = npy_bytes(np.zeros(64 << 20, np.uint8))     # 64 MB of labels in a few KB
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            if info.filename != "classes.npy":
                dst.writestr(info.filename, src.read(info.filename))
        dst.writestr("classes.npy", labels, compress_type=method)
    assert bomb.stat().st_size < 1 << 20
    peak = peak_allocation_of(lambda: pytest.raises(ModelFileError, mq.load, bomb))
    assert peak < 8 << 20


def test_duplicate_member_names_are_refused(small_file, tmp_path):
    path, _ = small_file
    twice = tmp_path / "twice.maq"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(twice, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("params/4.bias.npy", npy_bytes(np.zeros(3, np.float32)))
    with pytest.raises(ModelFileError, match="duplicate member names"):
        mq.load(twice)


@pytest.mark.parametrize("offset, value", [(6, 109), (28, 0xFFFF)], ids=["needs-zip-version-10.9", "name-length"])
def test_damaged_central_directory_is_a_model_file_error(small_file, tmp_path, offset, value):
    """zipfile itself raises NotImplementedError for an entry that needs zip version 10.9 (found by
    test_random_damage_never_loads_a_changed_model): whatever it raises is the file's fault."""
    path, _ = small_file
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")   # the first central directory entry
    raw[entry + offset:entry + offset + 2] = value.to_bytes(2, "little")
    damaged = tmp_path / "damaged.maq"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        mq.load(damaged)


def test_a_missing_file_is_still_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        mq.load(tmp_path / "missing.maq")


def test_header_whose_size_wraps_int64_is_refused(small_file, tmp_path):
    path, _ = small_file
    arrays = members(path)
    header = npy_bytes(np.zeros(1, np.uint8))
    lying = header.replace(b"'shape': (1,)", b"'shape': (4294967296, 4294967296,)")   # 2**64 bytes
    raw = {name: npy_bytes(value) for name, value in arrays.items()}
    raw["classes.npy"] = lying
    with zipfile.ZipFile(tmp_path / "wrap.maq", "w") as zf:
        for name, data in raw.items():
            zf.writestr(name, data)
    with pytest.raises(ModelFileError, match="declares .* bytes of data, more than it holds"):
        mq.load(tmp_path / "wrap.maq")


def test_architecture_is_checked_against_the_file_before_allocating(small_file, tmp_path):
    """A 3 KB file whose meta declares Dense(8000, 8000) must not build a 256 MB model first."""
    path, _ = small_file
    arrays = members(path)
    meta = meta_of(arrays)
    meta["layers"][-1]["config"] = {"in_features": 8000, "out_features": 8000}
    meta["layers"].insert(-1, {"class_name": "Dense", "config": {"in_features": 18, "out_features": 8000}})
    meta["optimizer"] = None
    arrays = {k: v for k, v in arrays.items() if not k.startswith(("optimizer/", "params/4", "classes"))}
    arrays["params/4.weight.npy"] = np.zeros((8000, 18), np.float32)
    arrays["params/4.bias.npy"] = np.zeros(8000, np.float32)
    arrays["params/5.weight.npy"] = np.zeros((1, 1), np.float32)
    arrays["params/5.bias.npy"] = np.zeros(1, np.float32)
    meta["classes"] = False
    write(tmp_path / "huge.maq", with_meta(arrays, meta))
    peak = peak_allocation_of(lambda: pytest.raises(ModelFileError, mq.load, tmp_path / "huge.maq"))
    assert peak < 16 << 20


def hostile_meta(path, text):
    arrays = members(path)
    out = {name: npy_bytes(value) for name, value in arrays.items()}
    out["meta.npy"] = npy_bytes(np.frombuffer(text.encode(), np.uint8))
    return out


@pytest.mark.parametrize("edit", [
    lambda text: text.replace('"seed": 1', '"seed": ' + "9" * 5000),             # int parser limit
    lambda text: text.replace('"seed": 1', '"seed": ' + "[" * 100000 + "]" * 100000),   # recursion
    lambda text: text.replace('"seed": 1', '"seed": 123456789012345678901234567890'),
    lambda text: text.replace('"epochs_trained": 1', '"epochs_trained": -5'),
    lambda text: text.replace('"epochs_trained": 1', '"epochs_trained": 1e300'),
    lambda text: text.replace('"iterations": 1', '"iterations": -1'),
    lambda text: text.replace('"iterations": 1', '"iterations": 99999999999999999999999'),
    lambda text: text.replace('"loss": "cross_entropy"', '"loss": "__import__(\'os\')"'),
    lambda text: text.replace('"input_shape": [1, 8, 8]', '"input_shape": {"a": 1}'),
    lambda text: text.replace('"layers": [', '"layers": [7, '),
], ids=["5000-digit seed", "deep JSON", "seed beyond 64 bits", "negative epochs", "float epochs",
        "negative iterations", "huge iterations", "unknown loss", "input_shape dict", "layer not a dict"])
def test_hostile_meta_is_a_model_file_error(small_file, tmp_path, edit):
    path, _ = small_file
    text = bytes(members(path)["meta.npy"]).decode()
    changed = edit(text)
    assert changed != text
    with zipfile.ZipFile(tmp_path / "bad.maq", "w") as zf:
        for name, data in hostile_meta(path, changed).items():
            zf.writestr(name, data)
    with pytest.raises(ModelFileError):
        mq.load(tmp_path / "bad.maq")


@pytest.mark.parametrize("name,value", [
    ("optimizer/v.npy", lambda v: -np.abs(v) - 1),
    ("optimizer/m.npy", lambda v: np.full_like(v, np.nan)),
    ("params/0.weight.npy", lambda v: np.full_like(v, np.inf)),
])
def test_non_finite_or_impossible_state_is_refused(small_file, tmp_path, name, value):
    path, _ = small_file
    arrays = members(path)
    arrays[name] = value(arrays[name])
    write(tmp_path / "bad.maq", arrays)
    with pytest.raises(ModelFileError):
        mq.load(tmp_path / "bad.maq")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_never_loads_a_changed_model(small_file, data):
    path, model = small_file
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    damaged = path.with_name(f"damaged-{os.getpid()}.maq")
    damaged.write_bytes(bytes(raw))
    try:
        loaded = mq.load(damaged)
    except ModelFileError:
        return
    finally:
        damaged.unlink()
    for key, value in model.state_dict().items():   # a flip that survived only touched metadata
        np.testing.assert_array_equal(loaded.state_dict()[key], value)


# ------------------------------------------------------------------------------------ saving
def test_save_keeps_permissions_and_follows_the_umask(small_file, tmp_path):
    _, model = small_file
    target = tmp_path / "m.maq"
    old = os.umask(0o027)
    try:
        model.save(target)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    target.chmod(0o604)
    model.save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o604


def test_save_writes_through_a_symlink(small_file, tmp_path):
    _, model = small_file
    (tmp_path / "real").mkdir()
    link = tmp_path / "link.maq"
    link.symlink_to(tmp_path / "real" / "model.maq")
    model.save(link)
    assert link.is_symlink() and (tmp_path / "real" / "model.maq").is_file()
    assert mq.load(link).count_params() == model.count_params()


def test_stale_temporaries_of_dead_saves_are_removed(small_file, tmp_path):
    _, model = small_file
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m.maq.{dead.stdout.strip()}.abc123.tmp"
    live = tmp_path / f".m.maq.{os.getppid()}.def456.tmp"     # a save still running elsewhere
    other = tmp_path / f".other.maq.{dead.stdout.strip()}.x.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    model.save(tmp_path / "m.maq")
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "m.maq"])


def test_killed_save_leaves_the_old_file_and_the_next_save_cleans_up(small_file, tmp_path):
    _, model = small_file
    target = tmp_path / "m.maq"
    model.save(target)
    before = target.read_bytes()
    script = (f"import os, signal, numpy as np, maqueta as mq\n"
              f"m = mq.load({str(target)!r})\n"
              f"real = np.savez\n"
              f"def dying(f, **arrays):\n"
              f"    f.write(b'half a file')\n"
              f"    os.kill(os.getpid(), signal.SIGKILL)\n"
              f"np.savez = dying\n"
              f"m.save({str(target)!r})\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    assert target.read_bytes() == before
    assert len(list(tmp_path.glob(".m.maq.*.tmp"))) == 1     # what the killed save left
    model.save(target)
    assert list(tmp_path.glob(".m.maq.*.tmp")) == []
