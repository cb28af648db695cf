"""CIFAR-10 from its official binary version, ``cifar-10-binary.tar.gz``, read without extracting.

The archive holds ``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin`` (the 50,000
training images) and ``test_batch.bin`` (10,000), each 10,000 records of 1 label byte (0..9) and
3,072 pixel bytes: the red, green and blue planes of a 32x32 image, rows top to bottom. The
loader looks, in the folders ``maqueta.datasets`` searches (``data_dir``, ``$MAQUETA_DATA``,
``~/.cache/maqueta/cifar-10/``), for the archive and then for an extracted
``cifar-10-batches-bin/`` folder, downloads the archive into the cache when allowed and checks it
against the published MD5. Members are read straight out of the gzip stream with ``tarfile``;
nothing is written to disk, links are never followed, and each file's size must be exactly
what its records need before a byte of it is read.
"""
from __future__ import annotations

import os
import tarfile
import urllib.error
import zlib
from pathlib import Path

import numpy as np

from . import datasets

__all__ = ["CLASSES", "CIFARError", "read_cifar_batch", "load_cifar10"]

ARCHIVE = "cifar-10-binary.tar.gz"   # its mirrors and published MD5 are in datasets.DATASETS["cifar-10"]
FOLDER = "cifar-10-batches-bin"
CLASSES = datasets.CIFAR10_CLASSES
RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000   # every batch file of the official archive; the loader accepts no other count
_MAX_MEMBERS = 64                          # the official archive has 8; skipping a member still inflates it
_MAX_MEMBER_BYTES = RECORDS_PER_FILE * RECORD_BYTES
SPLIT_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}


class CIFARError(ValueError):
    """A CIFAR-10 archive or batch file that is truncated, corrupted or not what it should be."""


def _read_records(f, records, where, images, labels):
    """Fill images (records, 3, 32, 32) uint8 and labels (records,) int64 from stream f, which
    holds exactly records * 3073 bytes (the caller checked its size)."""
    raw = np.empty((records, RECORD_BYTES), np.uint8)
    view = memoryview(raw).cast("B")
    got = 0
    while got < raw.nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise CIFARError(f"{where}: truncated after {got} of {raw.nbytes} bytes")
        got += n
    if raw[:, 0].max(initial=0) > 9:
        bad = int(np.argmax(raw[:, 0] > 9))
        raise CIFARError(f"{where}: record {bad} has label {raw[bad, 0]}; CIFAR-10 labels are 0..9")
    labels[...] = raw[:, 0]
    images[...] = raw[:, 1:].reshape(records, 3, 32, 32)


def _check_size(size, records, where):
    if size != records * RECORD_BYTES:
        raise CIFARError(f"{where} holds {size} bytes; a CIFAR-10 batch of {records} records is exactly "
                         f"{records * RECORD_BYTES} (1 label byte + 3072 pixel bytes each)")


def read_cifar_batch(path, records=RECORDS_PER_FILE):
    """One extracted batch file: (images uint8 (records, 3, 32, 32), labels int64 (records,)). Its
    size must be exactly records * 3073 bytes (the loader asks for the official 10,000)."""
    images, labels = np.empty((records, 3, 32, 32), np.uint8), np.empty(records, np.int64)
    _read_file(Path(path), records, images, labels)
    return images, labels


def _read_file(path, records, images, labels):
    _check_size(os.stat(path).st_size, records, str(path))
    with open(path, "rb") as f:
        _read_records(f, records, str(path), images, labels)


