// maqueta._core: the module only registers. Each binding file (one per op family, cpp/bind/*.cpp)
// adds its functions through MAQUETA_BINDINGS (common.h), so a new family edits nothing here.
#include "common.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "maqueta's compiled kernels (private: use maqueta.ops)";
    maqueta::bind::define_all(m);
}
