"""Export a :class:`maqueta.Sequential` model to ONNX, for ONNX Runtime and other runtimes.

    model.export_onnx("lenet5.onnx")                      # or maqueta.onnx.export(model, "lenet5.onnx")
    session = onnxruntime.InferenceSession("lenet5.onnx")
    logits = session.run(None, {"input": x})[0]           # x: float32 (N, C, H, W), any N

The file is written with the ``onnx`` package's own helpers (``pip install "maqueta[onnx]"``), never
by hand. Each layer adds its own nodes through ``Layer.to_onnx(graph, x)``; this module only builds
the graph around them: one input named ``input`` with a named batch dimension ``batch``, the weights
as initializers named by their ``state_dict`` keys, and one output, ``logits`` (or, with
``probabilities=True``, ``probabilities`` after a final Softmax). maqueta's layouts already are
ONNX's: NCHW activations, OIHW convolution weights, dense weights (out, in) as ``Gemm`` with
``transB=1``.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

__all__ = ["export", "OnnxGraph", "ONNXExportError", "MIN_OPSET"]

# Softmax over one axis (as maqueta's) is opset 13's; older opsets flattened the trailing axes.
MIN_OPSET = 13


class ONNXExportError(ValueError):
    """A model that cannot be written as ONNX: a layer with no ONNX form, or an unknown input shape."""


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install onnx "
                          "(or maqueta's extra: pip install \"maqueta[onnx]\", which adds onnxruntime)") from None
    return onnx


class OnnxGraph:
    """The graph being built: nodes, initializers and the names in use. Layers add to it in
    ``to_onnx``; every ``add_*`` method returns the name of what it added."""

    def __init__(self, dtype):
        onnx = _require_onnx()
        self._helper, self._numpy_helper = onnx.helper, onnx.numpy_helper
        self.dtype = np.dtype(dtype)
        self.nodes, self.initializers = [], []
        self._names = set()

    def fresh_name(self, stem: str) -> str:
        """stem itself when unused, else stem_1, stem_2, ...: names in an ONNX graph must be unique."""
        name, k = stem, 0
        while name in self._names:
            k += 1
            name = f"{stem}_{k}"
        self._names.add(name)
        return name

    def add_initializer(self, stem: str, array) -> str:
        """A constant tensor (a copy of array, in the model's dtype) that nodes can read by its name."""
        name = self.fresh_name(stem)
        values = np.ascontiguousarray(array, dtype=self.dtype)
        self.initializers.append(self._numpy_helper.from_array(values, name))
        return name

    def add_node(self, op_type: str, inputs, stem: str, **attributes) -> str:
        """A node of the standard domain with one output, named after stem; attributes as ONNX's."""
        output = self.fresh_name(stem)
        node = self._helper.make_node(op_type, list(inputs), [output], name=self.fresh_name(f"{stem}/{op_type}"),
                                      **attributes)
        self.nodes.append(node)
        return output

    def rename_output(self, old: str, new: str) -> str:
        """Give the value `old` the name `new` (for the graph's output)."""
        for node in self.nodes:
            if old in node.output:
                node.output[list(node.output).index(old)] = new
                self._names.add(new)
                return new
        return self.add_node("Identity", [old], new)   # old is not a node's output: the graph's input


def export(model, path, opset=17, probabilities=False, input_shape=None, dtype=None):
    """Write ``model`` to ``path`` as an ONNX file, atomically, and return the ``onnx.ModelProto``.

    opset: the ONNX operator set, an int from 13 to the installed onnx package's newest.
    probabilities: when True the graph ends with a Softmax over axis 1 and its output is named
        ``probabilities``, as ``model.predict_proba``; else its output ``logits`` is ``model(x)``.
    input_shape: (C, H, W) or (features,) of one sample; default: the model's ``input_shape``
        (known once it was built with one or has seen data). The batch dimension is always free.
    dtype: of the graph's input, weights and output; default the model's. ONNX Runtime's CPU
        provider has no float64 convolution, so a float64 model meant for it exports as "float32".

    Raises ONNXExportError naming the layer that has no ONNX form, and ImportError saying how to
    install onnx when it is missing."""
    onnx = _require_onnx()
    helper = onnx.helper
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {newest} (the installed onnx "
                         f"{onnx.__version__}'s newest), got {opset!r}")
    if not isinstance(probabilities, bool):
        raise TypeError(f"probabilities must be True or False, got {probabilities!r}")
    if input_shape is None:
        input_shape = model.input_shape
    if input_shape is None:
        raise ONNXExportError("the model's input shape is unknown: pass input_shape=(C, H, W) or (features,), "
                              "or build the model with input_shape=..., or call it on data once")
    input_shape = tuple(int(s) for s in input_shape)
    output_shape = model.layer_shapes(input_shape, record=False)[-1]   # checks it against every layer

    dtype = model.dtype if dtype is None else np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    graph = OnnxGraph(dtype)
    elem_type = helper.np_dtype_to_tensor_dtype(dtype)
    x = graph.fresh_name("input")
    for layer in model.layers:
        x = layer.to_onnx(graph, x)
    if probabilities:
        x = graph.add_node("Softmax", [x], "softmax", axis=1)
    output = graph.rename_output(x, "probabilities" if probabilities else "logits")

    onnx_graph = helper.make_graph(
        graph.nodes, "maqueta_sequential",
        [helper.make_tensor_value_info("input", elem_type, ["batch", *input_shape])],
        [helper.make_tensor_value_info(output, elem_type, ["batch", *output_shape])],
        initializer=graph.initializers)
    from . import __version__
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="maqueta", producer_version=__version__,
                              doc_string=repr(model))
    # The oldest IR version that carries this opset, so that older runtimes load the file too.
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)

    path = Path(os.fspath(path))
    tmp = path.with_name(path.name + ".part")
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return proto
