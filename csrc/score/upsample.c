// Bilinear upsampling of score maps (see score.h for the convention).
#include <math.h>
#include <stdlib.h>

#include "score/score.h"

// x is (N, h, w); out is (N, H, W).
int score_upsample_bilinear(float *out, const float *x, int64_t N, int64_t h, int64_t w,
                            int64_t H, int64_t W, int align_corners) {
    if (!score_all_finite(x, N * h * w)) return TN_ENAN;
    int64_t *xi = malloc(2 * (size_t)W * sizeof *xi);
    double *xl = malloc((size_t)W * sizeof *xl);
    if (!xi || !xl) {
        free(xi);
        free(xl);
        return TN_ENOMEM;
    }
    for (int64_t X = 0; X < W; X++)
        score_src_index(X, w, W, align_corners, &xi[2 * X], &xi[2 * X + 1], &xl[X]);
#pragma omp parallel for schedule(static) if (N * H * W >= 65536)
    for (int64_t t = 0; t < N * H; t++) {
        int64_t n = t / H, Y = t % H, y0, y1;
        double ly;
        score_src_index(Y, h, H, align_corners, &y0, &y1, &ly);
        const float *r0 = x + (n * h + y0) * w, *r1 = x + (n * h + y1) * w;
        float *po = out + t * W;
        for (int64_t X = 0; X < W; X++) {
            int64_t a = xi[2 * X], b = xi[2 * X + 1];
            double lx = xl[X];
            double top = (1 - lx) * r0[a] + lx * r0[b], bot = (1 - lx) * r1[a] + lx * r1[b];
            po[X] = (float)((1 - ly) * top + ly * bot);
        }
    }
    free(xi);
    free(xl);
    return TN_OK;
}
