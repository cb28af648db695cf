// Loss bindings: softmax_cross_entropy, and its plain twin plain_softmax_cross_entropy.
#include "common.h"

#include "maqueta/loss.h"
#include "../plain/plain.h"

namespace maqueta {
namespace bind {
namespace {

template <Tier tier>
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
    auto as_int64 = converted<int64_t>(t, "targets");
    std::vector<int64_t> targets(as_int64.data(), as_int64.data() + N);
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
            if constexpr (tier == Tier::Plain)
                loss = plain::softmax_cross_entropy<T>(gp, zc.data(), targets.data(), N, K);
            else
                loss = softmax_cross_entropy<T>(gp, zc.data(), targets.data(), N, K);
        }
        return py::make_tuple(loss, grad);
    });
}

}  // namespace

MAQUETA_BINDINGS(loss) {
    m.def("softmax_cross_entropy", &softmax_cross_entropy_py<Tier::Fast>, py::arg("logits"), py::arg("targets"),
          py::arg("grad_out") = py::none());
    m.def("plain_softmax_cross_entropy", &softmax_cross_entropy_py<Tier::Plain>, py::arg("logits"),
          py::arg("targets"), py::arg("grad_out") = py::none());
}

}  // namespace bind
}  // namespace maqueta
