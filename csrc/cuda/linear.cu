// linear through cuBLAS (csrc/cpu/linear.c's contract): y = x w^T + b,
// PyTorch's (O, I) weight layout, row-major throughout (tn_gemm_rm_ab). TF32
// tensor cores when timenet.cuda.set_allow_tf32(True); under autocast the
// GEMMs read bfloat16 copies of their operands and write float32.
#include "common.cuh"

namespace {

// y (rows, cols) += b (cols,) broadcast over the rows
__global__ void add_bias_rows_f32(float *__restrict__ y, const float *__restrict__ b,
                                  int64_t n, int cols) {
    TN_GRID_LOOP(i, n) y[i] += b[i % cols];
}

}  // namespace

// y is (N, O), written; x is (N, I); w is (O, I); b is (O,) or NULL.
extern "C" int tn_cuda_linear_forward(float *y, const float *x, const float *w, const float *b,
                                      int N, int in_dim, int out_dim) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const bool bf = tn_cuda_get_autocast();
    TnBuffer xb, wb;
    const void *xa, *wa;
    TN_TRY(tn_operand(&xa, xb, x, (int64_t)N * in_dim, bf));
    TN_TRY(tn_operand(&wa, wb, w, (int64_t)out_dim * in_dim, bf));
    TN_TRY(tn_gemm_rm_ab(bf, false, true, N, out_dim, in_dim, 1.0f, xa, in_dim, 0, wa, in_dim, 0,
                         0.0f, y, out_dim, 0, 1));
    if (b) {
        const int64_t n = (int64_t)N * out_dim;
        add_bias_rows_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(y, b, n, out_dim);
        TN_LAUNCH_CHECK();
    }
    return TN_OK;
}

// dx (N, I) (may be NULL), dw (O, I), db (O,) or NULL: all written;
// dy is (N, O); x is (N, I); w is (O, I).
//   dx = dy w,  dw = dy^T x,  db = column sums of dy (double, deterministic).
extern "C" int tn_cuda_linear_backward(float *dx, float *dw, float *db, const float *dy,
                                       const float *x, const float *w, int N, int in_dim,
                                       int out_dim) {
    const bool bf = tn_cuda_get_autocast();
    TnBuffer dyb, xb, wb;
    const void *dya, *xa, *wa;
    TN_TRY(tn_operand(&dya, dyb, dy, (int64_t)N * out_dim, bf));
    if (dx) {
        TN_TRY(tn_operand(&wa, wb, w, (int64_t)out_dim * in_dim, bf));
        TN_TRY(tn_gemm_rm_ab(bf, false, false, N, in_dim, out_dim, 1.0f, dya, out_dim, 0, wa,
                             in_dim, 0, 0.0f, dx, in_dim, 0, 1));
    }
    TN_TRY(tn_operand(&xa, xb, x, (int64_t)N * in_dim, bf));
    TN_TRY(tn_gemm_rm_ab(bf, true, false, out_dim, in_dim, N, 1.0f, dya, out_dim, 0, xa, in_dim,
                         0, 0.0f, dw, in_dim, 0, 1));
    if (db) {  // from the float32 dy
        const int64_t shape[2] = {N, out_dim};
        const int reduce[2] = {1, 0};
        TN_TRY(tn_cuda_sum(db, dy, nullptr, 2, shape, reduce));
    }
    return TN_OK;
}
