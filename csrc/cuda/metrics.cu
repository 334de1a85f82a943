// The metrics' sort on the device: the heavy half of csrc/metrics/roc.c
// and pro.c, with metrics.h's contract (one curve point per distinct score;
// a sample is positive at threshold t when score >= t).
//
// The CPU sorts each class on its own and merges the two runs. Here all
// scores are sorted once with their payload (the label, the region id) by
// CUB's radix sort, on the CPU's keys (csrc/metrics/sort.h: ascending key =
// descending score, -0 and +0 one key). A reduce-by-key collapses each run
// of equal keys into one entry of counts, and an inclusive scan turns those
// into the cumulative counts at every distinct score: exactly the points
// the CPU's merge visits, ties included. The sweeps are then kernels and
// reductions over those m entries.
//
// The counts are integers up to the last division, so the results are
// deterministic and equal the CPU's:
// - ROC: a score counts 1 << 32 when positive, 1 when negative; fewer than
//   2^32 scores never carry from the low half, so one 64-bit sum holds TP
//   (high half) and FP (low half). AUROC's twice-area (sum of dFP (TP +
//   TP_prev)) is the CPU's uint64; F1's fractions compare exactly (128-bit
//   products).
// - PRO: an anomalous pixel adds 1.0 / |region| (the double the CPU adds)
//   in 96-bit fixed point. That double is a multiple of 2^-83 (|region| <
//   2^31), so the fixed point holds it exactly and the 128-bit sums are the
//   exact sums of the CPU's terms (its compensated sum is within about a
//   rounding of them); fewer than 2^31 regions keep them below 2^127.
// Device memory at the peak: about 22 bytes per score (ROC) and 44 per
// pixel (PRO); the sorted results keep 12 and 28 bytes per distinct score.
#include "common.cuh"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda/std/functional>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/sort.h"

namespace tn_metrics {

// A CUB device algorithm runs twice: the first call sizes its temporary
// storage (taken here from the caching allocator), the second does the work.
template <typename F>
int cub_run(const char *what, int line, F f) {
    size_t bytes = 0;
    cudaError_t e = f(nullptr, bytes);
    if (e != cudaSuccess) return tn_cuda_fail_cuda(e, __FILE__, line, what);
    TnBuffer tmp;
    TN_TRY(tmp.alloc(bytes ? bytes : 1));  // never NULL: that would only ask the size again
    e = f(tmp.ptr, bytes);
    if (e != cudaSuccess) return tn_cuda_fail_cuda(e, __FILE__, line, what);
    return TN_OK;
}

// key (n,) = sort keys of x (n,); info[1] = 1 when a score is NaN or inf.
__global__ void score_keys_f32(uint32_t *__restrict__ key, long long *__restrict__ info,
                               const float *__restrict__ x, int64_t n) {
    TN_GRID_LOOP(i, n) {
        const float v = x[i];
        if (!finite_f32(v)) info[1] = 1;
        key[i] = key_f32(v);
    }
}

// The sort, the reduce-by-key and the count of distinct keys shared by ROC
// and PRO: key (n,) and pay (n,) are sorted (k1, p1: scratch of the same
// sizes); uniq (n,) gets the m distinct keys, agg (n,) the reduction by
// `add` of value(payload) over each; info[0] = m.
template <typename Pay, typename Value, typename Acc, typename Add>
int sort_and_reduce(uint32_t *uniq, Acc *agg, long long *info, uint32_t *key, uint32_t *k1,
                    Pay *pay, Pay *p1, Value value, Add add, int64_t n, cudaStream_t st) {
    cub::DoubleBuffer<uint32_t> keys(key, k1);
    cub::DoubleBuffer<Pay> pays(pay, p1);
    TN_TRY(cub_run("cub::DeviceRadixSort::SortPairs", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceRadixSort::SortPairs(t, b, keys, pays, n, 0, 32, st);
    }));
    const uint32_t *k = keys.Current();
    auto vals = thrust::make_transform_iterator(pays.Current(), value);
    TN_TRY(cub_run("cub::DeviceReduce::ReduceByKey", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceReduce::ReduceByKey(t, b, k, uniq, vals, agg, info, add, n, st);
    }));
    return TN_OK;
}

