// Runtime bindings: threads, the instruction set (and its test switch), build information.
#include "common.h"

#include <algorithm>
#include <string>
#include <vector>

namespace maqueta {
namespace bind {

MAQUETA_BINDINGS(runtime) {
    m.def("get_num_threads", &num_threads, "Threads every parallel kernel uses.");
    m.def("set_num_threads", [](int64_t n) {
        if (n < 1) value_error("set_num_threads needs n >= 1, got " + std::to_string(n));
        set_num_threads((int)std::min<int64_t>(n, 4096));
    }, py::arg("n"));
    m.def("openmp_enabled", &openmp_enabled, "Whether this build parallelises its kernels with OpenMP.");
    m.def("isa", []() { return std::string(maqueta::isa().name); }, "The instruction set the micro-kernels use.");
    m.def("available_isas", []() {
        int n = 0;
        const char* const* names = available_isas(&n);
        std::vector<std::string> out(names, names + n);
        return out;
    });
    m.def("_set_isa", [](const std::string& name) {
        if (!set_isa(name.c_str())) value_error("instruction set '" + name + "' is not available on this CPU or build");
    }, py::arg("name"), "Testing aid: run later calls on this instruction set (each call reads it once).");
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

}  // namespace bind
}  // namespace maqueta
