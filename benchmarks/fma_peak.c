/* The machine's float32 multiply-add ceiling: each of `threads` threads runs 12 independent chains
 * of vector fused multiply-adds (enough to hide the FMA latency on two pipes), for `seconds`.
 * Prints GFLOP/s (a multiply-add counts 2). bench_zoo.py compiles it with -O2 -march=native.
 *
 *     cc -O2 -march=native -fopenmp fma_peak.c -o fma_peak && ./fma_peak 2 0.3
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__)
#define BYTES 64
#else
#define BYTES 32
#endif
typedef float vec __attribute__((vector_size(BYTES)));
#define LANES (BYTES / 4)

static double run(int threads, long rounds) {
    double start = omp_get_wtime();
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
        vec m, c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
        for (int i = 0; i < LANES; ++i) {
            m[i] = 0.999999f;
            c[i] = 1e-6f;
            a0[i] = a1[i] = a2[i] = a3[i] = a4[i] = a5[i] = 1.0f + i;
            a6[i] = a7[i] = a8[i] = a9[i] = a10[i] = a11[i] = 2.0f + i;
        }
        for (long r = 0; r < rounds; ++r) {
            a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
            a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
            a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
            __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5));
        }
        vec s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
        for (int i = 0; i < LANES; ++i) sink += s[i];
    }
    double seconds = omp_get_wtime() - start;
    if (sink == 12345.0f) printf("#");   /* keeps the chains alive */
    return 2.0 * 12 * LANES * (double)rounds * threads / seconds / 1e9;
}

int main(int argc, char** argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    double seconds = argc > 2 ? atof(argv[2]) : 0.3;
    long rounds = 1000000;
    double t = omp_get_wtime();
    run(threads, rounds);   /* warm up, and size the runs */
    t = omp_get_wtime() - t;
    rounds = (long)(rounds * seconds / (t > 1e-6 ? t : 1e-6)) + 1;
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
        double g = run(threads, rounds);
        if (g > best) best = g;
    }
    printf("%.1f\n", best);
    return 0;
}