// ---- ROC ------------------------------------------------------------------

constexpr unsigned long long kLow = 0xffffffffull;  // FP's half of a packed count

// A label byte as its packed count: TP in the high half, FP in the low.
struct RocCount {
    __host__ __device__ unsigned long long operator()(uint8_t label) const {
        return label ? 1ull << 32 : 1ull;
    }
};

// Twice the trapezoid of distinct score g, dFP (TP + TP_prev): AUROC's term.
struct RocArea {
    const unsigned long long *cum;
    __host__ __device__ unsigned long long operator()(int64_t g) const {
        const unsigned long long c = cum[g], p = g ? cum[g - 1] : 0;
        return ((c & kLow) - (p & kLow)) * ((c >> 32) + (p >> 32));
    }
};

// F1 at distinct score g as the fraction num / den = 2 TP / (TP + FP + P).
struct F1Point {
    unsigned long long num, den;
    long long g;
};

struct RocF1 {
    const unsigned long long *cum;
    unsigned long long npos;
    __host__ __device__ F1Point operator()(int64_t g) const {
        const unsigned long long tp = cum[g] >> 32, fp = cum[g] & kLow;
        return F1Point{2 * tp, tp + fp + npos, (long long)g};
    }
};

// hi, lo of a * b.
__host__ __device__ inline void mul_wide(unsigned long long a, unsigned long long b,
                                         unsigned long long *hi, unsigned long long *lo) {
#ifdef __CUDA_ARCH__
    *hi = __umul64hi(a, b);
#else
    *hi = (unsigned long long)(((unsigned __int128)a * b) >> 64);
#endif
    *lo = a * b;
}

// The better F1 point: the larger fraction (exact cross products), on a tie
// the larger g, i.e. the lower threshold, as the CPU's sweep picks. A total
// order, so the reduction's grouping does not matter.
struct F1Best {
    __host__ __device__ F1Point operator()(const F1Point &a, const F1Point &b) const {
        unsigned long long ah, al, bh, bl;
        mul_wide(a.num, b.den, &ah, &al);
        mul_wide(b.num, a.den, &bh, &bl);
        if (ah != bh) return ah > bh ? a : b;
        if (al != bl) return al > bl ? a : b;
        return a.g > b.g ? a : b;
    }
};

// out[0] = the best F1, out[1] its threshold.
__global__ void f1_finish(double *out, const F1Point *best, const uint32_t *key) {
    out[0] = (double)best->num / (double)best->den;
    out[1] = value_f32(key[best->g]);
}

// keep[g] (g < m) = whether distinct score g is a point of the curve: with
// drop, those collinear with both neighbours (zero second differences of
// FP and TP) are left out, as roc.c (and sklearn) does; the first and last
// always stay.
__global__ void roc_keep(uint32_t *__restrict__ keep, const unsigned long long *__restrict__ cum,
                         int64_t m, int drop) {
    TN_GRID_LOOP(g, m) {
        uint32_t k = 1;
        if (drop && g > 0 && g < m - 1) {
            const unsigned long long a = cum[g - 1], b = cum[g], c = cum[g + 1];
            const long long dfp = (long long)(a & kLow) - 2 * (long long)(b & kLow) +
                                  (long long)(c & kLow);
            const long long dtp = (long long)(a >> 32) - 2 * (long long)(b >> 32) +
                                  (long long)(c >> 32);
            k = dfp != 0 || dtp != 0;
        }
        keep[g] = k;
    }
}

// pos (m,) = inclusive sums of the keep flags: kept score g is curve point
// pos[g] (point 0 is the origin). out is (3, count): fpr, tpr, thresholds.
__global__ void roc_points(double *__restrict__ out, const uint32_t *__restrict__ pos,
                           const unsigned long long *__restrict__ cum,
                           const uint32_t *__restrict__ key, int64_t m, int64_t count,
                           double npos, double nneg) {
    TN_GRID_LOOP(g, m) {
        const uint32_t p = pos[g];
        if (p == (g ? pos[g - 1] : 0)) continue;  // not kept
        const int64_t j = (int64_t)p - 1;
        out[j] = (double)(cum[g] & kLow) / nneg;
        out[count + j] = (double)(cum[g] >> 32) / npos;
        out[2 * count + j] = value_f32(key[g]);
    }
}

