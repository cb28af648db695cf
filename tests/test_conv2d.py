"""conv2d: native kernels against the NumPy oracle and against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import ops, reference
from conftest import assert_close

pytestmark = pytest.mark.usefixtures("threads")

# (N, C, H, W, O, KH, KW, stride, padding)
SHAPES = [
    (4, 1, 32, 32, 6, 5, 5, 1, 0),        # LeNet-5 conv1
    (4, 6, 14, 14, 16, 5, 5, 1, 0),       # LeNet-5 conv2
    (1, 1, 32, 32, 6, 5, 5, 1, 0),        # batch 1
    (2, 3, 13, 8, 5, 3, 2, 1, 0),         # non-square image and kernel
    (2, 2, 11, 9, 3, 3, 3, 2, 0),         # stride 2, sizes not divisible
    (2, 3, 8, 8, 4, 3, 3, 1, 1),          # padding 1
    (2, 2, 7, 9, 3, 5, 5, 1, 2),          # padding 2
    (2, 4, 9, 10, 7, 3, 3, (2, 1), (1, 2)),  # different strides and paddings per axis
    (3, 32, 6, 6, 8, 3, 3, 1, 1),         # 32 input channels
    (2, 5, 7, 7, 32, 1, 1, 1, 0),         # 1x1 kernel, 32 filters
    (2, 2, 9, 9, 3, 7, 7, 1, 0),          # 7x7 kernel
    (2, 3, 5, 5, 2, 5, 5, 1, 0),          # kernel as large as the image: 1x1 output
    (1, 1, 1, 1, 1, 1, 1, 1, 0),          # the smallest convolution
    (2, 3, 3, 3, 2, 5, 5, 1, 1),          # kernel larger than the image, fits the padding
    (9, 2, 6, 5, 3, 2, 3, 3, 1),          # stride 3, odd batch
    (2, 2, 20, 21, 32, 3, 3, 1, 0),       # two channels: dx's GEMM has two rows, over 128 columns
    # strided input gradients (by phases under "direct" and "auto", by col2im under "im2col")
    (11, 16, 14, 14, 32, 3, 3, 2, 1),     # the strided zoo net's conv2; blocks of images, the last short
    (3, 2, 9, 10, 4, 2, 2, 3, 0),         # stride above the kernel: phases no tap reaches
    (2, 3, 1, 5, 3, 1, 3, 2, 0),          # one row, stride 2: an empty phase
    (3, 3, 8, 7, 4, 4, 5, 2, 3),          # padding above half the kernel
    (2, 2, 13, 11, 3, 3, 3, (4, 3), (1, 0)),  # strides 4 and 3
    (3, 4, 7, 8, 5, 1, 1, 2, 0),          # 1x1 stride 2 (a shortcut's downsampling): odd columns get no tap
    (2, 3, 7, 9, 4, 2, 2, 2, 0),          # 2x2 stride 2: one tap per phase, odd width
    # pixel-major forward at stride 2 reads one output row's pixels through one pointer where
    # a panel of filters is one vector wide
    (5, 1, 28, 28, 16, 3, 3, 2, 1),       # the strided zoo net's conv1
    (2, 3, 11, 13, 80, 3, 3, 2, 1),       # 80 filters: panels of 4 vectors and 1 (AVX-512), odd sizes
    # output planes a multiple of 4 kB apart: the pixel-major forward computes them through a stage
    (2, 8, 32, 32, 20, 3, 3, 1, 1),       # 32x32: float32 and float64
    (2, 4, 16, 32, 24, 3, 3, 1, 1),       # 16x32: float64 only
    (2, 2, 8, 128, 5, 3, 3, 1, 1),        # rows wider than a staged part
]


def make(rng, shape, dtype):
    N, C, H, W, O, KH, KW, stride, padding = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, stride, padding


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_oracle(shape, dtype, each_isa, each_conv_algo, rng):
    x, w, b, stride, padding = make(rng, shape, dtype)
    y = ops.conv2d_forward(x, w, b, stride, padding)
    assert y.dtype == dtype
    assert_close(y, reference.conv2d_forward(x, w, b, stride, padding), dtype, what="y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = ops.conv2d_backward(dy, x, w, stride, padding)
    dx_ref, dw_ref, db_ref = reference.conv2d_backward(dy, x, w, stride, padding)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, what="dx")
    assert_close(dw, dw_ref, dtype, what="dw")
    assert_close(db, db_ref, dtype, what="db")


@pytest.mark.parametrize("shape", SHAPES[:8], ids=str)
def test_fused_relu_and_no_bias(shape, rng):
    x, w, b, stride, padding = make(rng, shape, np.float64)
    assert_close(ops.conv2d_forward(x, w, None, stride, padding),
                 reference.conv2d_forward(x, w, None, stride, padding), what="no bias")
    y = ops.conv2d_forward(x, w, b, stride, padding, relu=True)
    assert_close(y, np.maximum(reference.conv2d_forward(x, w, b, stride, padding), 0), what="relu")
    assert (y >= 0).all()


def test_need_dx_false_skips_dx(rng):
    x, w, b, stride, padding = make(rng, SHAPES[0], np.float64)
    dy = rng.standard_normal(ops.conv2d_forward(x, w, b).shape)
    dx, dw, db = ops.conv2d_backward(dy, x, w, need_dx=False)
    full = ops.conv2d_backward(dy, x, w, need_dx=True)
    assert dx is None
    np.testing.assert_array_equal(dw, full[1])
    np.testing.assert_array_equal(db, full[2])


@pytest.mark.parametrize("shape", [
    (2, 2, 6, 5, 3, 3, 2, 1, 0),
    (2, 2, 7, 7, 2, 3, 3, 2, 1),
    (1, 3, 5, 6, 2, 2, 3, (1, 2), (2, 0)),
    (2, 2, 8, 7, 3, 2, 3, (3, 2), 1),     # stride 3 above kernel height 2
], ids=str)
def test_gradients_match_finite_differences(shape, each_conv_algo, rng):
    """Central differences of L = sum(conv(x, w, b) * r) in float64 give dL/dx, dL/dw, dL/db."""
    x, w, b, stride, padding = make(rng, shape, np.float64)
    r = rng.standard_normal(ops.conv2d_forward(x, w, b, stride, padding).shape)

    def loss(x_, w_, b_):
        return float(np.sum(ops.conv2d_forward(x_, w_, b_, stride, padding) * r))

    dx, dw, db = ops.conv2d_backward(r, x, w, stride, padding)
    h = 1e-6
    for name, array, grad in (("x", x, dx), ("w", w, dw), ("b", b, db)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + h
            up = loss(x, w, b)
            array[i] = saved - h
            down = loss(x, w, b)
            array[i] = saved
            numeric[i] = (up - down) / (2 * h)
        assert_close(grad, numeric, rtol=1e-7, what=f"d{name}")


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[7] != 1], ids=str)
def test_relu_input_masks_strided_dx(shape, each_conv_algo, rng):
    """With relu_input, dx is the plain dx zeroed where x <= 0, bit for bit, on every algorithm."""
    x, w, _, stride, padding = make(rng, shape, np.float64)
    x = np.maximum(x, 0)
    dy = rng.standard_normal(ops.conv2d_forward(x, w, None, stride, padding).shape)
    dx, _, _ = ops.conv2d_backward(dy, x, w, stride, padding)
    masked, _, _ = ops.conv2d_backward(dy, x, w, stride, padding, relu_input=True)
    np.testing.assert_array_equal(masked, np.where(x > 0, dx, 0))


def test_deterministic_between_runs(threads, rng):
    """Same inputs, same thread count: bitwise the same results."""
    x, w, b, stride, padding = make(rng, (16, 6, 14, 14, 16, 5, 5, 1, 0), np.float32)
    dy = rng.standard_normal((16, 16, 10, 10)).astype(np.float32)
    first = [ops.conv2d_forward(x, w, b), *ops.conv2d_backward(dy, x, w)]
    for _ in range(3):
        again = [ops.conv2d_forward(x, w, b), *ops.conv2d_backward(dy, x, w)]
        for a, b_ in zip(first, again):
            np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "transposed"])
def test_any_input_layout(layout, rng):
    x, w, b, _, _ = make(rng, (3, 4, 10, 9, 5, 3, 3, 1, 0), np.float64)
    views = {
        "fortran": lambda a: np.asfortranarray(a),
        "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
        "reversed": lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1],
        "transposed": lambda a: np.ascontiguousarray(np.swapaxes(a, 2, 3)).swapaxes(2, 3),
    }
    view = views[layout]
    xv, wv = view(x), view(w)
    assert not xv.flags.c_contiguous
    y = ops.conv2d_forward(xv, wv, b)
    assert_close(y, reference.conv2d_forward(x, w, b), what="y")
    dy = rng.standard_normal(y.shape)
    for got, want in zip(ops.conv2d_backward(view(dy), xv, wv), reference.conv2d_backward(dy, x, w)):
        assert_close(got, want)
    # the inputs were only read
    np.testing.assert_array_equal(xv, x)


@pytest.mark.parametrize("need_dx", [True, False])
def test_a_huge_stride_visits_only_the_phases_that_hold_pixels(need_dx, each_conv_algo, rng):
    """Stride 2^31 - 1 leaves one output pixel; dx's phases beyond the image are never walked
    (walking all SH * SW of them once took forever)."""
    x, w, b, _, _ = make(rng, (2, 3, 5, 6, 4, 2, 3, 1, 0), np.float64)
    stride = 2**31 - 1
    y = ops.conv2d_forward(x, w, b, stride, 0)
    assert y.shape == (2, 4, 1, 1)
    assert_close(y, reference.conv2d_forward(x, w, b, stride, 0), what="y")
    dy = rng.standard_normal(y.shape)
    got = ops.conv2d_backward(dy, x, w, stride, 0, need_dx=need_dx)
    want = reference.conv2d_backward(dy, x, w, stride, 0)
    assert (got[0] is None) == (not need_dx)
    for g, e in zip(got, want):
        if g is not None:
            assert_close(g, e, what="gradients")


@pytest.mark.parametrize("shape", [
    (1, 3, 32, 32, 32, 3, 3, 1, 1),       # direct with few taps: one thread, no bands
    (1, 8, 32, 32, 32, 3, 3, 1, 1),       # direct: bands of the wide rows
    (1, 32, 32, 32, 32, 3, 3, 1, 1),      # pixel-major, one pair of vectors of filters: bands
    (1, 16, 40, 9, 48, 3, 3, 1, 0),       # more bands than threads would need
    (1, 32, 17, 15, 64, 3, 3, 2, 1),      # pixel-major, strided, odd sizes: filter groups
    (1, 32, 16, 16, 72, 3, 3, 1, 1),      # filter groups of 2 and 3 vectors, the last one ragged
    (2, 32, 12, 12, 128, 3, 3, 1, 1),     # two images, groups: at 3 threads one thread takes two items
    (1, 64, 8, 8, 128, 3, 3, 2, 1),       # cifar-gap's last conv
], ids=str)
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_image_is_cut_into_bands_with_the_same_bits(shape, activation, dtype, rng):
    """Fewer images than threads: each image's output rows are shared out in bands, its
    filters in groups of whole vectors (pixel-major, each thread packing its own columns of W^T), or both.
    Every value is still one sum in the same order, so 1 to 4 threads give the same bits."""
    import maqueta
    x, w, b, stride, padding = make(rng, shape, dtype)
    before = maqueta.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 4):   # 3 and 4: bands inside filter groups
            maqueta.set_num_threads(threads)
            outs.append(ops.conv2d_forward(x, w, b, stride, padding, activation=activation, alpha=0.1))
    finally:
        maqueta.set_num_threads(before)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    want = reference.conv2d_forward(x, w, b, stride, padding)
    want = {None: want, "relu": np.maximum(want, 0), "leaky_relu": np.where(want > 0, want, 0.1 * want)}[activation]
    assert_close(outs[0], want, dtype, what="y")
