// conv2d on the CPU: GEMMs through OpenBLAS on tiles, so the scratch memory
// stays bounded (a few MB per thread) whatever the image or batch size.
//
// A convolution is a GEMM per image n:
//     y_n (K, P*Q) = W (K, C*R*S) @ col(x_n) (C*R*S, P*Q)
// where col(x_n) holds, for every output position, the C*R*S input values
// its kernel window covers (zero outside the padded image). Materialising
// col for a whole image is C*R*S*P*Q floats: 151 MB for one 64-channel 3x3
// conv at 256x256, per image. Three ways around that, picked per shape:
//
// 1. 1x1, stride 1, no padding ("pointwise"): col(x_n) is x_n itself viewed
//    as (C, H*W); the GEMMs run on column blocks of x, no copy at all.
//
// 2. Stride 1 with >= 16 channels and a padded width >= 24, or at most 128
//    channels on narrower maps ("shifted"; see CONV_SHIFT_*): copy
//    a tile of T output rows' worth of input, zero-padded to width
//    Wp = W + 2*pad, into xpad (C, (T+R-1)*Wp); kernel offset (r, s) then sees
//    the contiguous run xpad[c][r*Wp + s + j] for output j = t*Wp + q, so
//        ywide (K, T*Wp) = sum over (r, s) of W_rs (K, C) @ xpad_shifted(r, s)
//    is R*S GEMMs on views of one buffer. Columns q >= Q of each output row
//    are junk (they wrap into the next row) and are dropped on the copy out.
//    The input is copied once instead of R*S times (im2col was 15-30 % of a
//    64-channel conv); the junk columns cost (S-1)/Wp of the flops.
//    backward_input is the adjoint: the GEMMs dxpad_shifted(r, s) +=
//    W_rs^T @ dywide (junk columns of dywide zero) accumulate straight into
//    shifted views of one buffer, which is then added into dx.
//
// 3. Otherwise (strided, few channels, narrow maps) im2col on tiles: a range
//    of J consecutive output positions (flattened p*Q + q; whole rows or
//    parts of rows) gives col tile (C*R*S, J) and one GEMM
//        y_n[:, j0:j0+J] = W @ col_tile        (ldc = P*Q: no copy back)
//    J is about 256 positions (at most 2 MB of columns): wide enough for the
//    GEMM to run near its best, small enough to stay in the L2 cache of the
//    core that built it. backward_input: dcol = W^T @ dy tile, then col2im.
//
// backward_weight is always im2col (pointwise: x itself): dW (K, C*R*S) +=
// dy_n[:, tile] @ col_tile^T over images and tiles. (Shifted GEMMs for dW,
// 9 GEMMs of (K, C) each, measured 5-25 % slower than this.) For 16 <= K <=
// 128 it runs as the transposed product dW^T (C*R*S, K) += col_tile @
// dy_n[:, tile]^T into private sums, transposed into dw at the end:
// OpenBLAS is faster with the long side as M (1 thread, J = 256: K=16
// CRS=144 65 vs 48 GFLOP/s, K=32 CRS=288 86 vs 66, K=64 CRS=576 112 vs 100,
// K=128 CRS=1152 124 vs 114; K=256 CRS=2304 128 vs 133, K=3 31 vs 37).
//
// Threading: OpenMP threads take work items, about 4 per thread so that a
// thread the OS preempts (these machines are shared) holds the others up for
// one item only, and each item calls OpenBLAS single-threaded: the copy and
// the GEMMs of a tile run on one core with the tile in its cache, and no
// OpenBLAS thread pool competes with our threads. Measured against one tile
// at a time with OpenBLAS threading each GEMM, this was 10-25 % faster on
// the 256x256 shapes and as fast within noise on the small ones
// (benchmarks/kernels.py has the figures). Work items:
// - forward and backward_weight: (image, tile). backward_weight sums into
//   dw on thread 0 and into private (K, C*R*S) copies on the others, added
//   in at the end (cheaper than splitting dW by channels: measured).
// - backward_input: row tiles of one image overlap in dx by R-1 input rows.
//   Shifted path: even tiles of all images first, then odd ones (two tiles
//   of a phase are a whole tile, >= R-1 rows, apart). im2col path: threads
//   split the input channels (each owns dx rows c0..c1). Pointwise: tiles
//   do not overlap at all. Either way no two threads write one dx element.
// conv2d_backward runs backward_input, backward_weight and the bias sums in
// one parallel region: with sleeping OpenMP threads (OMP_WAIT_POLICY
// passive) every region pays a wake-up, about 90 us on the 2-core VM.
#include "common.h"
#include "cpu/blas.h"
#include "cpu/conv2d.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

