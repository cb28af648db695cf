// maqueta._core: the Python face of the kernels. This file only checks arguments, allocates
// outputs, releases the GIL and dispatches on dtype; the arithmetic lives in the kernel files.
// Every argument is checked here, because nothing a caller passes may crash the interpreter.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "maqueta/kernels.h"
#include "maqueta/runtime.h"

namespace py = pybind11;
using namespace maqueta;

namespace {

constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;      // any one size or hyper-parameter
constexpr int64_t kMaxElements = int64_t(1) << 58;       // any buffer, in elements

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

std::string pair_str(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }

enum class DType { F32, F64 };

const char* dtype_name(DType d) { return d == DType::F32 ? "float32" : "float64"; }

py::array as_ndarray(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        type_error(std::string(name) + " must be a numpy.ndarray, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    return py::reinterpret_borrow<py::array>(obj);
}

// The dtype of the call, taken from its first operand.
DType call_dtype(const py::array& a, const char* name) {
    if (a.dtype().is(py::dtype::of<float>())) return DType::F32;
    if (a.dtype().is(py::dtype::of<double>())) return DType::F64;
    type_error(std::string(name) + " must have dtype float32 or float64, got " + std::string(py::str(a.dtype())));
}

void check_dtype(const py::array& a, const char* name, DType dt, const char* first_name) {
    const bool ok = dt == DType::F32 ? a.dtype().is(py::dtype::of<float>()) : a.dtype().is(py::dtype::of<double>());
    if (!ok)
        type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) + " but " + first_name + " has " +
                   dtype_name(dt) + ": all operands of one call must share a dtype");
}

void check_rank(const py::array& a, const char* name, int rank, const char* layout) {
    if (a.ndim() != rank)
        value_error(std::string(name) + " must be " + std::to_string(rank) + "-D " + layout + ", got shape " + shape_str(a));
}

void check_nonempty(const py::array& a, const char* name) {
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.shape(i) == 0) value_error(std::string(name) + " has an empty dimension: shape " + shape_str(a));
}

int64_t checked_product(std::initializer_list<int64_t> dims, const std::string& what) {
    int64_t p = 1;
    for (int64_t d : dims) {
        if (d < 0 || __builtin_mul_overflow(p, d, &p) || p > kMaxElements)
            value_error(what + " is too large: its size overflows");
    }
    return p;
}

void check_hyper(int64_t v, const char* name, int64_t lo) {
    if (v < lo) value_error(std::string(name) + " must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
    if (v > kMaxDim) value_error(std::string(name) + " is too large: " + std::to_string(v));
}

constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;

// A read-only operand: any memory layout is accepted (copied into aligned C order when needed).
template <typename T>
py::array_t<T, py::array::c_style> input(const py::array& a) {
    return py::array_t<T, py::array::c_style | py::array::forcecast | kAligned>::ensure(a);
}

bool aligned(const py::array& a) { return (a.flags() & kAligned) != 0; }

// An operand updated in place: it must already be the buffer the caller holds.
void check_inplace(const py::array& a, const char* name, DType dt, const char* first_name) {
    check_dtype(a, name, dt, first_name);
    if (!(a.flags() & py::array::c_style))
        value_error(std::string(name) + " is updated in place, so it must be C-contiguous (got strides of a view); "
                    "pass numpy.ascontiguousarray(" + name + ") and keep that array");
    if (!a.writeable()) value_error(std::string(name) + " is updated in place but is read-only");
    if (!aligned(a)) value_error(std::string(name) + " is updated in place, so it must be aligned to its dtype");
}

bool overlaps(const py::array& a, const py::array& b) {
    if (a.nbytes() == 0 || b.nbytes() == 0) return false;
    // Bounds of each array's memory (conservative for strided views).
    auto bounds = [](const py::array& x, const char*& lo, const char*& hi) {
        const char* p = static_cast<const char*>(x.data());
        lo = hi = p;
        for (py::ssize_t i = 0; i < x.ndim(); ++i) {
            const py::ssize_t ext = (x.shape(i) - 1) * x.strides(i);
            if (ext < 0) lo += ext; else hi += ext;
        }
        hi += x.itemsize();
    };
    const char *alo, *ahi, *blo, *bhi;
    bounds(a, alo, ahi);
    bounds(b, blo, bhi);
    return alo < bhi && blo < ahi;
}

void check_no_overlap(const std::vector<std::pair<const py::array*, const char*>>& arrays) {
    for (size_t i = 0; i < arrays.size(); ++i)
        for (size_t j = i + 1; j < arrays.size(); ++j)
            if (overlaps(*arrays[i].first, *arrays[j].first))
                value_error(std::string(arrays[i].second) + " and " + arrays[j].second +
                            " share memory; an in-place update needs separate arrays");
}

void check_same_shape(const py::array& a, const char* an, const py::array& b, const char* bn) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
    if (!same)
        value_error(std::string(bn) + " must have the shape of " + an + ": " + an + " " + shape_str(a) + ", " + bn + " " +
                    shape_str(b));
}

