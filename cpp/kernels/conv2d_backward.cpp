// conv2d backward: dw, db and (optionally) dx of conv2d_forward, given dy. Dimensions as in
// maqueta/conv2d.h; Hp, Wp, K, P as in conv2d_common.h.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/conv2d.cpp (conv2d_backward).
//
// Each thread takes a contiguous range of images and walks it in blocks (at most kBlock): stage() lays
// the block's images out (padded image, or col; and dy) so that one batched micro-kernel call in
// add_dw() sums their dw contributions inside each register tile. dx is computed per image (or
// per block, by phases) by one of four algorithms (conv2d_backward_dx.h; conv::plan picks by
// operation count), or by Winograd after dw for the whole batch (conv2d_winograd.cpp).
//
// Parallel strategy: over images; each thread owns whole planes of dx. dw and db are summed per
// thread, then reduced in thread order over the weight index (deterministic for a fixed thread
// count, no atomics).
#include "conv2d_backward_dx.h"

namespace maqueta {
namespace conv {
namespace {

// Images per block: at most kBlock, and few enough that one thread's staged images, dy and dx
// buffers fit in kBlockBytes, so that the block's passes (staging, dw, dx, the weave) find them
// in the core's own L2 (1-2 MB on current x86 cores) rather than in the shared L3.
constexpr int64_t kBlock = 8;
constexpr int64_t kBlockBytes = 768 * 1024;

// sums[o] += rows[p][o] for p < n, o < width (rows width apart), each o summed in order of p.
// Sixteen sums at a time stay in registers across the rows: summed in memory, every row waited on
// the store of the one before.
template <typename T>
void add_rows(T* __restrict sums, const T* __restrict rows, int64_t n, int64_t width) {
    constexpr int64_t kChunk = 16;
    int64_t o0 = 0;
    for (; o0 + kChunk <= width; o0 += kChunk) {
        T acc[kChunk];
        for (int64_t i = 0; i < kChunk; ++i) acc[i] = sums[o0 + i];
        for (int64_t p = 0; p < n; ++p)
            for (int64_t i = 0; i < kChunk; ++i) acc[i] += rows[p * width + o0 + i];
        for (int64_t i = 0; i < kChunk; ++i) sums[o0 + i] = acc[i];
    }
    for (int64_t p = 0; p < n; ++p)
        for (int64_t o = o0; o < width; ++o) sums[o] += rows[p * width + o];
}

// Lays out image n for dw: its padded image (or col) at img and dy (or dy^T) at dya. Pixel-major
// also sums dy into db here, from dy^T's rows.
template <typename T>
void stage(const Backward<T>& s, T* img, T* dya, T* dbp, const T* xn, const T* dyn) {
    const Conv2dDims& d = s.d;
    const int NR = s.kern.template nr<T>();
    if (s.pixel) {   // the padded image (margins zeroed once per thread), and dy^T (whose rows also sum into db)
        copy_interior(img, xn, d);
        if (s.OP != d.O) std::fill(dya, dya + s.dya_len, T(0));
        s.kern.transpose(TransposeArgs<T>{.rows = d.O, .cols = s.P, .src = dyn, .lds = s.P, .dst = dya, .ldd = s.OP});
        add_rows(dbp, dya, s.P, s.OP);
        return;
    }
    std::fill(dya, dya + s.dya_len, T(0));
    if (s.direct) {  // dy on the wide grid, zero in the dropped columns
        copy_interior(img, xn, d);
        for (int64_t o = 0; o < d.O; ++o)
            for (int64_t oh = 0; oh < d.OH; ++oh)
                copy_row(dya + o * s.Qpad + oh * s.Wp, dyn + (o * d.OH + oh) * d.OW, d.OW);
    } else {
        im2col(img, xn, d, s.Qpad);
        std::fill(img + s.K * s.Qpad, img + s.K * s.Qpad + NR, T(0));
        for (int64_t o = 0; o < d.O; ++o) std::memcpy(dya + o * s.Qpad, dyn + o * s.P, sizeof(T) * s.P);
    }
}

// dw (and db) += the contributions of the nb images staged at imgs and dyas.
template <typename T>
void add_dw(const Backward<T>& s, T* dwp, T* dbp, const T* imgs, const T* dyas, const T* const* trows, int64_t nb) {
    const Conv2dDims& d = s.d;
    if (s.pixel) {
        // dw^T[k][o] += sum over the block's images and pixels of tap k there * dy^T[pixel][o]
        s.kern.bcast(BcastArgs<T>{.M = s.K, .N = d.O, .K = s.P, .arows = trows, .aoff = s.poff, .astride = 0,
                                  .b = dyas, .ldb = s.OP, .b_readable = s.OP, .c = dwp, .ldc = s.OP, .cstride = 1,
                                  .accumulate = true, .batch = nb, .a_batch = s.img_len, .b_batch = s.dya_len});
        return;
    }
    // dw[o][k] += sum over the block's images and pixels of dy[o][pixel] * tap k there
    s.kern.dot(DotArgs<T>{.M = d.O, .N = s.K, .Q = s.Qpad, .a = dyas, .aoff = nullptr, .lda = s.Qpad, .b = imgs,
                          .boff = s.boff, .ldb = 0, .c = dwp, .ldc = s.K, .accumulate = true, .batch = nb,
                          .a_batch = s.dya_len, .b_batch = s.img_len});
    // db[o] += sum of dy[o]: the same rows dotted with ones (dy is zero where they are padded)
    s.kern.dot(DotArgs<T>{.M = d.O, .N = 1, .Q = s.Qpad, .a = dyas, .aoff = nullptr, .lda = s.Qpad, .b = s.ones,
                          .boff = nullptr, .ldb = 0, .c = dbp, .ldc = 1, .accumulate = true, .batch = nb,
                          .a_batch = s.dya_len});
}

}  // namespace
}  // namespace conv

template <typename T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const Conv2dDims& d,
                     bool relu_input, const IsaKernels& kern, ConvAlgo algo) {
    using namespace conv;
    const int MR = kern.mr, NR = kern.nr<T>(), L = NR / 2;
    const Plan plan = conv::plan(d, L, algo);
    if (plan.winograd_dw) {
        winograd_weight_grad(dw, db, dy, x, d, kern);
        if (dx) winograd_dx(dx, dy, w, relu_input ? x : nullptr, d, kern);
        return;
    }
    const bool dx_by_winograd = dx != nullptr && plan.dx == Dx::Winograd;   // after dw, below
    const bool need_dx = dx != nullptr && !dx_by_winograd;
    const int64_t K = d.C * d.KH * d.KW, P = d.OH * d.OW;
    const int64_t Hp = d.H + 2 * d.PH, Wp = d.W + 2 * d.PW;
    const int64_t K2 = d.O * d.KH * d.KW, OP = round_up(d.O, L);
    const bool pixel = plan.pixel_dw, direct = plan.pixel_dw || plan.direct;
    const bool direct_dx = need_dx && plan.dx == Dx::Direct, wide_dx = need_dx && plan.dx == Dx::Wide;
    const bool phases_dx = need_dx && plan.dx == Dx::Phases;
    const int teams = team_size(d.N);
    // dy padded for the direct correlations: by KH-1, KW-1 (dx_direct), or as phase_grid says
    int64_t HQ = d.H + d.KH - 1, WQ = d.W + d.KW - 1, PT = 0, PL = 0;
    if (phases_dx) {
        const PhaseGrid g = phase_grid(d);
        PT = g.PT;
        PL = g.PL;
        HQ = g.HQ;
        WQ = g.WQ;
    }

    // dw's dot products run over q: the wide output positions (direct) or the P pixels (im2col),
    // zero-padded to whole vectors. The image side may then read up to L past its last row.
    // Pixel-major instead takes dy transposed, [P][OP] per image.
    const int64_t Q = direct ? (d.OH - 1) * Wp + d.OW : P;
    const int64_t Qpad = round_up(Q, L), NW = d.OH * Wp;
    const int64_t img_len = direct ? d.C * Hp * Wp + NR : K * Qpad + NR, dya_len = pixel ? P * OP : d.O * Qpad;
    const int64_t phase_planes = phases_dx ? d.O + (pairs_phases(d) ? 2 : 1) * d.C : 0;   // per image, HQ x WQ each
    const int64_t image_bytes = (int64_t)sizeof(T) * (img_len + dya_len + phase_planes * HQ * WQ);
    const int64_t block = std::max<int64_t>(1, std::min({kBlock, (d.N + teams - 1) / teams, kBlockBytes / image_bytes}));
    Backward<T> s{.d = d, .kern = kern, .pixel = pixel, .direct = direct, .dx = plan.dx, .K = K, .P = P, .Hp = Hp,
                  .Wp = Wp, .HQ = HQ, .WQ = WQ, .K2 = K2, .PT = PT, .PL = PL, .block = block, .OP = OP,
                  .Qpad = Qpad,
                  .img_len = img_len,
                  .dya_len = dya_len,
                  .NW = NW,
                  .dxa_len = !need_dx ? 0 : direct_dx ? d.O * HQ * WQ + NR : wide_dx ? d.O * NW + NR
                           : phases_dx ? d.O * block * HQ * WQ + NR : d.O * P + NR};
    const int64_t part_len = pixel ? K * s.OP : d.O * K;   // per-thread dw ([K][OP] if pixel)
    const int64_t dxb_len = !need_dx ? 0 : direct_dx ? d.C * d.H * s.WQ : wide_dx ? d.C * Hp * Wp
                          : phases_dx ? (pairs_phases(d) ? 2 : 1) * d.C * block * HQ * WQ : K * P;
    const int64_t a2_len = !need_dx ? 0 : (direct_dx || phases_dx) ? d.C * s.K2 : K * d.O;

    Layout shared, mine;
    const Slot at_a2 = shared.add<T>(a2_len), at_boff = shared.add<int64_t>(K), at_boff2 = shared.add<int64_t>(s.K2),
               at_parts = shared.add<T*>(2 * teams), at_doff = shared.add<int64_t>(K),
               at_ones = shared.add<T>(s.Qpad);
    const Slot at_poff = shared.add<int64_t>(pixel ? P : 0), at_phases =
        shared.add<Phase>(phases_dx ? phase_count(d.SH, d.H) * phase_count(d.SW, d.W) : 0),
               at_woff = shared.add<int64_t>(phases_dx ? s.K2 : 0);
    const Slot at_dw = mine.add<T>(part_len), at_db = mine.add<T>(s.OP), at_img = mine.add<T>(block * s.img_len),
               at_trows = mine.add<const T*>(pixel ? K : 0),
               at_dya = mine.add<T>(block * s.dya_len), at_dxa = mine.add<T>(s.dxa_len), at_dxb = mine.add<T>(dxb_len);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* a2 = carve<T>(ws, at_a2);
    int64_t* boff = carve<int64_t>(ws, at_boff);
    int64_t* boff2 = carve<int64_t>(ws, at_boff2);
    T** dw_part = carve<T*>(ws, at_parts);
    T** db_part = dw_part + teams;
    int64_t* doff = carve<int64_t>(ws, at_doff);
    T* ones = carve<T>(ws, at_ones);
    std::fill(ones, ones + s.Qpad, T(1));
    int64_t* poff = carve<int64_t>(ws, at_poff);
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
                boff[k] = direct ? c * Hp * Wp + kh * Wp + kw : k * s.Qpad;
                doff[k] = c * Hp * Wp + kh * Wp + kw;
            }
    if (direct_dx) {
        // A2[c][(o, kh', kw')] = w[o][c][KH-1-kh'][KW-1-kw']
        pack_panels(a2, d.C, s.K2, MR, [&](int64_t c, int64_t k2) {
            const int64_t o = k2 / (d.KH * d.KW), r = k2 % (d.KH * d.KW);
            const int64_t kh = d.KH - 1 - r / d.KW, kw = d.KW - 1 - r % d.KW;
            return w[((o * d.C + c) * d.KH + kh) * d.KW + kw];
        });
        for (int64_t o = 0, k2 = 0; o < d.O; ++o)
            for (int64_t kh = 0; kh < d.KH; ++kh)
                for (int64_t kw = 0; kw < d.KW; ++kw, ++k2) boff2[k2] = o * s.HQ * s.WQ + kh * s.WQ + kw;
    } else if (phases_dx) {
        // phase (a, b) takes the taps kh = r.first + SH*m, kw = c.first + SW*n; its filters
        // A2[c][(o, m, n)] = w[o][c][kh][kw] read dy[o][i + r.base - m][j + c.base - n]
        Phase* phases = carve<Phase>(ws, at_phases);
        int64_t* woff = carve<int64_t>(ws, at_woff);   // tap k2's weight in filter o = 0, channel 0
        const int64_t plane = block * HQ * WQ, KK = d.KH * d.KW;
        for (int64_t a = 0, k2 = 0; a < phase_count(d.SH, d.H); ++a)
            for (int64_t b = 0; b < phase_count(d.SW, d.W); ++b) {
                const PhaseAxis r = phase_axis(a, d.SH, d.PH, d.KH, d.H), c = phase_axis(b, d.SW, d.PW, d.KW, d.W);
                const int64_t taps = r.taps * c.taps;
                phases[a * phase_count(d.SW, d.W) + b] =
                    Phase{.a = a, .b = b, .rows = r.count, .cols = c.count, .k2 = k2, .K2 = d.O * taps};
                // nested loops, no division per tap: this runs before the team starts
                for (int64_t o = 0, k = k2; o < d.O; ++o)
                    for (int64_t m = 0; m < r.taps; ++m)
                        for (int64_t n = 0; n < c.taps; ++n, ++k) {
                            boff2[k] = o * plane + (r.base - m + PT) * WQ + c.base - n + PL;
                            woff[k] = o * d.C * KK + (r.first + d.SH * m) * d.KW + c.first + d.SW * n;
                        }
                pack_panels(a2 + d.C * k2, d.C, d.O * taps, MR,
                            [&](int64_t ch, int64_t k) { return w[woff[k2 + k] + ch * KK]; });
                k2 += d.O * taps;
            }
        s.phases = phases;
    } else if (need_dx) {
        pack_panels(a2, K, d.O, MR, [&](int64_t k, int64_t o) { return w[o * K + k]; });  // W^T
    }
    s.a2 = a2;
    s.boff = boff;
    s.boff2 = boff2;
    s.doff = doff;
    s.poff = poff;
    s.ones = ones;

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
        std::fill(dbp, dbp + s.OP, T(0));
        if (pixel || direct)   // once: stage() then fills only the inside of each image
            for (int64_t i = 0; i < block; ++i) zero_margins(imgs + i * s.img_len, d, NR);
        const int ran = team_threads();   // may be fewer than asked: split among those that run
        const Range mine_n = range_of(d.N, ran, t);   // static split: deterministic per thread count
        for (int64_t n0 = mine_n.begin; n0 < mine_n.end; n0 += block) {
            const int64_t nb = std::min(block, mine_n.end - n0);
            for (int64_t i = 0; i < nb; ++i)
                stage(s, imgs + i * s.img_len, dyas + i * s.dya_len, dbp, x + (n0 + i) * d.C * d.H * d.W,
                      dy + (n0 + i) * d.O * P);
            add_dw(s, dwp, dbp, imgs, dyas, trows, nb);
            if (!need_dx) continue;
            if (s.dx == Dx::Phases)
                dx_phases(s, dx + n0 * d.C * d.H * d.W, dxa, dxb, dy + n0 * d.O * P,
                          relu_input ? x + n0 * d.C * d.H * d.W : nullptr, nb);
            for (int64_t i = 0; i < nb; ++i) {
                const T* dyn = dy + (n0 + i) * d.O * P;
                T* dxn = dx + (n0 + i) * d.C * d.H * d.W;
                switch (s.dx) {
                    case Dx::Direct: dx_direct(s, dxn, dxa, dxb, dyn); break;
                    case Dx::Wide: dx_wide(s, dxn, dxa, dxb, dyn); break;
                    case Dx::Phases: break;
                    case Dx::Col2im: dx_col2im(s, dxn, dxa, dxb, dyn); break;
                    case Dx::Winograd: break;
                }
                if (relu_input && s.dx != Dx::Phases)   // dx through the ReLU that produced x
                    mask_relu(dxn, x + (n0 + i) * d.C * d.H * d.W, d.C * d.H * d.W);
            }
        }
        // Reduce the per-thread partials in thread order.
#pragma omp barrier
        if (pixel) {   // the partials are dw^T, [K][OP]: read along their rows
#pragma omp for schedule(static)
            for (int64_t k = 0; k < K; ++k)
                for (int64_t o = 0; o < d.O; ++o) {
                    T sum = dw_part[0][k * s.OP + o];
                    for (int u = 1; u < ran; ++u) sum += dw_part[u][k * s.OP + o];
                    dw[o * K + k] = sum;
                }
        } else {
            add_in_thread_order(dw, dw_part, ran, d.O * K);
        }
        if (db) add_in_thread_order(db, db_part, ran, d.O);
    }
    if (dx_by_winograd) winograd_dx(dx, dy, w, relu_input ? x : nullptr, d, kern);
}

template void conv2d_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                     const Conv2dDims&, bool, const IsaKernels&, ConvAlgo);
template void conv2d_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                      const Conv2dDims&, bool, const IsaKernels&, ConvAlgo);

}  // namespace maqueta
