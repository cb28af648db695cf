// conv2d backward: what one call shares between its steps (Backward), and the four input-gradient
// algorithms besides Winograd that conv2d_backward.cpp runs per image or per block of images.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/conv2d.cpp (conv2d_backward).
// conv::plan picks one of:
//   dx_direct   a direct convolution: dy, padded by KH-1 and KW-1, correlated with the flipped,
//               transposed filters (stride 1)
//   dx_wide     dcol = W^T dy on the wide grid, each tap's row added straight onto its run of
//               the padded dx from the GEMM's registers (stride 1)
//   dx_phases   the strided case as SH*SW direct convolutions, one per phase of dx (the pixels
//               ih % SH == a, iw % SW == b) with the taps that reach it, over a block of images
//   dx_col2im   dcol = W^T dy, then col2im (any stride)
// Dimensions as in maqueta/conv2d.h; Hp, Wp, K, P as in conv2d_common.h.
#pragma once
#include "conv2d_common.h"

namespace maqueta {
namespace conv {

// dx[e] = 0 where the ReLU's input x[e] <= 0 (its gradient passes only where it was positive).
template <typename T>
inline void mask_relu(T* __restrict dx, const T* __restrict x, int64_t n) {
    for (int64_t e = 0; e < n; ++e) dx[e] = x[e] > T(0) ? dx[e] : T(0);
}

// One phase of dx (dx_phases; a < phase_count(SH, H), b likewise): its pixels (i*SH + a, j*SW + b),
// i < rows, j < cols, and its taps, entries k2 .. k2 + K2 of boff2 and of the packed filters
// (C panels of K2 columns at a2 + C*k2).
struct Phase {
    int64_t a, b, rows, cols, k2, K2;
};

// One call's sizes and the buffers its threads share (read-only inside the parallel region).
template <typename T>
struct Backward {
    const Conv2dDims& d;
    const IsaKernels& kern;
    bool pixel, direct;       // dw pixel-major; dw reads the padded image itself (pixel does too)
    Dx dx;                    // meaningful when dx is wanted
    int64_t K, P, Hp, Wp;
    int64_t HQ, WQ, K2;       // dy padded for dx_direct (or dx_phases), and its taps
    int64_t PT, PL;           // dx_phases: dy's top and left padding
    int64_t block;            // images per block
    int64_t OP;               // dy^T rows padded to whole vectors (pixel-major)
    int64_t Qpad;             // dw's dot products run over Q positions, padded to whole vectors
    int64_t img_len, dya_len; // per image: padded image or col; dy as dot rows, or dy^T
    int64_t NW;               // wide grid of dy (dx_wide)
    int64_t dxa_len;          // per-thread scratch of dx
    const T* a2 = nullptr;              // the filters as dx's GEMM wants them
    const int64_t* boff = nullptr;      // tap k's offset in an image (dw)
    const int64_t* boff2 = nullptr;     // tap k2's offset in padded dy (dx_direct)
    const int64_t* doff = nullptr;      // tap k's run in the padded dx (dx_wide)
    const int64_t* poff = nullptr;      // pixel p's window corner in the padded image (pixel-major)
    const T* ones = nullptr;            // [Qpad] ones: db as a dot product
    const Phase* phases = nullptr;      // dx_phases: phase (a, b) at a * phase_count(SW, W) + b
};

// dx of one image by a direct convolution: dyq[o][a][b] = dy[o][a + PH - (KH-1)][b + PW - (KW-1)]
// (zero outside) at dxa, correlated with the flipped filters into the wide dxb, copied out.
template <typename T>
void dx_direct(const Backward<T>& s, T* dxn, T* dxa, T* dxb, const T* dyn) {
    const Conv2dDims& d = s.d;
    std::fill(dxa, dxa + s.dxa_len, T(0));
    // each dy row lands as one run: ow from lo to hi, at column ow + shift
    const int64_t shift = d.KW - 1 - d.PW;
    const int64_t lo = std::max<int64_t>(0, -shift), hi = std::min(d.OW, s.WQ - shift);
    for (int64_t o = 0; o < d.O; ++o)
        for (int64_t oh = 0; oh < d.OH; ++oh) {
            const int64_t a = oh - d.PH + d.KH - 1;
            if (a < 0 || a >= s.HQ || lo >= hi) continue;
            copy_row(dxa + (o * s.HQ + a) * s.WQ + shift + lo, dyn + (o * d.OH + oh) * d.OW + lo, hi - lo);
        }
    const int64_t ldc = d.H * s.WQ;
    s.kern.rows(RowsArgs<T>{.M = d.C, .N = (d.H - 1) * s.WQ + d.W, .K = s.K2, .a = s.a2, .b = dxa, .boff = s.boff2,
                            .ldb = 0, .padded = true, .c = dxb, .ldc = ldc});
    for (int64_t c = 0; c < d.C; ++c)
        for (int64_t h = 0; h < d.H; ++h) copy_row(dxn + (c * d.H + h) * d.W, dxb + c * ldc + h * s.WQ, d.W);
}

// dx of one image on the wide grid: dcol = W^T dy (dy copied to dxa, zero in the dropped columns,
// so the runs add nothing where they wrap); each tap's row adds onto its run of the padded dx
// (dxb, or dx itself without padding), which is then copied out.
template <typename T>
void dx_wide(const Backward<T>& s, T* dxn, T* dxa, T* dxb, const T* dyn) {
    const Conv2dDims& d = s.d;
    std::fill(dxa, dxa + s.dxa_len, T(0));
    for (int64_t o = 0; o < d.O; ++o)
        for (int64_t oh = 0; oh < d.OH; ++oh)
            copy_row(dxa + o * s.NW + oh * s.Wp, dyn + (o * d.OH + oh) * d.OW, d.OW);
    const int64_t NQ = (d.OH - 1) * s.Wp + d.OW;
    T* target = (d.PH == 0 && d.PW == 0) ? dxn : dxb;
    std::fill(target, target + d.C * s.Hp * s.Wp, T(0));
    s.kern.rows(RowsArgs<T>{.M = s.K, .N = NQ, .K = d.O, .a = s.a2, .b = dxa, .boff = nullptr, .ldb = s.NW,
                            .padded = true, .c = target, .ldc = 0, .coff = s.doff});
    if (target == dxb)
        for (int64_t c = 0; c < d.C; ++c)
            for (int64_t h = 0; h < d.H; ++h)
                copy_row(dxn + (c * d.H + h) * d.W, dxb + (c * s.Hp + h + d.PH) * s.Wp + d.PW, d.W);
}

// dx of the nb images at dxs by phases. dy is laid out [O][block][HQ][WQ] at dxa, each plane
// padded by PT rows above and PL columns left and zero up to HQ x WQ, so that every phase reads
// its taps as runs of one wide grid spanning the block's images; each phase's result (at dxb,
// [C][block][HQ][WQ]) is then copied to its pixels. At stride 2 across, the two column phases of
// a row phase are computed side by side (the second at dxb + C*plane) and their rows interleaved:
// one pass of whole vectors instead of a store per pixel, which also zeroes dx where xs (the
// ReLU's input, if given) <= 0. Unpaired phases take that mask in one pass over the block once
// it is written (rows of a few pixels each cost more).
template <typename T>
void dx_phases(const Backward<T>& s, T* dxs, T* dxa, T* dxb, const T* dys, const T* xs, int64_t nb) {
    const Conv2dDims& d = s.d;
    const int64_t img = s.HQ * s.WQ, plane = s.block * img;
    const int NR = s.kern.template nr<T>();
    for (int64_t o = 0; o < d.O; ++o) {
        // the padded kernel reads up to NR values past a plane's nb images (into the columns it
        // drops): zeros there, not what an earlier block or call left (the next plane's are
        // written after this)
        std::fill(dxa + o * plane + nb * img, dxa + o * plane + nb * img + NR, T(0));
        for (int64_t i = 0; i < nb; ++i) {
            T* q = dxa + o * plane + i * img;
            const T* src = dys + (i * d.O + o) * d.OH * d.OW;
            std::fill(q, q + s.PT * s.WQ, T(0));
            for (int64_t oh = 0; oh < d.OH; ++oh) {
                T* row = q + (s.PT + oh) * s.WQ;
                std::fill(row, row + s.PL, T(0));
                copy_row(row + s.PL, src + oh * d.OW, d.OW);
                std::fill(row + s.PL + d.OW, row + s.WQ, T(0));
            }
            std::fill(q + (s.PT + d.OH) * s.WQ, q + img, T(0));
        }
    }
    const int64_t chw = d.C * d.H * d.W, across = phase_count(d.SW, d.W);
    const bool paired = pairs_phases(d);
    for (int64_t a = 0; a < phase_count(d.SH, d.H); ++a) {
        for (int64_t b = 0; b < across; ++b) {
            const Phase& ph = s.phases[a * across + b];
            if (ph.rows == 0 || ph.cols == 0) continue;
            T* out = paired ? dxb + b * d.C * plane : dxb;
            if (ph.K2 > 0)
                s.kern.rows(RowsArgs<T>{.M = d.C, .N = (nb - 1) * img + (ph.rows - 1) * s.WQ + ph.cols, .K = ph.K2,
                                        .a = s.a2 + d.C * ph.k2, .b = dxa, .boff = s.boff2 + ph.k2, .ldb = 0,
                                        .padded = true, .c = out, .ldc = plane});
            else   // no tap reaches these pixels (stride > kernel)
                for (int64_t c = 0; c < d.C; ++c) std::fill(out + c * plane, out + c * plane + nb * img, T(0));
            if (paired) continue;
            for (int64_t i = 0; i < nb; ++i)
                for (int64_t c = 0; c < d.C; ++c)
                    for (int64_t r = 0; r < ph.rows; ++r) {
                        T* to = dxs + i * chw + (c * d.H + r * d.SH + a) * d.W + b;
                        const T* in = out + c * plane + i * img + r * s.WQ;
                        for (int64_t j = 0; j < ph.cols; ++j) to[j * d.SW] = in[j];
                    }
        }
        if (!paired) continue;
        // row r of phase (a, 0) holds dx columns 0, 2, 4, ..., of phase (a, 1) columns 1, 3, ...;
        // the ReLU's mask is applied as they are woven together
        for (int64_t i = 0; i < nb; ++i) {
            const int64_t at = i * chw + a * d.W;
            s.kern.interleave(InterleaveArgs<T>{.planes = d.C, .rows = s.phases[a * across].rows, .width = d.W,
                                                .dst = dxs + at, .mask = xs ? xs + at : nullptr,
                                                .dst_plane = d.H * d.W, .dst_row = d.SH * d.W,
                                                .even = dxb + i * img, .odd = dxb + d.C * plane + i * img,
                                                .src_plane = plane, .src_row = s.WQ});
        }
    }
    if (xs && !paired) mask_relu(dxs, xs, nb * chw);
}

// dx of one image, any stride: dcol = W^T dy at dxb, then each tap's column adds back onto the
// pixel it came from.
template <typename T>
void dx_col2im(const Backward<T>& s, T* dxn, T* dxa, T* dxb, const T* dyn) {
    const Conv2dDims& d = s.d;
    std::memcpy(dxa, dyn, sizeof(T) * d.O * s.P);
    std::fill(dxa + d.O * s.P, dxa + d.O * s.P + s.kern.template nr<T>(), T(0));
    s.kern.rows(RowsArgs<T>{.M = s.K, .N = s.P, .K = d.O, .a = s.a2, .b = dxa, .boff = nullptr, .ldb = s.P,
                            .padded = true, .c = dxb, .ldc = s.P});
    col2im(dxn, dxb, d);
}

// dx by Winograd: dy padded by 2 - P, correlated with the flipped, transposed filters; zero
// where mask (the ReLU's input x) <= 0 when mask is given.
template <typename T>
void winograd_dx(T* dx, const T* dy, const T* w, const T* mask, const Conv2dDims& d, const IsaKernels& kern) {
    const Conv2dDims t{.N = d.N, .C = d.O, .H = d.OH, .W = d.OW, .O = d.C, .KH = 3, .KW = 3, .SH = 1, .SW = 1,
                       .PH = 2 - d.PH, .PW = 2 - d.PW, .OH = d.H, .OW = d.W};
    winograd_correlate(dx, dy, w, (const T*)nullptr, true, (const T*)nullptr, mask, t, OutputActivation{}, kern);
}

}  // namespace conv
}  // namespace maqueta
