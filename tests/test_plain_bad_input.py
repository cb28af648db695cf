"""Every case of test_bad_input.py, and of test_layer_kernels.py's bad arguments (batch norm,
dropout, average pooling, activations), again on the plain kernels: maqueta.plain must refuse
each bad argument with the same error as maqueta.ops (both tiers share the bindings' checks), so
that nothing a caller passes reaches a plain loop either.

The cases are those modules' own functions, collected here a second time; the fixture below
points their modules' `ops` at maqueta.plain while they run. Cases that call _core directly run
on the fast bindings again, which is harmless.
"""
from __future__ import annotations

import pytest

import test_bad_input
import test_layer_kernels
from maqueta import plain
from test_bad_input import *  # noqa: F401,F403  (the test functions, collected again in this module)
from test_layer_kernels import test_bad_arguments_are_clear_errors  # noqa: F401  (collected again)


@pytest.fixture(autouse=True)
def _on_plain_kernels(monkeypatch):
    monkeypatch.setattr(test_bad_input, "ops", plain)
    monkeypatch.setattr(test_layer_kernels, "ops", plain)
