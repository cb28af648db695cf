// conv2d: what conv2d_forward.cpp and conv2d_backward.cpp share, the layout helpers and the
// choice of algorithm.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/conv2d.cpp.
//
//   Hp = H + 2*PH, Wp = W + 2*PW       the zero-padded input
//   K  = C*KH*KW                       taps of one filter;  P = OH*OW output pixels of one plane
//
// Parallel strategy: over images; each thread owns whole planes of y and dx. dw and db are summed
// per thread, then reduced in thread order over the weight index (deterministic for a fixed
// thread count, no atomics).
//
// When the filters fill whole vectors (O a multiple of the vector width, e.g. LeNet-5's conv2 with
// 16), forward and dw run "pixel-major" on the broadcast micro-kernel instead: each output pixel's
// taps are read through a pointer per pixel and an offset per tap, against W^T (forward) or dy^T
// (dw, summed over a block of images in registers); no column is dropped and any stride works.
// Otherwise both passes are built on the rows and dot micro-kernels, by two algorithms:
//  direct (stride 1 only): the padded image is itself the B matrix. Output (oh, ow) is column
//    q = oh*Wp + ow of a "wide" output row, and input (c, oh+kh, ow+kw) lies at
//    c*Hp*Wp + kh*Wp + kw + q, so every tap is one contiguous row of B and nothing is gathered.
//    The Wp - OW columns past each output row are computed and dropped.
//  im2col (any stride): taps are gathered into col[K][P] first, then multiplied.
//  Winograd F(2x2, 3x3) (3x3, stride 1, enough channels; conv2d_winograd.cpp): forward, dx and
//    dw as 16 GEMMs over transformed tiles, 16 multiplies per 2x2 outputs instead of 36.
// The input gradient has four algorithms of its own besides Winograd (conv2d_backward.cpp).
// plan() below picks them all from the shapes and the vector width.
#pragma once
#include <algorithm>
#include <cstring>

#include "maqueta/conv2d.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace conv {

// dst[0 .. n) = src[0 .. n) for the short rows copied per image (hundreds of a few dozen values):
// a call to memcpy each cost more than the copy (16% of conv1's backward). Rows of at least 16
// bytes go in 16-byte pieces, the last one overlapping the one before (a 7-float row is two
// pieces, not one and three single values). The conv2d files are built with
// -fno-tree-loop-distribute-patterns (CMakeLists.txt), or GCC would turn the loops into that call.
template <typename T>
inline void copy_row(T* __restrict dst, const T* __restrict src, int64_t n) {
    constexpr int64_t V = 16 / sizeof(T);
    if (n < V) {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
        return;
    }
    for (int64_t i = 0; i + V < n; i += V) __builtin_memcpy(dst + i, src + i, 16);
    __builtin_memcpy(dst + n - V, src + n - V, 16);
}

// Pack A (M x K, element a(i, k)) into MR-row panels laid out [K][mr] (see RowsArgs).
template <typename T, typename F>
void pack_panels(T* dst, int64_t M, int64_t K, int MR, F a) {
    for (int64_t i0 = 0; i0 < M; i0 += MR) {
        const int64_t mr = std::min<int64_t>(MR, M - i0);
        T* p = dst + i0 * K;
        for (int64_t k = 0; k < K; ++k)
            for (int64_t i = 0; i < mr; ++i) p[k * mr + i] = a(i0 + i, k);
    }
}

// The zeros of a padded image xp[C][Hp][Wp] (its margins) and the `slack` zeros after it. A
// buffer that takes one image after another keeps them: only copy_interior is then needed per image.
template <typename T>
void zero_margins(T* xp, const Conv2dDims& d, int64_t slack) {
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    if (d.PH > 0 || d.PW > 0) {
        for (int64_t c = 0; c < d.C; ++c) {
            T* plane = xp + c * Hp * Wp;
            std::fill(plane, plane + d.PH * Wp, T(0));
            for (int64_t h = 0; h < d.H; ++h) {
                T* row = plane + (h + d.PH) * Wp;
                std::fill(row, row + d.PW, T(0));
                std::fill(row + d.PW + d.W, row + Wp, T(0));
            }
            std::fill(plane + (d.PH + d.H) * Wp, plane + Hp * Wp, T(0));
        }
    }
    std::fill(xp + d.C * Hp * Wp, xp + d.C * Hp * Wp + slack, T(0));
}

