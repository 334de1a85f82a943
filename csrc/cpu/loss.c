// Mean squared error, F.mse_loss(x, y, reduction="mean").
#include "common.h"
#include "ops.h"

// loss is a scalar, x and y are (n,) (any shape, flattened). The sum is in
// double: a float sum of ~10^7 squares would lose about 3 digits.
int mse_forward(double *loss, const float *restrict x, const float *restrict y, ptrdiff_t n) {
    double acc = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : acc) \
    if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) {
        const double d = (double)x[i] - (double)y[i];
        acc += d * d;
    }
    *loss = acc / (double)n;
    return TN_OK;
}

// dx, x, y are (n,); g is the upstream gradient of the scalar loss:
// dx = g * 2 (x - y) / n. (The gradient for y is -dx.)
int mse_backward(float *restrict dx, const float *restrict x, const float *restrict y,
                 double g, ptrdiff_t n) {
    const float k = (float)(2.0 * g / (double)n);
#pragma omp parallel for simd schedule(static) if (parallel : n >= TN_OMP_MIN_WORK)
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = k * (x[i] - y[i]);
    return TN_OK;
}
