// conv2d bindings: conv2d_forward, conv2d_backward (and their plain twins plain_conv2d_*), and the
// test switch of the algorithm.
#include "common.h"

#include <atomic>

#include "maqueta/conv2d.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

// A test switch: force one convolution algorithm in every later call (tests reach each path this
// way). Each call reads it once and passes it down to the kernel.
std::atomic<int> g_forced_algo{(int)ConvAlgo::Auto};
ConvAlgo forced_algo() { return (ConvAlgo)g_forced_algo.load(std::memory_order_relaxed); }

const char* const kAlgoNames[] = {"auto", "direct", "im2col", "pixel", "winograd"};   // in ConvAlgo's order

Conv2dDims conv_dims(const py::array& x, const py::array& w, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    check_rank(x, "x", 4, "[N, C, H, W]");
    check_rank(w, "w", 4, "[O, C, KH, KW]");
    check_nonempty(x, "x");
    check_nonempty(w, "w");
    check_hyper(sh, "stride[0]", 1);
    check_hyper(sw, "stride[1]", 1);
    check_hyper(ph, "padding[0]", 0);
    check_hyper(pw, "padding[1]", 0);
    Conv2dDims d{};
    d.N = x.shape(0); d.C = x.shape(1); d.H = x.shape(2); d.W = x.shape(3);
    d.O = w.shape(0); d.KH = w.shape(2); d.KW = w.shape(3);
    d.SH = sh; d.SW = sw; d.PH = ph; d.PW = pw;
    for (int64_t v : {d.N, d.C, d.H, d.W, d.O, d.KH, d.KW})
        if (v > kMaxDim) value_error("x " + shape_str(x) + " or w " + shape_str(w) + " has a dimension that is too large");
    if (w.shape(1) != d.C)
        value_error("w has " + std::to_string(w.shape(1)) + " input channels but x has " + std::to_string(d.C) +
                    ": x " + shape_str(x) + ", w " + shape_str(w) + " (w is [O, C, KH, KW])");
    const int64_t Hp = d.H + 2 * ph, Wp = d.W + 2 * pw;
    if (d.KH > Hp || d.KW > Wp)
        value_error("kernel " + pair_str(d.KH, d.KW) + " is larger than the padded input " + pair_str(Hp, Wp) +
                    ": x " + shape_str(x) + ", w " + shape_str(w) + ", padding " + pair_str(ph, pw));
    d.OH = (Hp - d.KH) / sh + 1;
    d.OW = (Wp - d.KW) / sw + 1;
    const int64_t K = d.C * d.KH * d.KW;
    checked_product({d.N, d.O, d.OH, d.OW}, "the output");
    checked_product({d.C, Hp, Wp}, "the padded input");
    checked_product({K, d.OH, d.OW}, "the unfolded input (C*KH*KW x OH*OW)");
    checked_product({d.O, d.H + d.KH, d.W + d.KW}, "the padded output gradient");
    checked_product({d.O, d.OH, Wp}, "the output on the padded input's grid");
    checked_product({d.C, d.H, d.W + d.KW}, "the input gradient's grid");
    checked_product({d.C, d.O, d.KH, d.KW}, "w");
    checked_product({d.O, K}, "w");
    return d;
}

template <Tier tier>
py::object conv2d_forward_py(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj,
                             int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool relu, const py::handle& out_obj,
                             const std::string& activation, double alpha, const py::handle& scale_obj) {
    const OutputActivation act = output_activation(relu, activation, alpha);
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "x");
    const Conv2dDims d = conv_dims(x, w, sh, sw, ph, pw);
    py::array b;
    const bool has_b = optional_bias(b_obj, b, dt, "x", w);
    py::array scale;
    const bool has_scale = optional_bias(scale_obj, scale, dt, "x", w, "weight_scale");
    const IsaKernels& isa = maqueta::isa();
    const ConvAlgo algo = forced_algo();
    return dispatch(dt, [&](auto tag) -> py::object {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", dims({d.N, d.O, d.OH, d.OW}), dt, "x",
                                     {{&x, "x"}, {&w, "w"}, {has_b ? &b : nullptr, "b"},
                                      {has_scale ? &scale : nullptr, "weight_scale"}}, outs);
        auto xc = input<T>(x), wc = input<T>(w);
        py::array_t<T> bc, sc;
        if (has_b) bc = input<T>(b);
        if (has_scale) sc = input<T>(scale);
        T* yp = y.mutable_data();
        const T* bp = has_b ? bc.data() : nullptr;
        const T* sp = has_scale ? sc.data() : nullptr;
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::conv2d_forward<T>(yp, xc.data(), wc.data(), bp, sp, d, act);
            else
                conv2d_forward<T>(yp, xc.data(), wc.data(), bp, sp, d, act, isa, algo);
        }
        return std::move(y);
    });
}

