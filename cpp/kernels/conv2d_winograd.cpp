// conv2d by Winograd F(2x2, 3x3), for 3x3 stride-1 layers with enough channels (conv::plan):
// the forward pass; the input gradient, as the same correlation of dy with the flipped,
// transposed filters; and the weight gradient, as the transposed products. Each 2x2 tile of
// output takes 16 multiplies per channel pair instead of 36. Dimensions as in maqueta/conv2d.h.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/conv2d.cpp (the
// correlation this computes with fewer multiplies).
//
//   TH = ceil(OH/2), TW = ceil(OW/2)   tile rows and columns of an output plane
//   U[xi][o][c] = (G g G^T)[xi/4][xi%4] for filter g = (o, c), packed as the rows kernel's A panels
//   V[xi][c][t] = (B^T d B)[xi/4][xi%4] for the 4x4 input tile d of tile t   (wino_in)
//   M[xi][o][t] = sum_c U[xi][o][c] V[xi][c][t]                              (16 GEMMs, rows kernel)
//   y tile t = A^T M[.][o][t] A + b[o]                                      (wino_out)
// with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] (B^T and A^T in cpp/isa/winograd.inc).
// The weight gradient runs the products the other way round:
//   Z[xi][o][t] = (A dy_t A^T)[xi/4][xi%4] for dy's 2x2 tile t                (wino_grad)
//   S[xi][c][o] = sum over every tile of the batch of V[xi][c][t] Z[xi][o][t]  (bcast kernel)
//   dw[o][c] = G^T S[.][c][o] G
//
// Parallel strategy. Forward and dx: work items are blocks of tile rows of one image (about
// kBlockTiles tiles, so that V and M stay in L2; smaller when there are fewer images than
// threads); each thread owns the output rows of its blocks, and every value is computed the same
// way whichever thread computes it, so results do not depend on the team. dw: each thread sums
// S over a contiguous range of images, then the sums are added in thread order (deterministic
// for a fixed thread count). Filter transforms are done in double and rounded once to T; the
// forward's is shared out by panels of filters.
#include "conv2d_common.h"

