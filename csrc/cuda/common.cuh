// Shared by the .cu files (C++, never seen by the glue): status checks with
// file and line, the current device's stream and library handles, launch
// sizes, a scoped device buffer from the caching allocator, the bfloat16
// operands of autocast, and the row-major GEMM every op family calls.
//
// The build compiles several csrc/cuda/*.cu files as one translation unit
// (setup.py's unity units), so names local to a file (anonymous namespace,
// static, macros) must not clash with another file's: prefix them with the
// family when in doubt.
#ifndef TIMENET_CUDA_COMMON_CUH
#define TIMENET_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdint.h>

#include "tn_cuda.h"

// Record "<file>:<line>: <expr> failed: <what>" as this thread's last error
// and return `status` (runtime.cu).
int tn_cuda_fail(int status, const char *file, int line, const char *expr, const char *what);
int tn_cuda_fail_cuda(cudaError_t e, const char *file, int line, const char *expr);
int tn_cuda_fail_cublas(cublasStatus_t s, const char *file, int line, const char *expr);
int tn_cuda_fail_cudnn(cudnnStatus_t s, const char *file, int line, const char *expr);

// Every CUDA, cuBLAS and cuDNN status goes through one of these: on failure
// the enclosing function returns the TN_* status (scoped buffers free
// themselves on the way out).
#define TN_CUDA_CHECK(call)                                                   \
    do {                                                                      \
        cudaError_t tn_e_ = (call);                                           \
        if (tn_e_ != cudaSuccess)                                             \
            return tn_cuda_fail_cuda(tn_e_, __FILE__, __LINE__, #call);       \
    } while (0)
#define TN_CUBLAS_CHECK(call)                                                 \
    do {                                                                      \
        cublasStatus_t tn_s_ = (call);                                        \
        if (tn_s_ != CUBLAS_STATUS_SUCCESS)                                   \
            return tn_cuda_fail_cublas(tn_s_, __FILE__, __LINE__, #call);     \
    } while (0)
#define TN_CUDNN_CHECK(call)                                                  \
    do {                                                                      \
        cudnnStatus_t tn_s_ = (call);                                         \
        if (tn_s_ != CUDNN_STATUS_SUCCESS)                                    \
            return tn_cuda_fail_cudnn(tn_s_, __FILE__, __LINE__, #call);      \
    } while (0)
// After a <<<...>>> launch: launch errors are reported here, faults inside
// the kernel at the next synchronising call (CUDA_LAUNCH_BLOCKING=1 makes
// them point at the kernel).
#define TN_LAUNCH_CHECK() TN_CUDA_CHECK(cudaGetLastError())
// Propagate a TN_* status from a helper.
#define TN_TRY(call)                  \
    do {                              \
        int tn_st_ = (call);          \
        if (tn_st_ != TN_OK) return tn_st_; \
    } while (0)

// The current device's stream / handles (runtime.cu); created on first use.
int tn_cuda_stream(cudaStream_t *out);
int tn_cuda_cublas(cublasHandle_t *out);   // its stream is the device's stream
int tn_cuda_cudnn(cudnnHandle_t *out);     // likewise

#define TN_THREADS 256

// Blocks for a grid-stride loop over n items (capped: the loop covers the rest).
static inline unsigned tn_blocks(int64_t n, int threads = TN_THREADS) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65536) b = 65536;
    return (unsigned)b;
}

#define TN_GRID_LOOP(i, n)                                                        \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
         i += (int64_t)blockDim.x * gridDim.x)

// A device buffer from the caching allocator, freed (back to the cache) when
// it goes out of scope: workspace for cuDNN, scratch for reductions.
struct TnBuffer {
    void *ptr = nullptr;
    size_t nbytes = 0;
    int dev = 0;
    TnBuffer() = default;
    TnBuffer(const TnBuffer &) = delete;
    TnBuffer &operator=(const TnBuffer &) = delete;
    int alloc(size_t n) {
        release();
        dev = tn_cuda_current_device();
        int st = tn_cuda_malloc(&ptr, n, dev);
        if (st == TN_OK) nbytes = n;
        return st;
    }
    void release() {
        if (ptr) tn_cuda_free(ptr, nbytes, dev);
        ptr = nullptr;
        nbytes = 0;
    }
    ~TnBuffer() { release(); }
    template <typename T> T *as() const { return (T *)ptr; }
};

