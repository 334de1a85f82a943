// GEMM through OpenBLAS from the scipy-openblas32 wheel (symbols prefixed
// "scipy_"). Row-major everywhere in timenet, so every call goes through
// sgemm_rm below: C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C.
#ifndef TIMENET_BLAS_H
#define TIMENET_BLAS_H

#include <cblas.h>

// GEMMs inside our own OpenMP regions must run single-threaded: a threaded
// pthreads-OpenBLAS GEMM called from an OpenMP region oversubscribes the
// cores (and OpenBLAS warns "Detect OpenMP Loop and this application may
// hang"). The wheel's OpenBLAS declares openblas_set_num_threads_local but
// does not export it, so blas_serial_begin() sets the process-wide count to 1
// until the matching blas_serial_end() (a counter: calls from several Python
// threads nest; the first in saves the count, the last out restores it).
void blas_serial_begin(void);
void blas_serial_end(void);

static inline void sgemm_rm(int trans_a, int trans_b, int M, int N, int K,
                            float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                      B, ldb, beta, C, ldc);
}

#endif
