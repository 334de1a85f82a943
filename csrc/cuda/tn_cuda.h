// The CUDA backend's C interface: what the glue (csrc/py_cuda*.c, plain C)
// sees of csrc/cuda/*.cu. No CUDA header here, so the C compiler never needs
// the toolkit's include paths; every function is `extern "C"` on the CUDA
// side.
//
// Conventions (as the CPU kernels, docs/engine-api.md):
// - op entry points are tn_cuda_<op>, outputs first, then inputs, then
//   sizes; shapes in the comment of each definition (csrc/cuda/<family>.cu);
// - pointers are device pointers on the CURRENT device (tn_cuda_set_device),
//   all work is queued on that device's one stream (tn_cuda_stream), so
//   kernels run in the order they were issued and a buffer freed to the
//   caching allocator may be reused by the next op at once;
// - outputs are WRITTEN (the glue passes fresh buffers; nothing accumulates
//   unless a comment says +=);
// - every function returns TN_OK or a status: TN_ENOMEM (out of device
//   memory: MemoryError), TN_EINVAL (ValueError), TN_ECUDA (a CUDA, cuBLAS
//   or cuDNN call failed: RuntimeError), TN_ENODEV (no usable device:
//   RuntimeError). On failure tn_cuda_last_error() holds the message, with
//   the file and line of the failing call.
#ifndef TIMENET_CUDA_TN_CUDA_H
#define TIMENET_CUDA_TN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TN_ECUDA = 16,   // a CUDA / cuBLAS / cuDNN call failed
    TN_ENODEV = 17,  // no driver, no device, or a device index out of range
};

#define TN_CUDA_MAXDIM 8      // dims the generic strided kernels handle
#define TN_CUDA_MAX_DEVICES 64

// ---- runtime (runtime.cu) --------------------------------------------------

// Devices the driver reports; 0 (never an error) without a driver or a
// device: the first call runs cudaGetDeviceCount once and remembers why.
int tn_cuda_device_count(void);
// Why tn_cuda_device_count() is 0 ("" when it is not).
const char *tn_cuda_unavailable_reason(void);
// Message of the last failure on this thread.
const char *tn_cuda_last_error(void);
// Make `dev` current on this thread (TN_ENODEV if out of range).
int tn_cuda_set_device(int dev);
int tn_cuda_current_device(void);
// Wait for the device's stream (dev < 0: every device used so far).
int tn_cuda_synchronize(int dev);
// The current device's stream, as a cudaStream_t (for __cuda_array_interface__).
void *tn_cuda_stream_handle(void);

// Caching allocator, per device. tn_cuda_malloc rounds `nbytes` up to a
// size class (8 classes per power of two, at least 512 bytes), reuses a
// cached block of that class or cudaMallocs one; on out-of-memory it frees
// the cache and retries once, then fails with TN_ENOMEM naming the size.
// nbytes == 0 gives NULL. tn_cuda_free returns the block to its class's
// free list (no CUDA call: safe at any time, even at interpreter exit);
// `nbytes` must be what was asked of tn_cuda_malloc.
int tn_cuda_malloc(void **ptr, size_t nbytes, int dev);
void tn_cuda_free(void *ptr, size_t nbytes, int dev);
// cudaFree every cached block (dev < 0: every device).
int tn_cuda_empty_cache(int dev);

typedef struct {
    uint64_t allocated;        // bytes in blocks handed out (size classes)
    uint64_t peak_allocated;
    uint64_t requested;        // bytes asked for by the live blocks
    uint64_t cached;           // bytes in free blocks kept for reuse
    uint64_t reserved;         // allocated + cached: all cudaMalloc'd bytes
    uint64_t peak_reserved;
    uint64_t num_allocs, num_frees;            // tn_cuda_malloc / tn_cuda_free calls
    uint64_t num_device_allocs, num_device_frees;  // cudaMalloc / cudaFree calls
    uint64_t num_ooms;         // allocations that failed even after freeing the cache
} tn_cuda_memstats;
int tn_cuda_memory_stats(int dev, tn_cuda_memstats *out);
int tn_cuda_reset_peak_stats(int dev);
// cudaMemGetInfo for dev.
int tn_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes);
int tn_cuda_device_name(int dev, char *buf, size_t n, int *major, int *minor);