// bfloat16 copies for autocast (bf16.cu): y (n,) = x (n,) rounded to the
// nearest bfloat16 (ties to even), and back to float32 (exact).
int tn_cuda_f32_to_bf16(__nv_bfloat16 *y, const float *x, int64_t n);
int tn_cuda_bf16_to_f32(float *y, const __nv_bfloat16 *x, int64_t n);

// A GEMM or convolution operand under autocast: x itself (bf16 false), or
// a bfloat16 copy of its n elements in buf. *out is what the library reads.
static inline int tn_operand(const void **out, TnBuffer &buf, const float *x, int64_t n,
                             bool bf16) {
    *out = x;
    if (!bf16) return TN_OK;
    TN_TRY(buf.alloc(sizeof(__nv_bfloat16) * (size_t)n));
    TN_TRY(tn_cuda_f32_to_bf16(buf.as<__nv_bfloat16>(), x, n));
    *out = buf.ptr;
    return TN_OK;
}

// Element i of a float32 (bf16 false) or bfloat16 operand.
static inline const void *tn_elem(const void *p, long long i, bool bf16) {
    return (const char *)p + i * (bf16 ? 2 : 4);
}

// Row-major GEMM, batched with element strides (stride 0 and batch 1 for a
// single product): C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C,
// lda/ldb/ldc the row strides. cuBLAS is column-major, so this computes
// C^T = op(B)^T op(A)^T. A and B are float32 (TF32 tensor cores when
// tn_cuda_get_allow_tf32()) or, bf16 true, bfloat16 (autocast: bf16 tensor
// cores, float32 accumulation); C is float32 either way.
static inline int tn_gemm_rm_ab(bool bf16, bool trans_a, bool trans_b, int M, int N, int K,
                                float alpha, const void *A, int lda, long long stride_a,
                                const void *B, int ldb, long long stride_b, float beta, float *C,
                                int ldc, long long stride_c, int batch) {
    cublasHandle_t h;
    TN_TRY(tn_cuda_cublas(&h));
    const cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t ct = !bf16 && tn_cuda_get_allow_tf32()
                                       ? CUBLAS_COMPUTE_32F_FAST_TF32
                                       : CUBLAS_COMPUTE_32F;
    TN_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
        &alpha, B, ab, ldb, stride_b, A, ab, lda, stride_a, &beta, C, CUDA_R_32F, ldc, stride_c,
        batch, ct, CUBLAS_GEMM_DEFAULT));
    return TN_OK;
}

// The float32 GEMM (tn_gemm_rm_ab without autocast).
static inline int tn_gemm_rm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                             const float *A, int lda, long long stride_a, const float *B,
                             int ldb, long long stride_b, float beta, float *C, int ldc,
                             long long stride_c, int batch) {
    return tn_gemm_rm_ab(false, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb,
                         stride_b, beta, C, ldc, stride_c, batch);
}

// Block-wide reduction of one value per thread with `op` (associative,
// `id` its identity): warp shuffles, then the warps' results in warp order.
// blockDim.x a multiple of 32, at most 1024 (and blockDim.y == 1); the
// result is valid in thread 0.
template <typename T, typename Op>
__device__ __forceinline__ T tn_block_reduce(T v, Op op, T id) {
    __shared__ T warp_vals[32];
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // warp_vals may still be read by a previous call
    if (lane == 0) warp_vals[warp] = v;
    __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? warp_vals[threadIdx.x] : id;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

struct TnAdd {
    __device__ __forceinline__ double operator()(double a, double b) const { return a + b; }
};

// Block-wide sum of one double per thread (as tn_block_reduce).
__device__ __forceinline__ double tn_block_sum(double v) { return tn_block_reduce(v, TnAdd(), 0.0); }

#endif
