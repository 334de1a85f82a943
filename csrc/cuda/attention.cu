// Multi-head scaled dot-product attention (csrc/cpu/attention.c's
// contract): q, k, v, out (N, L, C), C = H * d, head h on channels
// [h*d, (h+1)*d); probs (N, H, L, L) saved for the backward.
//
// Per head, cuBLAS strided-batched GEMMs over the N samples read the head's
// columns in place (row stride C, batch stride L*C), with a fused row
// softmax (and its backward) in between:
//   forward:  S = scale q_h k_h^T; P = softmax(S); out_h = P v_h
//   backward: dv_h = P^T dout_h; dP = dout_h v_h^T; dS = P * (dP - rowsum(dP * P));
//             dq_h = scale dS k_h; dk_h = scale dS^T q_h
// Under autocast every GEMM reads bfloat16 copies (q, k, v, dout converted
// once, P and dS as they are made) and writes float32; the softmax, its
// backward and the saved probs stay float32.
#include "common.cuh"

#include <math.h>

namespace {

#define ROWS_PER_BLOCK 8  // one warp per row

// In place on rows of length L: P = softmax(P) (max subtracted first).
__global__ void softmax_rows_f32(float *__restrict__ P, int64_t rows, int L) {
    const int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    float *__restrict__ p = P + row * L;
    const int lane = threadIdx.x;
    float mx = -INFINITY;
    for (int j = lane; j < L; j += 32) mx = fmaxf(mx, p[j]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
    for (int j = lane; j < L; j += 32) {
        const float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = 1.0f / sum;
    for (int j = lane; j < L; j += 32) p[j] *= inv;
}

// In place on dP: dS = P * (dP - sum_j dP * P), rows of length L.
__global__ void softmax_backward_rows_f32(float *__restrict__ dP, const float *__restrict__ P,
                                          int64_t rows, int L, int64_t p_row_stride_block,
                                          int rows_per_item) {
    const int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    // dP is contiguous (item, row); P of item b starts at b * p_row_stride_block.
    const int64_t item = row / rows_per_item, r = row % rows_per_item;
    float *__restrict__ g = dP + row * L;
    const float *__restrict__ p = P + item * p_row_stride_block + r * L;
    const int lane = threadIdx.x;
    float dot = 0.0f;
    for (int j = lane; j < L; j += 32) dot += g[j] * p[j];
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    for (int j = lane; j < L; j += 32) g[j] = p[j] * (g[j] - dot);
}

unsigned row_blocks(int64_t rows) { return (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK); }

}  // namespace

extern "C" int tn_cuda_attention_forward(float *out, float *probs, const float *q, const float *k,
                                         const float *v, int N, int L, int C, int num_heads) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const int H = num_heads, d = C / H;
    const float scale = 1.0f / sqrtf((float)d);
    const long long LC = (long long)L * C, LL = (long long)L * L;
    const bool bf = tn_cuda_get_autocast();
    TnBuffer qb, kb, vb, pb;
    const void *qa, *ka, *va, *pa;
    TN_TRY(tn_operand(&qa, qb, q, N * LC, bf));
    TN_TRY(tn_operand(&ka, kb, k, N * LC, bf));
    TN_TRY(tn_operand(&va, vb, v, N * LC, bf));
    for (int h = 0; h < H; h++) {
        const long long off = (long long)h * d;
        float *P = probs + h * LL;  // item n of head h at n * H * LL
        TN_TRY(tn_gemm_rm_ab(bf, false, true, L, L, d, scale, tn_elem(qa, off, bf), C, LC,
                             tn_elem(ka, off, bf), C, LC, 0.0f, P, L, H * LL, N));
    }
    const int64_t rows = (int64_t)N * H * L;
    softmax_rows_f32<<<row_blocks(rows), dim3(32, ROWS_PER_BLOCK), 0, st>>>(probs, rows, L);
    TN_LAUNCH_CHECK();
    TN_TRY(tn_operand(&pa, pb, probs, N * H * LL, bf));
    for (int h = 0; h < H; h++) {
        const long long off = (long long)h * d;
        TN_TRY(tn_gemm_rm_ab(bf, false, false, L, d, L, 1.0f, tn_elem(pa, h * LL, bf), L, H * LL,
                             tn_elem(va, off, bf), C, LC, 0.0f, out + off, C, LC, N));
    }
    return TN_OK;
}

// dq, dk, dv (N, L, C) written; dout, q, k, v (N, L, C); probs (N, H, L, L).
extern "C" int tn_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                          const float *q, const float *k, const float *v,
                                          const float *probs, int N, int L, int C,
                                          int num_heads) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const int H = num_heads, d = C / H;
    const float scale = 1.0f / sqrtf((float)d);
    const long long LC = (long long)L * C, LL = (long long)L * L;
    const bool bf = tn_cuda_get_autocast();
    TnBuffer ob, qb, kb, vb, pb, sb;
    const void *oa, *qa, *ka, *va, *pa;
    TN_TRY(tn_operand(&oa, ob, dout, N * LC, bf));
    TN_TRY(tn_operand(&qa, qb, q, N * LC, bf));
    TN_TRY(tn_operand(&ka, kb, k, N * LC, bf));
    TN_TRY(tn_operand(&va, vb, v, N * LC, bf));
    TN_TRY(tn_operand(&pa, pb, probs, N * H * LL, bf));
    TnBuffer scratch;  // dP / dS of one head for all N samples
    TN_TRY(scratch.alloc(sizeof(float) * (size_t)N * (size_t)LL));
    float *dP = scratch.as<float>();
    const void *dS = dP;  // what the dq, dk GEMMs read: dP itself, or its bf16 copy in sb
    if (bf) {
        TN_TRY(sb.alloc(sizeof(__nv_bfloat16) * (size_t)N * (size_t)LL));
        dS = sb.ptr;
    }
    for (int h = 0; h < H; h++) {
        const long long off = (long long)h * d;
        const float *P = probs + h * LL;
        TN_TRY(tn_gemm_rm_ab(bf, true, false, L, d, L, 1.0f, tn_elem(pa, h * LL, bf), L, H * LL,
                             tn_elem(oa, off, bf), C, LC, 0.0f, dv + off, C, LC, N));
        TN_TRY(tn_gemm_rm_ab(bf, false, true, L, L, d, 1.0f, tn_elem(oa, off, bf), C, LC,
                             tn_elem(va, off, bf), C, LC, 0.0f, dP, L, LL, N));
        const int64_t rows = (int64_t)N * L;
        softmax_backward_rows_f32<<<row_blocks(rows), dim3(32, ROWS_PER_BLOCK), 0, st>>>(
            dP, P, rows, L, H * LL, L);
        TN_LAUNCH_CHECK();
        if (bf) TN_TRY(tn_cuda_f32_to_bf16(sb.as<__nv_bfloat16>(), dP, N * LL));
        TN_TRY(tn_gemm_rm_ab(bf, false, false, L, d, L, scale, dS, L, LL, tn_elem(ka, off, bf), C,
                             LC, 0.0f, dq + off, C, LC, N));
        TN_TRY(tn_gemm_rm_ab(bf, true, false, L, d, L, scale, dS, L, LL, tn_elem(qa, off, bf), C,
                             LC, 0.0f, dk + off, C, LC, N));
    }
    return TN_OK;
}
