// Anomaly scoring on the device (csrc/score/*.c's contracts and numerics):
// per-position feature distances, bilinear upsampling, the separable
// Gaussian filter, DiAD's repeated box pooling and the image max, DDAD's
// combination F. The index math, the Gaussian's taps and F's coefficient are
// the CPU kernels' own code (score_index.h, score_gauss_weights,
// score_combine_coeff), and every sum is float64 in the CPU's order (the
// distances' channel sum in 8 interleaved parts), so results agree with the
// CPU's to float32 rounding.
//
// NaN / inf in any input is TN_ENAN, as on the CPU: a scan of each input
// sets a device flag (no atomics: every writer stores 1) that one small copy
// brings back at the end, after the op's kernels are queued; so each op
// waits for the stream once, and a rejected op's output is simply dropped
// (no index depends on the data, so NaNs cannot send a kernel out of bounds).
#include "common.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "score/score.h"
}

namespace {

#define SC_RED_BLOCKS 1024  // partial results per reduction (at most)
#define SC_MAX_BLOCKS 65536 // grid of the block-per-item loops

unsigned sc_grid(int64_t items) {
    return (unsigned)(items < 1 ? 1 : items < SC_MAX_BLOCKS ? items : SC_MAX_BLOCKS);
}

struct ScMax {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// ---------------------------------------------------------------------------
// finiteness

// *flag = 1 when x (n,) holds a NaN or inf.
__global__ void score_flag_nonfinite_f32(int *__restrict__ flag, const float *__restrict__ x,
                                         int64_t n) {
    int bad = 0;
    TN_GRID_LOOP(i, n) bad |= !isfinite(x[i]);
    if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

// An op's input check: begin() zeroes the flag (and gives the stream), check() queues a scan of one
// input, result() brings the flag back (waits for the stream): TN_ENAN or
// TN_OK. `extra` floats stored after the flag come back with it
// (combine_maps' maxima).
struct ScoreCheck {
    TnBuffer buf;
    cudaStream_t st = nullptr;
    int extra = 0;
    // *s: the current device's stream, where the op queues its kernels.
    int begin(cudaStream_t *s, int n_extra = 0) {
        TN_TRY(tn_cuda_stream(&st));
        *s = st;
        extra = n_extra;
        TN_TRY(buf.alloc(sizeof(int) + sizeof(float) * (size_t)extra));
        TN_CUDA_CHECK(cudaMemsetAsync(buf.ptr, 0, sizeof(int), st));
        return TN_OK;
    }
    int *flag() const { return buf.as<int>(); }
    float *extras() const { return (float *)(buf.as<char>() + sizeof(int)); }
    int check(const float *x, int64_t n) {
        score_flag_nonfinite_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(flag(), x, n);
        TN_LAUNCH_CHECK();
        return TN_OK;
    }
    int result(float *extra_host = nullptr) {
        char host[sizeof(int) + sizeof(float) * 4];
        const size_t nb = sizeof(int) + sizeof(float) * (size_t)extra;
        if (nb > sizeof host)
            return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "ScoreCheck", "too many extras");
        TN_CUDA_CHECK(cudaMemcpyAsync(host, buf.ptr, nb, cudaMemcpyDeviceToHost, st));
        TN_CUDA_CHECK(cudaStreamSynchronize(st));
        int bad;
        memcpy(&bad, host, sizeof bad);
        if (extra_host) memcpy(extra_host, host + sizeof(int), sizeof(float) * (size_t)extra);
        return bad ? TN_ENAN : TN_OK;
    }
};

// ---------------------------------------------------------------------------
// distances

#define SC_DIST_POS 32    // positions per block (threadIdx.x): coalesced rows
#define SC_DIST_SLICES 8  // channel slices per block (threadIdx.y)

// out (N, L) from a, b (N, C, L). A block takes 32 consecutive positions of
// one sample at a time; thread (x, y) sums the channels c = y, y + 8, ... at
// its position, and row y = 0 adds the 8 partials in order (deterministic).
// Euclidean (or its square), or with COSINE 1 - a.b / (max(|a|, eps)
// max(|b|, eps)) clamped as the CPU.
template <bool COSINE>
__global__ void __launch_bounds__(SC_DIST_POS * SC_DIST_SLICES)
score_distance_f32(float *__restrict__ out, const float *__restrict__ a,
                   const float *__restrict__ b, int64_t N, int64_t C, int64_t L, int squared,
                   double eps) {
    __shared__ double part[3][SC_DIST_SLICES][SC_DIST_POS];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t tiles = (L + SC_DIST_POS - 1) / SC_DIST_POS;
    for (int64_t t = blockIdx.x; t < N * tiles; t += gridDim.x) {
        const int64_t n = t / tiles, l = (t % tiles) * SC_DIST_POS + tx;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0;
        if (l < L)
            for (int64_t c = ty; c < C; c += SC_DIST_SLICES) {
                const int64_t o = (n * C + c) * L + l;
                const double u = a[o], v = b[o];
                if (COSINE) {
                    s0 += u * v;
                    s1 += u * u;
                    s2 += v * v;
                } else {
                    const double d = u - v;
                    s0 += d * d;
                }
            }
        part[0][ty][tx] = s0;
        part[1][ty][tx] = s1;
        part[2][ty][tx] = s2;
        __syncthreads();
        if (ty == 0 && l < L) {
            double ab = 0.0, aa = 0.0, bb = 0.0;
            for (int y = 0; y < SC_DIST_SLICES; y++) {
                ab += part[0][y][tx];
                aa += part[1][y][tx];
                bb += part[2][y][tx];
            }
            float r;
            if (COSINE) {
                const double na = fmax(sqrt(aa), eps), nb = fmax(sqrt(bb), eps);
                double cs = ab / (na * nb);
                cs = cs > 1.0 ? 1.0 : (cs < -1.0 ? -1.0 : cs);
                r = (float)(1.0 - cs);
            } else {
                r = (float)(squared ? ab : sqrt(ab));
            }
            out[n * L + l] = r;
        }
        __syncthreads();  // part is rewritten for the next tile
    }
}

template <bool COSINE>
int score_distance_f32_cuda(float *out, const float *a, const float *b, int64_t N, int64_t C,
                            int64_t L, int squared, double eps) {
    cudaStream_t st;
    ScoreCheck chk;
    TN_TRY(chk.begin(&st));
    TN_TRY(chk.check(a, N * C * L));
    TN_TRY(chk.check(b, N * C * L));
    const int64_t tiles = N * ((L + SC_DIST_POS - 1) / SC_DIST_POS);
    score_distance_f32<COSINE><<<sc_grid(tiles), dim3(SC_DIST_POS, SC_DIST_SLICES), 0, st>>>(
        out, a, b, N, C, L, squared, eps);
    TN_LAUNCH_CHECK();
    return chk.result();
}

// ---------------------------------------------------------------------------
// bilinear upsampling

// out (N, H, W) from x (N, h, w), a thread per output (score_src_index: the
// CPU's source indices and weights).
__global__ void score_upsample_bilinear_f32(float *__restrict__ out, const float *__restrict__ x,
                                            int64_t N, int64_t h, int64_t w, int64_t H,
                                            int64_t W, int align_corners) {
    TN_GRID_LOOP(i, N * H * W) {
        const int64_t X = i % W, t = i / W, Y = t % H, n = t / H;
        int64_t y0, y1, x0, x1;
        double ly, lx;
        score_src_index(Y, h, H, align_corners, &y0, &y1, &ly);
        score_src_index(X, w, W, align_corners, &x0, &x1, &lx);
        const float *r0 = x + (n * h + y0) * w, *r1 = x + (n * h + y1) * w;
        const double top = (1 - lx) * r0[x0] + lx * r0[x1], bot = (1 - lx) * r1[x0] + lx * r1[x1];
        out[i] = (float)((1 - ly) * top + ly * bot);
    }
}

// ---------------------------------------------------------------------------
// Gaussian filter: a pass along W into a float32 intermediate (as the CPU
// and scipy for float32 maps), then one along H; a thread per output.

// tmp (rows, W) from x (rows, W): sum_k wt[k] x[row, fold(X + k - r)] in double
__global__ void score_gauss_w_f32(float *__restrict__ tmp, const float *__restrict__ x,
                                  const double *__restrict__ wt, int64_t rows, int64_t W,
                                  int64_t r, int mode) {
    TN_GRID_LOOP(i, rows * W) {
        const int64_t X = i % W;
        const float *__restrict__ px = x + (i - X);
        double s = 0.0;
        for (int64_t k = 0; k <= 2 * r; k++) s += wt[k] * px[score_fold(X + k - r, W, mode)];
        tmp[i] = (float)s;
    }
}

// out (N, H, W) from tmp (N, H, W): sum_k wt[k] tmp[n, fold(Y + k - r), X] in double
__global__ void score_gauss_h_f32(float *__restrict__ out, const float *__restrict__ tmp,
                                  const double *__restrict__ wt, int64_t N, int64_t H, int64_t W,
                                  int64_t r, int mode) {
    TN_GRID_LOOP(i, N * H * W) {
        const int64_t X = i % W, t = i / W, Y = t % H, n = t / H;
        const float *__restrict__ pt = tmp + n * H * W + X;
        double s = 0.0;
        for (int64_t k = 0; k <= 2 * r; k++) s += wt[k] * pt[score_fold(Y + k - r, H, mode) * W];
        out[i] = (float)s;
    }
}

// ---------------------------------------------------------------------------
// box pooling: a round is k sums along W into double row sums, then k of
// those along H, times 1 / k^2 (the CPU's separable order).

// rs (rows, Q) from src (rows, W), Q = W - k + 1: sums of k consecutive values
__global__ void score_box_rows_f64(double *__restrict__ rs, const float *__restrict__ src,
                                   int64_t rows, int64_t W, int64_t Q, int k) {
    TN_GRID_LOOP(i, rows * Q) {
        const int64_t q = i % Q, row = i / Q;
        const float *__restrict__ ps = src + row * W + q;
        double s = 0.0;
        for (int j = 0; j < k; j++) s += ps[j];
        rs[i] = s;
    }
}

// dst (N, P, Q) from rs (N, Hs, Q), P = Hs - k + 1: means of k x k windows
__global__ void score_box_cols_f32(float *__restrict__ dst, const double *__restrict__ rs,
                                   int64_t N, int64_t Hs, int64_t P, int64_t Q, int k,
                                   double inv) {
    TN_GRID_LOOP(i, N * P * Q) {
        const int64_t q = i % Q, t = i / Q, p = t % P, n = t / P;
        const double *__restrict__ pr = rs + (n * Hs + p) * Q + q;
        double s = 0.0;
        for (int j = 0; j < k; j++) s += pr[j * Q];
        dst[i] = (float)(s * inv);
    }
}

// out (N,) = the max of each of the N maps of m values in x; a block per map
__global__ void score_map_max_f32(float *__restrict__ out, const float *__restrict__ x,
                                  int64_t N, int64_t m) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *__restrict__ xn = x + n * m;
        float v = -INFINITY;
        for (int64_t j = threadIdx.x; j < m; j += blockDim.x) v = fmaxf(v, xn[j]);
        v = tn_block_reduce(v, ScMax(), -INFINITY);
        if (threadIdx.x == 0) out[n] = v;
    }
}

