// GroupNorm (PyTorch F.group_norm semantics).
// x is viewed as (N, C, S) with S = the product of the trailing dims, so
// (N, C, H, W) and (N, C, L) inputs share one kernel. Channel group g holds
// channels [g*C/G, (g+1)*C/G), which makes each (n, g) slab of Cg*S elements
// contiguous in memory: the natural unit of work and of threading.
//
// group_norm_silu_* is silu(group_norm(x)) in one pass (the U-Net's and the
// TPN adapters' norm -> SiLU): the normalised map is neither written nor
// read back, and its backward recomputes it per slab, where the slab is in
// cache. Its rounding is the two ops' exactly: the same float expressions,
// and statistics saved in float64 so the backward rebuilds the forward's
// float mean and scale bit for bit.
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "common.h"
#include "cpu/vmath.h"
#include "ops.h"

// y is (N, C, S); the statistics (saved for backward) are mean and rstd,
// (N, G) float32 (mean32, rstd32) or float64 (mean64, rstd64: the fused op),
// whichever pair is not NULL; x is (N, C, S), w and b are (C,) or NULL (no
// affine: w = 1, b = 0); silu: y = silu(group norm).
// Statistics are two-pass in double (mean, then the sum of squared
// deviations): a one-pass E[x^2] - E[x]^2 in float loses everything when
// |mean| >> std. The variance is biased (divide by Cg*S) and eps goes inside
// the square root, as in PyTorch.
static int gn_forward(float *restrict y, float *restrict mean32, float *restrict rstd32,
                      double *restrict mean64, double *restrict rstd64,
                      const float *restrict x, const float *restrict w,
                      const float *restrict b, int N, int C, ptrdiff_t S, int G, float eps,
                      int silu) {
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
        if (mean64) {
            mean64[ng] = mu;
            rstd64[ng] = r;
        } else {
            mean32[ng] = (float)mu;
            rstd32[ng] = (float)r;
        }
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
            if (silu)
                for (ptrdiff_t i = 0; i < S; i++) {
                    const float z = (xc[i] - muf) * scale + shift;
                    yc[i] = z * sigmoidf(z);
                }
            else
                for (ptrdiff_t i = 0; i < S; i++) yc[i] = (xc[i] - muf) * scale + shift;
        }
    }
    return TN_OK;
}

int group_norm_forward(float *restrict y, float *restrict mean, float *restrict rstd,
                       const float *restrict x, const float *restrict w,
                       const float *restrict b, int N, int C, ptrdiff_t S, int G, float eps) {
    // y is (N, C, S), mean and rstd are (N, G) (saved for backward),
    // x is (N, C, S), w and b are (C,) or NULL
    return gn_forward(y, mean, rstd, NULL, NULL, x, w, b, N, C, S, G, eps, 0);
}

