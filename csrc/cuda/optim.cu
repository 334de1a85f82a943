// Losses and optimizer kernels: mean squared error (the loss stays on the
// device), AdamW, the global gradient norm and in-place scaling
// (clip_grad_norm). Full reductions are two-pass and deterministic: each
// block writes a double partial sum, one block adds the partials in order.
#include "common.cuh"

#include <math.h>

#define RED_BLOCKS 1024  // partial sums per reduction (at most)

namespace {

// part[blockIdx.x] = sum over this block's grid-stride share of (x - y)^2
// (y NULL: x^2), in double.
__global__ void sumsq_partial_f64(double *__restrict__ part, const float *__restrict__ x,
                                  const float *__restrict__ y, int64_t n) {
    double acc = 0.0;
    TN_GRID_LOOP(i, n) {
        const double d = y ? (double)x[i] - (double)y[i] : (double)x[i];
        acc += d * d;
    }
    acc = tn_block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// *out = (sum of part[0..count)) * scale, in double, one block.
__global__ void finish_sum_f32(float *__restrict__ out, const double *__restrict__ part,
                               int count, double scale) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += part[i];
    acc = tn_block_sum(acc);
    if (threadIdx.x == 0) *out = (float)(acc * scale);
}

__global__ void finish_sum_f64(double *__restrict__ out, const double *__restrict__ part,
                               int count) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += part[i];
    acc = tn_block_sum(acc);
    if (threadIdx.x == 0) *out = acc;
}

unsigned red_blocks(int64_t n) {
    const unsigned b = tn_blocks(n);
    return b < RED_BLOCKS ? b : RED_BLOCKS;
}

// dx = k (x - y), k = 2 g / n with g from g_dev[0] when given.
__global__ void mse_backward_f32(float *__restrict__ dx, const float *__restrict__ x,
                                 const float *__restrict__ y, const float *__restrict__ g_dev,
                                 double g, int64_t n) {
    const float k = (float)(2.0 * (g_dev ? (double)g_dev[0] : g) / (double)n);
    TN_GRID_LOOP(i, n) dx[i] = k * (x[i] - y[i]);
}

// torch.optim.AdamW's single-tensor step, as csrc/cpu/optim.c.
__global__ void adamw_step_f32(float *__restrict__ p, float *__restrict__ m,
                               float *__restrict__ v, const float *__restrict__ g, int64_t n,
                               float decay, float w1, int lerp_low, float b2, float w2,
                               float step_size, float bc2_sqrt, float eps) {
    TN_GRID_LOOP(i, n) {
        const float gi = g[i];
        const float mi = lerp_low ? m[i] + w1 * (gi - m[i]) : gi - (gi - m[i]) * (1.0f - w1);
        const float vi = b2 * v[i] + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * (mi / denom);
    }
}

__global__ void scale_f32(float *__restrict__ x, float factor, int64_t n) {
    TN_GRID_LOOP(i, n) x[i] *= factor;
}

}  // namespace

// loss is one float (device), x and y are (n,): loss = mean((x - y)^2),
// summed in double.
extern "C" int tn_cuda_mse_forward(float *loss, const float *x, const float *y, int64_t n) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const unsigned blocks = red_blocks(n);
    TnBuffer part;
    TN_TRY(part.alloc(sizeof(double) * blocks));
    sumsq_partial_f64<<<blocks, TN_THREADS, 0, st>>>(part.as<double>(), x, y, n);
    TN_LAUNCH_CHECK();
    finish_sum_f32<<<1, TN_THREADS, 0, st>>>(loss, part.as<double>(), (int)blocks,
                                             1.0 / (double)n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

// dx, x, y are (n,): dx = g * 2 (x - y) / n; g from device memory when g_dev.
extern "C" int tn_cuda_mse_backward(float *dx, const float *x, const float *y,
                                    const float *g_dev, double g, int64_t n) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    mse_backward_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(dx, x, y, g_dev, g, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

// p, m, v, g are (n,), in place on p, m, v; the scalar factors in double as
// torch forms them.
extern "C" int tn_cuda_adamw_step(float *p, float *m, float *v, const float *g, int64_t n,
                                  double lr, double beta1, double beta2, double eps,
                                  double weight_decay, long long step) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const float decay = (float)(1.0 - lr * weight_decay);
    const float w1 = (float)(1.0 - beta1);
    const int lerp_low = w1 < 0.5f;  // torch's lerp switches form at weight 0.5
    const float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    adamw_step_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(p, m, v, g, n, decay, w1, lerp_low,
                                                        (float)beta2, (float)(1.0 - beta2),
                                                        step_size, bc2_sqrt, (float)eps);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

// *norm (host) = sqrt(sum over every array of x^2): one partial block range
// per array, one final sum, one 8-byte copy back (waits for the stream).
extern "C" int tn_cuda_grad_norm(double *norm, const float *const *xs, const int64_t *ns,
                                 int count) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    size_t total_blocks = 0;
    for (int a = 0; a < count; a++) total_blocks += ns[a] > 0 ? red_blocks(ns[a]) : 0;
    TnBuffer part, out;
    TN_TRY(part.alloc(sizeof(double) * (total_blocks ? total_blocks : 1)));
    TN_TRY(out.alloc(sizeof(double)));
    size_t off = 0;
    for (int a = 0; a < count; a++) {
        if (ns[a] <= 0) continue;
        const unsigned b = red_blocks(ns[a]);
        sumsq_partial_f64<<<b, TN_THREADS, 0, st>>>(part.as<double>() + off, xs[a], nullptr,
                                                    ns[a]);
        TN_LAUNCH_CHECK();
        off += b;
    }
    if (off > (size_t)INT32_MAX)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "grad_norm", "too many arrays");
    if (off == 0) {
        *norm = 0.0;
        return TN_OK;
    }
    finish_sum_f64<<<1, TN_THREADS, 0, st>>>(out.as<double>(), part.as<double>(), (int)off);
    TN_LAUNCH_CHECK();
    double sumsq = 0.0;
    TN_CUDA_CHECK(cudaMemcpyAsync(&sumsq, out.ptr, sizeof(double), cudaMemcpyDeviceToHost, st));
    TN_CUDA_CHECK(cudaStreamSynchronize(st));
    *norm = sqrt(sumsq);
    return TN_OK;
}

extern "C" int tn_cuda_scale_inplace(float *const *xs, const int64_t *ns, int count,
                                     float factor) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    for (int a = 0; a < count; a++) {
        if (ns[a] <= 0) continue;
        scale_f32<<<tn_blocks(ns[a]), TN_THREADS, 0, st>>>(xs[a], factor, ns[a]);
        TN_LAUNCH_CHECK();
    }
    return TN_OK;
}
