"""CIFAR-10's binary format: the record layout, archives read without extracting, the refusals
(links, wrong sizes, duplicates, strangers), the search order and downloads. No network: the files
are written here, small ones with a record count the loader is told, and one of the full size."""
from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest

from maqueta import cifar10, datasets
from maqueta.cifar10 import CIFARError
from maqueta.datasets import DatasetNotFoundError


def records(n, seed=0):
    """(bytes of n records, images (n, 3, 32, 32), labels (n,))."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    raw = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)   # label, then R, G, B planes
    return raw.tobytes(), images, labels.astype(np.int64)


def write_archive(path, members):
    """A tar.gz of members: {name: bytes, or ("symlink"|"hardlink", target)}, in the given order."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def split_members(split, n, seed=0):
    """{member name: bytes} of a split's files of n records each, and the expected arrays."""
    members, images, labels = {}, [], []
    for i, name in enumerate(cifar10.SPLIT_FILES[split]):
        data, im, lab = records(n, seed + i)
        members[f"cifar-10-batches-bin/{name}"] = data
        images.append(im)
        labels.append(lab)
    return members, np.concatenate(images), np.concatenate(labels)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real cache, no $MAQUETA_DATA, no downloads, and batch files of 3 records."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAQUETA_DATA", raising=False)
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 3)
    return tmp_path


# ------------------------------------------------------------------------------------------ records
def test_record_layout_is_label_then_red_green_blue_planes(tmp_path):
    raw = bytearray(2 * 3073)
    raw[0], raw[3073] = 7, 2
    raw[1 + 0 * 1024 + 5] = 11             # image 0: red plane, row 0, column 5
    raw[1 + 1 * 1024 + 32 * 2 + 3] = 22    # image 0: green plane, row 2, column 3
    raw[3073 + 1 + 2 * 1024 + 32 * 31 + 31] = 33   # image 1: blue plane, last pixel
    (tmp_path / "b.bin").write_bytes(bytes(raw))
    images, labels = cifar10.read_cifar_batch(tmp_path / "b.bin", records=2)
    assert images.dtype == np.uint8 and images.shape == (2, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == [7, 2]
    assert images[0, 0, 0, 5] == 11 and images[0, 1, 2, 3] == 22 and images[1, 2, 31, 31] == 33
    assert int(images.sum()) == 66


@pytest.mark.parametrize("cut,message", [(-1, "holds 9218 bytes"), (1, "holds 9220 bytes"), (-3073, "holds 6146 bytes")])
def test_batch_files_of_the_wrong_size_are_refused_before_reading(tmp_path, cut, message):
    data = records(3)[0]
    path = tmp_path / "b.bin"
    path.write_bytes(data[:cut] if cut < 0 else data + bytes(cut))
    with pytest.raises(CIFARError, match=f"{message}; a CIFAR-10 batch of 3 records is exactly 9219"):
        cifar10.read_cifar_batch(path, records=3)


def test_labels_above_nine_are_refused(tmp_path):
    data = bytearray(records(3)[0])
    data[3073] = 10
    (tmp_path / "b.bin").write_bytes(bytes(data))
    with pytest.raises(CIFARError, match="record 1 has label 10"):
        cifar10.read_cifar_batch(tmp_path / "b.bin", records=3)


# ------------------------------------------------------------------------------------------ archives
def test_train_split_from_the_archive_in_batch_order(isolated):
    members, images, labels = split_members("train", 3)
    order = ["cifar-10-batches-bin/batches.meta.txt", *reversed(list(members)), "cifar-10-batches-bin/readme.html"]
    everything = {**members, order[0]: b"airplane\n", order[-1]: b"<html>"}
    (isolated / "d").mkdir()
    write_archive(isolated / "d" / "cifar-10-binary.tar.gz", {name: everything[name] for name in order})
    got_images, got_labels = datasets.load_cifar10("train", data_dir=isolated / "d")
    np.testing.assert_array_equal(got_images, images)   # data_batch_1 first, whatever the archive's order
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.shape == (15, 3, 32, 32) and got_labels.dtype == np.int64
    assert datasets.CIFAR10_CLASSES[0] == "airplane" and len(datasets.CIFAR10_CLASSES) == 10


def test_full_size_test_batch_from_an_archive(tmp_path, monkeypatch):
    """The official structure at its real size: 10,000 records, 30,730,000 bytes."""
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    data = bytearray(10_000 * 3073)
    data[0::3073] = bytes(i % 10 for i in range(10_000))
    data[1 + 3073 * 9999 + 3071] = 200   # last pixel of the last image
    write_archive(tmp_path / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/test_batch.bin": bytes(data)})
    images, labels = datasets.load_cifar10("test", data_dir=tmp_path, download=False)
    assert images.shape == (10_000, 3, 32, 32) and labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10 and images[-1, 2, 31, 31] == 200 and int(images.sum()) == 200


@pytest.mark.parametrize("change,message", [
    (lambda m: {**m, "cifar-10-batches-bin/test_batch.bin": ("symlink", "/etc/passwd")}, "is a link or a special file"),
    (lambda m: {**m, "cifar-10-batches-bin/test_batch.bin": ("hardlink", "readme")}, "is a link or a special file"),
    (lambda m: {"cifar-10-batches-bin/test_batch.bin": m["cifar-10-batches-bin/test_batch.bin"][:-1]},
     "holds 9218 bytes"),
    (lambda m: {"cifar-10-batches-bin/test_batch.bin": b"x" * 100_000}, "holds 100000 bytes"),
    (lambda m: {"other/test_batch.bin": m["cifar-10-batches-bin/test_batch.bin"]}, "lacks cifar-10-batches-bin/test"),
    (lambda m: {**m, "./cifar-10-batches-bin/test_batch.bin": m["cifar-10-batches-bin/test_batch.bin"]},
     "appears twice"),
    (lambda m: {**m, **{f"junk{i}": b"" for i in range(70)}}, "number 65"),
    (lambda m: {"huge.bin": bytes(40_000_000), **m}, "'huge.bin' .40000000 bytes"),
], ids=["symlink", "hardlink", "short", "long", "missing", "duplicate", "many-members", "big-member"])
def test_archives_that_are_not_cifar_are_refused(isolated, change, message):
    members, _, _ = split_members("test", 3)
    path = write_archive(isolated / "cifar-10-binary.tar.gz", change(members))
    with pytest.raises(CIFARError, match=message) as info:
        datasets.load_cifar10("test", data_dir=isolated)
    assert str(path) in str(info.value)


def test_corrupted_or_foreign_archives(isolated):
    members, _, _ = split_members("test", 3)
    path = write_archive(isolated / "cifar-10-binary.tar.gz", members)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CIFARError, match="not a readable tar.gz archive, or a truncated one"):
        datasets.load_cifar10("test", data_dir=isolated)
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(CIFARError, match="not a readable tar.gz"):
        datasets.load_cifar10("test", data_dir=isolated)


# ------------------------------------------------------------------------------------------ search and downloads
def test_extracted_folder_and_search_order(isolated, monkeypatch):
    def extracted(folder, seed):
        folder.mkdir(parents=True)
        members, images, labels = split_members("test", 3, seed)
        (folder / "test_batch.bin").write_bytes(members["cifar-10-batches-bin/test_batch.bin"])
        return labels

    explicit = extracted(isolated / "explicit" / "cifar-10-batches-bin", 1)
    bare = extracted(isolated / "bare", 2)   # data_dir pointing at the batch files themselves
    env = extracted(isolated / "env" / "cifar-10" / "cifar-10-batches-bin", 3)
    members, _, cache = split_members("test", 3, 4)
    (isolated / "home" / ".cache" / "maqueta" / "cifar-10").mkdir(parents=True)
    write_archive(isolated / "home" / ".cache" / "maqueta" / "cifar-10" / "cifar-10-binary.tar.gz", members)
    monkeypatch.setenv("MAQUETA_DATA", str(isolated / "env"))
    np.testing.assert_array_equal(datasets.load_cifar10("test", data_dir=isolated / "explicit")[1], explicit)
    np.testing.assert_array_equal(datasets.load_cifar10("test", data_dir=isolated / "bare")[1], bare)
    np.testing.assert_array_equal(datasets.load_cifar10("test")[1], env)
    monkeypatch.delenv("MAQUETA_DATA")
    np.testing.assert_array_equal(datasets.load_cifar10("test")[1], cache)
    with pytest.raises(CIFARError, match="holds 9219 bytes; a CIFAR-10 batch of 10000"):
        monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 10_000)   # the loader's own count: small files refused
        datasets.load_cifar10("test", data_dir=isolated / "bare")


