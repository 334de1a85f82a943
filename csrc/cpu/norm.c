// GroupNorm (PyTorch F.group_norm semantics).
// x is viewed as (N, C, S) with S = the product of the trailing dims, so
// (N, C, H, W) and (N, C, L) inputs share one kernel. Channel group g holds
// channels [g*C/G, (g+1)*C/G), which makes each (n, g) slab of Cg*S elements
// contiguous in memory: the natural unit of work and of threading.
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "ops.h"

// y is (N, C, S), mean and rstd are (N, G) (saved for backward),
// x is (N, C, S), w and b are (C,) or NULL (no affine: w = 1, b = 0).
// Statistics are two-pass in double (mean, then the sum of squared
// deviations): a one-pass E[x^2] - E[x]^2 in float loses everything when
// |mean| >> std. The variance is biased (divide by Cg*S) and eps goes inside
// the square root, as in PyTorch.
int group_norm_forward(float *restrict y, float *restrict mean, float *restrict rstd,
                       const float *restrict x, const float *restrict w,
                       const float *restrict b, int N, int C, ptrdiff_t S, int G, float eps) {
    const int Cg = C / G;
    const ptrdiff_t M = (ptrdiff_t)Cg * S;  // elements per (n, g) slab
    const ptrdiff_t NG = (ptrdiff_t)N * G;
#pragma omp parallel for schedule(static) if (NG > 1 && NG * M >= TN_OMP_MIN_WORK)
    for (ptrdiff_t ng = 0; ng < NG; ng++) {
        const float *restrict xg = x + ng * M;
        float *restrict yg = y + ng * M;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (ptrdiff_t i = 0; i < M; i++) s += xg[i];
        const double mu = s / (double)M;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (ptrdiff_t i = 0; i < M; i++) {
            const double d = (double)xg[i] - mu;
            ss += d * d;
        }
        const double r = 1.0 / sqrt(ss / (double)M + (double)eps);
        mean[ng] = (float)mu;
        rstd[ng] = (float)r;
        const float muf = (float)mu;
        const int g = (int)(ng % G);
        for (int cc = 0; cc < Cg; cc++) {
            const int c = g * Cg + cc;
            // (x - mu) first, then one fused scale and shift per channel:
            // subtracting before scaling keeps the cancellation exact-ish.
            const float scale = (float)(r * (w ? (double)w[c] : 1.0));
            const float shift = b ? b[c] : 0.0f;
            const float *restrict xc = xg + (ptrdiff_t)cc * S;
            float *restrict yc = yg + (ptrdiff_t)cc * S;
            for (ptrdiff_t i = 0; i < S; i++) yc[i] = (xc[i] - muf) * scale + shift;
        }
    }
    return TN_OK;
}

// dx is (N, C, S); dw, db are (C,) or NULL (accumulated with +=);
// dy, x are (N, C, S); mean, rstd are (N, G) from the forward; w is (C,) or NULL.
// With xhat = (x - mu) * rstd and dxhat = dy * w, over each slab of M elements:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dw[c] += sum_{n, s} dy * xhat,  db[c] += sum_{n, s} dy.
// One pass per slab gathers per-channel sums (double) of dy and dy*(x - mu);
// they give both slab means and, stored per (n, c), dw and db without a
// second read of dy and x and without races between threads on dw/db.
int group_norm_backward(float *restrict dx, float *restrict dw, float *restrict db,
                        const float *restrict dy, const float *restrict x,
                        const float *restrict mean, const float *restrict rstd,
                        const float *restrict w, int N, int C, ptrdiff_t S, int G) {
    const int Cg = C / G;
    const ptrdiff_t M = (ptrdiff_t)Cg * S;
    const ptrdiff_t NG = (ptrdiff_t)N * G;
    const int want_param = dw != NULL || db != NULL;
    // per (n, c): sum dy, and sum dy * xhat
    double *sums = NULL;
    if (want_param) {
        sums = malloc(sizeof(double) * 2 * (size_t)N * (size_t)C);
        if (!sums) return TN_ENOMEM;
    }
#pragma omp parallel for schedule(static) if (NG > 1 && NG * M >= TN_OMP_MIN_WORK)
    for (ptrdiff_t ng = 0; ng < NG; ng++) {
        const ptrdiff_t n = ng / G;
        const int g = (int)(ng % G);
        const float muf = mean[ng];
        const double r = rstd[ng];
        double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
        for (int cc = 0; cc < Cg; cc++) {
            const int c = g * Cg + cc;
            const float *restrict dyc = dy + ng * M + (ptrdiff_t)cc * S;
            const float *restrict xc = x + ng * M + (ptrdiff_t)cc * S;
            double sdy = 0.0, sdyx = 0.0;
#pragma omp simd reduction(+ : sdy, sdyx)
            for (ptrdiff_t i = 0; i < S; i++) {
                sdy += dyc[i];
                sdyx += (double)dyc[i] * (double)(xc[i] - muf);
            }
            const double wc = w ? (double)w[c] : 1.0;
            sum_dxhat += wc * sdy;
            sum_dxhat_xhat += wc * sdyx * r;
            if (sums) {
                sums[2 * (n * C + c)] = sdy;
                sums[2 * (n * C + c) + 1] = sdyx * r;
            }
        }
        // dx = dy * (r w) + (x - mu) * k1 + k0, per channel
        const double mean_dxhat = sum_dxhat / (double)M;
        const double mean_dxhat_xhat = sum_dxhat_xhat / (double)M;
        const float k1 = (float)(-r * r * mean_dxhat_xhat);
        const float k0 = (float)(-r * mean_dxhat);
        for (int cc = 0; cc < Cg; cc++) {
            const int c = g * Cg + cc;
            const float a = (float)(r * (w ? (double)w[c] : 1.0));
            const float *restrict dyc = dy + ng * M + (ptrdiff_t)cc * S;
            const float *restrict xc = x + ng * M + (ptrdiff_t)cc * S;
            float *restrict dxc = dx + ng * M + (ptrdiff_t)cc * S;
            for (ptrdiff_t i = 0; i < S; i++) dxc[i] = dyc[i] * a + (xc[i] - muf) * k1 + k0;
        }
    }
    if (sums) {
        // Reduce over the batch in a fixed order: deterministic for any thread count.
        for (int c = 0; c < C; c++) {
            double sdy = 0.0, sdyxhat = 0.0;
            for (int n = 0; n < N; n++) {
                sdy += sums[2 * ((ptrdiff_t)n * C + c)];
                sdyxhat += sums[2 * ((ptrdiff_t)n * C + c) + 1];
            }
            if (dw) dw[c] += (float)sdyxhat;
            if (db) db[c] += (float)sdy;
        }
        free(sums);
    }
    return TN_OK;
}
