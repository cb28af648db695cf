// Batch normalisation bindings: batchnorm_forward, batchnorm_backward, channel_affine, and their plain
// twins plain_batchnorm_*, plain_channel_affine.
#include "common.h"

#include <cmath>

#include "maqueta/normalization.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

struct ChannelDims {
    int64_t N, C, S;
};

// x as [N, C, S]: (N, C) dense features or (N, C, H, W) planes.
ChannelDims channel_dims(const py::array& x, const char* name) {
    if (x.ndim() != 2 && x.ndim() != 4)
        value_error(std::string(name) + " must be 2-D [N, C] or 4-D [N, C, H, W], got shape " + shape_str(x));
    check_nonempty(x, name);
    const int64_t S = x.ndim() == 4 ? checked_product({(int64_t)x.shape(2), (int64_t)x.shape(3)}, name) : 1;
    checked_product({(int64_t)x.shape(0), (int64_t)x.shape(1), S}, name);
    return ChannelDims{x.shape(0), x.shape(1), S};
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()); }

// A per-channel vector operand: [C] of the call's dtype.
py::array channel_vector(const py::handle& obj, const char* name, DType dt, int64_t C, const py::array& x) {
    py::array v = as_ndarray(obj, name);
    check_dtype(v, name, dt, "x");
    if (v.ndim() != 1 || v.shape(0) != C)
        value_error(std::string(name) + " must have shape (" + std::to_string(C) + ",) (one per channel of x " +
                    shape_str(x) + "), got " + shape_str(v));
    return v;
}

void check_eps(double eps) {
    if (!std::isfinite(eps) || eps <= 0 || eps > 1e30) value_error("eps must be in (0, 1e30], got " + std::to_string(eps));
}

template <Tier tier>
py::tuple batchnorm_forward_py(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj, double eps,
                               const py::handle& out_obj, bool relu) {
    const IsaKernels& isa = maqueta::isa();
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    const ChannelDims d = channel_dims(x, "x");
    check_eps(eps);
    if (w_obj.is_none() != b_obj.is_none()) value_error("weight and bias must both be given or both be None");
    const bool affine = !w_obj.is_none();
    py::array w, b;
    if (affine) {
        w = channel_vector(w_obj, "weight", dt, d.C, x);
        b = channel_vector(b_obj, "bias", dt, d.C, x);
    }
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", shape_of(x), dt, "x",
                                     {{&x, "x"}, {affine ? &w : nullptr, "weight"}, {affine ? &b : nullptr, "bias"}}, outs);
        py::array_t<T> mean(dims({d.C})), var(dims({d.C}));
        auto xc = input<T>(x);
        py::array_t<T> wc, bc;
        if (affine) {
            wc = input<T>(w);
            bc = input<T>(b);
        }
        T *yp = y.mutable_data(), *mp = mean.mutable_data(), *vp = var.mutable_data();
        const T* wp = affine ? wc.data() : nullptr;
        const T* bp = affine ? bc.data() : nullptr;
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::batchnorm_forward<T>(yp, mp, vp, xc.data(), wp, bp, d.N, d.C, d.S, eps, relu);
            else
                batchnorm_forward<T>(yp, mp, vp, xc.data(), wp, bp, d.N, d.C, d.S, eps, relu, isa);
        }
        return py::make_tuple(y, mean, var);
    });
}