// ---- PRO ------------------------------------------------------------------

// Cumulative counts of the PRO curve: normal pixels, and the sum of
// 1 / |region| over anomalous pixels in 96-bit fixed point (lo, hi words).
struct ProSum {
    unsigned long long lo, hi, nn;
};

struct ProAdd {
    __host__ __device__ ProSum operator()(const ProSum &a, const ProSum &b) const {
        ProSum r;
        r.lo = a.lo + b.lo;
        r.hi = a.hi + b.hi + (r.lo < a.lo);
        r.nn = a.nn + b.nn;
        return r;
    }
};

// A pixel's region (0: normal, else 1 + id) as its term.
struct ProTerm {
    const ProSum *weight;  // (R,) 1 / |region| in fixed point, nn = 0
    __host__ __device__ ProSum operator()(int32_t r) const {
        return r ? weight[r - 1] : ProSum{0, 0, 1};
    }
};

// 1.0 / size, as the double the CPU adds, exactly in 96-bit fixed point.
ProSum region_weight(uint32_t size) {
    int e;
    const double f = frexp(1.0 / (double)size, &e);  // f in [0.5, 1), e in [-30, 1]
    const unsigned long long mant = (unsigned long long)ldexp(f, 53);  // exact: 53 bits
    const int s = e - 53 + 96;  // the weight is mant 2^s, s in [13, 44]
    return ProSum{mant << s, mant >> (64 - s), 0};
}

// (hi 2^64 + lo) / 2^96, rounded once: the top 64 bits, with a sticky bit
// for the rest, rounded to 53 by the conversion.
__host__ __device__ inline double fixed_to_double(unsigned long long lo, unsigned long long hi) {
    if (hi == 0) return ldexp((double)lo, -96);  // nvcc and the host convert to nearest
#ifdef __CUDA_ARCH__
    const int z = __clzll((long long)hi);
#else
    const int z = __builtin_clzll(hi);
#endif
    unsigned long long top = z ? hi << z | lo >> (64 - z) : hi;
    const unsigned long long rest = z ? lo << z : lo;
    top |= rest != 0;
    return ldexp((double)top, 64 - z - 96);
}

// Curve point g: fpr = normal pixels >= t / all normal pixels, pro = the
// PRO sum / R (as pro.c).
__host__ __device__ inline void pro_point(const ProSum *cum, int64_t g, double nnorm, double R,
                                          double *x, double *y) {
    *x = (double)cum[g].nn / nnorm;
    *y = fmin(fixed_to_double(cum[g].lo, cum[g].hi) / R, 1.0);
}

// *last = the first g with fpr > max_fpr, where the curve ends (m - 1 if
// none): a binary search, the FPR never decreases. One thread.
__global__ void pro_last(long long *last, const ProSum *cum, int64_t m, double nnorm,
                         double max_fpr) {
    int64_t lo = 0, hi = m - 1;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if ((double)cum[mid].nn / nnorm > max_fpr) hi = mid;
        else lo = mid + 1;
    }
    *last = lo;
}

// out is (3, count): fpr, pro, thresholds of distinct scores 0..count-1.
__global__ void pro_points(double *__restrict__ out, const ProSum *__restrict__ cum,
                           const uint32_t *__restrict__ key, int64_t count, double nnorm,
                           double R) {
    TN_GRID_LOOP(g, count) {
        pro_point(cum, g, nnorm, R, &out[g], &out[count + g]);
        out[2 * count + g] = value_f32(key[g]);
    }
}

