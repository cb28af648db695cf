// conv2d forward and backward.
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
// The input gradient of the direct algorithm is a direct convolution too: dy, padded by KH-1 and
// KW-1, correlated with the flipped, transposed filters.
#include <algorithm>
#include <cstring>

#include "maqueta/kernels.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

// dst[0 .. n) = src[0 .. n) for the short rows copied per image (hundreds of a few dozen values):
// a call to memcpy each cost more than the copy (16% of conv1's backward). This file is built
// with -fno-tree-loop-distribute-patterns (CMakeLists.txt), or GCC would turn the loop back into
// that call.
template <typename T>
inline void copy_row(T* __restrict dst, const T* __restrict src, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
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

// xp[C][Hp][Wp] = x zero-padded, followed by `slack` zeros.
template <typename T>
void pad_image(T* xp, const T* x, const Conv2dDims& d, int64_t slack) {
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    if (d.PH == 0 && d.PW == 0) {
        std::memcpy(xp, x, sizeof(T) * d.C * d.H * d.W);
    } else {
        for (int64_t c = 0; c < d.C; ++c) {
            T* plane = xp + c * Hp * Wp;
            std::fill(plane, plane + d.PH * Wp, T(0));
            for (int64_t h = 0; h < d.H; ++h) {
                T* row = plane + (h + d.PH) * Wp;
                std::fill(row, row + d.PW, T(0));
                copy_row(row + d.PW, x + (c * d.H + h) * d.W, d.W);
                std::fill(row + d.PW + d.W, row + Wp, T(0));
            }
            std::fill(plane + (d.PH + d.H) * Wp, plane + Hp * Wp, T(0));
        }
    }
    std::fill(xp + d.C * Hp * Wp, xp + d.C * Hp * Wp + slack, T(0));
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

// Pixel-major needs the filters to fill the vectors it computes: O a multiple of the width, or
// at least two vectors' worth (so at most a third of the lanes idle).
bool use_pixel(const Conv2dDims& d, int lanes) {
    switch (conv_algo()) {
        case ConvAlgo::Pixel: return true;
        case ConvAlgo::Direct:
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    return d.O % lanes == 0 || d.O >= 2 * lanes;
}

// Direct pays (Wp - OW) dropped columns per row, times O filters; im2col pays a gather of K*P
// values. Prefer direct unless the dropped columns cost clearly more.
bool use_direct(const Conv2dDims& d) {
    if (d.SH != 1 || d.SW != 1) return false;
    switch (conv_algo()) {
        case ConvAlgo::Direct: return true;
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    const int64_t Wp = d.W + 2 * d.PW;
    return (Wp - d.OW) * d.O <= 8 * d.OW;
}

int team_size(int64_t work) {
    return (int)std::max<int64_t>(1, std::min<int64_t>(num_threads(), work));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Pixel-major forward: y^T[p][o] = sum_k xpad[pixel p's window at tap k] * W^T[k][o] (+ b, relu),
// one image at a time per thread, stored straight into y's [o][p] layout.
template <typename T>
void conv2d_forward_pixel(T* y, const T* x, const T* w, const T* b, const Conv2dDims& d, bool relu) {
    const IsaKernels& kern = isa();
    const int L = kern.lanes<T>();
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW, OP = (d.O + L - 1) / L * L;
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    const int teams = team_size(d.N);
    Layout shared, mine;
    const Slot at_wt = shared.add<T>(K * OP), at_boff = shared.add<int64_t>(K);
    const bool padded = d.PH > 0 || d.PW > 0;
    const Slot at_img = mine.add<T>(padded ? d.C * Hp * Wp : 0), at_rows = mine.add<const T*>(P);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* wt = carve<T>(ws, at_wt);
    int64_t* boff = carve<int64_t>(ws, at_boff);
    for (int64_t k = 0; k < K; ++k) {   // W^T, rows padded to whole vectors
        for (int64_t o = 0; o < d.O; ++o) wt[k * OP + o] = w[o * K + k];
        std::fill(wt + k * OP + d.O, wt + (k + 1) * OP, T(0));
    }
    for (int64_t c = 0, k = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw, ++k) boff[k] = c * Hp * Wp + kh * Wp + kw;
#pragma omp parallel num_threads(teams)
    {
        unsigned char* own = ws + shared.size() + thread_index() * mine.size();
        T* img = carve<T>(own, at_img);
        const T** rows = carve<const T*>(own, at_rows);
#pragma omp for schedule(static)
        for (int64_t n = 0; n < d.N; ++n) {
            // The kernel reads single values inside the image, so an unpadded one is read in place.
            const T* xn = x + n * d.C * d.H * d.W;
            if (padded) pad_image(img, xn, d, 0);
            const T* src = padded ? img : xn;
            for (int64_t oh = 0, p = 0; oh < d.OH; ++oh)
                for (int64_t ow = 0; ow < d.OW; ++ow, ++p) rows[p] = src + oh * d.SH * Wp + ow * d.SW;
            BcastArgs<T> g{P, d.O, K, rows, boff, 0, wt, OP, OP, y + n * d.O * P, 1, P};
            g.bias = b;
            g.relu = relu;
            g.run = d.SW == 1 ? d.OW : 0;
            kern.bcast(g);
        }
    }
}

// ---------------------------------------------------------------------------------------------
template <typename T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, const Conv2dDims& d, bool relu) {
    const IsaKernels& kern = isa();
    const int MR = kern.mr, NR = kern.nr<T>();
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW;
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    const bool direct = use_direct(d);
    const int T_ = team_size(d.N);
    if (use_pixel(d, kern.lanes<T>())) return conv2d_forward_pixel(y, x, w, b, d, relu);

    // Per image: the padded image and the wide output (direct), or col (im2col).
    const int64_t in_len = direct ? d.C * Hp * Wp + NR : K * P + NR;
    const int64_t out_len = direct ? d.O * d.OH * Wp : 0;
    Layout shared, mine;
    const Slot at_apack = shared.add<T>(d.O * K), at_boff = shared.add<int64_t>(K);
    const Slot at_in = mine.add<T>(in_len), at_out = mine.add<T>(out_len);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, T_, mine)));
    T* apack = carve<T>(ws, at_apack);
    int64_t* boff = carve<int64_t>(ws, at_boff);

    pack_panels(apack, d.O, K, MR, [&](int64_t o, int64_t k) { return w[o * K + k]; });
    for (int64_t c = 0, k = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw, ++k) boff[k] = direct ? c * Hp * Wp + kh * Wp + kw : k * P;

#pragma omp parallel num_threads(T_)
    {
        unsigned char* own = ws + shared.size() + thread_index() * mine.size();
        T* inb = carve<T>(own, at_in);
        T* outb = carve<T>(own, at_out);
#pragma omp for schedule(static)
        for (int64_t n = 0; n < d.N; ++n) {
            const T* xn = x + n * d.C * d.H * d.W;
            T* yn = y + n * d.O * P;
            if (direct) {
                pad_image(inb, xn, d, NR);
                const int64_t ldc = d.OH * Wp;
                kern.rows(RowsArgs<T>{d.O, (d.OH - 1) * Wp + d.OW, K, apack, inb, boff, 0, true, outb, ldc});
                for (int64_t o = 0; o < d.O; ++o) {
                    const T bias = b ? b[o] : T(0);
                    for (int64_t oh = 0; oh < d.OH; ++oh) {
                        const T* src = outb + o * ldc + oh * Wp;
                        T* dst = yn + (o * d.OH + oh) * d.OW;
                        if (relu)
                            for (int64_t ow = 0; ow < d.OW; ++ow) dst[ow] = std::max(src[ow] + bias, T(0));
                        else
                            for (int64_t ow = 0; ow < d.OW; ++ow) dst[ow] = src[ow] + bias;
                    }
                }
            } else {
                im2col(inb, xn, d, P);
                std::fill(inb + K * P, inb + K * P + NR, T(0));
                kern.rows(RowsArgs<T>{d.O, P, K, apack, inb, nullptr, P, true, yn, P});
                if (b || relu)
                    for (int64_t o = 0; o < d.O; ++o) {
                        const T bias = b ? b[o] : T(0);
                        T* dst = yn + o * P;
                        if (relu)
                            for (int64_t p = 0; p < P; ++p) dst[p] = std::max(dst[p] + bias, T(0));
                        else
                            for (int64_t p = 0; p < P; ++p) dst[p] += bias;
                    }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward. Each thread takes a contiguous range of images and walks it in blocks of kBlock: the
// block's images are laid out (padded image, or col; and dy) so that one batched dot call sums
// their dw contributions inside each register tile. dx is computed per image, by whichever of
// the direct full correlation or W^T dy + col2im costs fewer operations for this shape.
namespace {
constexpr int64_t kBlock = 8;

bool use_direct_dx(const Conv2dDims& d) {
    if (d.SH != 1 || d.SW != 1) return false;
    switch (conv_algo()) {
        case ConvAlgo::Direct: return true;
        case ConvAlgo::Im2col: return false;
        default: break;
    }
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW, WQ = d.W + d.KW - 1;
    const double direct = (double)d.C * d.O * d.KH * d.KW * ((d.H - 1) * WQ + d.W);
    const double gemm = (double)K * P * d.O + 4.0 * K * P;   // the multiply, then scattering dcol back
    return direct <= gemm;
}
}  // namespace

template <typename T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const Conv2dDims& d,
                     bool relu_input) {
    const IsaKernels& kern = isa();
    const int MR = kern.mr, NR = kern.nr<T>(), L = NR / 2;
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW;
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    const int64_t HQ = d.H + d.KH - 1, WQ = d.W + d.KW - 1;  // dy padded for the direct dx
    const int64_t K2 = d.O * d.KH * d.KW;                      // taps of the direct dx
    const bool pixel = use_pixel(d, L);                // dw pixel-major on the broadcast kernel
    const bool direct = pixel || use_direct(d);        // (both read the padded image itself)
    const bool need_dx = dx != nullptr;
    const bool direct_dx = need_dx && use_direct_dx(d);
    const int teams = team_size(d.N);
    const int64_t block = std::min<int64_t>(kBlock, (d.N + teams - 1) / teams);
    auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
    const int64_t OP = round_up(d.O, L);               // dy^T rows padded to whole vectors

    // dw's dot products run over q: the wide output positions (direct) or the P pixels (im2col),
    // zero-padded to whole vectors. The image side may then read up to L past its last row.
    // Pixel-major instead takes dy transposed, [P][OP] per image.
    const int64_t Q = direct ? (d.OH - 1) * Wp + d.OW : P;
    const int64_t Qpad = round_up(Q, L);
    const int64_t img_len = direct ? d.C * Hp * Wp + NR : K * Qpad + NR;  // padded image, or col
    const int64_t dya_len = pixel ? P * OP : d.O * Qpad;                  // dy as dot rows, or dy^T
    const int64_t part_len = pixel ? K * OP : d.O * K;                    // per-thread dw ([K][OP] if pixel)
    // The W^T dy path works on the wide grid (row stride Wp) when the stride is 1, so that each
    // tap's row of W^T dy adds back onto the padded dx as one contiguous run, straight from the
    // GEMM's registers.
    const bool wide_dx = need_dx && !direct_dx && d.SH == 1 && d.SW == 1;
    const int64_t NW = d.OH * Wp;                         // wide grid of dy
    const int64_t dxa_len = !need_dx ? 0 : direct_dx ? d.O * HQ * WQ + NR : wide_dx ? d.O * NW + NR : d.O * P + NR;
    const int64_t dxb_len = !need_dx ? 0 : direct_dx ? d.C * d.H * WQ : wide_dx ? d.C * Hp * Wp : K * P;
    const int64_t a2_len = !need_dx ? 0 : direct_dx ? d.C * K2 : K * d.O;

    Layout shared, mine;
    const Slot at_a2 = shared.add<T>(a2_len), at_boff = shared.add<int64_t>(K), at_boff2 = shared.add<int64_t>(K2),
               at_parts = shared.add<T*>(2 * teams), at_doff = shared.add<int64_t>(K),
               at_ones = shared.add<T>(Qpad);
    const Slot at_poff = shared.add<int64_t>(pixel ? P : 0);
    const Slot at_dw = mine.add<T>(part_len), at_db = mine.add<T>(OP), at_img = mine.add<T>(block * img_len),
               at_trows = mine.add<const T*>(pixel ? K : 0),
               at_dya = mine.add<T>(block * dya_len), at_dxa = mine.add<T>(dxa_len), at_dxb = mine.add<T>(dxb_len);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* a2 = carve<T>(ws, at_a2);
    int64_t* boff = carve<int64_t>(ws, at_boff);
    int64_t* boff2 = carve<int64_t>(ws, at_boff2);
    T** dw_part = carve<T*>(ws, at_parts);
    T** db_part = dw_part + teams;
    int64_t* doff = carve<int64_t>(ws, at_doff);   // where tap k's run starts in the padded dx
    T* ones = carve<T>(ws, at_ones);
    std::fill(ones, ones + Qpad, T(1));
    int64_t* poff = carve<int64_t>(ws, at_poff);   // pixel p's window corner in the padded image
    if (pixel)
        for (int64_t oh = 0, p = 0; oh < d.OH; ++oh)
            for (int64_t ow = 0; ow < d.OW; ++ow, ++p) poff[p] = oh * d.SH * Wp + ow * d.SW;
    for (int t = 0; t < teams; ++t) {
        unsigned char* own = ws + shared.size() + t * mine.size();
        dw_part[t] = carve<T>(own, at_dw);
        db_part[t] = carve<T>(own, at_db);
    }

    for (int64_t c = 0, k = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw, ++k) {
                boff[k] = direct ? c * Hp * Wp + kh * Wp + kw : k * Qpad;
                doff[k] = c * Hp * Wp + kh * Wp + kw;
            }
    if (direct_dx) {
        // A2[c][(o, kh', kw')] = w[o][c][KH-1-kh'][KW-1-kw']
        pack_panels(a2, d.C, K2, MR, [&](int64_t c, int64_t k2) {
            const int64_t o = k2 / (d.KH * d.KW), r = k2 % (d.KH * d.KW);
            const int64_t kh = d.KH - 1 - r / d.KW, kw = d.KW - 1 - r % d.KW;
            return w[((o * d.C + c) * d.KH + kh) * d.KW + kw];
        });
        for (int64_t o = 0, k2 = 0; o < d.O; ++o)
            for (int64_t kh = 0; kh < d.KH; ++kh)
                for (int64_t kw = 0; kw < d.KW; ++kw, ++k2) boff2[k2] = o * HQ * WQ + kh * WQ + kw;
    } else if (need_dx) {
        pack_panels(a2, K, d.O, MR, [&](int64_t k, int64_t o) { return w[o * K + k]; });  // W^T
    }

#pragma omp parallel num_threads(teams)
    {
        const int t = thread_index();
        unsigned char* own = ws + shared.size() + t * mine.size();
        T* dwp = dw_part[t];
        T* dbp = db_part[t];
        T* imgs = carve<T>(own, at_img);
        T* dyas = carve<T>(own, at_dya);
        T* dxa = carve<T>(own, at_dxa);
        T* dxb = carve<T>(own, at_dxb);
        const T** trows = carve<const T*>(own, at_trows);   // tap k of the block's first image
        if (pixel)
            for (int64_t k = 0; k < K; ++k) trows[k] = imgs + boff[k];
        std::fill(dwp, dwp + part_len, T(0));
        std::fill(dbp, dbp + OP, T(0));
        const int ran = team_threads();   // may be fewer than asked: split among those that run
        const Range mine_n = range_of(d.N, ran, t);   // static split: deterministic per thread count
        const int64_t n_begin = mine_n.begin, n_end = mine_n.end;
        for (int64_t n0 = n_begin; n0 < n_end; n0 += block) {
            const int64_t nb = std::min(block, n_end - n0);
            for (int64_t i = 0; i < nb; ++i) {
                const T* xn = x + (n0 + i) * d.C * d.H * d.W;
                const T* dyn = dy + (n0 + i) * d.O * P;
                T* img = imgs + i * img_len;
                T* dya = dyas + i * dya_len;
                if (pixel) {   // the padded image, and dy^T (whose rows also sum into db)
                    pad_image(img, xn, d, NR);
                    if (OP != d.O) std::fill(dya, dya + dya_len, T(0));
                    for (int64_t o = 0; o < d.O; ++o) {   // read dy in order; dy^T fits in L1
                        const T* src = dyn + o * P;
                        for (int64_t p = 0; p < P; ++p) dya[p * OP + o] = src[p];
                    }
                    T* __restrict sums = dbp;
                    for (int64_t p = 0; p < P; ++p) {   // vector over o, each o summed in order of p
                        const T* __restrict row = dya + p * OP;
                        for (int64_t o = 0; o < OP; ++o) sums[o] += row[o];
                    }
                    continue;
                }
                std::fill(dya, dya + dya_len, T(0));
                if (direct) {  // dy on the wide grid, zero in the dropped columns
                    pad_image(img, xn, d, NR);
                    for (int64_t o = 0; o < d.O; ++o)
                        for (int64_t oh = 0; oh < d.OH; ++oh)
                            copy_row(dya + o * Qpad + oh * Wp, dyn + (o * d.OH + oh) * d.OW, d.OW);
                } else {
                    im2col(img, xn, d, Qpad);
                    std::fill(img + K * Qpad, img + K * Qpad + NR, T(0));
                    for (int64_t o = 0; o < d.O; ++o) std::memcpy(dya + o * Qpad, dyn + o * P, sizeof(T) * P);
                }
            }
            if (pixel) {
                // dw^T[k][o] += sum over the block's images and pixels of tap k there * dy^T[pixel][o]
                BcastArgs<T> g{K, d.O, P, trows, poff, 0, dyas, OP, OP, dwp, OP, 1};
                g.accumulate = true;
                g.batch = nb;
                g.a_batch = img_len;
                g.b_batch = dya_len;
                kern.bcast(g);
            } else {
                // dw[o][k] += sum over the block's images and pixels of dy[o][pixel] * tap k there
                DotArgs<T> g{d.O, K, Qpad, dyas, nullptr, Qpad, imgs, boff, 0, dwp, K, true};
                g.batch = nb;
                g.a_batch = dya_len;
                g.b_batch = img_len;
                kern.dot(g);
                // db[o] += sum of dy[o]: the same rows dotted with ones (dy is zero where they are padded)
                DotArgs<T> s{d.O, 1, Qpad, dyas, nullptr, Qpad, ones, nullptr, 0, dbp, 1, true};
                s.batch = nb;
                s.a_batch = dya_len;
                kern.dot(s);
            }
            if (!need_dx) continue;
            for (int64_t i = 0; i < nb; ++i) {
                const T* dyn = dy + (n0 + i) * d.O * P;
                T* dxn = dx + (n0 + i) * d.C * d.H * d.W;
                if (direct_dx) {
                    // dyq[o][a][b] = dy[o][a + PH - (KH-1)][b + PW - (KW-1)], zero outside
                    // (each dy row lands as one run: ow from lo to hi, at column ow + shift)
                    std::fill(dxa, dxa + dxa_len, T(0));
                    const int64_t shift = d.KW - 1 - d.PW;
                    const int64_t lo = std::max<int64_t>(0, -shift), hi = std::min(d.OW, WQ - shift);
                    for (int64_t o = 0; o < d.O; ++o)
                        for (int64_t oh = 0; oh < d.OH; ++oh) {
                            const int64_t a = oh - d.PH + d.KH - 1;
                            if (a < 0 || a >= HQ || lo >= hi) continue;
                            copy_row(dxa + (o * HQ + a) * WQ + shift + lo, dyn + (o * d.OH + oh) * d.OW + lo, hi - lo);
                        }
                    const int64_t ldc = d.H * WQ;
                    kern.rows(RowsArgs<T>{d.C, (d.H - 1) * WQ + d.W, K2, a2, dxa, boff2, 0, true, dxb, ldc});
                    for (int64_t c = 0; c < d.C; ++c)
                        for (int64_t h = 0; h < d.H; ++h)
                            copy_row(dxn + (c * d.H + h) * d.W, dxb + c * ldc + h * WQ, d.W);
                } else if (wide_dx) {
                    // dcol = W^T dy on the wide grid (zero in the dropped columns, so the runs add
                    // nothing where they wrap), then each tap's run adds onto the padded dx
                    std::fill(dxa, dxa + dxa_len, T(0));
                    for (int64_t o = 0; o < d.O; ++o)
                        for (int64_t oh = 0; oh < d.OH; ++oh)
                            copy_row(dxa + o * NW + oh * Wp, dyn + (o * d.OH + oh) * d.OW, d.OW);
                    const int64_t NQ = (d.OH - 1) * Wp + d.OW;
                    T* dxp = dxb;
                    T* target = (d.PH == 0 && d.PW == 0) ? dxn : dxp;
                    std::fill(target, target + d.C * Hp * Wp, T(0));
                    RowsArgs<T> g{K, NQ, d.O, a2, dxa, nullptr, NW, true, target, 0};
                    g.coff = doff;   // each tap's row of W^T dy adds straight onto its run of dx
                    kern.rows(g);
                    if (target == dxp)
                        for (int64_t c = 0; c < d.C; ++c)
                            for (int64_t h = 0; h < d.H; ++h)
                                copy_row(dxn + (c * d.H + h) * d.W, dxp + (c * Hp + h + d.PH) * Wp + d.PW, d.W);
                } else {
                    // dcol = W^T dy, then each tap's column adds back onto the pixel it came from
                    std::memcpy(dxa, dyn, sizeof(T) * d.O * P);
                    std::fill(dxa + d.O * P, dxa + d.O * P + NR, T(0));
                    kern.rows(RowsArgs<T>{K, P, d.O, a2, dxa, nullptr, P, true, dxb, P});
                    col2im(dxn, dxb, d);
                }
                if (relu_input) {   // dx through the ReLU that produced x
                    const T* xn = x + (n0 + i) * d.C * d.H * d.W;
                    for (int64_t e = 0; e < d.C * d.H * d.W; ++e) dxn[e] = xn[e] > T(0) ? dxn[e] : T(0);
                }
            }
        }
        // Reduce the per-thread partials in thread order.
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t e = 0; e < d.O * K; ++e) {
            const int64_t at = pixel ? (e % K) * OP + e / K : e;   // pixel-major partials are [K][OP]
            T s = dw_part[0][at];
            for (int u = 1; u < ran; ++u) s += dw_part[u][at];
            dw[e] = s;
        }
        if (db) {
#pragma omp for schedule(static)
            for (int64_t o = 0; o < d.O; ++o) {
                T s = db_part[0][o];
                for (int u = 1; u < ran; ++u) s += db_part[u][o];
                db[o] = s;
            }
        }
    }
}

#define MAQUETA_INSTANTIATE(T)                                                                  \
    template void conv2d_forward<T>(T*, const T*, const T*, const T*, const Conv2dDims&, bool); \
    template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const Conv2dDims&, bool);
MAQUETA_INSTANTIATE(float)
MAQUETA_INSTANTIATE(double)

}  // namespace maqueta
