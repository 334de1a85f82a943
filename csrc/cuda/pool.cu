// Nearest upsampling and 2-D pooling over (N, C, H, W) (csrc/cpu/resize.c,
// pool.c: square kernels, floor mode, pad <= k / 2, PyTorch's adaptive
// windows). Forward: a thread per output. Backward of upsample, average and
// adaptive pooling: a thread per INPUT cell that gathers the outputs whose
// windows hold it (no atomics, deterministic). Max pooling's backward
// scatters with atomicAdd (the windows are not known from its arguments).
#include "common.cuh"

#include <math.h>

namespace {

__device__ __forceinline__ int ceil_div_pos(int a, int b) { return a <= 0 ? 0 : (a + b - 1) / b; }

// y is (N, C, s*H, s*W), x is (N, C, H, W): y[i, j] = x[i / s, j / s]
__global__ void upsample_nearest_forward_f32(float *__restrict__ y, const float *__restrict__ x,
                                             int64_t planes, int H, int W, int s) {
    const int OH = H * s, OW = W * s;
    TN_GRID_LOOP(i, planes * OH * OW) {
        const int ow = (int)(i % OW);
        const int64_t t = i / OW;
        const int oh = (int)(t % OH);
        const int64_t pl = t / OH;
        y[i] = x[(pl * H + oh / s) * W + ow / s];
    }
}

// dx (N, C, H, W) = the sum of each s x s block of dy (N, C, s*H, s*W)
__global__ void upsample_nearest_backward_f32(float *__restrict__ dx,
                                              const float *__restrict__ dy, int64_t planes,
                                              int H, int W, int s) {
    const int64_t OW = (int64_t)W * s;
    TN_GRID_LOOP(i, planes * H * W) {
        const int w = (int)(i % W);
        const int64_t t = i / W;
        const int h = (int)(t % H);
        const int64_t pl = t / H;
        const float *__restrict__ row = dy + (pl * H * s + (int64_t)h * s) * OW + (int64_t)w * s;
        float acc = 0.0f;
        for (int a = 0; a < s; a++) {
            float r = 0.0f;
            for (int b = 0; b < s; b++) r += row[(int64_t)a * OW + b];
            acc += r;
        }
        dx[i] = acc;
    }
}

// y is (N, C, P, Q), x is (N, C, H, W); count_include_pad: divisor k*k.
__global__ void avg_pool2d_forward_f32(float *__restrict__ y, const float *__restrict__ x,
                                       int64_t planes, int H, int W, int P, int Q, int k,
                                       int stride, int pad) {
    const float inv = 1.0f / (float)(k * k);
    TN_GRID_LOOP(i, planes * P * Q) {
        const int q = (int)(i % Q);
        const int64_t t = i / Q;
        const int p = (int)(t % P);
        const int64_t pl = t / P;
        const int h0 = p * stride - pad, w0 = q * stride - pad;
        const int ha = max(h0, 0), hb = min(h0 + k, H), wa = max(w0, 0), wb = min(w0 + k, W);
        const float *__restrict__ xp = x + pl * H * W;
        float acc = 0.0f;
        for (int h = ha; h < hb; h++)
            for (int w = wa; w < wb; w++) acc += xp[(int64_t)h * W + w];
        y[i] = acc * inv;
    }
}

// dx (N, C, H, W): each cell gathers dy / (k*k) from the windows holding it.
__global__ void avg_pool2d_backward_f32(float *__restrict__ dx, const float *__restrict__ dy,
                                        int64_t planes, int H, int W, int P, int Q, int k,
                                        int stride, int pad) {
    const float inv = 1.0f / (float)(k * k);
    TN_GRID_LOOP(i, planes * H * W) {
        const int w = (int)(i % W);
        const int64_t t = i / W;
        const int h = (int)(t % H);
        const int64_t pl = t / H;
        // windows p with p*stride - pad <= h < p*stride - pad + k
        const int pa = ceil_div_pos(h + pad - k + 1, stride), pb = min((h + pad) / stride, P - 1);
        const int qa = ceil_div_pos(w + pad - k + 1, stride), qb = min((w + pad) / stride, Q - 1);
        const float *__restrict__ dyp = dy + pl * P * Q;
        float acc = 0.0f;
        for (int p = pa; p <= pb; p++)
            for (int q = qa; q <= qb; q++) acc += dyp[(int64_t)p * Q + q] * inv;
        dx[i] = acc;
    }
}

// PyTorch's adaptive window [floor(i*in/out), ceil((i+1)*in/out)).
__device__ __forceinline__ int ad_start(int i, int in, int out) {
    return (int)(((int64_t)i * in) / out);
}
__device__ __forceinline__ int ad_end(int i, int in, int out) {
    return (int)(((int64_t)(i + 1) * in + out - 1) / out);
}

__global__ void adaptive_avg_pool2d_forward_f32(float *__restrict__ y,
                                                const float *__restrict__ x, int64_t planes,
                                                int H, int W, int OH, int OW) {
    TN_GRID_LOOP(i, planes * OH * OW) {
        const int oj = (int)(i % OW);
        const int64_t t = i / OW;
        const int oi = (int)(t % OH);
        const int64_t pl = t / OH;
        const int ha = ad_start(oi, H, OH), hb = ad_end(oi, H, OH);
        const int wa = ad_start(oj, W, OW), wb = ad_end(oj, W, OW);
        const float *__restrict__ xp = x + pl * H * W;
        float acc = 0.0f;
        for (int h = ha; h < hb; h++)
            for (int w = wa; w < wb; w++) acc += xp[(int64_t)h * W + w];
        y[i] = acc / (float)((hb - ha) * (wb - wa));
    }
}

// Each input cell h lies in the windows i in [floor(h*OH/H), ceil((h+1)*OH/H) - 1]
// (checked against the window rule itself).
__global__ void adaptive_avg_pool2d_backward_f32(float *__restrict__ dx,
                                                 const float *__restrict__ dy, int64_t planes,
                                                 int H, int W, int OH, int OW) {
    TN_GRID_LOOP(i, planes * H * W) {
        const int w = (int)(i % W);
        const int64_t t = i / W;
        const int h = (int)(t % H);
        const int64_t pl = t / H;
        const int ia = (int)(((int64_t)h * OH) / H);
        const int ib = min((int)(((int64_t)(h + 1) * OH + H - 1) / H) - 1, OH - 1);
        const int ja = (int)(((int64_t)w * OW) / W);
        const int jb = min((int)(((int64_t)(w + 1) * OW + W - 1) / W) - 1, OW - 1);
        const float *__restrict__ dyp = dy + pl * OH * OW;
        float acc = 0.0f;
        for (int oi = ia; oi <= ib; oi++) {
            const int ha = ad_start(oi, H, OH), hb = ad_end(oi, H, OH);
            if (h < ha || h >= hb) continue;
            for (int oj = ja; oj <= jb; oj++) {
                const int wa = ad_start(oj, W, OW), wb = ad_end(oj, W, OW);
                if (w < wa || w >= wb) continue;
                acc += dyp[(int64_t)oi * OW + oj] / (float)((hb - ha) * (wb - wa));
            }
        }
        dx[i] = acc;
    }
}

// y, argmax (flat h*W + w in the plane) are (N, C, P, Q); -inf padding; the
// first maximum in row-major window order wins, a NaN wins (PyTorch's rule).
__global__ void max_pool2d_forward_f32(float *__restrict__ y, int32_t *__restrict__ argmax,
                                       const float *__restrict__ x, int64_t planes, int H, int W,
                                       int P, int Q, int k, int stride, int pad) {
    TN_GRID_LOOP(i, planes * P * Q) {
        const int q = (int)(i % Q);
        const int64_t t = i / Q;
        const int p = (int)(t % P);
        const int64_t pl = t / P;
        const int h0 = p * stride - pad, w0 = q * stride - pad;
        const int ha = max(h0, 0), hb = min(h0 + k, H), wa = max(w0, 0), wb = min(w0 + k, W);
        const float *__restrict__ xp = x + pl * H * W;
        int32_t best_i = ha * W + wa;
        float best = -INFINITY;
        for (int h = ha; h < hb; h++)
            for (int w = wa; w < wb; w++) {
                const float v = xp[(int64_t)h * W + w];
                if (v > best || isnan(v)) {
                    best = v;
                    best_i = h * W + w;
                }
            }
        y[i] = best;
        argmax[i] = best_i;
    }
}

// dx (zeroed first) += dy at each argmax; entries outside [0, H*W) are skipped.
__global__ void max_pool2d_backward_f32(float *__restrict__ dx, const float *__restrict__ dy,
                                        const int32_t *__restrict__ argmax, int64_t planes,
                                        int H, int W, int P, int Q) {
    const int64_t HW = (int64_t)H * W;
    TN_GRID_LOOP(i, planes * P * Q) {
        const int32_t a = argmax[i];
        if (a < 0 || a >= HW) continue;
        const int64_t pl = i / ((int64_t)P * Q);
        atomicAdd(dx + pl * HW + a, dy[i]);
    }
}

int out_size(int H, int k, int stride, int pad) { return (H + 2 * pad - k) / stride + 1; }

}  // namespace