// The curve's segment from point g - 1 (the origin for g = 0) to point g,
// integrated over fpr in [0, limit]: the official trapezoid, the segment
// crossing the limit cut at pro interpolated linearly (as pro.c's sweep).
struct ProArea {
    const ProSum *cum;
    double nnorm, R, limit;
    __host__ __device__ double operator()(int64_t g) const {
        double x0 = 0, y0 = 0, x1, y1;
        if (g) pro_point(cum, g - 1, nnorm, R, &x0, &y0);
        pro_point(cum, g, nnorm, R, &x1, &y1);
        if (x1 <= limit) return 0.5 * (y0 + y1) * (x1 - x0);
        if (x0 >= limit) return 0.0;
        const double y = y0 + (y1 - y0) * (limit - x0) / (x1 - x0);
        return 0.5 * (y + y0) * (limit - x0);
    }
};

// ---- entry points' bodies (the extern "C" wrappers free on failure) --------

// A device array of n T from the caching allocator into *p (freed by the
// sorted struct's free).
template <typename T>
int alloc_n(T **p, int64_t n) {
    void *v = nullptr;
    TN_TRY(tn_cuda_malloc(&v, sizeof(T) * (size_t)n, tn_cuda_current_device()));
    *p = (T *)v;
    return TN_OK;
}

int roc_sort(tn_cuda_roc_sorted *s, const float *scores, const uint8_t *labels, int64_t n) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer info, k0, k1, l0, l1;  // info: m, then the NaN flag
    TN_TRY(info.alloc(2 * sizeof(long long)));
    TN_TRY(k0.alloc(sizeof(uint32_t) * (size_t)n));
    TN_TRY(k1.alloc(sizeof(uint32_t) * (size_t)n));
    TN_TRY(l0.alloc((size_t)n));
    TN_TRY(l1.alloc((size_t)n));
    TN_TRY(tn_cuda_memset_zero(info.ptr, info.nbytes));
    TN_TRY(tn_cuda_memcpy_h2d(l0.ptr, labels, (size_t)n));
    score_keys_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(k0.as<uint32_t>(), info.as<long long>(),
                                                         scores, n);
    TN_LAUNCH_CHECK();
    s->cap = n;
    TN_TRY(alloc_n(&s->key, n));
    unsigned long long *cum;
    TN_TRY(alloc_n(&cum, n));
    s->cum = cum;
    TN_TRY(sort_and_reduce(s->key, cum, info.as<long long>(), k0.as<uint32_t>(),
                           k1.as<uint32_t>(), l0.as<uint8_t>(), l1.as<uint8_t>(), RocCount(),
                           ::cuda::std::plus<>(), n, st));
    long long h[2];
    TN_TRY(tn_cuda_memcpy_d2h(h, info.ptr, sizeof h));
    if (h[1]) return TN_ENAN;
    s->m = h[0];
    TN_TRY(cub_run("cub::DeviceScan::InclusiveSum", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceScan::InclusiveSum(t, b, cum, s->m, st);
    }));
    unsigned long long total;
    TN_TRY(tn_cuda_memcpy_d2h(&total, cum + s->m - 1, sizeof total));
    s->npos = (int64_t)(total >> 32);
    s->nneg = (int64_t)(total & kLow);
    return TN_OK;
}