template <Tier tier>
py::tuple conv2d_backward_py(const py::handle& dy_obj, const py::handle& x_obj, const py::handle& w_obj,
                             int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool need_dx, bool relu_input,
                             const py::handle& dx_obj_in, const py::handle& dw_obj, const py::handle& db_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    py::array x = as_ndarray(x_obj, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(x, "x", dt, "dy");
    check_dtype(w, "w", dt, "dy");
    const Conv2dDims d = conv_dims(x, w, sh, sw, ph, pw);
    check_rank(dy, "dy", 4, "[N, O, OH, OW]");
    if (dy.shape(0) != d.N || dy.shape(1) != d.O || dy.shape(2) != d.OH || dy.shape(3) != d.OW)
        value_error("dy must have the output's shape (" + std::to_string(d.N) + ", " + std::to_string(d.O) + ", " +
                    std::to_string(d.OH) + ", " + std::to_string(d.OW) + "), got " + shape_str(dy) + ": x " + shape_str(x) +
                    ", w " + shape_str(w) + ", stride " + pair_str(sh, sw) + ", padding " + pair_str(ph, pw));
    const IsaKernels& isa = maqueta::isa();
    const ConvAlgo algo = forced_algo();
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        const std::vector<std::pair<const py::array*, const char*>> ins{{&dy, "dy"}, {&x, "x"}, {&w, "w"}};
        py::array_t<T> dw = output<T>(dw_obj, "dw_out", dims({d.O, d.C, d.KH, d.KW}), dt, "dy", ins, outs);
        py::array_t<T> db = output<T>(db_obj, "db_out", dims({d.O}), dt, "dy", ins, outs);
        py::object dx_obj = py::none();
        T* dxp = nullptr;
        if (need_dx) {
            py::array_t<T> dx = output<T>(dx_obj_in, "dx_out", dims({d.N, d.C, d.H, d.W}), dt, "dy", ins, outs);
            dxp = dx.mutable_data();
            dx_obj = std::move(dx);
        }
        auto dyc = input<T>(dy), xc = input<T>(x), wc = input<T>(w);
        T* dwp = dw.mutable_data();
        T* dbp = db.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::conv2d_backward<T>(dxp, dwp, dbp, dyc.data(), xc.data(), wc.data(), d, relu_input);
            else
                conv2d_backward<T>(dxp, dwp, dbp, dyc.data(), xc.data(), wc.data(), d, relu_input, isa, algo);
        }
        return py::make_tuple(dx_obj, dw, db);
    });
}

}  // namespace

MAQUETA_BINDINGS(conv2d) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "conv2d_forward" : "plain_conv2d_forward",
              fast ? &conv2d_forward_py<Tier::Fast> : &conv2d_forward_py<Tier::Plain>, py::arg("x"), py::arg("w"),
              py::arg("b"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
              py::arg("relu") = false, py::arg("out") = none, py::arg("activation") = "none",
              py::arg("alpha") = 0.0, py::arg("weight_scale") = none);
        m.def(fast ? "conv2d_backward" : "plain_conv2d_backward",
              fast ? &conv2d_backward_py<Tier::Fast> : &conv2d_backward_py<Tier::Plain>, py::arg("dy"), py::arg("x"),
              py::arg("w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
              py::arg("need_dx"), py::arg("relu_input") = false, py::arg("dx_out") = none, py::arg("dw_out") = none,
              py::arg("db_out") = none);
    }
    m.def("_set_conv_algo", [](const std::string& name) {
        for (int a = 0; a < 5; ++a)
            if (name == kAlgoNames[a]) return g_forced_algo.store(a, std::memory_order_relaxed);
        value_error("conv algorithm must be 'auto', 'direct', 'im2col', 'pixel' or 'winograd', got '" + name + "'");
    }, py::arg("name"), "Testing aid: force a convolution algorithm ('auto' chooses by shape) in later calls.");
    m.def("_get_conv_algo", []() { return std::string(kAlgoNames[(int)forced_algo()]); });
}

}  // namespace bind
}  // namespace maqueta
