// Dropout bindings: dropout_forward, dropout_backward, and their plain twins plain_dropout_*.
#include "common.h"

#include <cmath>

#include "maqueta/dropout.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

std::vector<py::ssize_t> shape_of(const py::array& a, int rank) { return std::vector<py::ssize_t>(a.shape(), a.shape() + rank); }

void check_probability(double p) {
    if (!std::isfinite(p) || p < 0 || p > 1) value_error("p must be a probability in [0, 1], got " + std::to_string(p));
}

// Units kept or dropped together: every value, or (channelwise) every (n, c) plane of [N, C, ...].
int mask_rank(const py::array& x, bool channelwise) {
    if (channelwise && x.ndim() < 3)
        value_error("channelwise dropout needs x of shape [N, C, H, W] (planes to drop), got " + shape_str(x));
    return channelwise ? 2 : (int)x.ndim();
}

int64_t product(const py::array& a, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; ++i) p *= a.shape(i);
    return p;
}

template <Tier tier>
py::tuple dropout_forward_py(const py::handle& x_obj, double p, uint64_t seed, bool channelwise,
                             const py::handle& out_obj, const py::handle& mask_obj) {
    py::array x = as_ndarray(x_obj, "x");
    const DType dt = call_dtype(x, "x");
    if (x.ndim() < 1) value_error("x must have at least one dimension, got shape " + shape_str(x));
    check_nonempty(x, "x");
    check_probability(p);
    const int rank = mask_rank(x, channelwise);
    const int64_t U = product(x, 0, rank), S = product(x, rank, (int)x.ndim());
    return dispatch(dt, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> y = output<T>(out_obj, "out", shape_of(x, (int)x.ndim()), dt, "x", {{&x, "x"}}, outs);
        py::array_t<uint8_t> mask;
        if (mask_obj.is_none()) {
            mask = py::array_t<uint8_t>(shape_of(x, rank));
        } else {
            py::array given = as_ndarray(mask_obj, "mask_out");
            if (!given.dtype().is(py::dtype::of<uint8_t>()))
                type_error("mask_out must have dtype uint8, got " + std::string(py::str(given.dtype())));
            if (!(given.flags() & py::array::c_style) || !given.writeable() || !aligned(given))
                value_error("mask_out must be a writeable C-contiguous array");
            bool same = given.ndim() == rank;
            for (int i = 0; same && i < rank; ++i) same = given.shape(i) == x.shape(i);
            if (!same) value_error("mask_out must have the shape of x's first " + std::to_string(rank) + " dimensions " +
                                   shape_str(x) + ", got " + shape_str(given));
            if (overlaps(given, x) || overlaps(given, y)) value_error("mask_out shares memory with x or out");
            mask = py::reinterpret_borrow<py::array_t<uint8_t>>(given);
        }
        auto xc = input<T>(x);
        T* yp = y.mutable_data();
        uint8_t* mp = mask.mutable_data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::dropout_forward<T>(yp, mp, xc.data(), U, S, p, seed);
            else
                dropout_forward<T>(yp, mp, xc.data(), U, S, p, seed);
        }
        return py::make_tuple(y, mask);
    });
}

template <Tier tier>
py::array dropout_backward_py(const py::handle& dy_obj, const py::handle& mask_obj, double p, const py::handle& out_obj) {
    py::array dy = as_ndarray(dy_obj, "dy");
    const DType dt = call_dtype(dy, "dy");
    check_nonempty(dy, "dy");
    check_probability(p);
    py::array mask_given = as_ndarray(mask_obj, "mask");
    if (!mask_given.dtype().is(py::dtype::of<uint8_t>()))
        type_error("mask must have dtype uint8 (from dropout_forward), got " + std::string(py::str(mask_given.dtype())));
    const int rank = (int)mask_given.ndim();
    bool fits = rank >= 1 && rank <= dy.ndim();
    for (int i = 0; fits && i < rank; ++i) fits = mask_given.shape(i) == dy.shape(i);
    if (!fits) value_error("mask " + shape_str(mask_given) + " must have the shape of dy " + shape_str(dy) +
                           " or of its first dimensions (channelwise)");
    const int64_t U = product(dy, 0, rank), S = product(dy, rank, (int)dy.ndim());
    auto mask = converted<uint8_t>(mask_given, "mask");
    return dispatch(dt, [&](auto tag) -> py::array {
        using T = decltype(tag);
        Outputs outs;
        py::array_t<T> dx = output<T>(out_obj, "out", shape_of(dy, (int)dy.ndim()), dt, "dy",
                                      {{&dy, "dy"}, {&mask_given, "mask"}}, outs);
        auto dyc = input<T>(dy);
        T* dxp = dx.mutable_data();
        const uint8_t* mp = mask.data();
        {
            py::gil_scoped_release nogil;
            if constexpr (tier == Tier::Plain)
                plain::dropout_backward<T>(dxp, dyc.data(), mp, U, S, p);
            else
                dropout_backward<T>(dxp, dyc.data(), mp, U, S, p);
        }
        return std::move(dx);
    });
}

}  // namespace

MAQUETA_BINDINGS(dropout) {
    const py::object none = py::none();
    for (const Tier tier : {Tier::Fast, Tier::Plain}) {
        const bool fast = tier == Tier::Fast;
        m.def(fast ? "dropout_forward" : "plain_dropout_forward",
              fast ? &dropout_forward_py<Tier::Fast> : &dropout_forward_py<Tier::Plain>, py::arg("x"), py::arg("p"),
              py::arg("seed"), py::arg("channelwise") = false, py::arg("out") = none, py::arg("mask_out") = none);
        m.def(fast ? "dropout_backward" : "plain_dropout_backward",
              fast ? &dropout_backward_py<Tier::Fast> : &dropout_backward_py<Tier::Plain>, py::arg("dy"),
              py::arg("mask"), py::arg("p"), py::arg("out") = none);
    }
}

}  // namespace bind
}  // namespace maqueta