// TF32 tensor cores for float32 GEMMs (cuBLAS) and convolutions (cuDNN);
// off by default (exact float32 products, as the CPU engine).
void tn_cuda_set_allow_tf32(int on);
int tn_cuda_get_allow_tf32(void);
// bf16 autocast, per thread (timenet.cuda.autocast): while on, conv2d,
// linear and attention (forward and backward) compute from bfloat16 copies
// of their float32 operands with float32 accumulation; their outputs and
// gradients stay float32 arrays. Off by default.
void tn_cuda_set_autocast(int on);
int tn_cuda_get_autocast(void);
// cuDNN algorithms: 1 (default) times every algorithm once per shape
// (cudnnFind*), 0 takes cuDNN's heuristic choice (cudnnGet*_v7).
void tn_cuda_set_cudnn_benchmark(int on);
int tn_cuda_get_cudnn_benchmark(void);

// Copies on the current device's stream. h2d returns once `src` may be
// reused; d2h waits for the stream (the data is there on return).
int tn_cuda_memcpy_h2d(void *dst, const void *src, size_t n);
int tn_cuda_memcpy_d2h(void *dst, const void *src, size_t n);
int tn_cuda_memcpy_d2d(void *dst, const void *src, size_t n);
int tn_cuda_memset_zero(void *dst, size_t n);

// ---- generic array kernels (elementwise.cu), used by the autograd layer --

enum { TN_CUDA_ADD = 0, TN_CUDA_SUB = 1, TN_CUDA_MUL = 2, TN_CUDA_DIV = 3 };
// y (shape, contiguous) = a op b, where a and b are read at element strides
// a_strides / b_strides (0 on broadcast dims).
int tn_cuda_binary(float *y, const float *a, const float *b, int op, int ndim,
                   const int64_t *shape, const int64_t *a_strides, const int64_t *b_strides);
enum { TN_CUDA_SCALAR_ADD = 0, TN_CUDA_SCALAR_MUL = 1, TN_CUDA_SCALAR_RDIV = 2,
       TN_CUDA_SCALAR_RSUB = 3 };
// y, x are (n,): y = x + s, x * s, s / x, or s - x.
int tn_cuda_scalar(float *y, const float *x, int op, float s, int64_t n);
// y (n,) = value
int tn_cuda_fill(float *y, float value, int64_t n);
// y (shape, contiguous) = x[offset + sum_i idx_i * strides_i] (element
// strides, any sign, 0 to broadcast): permute, basic slicing, broadcast_to.
int tn_cuda_strided_copy(float *y, const float *x, int ndim, const int64_t *shape,
                         const int64_t *strides, int64_t offset);
// y[offset + sum_i idx_i * strides_i] += x[i] for x (shape, contiguous); the
// strided positions must be distinct (a basic-indexing view): the backward
// of a slice.
int tn_cuda_strided_add(float *y, const float *x, int ndim, const int64_t *shape,
                        const int64_t *strides, int64_t offset);
// y (the kept dims of shape, contiguous) = sum over the dims with
// reduce[i] != 0 of x (shape, contiguous), times x2 (same shape) when x2 is
// not NULL. Accumulated in double, in a fixed order (deterministic).
int tn_cuda_sum(float *y, const float *x, const float *x2, int ndim, const int64_t *shape,
                const int *reduce);

// ---- engine ops: the CPU engine's ops (docs/engine-api.md), same argument
// order ----------------------------------------------------------------------

// act.cu
int tn_cuda_silu_forward(float *y, const float *x, int64_t n);
int tn_cuda_silu_backward(float *dx, const float *dy, const float *x, int64_t n);
int tn_cuda_sigmoid_forward(float *y, const float *x, int64_t n);
int tn_cuda_sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n);
int tn_cuda_relu_forward(float *y, const float *x, int64_t n);
int tn_cuda_relu_backward(float *dx, const float *dy, const float *x, int64_t n);

// elementwise.cu: b broadcast against a (same ndim, each dim equal or 1)
int tn_cuda_add_forward(float *y, const float *a, const float *b, int ndim,
                        const int64_t *a_shape, const int64_t *b_shape);
int tn_cuda_mul_forward(float *y, const float *a, const float *b, int ndim,
                        const int64_t *a_shape, const int64_t *b_shape);
int tn_cuda_add_backward(float *da, float *db, const float *dy, int ndim,
                         const int64_t *a_shape, const int64_t *b_shape);
int tn_cuda_mul_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                         int ndim, const int64_t *a_shape, const int64_t *b_shape);
// concat along dim 1 (per sample the inputs' blocks of sizes[i] floats end to end)
int tn_cuda_concat_forward(float *y, const float *const *xs, const int64_t *sizes,
                           int n_inputs, int N, int64_t total);
