// Multi-head scaled dot-product attention, forward and backward (llm.c style).
//
// q, k, v, out are (N, L, C), C = H * d; head h uses channels [h*d, (h+1)*d).
// Per (n, h), with q_h = q[n, :, h*d:(h+1)*d] (L, d) and scale = 1/sqrt(d):
//   forward:  S = scale * q_h k_h^T (L, L); P = softmax(S) along keys; out_h = P v_h
//   backward: dv_h = P^T dout_h; dP = dout_h v_h^T; dS = P * (dP - rowsum(dP * P));
//             dq_h = scale * dS k_h; dk_h = scale * dS^T q_h
// The head slices are never copied: every GEMM reads and writes them in
// place through a row stride (lda/ldb/ldc) of C.
//
// Threading. The scipy-openblas32 wheel is OpenBLAS's pthreads build and
// does not export openblas_set_num_threads_local (the header declares it,
// the library lacks it), so the BLAS thread count is process-wide. When
// there are at least as many (n, h) items as OpenMP threads we parallelise
// over the items and run each GEMM on one thread: the region is bracketed
// by blas_serial_begin/end (blas.h), as conv2d.c does. (A GEMM
// threaded by pthreads-OpenBLAS inside an OpenMP region oversubscribes the
// cores, and OpenBLAS warns of a possible hang.) With fewer items (one
// image, one head) the items run in turn and OpenBLAS threads each GEMM.
// Measured on the 2-core dev box (forward + backward, 1 head unless noted):
// items in parallel with 1-thread GEMMs vs items in turn with 2-thread GEMMs
// is 1.4x faster at N = 8, L = 256, C = 256 (234 vs 170 GFLOP/s), 1.7x at
// L = 64, 1.8x at C = 64 and 1.6x at N = 2 with 4 heads; for a single item
// the 2-thread GEMMs are 1.5x faster than one thread.
// (Other op families called concurrently from other Python threads share
// that process-wide setting: a GEMM may run on more or fewer threads than
// planned, never wrongly.)
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "attn.h"
#include "blas.h"

// e^x for x <= 0 (softmax after the row max is subtracted), written so the
// compiler vectorises it: glibc's vector expf is only declared under
// -ffast-math, and a scalar expf per score costs as much as the GEMMs at
// d = 64. Cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for
// e^r, 2^n through the exponent bits. Relative error ~2e-7; below
// e^-87 (far under float32's resolution of a softmax row) it clamps.
static inline float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;      // ln2 split in two for an exact
    r = r - n * -2.12194440e-4f;        // reduction (Cody-Waite)
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;  // n in [-126, 0]: a normal 2^n
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

// Row-wise softmax of the (L, L) scores in P, in place.
static void softmax_rows(float *P, int L) {
    for (int i = 0; i < L; i++) {
        float *row = P + (size_t)i * L;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < L; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < L; j++) {
            float e = exp_nonpos(row[j] - mx);
            row[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < L; j++) row[j] *= inv;
    }
}

// One (n, h) item of the forward.
// out, q, k, v point at the head's first channel of row 0 (row stride C);
// P is that item's (L, L) block of probs.
static void attention_forward_head(float *out, float *P, const float *q, const float *k,
                                   const float *v, int L, int C, int d, float scale) {
    sgemm_rm(0, 1, L, L, d, scale, q, C, k, C, 0.0f, P, L);  // S = scale q_h k_h^T
    softmax_rows(P, L);
    sgemm_rm(0, 0, L, d, L, 1.0f, P, L, v, C, 0.0f, out, C);  // out_h = P v_h
}

