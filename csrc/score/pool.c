// DiAD's image-score reduction: repeated k x k stride-1 average pooling
// without padding (torch avg_pool2d(kernel k, stride 1)), then the max.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "score/score.h"

// One round: src (N, H, W) -> dst (N, H-k+1, W-k+1), the mean of each k x k
// window; separable (k sums along W into rs, then k along H), float64 sums.
static void box_round(float *dst, double *rs, const float *src, int64_t N, int64_t H,
                      int64_t W, int k) {
    int64_t P = H - k + 1, Q = W - k + 1;
    double inv = 1.0 / ((double)k * (double)k);
#pragma omp parallel for schedule(static) if (N * H * W >= 16384)
    for (int64_t t = 0; t < N * H; t++) {
        const float *ps = src + t * W;
        double *pr = rs + t * Q;
        for (int64_t q = 0; q < Q; q++) {
            double s = 0;
            for (int j = 0; j < k; j++) s += ps[q + j];
            pr[q] = s;
        }
    }
#pragma omp parallel for schedule(static) if (N * H * W >= 16384)
    for (int64_t t = 0; t < N * P; t++) {
        int64_t n = t / P, p = t % P;
        float *pd = dst + t * Q;
        for (int64_t q = 0; q < Q; q++) {
            double s = 0;
            for (int i = 0; i < k; i++) s += rs[(n * H + p + i) * Q + q];
            pd[q] = (float)(s * inv);
        }
    }
}

// x is (N, H, W); out is (N, H - rounds*(k-1), W - rounds*(k-1)).
int score_box_pool(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                   int rounds) {
    if (k < 1 || rounds < 0) return TN_EINVAL;
    int64_t shrink = (int64_t)rounds * (k - 1);
    if (H <= shrink || W <= shrink) return TN_EINVAL;
    if (!score_all_finite(x, N * H * W)) return TN_ENAN;
    if (rounds == 0 || k == 1) {
        memcpy(out, x, (size_t)(N * H * W) * sizeof *out);
        return TN_OK;
    }
    float *a = malloc((size_t)(N * H * W) * sizeof *a), *b = malloc((size_t)(N * H * W) * sizeof *b);
    double *rs = malloc((size_t)(N * H * W) * sizeof *rs);
    if (!a || !b || !rs) {
        free(a);
        free(b);
        free(rs);
        return TN_ENOMEM;
    }
    const float *src = x;
    int64_t h = H, w = W;
    for (int r = 0; r < rounds; r++) {
        float *dst = r == rounds - 1 ? out : (r % 2 ? b : a);
        box_round(dst, rs, src, N, h, w, k);
        src = dst;
        h -= k - 1;
        w -= k - 1;
    }
    free(a);
    free(b);
    free(rs);
    return TN_OK;
}

// x is (N, H, W); out is (N,).
int score_image_max(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                    int rounds) {
    if (k < 1 || rounds < 0) return TN_EINVAL;
    int64_t shrink = (int64_t)rounds * (k - 1), P = H - shrink, Q = W - shrink;
    if (P <= 0 || Q <= 0) return TN_EINVAL;
    float *pooled = malloc((size_t)(N * P * Q) * sizeof *pooled);
    if (!pooled) return TN_ENOMEM;
    int status = score_box_pool(pooled, x, N, H, W, k, rounds);
    if (status == TN_OK)
        for (int64_t n = 0; n < N; n++) {
            const float *p = pooled + n * P * Q;
            float m = p[0];
            for (int64_t i = 1; i < P * Q; i++) m = p[i] > m ? p[i] : m;
            out[n] = m;
        }
    free(pooled);
    return status;
}
