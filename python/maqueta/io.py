"""Saving and loading models: one file, nothing pickled, nothing executed on load.

A model file is a zip archive of stored (uncompressed) .npy members, what ``np.savez`` writes:
``meta.npy`` holds the architecture and settings as UTF-8 JSON, ``params/<key>.npy`` each
parameter and ``buffers/<key>.npy`` each buffer (running statistics) under its state_dict key,
``classes.npy`` the class labels, and ``optimizer/<name>.npy`` the optimizer state when it was
saved.

Loading trusts nothing in the file: it accepts stored members only (so no decompression bomb can
hide in one), checks the sizes the architecture implies against the bytes the file really holds
before anything is allocated, reads each member's header (shape, dtype, no Python objects) before
its data, checks that the archive holds exactly the members the architecture calls for, and turns
every failure into a ModelFileError. This module knows the format, not models: it reads and
writes a model only through its public interface (config, state_dict, training state).
"""
from __future__ import annotations

import glob
import json
import math
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["ModelFileError", "save_model", "load_model"]

FORMAT = "maqueta-model"
VERSION = 1
_MAX_META_BYTES = 1 << 20
_MAX_MEMBERS = 10_000
_MAX_LABEL_BYTES = 1 << 26


class ModelFileError(ValueError):
    """A file that is not a loadable maqueta model: not ours, truncated, corrupted or inconsistent."""


