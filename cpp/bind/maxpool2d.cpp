// max-pool bindings: maxpool2d_forward, maxpool2d_backward, and their plain twins plain_maxpool2d_*.
#include "common.h"

#include "maqueta/maxpool2d.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

template <Tier tier>
py::tuple maxpool2d_forward_py(const py::handle& x_obj, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                               const py::handle& out_obj, const py::handle& idx_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    check_rank(x, "x", 4, "[N, C, H, W]");
    check_nonempty(x, "x");
    check_hyper(kh, "kernel_size[0]", 1);
    check_hyper(kw, "kernel_size[1]", 1);
    check_hyper(sh, "stride[0]", 1);
    check_hyper(sw, "stride[1]", 1);
    Pool2dDims d{.N = x.shape(0), .C = x.shape(1), .H = x.shape(2), .W = x.shape(3), .KH = kh, .KW = kw, .SH = sh,
                  .SW = sw, .OH = 0, .OW = 0};
    if (kh > d.H || kw > d.W)
        value_error("kernel_size " + pair_str(kh, kw) + " is larger than the input " + pair_str(d.H, d.W) + ": x " +
                    shape_str(x));
    d.OH = (d.H - kh) / sh + 1;
    d.OW = (d.W - kw) / sw + 1;
    checked_product({d.N, d.C, d.H, d.W}, "x");
    const IsaKernels& isa = maqueta::isa();
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", dims({d.N, d.C, d.OH, d.OW}), dt, "x", {{&x, "x"}}, outs);
        py::array_t<int64_t> idx;
        if (idx_obj.is_none()) {
            idx = py::array_t<int64_t>(dims({d.N, d.C, d.OH, d.OW}));
        } else {
            py::array given = as_ndarray(idx_obj, "indices_out");
            if (!given.dtype().is(py::dtype::of<int64_t>()))
                type_error("indices_out must have dtype int64, got " + std::string(py::str(given.dtype())));
            if (!(given.flags() & py::array::c_style) || !given.writeable())
                value_error("indices_out must be a writeable C-contiguous array");
            check_same_shape(y, "out", given, "indices_out");
            if (overlaps(given, x) || overlaps(given, y)) value_error("indices_out shares memory with x or out");
            idx = py::reinterpret_borrow<py::array_t<int64_t>>(given);
        }
        auto xc = input<T>(x);
        T* yp = y.mutable_data();
        int64_t* ip = idx.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::maxpool2d_forward<T>(yp, ip, xc.data(), d);
            else
                maxpool2d_forward<T>(yp, ip, xc.data(), d, isa);
        }
        return py::make_tuple(y, idx);
    });
}

template <Tier tier>
py::array maxpool2d_backward_py(const py::handle& dy_obj, const py::handle& idx_obj, const py::handle& shape_obj,
                                const py::handle& relu_obj, const py::handle& out_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    py::array idx = as_ndarray(idx_obj, "indices");
    if (!idx.dtype().is(py::dtype::of<int64_t>()))
        type_error("indices must have dtype int64 (as maxpool2d_forward returns them), got " + std::string(py::str(idx.dtype())));
    check_rank(dy, "dy", 4, "[N, C, OH, OW]");
    check_nonempty(dy, "dy");
    check_same_shape(dy, "dy", idx, "indices");
    std::vector<int64_t> shape;
    try {
        shape = shape_obj.cast<std::vector<int64_t>>();
    } catch (const py::cast_error&) {
        type_error("x_shape must be a sequence of 4 ints (N, C, H, W), got " + std::string(py::str(shape_obj)));
    }
    if (shape.size() != 4)
        value_error("x_shape must have 4 entries (N, C, H, W), got " + std::to_string(shape.size()));
    for (int64_t v : shape)
        if (v < 1 || v > kMaxDim) value_error("x_shape entries must be in [1, 2^31), got " + std::string(py::str(shape_obj)));
    if (shape[0] != dy.shape(0) || shape[1] != dy.shape(1))
        value_error("x_shape " + std::string(py::str(shape_obj)) + " does not match dy " + shape_str(dy) +
                    " in batch and channels");
    if (dy.shape(2) > shape[2] || dy.shape(3) > shape[3])
        value_error("dy " + shape_str(dy) + " has more rows or columns than x_shape " + std::string(py::str(shape_obj)));
    Pool2dDims d{.N = shape[0], .C = shape[1], .H = shape[2], .W = shape[3], .KH = 0, .KW = 0, .SH = 0, .SW = 0,
                  .OH = dy.shape(2), .OW = dy.shape(3)};   // the backward reads no window sizes
    const int64_t HW = checked_product({d.H, d.W}, "x_shape's plane");
    checked_product({d.N, d.C, d.H, d.W}, "x_shape");
    auto ic = converted<int64_t>(idx, "indices");
    py::array relu_y;
    const bool has_relu = !relu_obj.is_none();
    if (has_relu) {
        relu_y = as_ndarray(relu_obj, "relu_output");
        check_dtype(relu_y, "relu_output", dt, "dy");
        check_same_shape(dy, "dy", relu_y, "relu_output");
    }
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> dx = output<T>(out_obj, "out", dims({d.N, d.C, d.H, d.W}), dt, "dy",
                                      {{&dy, "dy"}, {&idx, "indices"}, {has_relu ? &relu_y : nullptr, "relu_output"}}, outs);
        auto dyc = input<T>(dy);
        py::array_t<T> ryc;
        if (has_relu) ryc = input<T>(relu_y);
        T* dxp = dx.mutable_data();
        const T* ryp = has_relu ? ryc.data() : nullptr;
        int64_t outside;
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                outside = plain::maxpool2d_backward<T>(dxp, dyc.data(), ic.data(), ryp, d);
            else
                outside = maxpool2d_backward<T>(dxp, dyc.data(), ic.data(), ryp, d);
        }
        // The kernel checks every index as it uses it (no separate pass over them); the slow
        // search for the first bad one only runs to explain an error.
        if (outside) {
            const std::string left = out_obj.is_none() ? "" : "; out holds an incomplete result";
            const int64_t* ip = ic.data();
            for (int64_t i = 0; i < (int64_t)ic.size(); ++i)
                if (ip[i] < 0 || ip[i] >= HW)
                    value_error("indices holds " + std::to_string(ip[i]) + " at flat position " + std::to_string(i) +
                                ", outside the plane [0, H*W = " + std::to_string(HW) + ") of x_shape " +
                                std::string(py::str(shape_obj)) + left);
            value_error("indices changed while maxpool2d_backward ran (another thread?): " + std::to_string(outside) +
                        " fell outside the plane and were skipped" + left);
        }
        return std::move(dx);
    });
}

}  // namespace

MAQUETA_BINDINGS(maxpool2d) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "maxpool2d_forward" : "plain_maxpool2d_forward",
              fast ? &maxpool2d_forward_py<Tier::Fast> : &maxpool2d_forward_py<Tier::Plain>, py::arg("x"),
              py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("out") = none,
              py::arg("indices_out") = none);
        m.def(fast ? "maxpool2d_backward" : "plain_maxpool2d_backward",
              fast ? &maxpool2d_backward_py<Tier::Fast> : &maxpool2d_backward_py<Tier::Plain>, py::arg("dy"),
              py::arg("indices"), py::arg("x_shape"), py::arg("relu_output") = none, py::arg("out") = none);
    }
}

}  // namespace bind
}  // namespace maqueta