// im2col tiles: about this many output positions (the GEMM's N dimension;
// OpenBLAS is near its best from ~200 on), but at most CONV_TILE_MAX_BYTES
// of columns per thread so the tile stays in the core's L2 cache. (Tiles of
// 2-4 MB measured 5-10 % slower on 64-channel convs at 256x256.)
#define CONV_TILE_COLS 256
#define CONV_TILE_MAX_BYTES (2 * 1024 * 1024)
// 1x1 tiles are views of x (no copy): wider ones measured 10-15 % better.
#define CONV_POINTWISE_COLS 2048
// Narrowest tile worth a GEMM call.
#define CONV_MIN_TILE 32
// Work items to aim for per thread. With dynamic scheduling a thread that
// the OS preempts (these machines are shared) then holds the others up for
// one item, not for its whole share.
#define CONV_ITEMS_PER_THREAD 4
// ... but no tile is cut narrower than this for it (GEMM efficiency).
#define CONV_SPLIT_MIN_TILE 64
// Target bytes of one shifted tile (input rows + output rows, per thread).
#define CONV_SHIFT_BYTES (1024 * 1024)
// Shifted GEMMs reduce over C only, and waste (S-1)/Wp of their columns:
// worth it from these sizes on (see benchmarks/kernels.py). Narrower maps
// (the 8^2 and 16^2 levels of the small presets) take them too up to 128
// input channels; 2 threads, ms, im2col vs shifted, forward: 16x32x16^2
// 32->32 0.72 vs 0.44, 16x64x8^2 64->32 0.49 vs 0.26, 8x64x16^2 64->64 0.92
// vs 0.75, 16x128x8^2 1.72 vs 1.48; but 4x256x8^2 1.42 vs 1.62 and
// 4x512x8^2 5.2 vs 6.2 (a long im2col reduction wins). backward_input there
// needs images to fill its two phases and at least 8 rows: 8x64x16^2 0.81
// vs 0.63, 16x64x8^2 64->32 0.41 vs 0.27, but 1x64x16^2 0.17 vs 0.22 and
// 8x64x4^2 0.05 vs 0.22.
#define CONV_SHIFT_MIN_C 16
#define CONV_SHIFT_MIN_WP 24
#define CONV_SHIFT_NARROW_MAX_C 128
#define CONV_SHIFT_NARROW_DX_IMAGES 4  // per thread
#define CONV_SHIFT_NARROW_DX_ROWS 8

// How a convolution of given sizes is cut into tiles, and what scratch
// memory each kernel needs: the same numbers drive the allocations and
// conv2d_workspace_bytes, so the reported figure is the real one.
typedef struct {
    int C, P, Q, PQ, CRS, RS;
    int pointwise;    // 1x1, stride 1, no padding: GEMM on x directly
    int shifted;      // forward by shifted GEMMs
    int shifted_dx;   // backward_input by shifted GEMMs
    int threads;
    int tile;         // im2col tiles: output positions per tile (J)
    int ntiles;       //   tiles per image
    int Wp;           // shifted tiles: padded width W + 2*pad
    int rows;         //   output rows per tile (T)
    int nrow_tiles;   //   tiles per image
    size_t ldx;       //   floats per channel of xpad / dxpad: (T+R-1)*Wp + S
    int groups;       // channel groups of backward_input
    int group_c;      // channels per group (the last may have fewer)
} conv_plan;

static int ceil_div(int a, int b) { return (int)(((long)a + b - 1) / b); }

