// Index arithmetic of the scoring kernels, shared by the CPU kernels
// (score/*.c) and their CUDA versions (cuda/score.cu), so that both read the
// same source positions with the same weights. Plain C; under nvcc the
// functions are __host__ __device__.
#ifndef TIMENET_SCORE_INDEX_H
#define TIMENET_SCORE_INDEX_H

#include <stdint.h>

#ifdef __CUDACC__
#define SCORE_INLINE static __host__ __device__ __forceinline__
#else
#define SCORE_INLINE static inline
#endif

// Border modes of the Gaussian filter, scipy's names: reflect = (d c b a |
// a b c d | d c b a), mirror = (d c b | a b c d | c b a) (torch/kornia
// "reflect"), nearest = (a a | a b).
enum { SCORE_REFLECT = 0, SCORE_MIRROR = 1, SCORE_NEAREST = 2 };

// Index i (any value) folded into [0, n) by the border mode.
SCORE_INLINE int64_t score_fold(int64_t i, int64_t n, int mode) {
    if (i >= 0 && i < n) return i;
    switch (mode) {
    case SCORE_MIRROR: {
        if (n == 1) return 0;
        int64_t p = 2 * n - 2, m = i % p;
        if (m < 0) m += p;
        return m >= n ? p - m : m;
    }
    case SCORE_NEAREST:
        return i < 0 ? 0 : n - 1;
    default: {  // SCORE_REFLECT: half-sample symmetric, period 2n
        int64_t p = 2 * n, m = i % p;
        if (m < 0) m += p;
        return m >= n ? p - 1 - m : m;
    }
    }
}

// Output coordinate d of `out` samples read from an axis of `in` samples:
// the two source indices i0 <= i1 and the weight of i1, PyTorch's
// area_pixel_compute_source_index + upsample_bilinear2d.
SCORE_INLINE void score_src_index(int64_t d, int64_t in, int64_t out, int align_corners,
                                  int64_t *i0, int64_t *i1, double *lam) {
    double s;
    if (align_corners)
        s = out > 1 ? (double)d * (double)(in - 1) / (double)(out - 1) : 0.0;
    else {
        s = ((double)d + 0.5) * (double)in / (double)out - 0.5;
        if (s < 0) s = 0;
    }
    int64_t k = (int64_t)s;  // s >= 0: truncation is floor
    if (k > in - 1) k = in - 1;
    *i0 = k;
    *i1 = k < in - 1 ? k + 1 : k;
    *lam = s - (double)k;
}

#endif
