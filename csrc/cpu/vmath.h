// Float math written so that GCC vectorises the loops calling it (shared by
// act.c and norm.c's fused GroupNorm + SiLU, which must round alike).
#ifndef TIMENET_CPU_VMATH_H
#define TIMENET_CPU_VMATH_H

#include <math.h>
#include <stdint.h>

// e^x in float, branch-free so that GCC vectorises the loops that call it
// (libm's expf is a scalar call without -ffast-math, and SiLU runs on every
// U-Net activation). Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
// Cephes' degree-6 polynomial for e^r (relative error ~2e-7), and 2^n built
// in the exponent bits. x is clamped to [-87, 88] so 2^n stays a normal
// float; above 88 the result is inf (the sigmoid below is then exactly 0, as
// with libm), below -87 it is e^-87 (where 1 + e^x == 1 anyway). NaN fails
// every comparison and propagates.
static inline float exp_vec(float x_in) {
    float x = x_in < -87.0f ? -87.0f : x_in;
    x = x > 88.0f ? 88.0f : x;
    // n = round(x / ln2) by the 1.5 * 2^23 trick (vectorises, unlike lrintf):
    // t = 1.5*2^23 + n exactly, so n sits in t's low mantissa bits too, and
    // 2^n comes from unsigned bit arithmetic (no float -> int conversion,
    // which would be undefined for NaN).
    union { float f; uint32_t u; } t = {.f = x * 1.44269504088896341f + 12582912.0f};
    const float fn = t.f - 12582912.0f;
    const float r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t u; float f; } two_n = {.u = (t.u - 0x4B400000u + 127u) << 23};
    // Past the clamp, overflow to inf as expf does (so sigmoid(-100) is 0).
    return x_in > 88.0f ? (float)INFINITY : p * two_n.f;
}

// 1 / (1 + e^-x): for very negative x, e^-x is inf and the quotient is
// exactly 0, never NaN.
static inline float sigmoidf(float x) { return 1.0f / (1.0f + exp_vec(-x)); }

#endif
