// Micro-kernels for AVX2 + FMA (16 ymm registers): rows tile 6 x 16 floats, dot tile 2 x 4.
#define MAQUETA_ISA_NS isa_avx2
#define MAQUETA_VEC_BYTES 32
#define MAQUETA_ROWS_MR 6
#define MAQUETA_DOT_MI 2
#define MAQUETA_DOT_MJ 4
#define MAQUETA_BCAST_ACC 12
#include "microkernels.inc"