namespace maqueta {
namespace conv {
namespace {

constexpr int64_t kBlockTiles = 64;

// U = G g G^T for one 3x3 filter g (row-major), in double.
void transform_filter(double u[16], const double g[9]) {
    double t[4][3];   // G g
    for (int j = 0; j < 3; ++j) {
        t[0][j] = g[j];
        t[1][j] = 0.5 * (g[j] + g[3 + j] + g[6 + j]);
        t[2][j] = 0.5 * (g[j] - g[3 + j] + g[6 + j]);
        t[3][j] = g[6 + j];
    }
    for (int i = 0; i < 4; ++i) {
        u[4 * i + 0] = t[i][0];
        u[4 * i + 1] = 0.5 * (t[i][0] + t[i][1] + t[i][2]);
        u[4 * i + 2] = 0.5 * (t[i][0] - t[i][1] + t[i][2]);
        u[4 * i + 3] = t[i][2];
    }
}

// dw = G^T S G: the 3x3 gradient of one filter from the 16 sums S of its products, in double.
void untransform_filter(double g[9], const double s[16]) {
    double t[3][4];   // G^T S
    for (int j = 0; j < 4; ++j) {
        t[0][j] = s[j] + 0.5 * (s[4 + j] + s[8 + j]);
        t[1][j] = 0.5 * (s[4 + j] - s[8 + j]);
        t[2][j] = 0.5 * (s[4 + j] + s[8 + j]) + s[12 + j];
    }
    for (int i = 0; i < 3; ++i) {
        g[3 * i + 0] = t[i][0] + 0.5 * (t[i][1] + t[i][2]);
        g[3 * i + 1] = 0.5 * (t[i][1] - t[i][2]);
        g[3 * i + 2] = 0.5 * (t[i][1] + t[i][2]) + t[i][3];
    }
}

// sum[o] += the sum of each of the O planes of P values at y, in lanes of 16 added in a fixed
// order (vectorised without reassociating).
template <typename T>
void add_plane_sums(T* sum, const T* y, int64_t O, int64_t P) {
    for (int64_t o = 0; o < O; ++o) {
        const T* plane = y + o * P;
        T lane[16] = {};
        int64_t p = 0;
        for (; p + 16 <= P; p += 16)
            for (int l = 0; l < 16; ++l) lane[l] += plane[p + l];
        for (; p < P; ++p) lane[p % 16] += plane[p];
        T total = T(0);
        for (int l = 0; l < 16; ++l) total += lane[l];
        sum[o] += total;
    }
}

// Copy `planes` planes of H x W from src into a zeroed tile buffer (rows ld apart, planes `plane`
// apart), PH rows and PW columns in: its margins and the room for whole tiles stay zero.
template <typename T>
void copy_into_tiles(T* dst, const T* src, int64_t planes, int64_t H, int64_t W, int64_t PH, int64_t PW, int64_t ld,
                     int64_t plane) {
    for (int64_t c = 0; c < planes; ++c)
        for (int64_t h = 0; h < H; ++h) copy_row(dst + c * plane + (h + PH) * ld + PW, src + (c * H + h) * W, W);
}

}  // namespace

template <typename T>
void winograd_correlate(T* y, const T* x, const T* w, const T* wscale, bool transposed, const T* b,
                        const T* mask, const Conv2dDims& d, const OutputActivation& act, const IsaKernels& kern) {
    const int MR = kern.mr, NR = kern.nr<T>(), L = NR / 2;
    const int64_t TH = (d.OH + 1) / 2, TW = (d.OW + 1) / 2;
    const int64_t HB = 2 * TH + 2, WB = 2 * TW + 2, plane = HB * WB;   // room for the last tiles' 4 rows
    // about kBlockTiles tiles a block, and with fewer images than threads, enough blocks for all
    const int64_t per_image = d.N > 0 ? (num_threads() + d.N - 1) / d.N : 1;
    const int64_t block_rows = std::max<int64_t>(
        1, std::min((TH + per_image - 1) / per_image, std::max<int64_t>(1, kBlockTiles / std::max<int64_t>(1, TW))));
    const int64_t blocks = (TH + block_rows - 1) / block_rows, items = d.N * blocks;
    const int64_t ldv = round_up(block_rows * TW, NR);
    const int64_t vstride = d.C * ldv + L, mstride = d.O * ldv + L;   // V[xi], M[xi]: off 4 kB multiples
    const int teams = team_size(items);
    Layout shared, mine;
    const Slot at_u = shared.add<T>(16 * d.O * d.C);
    // wino_in reads 2L + 2 values from a vector's first tile; wino_out L values from its first
    const Slot at_img = mine.add<T>(d.C * plane + 2 * L + 2), at_v = mine.add<T>(16 * vstride),
               at_m = mine.add<T>(16 * mstride + L), at_panel = mine.add<T>(16 * d.C * MR);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* u = carve<T>(ws, at_u);

#pragma omp parallel num_threads(teams)
    {
        // U, each thread whole panels of filters (panel p holds filters p*MR .., laid out [C][mr]
        // in each of the 16 matrices), transformed into `panel` first: written straight to the
        // 16 matrices, each filter's values land O*C values apart and miss the cache one by one
        unsigned char* own = ws + shared.size() + thread_index() * mine.size();
        T* panel = carve<T>(own, at_panel);
#pragma omp for schedule(static)
        for (int64_t o0 = 0; o0 < d.O; o0 += MR) {
            const int64_t mr = std::min<int64_t>(MR, d.O - o0);
            for (int64_t c = 0; c < d.C; ++c)
                for (int64_t i = 0; i < mr; ++i) {
                    const int64_t o = o0 + i;
                    double g[9], f[16];
                    for (int k = 0; k < 9; ++k) {
                        // transposed: filter (o, c) is layer filter (c, o) rotated, w[c][o][2 - kh][2 - kw]
                        g[k] = transposed ? (double)w[(c * d.O + o) * 9 + 8 - k]
                             : wscale     ? (double)(w[(o * d.C + c) * 9 + k] * wscale[o])
                                          : (double)w[(o * d.C + c) * 9 + k];
                    }
                    transform_filter(f, g);
                    for (int xi = 0; xi < 16; ++xi) panel[xi * d.C * mr + c * mr + i] = (T)f[xi];
                }
            for (int xi = 0; xi < 16; ++xi)
                std::copy(panel + xi * d.C * mr, panel + (xi + 1) * d.C * mr, u + xi * d.O * d.C + o0 * d.C);
        }
        T* img = carve<T>(own, at_img);
        T* v = carve<T>(own, at_v);
        T* m = carve<T>(own, at_m);
        // once: the margins stay zero (each image fills only the inside), and the columns past a
        // block's tiles, which the kernels read but never use, hold no uninitialised value
        std::fill(img, img + d.C * plane + 2 * L + 2, T(0));
        for (int64_t row = 0; row < 16 * d.C; ++row) {
            T* r = v + row / d.C * vstride + row % d.C * ldv;
            std::fill(r + block_rows * TW, r + ldv, T(0));
        }
        for (int64_t row = 0; row < 16 * d.O; ++row) {
            T* r = m + row / d.O * mstride + row % d.O * ldv;
            std::fill(r + block_rows * TW, r + ldv, T(0));
        }
        for (int xi = 0; xi < 16; ++xi) std::fill(v + xi * vstride + d.C * ldv, v + (xi + 1) * vstride, T(0));
        for (int xi = 0; xi < 16; ++xi) std::fill(m + xi * mstride + d.O * ldv, m + (xi + 1) * mstride, T(0));
        std::fill(m + 16 * mstride, m + 16 * mstride + L, T(0));
        int64_t loaded = -1;   // the image img holds
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; ++item) {
            const int64_t n = item / blocks, r0 = item % blocks * block_rows;
            const int64_t rows = std::min(block_rows, TH - r0);
            if (rows < block_rows)   // a short last block: the kernels read past its tiles, zero there
                for (int xi = 0; xi < 16; ++xi) {
                    for (T* r = v + xi * vstride; r < v + xi * vstride + d.C * ldv; r += ldv)
                        std::fill(r + rows * TW, r + block_rows * TW, T(0));
                    for (T* r = m + xi * mstride; r < m + xi * mstride + d.O * ldv; r += ldv)
                        std::fill(r + rows * TW, r + block_rows * TW, T(0));
                }
            if (n != loaded) {
                copy_into_tiles(img, x + n * d.C * d.H * d.W, d.C, d.H, d.W, d.PH, d.PW, WB, plane);
                loaded = n;
            }
            kern.wino_in(WinoTileArgs<T>{.C = d.C, .tiles_w = TW, .tile_rows = rows, .x = img + 2 * r0 * WB,
                                       .ldx = WB, .plane = plane, .v = v, .ldv = ldv, .xi_stride = vstride});
            for (int xi = 0; xi < 16; ++xi)
                kern.rows(RowsArgs<T>{.M = d.O, .N = rows * TW, .K = d.C, .a = u + xi * d.O * d.C,
                                      .b = v + xi * vstride, .boff = nullptr, .ldb = ldv, .padded = true,
                                      .c = m + xi * mstride, .ldc = ldv});
            const int64_t P = d.OH * d.OW;
            kern.wino_out(WinoOutArgs<T>{.O = d.O, .tiles_w = TW, .tile_rows = rows, .row0 = 2 * r0, .OH = d.OH,
                                         .OW = d.OW, .m = m, .ldm = ldv, .xi_stride = mstride, .y = y + n * d.O * P,
                                         .bias = b, .relu = act.relu(), .mask = mask ? mask + n * d.O * P : nullptr});
            if (act.elementwise()) {
                const int64_t oh0 = 2 * r0, oh1 = std::min(d.OH, 2 * (r0 + rows));
                for (int64_t o = 0; o < d.O; ++o)
                    apply_output_activation(y + n * d.O * P + o * P + oh0 * d.OW, (oh1 - oh0) * d.OW, act, kern);
            }
        }
    }
}

template <typename T>
void winograd_weight_grad(T* dw, T* db, const T* dy, const T* x, const Conv2dDims& d, const IsaKernels& kern) {
    const int NR = kern.nr<T>(), L = NR / 2;
    const int64_t TH = (d.OH + 1) / 2, TW = (d.OW + 1) / 2;
    const int64_t HB = 2 * TH + 2, WB = 2 * TW + 2, plane = HB * WB;
    const int64_t dy_plane = 4 * TH * TW, P = d.OH * d.OW;   // dy padded to whole tiles
    const int64_t block_rows = std::max<int64_t>(1, std::min(TH, kBlockTiles / std::max<int64_t>(1, TW)));
    const int64_t ldv = round_up(block_rows * TW, NR), OP = round_up(d.O, NR);
    const int64_t vstride = d.C * ldv + L, zstride = d.O * ldv + L;   // off 4 kB multiples, as in the forward
    const int teams = team_size(d.N);
    Layout shared, mine;
    const Slot at_parts = shared.add<T*>(2 * teams);
    const Slot at_img = mine.add<T>(d.C * plane + 2 * L + 2), at_dy = mine.add<T>(d.O * dy_plane + 2 * L + 2),
               at_v = mine.add<T>(16 * vstride), at_z = mine.add<T>(16 * zstride + L),
               at_vrows = mine.add<const T*>(d.C), at_zt = mine.add<T>(ldv * OP),
               at_s = mine.add<T>(16 * d.C * d.O), at_db = mine.add<T>(d.O);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T** s_part = carve<T*>(ws, at_parts);   // each thread's S and db sums, for the reduction
    T** db_part = s_part + teams;
    for (int t = 0; t < teams; ++t) {
        unsigned char* own = ws + shared.size() + t * mine.size();
        s_part[t] = carve<T>(own, at_s);
        db_part[t] = carve<T>(own, at_db);
    }

#pragma omp parallel num_threads(teams)
    {
        const int t = thread_index(), ran = team_threads();
        unsigned char* own = ws + shared.size() + t * mine.size();
        T* img = carve<T>(own, at_img);
        T* dyb = carve<T>(own, at_dy);
        T* v = carve<T>(own, at_v);
        T* z = carve<T>(own, at_z);
        const T** vrows = carve<const T*>(own, at_vrows);
        T* zt = carve<T>(own, at_zt);
        T* s = s_part[t];    // S[xi][c][o], summed over this thread's images
        T* dbp = db_part[t];
        // once: margins and slack zero (each image fills only the inside), and so are the
        // columns of Z^T past O, which the bcast kernel reads
        std::fill(img, img + d.C * plane + 2 * L + 2, T(0));
        std::fill(dyb, dyb + d.O * dy_plane + 2 * L + 2, T(0));
        std::fill(zt, zt + ldv * OP, T(0));
        std::fill(s, s + 16 * d.C * d.O, T(0));
        std::fill(dbp, dbp + d.O, T(0));
        const Range images = range_of(d.N, ran, t);   // static split: deterministic per thread count
        for (int64_t n = images.begin; n < images.end; ++n) {
            const T* dyn = dy + n * d.O * P;
            copy_into_tiles(img, x + n * d.C * d.H * d.W, d.C, d.H, d.W, d.PH, d.PW, WB, plane);
            copy_into_tiles(dyb, dyn, d.O, d.OH, d.OW, int64_t(0), int64_t(0), 2 * TW, dy_plane);
            if (db) add_plane_sums(dbp, dyn, d.O, P);
            for (int64_t r0 = 0; r0 < TH; r0 += block_rows) {
                const int64_t rows = std::min(block_rows, TH - r0), K = rows * TW;
                kern.wino_in(WinoTileArgs<T>{.C = d.C, .tiles_w = TW, .tile_rows = rows, .x = img + 2 * r0 * WB,
                                           .ldx = WB, .plane = plane, .v = v, .ldv = ldv, .xi_stride = vstride});
                kern.wino_grad(WinoTileArgs<T>{.C = d.O, .tiles_w = TW, .tile_rows = rows,
                                               .x = dyb + 2 * r0 * 2 * TW, .ldx = 2 * TW, .plane = dy_plane, .v = z,
                                               .ldv = ldv, .xi_stride = zstride});
                for (int xi = 0; xi < 16; ++xi) {
                    // S[xi] (C x O) += V[xi] Z[xi]^T over the block's K tiles: V[xi]'s values
                    // broadcast from its rows, Z[xi]^T (transposed once) as the vectors
                    for (int64_t c = 0; c < d.C; ++c) vrows[c] = v + xi * vstride + c * ldv;
                    kern.transpose(TransposeArgs<T>{.rows = d.O, .cols = K, .src = z + xi * zstride, .lds = ldv,
                                                    .dst = zt, .ldd = OP});
                    kern.bcast(BcastArgs<T>{.M = d.C, .N = d.O, .K = K, .arows = vrows, .aoff = nullptr, .astride = 1,
                                            .b = zt, .ldb = OP, .b_readable = OP, .c = s + xi * d.C * d.O,
                                            .ldc = d.O, .cstride = 1, .accumulate = true});
                }
            }
        }
        // dw[o][c] = G^T S G, S summed over the threads in thread order
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t oc = 0; oc < d.O * d.C; ++oc) {
            const int64_t o = oc / d.C, c = oc % d.C;
            double sums[16], g[9];
            for (int xi = 0; xi < 16; ++xi) {
                const int64_t at = (xi * d.C + c) * d.O + o;
                T sum = s_part[0][at];
                for (int u = 1; u < ran; ++u) sum += s_part[u][at];
                sums[xi] = (double)sum;
            }
            untransform_filter(g, sums);
            for (int k = 0; k < 9; ++k) dw[oc * 9 + k] = (T)g[k];
        }
        if (db) add_in_thread_order(db, db_part, ran, d.O);
    }
}

template void winograd_weight_grad<float>(float*, float*, const float*, const float*, const Conv2dDims&,
                                          const IsaKernels&);
template void winograd_weight_grad<double>(double*, double*, const double*, const double*, const Conv2dDims&,
                                           const IsaKernels&);
template void winograd_correlate<float>(float*, const float*, const float*, const float*, bool, const float*,
                                        const float*, const Conv2dDims&, const OutputActivation&, const IsaKernels&);
template void winograd_correlate<double>(double*, const double*, const double*, const double*, bool, const double*,
                                         const double*, const Conv2dDims&, const OutputActivation&, const IsaKernels&);

}  // namespace conv
}  // namespace maqueta
