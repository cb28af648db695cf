// Batch-lane bindings (private: the model's plan uses them): _lanes_width, _lanes_pack,
// _lanes_unpack, _lanes_conv2d_forward/backward, _lanes_maxpool2x2_forward/backward.
#include "common.h"

#include <algorithm>

#include "maqueta/lanes.h"

namespace maqueta {
namespace bind {
namespace {

// Lane arrays are [B, C, H, W, V], C-contiguous, of the call's dtype, with V the lane count of the
// instruction set the call runs on: read once per call, the arrays are checked against it and the
// kernel runs on it.
int64_t lane_count(DType dt, const IsaKernels& isa) { return dt == DType::F32 ? isa.lanes<float>() : isa.lanes<double>(); }

void check_lanes(const py::array& a, const char* name, DType dt, const char* first, const IsaKernels& isa) {
    check_dtype(a, name, dt, first);
    check_rank(a, name, 5, "[B, C, H, W, V]");
    check_nonempty(a, name);
    if (!(a.flags() & py::array::c_style) || !aligned(a))
        value_error(std::string(name) + " must be C-contiguous and aligned");
    if (a.shape(4) != lane_count(dt, isa))
        value_error(std::string(name) + " has " + std::to_string(a.shape(4)) + " lanes but the active instruction set " +
                    "uses " + std::to_string(lane_count(dt, isa)) + ": shape " + shape_str(a));
}

void check_writeable_lanes(const py::array& a, const char* name, DType dt, const char* first,
                           const IsaKernels& isa) {
    check_lanes(a, name, dt, first, isa);
    if (!a.writeable()) value_error(std::string(name) + " is read-only");
}

void same_dims(const py::array& a, const char* an, std::initializer_list<int64_t> want) {
    int i = 0;
    for (int64_t v : want) {
        if (a.shape(i) != v) {
            std::string w = "(";
            int j = 0;
            for (int64_t u : want) w += (j++ ? ", " : "") + std::to_string(u);
            value_error(std::string(an) + " must have shape " + w + "), got " + shape_str(a));
        }
        ++i;
    }
}

int64_t lanes_width_py(const py::handle& dtype) {
    py::dtype dt = py::dtype::from_args(py::reinterpret_borrow<py::object>(dtype));
    if (dt.is(py::dtype::of<float>())) return maqueta::isa().lanes<float>();
    if (dt.is(py::dtype::of<double>())) return maqueta::isa().lanes<double>();
    type_error("lane width is defined for float32 and float64, got " + std::string(py::str(dt)));
}

void lanes_pack_py(const py::handle& flat_obj, const py::handle& out_obj) {
    py::array flat = as_ndarray(flat_obj, "x");
    const DType dt = call_dtype(flat, "x");
    const IsaKernels& isa = maqueta::isa();
    py::array out = as_ndarray(out_obj, "out");
    check_writeable_lanes(out, "out", dt, "x", isa);
    if (flat.ndim() < 2 || !(flat.flags() & py::array::c_style) || !aligned(flat))
        value_error("x must be C-contiguous, aligned, with a batch dimension");
    const int64_t N = flat.shape(0), V = out.shape(4), E = out.shape(1) * out.shape(2) * out.shape(3);
    if (checked_product({E}, "out") != (int64_t)flat.size() / std::max<int64_t>(N, 1) || (N + V - 1) / V != out.shape(0))
        value_error("out " + shape_str(out) + " does not hold x " + shape_str(flat) + " in blocks of " + std::to_string(V));
    if (overlaps(flat, out)) value_error("x and out share memory");
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        const T* src = static_cast<const T*>(flat.data());
        T* dst = static_cast<T*>(out.mutable_data());
        py::gil_scoped_release nogil;
        lanes_pack<T>(dst, src, N, E, isa);
    });
}

void lanes_unpack_py(const py::handle& lanes_obj, const py::handle& out_obj) {
    py::array lanes = as_ndarray(lanes_obj, "lanes");
    const DType dt = call_dtype(lanes, "lanes");
    const IsaKernels& isa = maqueta::isa();
    check_lanes(lanes, "lanes", dt, "lanes", isa);
    py::array out = as_ndarray(out_obj, "out");
    check_inplace(out, "out", dt, "lanes");
    const int64_t V = lanes.shape(4), E = lanes.shape(1) * lanes.shape(2) * lanes.shape(3);
    if (out.ndim() < 2 || out.shape(0) < 1) value_error("out must have a batch dimension");
    const int64_t N = out.shape(0);
    if ((int64_t)out.size() != checked_product({N, E}, "out") || (N + V - 1) / V != lanes.shape(0))
        value_error("out " + shape_str(out) + " does not match lanes " + shape_str(lanes));
    if (overlaps(lanes, out)) value_error("lanes and out share memory");
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        const T* src = static_cast<const T*>(lanes.data());
        T* dst = static_cast<T*>(out.mutable_data());
        py::gil_scoped_release nogil;
        lanes_unpack<T>(dst, src, N, E, isa);
    });
}

