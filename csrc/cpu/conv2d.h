// The conv family of the CPU engine: conv2d, linear, and the FMA peak that
// their benchmarks are measured against. Pure C (no Python.h). Outputs
// first, then inputs, then sizes (llm.c); shapes in each comment.
// Returns TN_OK or a TN_* status (common.h).
#ifndef TIMENET_CPU_CONV2D_H
#define TIMENET_CPU_CONV2D_H

#include <stddef.h>

// Output size of a convolution along one axis (zero padding, floor mode).
static inline int conv2d_out_size(int in, int k, int stride, int pad) {
    return (in + 2 * pad - k) / stride + 1;
}

// y is (N, K, P, Q), written; x is (N, C, H, W); w is (K, C, R, S);
// b is (K,) or NULL. P = conv2d_out_size(H, R, stride, pad), Q likewise.
int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                   int N, int C, int H, int W, int K, int R, int S, int stride, int pad);

// dx is (N, C, H, W), dw is (K, C, R, S), db is (K,): each NULL (not
// wanted) or accumulated (+=); dy is (N, K, P, Q); x is (N, C, H, W); w is
// (K, C, R, S).
int conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int N, int C, int H, int W, int K, int R, int S, int stride,
                    int pad);

// Bytes of scratch memory a conv2d kernel allocates for these sizes with the
// current thread count: op 0 forward, 1 the dx part of backward, 2 its dw
// part (conv2d_backward allocates the larger of those it runs). What the
// benchmark reports; the bound the tiling keeps.
size_t conv2d_workspace_bytes(int op, int N, int C, int H, int W, int K, int R, int S,
                              int stride, int pad);

// y is (N, O), written; x is (N, I); w is (O, I) (PyTorch layout); b is (O,) or NULL.
// (I and O are in_dim and out_dim: complex.h, via cblas.h, defines I.)
int linear_forward(float *y, const float *x, const float *w, const float *b, int N,
                   int in_dim, int out_dim);

// dx is (N, I), dw is (O, I), db is (O,) or NULL: all accumulated (+=);
// dy is (N, O); x is (N, I); w is (O, I). dx may be NULL (not needed).
int linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *w, int N, int in_dim, int out_dim);

// GFLOP/s of a register-only float32 FMA loop on `threads` threads run for
// about `seconds`: the peak every benchmark reports fractions of.
double fma_peak(int threads, double seconds);

#endif