// x (N, H, W) -> out (N, P, Q), P = H - rounds*(k-1), Q likewise; with
// image_max, out (N,): the max of each pooled map.
int score_pool_f32_cuda(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                        int rounds, bool image_max) {
    const int64_t shrink = (int64_t)rounds * (k - 1), P = H - shrink, Q = W - shrink;
    if (k < 1 || rounds < 0 || P <= 0 || Q <= 0)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "box_pool",
                            "needs kernel >= 1, rounds >= 0, H, W > rounds*(kernel-1)");
    cudaStream_t st;
    ScoreCheck chk;
    TN_TRY(chk.begin(&st));
    TN_TRY(chk.check(x, N * H * W));
    if (rounds == 0 || k == 1) {  // nothing to pool
        if (image_max) {
            score_map_max_f32<<<sc_grid(N), TN_THREADS, 0, st>>>(out, x, N, H * W);
            TN_LAUNCH_CHECK();
        } else {
            TN_CUDA_CHECK(cudaMemcpyAsync(out, x, sizeof(float) * (size_t)(N * H * W),
                                          cudaMemcpyDeviceToDevice, st));
        }
        return chk.result();
    }
    // Rounds alternate between a and b, the last writes out (or, for the
    // image max, `last`); rs holds one round's row sums (the first is largest).
    const int64_t first = N * (H - k + 1) * (W - k + 1);
    TnBuffer a, b, last, rs;
    if (rounds > 1) TN_TRY(a.alloc(sizeof(float) * (size_t)first));
    if (rounds > 2) TN_TRY(b.alloc(sizeof(float) * (size_t)first));
    if (image_max) TN_TRY(last.alloc(sizeof(float) * (size_t)(N * P * Q)));
    TN_TRY(rs.alloc(sizeof(double) * (size_t)(N * H * (W - k + 1))));
    const double inv = 1.0 / ((double)k * (double)k);
    const float *src = x;
    int64_t h = H, w = W;
    for (int r = 0; r < rounds; r++) {
        const int64_t ph = h - k + 1, qw = w - k + 1;
        float *dst = r == rounds - 1 ? (image_max ? last.as<float>() : out)
                                     : (r % 2 ? b.as<float>() : a.as<float>());
        score_box_rows_f64<<<tn_blocks(N * h * qw), TN_THREADS, 0, st>>>(rs.as<double>(), src,
                                                                       N * h, w, qw, k);
        TN_LAUNCH_CHECK();
        score_box_cols_f32<<<tn_blocks(N * ph * qw), TN_THREADS, 0, st>>>(
            dst, rs.as<double>(), N, h, ph, qw, k, inv);
        TN_LAUNCH_CHECK();
        src = dst;
        h = ph;
        w = qw;
    }
    if (image_max) {
        score_map_max_f32<<<sc_grid(N), TN_THREADS, 0, st>>>(out, last.as<float>(), N, P * Q);
        TN_LAUNCH_CHECK();
    }
    return chk.result();
}