// An output array: the caller's (checked like an in-place operand, and apart from every input
// and other output) or a new one when obj is None.
struct Outputs {
    std::vector<std::pair<py::array, std::string>> given;  // caller-supplied outputs, for overlap checks
};

template <typename T>
py::array_t<T> output(const py::handle& obj, const char* name, const std::vector<py::ssize_t>& shape, DType dt,
                      const char* first_name, const std::vector<std::pair<const py::array*, const char*>>& inputs,
                      Outputs& outs) {
    if (obj.is_none()) return py::array_t<T>(shape);
    py::array a = as_ndarray(obj, name);
    check_inplace(a, name, dt, first_name);
    bool same = a.ndim() == (py::ssize_t)shape.size();
    for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(i) == shape[i];
    if (!same) {
        std::string want = "(";
        for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
        value_error(std::string(name) + " must have shape " + want + (shape.size() == 1 ? ",)" : ")") + ", got " +
                    shape_str(a));
    }
    for (const auto& in : inputs)
        if (in.first && overlaps(a, *in.first))
            value_error(std::string(name) + " and " + in.second + " share memory; an output must be a separate array");
    for (const auto& o : outs.given)
        if (overlaps(a, o.first)) value_error(std::string(name) + " and " + o.second + " share memory");
    outs.given.emplace_back(a, name);
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

std::vector<py::ssize_t> dims(std::initializer_list<int64_t> v) { return std::vector<py::ssize_t>(v.begin(), v.end()); }

template <typename F>
auto dispatch(DType dt, F&& f) {
    if (dt == DType::F32) return f(float{});
    return f(double{});
}

// ---------------------------------------------------------------------------------------------
// conv2d
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

py::object conv2d_forward_py(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj,
                             int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool relu, const py::handle& out_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "x");
    const Conv2dDims d = conv_dims(x, w, sh, sw, ph, pw);
    py::array b;
    const bool has_b = !b_obj.is_none();
    if (has_b) {
        b = as_ndarray(b_obj, "b");
        check_dtype(b, "b", dt, "x");
        if (b.ndim() != 1 || b.shape(0) != d.O)
            value_error("b must have shape (" + std::to_string(d.O) + ",) (one per filter of w " + shape_str(w) +
                        "), got " + shape_str(b));
    }
    return dispatch(dt, [&](auto tag) -> py::object {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", dims({d.N, d.O, d.OH, d.OW}), dt, "x",
                                     {{&x, "x"}, {&w, "w"}, {has_b ? &b : nullptr, "b"}}, outs);
        auto xc = input<T>(x), wc = input<T>(w);
        py::array_t<T> bc;
        if (has_b) bc = input<T>(b);
        T* yp = y.mutable_data();
        const T* bp = has_b ? bc.data() : nullptr;
        {
            py::gil_scoped_release nogil;
            conv2d_forward<T>(yp, xc.data(), wc.data(), bp, d, relu);
        }
        return std::move(y);
    });
}

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
            conv2d_backward<T>(dxp, dwp, dbp, dyc.data(), xc.data(), wc.data(), d, relu_input);
        }
        return py::make_tuple(dx_obj, dw, db);
    });
}