// One (n, h) item of the backward; dP is (L, L) scratch. dq, dk, dv += .
static void attention_backward_head(float *dq, float *dk, float *dv, float *dP,
                                    const float *dout, const float *q, const float *k,
                                    const float *v, const float *P, int L, int C, int d,
                                    float scale) {
    sgemm_rm(1, 0, L, d, L, 1.0f, P, L, dout, C, 1.0f, dv, C);      // dv_h += P^T dout_h
    sgemm_rm(0, 1, L, L, d, 1.0f, dout, C, v, C, 0.0f, dP, L);      // dP = dout_h v_h^T
    for (int i = 0; i < L; i++) {  // softmax backward: dS = P * (dP - rowsum(dP * P))
        const float *p = P + (size_t)i * L;
        float *g = dP + (size_t)i * L;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < L; j++) dot += g[j] * p[j];
        for (int j = 0; j < L; j++) g[j] = p[j] * (g[j] - dot);
    }
    sgemm_rm(0, 0, L, d, L, scale, dP, L, k, C, 1.0f, dq, C);       // dq_h += scale dS k_h
    sgemm_rm(1, 0, L, d, L, scale, dP, L, q, C, 1.0f, dk, C);       // dk_h += scale dS^T q_h
}

// True when the (n, h) items should be spread over OpenMP threads (with
// one-thread GEMMs) rather than run in turn with threaded GEMMs.
static int parallel_over_items(long items) {
    int nt = omp_get_max_threads();
    return nt > 1 && items >= nt;
}

// out is (N, L, C), probs is (N, H, L, L), q, k, v are (N, L, C), C % H == 0.
int attention_forward(float *out, float *probs,
                      const float *q, const float *k, const float *v,
                      int N, int L, int C, int num_heads) {
    const int H = num_heads, d = C / H;
    const float scale = 1.0f / sqrtf((float)d);
    const long items = (long)N * H;
    const size_t LC = (size_t)L * C, LL = (size_t)L * L;
    if (parallel_over_items(items)) {
        blas_serial_begin();
#pragma omp parallel for schedule(static)
        for (long it = 0; it < items; it++) {
            long n = it / H, h = it % H;
            size_t off = n * LC + h * d;
            attention_forward_head(out + off, probs + it * LL, q + off, k + off, v + off, L, C,
                                   d, scale);
        }
        blas_serial_end();
    } else {
        for (long it = 0; it < items; it++) {
            long n = it / H, h = it % H;
            size_t off = n * LC + h * d;
            attention_forward_head(out + off, probs + it * LL, q + off, k + off, v + off, L, C,
                                   d, scale);
        }
    }
    return TN_OK;
}

// dq, dk, dv are (N, L, C) and accumulate; dout, q, k, v are (N, L, C);
// probs is (N, H, L, L) from attention_forward.
int attention_backward(float *dq, float *dk, float *dv,
                       const float *dout, const float *q, const float *k, const float *v,
                       const float *probs,
                       int N, int L, int C, int num_heads) {
    const int H = num_heads, d = C / H;
    const float scale = 1.0f / sqrtf((float)d);
    const long items = (long)N * H;
    const size_t LC = (size_t)L * C, LL = (size_t)L * L;
    const int par = parallel_over_items(items);
    const int nt = par ? omp_get_max_threads() : 1;
    float *scratch = malloc((size_t)nt * LL * sizeof(float));  // one dP per thread
    if (!scratch) return TN_ENOMEM;
    if (par) {
        blas_serial_begin();
#pragma omp parallel num_threads(nt)
        {
            float *dP = scratch + (size_t)omp_get_thread_num() * LL;
#pragma omp for schedule(static)
            for (long it = 0; it < items; it++) {
                long n = it / H, h = it % H;
                size_t off = n * LC + h * d;
                attention_backward_head(dq + off, dk + off, dv + off, dP, dout + off, q + off,
                                        k + off, v + off, probs + it * LL, L, C, d, scale);
            }
        }
        blas_serial_end();
    } else {
        for (long it = 0; it < items; it++) {
            long n = it / H, h = it % H;
            size_t off = n * LC + h * d;
            attention_backward_head(dq + off, dk + off, dv + off, scratch, dout + off, q + off,
                                    k + off, v + off, probs + it * LL, L, C, d, scale);
        }
    }
    free(scratch);
    return TN_OK;
}
