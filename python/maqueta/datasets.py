"""Datasets: MNIST and Fashion-MNIST from their IDX files, CIFAR-10 (its reader is cifar10.py),
and preprocessing.

Files are looked for, in order, in ``data_dir``, in ``$MAQUETA_DATA``, in
``~/.cache/maqueta/<dataset>/``, for Fashion-MNIST in ``/usr/share/datasets/fashion-mnist/``
(Debian's ``dataset-fashion-mnist`` package) and, for MNIST's test split, in the copy shipped inside
this package (``maqueta/data/mnist/``, 1.6 MB; see its README for source and license); in each
folder both ``<folder>/<dataset>/`` and ``<folder>/`` itself, gzipped or not. Missing files are
downloaded from the datasets' public mirrors into the cache and checked against their published
MD5 checksums, unless ``download=False`` or ``$MAQUETA_OFFLINE`` is set. Every file is validated
as it is read: magic number, rank, dimensions and length.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "IDXError", "DatasetNotFoundError", "read_idx", "load_mnist", "load_fashion_mnist", "load_digits",
    "load_cifar10", "CIFAR10_CLASSES",
    "shipped_with_maqueta",
    "scale", "pad", "resize_bilinear", "standardize", "prepare",
]

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

DATASETS = {
    "mnist": {
        "title": "MNIST",
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        # the published checksums of the .gz files (those torchvision checks)
        "md5": {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
        "system_dirs": [],
        # The 10,000-image test split ships inside the package, so MNIST works with no network.
        "package_dirs": [Path(__file__).resolve().parent / "data" / "mnist"],
    },
    "fashion-mnist": {
        "title": "Fashion-MNIST",
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
        "system_dirs": ["/usr/share/datasets/fashion-mnist"],
        "package_dirs": [],
    },
    "cifar-10": {   # the binary version, one archive (read by cifar10.py)
        "title": "CIFAR-10",
        "mirrors": ["https://www.cs.toronto.edu/~kriz/"],
        "md5": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        "system_dirs": [],
    },
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class IDXError(ValueError):
    """An IDX file that is truncated, corrupted or not IDX at all."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are in none of the searched folders and could not be downloaded."""


