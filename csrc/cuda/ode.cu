// Fused steps of the adaptive Dormand-Prince integrator on the device
// (csrc/ode/ode.c's contract and numerics): the stage combination
// y + h[b] * sum_j c[j] k[j] and scipy's RMS error norm per sample, sums in
// double in stage order, zero coefficients skipped. The norm's per-sample
// sums are two-pass and deterministic: blocks write double partials, one
// thread per sample adds its partials in order.
#include "common.cuh"

#include <math.h>

extern "C" {
#include "ode/ode.h"
}

namespace {

// The stages with a nonzero coefficient, passed by value in the kernel's
// parameters (no copy of pointers or coefficients to the device).
struct OdeStages {
    const float *k[TN_ODE_MAXK];
    double c[TN_ODE_MAXK];
    int n;
};

OdeStages ode_stages(const float *const *ks, const double *coeffs, int K) {
    OdeStages s = {};
    for (int j = 0; j < K; j++)
        if (coeffs[j] != 0.0) {
            s.k[s.n] = ks[j];
            s.c[s.n++] = coeffs[j];
        }
    return s;
}

// sum_j c[j] * k[j][i] in double, in stage order (unrolled: the parameters
// are read at constant offsets).
__device__ __forceinline__ double ode_stage_sum(const OdeStages &s, int64_t i) {
    double acc = 0.0;
#pragma unroll
    for (int j = 0; j < TN_ODE_MAXK; j++)
        if (j < s.n) acc += s.c[j] * (double)s.k[j][i];
    return acc;
}

// y_new, y are (B, D) flattened to n = B*D (y_new may be y: each element is
// read before it is written); h (B,).
__global__ void ode_combine_f32(float *y_new, const float *y, OdeStages s,
                                const double *__restrict__ h, int64_t D, int64_t n) {
    TN_GRID_LOOP(i, n) y_new[i] = (float)((double)y[i] + h[i / D] * ode_stage_sum(s, i));
}

// part (B*P,): part[g] = sum of (err / scale)^2 over slice p = g % P of
// sample b = g / P (its elements p*T + j*P*T, T threads), err = h[b] * the
// stage sum, scale = atol + rtol * max(|y|, |y_new|). y, y_new (B, D); h (B,).
__global__ void ode_error_norm_partial_f64(double *__restrict__ part, OdeStages s,
                                           const double *__restrict__ h,
                                           const float *__restrict__ y,
                                           const float *__restrict__ y_new, double rtol,
                                           double atol, int64_t D, int P, int64_t slices) {
    for (int64_t g = blockIdx.x; g < slices; g += gridDim.x) {
        const int64_t b = g / P, off = b * D;
        const double hb = h[b];
        double acc = 0.0;
        for (int64_t i = (g % P) * blockDim.x + threadIdx.x; i < D; i += (int64_t)P * blockDim.x) {
            const double e = ode_stage_sum(s, off + i) * hb;
            const double a = fabs((double)y[off + i]), c = fabs((double)y_new[off + i]);
            const double r = e / (atol + rtol * (a > c ? a : c));
            acc += r * r;
        }
        acc = tn_block_sum(acc);
        if (threadIdx.x == 0) part[g] = acc;
    }
}

// norm (B,) = sqrt(sum of each sample's P partials, in order, / D)
__global__ void ode_error_norm_finish_f64(double *__restrict__ norm,
                                          const double *__restrict__ part, int B, int P,
                                          int64_t D) {
    TN_GRID_LOOP(b, (int64_t)B) {
        double acc = 0.0;
        for (int p = 0; p < P; p++) acc += part[b * P + p];
        norm[b] = sqrt(acc / (double)D);
    }
}

// h (B,) from the host into *buf.
int ode_h_to_device(TnBuffer *buf, const double *h, int B, cudaStream_t st) {
    TN_TRY(buf->alloc(sizeof(double) * (size_t)B));
    // From pageable memory the call returns once h has been staged.
    TN_CUDA_CHECK(cudaMemcpyAsync(buf->ptr, h, sizeof(double) * (size_t)B,
                                  cudaMemcpyHostToDevice, st));
    return TN_OK;
}

int ode_check_sizes(int K, int B, int64_t D, const char *op) {
    if (K < 0 || K > TN_ODE_MAXK || B < 1 || D < 1)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, op,
                            "needs 0 <= K <= 16 stages and B, D >= 1");
    return TN_OK;
}

}  // namespace

// y_new, y, ks[j] (B, D) device; coeffs (K,), h (B,) host.
extern "C" int tn_cuda_ode_combine(float *y_new, const float *y, const float *const *ks,
                                   const double *coeffs, int K, const double *h, int B,
                                   int64_t D) {
    TN_TRY(ode_check_sizes(K, B, D, "ode_combine"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer hd;
    TN_TRY(ode_h_to_device(&hd, h, B, st));
    const int64_t n = (int64_t)B * D;
    ode_combine_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(y_new, y, ode_stages(ks, coeffs, K),
                                                        hd.as<double>(), D, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

// norm (B,) host; ks[j], y, y_new (B, D) device; coeffs (K,), h (B,) host.
extern "C" int tn_cuda_ode_error_norm(double *norm, const float *const *ks,
                                      const double *coeffs, int K, const double *h,
                                      const float *y, const float *y_new, double rtol,
                                      double atol, int B, int64_t D) {
    TN_TRY(ode_check_sizes(K, B, D, "ode_error_norm"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer hd, part, nd;
    TN_TRY(ode_h_to_device(&hd, h, B, st));
    // Slices per sample: about 8 elements per thread, at most 1024 (a batch
    // of a few 256^2 images still fills the GPU).
    const int64_t per = (D + (int64_t)TN_THREADS * 8 - 1) / ((int64_t)TN_THREADS * 8);
    const int P = (int)(per < 1 ? 1 : per > 1024 ? 1024 : per);
    const int64_t slices = (int64_t)B * P;
    TN_TRY(part.alloc(sizeof(double) * (size_t)slices));
    TN_TRY(nd.alloc(sizeof(double) * (size_t)B));
    const unsigned blocks = (unsigned)(slices < 65536 ? slices : 65536);
    ode_error_norm_partial_f64<<<blocks, TN_THREADS, 0, st>>>(
        part.as<double>(), ode_stages(ks, coeffs, K), hd.as<double>(), y, y_new, rtol, atol, D,
        P, slices);
    TN_LAUNCH_CHECK();
    ode_error_norm_finish_f64<<<tn_blocks(B), TN_THREADS, 0, st>>>(nd.as<double>(),
                                                                   part.as<double>(), B, P, D);
    TN_LAUNCH_CHECK();
    TN_CUDA_CHECK(cudaMemcpyAsync(norm, nd.ptr, sizeof(double) * (size_t)B,
                                  cudaMemcpyDeviceToHost, st));
    TN_CUDA_CHECK(cudaStreamSynchronize(st));
    return TN_OK;
}
