// Separable Gaussian filter of score maps, equal to scipy.ndimage's
// gaussian_filter over the last two axes (see score.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "score/score.h"

// Index i in [-r, n + r) folded into [0, n) by the border mode.
static int64_t fold(int64_t i, int64_t n, int mode) {
    if (i >= 0 && i < n) return i;
    switch (mode) {
    case SCORE_MIRROR: {
        if (n == 1) return 0;
        int64_t p = 2 * n - 2, m = i % p;
        if (m < 0) m += p;
        return m >= n ? p - m : m;
    }
    case SCORE_NEAREST:
        return i < 0 ? 0 : n - 1;
    default: {  // SCORE_REFLECT: half-sample symmetric, period 2n
        int64_t p = 2 * n, m = i % p;
        if (m < 0) m += p;
        return m >= n ? p - 1 - m : m;
    }
    }
}

// x is (N, H, W); out is (N, H, W).
int score_gaussian_filter(float *out, const float *x, int64_t N, int64_t H, int64_t W,
                          double sigma, double truncate, int mode) {
    int64_t n_all = N * H * W;
    if (!score_all_finite(x, n_all)) return TN_ENAN;
    if (!(sigma > 1e-15)) {  // scipy skips the axis for sigma <= 1e-15
        memcpy(out, x, (size_t)n_all * sizeof *out);
        return TN_OK;
    }
    int64_t r = (int64_t)(truncate * sigma + 0.5);
    if (r < 0) r = 0;
    int64_t K = 2 * r + 1;
    double *wt = malloc((size_t)K * sizeof *wt);
    int64_t *ix = malloc((size_t)(W + 2 * r) * sizeof *ix);
    int64_t *iy = malloc((size_t)(H + 2 * r) * sizeof *iy);
    float *tmp = malloc((size_t)n_all * sizeof *tmp);
    int status = TN_OK;
    if (!wt || !ix || !iy || !tmp) {
        status = TN_ENOMEM;
        goto exit;
    }
    double sum = 0;
    for (int64_t k = -r; k <= r; k++) sum += wt[k + r] = exp(-0.5 * (double)(k * k) / (sigma * sigma));
    for (int64_t k = 0; k < K; k++) wt[k] /= sum;
    for (int64_t i = 0; i < W + 2 * r; i++) ix[i] = fold(i - r, W, mode);
    for (int64_t i = 0; i < H + 2 * r; i++) iy[i] = fold(i - r, H, mode);

    // Along W, one row at a time through a border-extended copy of the row.
    // The intermediate is stored as float32, as scipy does for float32 maps.
    int status_rows = TN_OK;
#pragma omp parallel if (n_all >= 16384)
    {
        float *row = malloc((size_t)(W + 2 * r) * sizeof *row);
        if (!row) {
#pragma omp atomic write
            status_rows = TN_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < N * H; t++) {
            if (!row) continue;
            const float *px = x + t * W;
            for (int64_t i = 0; i < W + 2 * r; i++) row[i] = px[ix[i]];
            float *pt = tmp + t * W;
            for (int64_t X = 0; X < W; X++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += wt[k] * row[X + k];
                pt[X] = (float)s;
            }
        }
        free(row);
    }
    if (status_rows != TN_OK) {
        status = status_rows;
        goto exit;
    }
    // Along H: a weighted sum of whole rows (vectorised over X).
#pragma omp parallel if (n_all >= 16384)
    {
        double *acc = malloc((size_t)W * sizeof *acc);
        if (!acc) {
#pragma omp atomic write
            status_rows = TN_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < N * H; t++) {
            if (!acc) continue;
            int64_t n = t / H, Y = t % H;
            for (int64_t X = 0; X < W; X++) acc[X] = 0;
            for (int64_t k = 0; k < K; k++) {
                const float *pt = tmp + (n * H + iy[Y + k]) * W;
                double wk = wt[k];
#pragma omp simd
                for (int64_t X = 0; X < W; X++) acc[X] += wk * pt[X];
            }
            float *po = out + t * W;
            for (int64_t X = 0; X < W; X++) po[X] = (float)acc[X];
        }
        free(acc);
    }
    status = status_rows;
exit:
    free(wt);
    free(ix);
    free(iy);
    free(tmp);
    return status;
}
