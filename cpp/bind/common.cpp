// The argument checks and registration every binding file shares (common.h).
#include "common.h"

#include <algorithm>
#include <cmath>

namespace maqueta {
namespace bind {

namespace {
std::vector<std::pair<std::string, Registrar>>& registry() {
    static std::vector<std::pair<std::string, Registrar>> families;   // built before main, read at import
    return families;
}
}  // namespace

Registration::Registration(const char* family, Registrar define) { registry().emplace_back(family, define); }

void define_all(py::module_& m) {
    auto& families = registry();
    std::sort(families.begin(), families.end());   // the same order in every build
    for (const auto& f : families) f.second(m);
}

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

const char* dtype_name(DType d) { return d == DType::F32 ? "float32" : "float64"; }

py::array as_ndarray(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        type_error(std::string(name) + " must be a numpy.ndarray, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    return py::reinterpret_borrow<py::array>(obj);
}

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

bool aligned(const py::array& a) { return (a.flags() & kAligned) != 0; }

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

OutputActivation output_activation(bool relu, const std::string& activation, double alpha) {
    OutputActivation act;
    if (activation == "relu") act.kind = OutputActivation::Relu;
    else if (activation == "leaky_relu") act.kind = OutputActivation::LeakyRelu;
    else if (activation == "elu") act.kind = OutputActivation::Elu;
    else if (activation != "none")
        value_error("activation must be 'none', 'relu', 'leaky_relu' or 'elu', got '" + activation + "'");
    if (relu && act.kind != OutputActivation::Relu && act.kind != OutputActivation::None)
        value_error("relu=True and activation='" + activation + "' ask for two activations");
    if (relu) act.kind = OutputActivation::Relu;
    if (!std::isfinite(alpha)) value_error("alpha must be finite, got " + std::to_string(alpha));
    act.alpha = alpha;
    return act;
}

bool optional_bias(const py::handle& obj, py::array& b, DType dt, const char* first_name, const py::array& w,
                   const char* name) {
    if (obj.is_none()) return false;
    b = as_ndarray(obj, name);
    check_dtype(b, name, dt, first_name);
    if (b.ndim() != 1 || b.shape(0) != w.shape(0))
        value_error(std::string(name) + " must have shape (" + std::to_string(w.shape(0)) + ",) (one per row of w " +
                    shape_str(w) + "), got " + shape_str(b));
    return true;
}

void conversion_failed(const char* name, const char* type) {
    if (PyErr_ExceptionMatches(PyExc_MemoryError)) throw py::error_already_set();
    std::string why = "unknown reason";
    if (PyErr_Occurred()) {
        py::error_already_set error;
        why = error.what();
    }
    throw py::value_error(std::string(name) + " could not be converted to " + type + ": " + why);
}

py::array output_array(const py::handle& obj, const char* name, const std::vector<py::ssize_t>& shape, DType dt,
                       const char* first_name, const Inputs& inputs, Outputs& outs) {
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
    return a;
}

}  // namespace bind
}  // namespace maqueta