// The image x into the inside of xp[C][Hp][Wp], margins untouched.
template <typename T>
void copy_interior(T* xp, const T* x, const Conv2dDims& d) {
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    if (d.PH == 0 && d.PW == 0) {
        std::memcpy(xp, x, sizeof(T) * d.C * d.H * d.W);
        return;
    }
    for (int64_t c = 0; c < d.C; ++c)
        for (int64_t h = 0; h < d.H; ++h)
            copy_row(xp + (c * Hp + h + d.PH) * Wp + d.PW, x + (c * d.H + h) * d.W, d.W);
}

// col[k = (c, kh, kw)][oh*OW + ow] = x[c][oh*SH - PH + kh][ow*SW - PW + kw], zero outside;
// rows ldcol apart (>= OH*OW), zero-filled past OH*OW.
template <typename T>
void im2col(T* col, const T* x, const Conv2dDims& d, int64_t ldcol) {
    const int64_t P = d.OH * d.OW;
    for (int64_t c = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw) {
                T* row = col + ((c * d.KH + kh) * d.KW + kw) * ldcol;
                std::fill(row + P, row + ldcol, T(0));
                for (int64_t oh = 0; oh < d.OH; ++oh) {
                    T* out = row + oh * d.OW;
                    const int64_t ih = oh * d.SH - d.PH + kh;
                    if (ih < 0 || ih >= d.H) {
                        std::fill(out, out + d.OW, T(0));
                        continue;
                    }
                    const T* in = x + (c * d.H + ih) * d.W;
                    int64_t ow = 0;
                    if (d.SW == 1) {   // a contiguous run between the zero margins
                        const int64_t lo = std::min(d.OW, std::max<int64_t>(0, d.PW - kw));
                        const int64_t hi = std::max(lo, std::min(d.OW, d.W + d.PW - kw));
                        std::fill(out, out + lo, T(0));
                        copy_row(out + lo, in + lo - d.PW + kw, hi - lo);
                        std::fill(out + hi, out + d.OW, T(0));
                        ow = d.OW;
                    }
                    for (; ow < d.OW; ++ow) {
                        const int64_t iw = ow * d.SW - d.PW + kw;
                        out[ow] = (iw >= 0 && iw < d.W) ? in[iw] : T(0);
                    }
                }
            }
}

// dx[c][oh*SH - PH + kh][ow*SW - PW + kw] += dcol[k][oh*OW + ow] over a zeroed dx.
template <typename T>
void col2im(T* dx, const T* dcol, const Conv2dDims& d) {
    const int64_t P = d.OH * d.OW;
    std::fill(dx, dx + d.C * d.H * d.W, T(0));
    for (int64_t c = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw) {
                const T* row = dcol + ((c * d.KH + kh) * d.KW + kw) * P;
                for (int64_t oh = 0; oh < d.OH; ++oh) {
                    const int64_t ih = oh * d.SH - d.PH + kh;
                    if (ih < 0 || ih >= d.H) continue;
                    T* out = dx + (c * d.H + ih) * d.W;
                    const T* in = row + oh * d.OW;
                    if (d.SW == 1) {   // a contiguous run: out[lo - PW + kw ..] += in[lo ..]
                        const int64_t lo = std::min(d.OW, std::max<int64_t>(0, d.PW - kw));
                        const int64_t hi = std::max(lo, std::min(d.OW, d.W + d.PW - kw));
                        T* o = out - d.PW + kw;
                        for (int64_t ow = lo; ow < hi; ++ow) o[ow] += in[ow];
                        continue;
                    }
                    for (int64_t ow = 0; ow < d.OW; ++ow) {
                        const int64_t iw = ow * d.SW - d.PW + kw;
                        if (iw >= 0 && iw < d.W) out[iw] += in[ow];
                    }
                }
            }
}

// Which algorithms one call runs: a pure function of the shapes and the vector width (lanes of T
// in the instruction set the call runs on). `forced` (a test switch) overrides the choice where
// the forced algorithm applies: direct needs stride 1 (a strided dx takes phases, its generalisation),
// and pixel-major covers forward and dw only.
enum class Dx { Direct, Wide, Phases, Col2im, Winograd };   // the input-gradient algorithms (conv2d_backward.cpp)
struct Plan {
    bool winograd; // forward by Winograd
    bool winograd_dw;   // dw and dx by Winograd (both apply), instead of the algorithms below
    bool pixel;    // forward pixel-major, on the broadcast micro-kernel
    bool pixel_dw; // dw pixel-major
    bool direct;   // otherwise: forward and dw read the padded image itself (else im2col)
    Dx dx;
};

