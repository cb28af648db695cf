"""Every case of test_bad_input.py again, on the plain kernels: maqueta.plain must refuse each bad
argument with the same error as maqueta.ops (both tiers share the bindings' checks), so that
nothing a caller passes reaches a plain loop either.

The cases are test_bad_input's own functions, collected here a second time; the fixture below
points their module's `ops` at maqueta.plain while they run. Cases that call _core directly run
on the fast bindings again, which is harmless.
"""
from __future__ import annotations

import pytest

import test_bad_input
from maqueta import plain
from test_bad_input import *  # noqa: F401,F403  (the test functions, collected again in this module)


@pytest.fixture(autouse=True)
def _on_plain_kernels(monkeypatch):
    monkeypatch.setattr(test_bad_input, "ops", plain)