int pro_sort(tn_cuda_pro_sorted *s, const float *maps, const int32_t *region,
             const uint32_t *size, int64_t nregions, int64_t n) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    ProSum *host_w = (ProSum *)malloc(sizeof(ProSum) * (size_t)(nregions > 0 ? nregions : 1));
    if (!host_w)
        return tn_cuda_fail(TN_ENOMEM, __FILE__, __LINE__, "malloc", "out of host memory");
    for (int64_t r = 0; r < nregions; r++) host_w[r] = region_weight(size[r]);
    TnBuffer info, weight, k0, k1, r0, r1;
    int status = weight.alloc(sizeof(ProSum) * (size_t)nregions);
    if (status == TN_OK)
        status = tn_cuda_memcpy_h2d(weight.ptr, host_w, sizeof(ProSum) * (size_t)nregions);
    free(host_w);  // staged by the copy
    TN_TRY(status);
    TN_TRY(info.alloc(2 * sizeof(long long)));
    TN_TRY(k0.alloc(sizeof(uint32_t) * (size_t)n));
    TN_TRY(k1.alloc(sizeof(uint32_t) * (size_t)n));
    TN_TRY(r0.alloc(sizeof(int32_t) * (size_t)n));
    TN_TRY(r1.alloc(sizeof(int32_t) * (size_t)n));
    TN_TRY(tn_cuda_memset_zero(info.ptr, info.nbytes));
    TN_TRY(tn_cuda_memcpy_h2d(r0.ptr, region, sizeof(int32_t) * (size_t)n));
    score_keys_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(k0.as<uint32_t>(), info.as<long long>(),
                                                         maps, n);
    TN_LAUNCH_CHECK();
    s->cap = n;
    TN_TRY(alloc_n(&s->key, n));
    ProSum *cum;
    TN_TRY(alloc_n(&cum, n));
    s->cum = cum;
    TN_TRY(sort_and_reduce(s->key, cum, info.as<long long>(), k0.as<uint32_t>(),
                           k1.as<uint32_t>(), r0.as<int32_t>(), r1.as<int32_t>(),
                           ProTerm{weight.as<ProSum>()}, ProAdd(), n, st));
    long long h[2];
    TN_TRY(tn_cuda_memcpy_d2h(h, info.ptr, sizeof h));
    if (h[1]) return TN_ENAN;
    s->m = h[0];
    TN_TRY(cub_run("cub::DeviceScan::InclusiveScan", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceScan::InclusiveScan(t, b, cum, ProAdd(), s->m, st);
    }));
    ProSum total;
    TN_TRY(tn_cuda_memcpy_d2h(&total, cum + s->m - 1, sizeof total));
    s->nnorm = (int64_t)total.nn;
    s->nregions = nregions;
    return TN_OK;
}

// The curve's last distinct score for max_fpr, to the host.
int pro_last_host(int64_t *last, const tn_cuda_pro_sorted *s, double max_fpr) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer d;
    TN_TRY(d.alloc(sizeof(long long)));
    pro_last<<<1, 1, 0, st>>>(d.as<long long>(), (const ProSum *)s->cum, s->m,
                              (double)s->nnorm, max_fpr);
    TN_LAUNCH_CHECK();
    long long h;
    TN_TRY(tn_cuda_memcpy_d2h(&h, d.ptr, sizeof h));
    *last = h;
    return TN_OK;
}

// The host curves hold `have` points; the fill needs `need` (what the
// counting call said: a mismatch would write past them).
int check_size(int64_t have, int64_t need) {
    if (have == need) return TN_OK;
    return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "curve fill",
                        "the outputs' size is not the curve's point count");
}

// Copies the (3, count) device points after the origin of host curves a, b, c.
int curve_to_host(double *a, double *b, double *c, const double *dev, int64_t count) {
    a[0] = b[0] = 0.0;
    c[0] = INFINITY;
    const size_t bytes = sizeof(double) * (size_t)count;
    TN_TRY(tn_cuda_memcpy_d2h(a + 1, dev, bytes));
    TN_TRY(tn_cuda_memcpy_d2h(b + 1, dev + count, bytes));
    TN_TRY(tn_cuda_memcpy_d2h(c + 1, dev + 2 * count, bytes));
    return TN_OK;
}

int roc_curve(double *fpr, double *tpr, double *thr, int64_t *m, const tn_cuda_roc_sorted *s,
              int drop) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const unsigned long long *cum = (const unsigned long long *)s->cum;
    TnBuffer pos;
    TN_TRY(pos.alloc(sizeof(uint32_t) * (size_t)s->m));
    uint32_t *p = pos.as<uint32_t>();
    roc_keep<<<tn_blocks(s->m), TN_THREADS, 0, st>>>(p, cum, s->m, drop);
    TN_LAUNCH_CHECK();
    TN_TRY(cub_run("cub::DeviceScan::InclusiveSum", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceScan::InclusiveSum(t, b, p, s->m, st);
    }));
    uint32_t count;
    TN_TRY(tn_cuda_memcpy_d2h(&count, p + s->m - 1, sizeof count));
    if (fpr) TN_TRY(check_size(*m, (int64_t)count + 1));
    *m = (int64_t)count + 1;
    if (!fpr) return TN_OK;
    TnBuffer out;
    TN_TRY(out.alloc(3 * sizeof(double) * (size_t)count));
    roc_points<<<tn_blocks(s->m), TN_THREADS, 0, st>>>(out.as<double>(), p, cum, s->key, s->m,
                                                        count, (double)s->npos,
                                                        (double)s->nneg);
    TN_LAUNCH_CHECK();
    return curve_to_host(fpr, tpr, thr, out.as<double>(), count);
}