py::dtype code_dtype(DType dt) { return dt == DType::F32 ? py::dtype::of<int32_t>() : py::dtype::of<int64_t>(); }

void check_code(const py::array& code, const char* name, DType dt, bool writeable) {
    if (!code.dtype().is(code_dtype(dt)) || !(code.flags() & py::array::c_style) || (writeable && !code.writeable()))
        type_error(std::string(name) + " must be a " + (writeable ? "writeable " : "") + "C-contiguous array of " +
                   std::string(py::str(code_dtype(dt))));
}

// The lane kernels count codes outside 0..3 as they read them (such a window passes no gradient);
// the search for one to name runs only then.
template <typename C>
void explain_bad_code(const py::array& code, const char* name) {
    const C* c = static_cast<const C*>(code.data());
    for (int64_t i = 0; i < (int64_t)code.size(); ++i)
        if (c[i] < 0 || c[i] > 3)
            value_error(std::string(name) + " holds " + std::to_string(c[i]) + " at flat position " + std::to_string(i) +
                        ", not a 2x2 window place (0..3); the gradients are incomplete");
    value_error(std::string(name) + " changed during the call (another thread?); the gradients are incomplete");
}

Conv2dDims lane_conv_dims(const py::array& x, const py::array& w) {
    check_rank(w, "w", 4, "[O, C, KH, KW]");
    check_nonempty(w, "w");
    Conv2dDims d{};
    d.N = x.shape(0); d.C = x.shape(1); d.H = x.shape(2); d.W = x.shape(3);
    d.O = w.shape(0); d.KH = w.shape(2); d.KW = w.shape(3);
    d.SH = d.SW = 1;
    if (w.shape(1) != d.C) value_error("w has " + std::to_string(w.shape(1)) + " input channels but x has " + std::to_string(d.C));
    if (d.KH > d.H || d.KW > d.W) value_error("kernel larger than the input: x " + shape_str(x) + ", w " + shape_str(w));
    d.OH = d.H - d.KH + 1;
    d.OW = d.W - d.KW + 1;
    return d;
}

// The codes of a 2x2 pool over the convolution d: `pooled` (named pooled_name) must have the pool's
// output shape and the codes its shape and dtype.
py::array pool_codes(const Conv2dDims& d, const py::array& x, const py::array& w, const py::array& pooled,
                     const char* pooled_name, const py::handle& code_obj, const char* code_name, DType dt,
                     bool writeable) {
    if (d.OH < 2 || d.OW < 2)
        value_error("the convolution's output (" + std::to_string(d.OH) + "x" + std::to_string(d.OW) +
                    ") is smaller than a 2x2 window: x " + shape_str(x) + ", w " + shape_str(w));
    same_dims(pooled, pooled_name, {d.N, d.O, d.OH / 2, d.OW / 2});
    py::array code = as_ndarray(code_obj, code_name);
    check_code(code, code_name, dt, writeable);
    check_same_shape(pooled, pooled_name, code, code_name);
    return code;
}

void lanes_conv_forward_py(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj, bool relu,
                           const py::handle& out_obj, const py::handle& code_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    const IsaKernels& isa = maqueta::isa();
    check_lanes(x, "x", dt, "x", isa);
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "x");
    const Conv2dDims d = lane_conv_dims(x, w);
    py::array out = as_ndarray(out_obj, "out");
    check_writeable_lanes(out, "out", dt, "x", isa);
    py::array code;
    const bool pooled = !code_obj.is_none();
    if (pooled) {   // out and code_out are the 2x2 pool of the convolution's output
        code = pool_codes(d, x, w, out, "out", code_obj, "code_out", dt, true);
    } else {
        same_dims(out, "out", {d.N, d.O, d.OH, d.OW});
    }
    py::array b;
    const bool has_b = optional_bias(b_obj, b, dt, "x", w);
    if (overlaps(out, x) || (has_b && overlaps(out, b))) value_error("out shares memory with x or b");
    if (pooled) check_no_overlap({{&code, "code_out"}, {&out, "out"}, {&x, "x"}, {&w, "w"}});
    if (pooled && has_b) check_no_overlap({{&code, "code_out"}, {&b, "b"}});
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        auto wc = input<T>(w);
        py::array_t<T> bc;
        if (has_b) bc = input<T>(b);
        const T* xp = static_cast<const T*>(x.data());
        T* yp = static_cast<T*>(out.mutable_data());
        auto* cp = pooled ? static_cast<typename LaneCode<T>::type*>(code.mutable_data()) : nullptr;
        const T* bp = has_b ? bc.data() : nullptr;
        py::gil_scoped_release nogil;
        lanes_conv2d_forward<T>(yp, cp, xp, wc.data(), bp, d, relu, isa);
    });
}