// ---------------------------------------------------------------------------------------------
// max-pool
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
    Pool2dDims d{x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, sh, sw, 0, 0};
    if (kh > d.H || kw > d.W)
        value_error("kernel_size " + pair_str(kh, kw) + " is larger than the input " + pair_str(d.H, d.W) + ": x " +
                    shape_str(x));
    d.OH = (d.H - kh) / sh + 1;
    d.OW = (d.W - kw) / sw + 1;
    checked_product({d.N, d.C, d.H, d.W}, "x");
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
            maxpool2d_forward<T>(yp, ip, xc.data(), d);
        }
        return py::make_tuple(y, idx);
    });
}

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
    Pool2dDims d{shape[0], shape[1], shape[2], shape[3], 0, 0, 0, 0, dy.shape(2), dy.shape(3)};
    const int64_t HW = checked_product({d.H, d.W}, "x_shape's plane");
    checked_product({d.N, d.C, d.H, d.W}, "x_shape");
    auto ic = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(idx);
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

// ---------------------------------------------------------------------------------------------
// linear
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

py::array linear_forward_py(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj, bool relu,
                            const py::handle& out_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "x");
    int64_t N, IN, OUT;
    linear_dims(x, w, N, IN, OUT);
    py::array b;
    const bool has_b = !b_obj.is_none();
    if (has_b) {
        b = as_ndarray(b_obj, "b");
        check_dtype(b, "b", dt, "x");
        if (b.ndim() != 1 || b.shape(0) != OUT)
            value_error("b must have shape (" + std::to_string(OUT) + ",) for w " + shape_str(w) + ", got " + shape_str(b));
    }
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
            linear_forward<T>(yp, xc.data(), wc.data(), bp, N, IN, OUT, relu);
        }
        return std::move(y);
    });
}

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
            linear_backward<T>(dxp, dwp, dbp, dyc.data(), xc.data(), wc.data(), N, IN, OUT, relu_input);
        }
        return py::make_tuple(dx_obj, dw, db);
    });
}

// ---------------------------------------------------------------------------------------------
// optimizers
void check_real(double v, const char* name, double lo, double hi, bool hi_open) {
    if (!std::isfinite(v) || v < lo || (hi_open ? v >= hi : v > hi))
        value_error(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + (hi_open ? ")" : "]") +
                    ", got " + std::to_string(v));
}

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
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        auto gc = input<T>(g);
        T* pp = static_cast<T*>(p.mutable_data());
        T* mp = static_cast<T*>(m.mutable_data());
        T* vp = static_cast<T*>(v.mutable_data());
        py::gil_scoped_release nogil;
        adam_update<T>(pp, mp, vp, gc.data(), P, step, lr, beta1, beta2, eps, weight_decay, bias_correction);
        return 0;
    });
}

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
    dispatch(dt, [&](auto tag) {
        using T = decltype(tag);
        auto gc = input<T>(g);
        T* pp = static_cast<T*>(p.mutable_data());
        T* vp = has_vel ? static_cast<T*>(vel.mutable_data()) : nullptr;
        py::gil_scoped_release nogil;
        sgd_update<T>(pp, vp, gc.data(), P, lr, momentum, weight_decay, nesterov);
        return 0;
    });
}

// ---------------------------------------------------------------------------------------------
// losses and checks
py::tuple softmax_cross_entropy_py(const py::handle& z_obj, const py::handle& t_obj, const py::handle& out_obj) {
    py::array z = as_ndarray(z_obj, "logits");
    const DType dt = call_dtype(z, "logits");
    check_rank(z, "logits", 2, "[N, K]");
    check_nonempty(z, "logits");
    py::array t = as_ndarray(t_obj, "targets");
    if (t.dtype().kind() != 'i' && t.dtype().kind() != 'u')
        type_error("targets must hold integer class indices, got dtype " + std::string(py::str(t.dtype())));
    if (t.ndim() != 1 || t.shape(0) != z.shape(0))
        value_error("targets must have shape (" + std::to_string(z.shape(0)) + ",) for logits " + shape_str(z) +
                    ", got " + shape_str(t));
    const int64_t N = z.shape(0), K = z.shape(1);
    // a private copy: the kernel indexes with these, so nobody may change them after the check
    auto converted = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(t);
    std::vector<int64_t> targets(converted.data(), converted.data() + N);
    for (int64_t n = 0; n < N; ++n)
        if (targets[n] < 0 || targets[n] >= K)
            value_error("targets holds " + std::to_string(targets[n]) + " at position " + std::to_string(n) +
                        ", outside the " + std::to_string(K) + " classes of logits " + shape_str(z));
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> grad = output<T>(out_obj, "grad_out", dims({N, K}), dt, "logits", {{&z, "logits"}, {&t, "targets"}}, outs);
        auto zc = input<T>(z);
        T* gp = grad.mutable_data();
        double loss;
        {
            py::gil_scoped_release nogil;
            loss = softmax_cross_entropy<T>(gp, zc.data(), targets.data(), N, K);
        }
        return py::make_tuple(loss, grad);
    });
}