int auroc(double *area, const tn_cuda_roc_sorted *s) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer d;
    TN_TRY(d.alloc(sizeof(unsigned long long)));
    auto terms = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0),
                                                 RocArea{(const unsigned long long *)s->cum});
    TN_TRY(cub_run("cub::DeviceReduce::Sum", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceReduce::Sum(t, b, terms, d.as<unsigned long long>(), s->m, st);
    }));
    unsigned long long area2;
    TN_TRY(tn_cuda_memcpy_d2h(&area2, d.ptr, sizeof area2));
    *area = (double)area2 / (2.0 * (double)s->npos * (double)s->nneg);
    return TN_OK;
}

int f1_max(double *f1, double *thr, const tn_cuda_roc_sorted *s) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer best, out;
    TN_TRY(best.alloc(sizeof(F1Point)));
    TN_TRY(out.alloc(2 * sizeof(double)));
    auto points = thrust::make_transform_iterator(
        thrust::counting_iterator<int64_t>(0),
        RocF1{(const unsigned long long *)s->cum, (unsigned long long)s->npos});
    TN_TRY(cub_run("cub::DeviceReduce::Reduce", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceReduce::Reduce(t, b, points, best.as<F1Point>(), s->m, F1Best(),
                                         F1Point{0, 1, -1}, st);
    }));
    f1_finish<<<1, 1, 0, st>>>(out.as<double>(), best.as<F1Point>(), s->key);
    TN_LAUNCH_CHECK();
    double h[2];
    TN_TRY(tn_cuda_memcpy_d2h(h, out.ptr, sizeof h));
    *f1 = h[0];
    *thr = h[1];
    return TN_OK;
}

int pro_curve(double *fpr, double *pro, double *thr, int64_t *m, const tn_cuda_pro_sorted *s,
              double max_fpr) {
    int64_t last;
    TN_TRY(pro_last_host(&last, s, max_fpr));
    const int64_t count = last + 1;
    if (fpr) TN_TRY(check_size(*m, count + 1));
    *m = count + 1;
    if (!fpr) return TN_OK;
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    TnBuffer out;
    TN_TRY(out.alloc(3 * sizeof(double) * (size_t)count));
    pro_points<<<tn_blocks(count), TN_THREADS, 0, st>>>(out.as<double>(),
                                                         (const ProSum *)s->cum, s->key, count,
                                                         (double)s->nnorm, (double)s->nregions);
    TN_LAUNCH_CHECK();
    return curve_to_host(fpr, pro, thr, out.as<double>(), count);
}

int aupro(double *area, const tn_cuda_pro_sorted *s, double limit) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    int64_t last;  // segments after the one crossing the limit add nothing
    TN_TRY(pro_last_host(&last, s, limit));
    TnBuffer d;
    TN_TRY(d.alloc(sizeof(double)));
    auto segs = thrust::make_transform_iterator(
        thrust::counting_iterator<int64_t>(0),
        ProArea{(const ProSum *)s->cum, (double)s->nnorm, (double)s->nregions, limit});
    TN_TRY(cub_run("cub::DeviceReduce::Sum", __LINE__, [&](void *t, size_t &b) {
        return cub::DeviceReduce::Sum(t, b, segs, d.as<double>(), last + 1, st);
    }));
    double h;
    TN_TRY(tn_cuda_memcpy_d2h(&h, d.ptr, sizeof h));
    *area = h / limit;
    return TN_OK;
}

}  // namespace tn_metrics