template <Tier tier>
py::tuple batchnorm_backward_py(const py::handle& dy_obj, const py::handle& x_obj, const py::handle& w_obj,
                                const py::handle& mean_obj, const py::handle& var_obj, double eps,
                                const py::handle& dx_obj, const py::handle& dw_obj, const py::handle& db_obj,
                                const py::handle& relu_obj) {
    const IsaKernels& isa = maqueta::isa();
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    py::array x = as_ndarray(x_obj, "x");
    check_dtype(x, "x", dt, "dy");
    const ChannelDims d = channel_dims(x, "x");
    check_same_shape(x, "x", dy, "dy");
    check_eps(eps);
    const bool affine = !w_obj.is_none();
    py::array w;
    if (affine) w = channel_vector(w_obj, "weight", dt, d.C, x);
    py::array mean = channel_vector(mean_obj, "mean", dt, d.C, x), var = channel_vector(var_obj, "var", dt, d.C, x);
    const bool has_relu = !relu_obj.is_none();
    py::array relu_y;
    if (has_relu) {
        relu_y = as_ndarray(relu_obj, "relu_output");
        check_dtype(relu_y, "relu_output", dt, "dy");
        check_same_shape(dy, "dy", relu_y, "relu_output");
    }
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        const Inputs ins{{&dy, "dy"}, {&x, "x"}, {affine ? &w : nullptr, "weight"}, {&mean, "mean"}, {&var, "var"},
                         {has_relu ? &relu_y : nullptr, "relu_output"}};
        py::array_t<T> dx = output<T>(dx_obj, "dx_out", shape_of(x), dt, "dy", ins, outs);
        py::object dw_result = py::none(), db_result = py::none();
        T *dwp = nullptr, *dbp = nullptr;
        if (affine) {
            py::array_t<T> dw = output<T>(dw_obj, "dw_out", dims({d.C}), dt, "dy", ins, outs);
            py::array_t<T> db = output<T>(db_obj, "db_out", dims({d.C}), dt, "dy", ins, outs);
            dwp = dw.mutable_data();
            dbp = db.mutable_data();
            dw_result = std::move(dw);
            db_result = std::move(db);
        }
        auto dyc = input<T>(dy), xc = input<T>(x), mc = input<T>(mean), vc = input<T>(var);
        py::array_t<T> wc, rc;
        if (affine) wc = input<T>(w);
        if (has_relu) rc = input<T>(relu_y);
        T* dxp = dx.mutable_data();
        const T* wp = affine ? wc.data() : nullptr;
        const T* rp = has_relu ? rc.data() : nullptr;
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::batchnorm_backward<T>(dxp, dwp, dbp, dyc.data(), rp, xc.data(), wp, mc.data(), vc.data(), d.N,
                                             d.C, d.S, eps);
            else
                batchnorm_backward<T>(dxp, dwp, dbp, dyc.data(), rp, xc.data(), wp, mc.data(), vc.data(), d.N, d.C,
                                      d.S, eps, isa);
        }
        return py::make_tuple(dx, dw_result, db_result);
    });
}

template <Tier tier>
py::array channel_affine_py(const py::handle& x_obj, const py::handle& scale_obj, const py::handle& shift_obj,
                            const py::handle& out_obj, bool relu) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    const ChannelDims d = channel_dims(x, "x");
    py::array scale = channel_vector(scale_obj, "scale", dt, d.C, x), shift = channel_vector(shift_obj, "shift", dt, d.C, x);
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", shape_of(x), dt, "x",
                                     {{&x, "x"}, {&scale, "scale"}, {&shift, "shift"}}, outs);
        auto xc = input<T>(x), sc = input<T>(scale), hc = input<T>(shift);
        T* yp = y.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::channel_affine<T>(yp, xc.data(), sc.data(), hc.data(), d.N, d.C, d.S, relu);
            else
                channel_affine<T>(yp, xc.data(), sc.data(), hc.data(), d.N, d.C, d.S, relu);
        }
        return std::move(y);
    });
}

}  // namespace

MAQUETA_BINDINGS(normalization) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "batchnorm_forward" : "plain_batchnorm_forward",
              fast ? &batchnorm_forward_py<Tier::Fast> : &batchnorm_forward_py<Tier::Plain>, py::arg("x"),
              py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("out") = none, py::arg("relu") = false);
        m.def(fast ? "batchnorm_backward" : "plain_batchnorm_backward",
              fast ? &batchnorm_backward_py<Tier::Fast> : &batchnorm_backward_py<Tier::Plain>, py::arg("dy"),
              py::arg("x"), py::arg("weight"), py::arg("mean"), py::arg("var"), py::arg("eps"), py::arg("dx_out") = none,
              py::arg("dw_out") = none, py::arg("db_out") = none, py::arg("relu_output") = none);
        m.def(fast ? "channel_affine" : "plain_channel_affine",
              fast ? &channel_affine_py<Tier::Fast> : &channel_affine_py<Tier::Plain>, py::arg("x"), py::arg("scale"),
              py::arg("shift"), py::arg("out") = none, py::arg("relu") = false);
    }
}

}  // namespace bind
}  // namespace maqueta
