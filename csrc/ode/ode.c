// Fused Runge-Kutta stage combinations and error norms (see ode.h).
//
// Both are one pass over memory: a Python/numpy version of one Dormand-Prince
// stage (y + h * (a0 k0 + a1 k1 + ...)) makes a temporary per term; here each
// element is read once from every stage and written once.
#include <math.h>

#include "ode.h"

// y_new, y (B, D); ks[j] (B, D); coeffs (K,); h (B,).
int ode_combine(float *y_new, const float *y, const float *const *ks, const double *coeffs,
                int K, const double *h, int B, ptrdiff_t D) {
    if (K < 0 || K > TN_ODE_MAXK) return TN_EINVAL;
    const ptrdiff_t n = (ptrdiff_t)B * D;
    // Zero coefficients are skipped (Dormand-Prince has several).
    const float *kk[TN_ODE_MAXK];
    double cc[TN_ODE_MAXK];
    int nk = 0;
    for (int j = 0; j < K; j++)
        if (coeffs[j] != 0.0) {
            kk[nk] = ks[j];
            cc[nk++] = coeffs[j];
        }
#pragma omp parallel for collapse(2) schedule(static) if (n > 65536)
    for (int b = 0; b < B; b++)
        for (ptrdiff_t i = 0; i < D; i++) {
            const ptrdiff_t o = (ptrdiff_t)b * D + i;
            double s = 0.0;
            for (int j = 0; j < nk; j++) s += cc[j] * (double)kk[j][o];
            y_new[o] = (float)((double)y[o] + h[b] * s);
        }
    return TN_OK;
}

// norm (B,); ks[j], y, y_new (B, D); coeffs (K,); h (B,).
int ode_error_norm(double *norm, const float *const *ks, const double *coeffs, int K,
                   const double *h, const float *y, const float *y_new, double rtol,
                   double atol, int B, ptrdiff_t D) {
    if (K < 0 || K > TN_ODE_MAXK || D < 1) return TN_EINVAL;
    const float *kk[TN_ODE_MAXK];
    double cc[TN_ODE_MAXK];
    int nk = 0;
    for (int j = 0; j < K; j++)
        if (coeffs[j] != 0.0) {
            kk[nk] = ks[j];
            cc[nk++] = coeffs[j];
        }
    for (int b = 0; b < B; b++) {
        const ptrdiff_t off = (ptrdiff_t)b * D;
        const double hb = h[b];
        double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) schedule(static) if (D > 65536)
        for (ptrdiff_t i = 0; i < D; i++) {
            double e = 0.0;
            for (int j = 0; j < nk; j++) e += cc[j] * (double)kk[j][off + i];
            e *= hb;
            const double a = fabs((double)y[off + i]), c = fabs((double)y_new[off + i]);
            const double sc = atol + rtol * (a > c ? a : c);
            const double r = e / sc;
            acc += r * r;
        }
        norm[b] = sqrt(acc / (double)D);
    }
    return TN_OK;
}