static int gcd(int a, int b) {
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static conv_plan make_plan(int N, int C, int H, int W, int K, int R, int S, int stride,
                           int pad) {
    conv_plan p;
    p.C = C;
    p.P = conv2d_out_size(H, R, stride, pad);
    p.Q = conv2d_out_size(W, S, stride, pad);
    p.PQ = p.P * p.Q;
    p.RS = R * S;
    p.CRS = C * R * S;
    p.pointwise = R == 1 && S == 1 && stride == 1 && pad == 0;
    p.threads = omp_get_max_threads();
    long t = p.pointwise ? CONV_POINTWISE_COLS
                         : TN_MIN(CONV_TILE_COLS, CONV_TILE_MAX_BYTES / (4L * p.CRS));
    if (t < CONV_MIN_TILE) t = CONV_MIN_TILE;
    // Enough work items for every thread when the batch is small (a 16x16
    // map of one image is a single tile otherwise).
    long items = (long)CONV_ITEMS_PER_THREAD * p.threads;
    long split = ((long)N * p.PQ + items - 1) / items;
    t = TN_MIN(t, TN_MAX(split, CONV_SPLIT_MIN_TILE));
    if (t >= p.PQ) t = p.PQ;
    // Equal tiles (no thin last one), rounded up to whole vectors.
    p.ntiles = ceil_div(p.PQ, (int)t);
    p.tile = ceil_div(p.PQ, p.ntiles);
    if (p.tile < p.PQ) p.tile = TN_MIN(p.PQ, ceil_div(p.tile, 16) * 16);
    p.ntiles = ceil_div(p.PQ, p.tile);
    // backward_input work items are (image, channel group); N * groups a
    // multiple of the thread count balances them (N = 7, 2 threads: 14 items).
    p.groups = TN_MIN(C, p.threads / gcd(N, p.threads));
    p.group_c = ceil_div(C, p.groups);
    p.groups = ceil_div(C, p.group_c);
    p.Wp = W + 2 * pad;
    // The smallest shifted tile (R-1 rows, for the two phases of backward_input,
    // and at least one) must stay small too: very wide images take im2col,
    // whose tiles can end inside a row. (Byte counts in double: no overflow
    // for any sizes the glue lets through.)
    int min_rows = TN_MAX(1, R - 1);
    double row_bytes = 4.0 * p.Wp * ((double)C + K);
    double min_tile_bytes = 4.0 * p.Wp * ((double)C * (min_rows + R - 1) + (double)K * min_rows);
    int can_shift = stride == 1 && !p.pointwise && C >= CONV_SHIFT_MIN_C &&
                    min_tile_bytes <= 4.0 * CONV_SHIFT_BYTES;
    int wide = p.Wp >= CONV_SHIFT_MIN_WP, narrow = C <= CONV_SHIFT_NARROW_MAX_C;
    p.shifted = can_shift && (wide || narrow);
    p.shifted_dx = can_shift && (wide || (narrow && p.P >= CONV_SHIFT_NARROW_DX_ROWS &&
                                          N >= CONV_SHIFT_NARROW_DX_IMAGES * p.threads));
    long rows = (long)(CONV_SHIFT_BYTES / row_bytes);
    long row_split = ((long)N * p.P + items - 1) / items;
    rows = TN_MIN(rows, TN_MAX(row_split, ceil_div(4 * CONV_SPLIT_MIN_TILE, p.Wp)));
    rows = TN_MIN(TN_MAX(rows, 1), p.P);
    p.nrow_tiles = ceil_div(p.P, (int)rows);
    p.rows = ceil_div(p.P, p.nrow_tiles);
    // backward_input runs even and odd row tiles in two phases; tiles two
    // apart must not share input rows, so a tile is at least R-1 rows.
    if (p.rows < R - 1) {
        p.rows = TN_MIN(R - 1, p.P);
        p.nrow_tiles = ceil_div(p.P, p.rows);
    }
    p.ldx = (size_t)(p.rows + R - 1) * p.Wp + S;
    return p;
}

// backward_weight runs on no more threads than it has work items: each extra
// thread would only add a private (K, C*R*S) sum to reduce.
static int weight_threads(const conv_plan *p, int N) {
    return TN_MIN(p->threads, N * p->ntiles);
}

// backward_weight sums dW^T (C*R*S, K) instead of dW (see the top): every
// thread then sums privately, thread 0 included.
static int weight_transposed(int K) { return K >= 16 && K <= 128; }

// Scratch floats per kernel (op 0 forward, 1 backward_input, 2 backward_weight).
static size_t plan_floats(const conv_plan *p, int op, int N, int K) {
    size_t th = (size_t)p->threads;
    size_t wr = (size_t)K * p->CRS, wide = (size_t)K * p->rows * p->Wp;
    if (p->pointwise && op != 2) return 0;
    switch (op) {
    case 0:
        if (p->shifted) return wr + th * (p->C * p->ldx + wide);
        return th * p->CRS * p->tile;
    case 1:
        if (p->shifted_dx) return wr + th * (p->C * p->ldx + wide);
        return th * p->group_c * p->RS * p->tile;
    default:
        th = (size_t)weight_threads(p, N);
        return (p->pointwise ? 0 : th * p->CRS * p->tile) +
               (weight_transposed(K) ? th : th - 1) * wr;
    }
}

size_t conv2d_workspace_bytes(int op, int N, int C, int H, int W, int K, int R, int S,
                              int stride, int pad) {
    conv_plan p = make_plan(N, C, H, W, K, R, S, stride, pad);
    return plan_floats(&p, op, N, K) * sizeof(float);
}

// The valid output columns [lo, hi) of kernel column s: those q whose input
// column q*stride - pad + s lies inside [0, W).
static void valid_q(int s, int W, int Q, int stride, int pad, int *lo, int *hi) {
    int a = pad - s;         // q*stride >= a
    int b = W - 1 + pad - s; // q*stride <= b
    if (stride == 1) {
        *lo = TN_MAX(a, 0);
        *hi = b < 0 ? 0 : TN_MIN(Q, b + 1);
    } else {
        *lo = a > 0 ? (a + stride - 1) / stride : 0;
        *hi = b < 0 ? 0 : TN_MIN(Q, b / stride + 1);
    }
    if (*lo > *hi) *lo = *hi;
}

// Row kernels of im2col / col2im: dst[i] = src[i*stride], dst[i*stride] += src[i].
// restrict and a constant stride let the compiler vectorise them (stride 2
// with permutes); the generic stride stays scalar.
static void gather_row(float *restrict dst, const float *restrict src, int n, int stride) {
    if (stride == 1)
        memcpy(dst, src, sizeof(float) * n);
    else if (stride == 2)
        for (int i = 0; i < n; i++) dst[i] = src[2 * i];
    else
        for (int i = 0; i < n; i++) dst[i] = src[(size_t)i * stride];
}

static void scatter_add_row(float *restrict dst, const float *restrict src, int n, int stride) {
    if (stride == 1)
        for (int i = 0; i < n; i++) dst[i] += src[i];
    else if (stride == 2)
        for (int i = 0; i < n; i++) dst[2 * i] += src[i];
    else
        for (int i = 0; i < n; i++) dst[(size_t)i * stride] += src[i];
}

// col is (C*R*S, J) for output positions j0 .. j0+J-1 (flattened p*Q + q):
// col[(c*R + r)*S + s][j - j0] = x[c][p*stride - pad + r][q*stride - pad + s],
// zero where that falls in the padding. x is (C, H, W) (one image).
// The tile is walked one output-row segment (row p, columns q .. q+n-1) at a
// time; each (c, r, s) row of a segment is one contiguous (stride 1) or
// strided copy between zero borders.
static void im2col_tile(float *restrict col, const float *restrict x, int C, int H, int W, int R,
                        int S, int stride, int pad, int Q, int j0, int J) {
    for (int j = j0; j < j0 + J;) {
        int p = j / Q, q = j - p * Q, n = TN_MIN(Q - q, j0 + J - j);
        for (int c = 0; c < C; c++)
            for (int r = 0; r < R; r++) {
                float *dst = col + (size_t)(c * R + r) * S * J + (j - j0); // dst[k - q]: (p, k)
                int ih = p * stride - pad + r;
                if (ih < 0 || ih >= H) {
                    for (int s = 0; s < S; s++, dst += J) memset(dst, 0, sizeof(float) * n);
                    continue;
                }
                const float *xr = x + ((size_t)c * H + ih) * W; // input column k*stride + s - pad
                for (int s = 0; s < S; s++, dst += J) {
                    int lo, hi;
                    valid_q(s, W, Q, stride, pad, &lo, &hi);
                    int a = TN_MAX(q, lo), b = TN_MIN(q + n, hi);
                    if (a > b) a = b = q + n;
                    for (int k = q; k < a; k++) dst[k - q] = 0.0f;
                    if (b > a) gather_row(dst + (a - q), xr + (a * stride + s - pad), b - a, stride);
                    for (int k = b; k < q + n; k++) dst[k - q] = 0.0f;
                }
            }
        j += n;
    }
}

// The adjoint of im2col_tile: dx[c][ih][iw] += dcol[...] for the channels
// c0 .. c0+nc-1 that dcol (nc*R*S, J) holds. dx is (C, H, W) (one image).
static void col2im_tile(float *restrict dx, const float *restrict dcol, int c0, int nc, int H,
                        int W, int R, int S, int stride, int pad, int Q, int j0, int J) {
    for (int j = j0; j < j0 + J;) {
        int p = j / Q, q = j - p * Q, n = TN_MIN(Q - q, j0 + J - j);
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < R; r++) {
                int ih = p * stride - pad + r;
                if (ih < 0 || ih >= H) continue;
                const float *src = dcol + (size_t)(c * R + r) * S * J + (j - j0);
                float *xr = dx + ((size_t)(c0 + c) * H + ih) * W;
                for (int s = 0; s < S; s++, src += J) {
                    int lo, hi;
                    valid_q(s, W, Q, stride, pad, &lo, &hi);
                    int a = TN_MAX(q, lo), b = TN_MIN(q + n, hi);
                    if (b > a)
                        scatter_add_row(xr + (a * stride + s - pad), src + (a - q), b - a, stride);
                }
            }
        j += n;
    }
}

