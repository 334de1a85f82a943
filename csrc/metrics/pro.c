// PRO curve and AUPRO, the official MVTec AD evaluation (see metrics.h).
//
// Bergmann et al.'s code builds per-pixel FP and PRO increments, argsorts
// all scores and takes cumulative sums. The same curve comes from one sort
// of the normal pixels (keys only) and one of the anomalous pixels (keys
// with their region id), merged: at each distinct score the FP count is a
// position in the normal run, and the PRO sum grows by 1 / |region| for
// every anomalous pixel passed. Only pixels the curve reaches before its
// FPR passes max_fpr are kept (a histogram of the keys finds the cut-off),
// so AUPRO at 0.3 sorts about a third of the normal pixels. Memory: a key
// per kept pixel, a region id per kept anomalous pixel, a region size per
// anomalous pixel while labelling, and one sort buffer.
#include "metrics.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sort.h"

void pro_sorted_free(pro_sorted *s) {
    free(s->norm);
    free(s->anom);
    free(s->region);
    free(s->inv_size);
    s->norm = s->anom = NULL;
    s->region = NULL;
    s->inv_size = NULL;
    s->nnorm = s->nanom = s->nnorm_all = s->nregions = 0;
}

// Inputs below this many pixels run on one thread: waking threads would
// cost more than the work.
#define PAR_MIN (1 << 16)

// The top `bits` bits of a key: its bucket in the cut-off histogram.
static inline uint32_t key_bucket(uint64_t k, int f64, int bits) {
    return (uint32_t)(k >> ((f64 ? 64 : 32) - bits));
}

// Whether any of m (n,) is non-zero.
static int any_set(const uint8_t *m, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (m[i]) return 1;
    return 0;
}

