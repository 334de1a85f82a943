// DDAD's map combination F(d1, d2, w) = (w * max(d2) / max(d1)) * d1 + d2.
#include <math.h>

#include "score/score.h"

int score_max(double *m, const float *x, int64_t n) {
    float mx = -INFINITY;
    int ok = 1;
#pragma omp parallel for reduction(max : mx) reduction(&& : ok) schedule(static) if (n >= 131072)
    for (int64_t i = 0; i < n; i++) {
        ok = ok && isfinite(x[i]);
        mx = x[i] > mx ? x[i] : mx;
    }
    if (!ok) return TN_ENAN;
    *m = mx;
    return TN_OK;
}

int score_combine_coeff(float *c, double *ratio, double m1, double m2, double w,
                        int compute_ratio) {
    if (compute_ratio) *ratio = m1 > 0 ? m2 / m1 : 0.0;
    if (!isfinite(*ratio) || !isfinite(w)) return TN_EINVAL;
    *c = (float)(w * *ratio);
    if (!isfinite(*c)) return TN_EINVAL;  // w * ratio beyond float range
    return TN_OK;
}

// d1, d2, out are (n,) (any shape, flattened); out may alias d1 or d2.
int score_combine(float *out, double *ratio_used, const float *d1, const float *d2, int64_t n,
                  double w, double ratio, int compute_ratio) {
    double m1, m2;
    int status;
    if ((status = score_max(&m1, d1, n)) != TN_OK) return status;
    if ((status = score_max(&m2, d2, n)) != TN_OK) return status;
    float c;
    if ((status = score_combine_coeff(&c, &ratio, m1, m2, w, compute_ratio)) != TN_OK)
        return status;
#pragma omp parallel for schedule(static) if (n >= 131072)
    for (int64_t i = 0; i < n; i++) out[i] = c * d1[i] + d2[i];
    *ratio_used = ratio;
    return TN_OK;
}