// --- shifted GEMMs (stride 1) ----------------------------------------------

// wr (R*S, K, C) = w (K, C, R, S) with the kernel offset outermost, so each
// W_rs is a plain row-major (K, C) matrix for the GEMMs. Work-shared: call
// inside a parallel region.
static void repack_weights(float *wr, const float *w, int K, int C, int RS) {
    #pragma omp for schedule(static)
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++)
            for (int rs = 0; rs < RS; rs++)
                wr[((size_t)rs * K + k) * C + c] = w[((size_t)k * C + c) * RS + rs];
}

// xpad (C, ldx): rows ih0 .. ih0+nrows-1 of x (C, H, W), zero-padded by pad
// columns each side (width Wp) and zero outside [0, H); the slack after the
// last row (read only by junk columns) zeroed too.
static void pad_tile(float *restrict xpad, const float *restrict x, int C, int H, int W, int pad,
                     int Wp, size_t ldx, int ih0, int nrows) {
    for (int c = 0; c < C; c++) {
        float *d = xpad + (size_t)c * ldx;
        const float *xc = x + (size_t)c * H * W;
        for (int u = 0; u < nrows; u++, d += Wp) {
            int ih = ih0 + u;
            if (ih < 0 || ih >= H) {
                memset(d, 0, sizeof(float) * Wp);
                continue;
            }
            memset(d, 0, sizeof(float) * pad);
            memcpy(d + pad, xc + (size_t)ih * W, sizeof(float) * W);
            memset(d + pad + W, 0, sizeof(float) * pad);
        }
        memset(d, 0, sizeof(float) * (ldx - (size_t)nrows * Wp));
    }
}