# ------------------------------------------------------------------------------------------ IDX
def read_idx(path, shape=None, max_bytes=1 << 31):
    """Read an IDX file (gzip-compressed or raw) into an ndarray of its declared type and shape.

    The header is read first and checked before anything else is read: against ``shape`` when
    given (a tuple with None for free sizes, e.g. (None, 28, 28)) and against ``max_bytes``; the
    data then streams into an array of exactly the declared size, so a small gzip file cannot
    make the reader decompress more than its header promised. Raises IDXError naming the file
    and what is wrong: bad magic number, unknown element type, a rank or dimension of 0, an
    unexpected shape, or a length that differs from what the header declares."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw) if gz else raw) as f:
                return _read_idx_stream(f, path, shape, max_bytes)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise IDXError(f"{path}: the gzip stream is truncated or corrupted ({error})") from None


def _read_idx_stream(f, path, shape, max_bytes):
    magic = f.read(4)
    if len(magic) < 4:
        raise IDXError(f"{path}: {len(magic)} bytes is too short for an IDX header")
    if magic[0] != 0 or magic[1] != 0:
        raise IDXError(f"{path}: bad magic number 0x{magic.hex()} (IDX files start with two zero bytes)")
    if magic[2] not in _IDX_TYPES:
        raise IDXError(f"{path}: unknown element type 0x{magic[2]:02x} in the magic number 0x{magic.hex()}")
    dtype, rank = _IDX_TYPES[magic[2]], magic[3]
    if rank == 0:
        raise IDXError(f"{path}: the header declares rank 0")
    raw_dims = f.read(4 * rank)
    if len(raw_dims) < 4 * rank:
        raise IDXError(f"{path}: truncated header ({4 + len(raw_dims)} bytes for rank {rank})")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
    if 0 in dims:
        raise IDXError(f"{path}: the header declares an empty dimension {dims}")
    if shape is not None and (len(shape) != rank or any(s is not None and s != d for s, d in zip(shape, dims))):
        raise IDXError(f"{path}: the header declares shape {dims}, expected {tuple(shape)}")
    nbytes = math.prod(dims) * dtype.itemsize   # Python ints: no wrap-around
    if nbytes > max_bytes:
        raise IDXError(f"{path}: the header declares {nbytes} bytes of data, more than the {max_bytes} allowed")
    out = np.empty(nbytes, np.uint8)
    view = memoryview(out)
    got = 0
    while got < nbytes:
        n = f.readinto(view[got:got + (1 << 22)])
        if not n:
            break
        got += n
    extra = len(f.read(1))
    if got != nbytes or extra:
        expected = 4 + 4 * rank + nbytes
        raise IDXError(f"{path}: {'fewer' if got < nbytes else 'more'} bytes than its header ({dims}, {dtype.name}) "
                       f"needs ({expected} in all): the file is {'truncated' if got < nbytes else 'longer than declared'}")
    return out.view(dtype).reshape(dims).astype(dtype.newbyteorder("="))


# ------------------------------------------------------------------------------------------ files
def _search_dirs(name, data_dir):
    dirs = []
    for base in (data_dir, os.environ.get("MAQUETA_DATA")):
        if base:
            dirs += [Path(base) / name, Path(base)]
    dirs.append(_cache_dir(name))
    dirs += [Path(d) for d in DATASETS[name]["system_dirs"]]
    # Last, so that a copy the user put anywhere else wins; still before any download: the shipped
    # files are byte-identical to the published ones (tests/test_datasets.py checks their MD5).
    dirs += [Path(d) for d in DATASETS[name].get("package_dirs", [])]
    return dirs


def shipped_with_maqueta(path):
    """Whether path is one of the dataset files shipped inside the maqueta package."""
    path = Path(path).resolve()
    return any(path.parent == Path(d).resolve() for info in DATASETS.values() for d in info.get("package_dirs", []))


def _cache_dir(name):
    return Path(os.path.expanduser("~")) / ".cache" / "maqueta" / name


def _find(stem, dirs):
    for folder in dirs:
        for candidate in (folder / (stem + ".gz"), folder / stem):
            try:
                if candidate.is_file():
                    return candidate
            except OSError:   # a folder we may not read (PermissionError) is skipped, not fatal
                continue
    return None


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, dest, md5, timeout=15):
    """Fetch url into dest (via a temporary file), then check its MD5: a mismatch deletes it and
    raises IDXError. Any scheme urllib opens works (file:// in tests)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
        got = _md5(tmp)
        if got != md5:
            raise IDXError(f"{url}: MD5 {got} does not match the published {md5}; the download was deleted")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _locate(name, split, data_dir, download_missing):
    """Paths of the (images, labels) files of a split, downloading them when allowed."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    info = DATASETS[name]
    dirs = _search_dirs(name, data_dir)
    found = {stem: _find(stem, dirs) for stem in _SPLIT_FILES[split]}
    missing = [stem for stem, path in found.items() if path is None]
    failures = []
    if missing and download_missing and not os.environ.get("MAQUETA_OFFLINE"):
        for stem in list(missing):
            for mirror in info["mirrors"]:
                try:
                    found[stem] = download(mirror + stem + ".gz", _cache_dir(name) / (stem + ".gz"), info["md5"][stem])
                    missing.remove(stem)
                    break
                except (urllib.error.URLError, OSError, IDXError, ValueError) as error:
                    failures.append(f"{mirror}{stem}.gz: {getattr(error, 'reason', error)}")
    if missing:
        where = "\n  ".join(str(d) for d in dirs)
        tried = ("\nDownloading failed:\n  " + "\n  ".join(failures)) if failures else \
            ("\nDownloading is off (download=False or $MAQUETA_OFFLINE)." if download_missing is False
             or os.environ.get("MAQUETA_OFFLINE") else "")
        raise DatasetNotFoundError(
            f"{info['title']} {split} files not found: {', '.join(s + '.gz' for s in missing)}.\n"
            f"Looked in:\n  {where}{tried}\n"
            f"Put the files (from {info['mirrors'][0]}) in one of those folders, or pass data_dir.")
    return found[_SPLIT_FILES[split][0]], found[_SPLIT_FILES[split][1]]


def _load(name, split, data_dir, download_missing):
    images_path, labels_path = _locate(name, split, data_dir, download_missing)
    # MNIST-style sets hold 28 x 28 images; no split has 100,000 of them
    images = read_idx(images_path, shape=(None, 28, 28), max_bytes=100_000 * 28 * 28)
    labels = read_idx(labels_path, shape=(None,), max_bytes=8 * len(images))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IDXError(f"{labels_path}: expected {len(images)} labels to match {images_path}, got shape {labels.shape}")
    return images[:, None], labels.astype(np.int64), (images_path, labels_path)


def load_mnist(split="train", data_dir=None, download=True, return_paths=False):
    """MNIST: (images uint8 (N, 1, 28, 28), labels int64 (N,)); 60,000 train or 10,000 test.

    The test split always loads, even offline: its files ship inside the package."""
    images, labels, paths = _load("mnist", split, data_dir, download)
    return (images, labels, paths) if return_paths else (images, labels)


def load_fashion_mnist(split="train", data_dir=None, download=True, return_paths=False):
    """Fashion-MNIST: (images uint8 (N, 1, 28, 28), labels int64 (N,)); 60,000 train or 10,000 test."""
    images, labels, paths = _load("fashion-mnist", split, data_dir, download)
    return (images, labels, paths) if return_paths else (images, labels)


def load_cifar10(split="train", data_dir=None, download=True, return_paths=False):
    """CIFAR-10 from its binary archive: (images uint8 (N, 3, 32, 32), labels int64 (N,)); 50,000
    train or 10,000 test; label k is CIFAR10_CLASSES[k]. Same search order, checksum and
    $MAQUETA_OFFLINE as MNIST; an extracted cifar-10-batches-bin/ folder works too."""
    from .cifar10 import load_cifar10 as load   # here, not at the top: cifar10 uses this module's helpers
    return load(split, data_dir, download, return_paths)


def load_digits(split="train"):
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 0..16), upsampled to the
    MNIST layout: uint8 (N, 1, 28, 28) in 0..255. The last 20% form the test split. Needs
    scikit-learn (it ships the data, so this works offline)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DatasetNotFoundError("the digits fallback needs scikit-learn: pip install scikit-learn") from None
    digits = sklearn_digits()
    images = resize_bilinear(digits.images[:, None].astype(np.float64) / 16.0, (24, 24))
    images = pad(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8), 28)
    labels = digits.target.astype(np.int64)
    cut = int(len(images) * 0.8)
    if split == "train":
        return images[:cut], labels[:cut]
    if split == "test":
        return images[cut:], labels[cut:]
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# ------------------------------------------------------------------------------------------ preprocessing
def scale(images, dtype=np.float32):
    """uint8 pixels 0..255 -> floats in [0, 1]."""
    return (np.asarray(images, dtype=dtype) / dtype(255)).astype(dtype, copy=False)


def standardize(images, mean, std):
    """(images - mean) / std, in the images' dtype."""
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    out = np.asarray(images)
    return ((out - out.dtype.type(mean)) / out.dtype.type(std)).astype(out.dtype, copy=False)


def pad(images, size=32):
    """Zero-pad (N, C, H, W) images evenly to (N, C, size, size): MNIST's 28 -> LeNet-5's 32."""
    images = np.asarray(images)
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} do not fit in {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (0, 0), (top, size - h - top), (left, size - w - left)))