// ---------------------------------------------------------------------------
// the combination F

// part[blockIdx.x] = the max of this block's share of x (n,); *flag = 1 on
// NaN / inf (the max is taken over the finite values).
__global__ void score_max_partial_f32(float *__restrict__ part, int *__restrict__ flag,
                                      const float *__restrict__ x, int64_t n) {
    float m = -INFINITY;
    int bad = 0;
    TN_GRID_LOOP(i, n) {
        const float v = x[i];
        bad |= !isfinite(v);
        m = fmaxf(m, v);
    }
    m = tn_block_reduce(m, ScMax(), -INFINITY);
    if (threadIdx.x == 0) part[blockIdx.x] = m;
    if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

// m[i] = the max of part[i * stride, i * stride + count): block i, input i
__global__ void score_max_finish_f32(float *__restrict__ m, const float *__restrict__ part,
                                     int count, int stride) {
    const float *__restrict__ p = part + (int64_t)blockIdx.x * stride;
    float v = -INFINITY;
    for (int j = threadIdx.x; j < count; j += blockDim.x) v = fmaxf(v, p[j]);
    v = tn_block_reduce(v, ScMax(), -INFINITY);
    if (threadIdx.x == 0) m[blockIdx.x] = v;
}

// out, d1, d2 (n,): out = c * d1 + d2 (out may be d1 or d2)
__global__ void score_axpy_f32(float *out, const float *d1, const float *d2, float c,
                               int64_t n) {
    TN_GRID_LOOP(i, n) out[i] = c * d1[i] + d2[i];
}

}  // namespace