// y rows p0 .. p0+T-1 of one image (K, P, Q) = ywide (K, T*Wp) without the
// junk columns, plus the bias.
static void unwiden_tile(float *restrict y, const float *restrict ywide, const float *b, int K,
                         int PQ, int Q, int Wp, int p0, int T) {
    for (int k = 0; k < K; k++) {
        float bk = b ? b[k] : 0.0f;
        for (int t = 0; t < T; t++) {
            float *d = y + (size_t)k * PQ + (size_t)(p0 + t) * Q;
            const float *src = ywide + ((size_t)k * T + t) * Wp;
            for (int q = 0; q < Q; q++) d[q] = src[q] + bk;
        }
    }
}

// dywide (K, T*Wp) = dy rows p0 .. p0+T-1 of one image (K, P, Q), junk
// columns zero (so they add nothing in the adjoint GEMMs).
static void widen_tile(float *restrict dywide, const float *restrict dy, int K, int PQ, int Q,
                       int Wp, int p0, int T) {
    for (int k = 0; k < K; k++)
        for (int t = 0; t < T; t++) {
            float *d = dywide + ((size_t)k * T + t) * Wp;
            memcpy(d, dy + (size_t)k * PQ + (size_t)(p0 + t) * Q, sizeof(float) * Q);
            memset(d + Q, 0, sizeof(float) * (Wp - Q));
        }
}

