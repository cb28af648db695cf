"""Save and load: round trips, resumed training, and every kind of bad file."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import maqueta as mq
from maqueta import ModelFileError


@pytest.fixture
def trained(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((40, 1, 32, 32)).astype(np.float32)
    y = rng.choice([2, 5, 9, 11, 14, 20, 21, 30, 31, 40], 40)
    model = mq.models.lenet5(seed=1)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    return model, X, y


def members(path):
    """{member name: array} of a saved model, read without pickle."""
    with zipfile.ZipFile(path) as zf:
        return {name: np.load(io.BytesIO(zf.read(name)), allow_pickle=False) for name in zf.namelist()}


def write(path, arrays):
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=True)
            zf.writestr(name, buf.getvalue())


def meta_of(arrays):
    return json.loads(arrays["meta.npy"].tobytes().decode())


def with_meta(arrays, meta):
    out = dict(arrays)
    out["meta.npy"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return out


def test_round_trip_gives_identical_predictions(trained, tmp_path):
    model, X, y = trained
    path = tmp_path / "lenet.maq"
    model.save(path)
    loaded = mq.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.dtype == model.dtype and loaded.input_shape == model.input_shape
    assert [repr(a) for a in loaded.layers] == [repr(b) for b in model.layers]
    assert loaded.optimizer is None   # not asked for


def test_round_trip_float64_and_string_classes(tmp_path):
    model = mq.Sequential([mq.Dense(4, 3)], dtype="float64")
    X = np.random.default_rng(0).random((12, 4))
    y = np.array(["cat", "dog", "emu"] * 4)
    model.fit(X, y, epochs=2, verbose=0)
    model.save(tmp_path / "m")
    loaded = mq.load(tmp_path / "m")
    assert list(loaded.classes_) == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_optimizer_state_resumes_training_exactly(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.random((48, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    straight = mq.models.lenet5(seed=7)
    straight.fit(X, y, epochs=3, batch_size=10, verbose=0)

    first = mq.models.lenet5(seed=7)
    first.fit(X, y, epochs=1, batch_size=10, verbose=0)
    first.save(tmp_path / "ckpt", include_optimizer=True)
    resumed = mq.load(tmp_path / "ckpt")
    assert resumed.epochs_trained == 1 and resumed.optimizer.iterations == 5
    resumed.fit(X, y, epochs=3, batch_size=10, verbose=0, initial_epoch=resumed.epochs_trained)
    np.testing.assert_array_equal(resumed.get_flat_parameters(), straight.get_flat_parameters())


def test_interrupted_save_keeps_the_old_file(trained, tmp_path, monkeypatch):
    model, X, _ = trained
    path = tmp_path / "model.maq"
    model.save(path)
    before = path.read_bytes()
    model.layers[0].weight[...] = 0

    def crash(*args):
        raise KeyboardInterrupt("power cut between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.maq"]   # no temporary file left
    assert not np.all(mq.load(path).layers[0].weight == 0)


def test_saved_file_needs_no_pickle(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "m", include_optimizer=True)
    assert set(members(tmp_path / "m"))   # np.load(allow_pickle=False) read every member


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[: len(b) // 2], "not a maqueta model file"),
    (lambda b: b[:-30], "not a maqueta model file"),
    (lambda b: b"hello, I am not a model", "not a maqueta model file"),
    (lambda b: b"", "not a maqueta model file"),
])
def test_truncated_or_foreign_files(trained, tmp_path, damage, message):
    model, _, _ = trained
    path = tmp_path / "m"
    model.save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelFileError, match=message):
        mq.load(path)


def test_flipped_byte_is_caught(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "m"
    model.save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("params/7.weight.npy")
    at = info.header_offset + 30 + len(info.filename) + 200   # inside the member's data
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupted"):
        mq.load(path)


def edit(arrays, change):
    arrays = dict(arrays)
    change(arrays)
    return arrays


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("params/7.weight.npy"), r"missing \['params/7.weight.npy'\]"),
    (lambda a: a.__setitem__("params/99.weight.npy", np.zeros(3, np.float32)), "unexpected"),
    (lambda a: a.__setitem__("params/0.bias.npy", np.zeros(7, np.float32)), r"has shape \(7,\), expected \(6,\)"),
    (lambda a: a.__setitem__("params/0.bias.npy", np.zeros(6, np.float64)), "has dtype float64, expected float32"),
    (lambda a: a.__setitem__("params/0.bias.npy", np.array([object()] * 6)), "holds Python objects"),
    (lambda a: a.pop("meta.npy"), "no meta.npy"),
    (lambda a: a.__setitem__("meta.npy", np.frombuffer(b"{not json", np.uint8)), "not valid JSON"),
    (lambda a: a.__setitem__("classes.npy", np.arange(3)), "the model has 10 outputs"),
])
def test_inconsistent_members(trained, tmp_path, change, message):
    model, _, _ = trained
    model.save(tmp_path / "good")
    write(tmp_path / "bad", edit(members(tmp_path / "good"), change))
    with pytest.raises(ModelFileError, match=message):
        mq.load(tmp_path / "bad")


@pytest.mark.parametrize("change,message", [
    (lambda m: m["layers"][1].__setitem__("class_name", "Lambda"), "unknown type 'Lambda'"),
    (lambda m: m["layers"][0]["config"].__setitem__("kernel_size", [-1, 5]), "architecture in meta.npy is invalid"),
    (lambda m: m["layers"][0]["config"].__setitem__("evil", "__import__('os')"), "architecture in meta.npy is invalid"),
    (lambda m: m.__setitem__("format", "something-else"), "not a maqueta model file"),
    (lambda m: m.__setitem__("version", 99), "format version 99"),
    (lambda m: m.__setitem__("dtype", "int8"), "architecture in meta.npy is invalid"),
    (lambda m: m.pop("layers"), "architecture in meta.npy is invalid"),
])
def test_invalid_architecture(trained, tmp_path, change, message):
    model, _, _ = trained
    model.save(tmp_path / "good")
    arrays = members(tmp_path / "good")
    meta = meta_of(arrays)
    change(meta)
    write(tmp_path / "bad", with_meta(arrays, meta))
    with pytest.raises(ModelFileError, match=message):
        mq.load(tmp_path / "bad")


def test_invalid_optimizer_state(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "good", include_optimizer=True)
    arrays = members(tmp_path / "good")
    meta = meta_of(arrays)
    meta["optimizer"]["class_name"] = "Lion"
    write(tmp_path / "bad", with_meta(arrays, meta))
    with pytest.raises(ModelFileError, match="unknown optimizer 'Lion'"):
        mq.load(tmp_path / "bad")
    meta["optimizer"]["class_name"] = "Adam"
    meta["training"]["shuffle_rng"] = {"bit_generator": "PCG64", "state": "garbage"}
    write(tmp_path / "bad", with_meta(arrays, meta))
    with pytest.raises(ModelFileError, match="training state"):
        mq.load(tmp_path / "bad")


def test_missing_file_is_a_plain_file_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        mq.load(tmp_path / "nope.maq")


def test_mixed_object_labels_refuse_to_save(tmp_path):
    model = mq.Sequential([mq.Dense(2, 2)])
    model.classes_ = np.array([1, "a"], dtype=object)
    with pytest.raises(TypeError, match="mixed types cannot be saved"):
        model.save(tmp_path / "m")


def test_files_written_by_earlier_versions_still_load():
    """tests/data/model_main_b8fe319.maq was saved (with its Adam state and string classes) by
    maqueta at commit b8fe319, before the layer protocol; it must predict and resume as it did."""
    data = Path(__file__).parent / "data"
    model = mq.load(data / "model_main_b8fe319.maq")
    assert model.metadata == {"written_by": "maqueta main b8fe319"} and list(model.classes_) == ["cat", "dog", "emu"]
    inputs = np.load(data / "model_main_b8fe319_inputs.npy")
    np.testing.assert_array_equal(model.predict_proba(inputs), np.load(data / "model_main_b8fe319_proba.npy"))
    rng = np.random.default_rng(0)   # the data it was trained on, drawn again
    X = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = np.array(["cat", "dog", "emu"])[rng.integers(0, 3, 40)]
    model.fit(X, y, epochs=3, initial_epoch=model.epochs_trained, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.get_flat_parameters(), np.load(data / "model_main_b8fe319_after_epoch3.npy"))
