// bfloat16 copies of float32 arrays, for autocast (common.cuh: tn_operand):
// the GEMM-heavy ops (conv2d, linear, attention) read bf16 copies of their
// float32 operands and write float32 (cuBLAS directly; cuDNN's bf16
// outputs widened back here). Everything stored stays float32.
#include "common.cuh"

namespace {

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *__restrict__ y, const float *__restrict__ x,
                                   int64_t n) {
    TN_GRID_LOOP(i, n) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void bf16_to_f32_kernel(float *__restrict__ y, const __nv_bfloat16 *__restrict__ x,
                                   int64_t n) {
    TN_GRID_LOOP(i, n) y[i] = __bfloat162float(x[i]);
}

}  // namespace

// y, x are (n,).
int tn_cuda_f32_to_bf16(__nv_bfloat16 *y, const float *x, int64_t n) {
    if (n <= 0) return TN_OK;
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    f32_to_bf16_kernel<<<tn_blocks(n), TN_THREADS, 0, st>>>(y, x, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

int tn_cuda_bf16_to_f32(float *y, const __nv_bfloat16 *x, int64_t n) {
    if (n <= 0) return TN_OK;
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    bf16_to_f32_kernel<<<tn_blocks(n), TN_THREADS, 0, st>>>(y, x, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}
