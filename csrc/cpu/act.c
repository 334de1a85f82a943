// Pointwise activations: SiLU, sigmoid, ReLU. Memory-bound, so one flat
// loop over all elements, threaded only above TN_OMP_MIN_WORK.
#include <math.h>

#include "common.h"
#include "cpu/vmath.h"
#include "ops.h"

// y, x are (n,): y = x * sigmoid(x)
int silu_forward(float *restrict y, const float *restrict x, ptrdiff_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * sigmoidf(x[i]);
    return TN_OK;
}

// dx, dy, x are (n,): d/dx [x s(x)] = s (1 + x (1 - s)). From x, not y:
// SiLU is not invertible, so backward recomputes the sigmoid.
int silu_backward(float *restrict dx, const float *restrict dy, const float *restrict x,
                  ptrdiff_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) {
        const float s = sigmoidf(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
    return TN_OK;
}

// y, x are (n,)
int sigmoid_forward(float *restrict y, const float *restrict x, ptrdiff_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) y[i] = sigmoidf(x[i]);
    return TN_OK;
}

// dx, dy, y are (n,); y is the forward OUTPUT: ds/dx = y (1 - y).
int sigmoid_backward(float *restrict dx, const float *restrict dy, const float *restrict y,
                     ptrdiff_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    return TN_OK;
}

// y, x are (n,). NaN stays NaN (as torch.relu), hence not fmaxf(x, 0).
int relu_forward(float *restrict y, const float *restrict x, ptrdiff_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    return TN_OK;
}

// dx, dy, x are (n,): the gradient at x == 0 is taken as 0 (PyTorch's choice).
int relu_backward(float *restrict dx, const float *restrict dy, const float *restrict x,
                  ptrdiff_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
    return TN_OK;
}