void lanes_conv_backward_py(const py::handle& dy_obj, const py::handle& x_obj, const py::handle& w_obj, bool relu_input,
                            const py::handle& dx_obj, const py::handle& dw_obj, const py::handle& db_obj,
                            const py::handle& code_obj, const py::handle& relu_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    const IsaKernels& isa = maqueta::isa();
    check_lanes(dy, "dy", dt, "dy", isa);
    py::array x = as_ndarray(x_obj, "x");
    check_lanes(x, "x", dt, "dy", isa);
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "dy");
    const Conv2dDims d = lane_conv_dims(x, w);
    py::array code, ry;
    const bool pooled = !code_obj.is_none(), has_relu = !relu_obj.is_none();
    if (has_relu && !pooled) value_error("relu_output is the output of a pool and needs its code");
    if (pooled) {   // dy is the gradient at the 2x2 pool of the convolution's output
        code = pool_codes(d, x, w, dy, "dy", code_obj, "code", dt, false);
        if (has_relu) {
            ry = as_ndarray(relu_obj, "relu_output");
            check_lanes(ry, "relu_output", dt, "dy", isa);
            check_same_shape(dy, "dy", ry, "relu_output");
        }
    } else {
        same_dims(dy, "dy", {d.N, d.O, d.OH, d.OW});
    }
    py::array dw = as_ndarray(dw_obj, "dw_out"), db = as_ndarray(db_obj, "db_out");
    check_inplace(dw, "dw_out", dt, "dy");
    check_inplace(db, "db_out", dt, "dy");
    if (dw.ndim() != 4 || dw.shape(0) != d.O || dw.shape(1) != d.C || dw.shape(2) != d.KH || dw.shape(3) != d.KW)
        value_error("dw_out must have the shape of w " + shape_str(w) + ", got " + shape_str(dw));
    if (db.ndim() != 1 || db.shape(0) != d.O) value_error("db_out must have shape (" + std::to_string(d.O) + ",)");
    py::array dx;
    const bool has_dx = !dx_obj.is_none();
    if (has_dx) {
        dx = as_ndarray(dx_obj, "dx_out");
        check_writeable_lanes(dx, "dx_out", dt, "dy", isa);
        same_dims(dx, "dx_out", {d.N, d.C, d.H, d.W});
    }
    check_no_overlap({{&dw, "dw_out"}, {&db, "db_out"}, {&dy, "dy"}, {&x, "x"}, {&w, "w"}});
    if (has_dx) check_no_overlap({{&dx, "dx_out"}, {&dw, "dw_out"}, {&db, "db_out"}, {&dy, "dy"}, {&x, "x"}, {&w, "w"}});
    if (pooled) check_no_overlap({{&code, "code"}, {&dw, "dw_out"}, {&db, "db_out"}});
    if (has_relu) check_no_overlap({{&ry, "relu_output"}, {&dw, "dw_out"}, {&db, "db_out"}});
    if (pooled && has_dx) check_no_overlap({{&dx, "dx_out"}, {&code, "code"}});
    if (has_relu && has_dx) check_no_overlap({{&dx, "dx_out"}, {&ry, "relu_output"}});
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        using C = typename LaneCode<T>::type;
        auto wc = input<T>(w);
        T* dxp = has_dx ? static_cast<T*>(dx.mutable_data()) : nullptr;
        T* dwp = static_cast<T*>(dw.mutable_data());
        T* dbp = static_cast<T*>(db.mutable_data());
        const T* dyp = static_cast<const T*>(dy.data());
        const C* cp = pooled ? static_cast<const C*>(code.data()) : nullptr;
        const T* rp = has_relu ? static_cast<const T*>(ry.data()) : nullptr;
        const T* xp = static_cast<const T*>(x.data());
        int64_t bad = 0;
        {
            py::gil_scoped_release nogil;
            lanes_conv2d_backward<T>(dxp, dwp, dbp, &bad, dyp, cp, rp, xp, wc.data(), d, relu_input, isa);
        }
        if (bad) explain_bad_code<C>(code, "code");
    });
}

