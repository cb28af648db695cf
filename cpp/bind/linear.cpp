// Dense layer bindings: linear_forward, linear_backward, and their plain twins plain_linear_*.
#include "common.h"

#include "maqueta/linear.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

void linear_dims(const py::array& x, const py::array& w, int64_t& N, int64_t& IN, int64_t& OUT) {
    check_rank(x, "x", 2, "[N, IN]");
    check_rank(w, "w", 2, "[OUT, IN]");
    check_nonempty(x, "x");
    check_nonempty(w, "w");
    N = x.shape(0); IN = x.shape(1); OUT = w.shape(0);
    if (w.shape(1) != IN)
        value_error("w has " + std::to_string(w.shape(1)) + " input features but x has " + std::to_string(IN) + ": x " +
                    shape_str(x) + ", w " + shape_str(w) + " (w is [OUT, IN])");
    for (int64_t v : {N, IN, OUT})
        if (v > kMaxDim) value_error("x " + shape_str(x) + " or w " + shape_str(w) + " has a dimension that is too large");
    checked_product({N, OUT}, "the output");
}

template <Tier tier>
py::array linear_forward_py(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj, bool relu,
                            const py::handle& out_obj, const std::string& activation, double alpha) {
    const OutputActivation act = output_activation(relu, activation, alpha);
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "x");
    int64_t N, IN, OUT;
    linear_dims(x, w, N, IN, OUT);
    py::array b;
    const bool has_b = optional_bias(b_obj, b, dt, "x", w);
    const IsaKernels& isa = maqueta::isa();
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", dims({N, OUT}), dt, "x",
                                     {{&x, "x"}, {&w, "w"}, {has_b ? &b : nullptr, "b"}}, outs);
        auto xc = input<T>(x), wc = input<T>(w);
        py::array_t<T> bc;
        if (has_b) bc = input<T>(b);
        T* yp = y.mutable_data();
        const T* bp = has_b ? bc.data() : nullptr;
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::linear_forward<T>(yp, xc.data(), wc.data(), bp, N, IN, OUT, act);
            else
                linear_forward<T>(yp, xc.data(), wc.data(), bp, N, IN, OUT, act, isa);
        }
        return std::move(y);
    });
}

template <Tier tier>
py::tuple linear_backward_py(const py::handle& dy_obj, const py::handle& x_obj, const py::handle& w_obj, bool need_dx,
                             bool relu_input, const py::handle& dx_obj_in, const py::handle& dw_obj,
                             const py::handle& db_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    py::array x = as_ndarray(x_obj, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(x, "x", dt, "dy");
    check_dtype(w, "w", dt, "dy");
    int64_t N, IN, OUT;
    linear_dims(x, w, N, IN, OUT);
    check_rank(dy, "dy", 2, "[N, OUT]");
    if (dy.shape(0) != N || dy.shape(1) != OUT)
        value_error("dy must have shape (" + std::to_string(N) + ", " + std::to_string(OUT) + "), got " + shape_str(dy) +
                    ": x " + shape_str(x) + ", w " + shape_str(w));
    const IsaKernels& isa = maqueta::isa();
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        const std::vector<std::pair<const py::array*, const char*>> ins{{&dy, "dy"}, {&x, "x"}, {&w, "w"}};
        py::array_t<T> dw = output<T>(dw_obj, "dw_out", dims({OUT, IN}), dt, "dy", ins, outs);
        py::array_t<T> db = output<T>(db_obj, "db_out", dims({OUT}), dt, "dy", ins, outs);
        py::object dx_obj = py::none();
        T* dxp = nullptr;
        if (need_dx) {
            py::array_t<T> dx = output<T>(dx_obj_in, "dx_out", dims({N, IN}), dt, "dy", ins, outs);
            dxp = dx.mutable_data();
            dx_obj = std::move(dx);
        }
        auto dyc = input<T>(dy), xc = input<T>(x), wc = input<T>(w);
        T* dwp = dw.mutable_data();
        T* dbp = db.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::linear_backward<T>(dxp, dwp, dbp, dyc.data(), xc.data(), wc.data(), N, IN, OUT, relu_input);
            else
                linear_backward<T>(dxp, dwp, dbp, dyc.data(), xc.data(), wc.data(), N, IN, OUT, relu_input, isa);
        }
        return py::make_tuple(dx_obj, dw, db);
    });
}

}  // namespace

MAQUETA_BINDINGS(linear) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "linear_forward" : "plain_linear_forward",
              fast ? &linear_forward_py<Tier::Fast> : &linear_forward_py<Tier::Plain>, py::arg("x"), py::arg("w"),
              py::arg("b"), py::arg("relu") = false, py::arg("out") = none, py::arg("activation") = "none",
              py::arg("alpha") = 0.0);
        m.def(fast ? "linear_backward" : "plain_linear_backward",
              fast ? &linear_backward_py<Tier::Fast> : &linear_backward_py<Tier::Plain>, py::arg("dy"), py::arg("x"),
              py::arg("w"), py::arg("need_dx"), py::arg("relu_input") = false, py::arg("dx_out") = none,
              py::arg("dw_out") = none, py::arg("db_out") = none);
    }
}

}  // namespace bind
}  // namespace maqueta