static void forward_shifted(float *y, const float *x, const float *w, const float *b, float *ws,
                            const conv_plan *pl, int N, int C, int H, int W, int K, int R, int S,
                            int pad) {
    float *wr = ws;
    size_t per_thread = C * pl->ldx + (size_t)K * pl->rows * pl->Wp;
    int items = N * pl->nrow_tiles, Wp = pl->Wp;
    #pragma omp parallel num_threads(pl->threads)
    {
        float *xpad = ws + (size_t)K * pl->CRS + per_thread * omp_get_thread_num();
        float *ywide = xpad + C * pl->ldx;
        repack_weights(wr, w, K, C, pl->RS); // (implicit barrier)
        #pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++) {
            int n = it / pl->nrow_tiles, p0 = (it % pl->nrow_tiles) * pl->rows;
            int T = TN_MIN(pl->rows, pl->P - p0), Jw = T * Wp;
            pad_tile(xpad, x + (size_t)n * C * H * W, C, H, W, pad, Wp, pl->ldx, p0 - pad,
                     T + R - 1);
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++)
                    sgemm_rm(0, 0, K, Jw, C, 1.0f, wr + (size_t)(r * S + s) * K * C, C,
                             xpad + r * Wp + s, (int)pl->ldx, r || s ? 1.0f : 0.0f, ywide, Jw);
            unwiden_tile(y + (size_t)n * K * pl->PQ, ywide, b, K, pl->PQ, pl->Q, Wp, p0, T);
        }
    }
}

// Row tiles of one image overlap in dx by R-1 input rows, so the even tiles
// (of all images) run first, in parallel, then the odd ones: two tiles of a
// phase are a whole tile (>= R-1 rows) apart and never write the same dx.
// Work-shared: every thread of one parallel region calls it.
static void backward_input_shifted(float *dx, const float *dy, const float *w, float *ws,
                                   const conv_plan *pl, int N, int C, int H, int W, int K, int R,
                                   int S, int pad) {
    float *wr = ws;
    size_t per_thread = C * pl->ldx + (size_t)K * pl->rows * pl->Wp;
    int Wp = pl->Wp;
    float *dxpad = ws + (size_t)K * pl->CRS + per_thread * omp_get_thread_num();
    float *dywide = dxpad + C * pl->ldx;
    repack_weights(wr, w, K, C, pl->RS);
    for (int phase = 0; phase < 2; phase++) {
        int per_image = (pl->nrow_tiles + 1 - phase) / 2;
        #pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < N * per_image; it++) {
            int n = it / per_image, p0 = (2 * (it % per_image) + phase) * pl->rows;
            int T = TN_MIN(pl->rows, pl->P - p0), Jw = T * Wp;
            float *dxn = dx + (size_t)n * C * H * W;
            widen_tile(dywide, dy + (size_t)n * K * pl->PQ, K, pl->PQ, pl->Q, Wp, p0, T);
            for (int c = 0; c < C; c++) memset(dxpad + c * pl->ldx, 0, sizeof(float) * pl->ldx);
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++)
                    sgemm_rm(1, 0, C, Jw, K, 1.0f, wr + (size_t)(r * S + s) * K * C, C, dywide,
                             Jw, 1.0f, dxpad + r * Wp + s, (int)pl->ldx);
            // dx[c][ih][iw] += dxpad[c][u][iw + pad], ih = p0 - pad + u.
            for (int c = 0; c < C; c++)
                for (int u = 0; u < T + R - 1; u++) {
                    int ih = p0 - pad + u;
                    if (ih < 0 || ih >= H) continue;
                    scatter_add_row(dxn + ((size_t)c * H + ih) * W,
                                    dxpad + c * pl->ldx + (size_t)u * Wp + pad, W, 1);
                }
        } // (implicit barrier between the phases)
    }
}

