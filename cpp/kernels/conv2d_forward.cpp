// conv2d forward: y = conv(x, w) + b (then a fused activation), by one of four algorithms
// (conv2d_common.h explains them and conv::plan picks one): Winograd (conv2d_winograd.cpp),
// pixel-major, direct, im2col. Dimensions as in maqueta/conv2d.h; Hp, Wp, K, P as in
// conv2d_common.h. A per-filter weight scale (a batch norm folded in) is applied as the weights
// are packed, so it costs nothing per pixel.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/conv2d.cpp (conv2d_forward).
//
// Parallel strategy: over images; each thread owns whole planes of y. With fewer images than
// threads (one image's latency), each image is cut into work items: groups of filters
// (pixel-major, two vectors of filters or more per group), and bands of output rows when the
// groups are fewer than the threads. Every output value is still one sum in the same order, so
// the bits do not change.
#include "conv2d_common.h"

namespace maqueta {
namespace conv {
namespace {

// Multiply-adds of a whole call, per image: below half a million, waking a thread costs more
// than it saves.
inline bool worth_splitting(const Conv2dDims& d) {
    return (double)d.O * d.C * d.KH * d.KW * d.OH * d.OW >= 524288.0;
}

// Filter groups per image (pixel-major), for a batch smaller than the team: each thread takes
// whole pairs of vectors of filters and packs its own columns of W^T. Bands alone share one W^T,
// and for one image reading the half another core packed cost more than the band saved.
int64_t groups_for(const Conv2dDims& d, int lanes) {
    const int64_t threads = num_threads();
    if (d.N >= threads || !worth_splitting(d)) return 1;
    return std::max<int64_t>(1, std::min<int64_t>(d.O / (2 * lanes), (threads + d.N - 1) / d.N));
}

// Bands of output rows per image (per filter group): enough for every thread when the batch is
// smaller than the team. Not with few taps per output (an RGB image's 27): such a layer is bound
// by writing its output, which one core does about as fast as two.
int64_t bands_for(const Conv2dDims& d, int64_t groups = 1) {
    const int64_t threads = num_threads();
    if (d.N >= threads || !worth_splitting(d) || d.C * d.KH * d.KW < 64) return 1;
    const int64_t per_image = (threads + d.N - 1) / d.N;
    return std::min<int64_t>(d.OH, (per_image + groups - 1) / groups);
}

// One work item: image n, output rows [oh0, oh1), filters [o0, o1).
struct Band {
    int64_t n, oh0, oh1, o0, o1;
};

inline Band band_of(const Conv2dDims& d, int64_t item, int64_t bands) {
    const int64_t n = item / bands, band = item % bands;
    return Band{n, d.OH * band / bands, d.OH * (band + 1) / bands, 0, d.O};
}

// Item of a pixel-major call: a band of rows for a group of filters (whole vectors).
inline Band piece_of(const Conv2dDims& d, int64_t item, int64_t bands, int64_t groups, int lanes) {
    Band r = band_of(d, item / groups, bands);
    const int64_t g = item % groups, vectors = (d.O + lanes - 1) / lanes;
    r.o0 = std::min(d.O, vectors * g / groups * lanes);
    r.o1 = std::min(d.O, vectors * (g + 1) / groups * lanes);
    return r;
}

// The fused leaky ReLU or ELU over a band of output planes o0 .. o1 of image n.
template <typename T>
void activate_band(T* yn, const Conv2dDims& d, const Band& r, const OutputActivation& act, const IsaKernels& kern) {
    if (!act.elementwise()) return;
    for (int64_t o = r.o0; o < r.o1; ++o)
        apply_output_activation(yn + (o * d.OH + r.oh0) * d.OW, (r.oh1 - r.oh0) * d.OW, act, kern);
}

constexpr int64_t kPackTile = 16;      // taps per tile of W^T
constexpr int64_t kStagePixels = 64;   // pixels per staged part of an image (its O planes stay in L1)

// Weight k of filter o as the kernel uses it: w[o][k], times wscale[o] when a batch norm is folded in.
template <typename T>
inline T filter_weight(const T* w, const T* wscale, int64_t K, int64_t o, int64_t k) {
    return wscale ? w[o * K + k] * wscale[o] : w[o * K + k];
}

// Rows [k0, k1) of W^T (wt[k][o] = weight k of filter o), each padded with zeros to OP values.
template <typename T>
void transpose_filters(T* wt, const T* w, const T* wscale, int64_t K, int64_t O, int64_t OP, int64_t k0,
                       int64_t k1, const IsaKernels& kern) {
    kern.transpose(TransposeArgs<T>{.rows = O, .cols = k1 - k0, .src = w + k0, .lds = K, .dst = wt + k0 * OP,
                                    .ldd = OP, .scale = wscale});
    if (OP > O)
        for (int64_t k = k0; k < k1; ++k) std::fill(wt + k * OP + O, wt + (k + 1) * OP, T(0));
}

// W^T for filters [o0, o1) alone: wt[k][o - o0], rows ldw >= o1 - o0 apart, zero-padded.
template <typename T>
void transpose_filter_group(T* wt, int64_t ldw, const T* w, const T* wscale, int64_t K, int64_t o0, int64_t o1,
                            const IsaKernels& kern) {
    kern.transpose(TransposeArgs<T>{.rows = o1 - o0, .cols = K, .src = w + o0 * K, .lds = K, .dst = wt, .ldd = ldw,
                                    .scale = wscale ? wscale + o0 : nullptr});
    if (ldw > o1 - o0)
        for (int64_t k = 0; k < K; ++k) std::fill(wt + k * ldw + (o1 - o0), wt + (k + 1) * ldw, T(0));
}

// Pixel-major: y^T[p][o] = sum_k xpad[pixel p's window at tap k] * W^T[k][o] (+ b, relu),
// one image at a time per thread, stored straight into y's [o][p] layout; a leaky ReLU or ELU
// then passes over the image's output while it is in cache.
template <typename T>
void forward_pixel(T* y, const T* x, const T* w, const T* b, const T* wscale, const Conv2dDims& d,
                   const OutputActivation& act, const IsaKernels& kern) {
    const int L = kern.lanes<T>();
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW, OP = round_up(d.O, L);
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    const int64_t groups = groups_for(d, L), bands = bands_for(d, groups), items = d.N * bands * groups;
    const int64_t group_cols = (OP / L + groups - 1) / groups * L;   // the widest group, in whole vectors
    const int teams = team_size(items);
    Layout shared, mine;
    const Slot at_wt = shared.add<T>(groups > 1 ? 0 : K * OP), at_boff = shared.add<int64_t>(K);
    const bool padded = d.PH > 0 || d.PW > 0;
    // Output planes a multiple of 4 kB apart put a tile's stores to all O planes in one L1 set:
    // such images are computed a few rows at a time into planes of stage_len values, then copied.
    const bool staged = P * (int64_t)sizeof(T) % 4096 == 0;
    const int64_t stage_rows = std::max<int64_t>(1, kStagePixels / d.OW), stage_len = stage_rows * d.OW + L;
    const Slot at_img = mine.add<T>(padded ? d.C * Hp * Wp : 0), at_rows = mine.add<const T*>(P);
    const Slot at_stage = mine.add<T>(staged ? d.O * stage_len : 0);
    const Slot at_wtg = mine.add<T>(groups > 1 ? K * group_cols : 0);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* wt = carve<T>(ws, at_wt);
    int64_t* boff = carve<int64_t>(ws, at_boff);
    for (int64_t c = 0, k = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw, ++k) boff[k] = c * Hp * Wp + kh * Wp + kw;
    // W^T, rows padded to whole vectors; with a team, in tiles of kPackTile taps shared out (alone,
    // the tiles cost more than they save). Filter groups pack their own columns instead, below.
    if (teams == 1 && groups == 1) transpose_filters(wt, w, wscale, K, d.O, OP, 0, K, kern);
#pragma omp parallel num_threads(teams)
    {
        if (teams > 1 && groups == 1) {
#pragma omp for schedule(static)
            for (int64_t k0 = 0; k0 < K; k0 += kPackTile)
                transpose_filters(wt, w, wscale, K, d.O, OP, k0, std::min(K, k0 + kPackTile), kern);
        }
        unsigned char* own = ws + shared.size() + thread_index() * mine.size();
        T* img = carve<T>(own, at_img);
        const T** rows = carve<const T*>(own, at_rows);
        T* stage = carve<T>(own, at_stage);
        T* wtg = carve<T>(own, at_wtg);
        int64_t packed = -1;   // the filter group whose columns wtg holds
        if (padded) zero_margins(img, d, 0);   // once: each image below only fills the inside
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; ++item) {
            const Band r = piece_of(d, item, bands, groups, L);
            if (r.o0 >= r.o1) continue;
            const T* wg = wt + r.o0;   // this item's filters in W^T
            int64_t ldw = OP;
            if (groups > 1) {
                ldw = round_up(r.o1 - r.o0, L);
                if (packed != r.o0) transpose_filter_group(wtg, ldw, w, wscale, K, r.o0, r.o1, kern);
                packed = r.o0;
                wg = wtg;
            }
            // The kernel reads single values inside the image, so an unpadded one is read in place.
            const T* xn = x + r.n * d.C * d.H * d.W;
            if (padded) copy_interior(img, xn, d);
            const T* src = padded ? img : xn;
            const int64_t p0 = r.oh0 * d.OW;
            for (int64_t oh = r.oh0, p = 0; oh < r.oh1; ++oh)
                for (int64_t ow = 0; ow < d.OW; ++ow, ++p) rows[p] = src + oh * d.SH * Wp + ow * d.SW;
            BcastArgs<T> rows_to_y{.M = (r.oh1 - r.oh0) * d.OW, .N = r.o1 - r.o0, .K = K, .arows = rows,
                                   .aoff = boff, .astride = 0, .b = wg, .ldb = ldw, .b_readable = ldw,
                                   .c = y + (r.n * d.O + r.o0) * P + p0, .ldc = 1, .cstride = P,
                                   .bias = b ? b + r.o0 : nullptr, .relu = act.relu(), .run = d.SW <= 2 ? d.OW : 0,
                                   .run_step = d.SW};
            if (!staged) {
                kern.bcast(rows_to_y);
            } else {
                for (int64_t oh = r.oh0; oh < r.oh1; oh += stage_rows) {   // stage_rows rows at a time
                    const int64_t m = (std::min(r.oh1, oh + stage_rows) - oh) * d.OW;
                    BcastArgs<T> part = rows_to_y;
                    part.M = m;
                    part.arows = rows + (oh - r.oh0) * d.OW;
                    part.c = stage;
                    part.cstride = stage_len;
                    kern.bcast(part);
                    for (int64_t o = r.o0; o < r.o1; ++o)
                        std::copy(stage + (o - r.o0) * stage_len, stage + (o - r.o0) * stage_len + m,
                                  y + (r.n * d.O + o) * P + oh * d.OW);
                }
            }
            activate_band(y + r.n * d.O * P, d, r, act, kern);
        }
    }
}

// Direct, one image (stride 1): the padded image is the B matrix of the wide output
// outb[O][OH*Wp]; the Wp - OW columns past each output row are dropped on the way to y.
template <typename T>
void forward_image_direct(T* yn, T* inb, T* outb, const T* xn, const T* apack, const int64_t* boff, const T* b,
                          const Conv2dDims& d, const Band& r, const OutputActivation& act, const IsaKernels& kern) {
    const int64_t K = d.C * d.KH * d.KW, Wp = d.W + 2 * d.PW, ldc = d.OH * Wp;
    const bool relu = act.relu();
    copy_interior(inb, xn, d);   // the margins were zeroed once per thread
    kern.rows(RowsArgs<T>{.M = d.O, .N = (r.oh1 - r.oh0 - 1) * Wp + d.OW, .K = K, .a = apack,
                          .b = inb + r.oh0 * Wp, .boff = boff, .ldb = 0, .padded = true, .c = outb + r.oh0 * Wp,
                          .ldc = ldc});
    for (int64_t o = 0; o < d.O; ++o) {
        const T bias = b ? b[o] : T(0);
        for (int64_t oh = r.oh0; oh < r.oh1; ++oh) {
            const T* src = outb + o * ldc + oh * Wp;
            T* dst = yn + (o * d.OH + oh) * d.OW;
            if (relu)
                for (int64_t ow = 0; ow < d.OW; ++ow) dst[ow] = std::max(src[ow] + bias, T(0));
            else
                for (int64_t ow = 0; ow < d.OW; ++ow) dst[ow] = src[ow] + bias;
        }
    }
    activate_band(yn, d, r, act, kern);
}

// im2col, one image (any stride): taps gathered into col = inb[K][P], then y = W col.
template <typename T>
void forward_image_im2col(T* yn, T* inb, const T* xn, const T* apack, const T* b, const Conv2dDims& d,
                          const OutputActivation& act, const IsaKernels& kern) {
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW;
    const bool relu = act.relu();
    im2col(inb, xn, d, P);
    std::fill(inb + K * P, inb + K * P + kern.nr<T>(), T(0));
    kern.rows(RowsArgs<T>{.M = d.O, .N = P, .K = K, .a = apack, .b = inb, .boff = nullptr, .ldb = P,
                          .padded = true, .c = yn, .ldc = P});
    if (b || relu)
        for (int64_t o = 0; o < d.O; ++o) {
            const T bias = b ? b[o] : T(0);
            T* dst = yn + o * P;
            if (relu)
                for (int64_t p = 0; p < P; ++p) dst[p] = std::max(dst[p] + bias, T(0));
            else
                for (int64_t p = 0; p < P; ++p) dst[p] += bias;
        }
    apply_output_activation(yn, d.O * P, act, kern);
}

// Direct or im2col: W packed once into panels, then one image per iteration.
template <typename T>
void forward_gemm(T* y, const T* x, const T* w, const T* b, const T* wscale, const Conv2dDims& d,
                  const OutputActivation& act, bool direct, const IsaKernels& kern) {
    const int MR = kern.mr, NR = kern.nr<T>();
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW;
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    const int64_t bands = direct ? bands_for(d) : 1, items = d.N * bands;   // im2col gathers whole images
    const int teams = team_size(items);
    // Per image: the padded image and the wide output (direct), or col (im2col).
    const int64_t in_len = direct ? d.C * Hp * Wp + NR : K * P + NR;
    const int64_t out_len = direct ? d.O * d.OH * Wp : 0;
    Layout shared, mine;
    const Slot at_apack = shared.add<T>(d.O * K), at_boff = shared.add<int64_t>(K);
    const Slot at_in = mine.add<T>(in_len), at_out = mine.add<T>(out_len);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* apack = carve<T>(ws, at_apack);
    int64_t* boff = carve<int64_t>(ws, at_boff);
    pack_panels(apack, d.O, K, MR, [&](int64_t o, int64_t k) { return filter_weight(w, wscale, K, o, k); });
    for (int64_t c = 0, k = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw, ++k) boff[k] = direct ? c * Hp * Wp + kh * Wp + kw : k * P;

#pragma omp parallel num_threads(teams)
    {
        unsigned char* own = ws + shared.size() + thread_index() * mine.size();
        T* inb = carve<T>(own, at_in);
        T* outb = carve<T>(own, at_out);
        if (direct) zero_margins(inb, d, NR);   // once: each image fills only the inside
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; ++item) {
            const Band r = band_of(d, item, bands);
            const T* xn = x + r.n * d.C * d.H * d.W;
            T* yn = y + r.n * d.O * P;
            if (direct) forward_image_direct(yn, inb, outb, xn, apack, boff, b, d, r, act, kern);
            else        forward_image_im2col(yn, inb, xn, apack, b, d, act, kern);
        }
    }
}

}  // namespace
}  // namespace conv

template <typename T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, const T* wscale, const Conv2dDims& d,
                    const OutputActivation& act, const IsaKernels& kern, ConvAlgo algo) {
    const conv::Plan plan = conv::plan(d, kern.lanes<T>(), algo);
    if (plan.winograd) conv::winograd_correlate(y, x, w, wscale, false, b, (const T*)nullptr, d, act, kern);
    else if (plan.pixel) conv::forward_pixel(y, x, w, b, wscale, d, act, kern);
    else            conv::forward_gemm(y, x, w, b, wscale, d, act, plan.direct, kern);
}

template void conv2d_forward<float>(float*, const float*, const float*, const float*, const float*,
                                    const Conv2dDims&, const OutputActivation&, const IsaKernels&, ConvAlgo);
template void conv2d_forward<double>(double*, const double*, const double*, const double*, const double*,
                                     const Conv2dDims&, const OutputActivation&, const IsaKernels&, ConvAlgo);

}  // namespace maqueta