#define LAUNCH(kernel, n, ...)                                                  \
    do {                                                                        \
        cudaStream_t st_;                                                       \
        TN_TRY(tn_cuda_stream(&st_));                                           \
        kernel<<<tn_blocks(n), TN_THREADS, 0, st_>>>(__VA_ARGS__);              \
        TN_LAUNCH_CHECK();                                                      \
    } while (0)

extern "C" int tn_cuda_upsample_nearest_forward(float *y, const float *x, int N, int C, int H,
                                                int W, int s) {
    const int64_t planes = (int64_t)N * C;
    LAUNCH(upsample_nearest_forward_f32, planes * H * W * s * s, y, x, planes, H, W, s);
    return TN_OK;
}

extern "C" int tn_cuda_upsample_nearest_backward(float *dx, const float *dy, int N, int C,
                                                 int H, int W, int s) {
    const int64_t planes = (int64_t)N * C;
    LAUNCH(upsample_nearest_backward_f32, planes * H * W, dx, dy, planes, H, W, s);
    return TN_OK;
}

extern "C" int tn_cuda_avg_pool2d_forward(float *y, const float *x, int N, int C, int H, int W,
                                          int k, int stride, int pad) {
    const int64_t planes = (int64_t)N * C;
    const int P = out_size(H, k, stride, pad), Q = out_size(W, k, stride, pad);
    LAUNCH(avg_pool2d_forward_f32, planes * P * Q, y, x, planes, H, W, P, Q, k, stride, pad);
    return TN_OK;
}

