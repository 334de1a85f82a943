// GEMM through OpenBLAS from the scipy-openblas32 wheel (symbols prefixed
// "scipy_"). Row-major everywhere in timenet, so every call goes through
// sgemm_rm below: C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C.
#ifndef TIMENET_BLAS_H
#define TIMENET_BLAS_H

#include <cblas.h>

static inline void sgemm_rm(int trans_a, int trans_b, int M, int N, int K,
                            float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                      B, ldb, beta, C, ldc);
}

#endif