// out (N, L); a, b (N, C, L).
extern "C" int tn_cuda_l2_distance(float *out, const float *a, const float *b, int64_t N,
                                   int64_t C, int64_t L, int squared) {
    return score_distance_f32_cuda<false>(out, a, b, N, C, L, squared, 0.0);
}

extern "C" int tn_cuda_cosine_distance(float *out, const float *a, const float *b, int64_t N,
                                       int64_t C, int64_t L, double eps) {
    return score_distance_f32_cuda<true>(out, a, b, N, C, L, 0, eps);
}

// out (N, H, W); x (N, h, w).
extern "C" int tn_cuda_upsample_bilinear(float *out, const float *x, int64_t N, int64_t h,
                                         int64_t w, int64_t H, int64_t W, int align_corners) {
    cudaStream_t st;
    ScoreCheck chk;
    TN_TRY(chk.begin(&st));
    TN_TRY(chk.check(x, N * h * w));
    score_upsample_bilinear_f32<<<tn_blocks(N * H * W), TN_THREADS, 0, st>>>(out, x, N, h, w, H,
                                                                            W, align_corners);
    TN_LAUNCH_CHECK();
    return chk.result();
}

// out, x (N, H, W); the taps are made on the host by the CPU's code.
extern "C" int tn_cuda_gaussian_filter(float *out, const float *x, int64_t N, int64_t H,
                                       int64_t W, double sigma, double truncate, int mode) {
    cudaStream_t st;
    ScoreCheck chk;
    TN_TRY(chk.begin(&st));
    TN_TRY(chk.check(x, N * H * W));
    const int64_t n = N * H * W, r = score_gauss_radius(sigma, truncate);
    if (r < 0) {  // sigma ~ 0: a copy, as scipy
        TN_CUDA_CHECK(cudaMemcpyAsync(out, x, sizeof(float) * (size_t)n, cudaMemcpyDeviceToDevice,
                                      st));
        return chk.result();
    }
    const size_t K = (size_t)(2 * r + 1);
    double *wt = (double *)malloc(K * sizeof *wt);
    if (!wt) return tn_cuda_fail(TN_ENOMEM, __FILE__, __LINE__, "malloc", "host out of memory");
    score_gauss_weights(wt, sigma, r);
    TnBuffer wd, tmp;
    int status = wd.alloc(K * sizeof *wt);
    // From pageable memory the copy returns once wt has been staged.
    if (status == TN_OK) {
        cudaError_t e = cudaMemcpyAsync(wd.ptr, wt, K * sizeof *wt, cudaMemcpyHostToDevice, st);
        if (e != cudaSuccess)
            status = tn_cuda_fail_cuda(e, __FILE__, __LINE__, "cudaMemcpyAsync(taps)");
    }
    free(wt);
    TN_TRY(status);
    TN_TRY(tmp.alloc(sizeof(float) * (size_t)n));
    score_gauss_w_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(tmp.as<float>(), x, wd.as<double>(),
                                                          N * H, W, r, mode);
    TN_LAUNCH_CHECK();
    score_gauss_h_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(out, tmp.as<float>(), wd.as<double>(),
                                                          N, H, W, r, mode);
    TN_LAUNCH_CHECK();
    return chk.result();
}