int pro_sort(pro_sorted *s, const void *maps, int f64, const uint8_t *masks, int64_t N,
             int64_t H, int64_t W, double max_fpr) {
    *s = (pro_sorted){.f64 = f64, .max_fpr = max_fpr};
    const int64_t HW = H * W;
    if (N < 0 || H < 0 || W < 0 || HW >= INT32_MAX || !(max_fpr > 0)) return TN_EINVAL;
    const size_t ks = f64 ? 8 : 4;
    // The images are cut into P chunks of whole images, one per thread;
    // both passes use the same chunks, so the counts of pass 1 give every
    // chunk its output offsets in pass 2.
    const int P = N * HW < PAR_MIN ? 1 : (int)TN_MIN(omp_get_max_threads(), N);
    // Histogram buckets: the top cb bits of a key. 2^16 resolve float32
    // scores to 1/128 (sign, exponent and 7 mantissa bits).
    const int cb = N * HW < (1 << 20) ? 10 : 16;
    const int64_t nb = (int64_t)1 << cb;
    int status = TN_OK;
    int64_t *hist = calloc((size_t)(2 * P * nb), sizeof *hist);  // [P][2][nb]
    // Per chunk (entry c + 1): anomalous pixels, kept normal and anomalous
    // pixels, regions; their prefix sums are the chunk offsets.
    int64_t *all_at = calloc((size_t)P + 1, sizeof *all_at);
    int64_t *norm_at = calloc((size_t)P + 1, sizeof *norm_at);
    int64_t *anom_at = calloc((size_t)P + 1, sizeof *anom_at);
    int64_t *reg_at = calloc((size_t)P + 1, sizeof *reg_at);
    uint32_t *size = NULL, *ptmp = NULL;
    void *tmp = NULL;
    if (!hist || !all_at || !norm_at || !anom_at || !reg_at) {
        status = TN_ENOMEM;
        goto exit;
    }

    // Pass 1: finiteness, and per chunk histograms of the normal and of the
    // anomalous pixels' keys.
    int bad = 0;
#pragma omp parallel for num_threads(P) schedule(static, 1) reduction(| : bad)
    for (int c = 0; c < P; c++) {
        int64_t *hn = hist + 2 * c * nb, *ha = hn + nb;
        for (int64_t b = N * c / P; b < N * (c + 1) / P; b++) {
            const uint8_t *m = masks + b * HW;
            if (f64) {
                const double *x = (const double *)maps + b * HW;
                for (int64_t i = 0; i < HW; i++) {
                    bad |= !finite_f64(x[i]);
                    (m[i] ? ha : hn)[key_bucket(key_f64(x[i]), 1, cb)]++;
                }
            } else {
                const float *x = (const float *)maps + b * HW;
                for (int64_t i = 0; i < HW; i++) {
                    bad |= !finite_f32(x[i]);
                    (m[i] ? ha : hn)[key_bucket(key_f32(x[i]), 0, cb)]++;
                }
            }
        }
    }
    if (bad) {
        status = TN_ENAN;
        goto exit;
    }
    int64_t nnorm_all = 0;
    for (int c = 0; c < P; c++)
        for (int64_t k = 0; k < nb; k++) nnorm_all += hist[2 * c * nb + k];

    // The sweep to max_fpr stops at the first point with FP / nnorm >
    // max_fpr, i.e. once `need` normal pixels are passed. Pixels in buckets
    // after the one holding the need-th smallest normal key are never
    // reached (equal keys share a bucket), so they are not kept.
    int64_t cut = nb - 1;
    if (nnorm_all > 0) {
        int64_t need = (int64_t)floor(max_fpr * (double)nnorm_all);
        while (need > 0 && (double)(need - 1) / (double)nnorm_all > max_fpr) need--;
        while (need <= nnorm_all && (double)need / (double)nnorm_all <= max_fpr) need++;
        for (int64_t k = 0, cum = 0; k < nb && need <= nnorm_all; k++) {
            for (int c = 0; c < P; c++) cum += hist[2 * c * nb + k];
            if (cum >= need) {
                cut = k;
                break;
            }
        }
    }
    for (int c = 0; c < P; c++) {
        const int64_t *hn = hist + 2 * c * nb, *ha = hn + nb;
        int64_t kn = 0, ka = 0, a = 0;
        for (int64_t k = 0; k < nb; k++) {
            if (k <= cut) kn += hn[k], ka += ha[k];
            a += ha[k];
        }
        norm_at[c + 1] = norm_at[c] + kn;
        anom_at[c + 1] = anom_at[c] + ka;
        all_at[c + 1] = all_at[c] + a;
    }
    free(hist);
    hist = NULL;
    s->nnorm_all = nnorm_all;
    s->nnorm = norm_at[P];
    s->nanom = anom_at[P];
    s->norm = malloc(ks * (size_t)TN_MAX(s->nnorm, 1));
    s->anom = malloc(ks * (size_t)TN_MAX(s->nanom, 1));
    s->region = malloc(sizeof *s->region * (size_t)TN_MAX(s->nanom, 1));
    // Region sizes, at most one region per anomalous pixel: chunk c writes
    // its own from all_at[c] on.
    size = malloc(sizeof *size * (size_t)TN_MAX(all_at[P], 1));
    if (!s->norm || !s->anom || !s->region || !size) {
        status = TN_ENOMEM;
        goto exit;
    }

    // Pass 2: label each mask (8-connected) and write the kept keys, with
    // region ids counted from the chunk's first region.
    int nomem = 0;
#pragma omp parallel for num_threads(P) schedule(static, 1) reduction(| : nomem)
    for (int c = 0; c < P; c++) {
        int32_t *lab = malloc(sizeof *lab * (size_t)TN_MAX(HW, 1));
        int32_t *parent = malloc(sizeof *parent * (size_t)(HW + 1));
        int64_t p = norm_at[c], q = anom_at[c];
        uint32_t regions = 0, *sz = size + all_at[c];
        if (!lab || !parent) {
            nomem = 1;
            goto done;
        }
        for (int64_t b = N * c / P; b < N * (c + 1) / P; b++) {
            const uint8_t *m = masks + b * HW;
            int32_t count = 0;
            if (any_set(m, HW)) {
                count = label8(lab, parent, m, H, W);
                for (int32_t r = 0; r < count; r++) sz[regions + r] = 0;
            }
            for (int64_t i = 0; i < HW; i++) {
                uint64_t k = f64 ? key_f64(((const double *)maps)[b * HW + i])
                                 : key_f32(((const float *)maps)[b * HW + i]);
                int keep = key_bucket(k, f64, cb) <= cut;
                if (m[i]) {
                    uint32_t r = regions + (uint32_t)lab[i] - 1;  // labels are 1-based
                    sz[r]++;
                    if (keep) {
                        if (f64) ((uint64_t *)s->anom)[q] = k;
                        else ((uint32_t *)s->anom)[q] = (uint32_t)k;
                        s->region[q++] = r;
                    }
                } else if (keep) {
                    if (f64) ((uint64_t *)s->norm)[p++] = k;
                    else ((uint32_t *)s->norm)[p++] = (uint32_t)k;
                }
            }
            regions += (uint32_t)count;
        }
        reg_at[c + 1] = regions;
    done:
        free(lab);
        free(parent);
    }
    if (nomem) {
        status = TN_ENOMEM;
        goto exit;
    }
    // Global region ids and sizes.
    for (int c = 0; c < P; c++) reg_at[c + 1] += reg_at[c];
    s->nregions = reg_at[P];
    s->inv_size = malloc(sizeof *s->inv_size * (size_t)TN_MAX(s->nregions, 1));
    if (!s->inv_size) {
        status = TN_ENOMEM;
        goto exit;
    }
    for (int c = 0; c < P; c++) {
        for (int64_t r = 0; r < reg_at[c + 1] - reg_at[c]; r++)
            s->inv_size[reg_at[c] + r] = 1.0 / (double)size[all_at[c] + r];
        for (int64_t q = anom_at[c]; q < anom_at[c + 1]; q++) s->region[q] += (uint32_t)reg_at[c];
    }
    free(size);
    size = NULL;

    tmp = malloc(ks * (size_t)TN_MAX(TN_MAX(s->nnorm, s->nanom), 1));
    ptmp = malloc(sizeof *ptmp * (size_t)TN_MAX(s->nanom, 1));
    if (!tmp || !ptmp) {
        status = TN_ENOMEM;
        goto exit;
    }
    if (f64) {
        status = radix_sort_u64(s->norm, tmp, NULL, NULL, s->nnorm);
        if (status == TN_OK) status = radix_sort_u64(s->anom, tmp, s->region, ptmp, s->nanom);
    } else {
        status = radix_sort_u32(s->norm, tmp, NULL, NULL, s->nnorm);
        if (status == TN_OK) status = radix_sort_u32(s->anom, tmp, s->region, ptmp, s->nanom);
    }

exit:
    free(hist);
    free(all_at);
    free(norm_at);
    free(anom_at);
    free(reg_at);
    free(size);
    free(tmp);
    free(ptmp);
    if (status != TN_OK) pro_sorted_free(s);
    return status;
}

