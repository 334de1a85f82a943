// Pointwise activations: SiLU, sigmoid, ReLU, forward and backward (the CPU
// engine's csrc/cpu/act.c). Memory-bound: one grid-stride loop each.
// Kernels <op>_f32, op entries tn_cuda_<op> (ggml naming; the launch is one
// line, so the launcher is folded into the entry).
#include "common.cuh"

// 1 / (1 + e^-x) with the accurate expf: for very negative x, e^-x is inf
// and the quotient exactly 0, never NaN (as the CPU kernel).
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// y, x are (n,): y = x * sigmoid(x)
__global__ void silu_forward_f32(float *__restrict__ y, const float *__restrict__ x, int64_t n) {
    TN_GRID_LOOP(i, n) {
        const float v = x[i];
        y[i] = v * sigmoid_f(v);
    }
}

// dx, dy, x are (n,): d/dx [x s(x)] = s (1 + x (1 - s)), recomputed from x.
__global__ void silu_backward_f32(float *__restrict__ dx, const float *__restrict__ dy,
                                  const float *__restrict__ x, int64_t n) {
    TN_GRID_LOOP(i, n) {
        const float v = x[i], s = sigmoid_f(v);
        dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
    }
}

__global__ void sigmoid_forward_f32(float *__restrict__ y, const float *__restrict__ x,
                                    int64_t n) {
    TN_GRID_LOOP(i, n) y[i] = sigmoid_f(x[i]);
}

// dx, dy, y are (n,); y is the forward OUTPUT: ds/dx = y (1 - y).
__global__ void sigmoid_backward_f32(float *__restrict__ dx, const float *__restrict__ dy,
                                     const float *__restrict__ y, int64_t n) {
    TN_GRID_LOOP(i, n) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

// NaN stays NaN (as torch.relu), hence not fmaxf(x, 0).
__global__ void relu_forward_f32(float *__restrict__ y, const float *__restrict__ x, int64_t n) {
    TN_GRID_LOOP(i, n) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

// The gradient at x == 0 is 0 (PyTorch's choice).
__global__ void relu_backward_f32(float *__restrict__ dx, const float *__restrict__ dy,
                                  const float *__restrict__ x, int64_t n) {
    TN_GRID_LOOP(i, n) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

#define UNARY_ENTRY(name)                                                          \
    extern "C" int tn_cuda_##name(float *y, const float *x, int64_t n) {           \
        cudaStream_t st;                                                           \
        TN_TRY(tn_cuda_stream(&st));                                               \
        name##_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(y, x, n);                  \
        TN_LAUNCH_CHECK();                                                         \
        return TN_OK;                                                              \
    }
#define UNARY_GRAD_ENTRY(name)                                                     \
    extern "C" int tn_cuda_##name(float *dx, const float *dy, const float *s,      \
                                  int64_t n) {                                     \
        cudaStream_t st;                                                           \
        TN_TRY(tn_cuda_stream(&st));                                               \
        name##_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(dx, dy, s, n);             \
        TN_LAUNCH_CHECK();                                                         \
        return TN_OK;                                                              \
    }

UNARY_ENTRY(silu_forward)
UNARY_GRAD_ENTRY(silu_backward)
UNARY_ENTRY(sigmoid_forward)
UNARY_GRAD_ENTRY(sigmoid_backward)
UNARY_ENTRY(relu_forward)
UNARY_GRAD_ENTRY(relu_backward)