# ------------------------------------------------------------------------------------- saving
def save_model(model, path, include_optimizer=False, metadata=None):
    """Write ``model`` to ``path`` atomically: a temporary file in the same folder, then a rename,
    so an interrupted save leaves any previous file whole. A symbolic link is written through to
    its target; an existing file keeps its permissions, a new one gets the umask's. ``metadata``:
    a JSON-ready dict stored with the model (``model.metadata`` after loading)."""
    metadata = model.metadata if metadata is None else metadata
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable (dicts, lists, str, numbers): {error}") from None
    state = model.state_dict()
    parameters = {f"{i}.{name}" for i, layer in enumerate(model.layers) for name in layer.parameter_shapes()}
    meta = {"format": FORMAT, "version": VERSION, **model.get_config(), "loss": model.loss,
            "classes": model.classes_ is not None, "buffers": [key for key in state if key not in parameters],
            "optimizer": None, "training": None, "metadata": metadata}
    arrays = {f"{'params' if key in parameters else 'buffers'}/{key}": value for key, value in state.items()}
    if model.classes_ is not None:
        if model.classes_.dtype.hasobject:
            raise TypeError("class labels of mixed types cannot be saved: the file holds plain arrays, never Python "
                            "objects; use ints or strings")
        arrays["classes"] = model.classes_
    optimizer = model.optimizer if include_optimizer else None
    if include_optimizer:
        meta["training"] = model.training_state()
    if optimizer is not None:
        opt_state = optimizer.state_arrays()
        meta["optimizer"] = {"class_name": type(optimizer).__name__, "config": optimizer.get_config(),
                             "iterations": optimizer.iterations, "state": sorted(opt_state)}
        arrays.update({f"optimizer/{name}": value for name, value in opt_state.items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    _write_atomically(os.fspath(path), lambda f: np.savez(f, **arrays))


def _write_atomically(path, write):
    target = os.path.realpath(path)           # through a symlink, never replacing the link itself
    folder, name = os.path.split(target)
    _remove_stale_temporaries(folder, name)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _remove_stale_temporaries(folder, name):
    """Temporary files of saves to the same target whose process has died (killed mid-save)."""
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
        pid = os.path.basename(tmp)[len(name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True   # someone else's process, or not ours to judge: leave its file alone
    return True


def _umask():
    try:
        with open("/proc/self/status") as f:   # reading the umask without changing it (thread-safe)
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


# ------------------------------------------------------------------------------------- loading
def _member_header(zf, member, where):
    """Open a member and read its .npy header: (stream, shape, fortran, dtype, data bytes)."""
    f = zf.open(member)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ModelFileError(f"{where} has an unsupported .npy version {version}")
    if dtype.hasobject:
        raise ModelFileError(f"{where} holds Python objects, which maqueta never saves or loads")
    return f, tuple(shape), fortran, dtype, math.prod(shape) * dtype.itemsize   # Python ints: no wrap-around


def _read_member(zf, member, path, shape=None, dtype=None, max_bytes=None, kinds=None):
    """One .npy member, its header checked before its data is read."""
    where = f"{path}: member {member!r}"
    info = zf.getinfo(member)
    f, got_shape, fortran, got_dtype, nbytes = _member_header(zf, member, where)
    with f:
        if shape is not None and got_shape != tuple(shape):
            raise ModelFileError(f"{where} has shape {got_shape}, expected {tuple(shape)}")
        if dtype is not None and got_dtype != np.dtype(dtype):
            raise ModelFileError(f"{where} has dtype {got_dtype}, expected {np.dtype(dtype)}")
        if kinds is not None and got_dtype.kind not in kinds:
            raise ModelFileError(f"{where} has dtype {got_dtype}, which is not allowed there")
        if (max_bytes is not None and nbytes > max_bytes) or nbytes > info.file_size:
            raise ModelFileError(f"{where} declares {nbytes} bytes of data, more than it holds")
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):   # reading to the end also checks the CRC
            raise ModelFileError(f"{where} is truncated or has trailing data")
    return np.frombuffer(data, dtype=got_dtype).reshape(got_shape, order="F" if fortran else "C").copy()


def _open_archive(path):
    with open(path, "rb"):   # a path that cannot be opened raises its OSError as it is: the path is wrong, not the file
        pass
    try:
        zf = zipfile.ZipFile(path)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:   # BadZipFile, and what damaged headers provoke in zipfile (NotImplementedError, ...)
        raise ModelFileError(f"{path} is not a maqueta model file (not a readable zip archive: "
                             f"{type(error).__name__}: {error})") from None
    infos = zf.infolist()
    names = [info.filename for info in infos]
    if len(infos) > _MAX_MEMBERS or len(set(names)) != len(names):
        zf.close()
        raise ModelFileError(f"{path} is not a maqueta model file (duplicate member names or too many members)")
    for info in infos:   # maqueta writes stored members only
        if info.compress_type != zipfile.ZIP_STORED:
            zf.close()
            raise ModelFileError(f"{path}: member {info.filename!r} is compressed (method {info.compress_type}); "
                                 f"maqueta model files hold stored members only")
    return zf


def load_model(path, describe, build, optimizers):
    """Rebuild the model saved at ``path`` (with its optimizer and training state when saved).

    describe: config -> {state key: (shape, dtype)}, checking the architecture without allocating;
    build: config -> a fresh model; optimizers: {class name: class}. Raises ModelFileError for any
    file that is not a whole, consistent model (OSError when it cannot be opened at all)."""
    path = os.fspath(path)
    zf = _open_archive(path)
    try:
        with zf:
            return _load(zf, path, os.path.getsize(path), describe, build, optimizers)
    except ModelFileError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:   # whatever a corrupted or hostile file provokes, it is the file's fault
        raise ModelFileError(f"{path} is corrupted or inconsistent: {type(error).__name__}: {error}") from None


def _load(zf, path, file_bytes, describe, build, optimizers):
    members = set(zf.namelist())
    if "meta.npy" not in members:
        raise ModelFileError(f"{path} is not a maqueta model file (no meta.npy member)")
    raw = _read_member(zf, "meta.npy", path, dtype=np.uint8, max_bytes=_MAX_META_BYTES)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: meta.npy is not valid JSON: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a maqueta model file (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ModelFileError(f"{path} has format version {meta.get('version')!r}; this maqueta reads version {VERSION}")

    # The architecture first, without allocating: its arrays must be in the file, byte for byte.
    try:
        config = {key: meta[key] for key in ("dtype", "seed", "input_shape", "layers")}
        shapes = describe(config)
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: the architecture in meta.npy is invalid: {error!r}") from None
    buffers = set(meta.get("buffers") or [])
    member_of = {key: f"{'buffers' if key in buffers else 'params'}/{key}.npy" for key in shapes}
    expected = {"meta.npy", *member_of.values()}
    if meta.get("classes"):
        expected.add("classes.npy")
    opt_meta = meta.get("optimizer")
    if opt_meta:
        expected |= {f"optimizer/{name}.npy" for name in opt_meta.get("state", [])}
    if members != expected:
        raise ModelFileError(f"{path}: members do not match the architecture: missing {sorted(expected - members)}, "
                             f"unexpected {sorted(members - expected)}")
    declared = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in shapes.values())
    held = sum(zf.getinfo(member).file_size for member in member_of.values())
    if declared > held or held > file_bytes:
        raise ModelFileError(f"{path}: the architecture needs {declared} bytes of weights but the file holds {held}")

    model = build(config)
    state = {key: _read_member(zf, member_of[key], path, shape=shape, dtype=dtype)
             for key, (shape, dtype) in shapes.items()}
    model.load_state_dict(state)   # refuses NaN and Inf
    if meta.get("classes"):
        units = model.output_units(model.input_shape) if model.input_shape is not None else None
        classes = _read_member(zf, "classes.npy", path, max_bytes=_MAX_LABEL_BYTES, kinds="biuUS")
        if classes.ndim != 1 or (units is not None and len(classes) != units):
            raise ModelFileError(f"{path}: classes.npy has shape {classes.shape}; the model has {units} outputs")
        if len(np.unique(classes)) != len(classes) or np.any(classes[1:] < classes[:-1]):
            raise ModelFileError(f"{path}: classes.npy must hold distinct labels in sorted order")
        model.classes_ = classes
    model.loss = meta.get("loss", "cross_entropy")
    if model.loss not in ("cross_entropy", "mse"):
        raise ModelFileError(f"{path}: unknown loss {model.loss!r}")
    model.metadata = meta.get("metadata") or {}
    try:
        if meta.get("training"):
            model.set_training_state(meta["training"])
        if opt_meta:
            kind = opt_meta["class_name"]
            if kind not in optimizers:
                raise ModelFileError(f"{path}: unknown optimizer {kind!r}")
            optimizer = optimizers[kind](**opt_meta["config"])
            optimizer.bind(model.count_params(), model.dtype)
            opt_state = optimizer.state_arrays()
            if sorted(opt_state) != sorted(opt_meta["state"]):
                raise ModelFileError(f"{path}: optimizer state {opt_meta['state']} does not match {kind}")
            arrays = {name: _read_member(zf, f"optimizer/{name}.npy", path, shape=value.shape, dtype=model.dtype)
                      for name, value in opt_state.items()}
            optimizer.load_state(opt_meta["iterations"], arrays)
            model.optimizer = optimizer
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the training state in meta.npy is invalid: {error!r}") from None
    return model