bool all_finite_py(const py::handle& x_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    return dispatch(dt, [&](auto tag) -> bool {
        using T = decltype(tag);
        auto xc = input<T>(x);
        py::gil_scoped_release nogil;
        return all_finite<T>(xc.data(), (int64_t)xc.size());
    });
}

// ---------------------------------------------------------------------------------------------
// batch-lane kernels (private: the model's plan uses them). Lane arrays are [B, C, H, W, V],
// C-contiguous, of the call's dtype, with V the active instruction set's lane count.
// A lane kernel returns false when the instruction set (and so the lane count the arrays were
// checked against) changed between the checks and the call: only _set_isa from another thread can.
template <typename F>
void dispatch_lanes(DType dt, F&& kernel) {
    if (dispatch(dt, kernel)) throw std::runtime_error("the instruction set changed during a lane kernel call");
}

int64_t lane_count(DType dt) { return dt == DType::F32 ? lane_width<float>() : lane_width<double>(); }

void check_lanes(const py::array& a, const char* name, DType dt, const char* first) {
    check_dtype(a, name, dt, first);
    check_rank(a, name, 5, "[B, C, H, W, V]");
    check_nonempty(a, name);
    if (!(a.flags() & py::array::c_style) || !aligned(a))
        value_error(std::string(name) + " must be C-contiguous and aligned");
    if (a.shape(4) != lane_count(dt))
        value_error(std::string(name) + " has " + std::to_string(a.shape(4)) + " lanes but the active instruction set " +
                    "uses " + std::to_string(lane_count(dt)) + ": shape " + shape_str(a));
}

void check_writeable_lanes(const py::array& a, const char* name, DType dt, const char* first) {
    check_lanes(a, name, dt, first);
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
    if (dt.is(py::dtype::of<float>())) return lane_width<float>();
    if (dt.is(py::dtype::of<double>())) return lane_width<double>();
    type_error("lane width is defined for float32 and float64, got " + std::string(py::str(dt)));
}

void lanes_pack_py(const py::handle& flat_obj, const py::handle& out_obj) {
    py::array flat = as_ndarray(flat_obj, "x");
    const DType dt = call_dtype(flat, "x");
    py::array out = as_ndarray(out_obj, "out");
    check_writeable_lanes(out, "out", dt, "x");
    if (flat.ndim() < 2 || !(flat.flags() & py::array::c_style) || !aligned(flat))
        value_error("x must be C-contiguous, aligned, with a batch dimension");
    const int64_t N = flat.shape(0), V = out.shape(4), E = out.shape(1) * out.shape(2) * out.shape(3);
    if (checked_product({E}, "out") != (int64_t)flat.size() / std::max<int64_t>(N, 1) || (N + V - 1) / V != out.shape(0))
        value_error("out " + shape_str(out) + " does not hold x " + shape_str(flat) + " in blocks of " + std::to_string(V));
    if (overlaps(flat, out)) value_error("x and out share memory");
    dispatch_lanes(dt, [&](auto tag) {
        using T = decltype(tag);
        const T* src = static_cast<const T*>(flat.data());
        T* dst = static_cast<T*>(out.mutable_data());
        py::gil_scoped_release nogil;
        return lanes_pack<T>(dst, src, N, E, V) ? 0 : 1;
    });
}

