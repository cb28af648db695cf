"""The _core.pyi stub names exactly the compiled module's functions, with their arguments."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from maqueta import _core

STUB = Path(__file__).resolve().parents[1] / "python" / "maqueta" / "_core.pyi"


def stub_functions():
    tree = ast.parse(STUB.read_text())
    return {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}


def module_functions():
    out = {}
    for name in dir(_core):
        obj = getattr(_core, name)
        if name.startswith("__") or not callable(obj):
            continue
        signature = obj.__doc__.splitlines()[0]          # pybind11: "name(a: type, b: type = ...) -> ret"
        args = signature[signature.index("(") + 1: signature.rindex(")")]
        out[name] = re.findall(r"(?:^|, )(\w+):", args)
    return out


def test_stub_matches_module():
    assert stub_functions() == module_functions()


def test_stub_names_build_info():
    assert "_build_info" in STUB.read_text() and isinstance(_core._build_info, dict)