def test_missing_files_say_what_and_where(isolated):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_cifar10("train", data_dir=isolated / "nowhere")
    message = str(info.value)
    assert "cifar-10-binary.tar.gz" in message and "cifar-10-batches-bin/" in message
    assert str(isolated / "nowhere") in message and ".cache/maqueta/cifar-10" in message
    assert "Downloading is off" in message and "https://www.cs.toronto.edu/~kriz/" in message
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        datasets.load_cifar10("validation")


def test_download_is_checked_against_md5(isolated, monkeypatch):
    members, images, labels = split_members("test", 3)
    source = isolated / "mirror"
    source.mkdir()
    archive = write_archive(source / "cifar-10-binary.tar.gz", members)
    monkeypatch.delenv("MAQUETA_OFFLINE")
    monkeypatch.setitem(datasets.DATASETS["cifar-10"], "mirrors", [source.as_uri() + "/"])
    with pytest.raises(DatasetNotFoundError, match="does not match the published c32a1d4ab5d03f1284b67883e8d87530"):
        datasets.load_cifar10("test")
    cache = isolated / "home" / ".cache" / "maqueta" / "cifar-10"
    assert not (cache / "cifar-10-binary.tar.gz").exists()
    monkeypatch.setitem(datasets.DATASETS["cifar-10"], "md5",
                        {"cifar-10-binary.tar.gz": hashlib.md5(archive.read_bytes()).hexdigest()})
    got_images, got_labels = datasets.load_cifar10("test")
    np.testing.assert_array_equal(got_labels, labels)
    assert (cache / "cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()
