// DiAD's image-score reduction: repeated k x k stride-1 average pooling
// without padding (torch avg_pool2d(kernel k, stride 1)), then the max.
//
// Threads take whole images (one fork/join per call, no barriers between
// rounds): a batch of maps is the common case, and on a shared machine
// every barrier can cost a scheduler time slice.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "score/score.h"

// One round on one map: src (H, W) -> dst (H-k+1, W-k+1), the mean of each
// k x k window; separable (k sums along W into rs, then k along H), float64.
static void box_round(float *dst, double *rs, const float *src, int64_t H, int64_t W, int k) {
    int64_t P = H - k + 1, Q = W - k + 1;
    double inv = 1.0 / ((double)k * (double)k);
    for (int64_t y = 0; y < H; y++) {
        const float *ps = src + y * W;
        double *pr = rs + y * Q;
        for (int64_t q = 0; q < Q; q++) pr[q] = 0;
        for (int j = 0; j < k; j++) {
#pragma omp simd
            for (int64_t q = 0; q < Q; q++) pr[q] += ps[q + j];
        }
    }
    for (int64_t p = 0; p < P; p++) {
        float *pd = dst + p * Q;
        double acc[256];
        for (int64_t q0 = 0; q0 < Q; q0 += 256) {  // vectorised over q, in strips
            int64_t m = TN_MIN(256, Q - q0);
            for (int64_t q = 0; q < m; q++) acc[q] = 0;
            for (int i = 0; i < k; i++) {
                const double *pr = rs + (p + i) * Q + q0;
#pragma omp simd
                for (int64_t q = 0; q < m; q++) acc[q] += pr[q];
            }
            for (int64_t q = 0; q < m; q++) pd[q0 + q] = (float)(acc[q] * inv);
        }
    }
}

// All rounds on one map x (H, W) into out; a, b hold H*W floats, rs H*W doubles.
static void box_pool_map(float *out, const float *x, float *a, float *b, double *rs, int64_t H,
                         int64_t W, int k, int rounds) {
    const float *src = x;
    for (int r = 0; r < rounds; r++) {
        float *dst = r == rounds - 1 ? out : (r % 2 ? b : a);
        box_round(dst, rs, src, H, W, k);
        src = dst;
        H -= k - 1;
        W -= k - 1;
    }
}

// x is (N, H, W); out is (N, P, Q), P = H - rounds*(k-1), Q likewise; with
// `image_max`, out is (N,): the max of each pooled map.
static int pool(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k, int rounds,
                int image_max) {
    if (k < 1 || rounds < 0) return TN_EINVAL;
    int64_t shrink = (int64_t)rounds * (k - 1), P = H - shrink, Q = W - shrink;
    if (P <= 0 || Q <= 0) return TN_EINVAL;
    if (!score_all_finite(x, N * H * W)) return TN_ENAN;
    if ((rounds == 0 || k == 1) && !image_max) {
        memcpy(out, x, (size_t)(N * H * W) * sizeof *out);
        return TN_OK;
    }
    int status = TN_OK;
#pragma omp parallel if (N > 1 && N * H * W >= 16384)
    {
        size_t n = (size_t)(H * W);
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        float *last = image_max ? malloc((size_t)(P * Q) * sizeof *last) : NULL;
        double *rs = malloc(n * sizeof *rs);
        int ok = a && b && rs && (last || !image_max);
        if (!ok) {
#pragma omp atomic write
            status = TN_ENOMEM;
        }
#pragma omp for schedule(dynamic)
        for (int64_t i = 0; i < N; i++) {
            if (!ok) continue;
            const float *xi = x + i * H * W;
            float *dst = image_max ? last : out + i * P * Q;
            if (rounds == 0 || k == 1)
                memcpy(dst, xi, (size_t)(P * Q) * sizeof *dst);
            else
                box_pool_map(dst, xi, a, b, rs, H, W, k, rounds);
            if (image_max) {
                float m = dst[0];
                for (int64_t j = 1; j < P * Q; j++) m = dst[j] > m ? dst[j] : m;
                out[i] = m;
            }
        }
        free(a);
        free(b);
        free(last);
        free(rs);
    }
    return status;
}

// x is (N, H, W); out is (N, H - rounds*(k-1), W - rounds*(k-1)).
int score_box_pool(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                   int rounds) {
    return pool(out, x, N, H, W, k, rounds, 0);
}

// x is (N, H, W); out is (N,).
int score_image_max(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                    int rounds) {
    return pool(out, x, N, H, W, k, rounds, 1);
}
