// RMSprop binding: rmsprop_update (in place), and its plain twin plain_rmsprop_update.
#include "common.h"

#include <cmath>

#include "maqueta/rmsprop.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

void check_real(double v, const char* name, double lo, double hi) {
    if (!std::isfinite(v) || v < lo || v > hi)
        value_error(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                    std::to_string(v));
}

// An optional state vector updated in place: None or [P] like param.
bool optional_state(const py::handle& obj, py::array& a, const char* name, DType dt, const py::array& p) {
    if (obj.is_none()) return false;
    a = as_ndarray(obj, name);
    check_inplace(a, name, dt, "param");
    check_same_shape(p, "param", a, name);
    return true;
}

template <Tier tier>
void rmsprop_update_py(const py::handle& p_obj, const py::handle& g_obj, const py::handle& sq_obj,
                       const py::handle& avg_obj, const py::handle& buf_obj, double lr, double alpha, double eps,
                       double weight_decay, double momentum) {
    py::array p = as_ndarray(p_obj, "param");
    const DType dt = call_dtype(p, "param");
    py::array g = as_ndarray(g_obj, "grad"), sq = as_ndarray(sq_obj, "square_avg");
    check_inplace(p, "param", dt, "param");
    check_dtype(g, "grad", dt, "param");
    check_inplace(sq, "square_avg", dt, "param");
    check_same_shape(p, "param", g, "grad");
    check_same_shape(p, "param", sq, "square_avg");
    py::array avg, buf;
    const bool centered = optional_state(avg_obj, avg, "grad_avg", dt, p);
    const bool with_buffer = optional_state(buf_obj, buf, "momentum_buffer", dt, p);
    check_real(lr, "lr", 0.0, 1e30);
    check_real(alpha, "alpha", 0.0, 1.0);
    check_real(eps, "eps", 0.0, 1e30);
    check_real(weight_decay, "weight_decay", 0.0, 1e30);
    check_real(momentum, "momentum", 0.0, 1e30);
    if (momentum != 0 && !with_buffer) value_error("momentum > 0 needs a momentum_buffer");
    std::vector<std::pair<const py::array*, const char*>> operands{{&p, "param"}, {&sq, "square_avg"}, {&g, "grad"}};
    if (centered) operands.emplace_back(&avg, "grad_avg");
    if (with_buffer) operands.emplace_back(&buf, "momentum_buffer");
    check_no_overlap(operands);
    const int64_t P = (int64_t)p.size();
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        auto gc = input<T>(g);
        T* pp = static_cast<T*>(p.mutable_data());
        T* sp = static_cast<T*>(sq.mutable_data());
        T* ap = centered ? static_cast<T*>(avg.mutable_data()) : nullptr;
        T* bp = with_buffer && momentum != 0 ? static_cast<T*>(buf.mutable_data()) : nullptr;
        py::gil_scoped_release nogil;
        if constexpr (tier == Tier::Plain)
            plain::rmsprop_update<T>(pp, sp, ap, bp, gc.data(), P, lr, alpha, eps, weight_decay, momentum);
        else
            rmsprop_update<T>(pp, sp, ap, bp, gc.data(), P, lr, alpha, eps, weight_decay, momentum);
        return 0;
    });
}

}  // namespace

MAQUETA_BINDINGS(rmsprop) {
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "rmsprop_update" : "plain_rmsprop_update",
              fast ? &rmsprop_update_py<Tier::Fast> : &rmsprop_update_py<Tier::Plain>, py::arg("param"),
              py::arg("grad"), py::arg("square_avg"), py::arg("grad_avg"), py::arg("momentum_buffer"), py::arg("lr"),
              py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"));
    }
}

}  // namespace bind
}  // namespace maqueta
