// Nearest-neighbour upsampling by an integer factor (PyTorch
// F.interpolate(mode="nearest", scale_factor=s)): output pixel (i, j) reads
// input (i // s, j // s). With an integer factor PyTorch's
// floor(i * (1/s)) is exactly i // s, so both agree bit for bit.
#include <string.h>

#include "common.h"
#include "ops.h"

// y is (N, C, s*H, s*W), x is (N, C, H, W)
int upsample_nearest_forward(float *restrict y, const float *restrict x, int N, int C, int H,
                             int W, int s) {
    const ptrdiff_t planes = (ptrdiff_t)N * C;
    const ptrdiff_t OW = (ptrdiff_t)W * s;
    const ptrdiff_t work = planes * H * W * s * s;
#pragma omp parallel for schedule(static) if (planes > 1 && work >= TN_OMP_MIN_WORK)
    for (ptrdiff_t p = 0; p < planes; p++) {
        const float *restrict xp = x + p * H * W;
        float *restrict yp = y + p * H * W * s * s;
        for (int h = 0; h < H; h++) {
            // Build one output row, then copy it to the other s - 1 rows.
            float *restrict row = yp + (ptrdiff_t)h * s * OW;
            for (int w = 0; w < W; w++)
                for (int j = 0; j < s; j++) row[(ptrdiff_t)w * s + j] = xp[(ptrdiff_t)h * W + w];
            for (int i = 1; i < s; i++) memcpy(row + i * OW, row, sizeof(float) * OW);
        }
    }
    return TN_OK;
}

// dx is (N, C, H, W), dy is (N, C, s*H, s*W): each input pixel gets the sum
// of the s x s block it was copied to.
int upsample_nearest_backward(float *restrict dx, const float *restrict dy, int N, int C, int H,
                              int W, int s) {
    const ptrdiff_t planes = (ptrdiff_t)N * C;
    const ptrdiff_t OW = (ptrdiff_t)W * s;
    const ptrdiff_t work = planes * H * W * s * s;
#pragma omp parallel for schedule(static) if (planes > 1 && work >= TN_OMP_MIN_WORK)
    for (ptrdiff_t p = 0; p < planes; p++) {
        const float *restrict dyp = dy + p * H * W * s * s;
        float *restrict dxp = dx + p * H * W;
        for (int h = 0; h < H; h++) {
            float *restrict out = dxp + (ptrdiff_t)h * W;
            for (int w = 0; w < W; w++) out[w] = 0.0f;
            for (int i = 0; i < s; i++) {
                const float *restrict row = dyp + ((ptrdiff_t)h * s + i) * OW;
                for (int w = 0; w < W; w++) {
                    float acc = 0.0f;
                    for (int j = 0; j < s; j++) acc += row[(ptrdiff_t)w * s + j];
                    out[w] += acc;
                }
            }
        }
    }
    return TN_OK;
}
