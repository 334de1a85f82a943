// Pointwise activations: SiLU, sigmoid, ReLU. Memory-bound, so one flat
// loop over all elements, threaded only above TN_OMP_MIN_WORK.
#include <math.h>

#include "common.h"
#include "ops.h"

// e^x in float, branch-free so that GCC vectorises the loops that call it
// (libm's expf is a scalar call without -ffast-math, and SiLU runs on every
// U-Net activation). Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
// Cephes' degree-6 polynomial for e^r (relative error ~2e-7), and 2^n built
// in the exponent bits. x is clamped to [-87, 88] so 2^n stays a normal
// float; above 88 the result is inf (the sigmoid below is then exactly 0, as
// with libm), below -87 it is e^-87 (where 1 + e^x == 1 anyway). NaN fails
// every comparison and propagates.
static inline float exp_vec(float x_in) {
    float x = x_in < -87.0f ? -87.0f : x_in;
    x = x > 88.0f ? 88.0f : x;
    // n = round(x / ln2) by the 1.5 * 2^23 trick (vectorises, unlike lrintf):
    // t = 1.5*2^23 + n exactly, so n sits in t's low mantissa bits too, and
    // 2^n comes from unsigned bit arithmetic (no float -> int conversion,
    // which would be undefined for NaN).
    union { float f; uint32_t u; } t = {.f = x * 1.44269504088896341f + 12582912.0f};
    const float fn = t.f - 12582912.0f;
    const float r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t u; float f; } two_n = {.u = (t.u - 0x4B400000u + 127u) << 23};
    // Past the clamp, overflow to inf as expf does (so sigmoid(-100) is 0).
    return x_in > 88.0f ? (float)INFINITY : p * two_n.f;
}

// 1 / (1 + e^-x): for very negative x, e^-x is inf and the quotient is
// exactly 0, never NaN.
static inline float sigmoidf(float x) { return 1.0f / (1.0f + exp_vec(-x)); }

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
