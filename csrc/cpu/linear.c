// linear (fully connected) on the CPU: y = x @ w^T + b, weights in the
// PyTorch layout w (O, I). (I and O are spelled in_dim and out_dim in code:
// complex.h, which cblas.h pulls in, defines I.)
//
// Each GEMM is cut into column blocks that OpenMP threads take, each calling
// OpenBLAS single-threaded, as conv2d does: OpenBLAS's own threads, which
// spin and then wait on each other, measured 10-100x slower than this on a
// 2-core machine where another process holds a core (0.5 GFLOP/s on a
// 4x256 @ 256x1024 GEMM). Small GEMMs, which the time-embedding layers are,
// run on the calling thread alone: waking a second thread costs more.
#include "common.h"
#include "cpu/blas.h"
#include "cpu/conv2d.h"

#include <omp.h>

// Below this many flops one thread does the whole GEMM.
#define LINEAR_PARALLEL_FLOPS 4e6
// Column blocks: about 4 per thread, none narrower than this (a 256x512
// GEMM on 64 columns ran 15-20 % slower than on 256; 128: 5-10 %).
#define LINEAR_MIN_BLOCK 128

// Columns per block for splitting `cols` columns of a GEMM of `flops`.
static int block_cols(int cols, double flops, int threads) {
    if (threads < 2 || flops < LINEAR_PARALLEL_FLOPS) return cols;
    int b = (cols + 4 * threads - 1) / (4 * threads);
    return TN_MIN(cols, TN_MAX(b, LINEAR_MIN_BLOCK));
}

int linear_forward(float *y, const float *x, const float *w, const float *b, int N,
                   int in_dim, int out_dim) {
    // y is (N, O); x is (N, I); w is (O, I); b is (O,) or NULL
    int threads = omp_get_max_threads();
    int ob = block_cols(out_dim, 2.0 * N * in_dim * out_dim, threads);
    int nblocks = (out_dim + ob - 1) / ob;
    blas_serial_begin();
    // y[:, o0:o0+n] = x @ w[o0:o0+n]^T (+ b): start from the bias, beta = 1.
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (nblocks > 1)
    for (int blk = 0; blk < nblocks; blk++) {
        int o0 = blk * ob, n = TN_MIN(ob, out_dim - o0);
        if (b)
            for (int r = 0; r < N; r++)
                for (int o = o0; o < o0 + n; o++) y[(size_t)r * out_dim + o] = b[o];
        sgemm_rm(0, 1, N, n, in_dim, 1.0f, x, in_dim, w + (size_t)o0 * in_dim, in_dim,
                 b ? 1.0f : 0.0f, y + o0, out_dim);
    }
    blas_serial_end();
    return TN_OK;
}

int linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int N, int in_dim, int out_dim) {
    // dx is (N, I) or NULL, dw is (O, I), db is (O,) or NULL: all accumulated;
    // dy is (N, O); x is (N, I); w is (O, I)
    int threads = omp_get_max_threads();
    double flops = 2.0 * N * in_dim * out_dim;
    int ib = block_cols(in_dim, flops, threads), ob = block_cols(out_dim, flops, threads);
    int nx = dx ? (in_dim + ib - 1) / ib : 0, nw = (out_dim + ob - 1) / ob;
    blas_serial_begin();
    #pragma omp parallel num_threads(threads) if (nx > 1 || nw > 1)
    {
        // dx[:, i0:i0+n] += dy @ w[:, i0:i0+n]
        #pragma omp for schedule(dynamic, 1) nowait
        for (int blk = 0; blk < nx; blk++) {
            int i0 = blk * ib, n = TN_MIN(ib, in_dim - i0);
            sgemm_rm(0, 0, N, n, out_dim, 1.0f, dy, out_dim, w + i0, in_dim, 1.0f, dx + i0,
                     in_dim);
        }
        // dw[o0:o0+n] += dy[:, o0:o0+n]^T @ x, and db[o0:o0+n] (float64 sums:
        // a batch of many rows still sums exactly enough)
        #pragma omp for schedule(dynamic, 1)
        for (int blk = 0; blk < nw; blk++) {
            int o0 = blk * ob, n = TN_MIN(ob, out_dim - o0);
            sgemm_rm(1, 0, n, in_dim, N, 1.0f, dy + o0, out_dim, x, in_dim, 1.0f,
                     dw + (size_t)o0 * in_dim, in_dim);
            if (db)
                for (int o = o0; o < o0 + n; o++) {
                    double s = 0.0;
                    for (int r = 0; r < N; r++) s += dy[(size_t)r * out_dim + o];
                    db[o] += (float)s;
                }
        }
    }
    blas_serial_end();
    return TN_OK;
}
