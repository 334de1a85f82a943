// linear (fully connected) on the CPU: one GEMM each way, weights in the
// PyTorch layout w (O, I), so y = x @ w^T + b. (I and O are spelled in_dim
// and out_dim in code: complex.h, which cblas.h pulls in, defines I.)
//
// The GEMMs are called from outside any parallel region and OpenBLAS threads
// them itself: a linear layer is one GEMM, with nothing to overlap it with.
#include "common.h"
#include "cpu/blas.h"
#include "cpu/conv2d.h"

int linear_forward(float *y, const float *x, const float *w, const float *b, int N,
                   int in_dim, int out_dim) {
    // y is (N, O); x is (N, I); w is (O, I); b is (O,) or NULL
    if (b) // start from the bias and let the GEMM add onto it (beta = 1)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out_dim; o++) y[(size_t)n * out_dim + o] = b[o];
    sgemm_rm(0, 1, N, out_dim, in_dim, 1.0f, x, in_dim, w, in_dim, b ? 1.0f : 0.0f, y,
             out_dim);
    return TN_OK;
}

int linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int N, int in_dim, int out_dim) {
    // dx is (N, I) or NULL, dw is (O, I), db is (O,) or NULL: all accumulated;
    // dy is (N, O); x is (N, I); w is (O, I)
    if (dx) // dx += dy @ w
        sgemm_rm(0, 0, N, in_dim, out_dim, 1.0f, dy, out_dim, w, in_dim, 1.0f, dx, in_dim);
    // dw += dy^T @ x
    sgemm_rm(1, 0, out_dim, in_dim, N, 1.0f, dy, out_dim, x, in_dim, 1.0f, dw, in_dim);
    if (db)
        for (int o = 0; o < out_dim; o++) {
            double s = 0.0; // float64: a batch of many rows still sums exactly enough
            for (int n = 0; n < N; n++) s += dy[(size_t)n * out_dim + o];
            db[o] += (float)s;
        }
    return TN_OK;
}