// x (N, H, W); out (N, H - rounds*(k-1), W - rounds*(k-1)).
extern "C" int tn_cuda_box_pool(float *out, const float *x, int64_t N, int64_t H, int64_t W,
                                int k, int rounds) {
    return score_pool_f32_cuda(out, x, N, H, W, k, rounds, false);
}

// x (N, H, W); out (N,).
extern "C" int tn_cuda_image_score(float *out, const float *x, int64_t N, int64_t H, int64_t W,
                                   int k, int rounds) {
    return score_pool_f32_cuda(out, x, N, H, W, k, rounds, true);
}

// out, d1, d2 (n,); *ratio_used host. The maxima (and the finiteness flag)
// come back in one copy; the coefficient is then the CPU's
// score_combine_coeff on the host.
extern "C" int tn_cuda_combine_maps(float *out, double *ratio_used, const float *d1,
                                    const float *d2, int64_t n, double w, double ratio,
                                    int compute_ratio) {
    cudaStream_t st;
    ScoreCheck chk;
    TN_TRY(chk.begin(&st, 2));
    const unsigned nb = tn_blocks(n), blocks = nb < SC_RED_BLOCKS ? nb : SC_RED_BLOCKS;
    TnBuffer part;
    TN_TRY(part.alloc(sizeof(float) * 2 * SC_RED_BLOCKS));
    const float *src[2] = {d1, d2};
    for (int i = 0; i < 2; i++) {
        score_max_partial_f32<<<blocks, TN_THREADS, 0, st>>>(
            part.as<float>() + i * SC_RED_BLOCKS, chk.flag(), src[i], n);
        TN_LAUNCH_CHECK();
    }
    score_max_finish_f32<<<2, TN_THREADS, 0, st>>>(chk.extras(), part.as<float>(), (int)blocks,
                                                   SC_RED_BLOCKS);
    TN_LAUNCH_CHECK();
    float m[2];
    TN_TRY(chk.result(m));
    float c;
    TN_TRY(score_combine_coeff(&c, &ratio, m[0], m[1], w, compute_ratio));
    score_axpy_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(out, d1, d2, c, n);
    TN_LAUNCH_CHECK();
    *ratio_used = ratio;
    return TN_OK;
}