void lanes_unpack_py(const py::handle& lanes_obj, const py::handle& out_obj) {
    py::array lanes = as_ndarray(lanes_obj, "lanes");
    const DType dt = call_dtype(lanes, "lanes");
    check_lanes(lanes, "lanes", dt, "lanes");
    py::array out = as_ndarray(out_obj, "out");
    check_inplace(out, "out", dt, "lanes");
    const int64_t V = lanes.shape(4), E = lanes.shape(1) * lanes.shape(2) * lanes.shape(3);
    if (out.ndim() < 2 || out.shape(0) < 1) value_error("out must have a batch dimension");
    const int64_t N = out.shape(0);
    if ((int64_t)out.size() != checked_product({N, E}, "out") || (N + V - 1) / V != lanes.shape(0))
        value_error("out " + shape_str(out) + " does not match lanes " + shape_str(lanes));
    if (overlaps(lanes, out)) value_error("lanes and out share memory");
    dispatch_lanes(dt, [&](auto tag) {
        using T = decltype(tag);
        const T* src = static_cast<const T*>(lanes.data());
        T* dst = static_cast<T*>(out.mutable_data());
        py::gil_scoped_release nogil;
        return lanes_unpack<T>(dst, src, N, E, V) ? 0 : 1;
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
    check_lanes(x, "x", dt, "x");
    py::array w = as_ndarray(w_obj, "w");
    check_dtype(w, "w", dt, "x");
    const Conv2dDims d = lane_conv_dims(x, w);
    py::array out = as_ndarray(out_obj, "out");
    check_writeable_lanes(out, "out", dt, "x");
    py::array code;
    const bool pooled = !code_obj.is_none();
    if (pooled) {   // out and code_out are the 2x2 pool of the convolution's output
        code = pool_codes(d, x, w, out, "out", code_obj, "code_out", dt, true);
    } else {
        same_dims(out, "out", {d.N, d.O, d.OH, d.OW});
    }
    py::array b;
    const bool has_b = !b_obj.is_none();
    if (has_b) {
        b = as_ndarray(b_obj, "b");
        check_dtype(b, "b", dt, "x");
        if (b.ndim() != 1 || b.shape(0) != d.O) value_error("b must have shape (" + std::to_string(d.O) + ",)");
    }
    if (overlaps(out, x) || (has_b && overlaps(out, b))) value_error("out shares memory with x or b");
    if (pooled) check_no_overlap({{&code, "code_out"}, {&out, "out"}, {&x, "x"}, {&w, "w"}});
    if (pooled && has_b) check_no_overlap({{&code, "code_out"}, {&b, "b"}});
    dispatch_lanes(dt, [&](auto tag) {
        using T = decltype(tag);
        auto wc = input<T>(w);
        py::array_t<T> bc;
        if (has_b) bc = input<T>(b);
        const T* xp = static_cast<const T*>(x.data());
        T* yp = static_cast<T*>(out.mutable_data());
        auto* cp = pooled ? static_cast<typename LaneCode<T>::type*>(code.mutable_data()) : nullptr;
        const T* bp = has_b ? bc.data() : nullptr;
        py::gil_scoped_release nogil;
        return lanes_conv2d_forward<T>(yp, cp, xp, wc.data(), bp, d, relu, x.shape(4)) ? 0 : 1;
    });
}

void lanes_conv_backward_py(const py::handle& dy_obj, const py::handle& x_obj, const py::handle& w_obj, bool relu_input,
                            const py::handle& dx_obj, const py::handle& dw_obj, const py::handle& db_obj,
                            const py::handle& code_obj, const py::handle& relu_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    check_lanes(dy, "dy", dt, "dy");
    py::array x = as_ndarray(x_obj, "x");
    check_lanes(x, "x", dt, "dy");
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
            check_lanes(ry, "relu_output", dt, "dy");
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
        check_writeable_lanes(dx, "dx_out", dt, "dy");
        same_dims(dx, "dx_out", {d.N, d.C, d.H, d.W});
    }
    check_no_overlap({{&dw, "dw_out"}, {&db, "db_out"}, {&dy, "dy"}, {&x, "x"}, {&w, "w"}});
    if (has_dx) check_no_overlap({{&dx, "dx_out"}, {&dw, "dw_out"}, {&db, "db_out"}, {&dy, "dy"}, {&x, "x"}, {&w, "w"}});
    if (pooled) check_no_overlap({{&code, "code"}, {&dw, "dw_out"}, {&db, "db_out"}});
    if (has_relu) check_no_overlap({{&ry, "relu_output"}, {&dw, "dw_out"}, {&db, "db_out"}});
    if (pooled && has_dx) check_no_overlap({{&dx, "dx_out"}, {&code, "code"}});
    if (has_relu && has_dx) check_no_overlap({{&dx, "dx_out"}, {&ry, "relu_output"}});
    dispatch_lanes(dt, [&](auto tag) {
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
        bool done;
        {
            py::gil_scoped_release nogil;
            done = lanes_conv2d_backward<T>(dxp, dwp, dbp, &bad, dyp, cp, rp, xp, wc.data(), d, relu_input, x.shape(4));
        }
        if (bad) explain_bad_code<C>(code, "code");
        return done ? 0 : 1;
    });
}

void lanes_pool_forward_py(const py::handle& x_obj, const py::handle& out_obj, const py::handle& code_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    check_lanes(x, "x", dt, "x");
    py::array out = as_ndarray(out_obj, "out"), code = as_ndarray(code_obj, "code_out");
    check_writeable_lanes(out, "out", dt, "x");
    Pool2dDims d{x.shape(0), x.shape(1), x.shape(2), x.shape(3), 2, 2, 2, 2, x.shape(2) / 2, x.shape(3) / 2};
    if (d.OH < 1 || d.OW < 1) value_error("x " + shape_str(x) + " is smaller than a 2x2 window");
    same_dims(out, "out", {d.N, d.C, d.OH, d.OW});
    check_code(code, "code_out", dt, true);
    check_same_shape(out, "out", code, "code_out");
    check_no_overlap({{&x, "x"}, {&out, "out"}, {&code, "code_out"}});
    dispatch_lanes(dt, [&](auto tag) {
        using T = decltype(tag);
        using C = typename LaneCode<T>::type;
        const T* xp = static_cast<const T*>(x.data());
        T* yp = static_cast<T*>(out.mutable_data());
        C* cp = static_cast<C*>(code.mutable_data());
        py::gil_scoped_release nogil;
        return lanes_maxpool2x2_forward<T>(yp, cp, xp, d, x.shape(4)) ? 0 : 1;
    });
}

void lanes_pool_backward_py(const py::handle& dy_obj, const py::handle& code_obj, const py::handle& relu_obj,
                            const py::handle& out_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    check_lanes(dy, "dy", dt, "dy");
    py::array code = as_ndarray(code_obj, "code");
    check_code(code, "code", dt, false);
    check_same_shape(dy, "dy", code, "code");
    py::array out = as_ndarray(out_obj, "out");
    check_writeable_lanes(out, "out", dt, "dy");
    if (out.shape(0) != dy.shape(0) || out.shape(1) != dy.shape(1) || out.shape(2) / 2 != dy.shape(2) ||
        out.shape(3) / 2 != dy.shape(3))
        value_error("out " + shape_str(out) + " does not match dy " + shape_str(dy) + " under 2x2 pooling");
    py::array ry;
    const bool has_relu = !relu_obj.is_none();
    if (has_relu) {
        ry = as_ndarray(relu_obj, "relu_output");
        check_lanes(ry, "relu_output", dt, "dy");
        check_same_shape(dy, "dy", ry, "relu_output");
    }
    check_no_overlap({{&out, "out"}, {&dy, "dy"}, {&code, "code"}});
    if (has_relu) check_no_overlap({{&out, "out"}, {&ry, "relu_output"}});
    Pool2dDims d{out.shape(0), out.shape(1), out.shape(2), out.shape(3), 2, 2, 2, 2, dy.shape(2), dy.shape(3)};
    dispatch_lanes(dt, [&](auto tag) {
        using T = decltype(tag);
        using C = typename LaneCode<T>::type;
        const T* dyp = static_cast<const T*>(dy.data());
        const C* cp = static_cast<const C*>(code.data());
        const T* rp = has_relu ? static_cast<const T*>(ry.data()) : nullptr;
        T* dxp = static_cast<T*>(out.mutable_data());
        int64_t bad = 0;
        bool done;
        {
            py::gil_scoped_release nogil;
            done = lanes_maxpool2x2_backward<T>(dxp, &bad, dyp, cp, rp, d, dy.shape(4));
        }
        if (bad) explain_bad_code<C>(code, "code");
        return done ? 0 : 1;
    });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "maqueta's compiled kernels (private: use maqueta.ops)";

    const py::object none = py::none();
    m.def("conv2d_forward", &conv2d_forward_py, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("stride_h"),
          py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("relu") = false, py::arg("out") = none);
    m.def("conv2d_backward", &conv2d_backward_py, py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("stride_h"),
          py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("need_dx"), py::arg("relu_input") = false,
          py::arg("dx_out") = none, py::arg("dw_out") = none, py::arg("db_out") = none);
    m.def("maxpool2d_forward", &maxpool2d_forward_py, py::arg("x"), py::arg("kernel_h"), py::arg("kernel_w"),
          py::arg("stride_h"), py::arg("stride_w"), py::arg("out") = none, py::arg("indices_out") = none);
    m.def("maxpool2d_backward", &maxpool2d_backward_py, py::arg("dy"), py::arg("indices"), py::arg("x_shape"),
          py::arg("relu_output") = none, py::arg("out") = none);
    m.def("linear_forward", &linear_forward_py, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("relu") = false,
          py::arg("out") = none);
    m.def("linear_backward", &linear_backward_py, py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("need_dx"),
          py::arg("relu_input") = false, py::arg("dx_out") = none, py::arg("dw_out") = none, py::arg("db_out") = none);
    m.def("adam_update", &adam_update_py, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"),
          py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("bias_correction"));
    m.def("sgd_update", &sgd_update_py, py::arg("param"), py::arg("grad"), py::arg("velocity"), py::arg("lr"),
          py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));

    m.def("softmax_cross_entropy", &softmax_cross_entropy_py, py::arg("logits"), py::arg("targets"),
          py::arg("grad_out") = none);
    m.def("all_finite", &all_finite_py, py::arg("x"));

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

    m.def("get_num_threads", &num_threads, "Threads every parallel kernel uses.");
    m.def("set_num_threads", [](int64_t n) {
        if (n < 1) value_error("set_num_threads needs n >= 1, got " + std::to_string(n));
        set_num_threads((int)std::min<int64_t>(n, 4096));
    }, py::arg("n"));
    m.def("openmp_enabled", &openmp_enabled, "Whether this build parallelises its kernels with OpenMP.");
    m.def("isa", []() { return std::string(isa_name()); }, "The instruction set the micro-kernels use.");
    m.def("available_isas", []() {
        int n = 0;
        const char* const* names = available_isas(&n);
        std::vector<std::string> out(names, names + n);
        return out;
    });
    m.def("_set_isa", [](const std::string& name) {
        if (!set_isa(name.c_str())) value_error("instruction set '" + name + "' is not available on this CPU or build");
    });
    m.def("_set_conv_algo", [](const std::string& name) {
        if (name == "auto") set_conv_algo(ConvAlgo::Auto);
        else if (name == "direct") set_conv_algo(ConvAlgo::Direct);
        else if (name == "im2col") set_conv_algo(ConvAlgo::Im2col);
        else if (name == "pixel") set_conv_algo(ConvAlgo::Pixel);
        else value_error("conv algorithm must be 'auto', 'direct', 'im2col' or 'pixel', got '" + name + "'");
    });
    m.def("_get_conv_algo", []() {
        switch (conv_algo()) {
            case ConvAlgo::Direct: return std::string("direct");
            case ConvAlgo::Im2col: return std::string("im2col");
            case ConvAlgo::Pixel: return std::string("pixel");
            default: return std::string("auto");
        }
    });

    py::dict info;
    info["version"] = MAQUETA_VERSION;
#if defined(__clang__)
    info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = std::string("gcc ") + __VERSION__;
#else
    info["compiler"] = "unknown";
#endif
    info["openmp"] = openmp_enabled();
#ifdef MAQUETA_NATIVE_BUILD
    info["native"] = true;
#else
    info["native"] = false;
#endif
#ifdef MAQUETA_SANITIZE
    info["sanitize"] = true;
#else
    info["sanitize"] = false;
#endif
    m.attr("_build_info") = info;
}