int pro_regions(int32_t *region, uint32_t **size, int64_t *nregions, const uint8_t *masks,
                int64_t N, int64_t H, int64_t W) {
    *size = NULL;
    *nregions = 0;
    const int64_t HW = H * W;
    if (N < 0 || H < 0 || W < 0 || HW >= INT32_MAX) return TN_EINVAL;
    // at[b + 1]: regions of image b, then (prefix sums) of images 0..b.
    int64_t *at = calloc((size_t)N + 1, sizeof *at);
    if (!at) return TN_ENOMEM;
    int status = TN_OK, nomem = 0;
    // Pass 1: each mask labelled in place, ids 1..count of its own.
#pragma omp parallel reduction(| : nomem) if (N * HW >= PAR_MIN)
    {
        int32_t *parent = malloc(sizeof *parent * (size_t)(HW + 1));
        nomem = !parent;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < N; b++) {
            if (!parent) continue;
            const uint8_t *m = masks + b * HW;
            int32_t *r = region + b * HW;
            if (any_set(m, HW)) at[b + 1] = label8(r, parent, m, H, W);
            else memset(r, 0, sizeof *r * (size_t)HW);
        }
        free(parent);
    }
    if (nomem) {
        status = TN_ENOMEM;
        goto exit;
    }
    for (int64_t b = 0; b < N; b++) at[b + 1] += at[b];
    if (at[N] >= INT32_MAX) {
        status = TN_EINVAL;
        goto exit;
    }
    if (at[N] > 0 && !(*size = calloc((size_t)at[N], sizeof **size))) {
        status = TN_ENOMEM;
        goto exit;
    }
    // Pass 2: global ids; image b's regions are [at[b], at[b + 1]), so the
    // threads count sizes in disjoint ranges.
#pragma omp parallel for schedule(static) if (N * HW >= PAR_MIN)
    for (int64_t b = 0; b < N; b++) {
        if (at[b + 1] == at[b]) continue;
        int32_t *r = region + b * HW;
        for (int64_t i = 0; i < HW; i++)
            if (r[i]) {
                r[i] += (int32_t)at[b];
                (*size)[r[i] - 1]++;
            }
    }
    *nregions = at[N];