int tn_cuda_concat_backward(float *const *dxs, const float *dy, const int64_t *sizes,
                            int n_inputs, int N, int64_t total);

// loss.cu: loss is ONE float in device memory (no host round trip)
int tn_cuda_mse_forward(float *loss, const float *x, const float *y, int64_t n);
// dx = g * 2 (x - y) / n, g read from device memory when g_dev is not NULL.
int tn_cuda_mse_backward(float *dx, const float *x, const float *y, const float *g_dev,
                         double g, int64_t n);

// linear.cu (cuBLAS)
int tn_cuda_linear_forward(float *y, const float *x, const float *w, const float *b, int N,
                           int in_dim, int out_dim);
int tn_cuda_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int N, int in_dim, int out_dim);

// conv2d.cu (cuDNN)
int tn_cuda_conv2d_forward(float *y, const float *x, const float *w, const float *b, int N,
                           int C, int H, int W, int K, int R, int S, int stride, int pad);
// dx (may be NULL: not needed), dw, db (may be NULL)
int tn_cuda_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int N, int C, int H, int W, int K, int R, int S,
                            int stride, int pad);

// norm.cu
int tn_cuda_group_norm_forward(float *y, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int N, int C, int64_t S, int G,
                               float eps);
int tn_cuda_group_norm_backward(float *dx, float *dw, float *db, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *w, int N, int C, int64_t S, int G);

// pool.cu
int tn_cuda_upsample_nearest_forward(float *y, const float *x, int N, int C, int H, int W,
                                     int s);
int tn_cuda_upsample_nearest_backward(float *dx, const float *dy, int N, int C, int H, int W,
                                      int s);
int tn_cuda_avg_pool2d_forward(float *y, const float *x, int N, int C, int H, int W, int k,
                               int stride, int pad);
int tn_cuda_avg_pool2d_backward(float *dx, const float *dy, int N, int C, int H, int W, int k,
                                int stride, int pad);
int tn_cuda_adaptive_avg_pool2d_forward(float *y, const float *x, int N, int C, int H, int W,
                                        int OH, int OW);
int tn_cuda_adaptive_avg_pool2d_backward(float *dx, const float *dy, int N, int C, int H,
                                         int W, int OH, int OW);
int tn_cuda_max_pool2d_forward(float *y, int32_t *argmax, const float *x, int N, int C, int H,
                               int W, int k, int stride, int pad);
// argmax entries outside [0, H*W) are ignored (never read or written out of
// bounds): device indices cannot be range-checked without a host round trip.
int tn_cuda_max_pool2d_backward(float *dx, const float *dy, const int32_t *argmax, int N,
                                int C, int H, int W, int P, int Q);

// embed.cu: ids are device int64; an id outside [0, V) gives a zero row
// forward and is skipped backward (the glue range-checks host ids first).
int tn_cuda_embedding_forward(float *y, const float *table, const int64_t *ids, int N, int V,
                              int D);
int tn_cuda_embedding_backward(float *dtable, const float *dy, const int64_t *ids, int N,
                               int V, int D);
int tn_cuda_timestep_embedding_forward(float *y, const float *t, int N, int dim,
                                       double max_period);

// attention.cu (cuBLAS batched GEMMs + a softmax kernel)
int tn_cuda_attention_forward(float *out, float *probs, const float *q, const float *k,
                              const float *v, int N, int L, int C, int num_heads);
int tn_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                               const float *q, const float *k, const float *v,
                               const float *probs, int N, int L, int C, int num_heads);

// optim.cu
int tn_cuda_adamw_step(float *p, float *m, float *v, const float *g, int64_t n, double lr,
                       double beta1, double beta2, double eps, double weight_decay,
                       long long step);
// *norm (host) = sqrt(sum_i sum_j xs[i][j]^2), summed in double; waits for the stream.
int tn_cuda_grad_norm(double *norm, const float *const *xs, const int64_t *ns, int count);
int tn_cuda_scale_inplace(float *const *xs, const int64_t *ns, int count, float factor);

// ---- ODE steps (ode.cu) and anomaly scoring (score.cu): the contracts of
// csrc/ode/ode.h and csrc/score/score.h, with the same argument order ------

// ode.cu: y, y_new and the K stages ks[j] (a host array of device pointers)
// are (B, D) device arrays; coeffs (K,) and h (B,) are HOST arrays (step
// control runs on the host), copied over. y_new may be y (in place).
int tn_cuda_ode_combine(float *y_new, const float *y, const float *const *ks,
                        const double *coeffs, int K, const double *h, int B, int64_t D);
