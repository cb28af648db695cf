// Optimizer bindings: adam_update, sgd_update (in place; and their plain twins plain_adam_update,
// plain_sgd_update), and all_finite.
#include "common.h"

#include <cmath>

#include "maqueta/optim.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

void check_real(double v, const char* name, double lo, double hi, bool hi_open) {
    if (!std::isfinite(v) || v < lo || (hi_open ? v >= hi : v > hi))
        value_error(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + (hi_open ? ")" : "]") +
                    ", got " + std::to_string(v));
}

template <Tier tier>
void adam_update_py(const py::handle& p_obj, const py::handle& g_obj, const py::handle& m_obj, const py::handle& v_obj,
                    int64_t step, double lr, double beta1, double beta2, double eps, double weight_decay,
                    bool bias_correction) {
    py::array p = as_ndarray(p_obj, "param");
    const DType dt = call_dtype(p, "param");
    py::array g = as_ndarray(g_obj, "grad"), m = as_ndarray(m_obj, "m"), v = as_ndarray(v_obj, "v");
    check_inplace(p, "param", dt, "param");
    check_dtype(g, "grad", dt, "param");
    check_inplace(m, "m", dt, "param");
    check_inplace(v, "v", dt, "param");
    check_same_shape(p, "param", g, "grad");
    check_same_shape(p, "param", m, "m");
    check_same_shape(p, "param", v, "v");
    check_no_overlap({{&p, "param"}, {&m, "m"}, {&v, "v"}, {&g, "grad"}});
    if (step < 1) value_error("step must be >= 1 (the count of updates including this one), got " + std::to_string(step));
    check_real(lr, "lr", 0.0, 1e30, false);
    check_real(beta1, "beta1", 0.0, 1.0, true);
    check_real(beta2, "beta2", 0.0, 1.0, true);
    check_real(eps, "eps", 0.0, 1e30, false);
    check_real(weight_decay, "weight_decay", 0.0, 1e30, false);
    const int64_t P = (int64_t)p.size();
    const IsaKernels& isa = maqueta::isa();
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        auto gc = input<T>(g);
        T* pp = static_cast<T*>(p.mutable_data());
        T* mp = static_cast<T*>(m.mutable_data());
        T* vp = static_cast<T*>(v.mutable_data());
        py::gil_scoped_release nogil;
        if constexpr (tier == Tier::Plain)
            plain::adam_update<T>(pp, mp, vp, gc.data(), P, step, lr, beta1, beta2, eps, weight_decay, bias_correction);
        else
            adam_update<T>(pp, mp, vp, gc.data(), P, step, lr, beta1, beta2, eps, weight_decay, bias_correction, isa);
        return 0;
    });
}

template <Tier tier>
void sgd_update_py(const py::handle& p_obj, const py::handle& g_obj, const py::handle& vel_obj, double lr,
                   double momentum, double weight_decay, bool nesterov) {
    py::array p = as_ndarray(p_obj, "param");
    const DType dt = call_dtype(p, "param");
    py::array g = as_ndarray(g_obj, "grad");
    check_inplace(p, "param", dt, "param");
    check_dtype(g, "grad", dt, "param");
    check_same_shape(p, "param", g, "grad");
    check_real(lr, "lr", 0.0, 1e30, false);
    check_real(momentum, "momentum", 0.0, 1e30, false);
    check_real(weight_decay, "weight_decay", 0.0, 1e30, false);
    if (nesterov && momentum == 0.0) value_error("nesterov momentum needs momentum > 0");
    py::array vel;
    const bool has_vel = !vel_obj.is_none();
    if (momentum != 0.0 && !has_vel) value_error("velocity is required when momentum is not 0");
    if (has_vel) {
        vel = as_ndarray(vel_obj, "velocity");
        check_inplace(vel, "velocity", dt, "param");
        check_same_shape(p, "param", vel, "velocity");
        check_no_overlap({{&p, "param"}, {&vel, "velocity"}, {&g, "grad"}});
    } else {
        check_no_overlap({{&p, "param"}, {&g, "grad"}});
    }
    const int64_t P = (int64_t)p.size();
    const IsaKernels& isa = maqueta::isa();
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        auto gc = input<T>(g);
        T* pp = static_cast<T*>(p.mutable_data());
        T* vp = has_vel ? static_cast<T*>(vel.mutable_data()) : nullptr;
        py::gil_scoped_release nogil;
        if constexpr (tier == Tier::Plain)
            plain::sgd_update<T>(pp, vp, gc.data(), P, lr, momentum, weight_decay, nesterov);
        else
            sgd_update<T>(pp, vp, gc.data(), P, lr, momentum, weight_decay, nesterov, isa);
        return 0;
    });
}

bool all_finite_py(const py::handle& x_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    const IsaKernels& isa = maqueta::isa();
    return dispatch(dt, [&](auto tag) -> bool {
        using T = decltype(tag);
        auto xc = input<T>(x);
        py::gil_scoped_release nogil;
        return all_finite<T>(xc.data(), (int64_t)xc.size(), isa);
    });
}

}  // namespace

MAQUETA_BINDINGS(optim) {
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "adam_update" : "plain_adam_update", fast ? &adam_update_py<Tier::Fast> : &adam_update_py<Tier::Plain>,
              py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::arg("step"), py::arg("lr"),
              py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("bias_correction"));
        m.def(fast ? "sgd_update" : "plain_sgd_update", fast ? &sgd_update_py<Tier::Fast> : &sgd_update_py<Tier::Plain>,
              py::arg("param"), py::arg("grad"), py::arg("velocity"), py::arg("lr"), py::arg("momentum"),
              py::arg("weight_decay"), py::arg("nesterov"));
    }
    m.def("all_finite", &all_finite_py, py::arg("x"));
}

}  // namespace bind
}  // namespace maqueta