// dx += the gradient w.r.t. the input. Work-shared: every thread of one
// parallel region calls it; it ends on a barrier (ws is then free again).
static void backward_input(float *dx, const float *dy, const float *w, float *ws,
                           const conv_plan *pl, int N, int C, int H, int W, int K, int R, int S,
                           int stride, int pad) {
    if (pl->shifted_dx) {
        backward_input_shifted(dx, dy, w, ws, pl, N, C, H, W, K, R, S, pad);
    } else if (pl->pointwise) {
        // dx_n[:, j0:j0+J] += W^T @ dy_n[:, j0:j0+J]: tiles never overlap.
        int items = N * pl->ntiles;
        #pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++) {
            int n = it / pl->ntiles, j0 = (it % pl->ntiles) * pl->tile;
            int J = TN_MIN(pl->tile, pl->PQ - j0);
            sgemm_rm(1, 0, C, J, K, 1.0f, w, C, dy + (size_t)n * K * pl->PQ + j0, pl->PQ, 1.0f,
                     dx + (size_t)n * C * H * W + j0, H * W);
        }
    } else {
        size_t per_thread = (size_t)pl->group_c * pl->RS * pl->tile;
        int items = N * pl->groups;
        float *dcol = ws + per_thread * omp_get_thread_num();
        #pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++) {
            int n = it / pl->groups, c0 = (it % pl->groups) * pl->group_c;
            int nc = TN_MIN(pl->group_c, C - c0);
            const float *dyn = dy + (size_t)n * K * pl->PQ;
            float *dxn = dx + (size_t)n * C * H * W;
            // Rows c0*R*S .. of W^T: columns of w (K, C*R*S) from c0*R*S on.
            const float *wt = w + (size_t)c0 * pl->RS;
            for (int j0 = 0; j0 < pl->PQ; j0 += pl->tile) {
                int J = TN_MIN(pl->tile, pl->PQ - j0);
                sgemm_rm(1, 0, nc * pl->RS, J, K, 1.0f, wt, pl->CRS, dyn + j0, pl->PQ, 0.0f,
                         dcol, J);
                col2im_tile(dxn, dcol, c0, nc, H, W, R, S, stride, pad, pl->Q, j0, J);
            }
        }
    }
}

// db[k] += sum of dy over images and positions, in float64 (a 256x256 map
// adds 65536 terms per image), vectorised. Work-shared.
static void bias_grad(float *db, const float *dy, int N, int K, int PQ) {
    #pragma omp for schedule(static)
    for (int k = 0; k < K; k++) {
        double s = 0.0;
        for (int n = 0; n < N; n++) {
            const float *d = dy + ((size_t)n * K + k) * PQ;
            #pragma omp simd reduction(+ : s)
            for (int j = 0; j < PQ; j++) s += d[j];
        }
        db[k] += (float)s;
    }
}

// dw += the gradient w.r.t. the weight (dw may be NULL), db += the bias's
// (db may be NULL). Work-shared by a region of any size: the dW items go to
// the first weight_threads() threads in the order of schedule(static)
// (contiguous runs, the first items % threads of them one item longer), so
// dW is summed the same way however many threads the region has.
static void backward_weight(float *dw, float *db, const float *dy, const float *x, float *ws,
                            const conv_plan *pl, int N, int C, int H, int W, int K, int R,
                            int S, int stride, int pad) {
    if (dw) {
        int threads = weight_threads(pl, N), tr = weight_transposed(K);
        int tid = omp_get_thread_num();
        size_t col_floats = pl->pointwise ? 0 : (size_t)pl->CRS * pl->tile;
        size_t acc_floats = (size_t)K * pl->CRS;
        int items = N * pl->ntiles, npriv = tr ? threads : threads - 1;
        const float *priv = ws + col_floats * threads;
        if (tid < threads) {
            float *col = col_floats ? ws + col_floats * tid : NULL;
            // Untransposed, thread 0 sums into dw itself, the others (and
            // every thread when transposed) into private buffers.
            float *acc = !tr && tid == 0 ? dw : (float *)priv + acc_floats * (tid - !tr);
            if (acc != dw) memset(acc, 0, sizeof(float) * acc_floats);
            // Static: each thread sums the same items in the same order on
            // every call, so dw is bit-reproducible for a given thread count
            // (a resumed training run repeats the uninterrupted one exactly).
            // Dynamic scheduling rides out a preempted thread better, but
            // its per-thread partial sums change from call to call.
            int q = items / threads, extra = items % threads;
            int lo = tid * q + TN_MIN(tid, extra), hi = lo + q + (tid < extra);
            for (int it = lo; it < hi; it++) {
                int n = it / pl->ntiles, j0 = (it % pl->ntiles) * pl->tile;
                int J = TN_MIN(pl->tile, pl->PQ - j0);
                const float *xn = x + (size_t)n * C * H * W;
                const float *dyn = dy + (size_t)n * K * pl->PQ + j0;
                // The columns: x itself (pointwise) or an im2col tile.
                const float *cols = xn + j0;
                int ldc = H * W, rows = pl->pointwise ? C : pl->CRS;
                if (!pl->pointwise) {
                    im2col_tile(col, xn, C, H, W, R, S, stride, pad, pl->Q, j0, J);
                    cols = col;
                    ldc = J;
                }
                if (tr)
                    sgemm_rm(0, 1, rows, K, J, 1.0f, cols, ldc, dyn, pl->PQ, 1.0f, acc, K);
                else
                    sgemm_rm(0, 1, K, rows, J, 1.0f, dyn, pl->PQ, cols, ldc, 1.0f, acc, rows);
            }
        }
        #pragma omp barrier
        // Every private sum is complete.
        if (npriv) {
            #pragma omp for schedule(static)
            for (size_t i = 0; i < acc_floats; i++) {
                // dw index i = k*CRS + j; transposed sums hold it at j*K + k.
                size_t at = tr ? (i % pl->CRS) * K + i / pl->CRS : i;
                float s = 0.0f;
                for (int t = 0; t < npriv; t++) s += priv[acc_floats * t + at];
                dw[i] += s;
            }
        }
    }
    if (db) bias_grad(db, dy, N, K, pl->PQ);
}