// dx is (N, C, S); dw, db are (C,) or NULL (accumulated with +=);
// dy, x are (N, C, S); mean, rstd are (N, G) from the forward (float32
// mean32/rstd32, or float64 mean64/rstd64 with silu); w, b are (C,) or NULL.
// With xhat = (x - mu) * rstd and dxhat = dz * w, over each slab of M elements:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dw[c] += sum_{n, s} dz * xhat,  db[c] += sum_{n, s} dz,
// where dz = dy, or with silu dz = silu'(z) dy for the normalised z, which
// each slab recomputes into a per-thread buffer first (as silu_backward
// would compute it from the stored z). One pass per slab gathers
// per-channel sums (double) of dz and dz*(x - mu); they give both slab
// means and, stored per (n, c), dw and db without a second read of dz and
// x and without races between threads on dw/db.
static int gn_backward(float *restrict dx, float *restrict dw, float *restrict db,
                       const float *restrict dy, const float *restrict x,
                       const float *restrict mean32, const float *restrict rstd32,
                       const double *restrict mean64, const double *restrict rstd64,
                       const float *restrict w, const float *restrict b, int N, int C,
                       ptrdiff_t S, int G, int silu) {
    const int Cg = C / G;
    const ptrdiff_t M = (ptrdiff_t)Cg * S;
    const ptrdiff_t NG = (ptrdiff_t)N * G;
    const int want_param = dw != NULL || db != NULL;
    const int threaded = NG > 1 && NG * M >= TN_OMP_MIN_WORK;
    // per (n, c): sum dz, and sum dz * xhat
    double *sums = NULL;
    float *dzbuf = NULL;  // silu: one slab of dz per thread
    if (want_param) {
        sums = malloc(sizeof(double) * 2 * (size_t)N * (size_t)C);
        if (!sums) return TN_ENOMEM;
    }
    if (silu) {
        size_t threads = threaded ? (size_t)omp_get_max_threads() : 1;
        dzbuf = malloc(sizeof(float) * (size_t)M * threads);
        if (!dzbuf) {
            free(sums);
            return TN_ENOMEM;
        }
    }
#pragma omp parallel for schedule(static) if (threaded)
    for (ptrdiff_t ng = 0; ng < NG; ng++) {
        const ptrdiff_t n = ng / G;
        const int g = (int)(ng % G);
        // The backward of the plain op reads the float32 statistics; the
        // fused one rounds its float64 ones the same way (and recomputes z
        // with the forward's own double rstd).
        const float muf = mean64 ? (float)mean64[ng] : mean32[ng];
        const double r = mean64 ? (double)(float)rstd64[ng] : (double)rstd32[ng];
        const float *restrict dyg = dy + ng * M;
        if (silu) {
            float *restrict dz = dzbuf + (size_t)M * (threaded ? omp_get_thread_num() : 0);
            const double rf = rstd64[ng];
            for (int cc = 0; cc < Cg; cc++) {
                const int c = g * Cg + cc;
                const float scale = (float)(rf * (w ? (double)w[c] : 1.0));
                const float shift = b ? b[c] : 0.0f;
                const float *restrict xc = x + ng * M + (ptrdiff_t)cc * S;
                const float *restrict dyc = dyg + (ptrdiff_t)cc * S;
                float *restrict dzc = dz + (ptrdiff_t)cc * S;
                for (ptrdiff_t i = 0; i < S; i++) {
                    const float z = (xc[i] - muf) * scale + shift;
                    const float sg = sigmoidf(z);
                    dzc[i] = dyc[i] * sg * (1.0f + z * (1.0f - sg));
                }
            }
            dyg = dz;
        }
        double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
        for (int cc = 0; cc < Cg; cc++) {
            const int c = g * Cg + cc;
            const float *restrict dyc = dyg + (ptrdiff_t)cc * S;
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
        // dx = dz * (r w) + (x - mu) * k1 + k0, per channel
        const double mean_dxhat = sum_dxhat / (double)M;
        const double mean_dxhat_xhat = sum_dxhat_xhat / (double)M;
        const float k1 = (float)(-r * r * mean_dxhat_xhat);
        const float k0 = (float)(-r * mean_dxhat);
        for (int cc = 0; cc < Cg; cc++) {
            const int c = g * Cg + cc;
            const float a = (float)(r * (w ? (double)w[c] : 1.0));
            const float *restrict dyc = dyg + (ptrdiff_t)cc * S;
            const float *restrict xc = x + ng * M + (ptrdiff_t)cc * S;
            float *restrict dxc = dx + ng * M + (ptrdiff_t)cc * S;
            for (ptrdiff_t i = 0; i < S; i++) dxc[i] = dyc[i] * a + (xc[i] - muf) * k1 + k0;
        }
    }
    free(dzbuf);
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

int group_norm_backward(float *restrict dx, float *restrict dw, float *restrict db,
                        const float *restrict dy, const float *restrict x,
                        const float *restrict mean, const float *restrict rstd,
                        const float *restrict w, int N, int C, ptrdiff_t S, int G) {
    // dx is (N, C, S); dw, db are (C,) or NULL (accumulated with +=);
    // dy, x are (N, C, S); mean, rstd are (N, G) from the forward; w is (C,) or NULL
    return gn_backward(dx, dw, db, dy, x, mean, rstd, NULL, NULL, w, NULL, N, C, S, G, 0);
}

int group_norm_silu_forward(float *restrict y, double *restrict mean, double *restrict rstd,
                            const float *restrict x, const float *restrict w,
                            const float *restrict b, int N, int C, ptrdiff_t S, int G,
                            float eps) {
    // y = silu(group_norm(x)) is (N, C, S); mean, rstd are (N, G) float64
    // (saved for backward); x is (N, C, S); w, b are (C,) or NULL
    return gn_forward(y, NULL, NULL, mean, rstd, x, w, b, N, C, S, G, eps, 1);
}

int group_norm_silu_backward(float *restrict dx, float *restrict dw, float *restrict db,
                             const float *restrict dy, const float *restrict x,
                             const double *restrict mean, const double *restrict rstd,
                             const float *restrict w, const float *restrict b, int N, int C,
                             ptrdiff_t S, int G) {
    // dx is (N, C, S); dw, db are (C,) or NULL (accumulated with +=); dy, x
    // are (N, C, S); mean, rstd are (N, G) float64 from group_norm_silu_forward;
    // w, b are (C,) or NULL (the forward's)
    return gn_backward(dx, dw, db, dy, x, NULL, NULL, mean, rstd, w, b, N, C, S, G, 1);
}