extern "C" int tn_cuda_avg_pool2d_backward(float *dx, const float *dy, int N, int C, int H,
                                           int W, int k, int stride, int pad) {
    const int64_t planes = (int64_t)N * C;
    const int P = out_size(H, k, stride, pad), Q = out_size(W, k, stride, pad);
    LAUNCH(avg_pool2d_backward_f32, planes * H * W, dx, dy, planes, H, W, P, Q, k, stride, pad);
    return TN_OK;
}

extern "C" int tn_cuda_adaptive_avg_pool2d_forward(float *y, const float *x, int N, int C,
                                                   int H, int W, int OH, int OW) {
    const int64_t planes = (int64_t)N * C;
    LAUNCH(adaptive_avg_pool2d_forward_f32, planes * OH * OW, y, x, planes, H, W, OH, OW);
    return TN_OK;
}

extern "C" int tn_cuda_adaptive_avg_pool2d_backward(float *dx, const float *dy, int N, int C,
                                                    int H, int W, int OH, int OW) {
    const int64_t planes = (int64_t)N * C;
    LAUNCH(adaptive_avg_pool2d_backward_f32, planes * H * W, dx, dy, planes, H, W, OH, OW);
    return TN_OK;
}

extern "C" int tn_cuda_max_pool2d_forward(float *y, int32_t *argmax, const float *x, int N,
                                          int C, int H, int W, int k, int stride, int pad) {
    const int64_t planes = (int64_t)N * C;
    const int P = out_size(H, k, stride, pad), Q = out_size(W, k, stride, pad);
    LAUNCH(max_pool2d_forward_f32, planes * P * Q, y, argmax, x, planes, H, W, P, Q, k, stride,
           pad);
    return TN_OK;
}

extern "C" int tn_cuda_max_pool2d_backward(float *dx, const float *dy, const int32_t *argmax,
                                           int N, int C, int H, int W, int P, int Q) {
    const int64_t planes = (int64_t)N * C;
    TN_TRY(tn_cuda_memset_zero(dx, sizeof(float) * (size_t)(planes * H * W)));
    LAUNCH(max_pool2d_backward_f32, planes * P * Q, dx, dy, argmax, planes, H, W, P, Q);
    return TN_OK;
}
