// GroupNorm forward / backward (csrc/cpu/norm.c's contract and numerics:
// x viewed as (N, C, S), group g holds channels [g*C/G, (g+1)*C/G), so each
// (n, g) slab of Cg*S elements is contiguous; two-pass statistics in double,
// biased variance, eps inside the square root).
#include "common.cuh"

#include <math.h>

namespace {

#define GN_THREADS 512

// One block per (n, g) slab: mean, then the sum of squared deviations, then y.
// y is (N, C, S); mean, rstd are (N, G); x is (N, C, S); w, b are (C,) or NULL.
__global__ void __launch_bounds__(GN_THREADS)
group_norm_forward_f32(float *__restrict__ y, float *__restrict__ mean,
                       float *__restrict__ rstd, const float *__restrict__ x,
                       const float *__restrict__ w, const float *__restrict__ b, int C,
                       int64_t S, int G, float eps) {
    __shared__ double sh[2];
    const int64_t ng = blockIdx.x;
    const int g = (int)(ng % G), Cg = C / G;
    const int64_t M = (int64_t)Cg * S;
    const float *__restrict__ xg = x + ng * M;
    float *__restrict__ yg = y + ng * M;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += xg[i];
    s = tn_block_sum(s);
    if (threadIdx.x == 0) sh[0] = s / (double)M;
    __syncthreads();
    const double mu = sh[0];
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const double d = (double)xg[i] - mu;
        ss += d * d;
    }
    ss = tn_block_sum(ss);
    if (threadIdx.x == 0) {
        const double r = 1.0 / sqrt(ss / (double)M + (double)eps);
        sh[1] = r;
        mean[ng] = (float)mu;
        rstd[ng] = (float)r;
    }
    __syncthreads();
    const double r = sh[1];
    const float muf = (float)mu;
    for (int cc = 0; cc < Cg; cc++) {
        const int c = g * Cg + cc;
        const float scale = (float)(r * (w ? (double)w[c] : 1.0));
        const float shift = b ? b[c] : 0.0f;
        const float *__restrict__ xc = xg + (int64_t)cc * S;
        float *__restrict__ yc = yg + (int64_t)cc * S;
        for (int64_t i = threadIdx.x; i < S; i += blockDim.x) yc[i] = (xc[i] - muf) * scale + shift;
    }
}

// One block per (n, c) plane: sums[nc] = (sum dy, rstd * sum dy (x - mu)).
__global__ void group_norm_plane_sums_f64(double2 *__restrict__ sums,
                                          const float *__restrict__ dy,
                                          const float *__restrict__ x,
                                          const float *__restrict__ mean,
                                          const float *__restrict__ rstd, int C, int64_t S,
                                          int G) {
    const int64_t nc = blockIdx.x;
    const int64_t n = nc / C;
    const int c = (int)(nc % C);
    const int64_t ng = n * G + c / (C / G);
    const float muf = mean[ng];
    const float *__restrict__ dyc = dy + nc * S;
    const float *__restrict__ xc = x + nc * S;
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
        sdy += dyc[i];
        sdyx += (double)dyc[i] * (double)(xc[i] - muf);
    }
    sdy = tn_block_sum(sdy);
    sdyx = tn_block_sum(sdyx);
    if (threadIdx.x == 0) sums[nc] = make_double2(sdy, sdyx * (double)rstd[ng]);
}

// Thread per (n, g): the slab means of dxhat and dxhat * xhat, as the two
// coefficients of dx = dy * (r w) + (x - mu) * k1 + k0.
__global__ void group_norm_coeffs_f32(float2 *__restrict__ k, const double2 *__restrict__ sums,
                                      const float *__restrict__ rstd,
                                      const float *__restrict__ w, int N, int C, int64_t S,
                                      int G) {
    TN_GRID_LOOP(ng, (int64_t)N * G) {
        const int64_t n = ng / G;
        const int g = (int)(ng % G), Cg = C / G;
        const double r = rstd[ng];
        double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
        for (int cc = 0; cc < Cg; cc++) {
            const int c = g * Cg + cc;
            const double wc = w ? (double)w[c] : 1.0;
            const double2 s = sums[n * C + c];
            sum_dxhat += wc * s.x;
            sum_dxhat_xhat += wc * s.y;
        }
        const double M = (double)Cg * (double)S;
        k[ng] = make_float2((float)(-r * r * (sum_dxhat_xhat / M)), (float)(-r * (sum_dxhat / M)));
    }
}