exit:
    free(at);
    if (status != TN_OK) {
        free(*size);
        *size = NULL;
    }
    return status;
}

// Compensated (Neumaier) sum: the PRO sum adds up to 10^7 terms 1 / |r|,
// and stays exact to about one rounding this way.
typedef struct {
    double sum, c;
} ksum;

static inline void ksum_add(ksum *k, double x) {
    double t = k->sum + x;
    k->c += fabs(k->sum) >= fabs(x) ? (k->sum - t) + x : (x - t) + k->sum;
    k->sum = t;
}

// The merge (see roc.c): past every key equal to the next smallest one,
// counting normal pixels in *i and adding anomalous ones to *pro.
static inline uint64_t next_threshold(const pro_sorted *s, int64_t *i, int64_t *j, ksum *pro) {
    const int f64 = s->f64;
    uint64_t kn = *i < s->nnorm ? key_at(s->norm, f64, *i) : UINT64_MAX;
    uint64_t ka = *j < s->nanom ? key_at(s->anom, f64, *j) : UINT64_MAX;
    uint64_t k = TN_MIN(kn, ka);
    while (*i < s->nnorm && key_at(s->norm, f64, *i) == k) (*i)++;
    while (*j < s->nanom && key_at(s->anom, f64, *j) == k) ksum_add(pro, s->inv_size[s->region[(*j)++]]);
    return k;
}

int64_t pro_curve(double *fpr, double *pro, double *thr, const pro_sorted *s) {
    const double N = (double)s->nnorm_all, R = (double)s->nregions;
    int64_t i = 0, j = 0, m = 1;
    ksum sum = {0, 0};
    if (fpr) fpr[0] = 0, pro[0] = 0, thr[0] = INFINITY;
    while (i < s->nnorm || j < s->nanom) {
        uint64_t k = next_threshold(s, &i, &j, &sum);
        if (fpr) {
            fpr[m] = (double)i / N;
            pro[m] = fmin((sum.sum + sum.c) / R, 1.0);
            thr[m] = key_value(k, s->f64);
        }
        m++;
        if ((double)i / N > s->max_fpr) break;
    }
    return m;
}

// The official trapezoid(fpr, pro, x_max): segments up to fpr_limit, then
// the one crossing it cut at pro interpolated linearly. Between two scores
// of anomalous pixels the curve is flat (only the FPR moves), so each such
// run of normal pixels is one segment y * dx, found by a plain scan: the
// sweep does no arithmetic per normal pixel. f64 is a constant at both
// call sites, so each gets its own loop.
static inline double aupro_sweep(const pro_sorted *s, double limit, const int f64) {
    const double N = (double)s->nnorm_all, R = (double)s->nregions;
    int64_t i = 0, j = 0;
    ksum sum = {0, 0};
    double x0 = 0, y0 = 0, area = 0;
    for (;;) {
        uint64_t ka = j < s->nanom ? key_at(s->anom, f64, j) : UINT64_MAX;
        while (i < s->nnorm && key_at(s->norm, f64, i) < ka) i++;
        double x1 = (double)i / N;
        if (x1 >= limit) return (area + y0 * (limit - x0)) / limit;
        area += y0 * (x1 - x0);
        x0 = x1;
        if (j == s->nanom) return area / limit;  // unreachable: the last x is 1
        // The tie group at ka: anomalous pixels and any normal ones.
        while (i < s->nnorm && key_at(s->norm, f64, i) == ka) i++;
        while (j < s->nanom && key_at(s->anom, f64, j) == ka)
            ksum_add(&sum, s->inv_size[s->region[j++]]);
        x1 = (double)i / N;
        double y1 = fmin((sum.sum + sum.c) / R, 1.0);
        if (x1 > limit) {
            double y = y0 + (y1 - y0) * (limit - x0) / (x1 - x0);
            return (area + 0.5 * (y + y0) * (limit - x0)) / limit;
        }
        area += 0.5 * (y1 + y0) * (x1 - x0);
        x0 = x1, y0 = y1;
        if (x1 == limit) return area / limit;
    }
}

double aupro(const pro_sorted *s, double fpr_limit) {
    return s->f64 ? aupro_sweep(s, fpr_limit, 1) : aupro_sweep(s, fpr_limit, 0);
}