def resize_bilinear(images, size):
    """Bilinear resize of (N, C, H, W) images to (N, C, size[0], size[1]) with pixel-centre
    alignment (as PIL and OpenCV), computed in float64 and returned in the input's float dtype
    (uint8 input gives float64)."""
    images = np.asarray(images)
    out_h, out_w = (size, size) if np.isscalar(size) else size
    h, w = images.shape[-2:]
    x = images.astype(np.float64)

    def axis(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, fr = axis(h, out_h)
    c0, c1, fc = axis(w, out_w)
    rows = x[..., r0, :] * (1 - fr)[:, None] + x[..., r1, :] * fr[:, None]
    out = rows[..., c0] * (1 - fc) + rows[..., c1] * fc
    return out.astype(images.dtype) if images.dtype.kind == "f" else out


def prepare(images, size=32, resize="pad", pixels="unit", mean=None, std=None, dtype=np.float32, chunk=8192):
    """uint8 (N, C, H, W) images -> LeNet-5 inputs, float (N, C, size, size), in one output array
    filled chunk by chunk (peak memory: the input plus the output).

    resize: "pad" (zero border, as LeNet-5's 32x32 input around MNIST's 28x28) or "bilinear".
    pixels: "unit" scales 0..255 to [0, 1]; "raw" keeps 0..255 (the original notebook did).
    mean, std: when given, the result is standardized as (x - mean) / std.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if resize not in ("pad", "bilinear"):
        raise ValueError(f"resize must be 'pad' or 'bilinear', got {resize!r}")
    if pixels not in ("unit", "raw"):
        raise ValueError(f"pixels must be 'unit' or 'raw', got {pixels!r}")
    dtype = np.dtype(dtype)
    n, c, h, w = images.shape
    if resize == "pad" and (h > size or w > size):
        raise ValueError(f"images of {h}x{w} do not fit in {size}x{size}; use resize='bilinear'")
    out = np.zeros((n, c, size, size), dtype)
    factor = 1.0 if pixels == "raw" else 1.0 / 255.0
    top, left = (size - h) // 2, (size - w) // 2
    for start in range(0, n, chunk):
        part = images[start:start + chunk].astype(dtype) * dtype.type(factor)
        if resize == "pad":
            out[start:start + chunk, :, top:top + h, left:left + w] = part
        else:
            out[start:start + chunk] = resize_bilinear(part, (size, size))
        if mean is not None:
            block = out[start:start + chunk]
            block -= dtype.type(mean)
            block /= dtype.type(std)
    return out
