"""Saving and loading models: one file, nothing pickled, nothing executed on load.

A model file is a zip archive of .npy members (what ``np.savez`` writes): ``meta.npy`` holds the
architecture and settings as UTF-8 JSON, ``params/<key>.npy`` each parameter and
``buffers/<key>.npy`` each buffer (running statistics) under its state_dict key, ``classes.npy``
the class labels, and ``optimizer/<name>.npy`` the optimizer state when it was saved. Loading
accepts stored (uncompressed) members only, checks every member's header (shape, dtype, no
object arrays) before reading it, and that the archive holds exactly the members the
architecture calls for. This module knows the format, not models: it reads and writes a model
through its public interface (config, state_dict, training state), so it imports nothing of it.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["ModelFileError", "save_model", "load_model"]

FORMAT = "maqueta-model"
VERSION = 1
_MAX_META_BYTES = 1 << 20


class ModelFileError(ValueError):
    """A file that is not a loadable maqueta model: not ours, truncated, corrupted or inconsistent."""


def save_model(model, path, include_optimizer=False, metadata=None):
    """Write ``model`` to ``path`` atomically: a temporary file in the same folder, then a rename,
    so an interrupted save leaves any previous file whole. ``metadata``: a JSON-ready dict stored
    with the model (``model.metadata`` after loading). Only the model's public interface is read:
    its config, state_dict, classes, optimizer and training state."""
    path = os.fspath(path)
    metadata = model.metadata if metadata is None else metadata
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable (dicts, lists, str, numbers): {error}") from None
    optimizer = model.optimizer if include_optimizer else None
    state = model.state_dict()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **model.get_config(),
        "loss": model.loss,
        "classes": model.classes_ is not None,
        "buffers": [key for key in state if key not in _parameter_keys(model)],
        "optimizer": None,
        "training": None,
        "metadata": metadata,
    }
    arrays = {f"params/{key}": value for key, value in state.items() if key not in meta["buffers"]}
    arrays.update({f"buffers/{key}": state[key] for key in meta["buffers"]})
    if model.classes_ is not None:
        if model.classes_.dtype.hasobject:
            raise TypeError("class labels of mixed types cannot be saved: the file holds plain arrays, never Python "
                            "objects; use ints or strings")
        arrays["classes"] = model.classes_
    if include_optimizer:
        meta["training"] = model.training_state()
        if optimizer is not None:
            opt_state = optimizer.state_arrays()
            meta["optimizer"] = {"class_name": type(optimizer).__name__, "config": optimizer.get_config(),
                                 "iterations": optimizer.iterations, "state": sorted(opt_state)}
            for name, value in opt_state.items():
                arrays[f"optimizer/{name}"] = value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _parameter_keys(model):
    """The state_dict keys that are trainable parameters (the rest are buffers)."""
    return {f"{i}.{name}" for i, layer in enumerate(model.layers) for name in layer.parameter_shapes()}


def _read_member(zf, member, path, shape=None, dtype=None, max_bytes=None):
    """One .npy member, its header checked before its data is read."""
    where = f"{path}: member {member!r}"
    try:
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ModelFileError(f"{where} has an unsupported .npy version {version}")
            if got_dtype.hasobject:
                raise ModelFileError(f"{where} holds Python objects, which maqueta never saves or loads")
            if shape is not None and tuple(got_shape) != tuple(shape):
                raise ModelFileError(f"{where} has shape {tuple(got_shape)}, expected {tuple(shape)}")
            if dtype is not None and got_dtype != np.dtype(dtype):
                raise ModelFileError(f"{where} has dtype {got_dtype}, expected {np.dtype(dtype)}")
            nbytes = int(np.prod(got_shape, dtype=np.int64)) * got_dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise ModelFileError(f"{where} is implausibly large ({nbytes} bytes)")
            data = f.read(nbytes)
            if len(data) != nbytes or f.read(1):   # reading to the end also checks the CRC
                raise ModelFileError(f"{where} is truncated or has trailing data")
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError) as error:
        raise ModelFileError(f"{where} is corrupted: {error}") from None
    return np.frombuffer(data, dtype=got_dtype).reshape(got_shape, order="F" if fortran else "C").copy()


def load_model(path, build, optimizers):
    """Rebuild the model saved at ``path`` (with its optimizer and training state when saved).
    build: config -> a fresh model (Sequential.from_config); optimizers: {class name: class}."""
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{path} is not a maqueta model file (not a readable zip archive: {error})") from None
    except OSError:
        raise
    with zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise ModelFileError(f"{path} has duplicate member names: which one is meant cannot be known")
        for info in infos:   # maqueta writes stored members only: no decompression bomb can hide in one
            if info.compress_type != zipfile.ZIP_STORED:
                raise ModelFileError(f"{path}: member {info.filename!r} is compressed (method {info.compress_type}); "
                                     f"maqueta model files hold stored members only")
        members = set(names)
        if "meta.npy" not in members:
            raise ModelFileError(f"{path} is not a maqueta model file (no meta.npy member)")
        raw = _read_member(zf, "meta.npy", path, dtype=np.uint8, max_bytes=_MAX_META_BYTES)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ModelFileError(f"{path}: meta.npy is not valid JSON: {error}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{path} is not a maqueta model file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("version") != VERSION:
            raise ModelFileError(f"{path} has format version {meta.get('version')!r}; this maqueta reads version {VERSION}")

        try:
            model = build({key: meta[key] for key in ("dtype", "seed", "input_shape", "layers")})
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"{path}: the architecture in meta.npy is invalid: {error!r}") from None

        shapes = model.state.shapes()
        buffers = set(meta.get("buffers") or [])
        expected = {"meta.npy"} | {f"{'buffers' if key in buffers else 'params'}/{key}.npy" for key in shapes}
        if meta.get("classes"):
            expected.add("classes.npy")
        opt_meta = meta.get("optimizer")
        if opt_meta:
            expected |= {f"optimizer/{name}.npy" for name in opt_meta.get("state", [])}
        if members != expected:
            raise ModelFileError(f"{path}: members do not match the architecture: missing {sorted(expected - members)}, "
                                 f"unexpected {sorted(members - expected)}")

        state = {key: _read_member(zf, f"{'buffers' if key in buffers else 'params'}/{key}.npy", path, shape=shape,
                                   dtype=dtype)
                 for key, (shape, dtype) in shapes.items()}
        try:
            model.load_state_dict(state)
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"{path}: {error}") from None
        if meta.get("classes"):
            classes = _read_member(zf, "classes.npy", path)
            units = model.output_units(model.input_shape) if model.input_shape is not None else len(classes)
            if classes.ndim != 1 or len(classes) != units:
                raise ModelFileError(f"{path}: classes.npy has shape {classes.shape}; the model has {units} outputs")
            model.classes_ = classes
        model.loss = meta.get("loss", "cross_entropy")
        model.metadata = meta.get("metadata") or {}

        training = meta.get("training")
        try:
            if training:
                model.set_training_state(training)
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
