// Separable Gaussian filter of score maps, equal to scipy.ndimage's
// gaussian_filter over the last two axes (see score.h). Threads take whole
// maps when there are several (one fork/join, no barriers), rows of the one
// map otherwise.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "score/score.h"

int64_t score_gauss_radius(double sigma, double truncate) {
    if (!(sigma > 1e-15)) return -1;  // scipy skips the axis for sigma <= 1e-15
    int64_t r = (int64_t)(truncate * sigma + 0.5);
    return r < 0 ? 0 : r;
}

// wt is (2r + 1,)
void score_gauss_weights(double *wt, double sigma, int64_t r) {
    double sum = 0;
    for (int64_t k = -r; k <= r; k++) sum += wt[k + r] = exp(-0.5 * (double)(k * k) / (sigma * sigma));
    for (int64_t k = 0; k < 2 * r + 1; k++) wt[k] /= sum;
}

typedef struct {
    const double *wt;       // (K,) weights, K = 2r + 1
    const int64_t *ix, *iy; // (W + 2r,), (H + 2r,) folded source indices
    int64_t H, W, K;
} gauss_plan;

// Rows [y0, y1) of the pass along W: x (H, W) -> tmp (H, W); row is W + 2r floats.
// The intermediate is stored as float32, as scipy does for float32 maps.
static void pass_w(float *tmp, const float *x, float *row, const gauss_plan *g, int64_t y0,
                   int64_t y1) {
    int64_t W = g->W, K = g->K;
    for (int64_t y = y0; y < y1; y++) {
        const float *px = x + y * W;
        for (int64_t i = 0; i < W + K - 1; i++) row[i] = px[g->ix[i]];
        float *pt = tmp + y * W;
        for (int64_t X = 0; X < W; X++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += g->wt[k] * row[X + k];
            pt[X] = (float)s;
        }
    }
}

// Rows [y0, y1) of the pass along H: tmp (H, W) -> out (H, W), a weighted
// sum of whole rows (vectorised over X); acc is W doubles.
static void pass_h(float *out, const float *tmp, double *acc, const gauss_plan *g, int64_t y0,
                   int64_t y1) {
    int64_t W = g->W, K = g->K;
    for (int64_t Y = y0; Y < y1; Y++) {
        for (int64_t X = 0; X < W; X++) acc[X] = 0;
        for (int64_t k = 0; k < K; k++) {
            const float *pt = tmp + g->iy[Y + k] * W;
            double wk = g->wt[k];
#pragma omp simd
            for (int64_t X = 0; X < W; X++) acc[X] += wk * pt[X];
        }
        float *po = out + Y * W;
        for (int64_t X = 0; X < W; X++) po[X] = (float)acc[X];
    }
}

// x is (N, H, W); out is (N, H, W).
int score_gaussian_filter(float *out, const float *x, int64_t N, int64_t H, int64_t W,
                          double sigma, double truncate, int mode) {
    int64_t n_all = N * H * W;
    if (!score_all_finite(x, n_all)) return TN_ENAN;
    int64_t r = score_gauss_radius(sigma, truncate);
    if (r < 0) {
        memcpy(out, x, (size_t)n_all * sizeof *out);
        return TN_OK;
    }
    int64_t K = 2 * r + 1;
    double *wt = malloc((size_t)K * sizeof *wt);
    int64_t *ix = malloc((size_t)(W + 2 * r) * sizeof *ix);
    int64_t *iy = malloc((size_t)(H + 2 * r) * sizeof *iy);
    float *shared_tmp = N == 1 ? malloc((size_t)(H * W) * sizeof *shared_tmp) : NULL;
    int status = TN_OK;
    if (!wt || !ix || !iy || (N == 1 && !shared_tmp)) {
        status = TN_ENOMEM;
        goto exit;
    }
    score_gauss_weights(wt, sigma, r);
    for (int64_t i = 0; i < W + 2 * r; i++) ix[i] = score_fold(i - r, W, mode);
    for (int64_t i = 0; i < H + 2 * r; i++) iy[i] = score_fold(i - r, H, mode);
    gauss_plan g = {wt, ix, iy, H, W, K};

#pragma omp parallel if (n_all >= 16384)
    {
        float *row = malloc((size_t)(W + 2 * r) * sizeof *row);
        double *acc = malloc((size_t)W * sizeof *acc);
        float *tmp = N > 1 ? malloc((size_t)(H * W) * sizeof *tmp) : shared_tmp;
        int ok = row && acc && tmp;
        if (!ok) {
#pragma omp atomic write
            status = TN_ENOMEM;
        }
        if (N > 1) {
#pragma omp for schedule(dynamic)
            for (int64_t n = 0; n < N; n++) {
                if (!ok) continue;
                pass_w(tmp, x + n * H * W, row, &g, 0, H);
                pass_h(out + n * H * W, tmp, acc, &g, 0, H);
            }
        } else {  // one map: rows split across threads, a barrier between the passes
#pragma omp for schedule(static)
            for (int64_t y = 0; y < H; y++)
                if (ok) pass_w(tmp, x, row, &g, y, y + 1);
#pragma omp for schedule(static)
            for (int64_t y = 0; y < H; y++)
                if (ok) pass_h(out, tmp, acc, &g, y, y + 1);
        }
        free(row);
        free(acc);
        if (N > 1) free(tmp);
    }
exit:
    free(wt);
    free(ix);
    free(iy);
    free(shared_tmp);
    return status;
}
