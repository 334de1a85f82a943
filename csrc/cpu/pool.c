// 2-D pooling over (N, C, H, W), one (n, c) plane per unit of work: planes
// never share outputs, so forward and backward (scatter) are race-free when
// threaded over planes. Square kernels; the output size is PyTorch's floor
// mode P = (H + 2*pad - k) / stride + 1. The glue guarantees pad <= k / 2
// (PyTorch's rule), so every window overlaps the image.
#include <math.h>

#include "common.h"
#include "ops.h"

static inline int out_size(int H, int k, int stride, int pad) {
    return (H + 2 * pad - k) / stride + 1;
}

#define PLANE_LOOP_IF(work) if (planes > 1 && (work) >= TN_OMP_MIN_WORK)

// y is (N, C, P, Q), x is (N, C, H, W). count_include_pad=True: the divisor
// is always k*k (in floor mode no window reaches past the padding), padded
// cells count as zeros.
int avg_pool2d_forward(float *restrict y, const float *restrict x, int N, int C, int H, int W,
                       int k, int stride, int pad) {
    const int P = out_size(H, k, stride, pad), Q = out_size(W, k, stride, pad);
    const ptrdiff_t planes = (ptrdiff_t)N * C;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) PLANE_LOOP_IF(planes * P * Q * k * k)
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        const float *restrict xp = x + pl * H * W;
        float *restrict yp = y + pl * P * Q;
        for (int p = 0; p < P; p++) {
            const int h0 = p * stride - pad;
            const int ha = TN_MAX(h0, 0), hb = TN_MIN(h0 + k, H);
            for (int q = 0; q < Q; q++) {
                const int w0 = q * stride - pad;
                const int wa = TN_MAX(w0, 0), wb = TN_MIN(w0 + k, W);
                float acc = 0.0f;
                for (int h = ha; h < hb; h++)
                    for (int w = wa; w < wb; w++) acc += xp[(ptrdiff_t)h * W + w];
                yp[(ptrdiff_t)p * Q + q] = acc * inv;
            }
        }
    }
    return TN_OK;
}

// dx is (N, C, H, W), dy is (N, C, P, Q): every in-image cell of a window
// gets dy / (k*k); overlapping windows (stride < k) add up.
int avg_pool2d_backward(float *restrict dx, const float *restrict dy, int N, int C, int H,
                        int W, int k, int stride, int pad) {
    const int P = out_size(H, k, stride, pad), Q = out_size(W, k, stride, pad);
    const ptrdiff_t planes = (ptrdiff_t)N * C;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) PLANE_LOOP_IF(planes * P * Q * k * k)
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        float *restrict dxp = dx + pl * H * W;
        const float *restrict dyp = dy + pl * P * Q;
        for (ptrdiff_t i = 0; i < (ptrdiff_t)H * W; i++) dxp[i] = 0.0f;
        for (int p = 0; p < P; p++) {
            const int h0 = p * stride - pad;
            const int ha = TN_MAX(h0, 0), hb = TN_MIN(h0 + k, H);
            for (int q = 0; q < Q; q++) {
                const int w0 = q * stride - pad;
                const int wa = TN_MAX(w0, 0), wb = TN_MIN(w0 + k, W);
                const float g = dyp[(ptrdiff_t)p * Q + q] * inv;
                for (int h = ha; h < hb; h++)
                    for (int w = wa; w < wb; w++) dxp[(ptrdiff_t)h * W + w] += g;
            }
        }
    }
    return TN_OK;
}

// PyTorch's adaptive window for output index i of `out` over an input of
// `in`: [floor(i*in/out), ceil((i+1)*in/out)). Windows may overlap and, when
// out > in, repeat an input cell; each is non-empty.
static inline int adaptive_start(int i, int in, int out) {
    return (int)(((int64_t)i * in) / out);
}
static inline int adaptive_end(int i, int in, int out) {
    return (int)(((int64_t)(i + 1) * in + out - 1) / out);
}

// y is (N, C, OH, OW), x is (N, C, H, W)
int adaptive_avg_pool2d_forward(float *restrict y, const float *restrict x, int N, int C,
                                int H, int W, int OH, int OW) {
    const ptrdiff_t planes = (ptrdiff_t)N * C;
    const ptrdiff_t work = planes * TN_MAX((ptrdiff_t)H * W, (ptrdiff_t)OH * OW);
#pragma omp parallel for schedule(static) PLANE_LOOP_IF(work)
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        const float *restrict xp = x + pl * H * W;
        float *restrict yp = y + pl * OH * OW;
        for (int i = 0; i < OH; i++) {
            const int ha = adaptive_start(i, H, OH), hb = adaptive_end(i, H, OH);
            for (int j = 0; j < OW; j++) {
                const int wa = adaptive_start(j, W, OW), wb = adaptive_end(j, W, OW);
                float acc = 0.0f;
                for (int h = ha; h < hb; h++)
                    for (int w = wa; w < wb; w++) acc += xp[(ptrdiff_t)h * W + w];
                yp[(ptrdiff_t)i * OW + j] = acc / (float)((hb - ha) * (wb - wa));
            }
        }
    }
    return TN_OK;
}

