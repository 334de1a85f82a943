// fma_peak: the float32 FMA throughput of this machine, measured with a
// register-only loop. Every benchmark reports its GFLOP/s as a fraction of
// this figure (DESIGN.md §5), so the loop must be the best case the cores
// can do: no loads, no stores, enough independent accumulator chains to
// cover the FMA latency on every FMA port (latency 4 x 2 ports = 8 chains
// at least; 12 leaves headroom and still fits the 32 vector registers).
#include "common.h"
#include "cpu/conv2d.h"

#include <omp.h>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

#define FMA_CHAINS 12
#define FMA_INNER 4096 // iterations between clock reads

// Never read by anyone; stores the accumulators so the loop is not dead code.
static volatile float fma_sink;

#if defined(__AVX512F__)
#define FMA_LANES 16
static void fma_block(long iters) {
    __m512 acc[FMA_CHAINS];
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm512_set1_ps(1.0f + 1e-3f * i);
    // a * b + acc with a, b chosen so the values stay finite for any length.
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    fma_sink = _mm512_reduce_add_ps(s);
}
#elif defined(__FMA__) && defined(__AVX2__)
#define FMA_LANES 8
static void fma_block(long iters) {
    __m256 acc[FMA_CHAINS];
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm256_set1_ps(1.0f + 1e-3f * i);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __m256 s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    fma_sink = out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#else
// Scalar fallback: the compiler may vectorise it; either way it is the best
// this build can do without vector intrinsics.
#define FMA_LANES 1
static void fma_block(long iters) {
    float acc[FMA_CHAINS];
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = 1.0f + 1e-3f * i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = acc[i] * 0.999999f + 1e-7f;
    float s = 0;
    for (int i = 0; i < FMA_CHAINS; i++) s += acc[i];
    fma_sink = s;
}
#endif

// Returns GFLOP/s (2 flops per FMA lane) of `threads` threads each running
// the loop for about `seconds`; 0 for a non-positive thread count.
double fma_peak(int threads, double seconds) {
    if (threads < 1) return 0.0;
    long total_iters = 0;
    double t0 = omp_get_wtime(), t1 = t0;
    #pragma omp parallel num_threads(threads) reduction(+ : total_iters)
    {
        // Each thread checks the clock itself so no thread idles at a barrier.
        double start = omp_get_wtime();
        long n = 0;
        do {
            fma_block(FMA_INNER);
            n += FMA_INNER;
        } while (omp_get_wtime() - start < seconds);
        total_iters += n;
    }
    t1 = omp_get_wtime();
    double flops = (double)total_iters * FMA_CHAINS * FMA_LANES * 2.0;
    return flops / (t1 - t0) / 1e9;
}
