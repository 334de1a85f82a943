// Sort keys for the metrics, and LSD radix sorts on them.
//
// A score maps to an unsigned key of its width such that ascending keys are
// descending scores; -0.0 and +0.0 get the same key (they compare equal, as
// in numpy). Keys exist only for finite scores (check with finite_*).
//
// The key functions are also compiled for the device (csrc/cuda/metrics.cu
// includes this header): one definition of the order both backends sort by.
#ifndef TIMENET_METRICS_SORT_H
#define TIMENET_METRICS_SORT_H

#include <string.h>

#include "common.h"

#ifdef __CUDACC__
#define TN_HD __host__ __device__
#else
#define TN_HD
#endif

static inline TN_HD int finite_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) != 0x7f800000u;
}

static inline TN_HD int finite_f64(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

// IEEE bits, sign bit flipped for positives and all bits for negatives,
// ascend with the value; the complement descends.
static inline TN_HD uint32_t key_f32(float x) {
    uint32_t u;
    if (x == 0) x = 0;  // -0.0 -> +0.0
    memcpy(&u, &x, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}

static inline TN_HD uint64_t key_f64(double x) {
    uint64_t u;
    if (x == 0) x = 0;
    memcpy(&u, &x, sizeof u);
    u = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
    return ~u;
}

static inline TN_HD double value_f32(uint32_t k) {
    uint32_t u = ~k;
    u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline TN_HD double value_f64(uint64_t k) {
    uint64_t u = ~k;
    u = (u & 0x8000000000000000ull) ? (u & 0x7fffffffffffffffull) : ~u;
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// Key i of an array of uint32_t (f64 = 0) or uint64_t (f64 = 1) keys.
static inline TN_HD uint64_t key_at(const void *keys, int f64, int64_t i) {
    return f64 ? ((const uint64_t *)keys)[i] : ((const uint32_t *)keys)[i];
}

static inline TN_HD double key_value(uint64_t k, int f64) {
    return f64 ? value_f64(k) : value_f32((uint32_t)k);
}

// Stable ascending sorts of key (n,) in place, with the payload pay (n,)
// moved along (or pay == NULL); tmp and ptmp are (n,) scratch buffers.
// Threaded (OpenMP). Returns TN_OK or TN_ENOMEM (the data is then unchanged).
int radix_sort_u32(uint32_t *key, uint32_t *tmp, uint32_t *pay, uint32_t *ptmp, int64_t n);
int radix_sort_u64(uint64_t *key, uint64_t *tmp, uint32_t *pay, uint32_t *ptmp, int64_t n);

#endif
