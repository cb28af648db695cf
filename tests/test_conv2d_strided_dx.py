"""conv2d's input gradient at stride 2 across: each row phase's two column phases are computed side
by side, then their rows interleaved into dx and the ReLU's mask applied (dx_phases). Small
integers make every sum exact, so each instruction set must give the oracle's dx bit for bit: a
value in the wrong column, a lost tail, or a write past a row shows."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import ops, reference
from conftest import forced_conv_algo

pytestmark = pytest.mark.usefixtures("threads")

# every tail of a vector of 2, 4, 8 and 16 values (columns per phase: 1 to 20), and rows of
# several whole vectors
WIDTHS = list(range(2, 42)) + [63, 64, 65]
# (kernel, stride, padding): row phases 2 or 3, one to four taps per phase
CASES = [(3, 2, 1), (3, 2, 0), (5, 2, 2), (3, (3, 2), 1), (2, 2, 0)]
GUARD = 40   # values on each side of dx_out, which nothing may write


@pytest.fixture
def phases():
    """Force the phases algorithm ("direct" at a stride above 1), which auto may not pick on small images."""
    with forced_conv_algo("direct"):
        yield


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", WIDTHS)
def test_interleaved_phases_give_the_exact_dx(width, dtype, each_isa, phases, rng):
    for kernel, stride, padding in CASES:
        if width + 2 * padding < kernel:
            continue
        x = rng.integers(-3, 4, (3, 5, 7, width)).astype(dtype)
        w = rng.integers(-2, 3, (4, 5, kernel, kernel)).astype(dtype)
        y_shape = ops.conv2d_forward(x, w, None, stride, padding).shape
        dy = rng.integers(-3, 4, y_shape).astype(dtype)
        want = reference.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                         stride, padding)[0]
        relu_x = np.maximum(x, 0)
        relu_x[:, :, ::2, 1::3] = np.nan   # NaN is not > 0: masked like a zero
        for relu_input, mask in ((False, None), (True, relu_x)):
            buffer = np.full(x.size + 2 * GUARD, 0.5, dtype)
            dx_out = buffer[GUARD:-GUARD].reshape(x.shape)
            dx, _, _ = ops.conv2d_backward(dy, x if mask is None else mask, w, stride, padding,
                                           relu_input=relu_input, dx_out=dx_out)
            assert dx is dx_out or np.shares_memory(dx, dx_out)
            expected = want if mask is None else np.where(mask > 0, want, 0)
            np.testing.assert_array_equal(dx, expected.astype(dtype), err_msg=f"{kernel, stride, padding, relu_input}")
            assert np.all(buffer[:GUARD] == 0.5) and np.all(buffer[-GUARD:] == 0.5), "wrote outside dx"