// --- the kernels ------------------------------------------------------------

int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                   int N, int C, int H, int W, int K, int R, int S, int stride, int pad) {
    // y is (N, K, P, Q); x is (N, C, H, W); w is (K, C, R, S); b is (K,) or NULL
    conv_plan pl = make_plan(N, C, H, W, K, R, S, stride, pad);
    float *ws = NULL;
    size_t total = plan_floats(&pl, 0, N, K);
    if (total && !(ws = malloc(sizeof(float) * total))) return TN_ENOMEM;
    blas_serial_begin();
    if (pl.shifted) {
        forward_shifted(y, x, w, b, ws, &pl, N, C, H, W, K, R, S, pad);
    } else {
        size_t per_thread = (size_t)pl.CRS * pl.tile;
        int items = N * pl.ntiles;
        #pragma omp parallel num_threads(pl.threads)
        {
            float *col = ws ? ws + per_thread * omp_get_thread_num() : NULL;
            #pragma omp for schedule(dynamic, 1)
            for (int it = 0; it < items; it++) {
                int n = it / pl.ntiles, j0 = (it % pl.ntiles) * pl.tile;
                int J = TN_MIN(pl.tile, pl.PQ - j0);
                const float *xn = x + (size_t)n * C * H * W;
                float *yn = y + (size_t)n * K * pl.PQ + j0;
                if (pl.pointwise) {
                    sgemm_rm(0, 0, K, J, C, 1.0f, w, C, xn + j0, H * W, 0.0f, yn, pl.PQ);
                } else {
                    im2col_tile(col, xn, C, H, W, R, S, stride, pad, pl.Q, j0, J);
                    sgemm_rm(0, 0, K, J, pl.CRS, 1.0f, w, pl.CRS, col, J, 0.0f, yn, pl.PQ);
                }
                if (b)
                    for (int k = 0; k < K; k++) {
                        float bk = b[k], *yk = yn + (size_t)k * pl.PQ;
                        for (int j = 0; j < J; j++) yk[j] += bk;
                    }
            }
        }
    }
    blas_serial_end();
    free(ws);
    return TN_OK;
}

int conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int N, int C, int H, int W, int K, int R, int S, int stride,
                    int pad) {
    // dx is (N, C, H, W) or NULL, dw is (K, C, R, S) or NULL, db is (K,) or
    // NULL: all accumulated; dy is (N, K, P, Q); x is (N, C, H, W); w is (K, C, R, S)
    if (!dx && !dw && !db) return TN_OK;
    conv_plan pl = make_plan(N, C, H, W, K, R, S, stride, pad);
    // The two parts run one after the other in ONE parallel region (the
    // second thread is woken once, not three times: ~90 us each on the VM,
    // see TN_OMP_MIN_WORK), so they share one workspace.
    size_t fx = dx ? plan_floats(&pl, 1, N, K) : 0, fw = dw ? plan_floats(&pl, 2, N, K) : 0;
    size_t total = TN_MAX(fx, fw);
    float *ws = NULL;
    if (total && !(ws = malloc(sizeof(float) * total))) return TN_ENOMEM;
    blas_serial_begin();
    #pragma omp parallel num_threads(pl.threads)
    {
        if (dx) backward_input(dx, dy, w, ws, &pl, N, C, H, W, K, R, S, stride, pad);
        backward_weight(dw, db, dy, x, ws, &pl, N, C, H, W, K, R, S, stride, pad);
    }
    blas_serial_end();
    free(ws);
    return TN_OK;
}