// ---- the C interface (tn_cuda.h) ----------------------------------------------

extern "C" void tn_cuda_roc_sorted_free(tn_cuda_roc_sorted *s) {
    tn_cuda_free(s->key, sizeof(uint32_t) * (size_t)s->cap, s->dev);
    tn_cuda_free(s->cum, sizeof(unsigned long long) * (size_t)s->cap, s->dev);
    memset(s, 0, sizeof *s);
}

// scores is (n,) device float32; labels is (n,) HOST bytes, non-zero =
// positive (copied over). n < 2^32.
extern "C" int tn_cuda_roc_sort(tn_cuda_roc_sorted *s, const float *scores,
                                const uint8_t *labels, int64_t n) {
    memset(s, 0, sizeof *s);
    s->dev = tn_cuda_current_device();
    if (n <= 0 || n >= ((int64_t)1 << 32))
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "tn_cuda_roc_sort",
                            "n must be in [1, 2^32)");
    const int st = tn_metrics::roc_sort(s, scores, labels, n);
    if (st != TN_OK) tn_cuda_roc_sorted_free(s);
    return st;
}

// fpr, tpr, thr all NULL: *m = the number of points; else HOST (*m,)
// outputs, *m their size (as counted), filled.
extern "C" int tn_cuda_roc_curve(double *fpr, double *tpr, double *thr, int64_t *m,
                                 const tn_cuda_roc_sorted *s, int drop_intermediate) {
    return tn_metrics::roc_curve(fpr, tpr, thr, m, s, drop_intermediate);
}

// *area (host) = AUROC, exactly as roc.c: the integer twice-area over 2 P N.
extern "C" int tn_cuda_auroc(double *area, const tn_cuda_roc_sorted *s) {
    return tn_metrics::auroc(area, s);
}

// *f1, *thr (host): the best F1 and its (lowest on ties) threshold.
extern "C" int tn_cuda_f1_max(double *f1, double *thr, const tn_cuda_roc_sorted *s) {
    return tn_metrics::f1_max(f1, thr, s);
}

extern "C" void tn_cuda_pro_sorted_free(tn_cuda_pro_sorted *s) {
    tn_cuda_free(s->key, sizeof(uint32_t) * (size_t)s->cap, s->dev);
    tn_cuda_free(s->cum, sizeof(tn_metrics::ProSum) * (size_t)s->cap, s->dev);
    memset(s, 0, sizeof *s);
}

// maps is (n,) device float32 (all pixels); region is (n,) HOST int32, 0
// for a normal pixel, else 1 + its region id in [0, nregions); size is
// (nregions,) HOST pixel counts (pro_regions in csrc/metrics/pro.c).
extern "C" int tn_cuda_pro_sort(tn_cuda_pro_sorted *s, const float *maps, const int32_t *region,
                                const uint32_t *size, int64_t nregions, int64_t n) {
    memset(s, 0, sizeof *s);
    s->dev = tn_cuda_current_device();
    if (n <= 0 || nregions < 0 || nregions >= INT32_MAX)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "tn_cuda_pro_sort",
                            "n must be > 0 and nregions in [0, 2^31 - 1)");
    const int st = tn_metrics::pro_sort(s, maps, region, size, nregions, n);
    if (st != TN_OK) tn_cuda_pro_sorted_free(s);
    return st;
}

// As tn_cuda_roc_curve: the points up to the first with fpr > max_fpr
// (pro.c's pro_curve). Needs nnorm, nregions > 0.
extern "C" int tn_cuda_pro_curve(double *fpr, double *pro, double *thr, int64_t *m,
                                 const tn_cuda_pro_sorted *s, double max_fpr) {
    return tn_metrics::pro_curve(fpr, pro, thr, m, s, max_fpr);
}

// *area (host) = AU-PRO up to fpr_limit, over fpr_limit (pro.c's aupro).
extern "C" int tn_cuda_aupro(double *area, const tn_cuda_pro_sorted *s, double fpr_limit) {
    return tn_metrics::aupro(area, s, fpr_limit);
}