def _read_archive(path, names, records, images, labels):
    """Fill the slices of images and labels that belong to each of names (in that order) from the
    members cifar-10-batches-bin/<name> of the tar.gz at path, in one pass over its stream."""
    wanted = {f"{FOLDER}/{name}": i for i, name in enumerate(names)}
    seen = set()
    try:
        with tarfile.open(path, mode="r|gz") as tar:   # a stream: members in order, no seeking
            for count, member in enumerate(tar, 1):
                if count > _MAX_MEMBERS or member.size > _MAX_MEMBER_BYTES:
                    raise CIFARError(f"{path}: member {member.name!r} ({member.size} bytes, number {count}) is "
                                     f"not part of the CIFAR-10 binary archive, which holds 8 members of at most "
                                     f"{_MAX_MEMBER_BYTES} bytes")
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name not in wanted:
                    continue
                where = f"{path}: member {name}"
                if name in seen:
                    raise CIFARError(f"{where} appears twice in the archive")
                if not member.isreg():
                    raise CIFARError(f"{where} is a link or a special file, not a regular file; it is refused "
                                     f"(links are never followed)")
                _check_size(member.size, records, where)
                part = slice(wanted[name] * records, (wanted[name] + 1) * records)
                with tar.extractfile(member) as f:
                    _read_records(f, records, where, images[part], labels[part])
                seen.add(name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise CIFARError(f"{path}: not a readable tar.gz archive, or a truncated one ({error})") from None
    missing = [name for name in wanted if name not in seen]
    if missing:
        raise CIFARError(f"{path} lacks {', '.join(missing)}: not the CIFAR-10 binary archive")


def _has_batches(folder, names):
    try:
        return all((folder / name).is_file() for name in names)
    except OSError:   # a folder we may not read is skipped, not fatal
        return False


def _locate(data_dir, names, download_missing):
    """('archive', path) or ('folder', path) of the first place that holds the split's files."""
    dirs = datasets._search_dirs("cifar-10", data_dir)
    for folder in dirs:
        try:
            if (folder / ARCHIVE).is_file():
                return "archive", folder / ARCHIVE
        except OSError:
            continue
        for extracted in (folder / FOLDER, folder):
            if _has_batches(extracted, names):
                return "folder", extracted
    info = datasets.DATASETS["cifar-10"]
    offline = download_missing is False or bool(os.environ.get("MAQUETA_OFFLINE"))
    failures = []
    for mirror in [] if offline else info["mirrors"]:
        try:
            return "archive", datasets.download(mirror + ARCHIVE, datasets._cache_dir("cifar-10") / ARCHIVE,
                                                info["md5"][ARCHIVE], timeout=60)
        except (urllib.error.URLError, OSError, datasets.IDXError, ValueError) as error:
            failures.append(f"{mirror}{ARCHIVE}: {getattr(error, 'reason', error)}")
    where = "\n  ".join(str(d) for d in dirs)
    tried = ("\nDownloading failed:\n  " + "\n  ".join(failures)) if failures else \
        ("\nDownloading is off (download=False or $MAQUETA_OFFLINE)." if offline else "")
    raise datasets.DatasetNotFoundError(
        f"CIFAR-10 files not found: neither {ARCHIVE} nor a {FOLDER}/ folder with {', '.join(names)}.\n"
        f"Looked in:\n  {where}{tried}\n"
        f"Put {ARCHIVE} (from {info['mirrors'][0]}) in one of those folders, or pass data_dir.")


def load_cifar10(split="train", data_dir=None, download=True, return_paths=False):
    """CIFAR-10: (images uint8 (N, 3, 32, 32), labels int64 (N,)), 50,000 train or 10,000 test;
    label k names CLASSES[k]. See the module's docstring for where the files are looked for."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = SPLIT_FILES[split]
    kind, path = _locate(data_dir, names, download)
    n = RECORDS_PER_FILE * len(names)
    images, labels = np.empty((n, 3, 32, 32), np.uint8), np.empty(n, np.int64)
    if kind == "archive":
        _read_archive(path, names, RECORDS_PER_FILE, images, labels)
    else:
        for i, name in enumerate(names):
            part = slice(i * RECORDS_PER_FILE, (i + 1) * RECORDS_PER_FILE)
            _read_file(path / name, RECORDS_PER_FILE, images[part], labels[part])
    return (images, labels, path) if return_paths else (images, labels)
