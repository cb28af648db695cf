// Element-wise activation bindings: activation_forward, activation_backward, and their plain twins
// plain_activation_*.
#include "common.h"

#include <cmath>

#include "maqueta/activation.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

// backward: also "elu_from_output", the ELU's derivative from its output (for a fused ELU).
Activation activation_kind(const std::string& kind, bool backward) {
    if (kind == "leaky_relu") return Activation::LeakyRelu;
    if (kind == "elu") return Activation::Elu;
    if (kind == "gelu") return Activation::Gelu;
    if (kind == "gelu_tanh") return Activation::GeluTanh;
    if (backward && kind == "elu_from_output") return Activation::EluFromOutput;
    value_error("kind must be 'leaky_relu', 'elu', 'gelu' or 'gelu_tanh'" +
                std::string(backward ? " (or 'elu_from_output')" : "") + ", got '" + kind + "'");
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()); }

void check_alpha(double alpha) {
    if (!std::isfinite(alpha)) value_error("alpha must be finite, got " + std::to_string(alpha));
}

template <Tier tier>
py::array activation_forward_py(const py::handle& x_obj, const std::string& kind_name, double alpha,
                                const py::handle& out_obj) {
    const IsaKernels& isa = maqueta::isa();
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    const Activation kind = activation_kind(kind_name, false);
    check_alpha(alpha);
    const int64_t n = (int64_t)x.size();
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", shape_of(x), dt, "x", {{&x, "x"}}, outs);
        auto xc = input<T>(x);
        T* yp = y.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::activation_forward<T>(yp, xc.data(), n, kind, alpha);
            else
                activation_forward<T>(yp, xc.data(), n, kind, alpha, isa);
        }
        return std::move(y);
    });
}

template <Tier tier>
py::array activation_backward_py(const py::handle& dy_obj, const py::handle& x_obj, const std::string& kind_name,
                                 double alpha, const py::handle& out_obj) {
    const IsaKernels& isa = maqueta::isa();
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    py::array x = as_ndarray(x_obj, "x");
    check_dtype(x, "x", dt, "dy");
    check_same_shape(x, "x", dy, "dy");
    const Activation kind = activation_kind(kind_name, true);
    check_alpha(alpha);
    const int64_t n = (int64_t)x.size();
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> dx = output<T>(out_obj, "out", shape_of(x), dt, "dy", {{&dy, "dy"}, {&x, "x"}}, outs);
        auto dyc = input<T>(dy), xc = input<T>(x);
        T* dxp = dx.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::activation_backward<T>(dxp, dyc.data(), xc.data(), n, kind, alpha);
            else
                activation_backward<T>(dxp, dyc.data(), xc.data(), n, kind, alpha, isa);
        }
        return std::move(dx);
    });
}

}  // namespace

MAQUETA_BINDINGS(activation) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "activation_forward" : "plain_activation_forward",
              fast ? &activation_forward_py<Tier::Fast> : &activation_forward_py<Tier::Plain>, py::arg("x"),
              py::arg("kind"), py::arg("alpha") = 0.01, py::arg("out") = none);
        m.def(fast ? "activation_backward" : "plain_activation_backward",
              fast ? &activation_backward_py<Tier::Fast> : &activation_backward_py<Tier::Plain>, py::arg("dy"),
              py::arg("x"), py::arg("kind"), py::arg("alpha") = 0.01, py::arg("out") = none);
    }
}

}  // namespace bind
}  // namespace maqueta
