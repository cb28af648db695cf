// What every binding file shares: argument checks, outputs, dtype dispatch, and the registration
// of a family's functions. Binding files only check arguments, allocate outputs, release the GIL
// and dispatch on dtype; the arithmetic lives in cpp/kernels. Every argument is checked here,
// because nothing a caller passes may crash the interpreter. Errors follow PyTorch's shape checks:
// the argument's name, what was expected, what came.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "maqueta/activation.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace bind {

namespace py = pybind11;

// ---- Registration. A binding file defines its functions with
//     MAQUETA_BINDINGS(family) { m.def(...); ... }
// at its end, inside namespace maqueta::bind; module.cpp runs every family's block (in order of name) when Python imports _core,
// so a new family needs no edit anywhere else (as ATen's REGISTER_DISPATCH).
using Registrar = void (*)(py::module_&);
struct Registration {
    Registration(const char* family, Registrar define);
};
void define_all(py::module_& m);   // module.cpp

#define MAQUETA_BINDINGS(family)                                                                  \
    static void maqueta_define_##family(::pybind11::module_& m);                                  \
    static const ::maqueta::bind::Registration maqueta_registration_##family(#family,             \
                                                                             &maqueta_define_##family); \
    static void maqueta_define_##family(::pybind11::module_& m)

// ---- Checks
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;      // any one size or hyper-parameter
constexpr int64_t kMaxElements = int64_t(1) << 58;       // any buffer, in elements

enum class DType { F32, F64 };
const char* dtype_name(DType d);

std::string shape_str(const py::array& a);
std::string pair_str(int64_t a, int64_t b);
[[noreturn]] void value_error(const std::string& msg);
[[noreturn]] void type_error(const std::string& msg);

py::array as_ndarray(const py::handle& obj, const char* name);
DType call_dtype(const py::array& a, const char* name);   // the dtype of the call, from its first operand
void check_dtype(const py::array& a, const char* name, DType dt, const char* first_name);
void check_rank(const py::array& a, const char* name, int rank, const char* layout);
void check_nonempty(const py::array& a, const char* name);
int64_t checked_product(std::initializer_list<int64_t> dims, const std::string& what);
void check_hyper(int64_t v, const char* name, int64_t lo);
void check_same_shape(const py::array& a, const char* an, const py::array& b, const char* bn);

// An operand updated in place: it must already be the buffer the caller holds.
void check_inplace(const py::array& a, const char* name, DType dt, const char* first_name);
bool aligned(const py::array& a);
bool overlaps(const py::array& a, const py::array& b);
void check_no_overlap(const std::vector<std::pair<const py::array*, const char*>>& arrays);

// An optional vector with one value per row of w (a bias, a per-output weight scale), called
// name: None, or [w.shape[0]] of dtype dt. Returns whether there is one (in b).
bool optional_bias(const py::handle& obj, py::array& b, DType dt, const char* first_name, const py::array& w,
                   const char* name = "b");

// The activation a conv2d or linear forward applies to its output: relu (the older flag) or
// activation, "none", "relu", "leaky_relu" or "elu" with its finite alpha.
OutputActivation output_activation(bool relu, const std::string& activation, double alpha);

constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;

// a as an aligned C-order array of U, copied when needed. pybind11's array_t::ensure returns a
// null array when that copy fails (out of memory, an unconvertible value) and clears the error,
// so a kernel would read through a null pointer: this raises MemoryError or ValueError instead.
[[noreturn]] void conversion_failed(const char* name, const char* type);
template <typename U>
constexpr const char* type_name() {
    return std::is_same<U, float>::value ? "float32" : std::is_same<U, double>::value ? "float64"
         : std::is_same<U, uint8_t>::value ? "uint8" : "int64";
}
template <typename U>
py::array_t<U, py::array::c_style> converted(const py::array& a, const char* name) {
    constexpr int flags = py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_ | py::array::c_style | py::array::forcecast | kAligned;
    PyObject* raw = py::detail::npy_api::get().PyArray_FromAny_(a.ptr(), py::dtype::of<U>().release().ptr(), 0, 0,
                                                                flags, nullptr);
    if (!raw) conversion_failed(name, type_name<U>());
    return py::reinterpret_steal<py::array_t<U, py::array::c_style>>(raw);
}

// A read-only operand: any memory layout is accepted (copied into aligned C order when needed).
template <typename T>
py::array_t<T, py::array::c_style> input(const py::array& a, const char* name = "an operand") {
    return converted<T>(a, name);
}

// An output array: the caller's (checked like an in-place operand, and apart from every input
// and other output) or a new one when obj is None.
struct Outputs {
    std::vector<std::pair<py::array, std::string>> given;  // caller-supplied outputs, for overlap checks
};
using Inputs = std::vector<std::pair<const py::array*, const char*>>;   // a null array is skipped

py::array output_array(const py::handle& obj, const char* name, const std::vector<py::ssize_t>& shape, DType dt,
                       const char* first_name, const Inputs& inputs, Outputs& outs);

template <typename T>
py::array_t<T> output(const py::handle& obj, const char* name, const std::vector<py::ssize_t>& shape, DType dt,
                      const char* first_name, const Inputs& inputs, Outputs& outs) {
    if (obj.is_none()) return py::array_t<T>(shape);
    return py::reinterpret_borrow<py::array_t<T>>(output_array(obj, name, shape, dt, first_name, inputs, outs));
}

inline std::vector<py::ssize_t> dims(std::initializer_list<int64_t> v) {
    return std::vector<py::ssize_t>(v.begin(), v.end());
}

// Which kernels a binding calls: the fast ones (cpp/kernels/) or their plain twins (cpp/plain/),
// bound as plain_<name> with the same checks, so both tiers refuse the same arguments alike.
enum class Tier { Fast, Plain };

// f(float{}) or f(double{}): the kernel call, instantiated for both dtypes.
template <typename F>
auto dispatch(DType dt, F&& f) {
    if (dt == DType::F32) return f(float{});
    return f(double{});
}

}  // namespace bind
}  // namespace maqueta