// dx is (N, C, H, W), dy is (N, C, OH, OW)
int adaptive_avg_pool2d_backward(float *restrict dx, const float *restrict dy, int N, int C,
                                 int H, int W, int OH, int OW) {
    const ptrdiff_t planes = (ptrdiff_t)N * C;
    const ptrdiff_t work = planes * TN_MAX((ptrdiff_t)H * W, (ptrdiff_t)OH * OW);
#pragma omp parallel for schedule(static) PLANE_LOOP_IF(work)
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        float *restrict dxp = dx + pl * H * W;
        const float *restrict dyp = dy + pl * OH * OW;
        for (ptrdiff_t i = 0; i < (ptrdiff_t)H * W; i++) dxp[i] = 0.0f;
        for (int i = 0; i < OH; i++) {
            const int ha = adaptive_start(i, H, OH), hb = adaptive_end(i, H, OH);
            for (int j = 0; j < OW; j++) {
                const int wa = adaptive_start(j, W, OW), wb = adaptive_end(j, W, OW);
                const float g = dyp[(ptrdiff_t)i * OW + j] / (float)((hb - ha) * (wb - wa));
                for (int h = ha; h < hb; h++)
                    for (int w = wa; w < wb; w++) dxp[(ptrdiff_t)h * W + w] += g;
            }
        }
    }
    return TN_OK;
}

// y is (N, C, P, Q), argmax is (N, C, P, Q) (flat index h*W + w into the
// plane, for backward), x is (N, C, H, W). Padding is -inf (never chosen).
// Ties keep the first maximum in row-major window order and a NaN wins (the
// last one), exactly PyTorch's CPU update rule `v > best || isnan(v)`.
int max_pool2d_forward(float *restrict y, int32_t *restrict argmax, const float *restrict x,
                       int N, int C, int H, int W, int k, int stride, int pad) {
    const int P = out_size(H, k, stride, pad), Q = out_size(W, k, stride, pad);
    const ptrdiff_t planes = (ptrdiff_t)N * C;
#pragma omp parallel for schedule(static) PLANE_LOOP_IF(planes * P * Q * k * k)
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        const float *restrict xp = x + pl * H * W;
        float *restrict yp = y + pl * P * Q;
        int32_t *restrict ap = argmax + pl * P * Q;
        for (int p = 0; p < P; p++) {
            const int h0 = p * stride - pad;
            const int ha = TN_MAX(h0, 0), hb = TN_MIN(h0 + k, H);
            for (int q = 0; q < Q; q++) {
                const int w0 = q * stride - pad;
                const int wa = TN_MAX(w0, 0), wb = TN_MIN(w0 + k, W);
                int32_t best_i = ha * W + wa;  // in-image, even if all are -inf
                float best = -INFINITY;
                for (int h = ha; h < hb; h++)
                    for (int w = wa; w < wb; w++) {
                        const float v = xp[(ptrdiff_t)h * W + w];
                        if (v > best || isnan(v)) {
                            best = v;
                            best_i = h * W + w;
                        }
                    }
                yp[(ptrdiff_t)p * Q + q] = best;
                ap[(ptrdiff_t)p * Q + q] = best_i;
            }
        }
    }
    return TN_OK;
}

// dx is (N, C, H, W), dy and argmax are (N, C, P, Q); the glue has checked
// 0 <= argmax < H*W. Scatter-add: overlapping windows may pick one cell twice.
int max_pool2d_backward(float *restrict dx, const float *restrict dy,
                        const int32_t *restrict argmax, int N, int C, int H, int W, int P,
                        int Q) {
    const ptrdiff_t planes = (ptrdiff_t)N * C;
#pragma omp parallel for schedule(static) PLANE_LOOP_IF(planes * ((ptrdiff_t)H * W + P * Q))
    for (ptrdiff_t pl = 0; pl < planes; pl++) {
        float *restrict dxp = dx + pl * H * W;
        const float *restrict dyp = dy + pl * P * Q;
        const int32_t *restrict ap = argmax + pl * P * Q;
        for (ptrdiff_t i = 0; i < (ptrdiff_t)H * W; i++) dxp[i] = 0.0f;
        for (ptrdiff_t i = 0; i < (ptrdiff_t)P * Q; i++) dxp[ap[i]] += dyp[i];
    }
    return TN_OK;
}
