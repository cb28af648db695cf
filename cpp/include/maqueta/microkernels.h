// The micro-kernels: single-threaded inner loops on one tile of work, each taking one argument
// struct. Callers split the work across threads. One copy of them is compiled per instruction set
// (cpp/isa/microkernels.inc) and runtime.h holds the copies for this CPU in a table, IsaKernels.
#pragma once
#include <cstdint>

namespace maqueta {

// C[i][q] = sum_k A[i][k] * B[k][q]            i < M, q < N, k < K      (C is overwritten)
// A is packed in panels of MR rows (MR from isa().mr): panel p holds rows p*MR .. p*MR+mr-1
// (mr = min(MR, M - p*MR)) at a + p*MR*K, laid out [K][mr].
// Row k of B starts at b + boff[k] (or b + k*ldb when boff is null) and runs contiguous along q.
// With padded set, every B row may be read up to N rounded up to the tile width NR, which saves
// the slower edge loads; otherwise exactly N columns are read.
// With coff set, row i of C is not at c + i*ldc but at c + coff[i], and the tile is added there
// (+=) instead of stored: a GEMM whose rows scatter onto overlapping runs of one buffer (the
// gradient of an unfolded image, added straight back onto the image without a dcol buffer).
template <typename T>
struct RowsArgs {
    int64_t M, N, K;
    const T* a;
    const T* b;
    const int64_t* boff;
    int64_t ldb;
    bool padded;
    T* c;
    int64_t ldc;
    const int64_t* coff = nullptr;
};

// C[i][j] (+)= sum_t sum_q A_t,i[q] * B_t,j[q]      i < M, j < N, q < Q, t < batch
// Row i of A in batch element t starts at a + t*a_batch + aoff[i] (or + i*lda), row j of B at
// b + t*b_batch + boff[j] (or + j*ldb). The batch runs inside each tile, so its sums reduce once
// per tile rather than once per element. With accumulate set the sums are added to C.
template <typename T>
struct DotArgs {
    int64_t M, N, Q;
    const T* a;
    const int64_t* aoff;
    int64_t lda;
    const T* b;
    const int64_t* boff;
    int64_t ldb;
    T* c;
    int64_t ldc;
    bool accumulate;
    int64_t batch = 1;
    int64_t a_batch = 0, b_batch = 0;
};

// 2x2 max-pool with stride 2 over `planes` planes of H x W (H, W < 2^30): y = the window's
// maximum, idx = its offset in the plane; the first maximum wins ties and the first NaN wins
// over any number (as maxpool2d_forward). Branch-free, so the compiler vectorises it.
template <typename T>
struct Pool2x2Args {
    int64_t planes, H, W, OH, OW;
    T* y;
    int64_t* idx;
    const T* x;
};

// C[i][j] (+)= sum_t sum_k A_t,i[aoff[k]] * B_t[k][j] (+ bias[j], then max(., 0) with relu)
//                                                    i < M, j < N, k < K, t < batch
// Row i of A is the pointer arows[i] (plus t*a_batch), read at offsets aoff[k] (or k*astride):
// gathered and broadcast, never packed. Row k of B starts at b + t*b_batch + k*ldb and is contiguous
// along j; full vectors are read only while they stay below column b_readable (>= N), the last
// partial one through a copy. C[i][j] is at c + i*ldc + j*cstride: cstride 1 stores rows of
// vectors, ldc 1 stores the transpose (one value at a time). The sums over t stay in registers.
template <typename T>
struct BcastArgs {
    int64_t M, N, K;
    const T* const* arows;
    const int64_t* aoff;
    int64_t astride;
    const T* b;
    int64_t ldb;
    int64_t b_readable;
    T* c;
    int64_t ldc, cstride;
    bool accumulate = false;
    const T* bias = nullptr;
    bool relu = false;
    int64_t batch = 1, a_batch = 0, b_batch = 0;
    // run > 0: the rows come in runs of `run` (M a multiple of it) inside which arows[i + 1] is
    // arows[i] + run_step (1 or 2), as the pixels of one output row of a convolution of that
    // stride. A tile then holds one run (or part of one), or two whole short runs, and reads each
    // through its first pointer: one register per run, so a tile can hold more rows.
    int64_t run = 0, run_step = 1;
};

// Batch-lane kernels (lanes.inc): tensors stored [B][C][H][W][V], V images per vector.
template <typename T> struct LaneCode;                       // per-lane pool codes, as wide as T
template <> struct LaneCode<float> { typedef int32_t type; };
template <> struct LaneCode<double> { typedef int64_t type; };

template <typename T>
struct LaneConvArgs {   // stride 1, no padding; wp is w as [C][KH][KW][O]
    int64_t B, C, H, W, O, KH, KW, OH, OW;
    const T* x;
    const T* wp;
    const T* bias;
    bool relu;
    T* y;                               // [B][O][OH][OW] lanes, or with code the pooled [B][O][OH/2][OW/2]
    typename LaneCode<T>::type* code;   // nullptr, or 2x2-pool the output: the pooled y's window codes
    T* rows;                            // with code: scratch for two output rows, [O][2][OW] lanes
};

template <typename T>
struct LaneDwArgs {     // adds into dw [O][K] and db [O]; toff[k]: tap k's offset in an input block
    int64_t B, C, H, W, O, K, OH, OW;
    const T* x;
    const T* dy;
    const int64_t* toff;
    T* dw;
    T* db;
};

template <typename T>
struct LaneDxArgs {     // wq is w as [KH][KW][O][C]; relu_x: zero dx where that x <= 0
    int64_t B, C, H, W, O, KH, KW, OH, OW;
    const T* dy;
    const T* wq;
    const T* relu_x;
    T* dx;
};

template <typename T>
struct LanePoolArgs {   // 2x2, stride 2, over `planes` planes of H x W lanes
    int64_t planes, H, W, OH, OW;
    const T* x;
    T* y;
    typename LaneCode<T>::type* code;
};

template <typename T>
struct LaneUnpoolArgs {
    int64_t planes, H, W, OH, OW;
    const T* dy;
    const typename LaneCode<T>::type* code;
    const T* relu_y;
    T* dx;
    int64_t* bad;   // incremented when some code lies outside 0..3 (such a window passes no gradient)
};

template <typename T>
struct LanePackArgs {   // blocks [b0, b1) of N images of E elements each
    int64_t N, E, b0, b1;
    T* flat;
    T* lanes;
    bool to_lanes;
};

// Elementwise optimizer updates over P parameters (see kernels/optim.cpp for the arithmetic), with the
// scalars already rounded to T, so every instruction set computes the same thing.
template <typename T>
struct AdamArgs {
    int64_t P;
    T* param;
    T* m;
    T* v;
    const T* grad;
    T neg_step_size, bc2_sqrt, w1, one_minus_w1, b2, w2, eps, wd;
    bool small_w1, decay;
};

template <typename T>
struct SgdArgs {
    int64_t P;
    T* param;
    T* velocity;  // nullptr without momentum
    const T* grad;
    T neg_lr, mu, wd;
    bool decay, nesterov;
};

// Batch normalisation's passes over channel c of x [N, C, S] (see kernels/normalization.cpp),
// in double. A sum puts value s of each plane on chain s % kBnChains of first (and second):
// independent chains that run as vector adds, which the caller adds up in order.
enum class BnPass {
    Sum,        // first += x
    Squares,    // first += (x - mu)^2
    Normalize,  // out = (x - mu) * scale + shift, then max(out, 0) if relu
    GradSums,   // first += dy; second += dy * (x - mu) * invstd
    Grad        // out = scale * (dy - mean_dy - (x - mu) * invstd * mean_dy_xhat)
};   // GradSums and Grad with relu_output read dy * (relu_output > 0) in place of dy
constexpr int kBnChains = 32;

template <typename T>
struct BnArgs {
    BnPass pass;
    int64_t N, C, S, c;
    const T* x;
    const T* dy;     // GradSums, Grad
    const T* relu_output;  // GradSums, Grad: the output of a ReLU fused into the forward, or nullptr
    T* out;          // Normalize, Grad
    double mu, invstd, scale, shift, mean_dy, mean_dy_xhat;
    bool relu;
    double* first;   // [kBnChains], added to
    double* second;  // [kBnChains], added to (GradSums)
};

// dst[j][i] = src[i][j] * scale[i] (scale may be null: no product) for i < rows, j < cols; rows
// of src lds apart, rows of dst ldd apart. The weights of a pixel-major convolution, W^T, are
// this transpose of W, with a batch norm's scale when one is folded in.
template <typename T>
struct TransposeArgs {
    int64_t rows, cols;
    const T* src;
    int64_t lds;
    T* dst;
    int64_t ldd;
    const T* scale = nullptr;
};

// Winograd F(2x2, 3x3) (kernels/conv2d_winograd.cpp): a 3x3 stride-1 correlation computed on
// 2x2 output tiles, each from a 4x4 input tile d, as Y = A^T [(G g G^T) . (B^T d B)] A: 16
// multiplies per tile and channel pair instead of 36. Tile t of a block is tile row t / tiles_w,
// column t % tiles_w; tile (r, q) reads the input rows 2r .. 2r+3 and columns 2q .. 2q+3.
//
// The tile transforms that read planes and write one vector of 16 values per tile:
// wino_in: v[xi][c][t] = (B^T d B)[xi / 4][xi % 4] of the 4x4 input tile d of tile t in plane
//   c (rows 2r .. 2r + 3, columns 2q .. 2q + 3);
// wino_grad: v[xi][c][t] = (A e A^T)[xi / 4][xi % 4] of the 2x2 tile e of an output gradient
//   (rows 2r, 2r + 1, columns 2q, 2q + 1): the output gradient's side of dw, which is
//   G^T [sum over tiles of wino_grad's . wino_in's] G. The planes are zero past its output.
// x holds C planes `plane` apart, rows ldx apart, the block's first row at x. A vector of tiles
// reads 2L + 2 values from its first tile's column in each of its rows, so rows must be readable
// that far past the last tile (the caller's slack). Tile rows of L/2 tiles share vectors, two at
// a time.
template <typename T>
struct WinoTileArgs {
    int64_t C, tiles_w, tile_rows;
    const T* x;
    int64_t ldx, plane;
    T* v;
    int64_t ldv, xi_stride;   // v[xi][c][t] at v + xi*xi_stride + c*ldv + t
};

// wino_out: y[o][2r + a][2q + b] = (A^T m A)[a][b] + bias[o] over the tiles (r, q) of a block,
// m[xi][o][t] at m + xi*xi_stride + o*ldm + t (readable L values past each tile row), then
// max(., 0) with relu, then zero where mask <= 0 (a ReLU's input, for an input gradient). Output
// rows row0 + 2r + a at or past OH, and columns at or past OW, are not stored. y and mask are
// O planes of OH x OW.
template <typename T>
struct WinoOutArgs {
    int64_t O, tiles_w, tile_rows, row0, OH, OW;
    const T* m;
    int64_t ldm, xi_stride;
    T* y;
    const T* bias;
    bool relu;
    const T* mask;
};

// The activations whose loops need no library call (kernels/activation.cpp, activation.h):
// out = x > 0 ? x : alpha x (forward), or out = dy * (x > 0 ? 1 : alpha) (backward, dy given);
// from_output: ELU's gradient from its output, out = dy * (x > 0 ? 1 : x + alpha). out is x in
// place (a kernel's own output) or overlaps no input.
template <typename T>
struct ActivationArgs {
    int64_t n;
    T* out;
    const T* x;
    const T* dy;        // nullptr: the leaky ReLU forward
    T alpha;
    bool from_output;   // with dy: ELU from its output, else the leaky ReLU
};

// The two column phases of a stride-2 input gradient woven back into rows (conv2d_backward_dx.h,
// dx_phases): row r of plane p is dst[2j] = even[j], dst[2j + 1] = odd[j] for j < width / 2, and
// dst[width - 1] = even[width / 2] when width is odd. With mask (laid out as dst), each value is
// zero where mask <= 0: the gradient of the ReLU whose output was the layer's input.
template <typename T>
struct InterleaveArgs {
    int64_t planes, rows, width;
    T* dst;
    const T* mask;                  // nullptr: no ReLU
    int64_t dst_plane, dst_row;     // strides of dst and mask
    const T* even;
    const T* odd;
    int64_t src_plane, src_row;     // strides of even and odd
};

// Whether all n values are finite (no NaN, no infinity).
template <typename T>
struct FiniteArgs {
    int64_t n;
    const T* x;
};

}  // namespace maqueta

