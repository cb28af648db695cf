"""IDX parsing, the search order, downloads with checksums, and preprocessing. No network: files
are written here, downloads come from file:// URLs, and real data is read where it is installed."""
from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from maqueta import datasets
from maqueta.datasets import DatasetNotFoundError, IDXError
from digits import mnist_test_dir


def idx_bytes(array, type_code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=True, type_code=0x08):
    data = idx_bytes(array, type_code)
    Path(path).write_bytes(gzip.compress(data) if gz else data)
    return Path(path)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real cache, no $MAQUETA_DATA, no system folders, no shipped files, no downloads."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAQUETA_DATA", raising=False)
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    monkeypatch.setitem(datasets.DATASETS["fashion-mnist"], "system_dirs", [str(tmp_path / "system")])
    monkeypatch.setitem(datasets.DATASETS["mnist"], "package_dirs", [str(tmp_path / "shipped")])
    return tmp_path


@pytest.fixture
def offline_with_shipped_files(tmp_path, monkeypatch):
    """As a fresh machine with no network: no cache, no $MAQUETA_DATA, only the package's own files."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAQUETA_DATA", raising=False)
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    return tmp_path


def make_split(folder, split, n=5, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    stem_images, stem_labels = datasets._SPLIT_FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (stem_images + suffix), images, gz)
    write_idx(folder / (stem_labels + suffix), labels, gz)
    return images, labels


# ------------------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("array,code", [
    (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
    (np.arange(-5, 5, dtype=np.int8), 0x09),
    (np.arange(6, dtype=np.int16).reshape(2, 3) * 1000, 0x0B),
    (np.arange(4, dtype=np.int32) * 100000, 0x0C),
    (np.linspace(0, 1, 5).astype(np.float32), 0x0D),
    (np.linspace(0, 1, 5), 0x0E),
])
def test_read_good_files(tmp_path, array, code, gz):
    out = datasets.read_idx(write_idx(tmp_path / "f", array, gz, code))
    np.testing.assert_array_equal(out, array)
    assert out.shape == array.shape and out.dtype == array.dtype.newbyteorder("=")


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b + b"\0", "longer than declared"),
    (lambda b: b"\x01\x00" + b[2:], "bad magic number 0x01000803"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown element type 0x07"),
    (lambda b: b[:3] + b"\x00" + b[4:], "rank 0"),
    (lambda b: b[:4] + b"\0\0\0\0" + b[8:], "empty dimension"),
    (lambda b: b[:2], "too short"),
], ids=["short-by-one", "header-only", "extra-byte", "magic", "type", "rank", "empty", "tiny"])
@pytest.mark.parametrize("gz", [True, False])
def test_bad_files_name_the_file_and_the_problem(tmp_path, mutate, message, gz):
    raw = mutate(idx_bytes(np.zeros((3, 4, 4), np.uint8)))
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(IDXError, match=message) as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IDXError, match="gzip stream is truncated or corrupted"):
        datasets.read_idx(path)


# ------------------------------------------------------------------------------------------ search
def test_search_order(isolated, monkeypatch):
    tmp = isolated
    explicit = make_split(tmp / "explicit", "test", seed=1)
    env = make_split(tmp / "env" / "fashion-mnist", "test", seed=2)
    cache = make_split(tmp / "home" / ".cache" / "maqueta" / "fashion-mnist", "test", seed=3)
    system = make_split(tmp / "system", "test", seed=4, gz=False)
    monkeypatch.setenv("MAQUETA_DATA", str(tmp / "env"))

    def labels(**kw):
        return datasets.load_fashion_mnist("test", **kw)[1]

    np.testing.assert_array_equal(labels(data_dir=tmp / "explicit"), explicit[1])
    np.testing.assert_array_equal(labels(), env[1])
    monkeypatch.delenv("MAQUETA_DATA")
    np.testing.assert_array_equal(labels(), cache[1])
    for f in (tmp / "home" / ".cache" / "maqueta" / "fashion-mnist").iterdir():
        f.unlink()
    images, labels_ = datasets.load_fashion_mnist("test")
    np.testing.assert_array_equal(labels_, system[1])   # raw (not gzipped) files work too
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.uint8 and labels_.dtype == np.int64


def test_missing_files_say_what_and_where(isolated):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_mnist("train", data_dir=isolated / "nowhere")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert str(isolated / "nowhere") in message and ".cache/maqueta/mnist" in message
    assert "Downloading is off" in message and "ossci-datasets" in message


def test_mismatched_images_and_labels(isolated):
    folder = isolated / "d"
    make_split(folder, "test", n=5)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="expected 5 labels"):
        datasets.load_mnist("test", data_dir=folder)


def test_split_must_be_known(isolated):
    with pytest.raises(ValueError, match="split must be"):
        datasets.load_mnist("validation", data_dir=isolated)


# ------------------------------------------------------------------------------------------ downloads
def test_download_is_checked_against_md5(isolated, monkeypatch):
    source = isolated / "mirror"
    images, labels = make_split(source, "test", n=7)
    md5 = {p.name[:-3]: hashlib.md5(p.read_bytes()).hexdigest() for p in source.iterdir()}
    monkeypatch.delenv("MAQUETA_OFFLINE")
    monkeypatch.setitem(datasets.DATASETS["mnist"], "mirrors", ["file:///nonexistent/", source.as_uri() + "/"])
    monkeypatch.setitem(datasets.DATASETS["mnist"], "md5", {**datasets.DATASETS["mnist"]["md5"], **md5})
    got_images, got_labels = datasets.load_mnist("test")
    np.testing.assert_array_equal(got_labels, labels)
    cached = isolated / "home" / ".cache" / "maqueta" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert cached.read_bytes() == (source / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_download_with_wrong_md5_is_deleted(isolated, monkeypatch):
    source = isolated / "mirror"
    make_split(source, "test")
    monkeypatch.delenv("MAQUETA_OFFLINE")
    monkeypatch.setitem(datasets.DATASETS["mnist"], "mirrors", [source.as_uri() + "/"])
    with pytest.raises(DatasetNotFoundError, match="does not match the published"):
        datasets.load_mnist("test")
    cache = isolated / "home" / ".cache" / "maqueta" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []
    dest = isolated / "one.gz"
    with pytest.raises(IDXError, match="MD5 .* does not match"):
        datasets.download((source / "t10k-labels-idx1-ubyte.gz").as_uri(), dest, "0" * 32)
    assert not dest.exists() and not dest.with_name("one.gz.part").exists()


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.skipif(mnist_test_dir() is None, reason="the MNIST test files are not in shared/data")
def test_real_mnist_test_set():
    images, labels = datasets.load_mnist("test", data_dir=mnist_test_dir(), download=False)
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.max() == 255 and images.min() == 0


# ------------------------------------------------------------------------------------------ shipped MNIST
SHIPPED = Path(datasets.__file__).resolve().parent / "data" / "mnist"


def test_the_installed_package_ships_the_mnist_test_files():
    """Runs against the installed copy: fails when the wheel leaves the package data out."""
    stems = datasets._SPLIT_FILES["test"]
    md5 = {stem: hashlib.md5((SHIPPED / (stem + ".gz")).read_bytes()).hexdigest() for stem in stems}
    assert md5 == {stem: datasets.DATASETS["mnist"]["md5"][stem] for stem in stems}
    note = (SHIPPED / "README.md").read_text()
    assert "CC BY-SA 3.0" in note and all(m in note for m in md5.values())


def test_load_mnist_test_finds_the_shipped_files_when_no_other_copy_is(offline_with_shipped_files):
    images, labels, paths = datasets.load_mnist("test", return_paths=True)
    assert all(Path(p).parent == SHIPPED for p in paths) and datasets.shipped_with_maqueta(paths[0])
    assert images.shape == (10000, 1, 28, 28) and labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    with pytest.raises(DatasetNotFoundError, match=str(SHIPPED)):   # the training split is not shipped
        datasets.load_mnist("train")


def test_any_other_copy_wins_over_the_shipped_files(offline_with_shipped_files):
    _, mine = make_split(offline_with_shipped_files / "home" / ".cache" / "maqueta" / "mnist", "test", n=5)
    labels, paths = datasets.load_mnist("test", return_paths=True)[1:]
    np.testing.assert_array_equal(labels, mine)
    assert not datasets.shipped_with_maqueta(paths[0])


def test_datasets_is_reachable_from_the_package():
    import maqueta as mq
    assert mq.datasets is datasets and "datasets" in dir(mq)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        mq.nonexistent


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION / "train-labels-idx1-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist(monkeypatch):
    monkeypatch.setenv("MAQUETA_OFFLINE", "1")
    images, labels = datasets.load_fashion_mnist("train")
    assert images.shape == (60000, 1, 28, 28) and np.bincount(labels).tolist() == [6000] * 10
    # Debian recompressed the files; the labels' content is byte-identical to upstream's
    raw = gzip.open(FASHION / "train-labels-idx1-ubyte.gz").read()
    assert hashlib.md5(raw).hexdigest() == "9018921c3c673c538a1fc5bad174d6f9"
    assert datasets.load_fashion_mnist("test")[0].shape == (10000, 1, 28, 28)


def test_digits_fallback_ships_with_scikit_learn():
    pytest.importorskip("sklearn")
    train_images, train_labels = datasets.load_digits("train")
    test_images, test_labels = datasets.load_digits("test")
    assert train_images.shape[1:] == (1, 28, 28) and train_images.dtype == np.uint8
    assert len(train_labels) + len(test_labels) == 1797 and set(train_labels) == set(range(10))


# ------------------------------------------------------------------------------------------ preprocessing
def test_scale_and_pad():
    images = np.full((2, 1, 28, 28), 255, np.uint8)
    x = datasets.scale(images)
    assert x.dtype == np.float32 and x.max() == 1.0
    padded = datasets.pad(x, 32)
    assert padded.shape == (2, 1, 32, 32)
    assert padded[:, :, :2].sum() == 0 and padded[:, :, :, 30:].sum() == 0 and padded[:, :, 2:30, 2:30].min() == 1
    with pytest.raises(ValueError, match="do not fit"):
        datasets.pad(x, 20)


def test_prepare_standardizes_in_one_output_array():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 1, 28, 28), dtype=np.uint8)
    unit = datasets.prepare(images, chunk=7)
    np.testing.assert_allclose(unit, datasets.pad(datasets.scale(images)), rtol=1e-6)
    mean, std = float(unit.mean()), float(unit.std())
    z = datasets.prepare(images, mean=mean, std=std, chunk=13, dtype=np.float64)
    assert z.dtype == np.float64
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6
    raw = datasets.prepare(images, pixels="raw", resize="bilinear")
    assert raw.shape == (100, 1, 32, 32) and raw.max() > 200


def test_bilinear_resize():
    flat = np.full((1, 1, 4, 4), 3.0)
    np.testing.assert_allclose(datasets.resize_bilinear(flat, 7), 3.0)
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(datasets.resize_bilinear(x, (4, 4)), x)
    up = datasets.resize_bilinear(np.array([[[[0.0, 2.0]]]]), (1, 4))
    np.testing.assert_allclose(up, [[[[0.0, 0.5, 1.5, 2.0]]]])   # pixel centres at 0.125, 0.375, ...


def test_gzip_bomb_is_refused_from_its_header(tmp_path):
    """600 KB of gzip that inflates to 1.2 GB: the header's size is checked before any data is read."""
    import gzip
    import tracemalloc
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + np.array([1_500_000, 28, 28], ">u4").tobytes()
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        zeros = bytes(1 << 24)
        for _ in range(72):
            f.write(zeros)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(datasets.IDXError, match="more than the 78400000 allowed"):
            datasets.read_idx(path, shape=(None, 28, 28), max_bytes=100_000 * 28 * 28)
        with pytest.raises(datasets.IDXError, match=r"declares shape \(1500000, 28, 28\), expected \(None, 32, 32\)"):
            datasets.read_idx(path, shape=(None, 32, 32))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 << 20


def test_dimensions_whose_product_wraps_are_refused(tmp_path):
    path = tmp_path / "wrap"
    path.write_bytes(bytes([0, 0, 8, 4]) + np.array([65536, 65536, 65536, 65536], ">u4").tobytes())   # 2**64
    with pytest.raises(datasets.IDXError, match="18446744073709551616 bytes"):
        datasets.read_idx(path)


def test_unreadable_folder_is_skipped_in_the_search(tmp_path, monkeypatch):
    from pathlib import Path
    real = Path.is_file

    def is_file(self):
        if "locked" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    assert datasets._find("t10k-images-idx3-ubyte", [tmp_path / "locked", tmp_path]) is None