// norm (B,) is HOST memory: the one copy back waits for the stream.
int tn_cuda_ode_error_norm(double *norm, const float *const *ks, const double *coeffs, int K,
                           const double *h, const float *y, const float *y_new, double rtol,
                           double atol, int B, int64_t D);

// score.cu: each returns TN_ENAN, as the CPU kernels do, when an input
// holds NaN or inf: a flag set on the device and read back with one small
// copy, so each of these waits for the stream once. TN_ENAN (and
// tn_cuda_combine_maps' TN_EINVAL, w * ratio beyond float range) come with
// no message: the glue raises the CPU op's exception for them.
int tn_cuda_l2_distance(float *out, const float *a, const float *b, int64_t N, int64_t C,
                        int64_t L, int squared);
int tn_cuda_cosine_distance(float *out, const float *a, const float *b, int64_t N, int64_t C,
                            int64_t L, double eps);
int tn_cuda_upsample_bilinear(float *out, const float *x, int64_t N, int64_t h, int64_t w,
                              int64_t H, int64_t W, int align_corners);
int tn_cuda_gaussian_filter(float *out, const float *x, int64_t N, int64_t H, int64_t W,
                            double sigma, double truncate, int mode);
int tn_cuda_box_pool(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                     int rounds);
int tn_cuda_image_score(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                        int rounds);
// *ratio_used is host memory.
int tn_cuda_combine_maps(float *out, double *ratio_used, const float *d1, const float *d2,
                         int64_t n, double w, double ratio, int compute_ratio);

// ---- metrics (metrics.cu): the sort and the cumulative counts of
// csrc/metrics on the device, the same results (metrics.h) ------------------
//
// Scores are device float32; labels, region ids and sizes are HOST arrays
// (the glue has range-checked them; they are copied over); every result
// comes back to the host. Use: *_sort once, then any of its sweeps, then
// *_sorted_free (also safe after a failed sort).

// Scores sorted into their m distinct values, descending: key[g] is the
// g-th distinct score's sort key (csrc/metrics/sort.h), cum[g] the counts
// of scores >= it (layout in metrics.cu). Device memory on `dev`.
typedef struct {
    uint32_t *key;          // (m,) device
    void *cum;              // (m,) device
    int64_t m, npos, nneg;  // distinct scores, positives, negatives
    int64_t cap;            // entries allocated
    int dev;
} tn_cuda_roc_sorted;

int tn_cuda_roc_sort(tn_cuda_roc_sorted *s, const float *scores, const uint8_t *labels,
                     int64_t n);
void tn_cuda_roc_sorted_free(tn_cuda_roc_sorted *s);
// roc_curve / auroc / f1_max of metrics.h, outputs on the host. Curves run
// twice: outputs all NULL, *m = the number of points; then outputs of that
// size, *m = it (checked). Need npos > 0 (and nneg > 0 but for F1).
int tn_cuda_roc_curve(double *fpr, double *tpr, double *thr, int64_t *m,
                      const tn_cuda_roc_sorted *s, int drop_intermediate);
int tn_cuda_auroc(double *area, const tn_cuda_roc_sorted *s);
int tn_cuda_f1_max(double *f1, double *thr, const tn_cuda_roc_sorted *s);

// All pixels sorted into their m distinct scores: cum[g] holds the normal
// pixels >= key[g] and the PRO sum (metrics.cu).
typedef struct {
    uint32_t *key;  // (m,) device
    void *cum;      // (m,) device
    int64_t m, nnorm, nregions, cap;
    int dev;
} tn_cuda_pro_sorted;

int tn_cuda_pro_sort(tn_cuda_pro_sorted *s, const float *maps, const int32_t *region,
                     const uint32_t *size, int64_t nregions, int64_t n);
void tn_cuda_pro_sorted_free(tn_cuda_pro_sorted *s);
// pro_curve / aupro of metrics.h (the whole curve is sorted, so any
// max_fpr / fpr_limit in (0, 1]). Need nnorm, nregions > 0.
int tn_cuda_pro_curve(double *fpr, double *pro, double *thr, int64_t *m,
                      const tn_cuda_pro_sorted *s, double max_fpr);
int tn_cuda_aupro(double *area, const tn_cuda_pro_sorted *s, double fpr_limit);

#ifdef __cplusplus
}
#endif

#endif
