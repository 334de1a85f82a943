// Per-position distances between two feature maps (see score.h).
#include <math.h>

#include "score/score.h"

// Positions handled together: the channel loop runs outside, the position
// loop inside (contiguous in memory, vectorised), with float64 accumulators.
#define BLOCK 64
#define OMP_MIN_WORK 32768

int score_all_finite(const float *x, int64_t n) {
    int ok = 1;
#pragma omp parallel for reduction(&& : ok) schedule(static) if (n >= 4 * OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) ok = ok && isfinite(x[i]);
    return ok;
}

// a, b are (N, C, L); out is (N, L).
int score_l2_distance(float *out, const float *a, const float *b, int64_t N, int64_t C,
                      int64_t L, int squared) {
    if (!score_all_finite(a, N * C * L) || !score_all_finite(b, N * C * L)) return TN_ENAN;
    int64_t nblk = (L + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (N * C * L >= OMP_MIN_WORK)
    for (int64_t t = 0; t < N * nblk; t++) {
        int64_t n = t / nblk, l0 = (t % nblk) * BLOCK, m = TN_MIN(BLOCK, L - l0);
        double acc[BLOCK] = {0};
        for (int64_t c = 0; c < C; c++) {
            const float *pa = a + (n * C + c) * L + l0, *pb = b + (n * C + c) * L + l0;
#pragma omp simd
            for (int64_t j = 0; j < m; j++) {
                double d = (double)pa[j] - (double)pb[j];
                acc[j] += d * d;
            }
        }
        float *po = out + n * L + l0;
        for (int64_t j = 0; j < m; j++) po[j] = (float)(squared ? acc[j] : sqrt(acc[j]));
    }
    return TN_OK;
}

// a, b are (N, C, L); out is (N, L).
int score_cosine_distance(float *out, const float *a, const float *b, int64_t N, int64_t C,
                          int64_t L, double eps) {
    if (!score_all_finite(a, N * C * L) || !score_all_finite(b, N * C * L)) return TN_ENAN;
    int64_t nblk = (L + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (N * C * L >= OMP_MIN_WORK)
    for (int64_t t = 0; t < N * nblk; t++) {
        int64_t n = t / nblk, l0 = (t % nblk) * BLOCK, m = TN_MIN(BLOCK, L - l0);
        double ab[BLOCK] = {0}, aa[BLOCK] = {0}, bb[BLOCK] = {0};
        for (int64_t c = 0; c < C; c++) {
            const float *pa = a + (n * C + c) * L + l0, *pb = b + (n * C + c) * L + l0;
#pragma omp simd
            for (int64_t j = 0; j < m; j++) {
                double u = pa[j], v = pb[j];
                ab[j] += u * v;
                aa[j] += u * u;
                bb[j] += v * v;
            }
        }
        float *po = out + n * L + l0;
        for (int64_t j = 0; j < m; j++) {
            double na = fmax(sqrt(aa[j]), eps), nb = fmax(sqrt(bb[j]), eps);
            double cs = ab[j] / (na * nb);
            cs = cs > 1.0 ? 1.0 : (cs < -1.0 ? -1.0 : cs);
            po[j] = (float)(1.0 - cs);
        }
    }
    return TN_OK;
}
