// Average-pooling bindings: avgpool2d_forward, avgpool2d_backward, and their plain twins plain_avgpool2d_*.
#include "common.h"

#include "maqueta/avgpool2d.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

// The dims of a pooling of x_shape [N, C, H, W], checked as PyTorch checks them.
AvgPoolDims pool_dims(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                      int64_t ph, int64_t pw, const std::string& what) {
    check_hyper(kh, "kernel_size[0]", 1);
    check_hyper(kw, "kernel_size[1]", 1);
    check_hyper(sh, "stride[0]", 1);
    check_hyper(sw, "stride[1]", 1);
    check_hyper(ph, "padding[0]", 0);
    check_hyper(pw, "padding[1]", 0);
    for (int64_t v : {N, C, H, W})
        if (v < 1 || v > kMaxDim) value_error(what + " has an empty or too large dimension");
    if (2 * ph > kh || 2 * pw > kw)
        value_error("padding " + pair_str(ph, pw) + " must be at most half the kernel_size " + pair_str(kh, kw));
    if (kh > H + 2 * ph || kw > W + 2 * pw)
        value_error("kernel_size " + pair_str(kh, kw) + " is larger than the padded input " +
                    pair_str(H + 2 * ph, W + 2 * pw) + " of " + what);
    const int64_t P = checked_product({N, C}, what);
    checked_product({P, H, W}, what);
    return AvgPoolDims{.P = P, .H = H, .W = W, .KH = kh, .KW = kw, .SH = sh, .SW = sw, .PH = ph, .PW = pw,
                       .OH = (H + 2 * ph - kh) / sh + 1, .OW = (W + 2 * pw - kw) / sw + 1};
}

template <Tier tier>
py::array avgpool2d_forward_py(const py::handle& x_obj, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, const py::handle& out_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    check_rank(x, "x", 4, "[N, C, H, W]");
    check_nonempty(x, "x");
    const AvgPoolDims d = pool_dims(x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, sh, sw, ph, pw,
                                    "x " + shape_str(x));
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", dims({x.shape(0), x.shape(1), d.OH, d.OW}), dt, "x", {{&x, "x"}}, outs);
        auto xc = input<T>(x);
        T* yp = y.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::avgpool2d_forward<T>(yp, xc.data(), d);
            else
                avgpool2d_forward<T>(yp, xc.data(), d);
        }
        return std::move(y);
    });
}

template <Tier tier>
py::array avgpool2d_backward_py(const py::handle& dy_obj, const std::vector<int64_t>& x_shape, int64_t kh, int64_t kw,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, const py::handle& out_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    check_rank(dy, "dy", 4, "[N, C, OH, OW]");
    if (x_shape.size() != 4) value_error("x_shape must be (N, C, H, W), got " + std::to_string(x_shape.size()) + " sizes");
    const AvgPoolDims d = pool_dims(x_shape[0], x_shape[1], x_shape[2], x_shape[3], kh, kw, sh, sw, ph, pw, "x_shape");
    if (dy.shape(0) != x_shape[0] || dy.shape(1) != x_shape[1] || dy.shape(2) != d.OH || dy.shape(3) != d.OW)
        value_error("dy must have shape (" + std::to_string(x_shape[0]) + ", " + std::to_string(x_shape[1]) + ", " +
                    std::to_string(d.OH) + ", " + std::to_string(d.OW) + ") for that pooling, got " + shape_str(dy));
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> dx = output<T>(out_obj, "out", dims({x_shape[0], x_shape[1], x_shape[2], x_shape[3]}), dt, "dy",
                                      {{&dy, "dy"}}, outs);
        auto dyc = input<T>(dy);
        T* dxp = dx.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::avgpool2d_backward<T>(dxp, dyc.data(), d);
            else
                avgpool2d_backward<T>(dxp, dyc.data(), d);
        }
        return std::move(dx);
    });
}

}  // namespace

MAQUETA_BINDINGS(avgpool2d) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "avgpool2d_forward" : "plain_avgpool2d_forward",
              fast ? &avgpool2d_forward_py<Tier::Fast> : &avgpool2d_forward_py<Tier::Plain>, py::arg("x"),
              py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
              py::arg("pad_w"), py::arg("out") = none);
        m.def(fast ? "avgpool2d_backward" : "plain_avgpool2d_backward",
              fast ? &avgpool2d_backward_py<Tier::Fast> : &avgpool2d_backward_py<Tier::Plain>, py::arg("dy"),
              py::arg("x_shape"), py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"),
              py::arg("pad_h"), py::arg("pad_w"), py::arg("out") = none);
    }
}

}  // namespace bind
}  // namespace maqueta