// The micro-kernel table, X(op, Args, Ret) per entry. From this one list each instruction set
// defines op_f and op_d, which call its op_any template (cpp/isa/*.inc), runtime.cpp declares
// and collects them, and IsaKernels gets a pointer pair and the overloads op(Args<float>) and
// op(Args<double>). A new micro-kernel: its Args struct above, its op_any in an .inc, a line here.
#define MAQUETA_MICROKERNELS(X)                                                                    \
    X(rows, RowsArgs, void)                                                                        \
    X(dot, DotArgs, void)                                                                          \
    X(bcast, BcastArgs, void)                                                                      \
    X(transpose, TransposeArgs, void)                                                              \
    X(wino_in, WinoTileArgs, void)                                                                 \
    X(wino_out, WinoOutArgs, void)                                                                 \
    X(wino_grad, WinoTileArgs, void)                                                               \
    X(pool2x2, Pool2x2Args, void)                                                                  \
    X(adam, AdamArgs, void)                                                                        \
    X(sgd, SgdArgs, void)                                                                          \
    X(finite, FiniteArgs, bool)                                                                    \
    X(activation, ActivationArgs, void)                                                            \
    X(interleave, InterleaveArgs, void)                                                            \
    X(batchnorm, BnArgs, void)                                                                     \
    X(lane_conv, LaneConvArgs, void)                                                               \
    X(lane_dw, LaneDwArgs, void)                                                                   \
    X(lane_dx, LaneDxArgs, void)                                                                   \
    X(lane_pool, LanePoolArgs, void)                                                               \
    X(lane_unpool, LaneUnpoolArgs, void)                                                           \
    X(lane_pack, LanePackArgs, void)
