// Micro-kernels for any CPU: 16-byte vectors (SSE2 on x86-64, NEON on arm64), compiled with the
// module's own flags (-march=native when MAQUETA_NATIVE is on, and then wider vectors pay off).
#if defined(MAQUETA_NATIVE_BUILD) && defined(__AVX512F__)
#define MAQUETA_VEC_BYTES 64
#define MAQUETA_ROWS_MR 8
#define MAQUETA_DOT_MI 4
#define MAQUETA_DOT_MJ 6
#define MAQUETA_BCAST_ACC 24
#elif defined(MAQUETA_NATIVE_BUILD) && defined(__AVX2__)
#define MAQUETA_VEC_BYTES 32
#define MAQUETA_ROWS_MR 6
#define MAQUETA_DOT_MI 2
#define MAQUETA_DOT_MJ 4
#define MAQUETA_BCAST_ACC 12
#else
#define MAQUETA_VEC_BYTES 16
#define MAQUETA_ROWS_MR 4
#define MAQUETA_DOT_MI 2
#define MAQUETA_DOT_MJ 4
#define MAQUETA_BCAST_ACC 12
#endif
#define MAQUETA_ISA_NS isa_generic
#include "microkernels.inc"
