// Micro-kernels for AVX-512 (32 zmm registers): rows tile 8 x 32 floats, dot tile 4 x 6.
#define MAQUETA_ISA_NS isa_avx512
#define MAQUETA_VEC_BYTES 64
#define MAQUETA_ROWS_MR 8
#define MAQUETA_DOT_MI 4
#define MAQUETA_DOT_MJ 6
#define MAQUETA_BCAST_ACC 24
#include "microkernels.inc"