// One block per (n, c) plane: dx = dy * (r w[c]) + (x - mu) * k1 + k0.
__global__ void group_norm_backward_dx_f32(float *__restrict__ dx, const float *__restrict__ dy,
                                           const float *__restrict__ x,
                                           const float *__restrict__ mean,
                                           const float *__restrict__ rstd,
                                           const float *__restrict__ w,
                                           const float2 *__restrict__ k, int C, int64_t S,
                                           int G) {
    const int64_t nc = blockIdx.x;
    const int64_t n = nc / C;
    const int c = (int)(nc % C);
    const int64_t ng = n * G + c / (C / G);
    const float muf = mean[ng];
    const float a = (float)((double)rstd[ng] * (w ? (double)w[c] : 1.0));
    const float k1 = k[ng].x, k0 = k[ng].y;
    const float *__restrict__ dyc = dy + nc * S;
    const float *__restrict__ xc = x + nc * S;
    float *__restrict__ dxc = dx + nc * S;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x)
        dxc[i] = dyc[i] * a + (xc[i] - muf) * k1 + k0;
}

// Thread per channel: dw[c] = sum_n rstd * sum dy (x - mu), db[c] = sum_n sum dy,
// the batch added in order (deterministic).
__global__ void group_norm_param_grads_f32(float *__restrict__ dw, float *__restrict__ db,
                                           const double2 *__restrict__ sums, int N, int C) {
    TN_GRID_LOOP(c, (int64_t)C) {
        double sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++) {
            const double2 s = sums[(int64_t)n * C + c];
            sdy += s.x;
            sdyx += s.y;
        }
        if (dw) dw[c] = (float)sdyx;
        if (db) db[c] = (float)sdy;
    }
}

// Threads for a block over `n` elements: a warp multiple in [32, max].
int block_for(int64_t n, int max) {
    int t = 32;
    while (t < max && t < n) t *= 2;
    return t;
}

}  // namespace

extern "C" int tn_cuda_group_norm_forward(float *y, float *mean, float *rstd, const float *x,
                                          const float *w, const float *b, int N, int C,
                                          int64_t S, int G, float eps) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const int64_t slabs = (int64_t)N * G;
    if (slabs == 0) return TN_OK;  // nothing to normalise (a 0-block grid is a launch error)
    if (slabs > INT32_MAX)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "group_norm_forward", "N*G too large");
    group_norm_forward_f32<<<(unsigned)slabs, block_for((int64_t)(C / G) * S, GN_THREADS), 0,
                             st>>>(y, mean, rstd, x, w, b, C, S, G, eps);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

// dx (N, C, S), dw, db (C,) or NULL: written; dy, x (N, C, S); mean, rstd
// (N, G) from the forward; w (C,) or NULL.
extern "C" int tn_cuda_group_norm_backward(float *dx, float *dw, float *db, const float *dy,
                                           const float *x, const float *mean, const float *rstd,
                                           const float *w, int N, int C, int64_t S, int G) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const int64_t planes = (int64_t)N * C;
    if (planes == 0) {  // an empty batch: dx is empty, dw and db sum nothing
        if (dw && C > 0) TN_CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(float) * (size_t)C, st));
        if (db && C > 0) TN_CUDA_CHECK(cudaMemsetAsync(db, 0, sizeof(float) * (size_t)C, st));
        return TN_OK;
    }
    if (planes > INT32_MAX)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "group_norm_backward", "N*C too large");
    TnBuffer sums, coeffs;
    TN_TRY(sums.alloc(sizeof(double2) * (size_t)planes));
    TN_TRY(coeffs.alloc(sizeof(float2) * (size_t)N * (size_t)G));
    const int threads = block_for(S, 256);
    group_norm_plane_sums_f64<<<(unsigned)planes, threads, 0, st>>>(sums.as<double2>(), dy, x,
                                                                    mean, rstd, C, S, G);
    TN_LAUNCH_CHECK();
    group_norm_coeffs_f32<<<tn_blocks((int64_t)N * G), TN_THREADS, 0, st>>>(
        coeffs.as<float2>(), sums.as<double2>(), rstd, w, N, C, S, G);
    TN_LAUNCH_CHECK();
    group_norm_backward_dx_f32<<<(unsigned)planes, threads, 0, st>>>(
        dx, dy, x, mean, rstd, w, coeffs.as<float2>(), C, S, G);
    TN_LAUNCH_CHECK();
    if (dw || db) {
        group_norm_param_grads_f32<<<tn_blocks(C), TN_THREADS, 0, st>>>(dw, db,
                                                                        sums.as<double2>(), N, C);
        TN_LAUNCH_CHECK();
    }
    return TN_OK;
}