void lanes_pool_forward_py(const py::handle& x_obj, const py::handle& out_obj, const py::handle& code_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    const IsaKernels& isa = maqueta::isa();
    check_lanes(x, "x", dt, "x", isa);
    py::array out = as_ndarray(out_obj, "out"), code = as_ndarray(code_obj, "code_out");
    check_writeable_lanes(out, "out", dt, "x", isa);
    Pool2dDims d{.N = x.shape(0), .C = x.shape(1), .H = x.shape(2), .W = x.shape(3), .KH = 2, .KW = 2, .SH = 2, .SW = 2,
                  .OH = x.shape(2) / 2, .OW = x.shape(3) / 2};
    if (d.OH < 1 || d.OW < 1) value_error("x " + shape_str(x) + " is smaller than a 2x2 window");
    same_dims(out, "out", {d.N, d.C, d.OH, d.OW});
    check_code(code, "code_out", dt, true);
    check_same_shape(out, "out", code, "code_out");
    check_no_overlap({{&x, "x"}, {&out, "out"}, {&code, "code_out"}});
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        using C = typename LaneCode<T>::type;
        const T* xp = static_cast<const T*>(x.data());
        T* yp = static_cast<T*>(out.mutable_data());
        C* cp = static_cast<C*>(code.mutable_data());
        py::gil_scoped_release nogil;
        lanes_maxpool2x2_forward<T>(yp, cp, xp, d, isa);
    });
}

void lanes_pool_backward_py(const py::handle& dy_obj, const py::handle& code_obj, const py::handle& relu_obj,
                            const py::handle& out_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    const IsaKernels& isa = maqueta::isa();
    check_lanes(dy, "dy", dt, "dy", isa);
    py::array code = as_ndarray(code_obj, "code");
    check_code(code, "code", dt, false);
    check_same_shape(dy, "dy", code, "code");
    py::array out = as_ndarray(out_obj, "out");
    check_writeable_lanes(out, "out", dt, "dy", isa);
    if (out.shape(0) != dy.shape(0) || out.shape(1) != dy.shape(1) || out.shape(2) / 2 != dy.shape(2) ||
        out.shape(3) / 2 != dy.shape(3))
        value_error("out " + shape_str(out) + " does not match dy " + shape_str(dy) + " under 2x2 pooling");
    py::array ry;
    const bool has_relu = !relu_obj.is_none();
    if (has_relu) {
        ry = as_ndarray(relu_obj, "relu_output");
        check_lanes(ry, "relu_output", dt, "dy", isa);
        check_same_shape(dy, "dy", ry, "relu_output");
    }
    check_no_overlap({{&out, "out"}, {&dy, "dy"}, {&code, "code"}});
    if (has_relu) check_no_overlap({{&out, "out"}, {&ry, "relu_output"}});
    Pool2dDims d{.N = out.shape(0), .C = out.shape(1), .H = out.shape(2), .W = out.shape(3), .KH = 2, .KW = 2, .SH = 2,
                  .SW = 2, .OH = dy.shape(2), .OW = dy.shape(3)};
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        using C = typename LaneCode<T>::type;
        const T* dyp = static_cast<const T*>(dy.data());
        const C* cp = static_cast<const C*>(code.data());
        const T* rp = has_relu ? static_cast<const T*>(ry.data()) : nullptr;
        T* dxp = static_cast<T*>(out.mutable_data());
        int64_t bad = 0;
        {
            py::gil_scoped_release nogil;
            lanes_maxpool2x2_backward<T>(dxp, &bad, dyp, cp, rp, d, isa);
        }
        if (bad) explain_bad_code<C>(code, "code");
    });
}


}  // namespace

MAQUETA_BINDINGS(lanes) {
    const py::object none = py::none();
    m.def("_lanes_width", &lanes_width_py, py::arg("dtype"));
    m.def("_lanes_pack", &lanes_pack_py, py::arg("x"), py::arg("out"));
    m.def("_lanes_unpack", &lanes_unpack_py, py::arg("lanes"), py::arg("out"));
    m.def("_lanes_conv2d_forward", &lanes_conv_forward_py, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("relu"),
          py::arg("out"), py::arg("code_out") = none);
    m.def("_lanes_conv2d_backward", &lanes_conv_backward_py, py::arg("dy"), py::arg("x"), py::arg("w"),
          py::arg("relu_input"), py::arg("dx_out"), py::arg("dw_out"), py::arg("db_out"), py::arg("code") = none,
          py::arg("relu_output") = none);
    m.def("_lanes_maxpool2x2_forward", &lanes_pool_forward_py, py::arg("x"), py::arg("out"), py::arg("code_out"));
    m.def("_lanes_maxpool2x2_backward", &lanes_pool_backward_py, py::arg("dy"), py::arg("code"),
          py::arg("relu_output"), py::arg("out"));
}

}  // namespace bind
}  // namespace maqueta