// Pixel-major needs the filters to fill the vectors it computes: O a multiple of the width, or
// at least two vectors' worth (so at most a third of the lanes idle). Its forward with few taps
// (an RGB image's 27) at stride 1 does no better than direct, whose wide rows need no per-pixel
// setup; its dw does better there too.
inline bool use_pixel(const Conv2dDims& d, int lanes, ConvAlgo forced, bool for_dw) {
    switch (forced) {
        case ConvAlgo::Pixel: return true;
        case ConvAlgo::Direct:
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    if (!for_dw && d.SH == 1 && d.SW == 1 && d.C * d.KH * d.KW < 128) return false;
    return d.O % lanes == 0 || d.O >= 2 * lanes;
}

// Direct pays (Wp - OW) dropped columns per row, times O filters; im2col pays a gather of K*P
// values. Prefer direct unless the dropped columns cost clearly more.
inline bool use_direct(const Conv2dDims& d, ConvAlgo forced) {
    if (d.SH != 1 || d.SW != 1) return false;
    switch (forced) {
        case ConvAlgo::Direct: return true;
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    const int64_t Wp = d.W + 2 * d.PW;
    return (Wp - d.OW) * d.O <= 8 * d.OW;
}

// The direct full correlation for dx, or W^T dy then scattered back, by their operation counts;
// direct runs its operations faster (wide adds each tile onto overlapping runs), so it may do
// half as many again.
inline bool use_direct_dx(const Conv2dDims& d, ConvAlgo forced) {
    if (d.SH != 1 || d.SW != 1) return false;
    switch (forced) {
        case ConvAlgo::Direct: return true;
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW, WQ = d.W + d.KW - 1;
    const double direct = (double)d.C * d.O * d.KH * d.KW * ((d.H - 1) * WQ + d.W);
    const double gemm = (double)K * P * d.O + 4.0 * K * P;   // the multiply, then scattering dcol back
    return direct <= 1.5 * gemm;
}

// One axis of a strided convolution's input gradient split into phases: the inputs at
// a, a + S, a + 2S, ... (`count` of them, the i-th at i*S + a) receive dy only through the taps
// first + S*m (m < taps), from output i + base - m. Each phase is thus a stride-1 correlation of
// dy with a sub-filter, dx_direct's algorithm (conv2d_backward.cpp, dx_phases).
struct PhaseAxis {
    int64_t count, first, taps, base;
};

// Only the first min(S, in) phases of an axis hold pixels: with a stride above the input size the
// rest are empty, and never visited (a stride may be as large as 2^31).
inline int64_t phase_count(int64_t S, int64_t in) { return std::min(S, in); }

inline PhaseAxis phase_axis(int64_t a, int64_t S, int64_t pad, int64_t kernel, int64_t in) {
    PhaseAxis p;
    p.count = a < in ? (in - a + S - 1) / S : 0;
    p.first = (a + pad) % S;
    p.taps = p.first < kernel ? (kernel - p.first + S - 1) / S : 0;
    p.base = (a + pad - p.first) / S;
    return p;
}

// Where dx_phases lays out dy: each plane padded by PT rows above and PL columns to the left, to
// HQ x WQ, so that every phase's taps read inside it (rows i + base - m + PT of a phase's i < count).
struct PhaseGrid {
    int64_t PT, PL, HQ, WQ;
};

inline PhaseGrid phase_grid(const Conv2dDims& d) {
    PhaseGrid g{0, 0, 0, 0};
    for (int64_t a = 0; a < phase_count(d.SH, d.H); ++a) {
        const PhaseAxis r = phase_axis(a, d.SH, d.PH, d.KH, d.H);
        g.PT = std::max(g.PT, r.taps - 1 - r.base);
    }
    for (int64_t b = 0; b < phase_count(d.SW, d.W); ++b) {
        const PhaseAxis c = phase_axis(b, d.SW, d.PW, d.KW, d.W);
        g.PL = std::max(g.PL, c.taps - 1 - c.base);
    }
    g.HQ = g.PT + d.OH;
    g.WQ = g.PL + d.OW;
    for (int64_t a = 0; a < phase_count(d.SH, d.H); ++a) {
        const PhaseAxis r = phase_axis(a, d.SH, d.PH, d.KH, d.H);
        g.HQ = std::max(g.HQ, r.count + r.base + g.PT);
    }
    for (int64_t b = 0; b < phase_count(d.SW, d.W); ++b) {
        const PhaseAxis c = phase_axis(b, d.SW, d.PW, d.KW, d.W);
        g.WQ = std::max(g.WQ, c.count + c.base + g.PL);
    }
    return g;
}

// dx_phases at stride 2 across computes a row phase's two column phases side by side and
// interleaves them (conv2d_backward.cpp).
inline bool pairs_phases(const Conv2dDims& d) { return d.SW == 2 && phase_count(d.SW, d.W) == 2; }

// Strided dx: phases, unless gathering them on their wide grids costs more than twice the GEMM
// (the col2im scatter, strided and branchy, costs several times its operation count).
inline bool use_phases_dx(const Conv2dDims& d, ConvAlgo forced) {
    switch (forced) {
        case ConvAlgo::Direct: return true;
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    int64_t WQ = d.OW + d.KW;   // about the wide grid's width (dx_phases pads dy by at most KW)
    double phases = 0;
    for (int64_t a = 0; a < phase_count(d.SH, d.H); ++a)
        for (int64_t b = 0; b < phase_count(d.SW, d.W); ++b) {
            const PhaseAxis r = phase_axis(a, d.SH, d.PH, d.KH, d.H), c = phase_axis(b, d.SW, d.PW, d.KW, d.W);
            phases += (double)d.C * d.O * r.taps * c.taps * (r.count * WQ);
        }
    const double gemm = (double)d.C * d.KH * d.KW * d.OH * d.OW * d.O;
    return phases <= 2 * gemm;
}

// Winograd F(2x2, 3x3): 3x3 stride 1. Its transforms cost about as much per tile as a few
// channels of multiplies, so it pays only with enough channels on both sides, and on rows of at
// least half a vector of tiles (an 8x8 map fills a quarter of 16 floats: there the GEMM
// algorithms win). The filters' transform, once per call, costs about as much as the products
// of 2,048 output pixels save, so a call needs that many (a batch of two 32x32 maps, eight 16x16).
// dx correlates dy padded by 2 - PH, so the padding must be at most 2.
inline bool use_winograd(const Conv2dDims& d, int lanes, ConvAlgo forced, bool for_dx) {
    if (d.KH != 3 || d.KW != 3 || d.SH != 1 || d.SW != 1) return false;
    if (for_dx && (d.PH > 2 || d.PW > 2)) return false;
    if (forced != ConvAlgo::Auto) return forced == ConvAlgo::Winograd;
    const int64_t out_h = for_dx ? d.H : d.OH, out_w = for_dx ? d.W : d.OW;
    return d.C >= 16 && d.O >= 16 && 2 * ((out_w + 1) / 2) >= lanes && (double)d.N * out_h * out_w >= 2048;
}

inline Plan plan(const Conv2dDims& d, int lanes, ConvAlgo forced) {
    Plan p;
    p.winograd = use_winograd(d, lanes, forced, false);
    p.winograd_dw = p.winograd && use_winograd(d, lanes, forced, true);
    p.pixel = use_pixel(d, lanes, forced, false);
    p.pixel_dw = use_pixel(d, lanes, forced, true);
    p.direct = use_direct(d, forced);
    const bool stride1 = d.SH == 1 && d.SW == 1;
    p.dx = use_winograd(d, lanes, forced, true) ? Dx::Winograd : use_direct_dx(d, forced) ? Dx::Direct
         : stride1 ? Dx::Wide : use_phases_dx(d, forced) ? Dx::Phases : Dx::Col2im;
    return p;
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// out[e] = parts[0][e] + parts[1][e] + ... in thread order, e < n: per-thread sums reduced the
// same way every time. Called inside a parallel region, whose team shares the e out.
template <typename T>
void add_in_thread_order(T* out, T* const* parts, int ran, int64_t n) {
#pragma omp for schedule(static)
    for (int64_t e = 0; e < n; ++e) {
        T sum = parts[0][e];
        for (int u = 1; u < ran; ++u) sum += parts[u][e];
        out[e] = sum;
    }
}

// y = the 3x3 stride-1 correlation that d describes, by Winograd (conv2d_winograd.cpp). Filter
// (o, c) is w[o][c] times wscale[o] (a forward pass), or with `transposed` w[c][o] rotated by 180
// degrees (an input gradient: x is dy, y is dx, d's pads are 2 minus the layer's). Then + b[o],
// act, and zero where mask <= 0 (mask laid out as y, or null).
template <typename T>
void winograd_correlate(T* y, const T* x, const T* w, const T* wscale, bool transposed, const T* b,
                        const T* mask, const Conv2dDims& d, const OutputActivation& act, const IsaKernels& kern);

// dw and db (db may be null) of the 3x3 stride-1 layer d, by Winograd: the 16 products of each
// filter summed over every tile of the batch, then transformed back (conv2d_winograd.cpp).
template <typename T>
void winograd_weight_grad(T* dw, T* db, const T* dy, const T* x, const Conv2dDims& d, const IsaKernels& kern);

}  // namespace conv
}  // namespace maqueta
