// PRO curve and AUPRO, the official MVTec AD evaluation (see metrics.h).
//
// Bergmann et al.'s code builds per-pixel FP and PRO increments, argsorts
// all scores and takes cumulative sums. The same curve comes from one sort
// of the normal pixels (keys only) and one of the anomalous pixels (keys
// with their region id), merged: at each distinct score the FP count is a
// position in the normal run, and the PRO sum grows by 1 / |region| for
// every anomalous pixel passed. Memory: a key per pixel, a region id per
// anomalous pixel, and one sort buffer.
#include "metrics.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "sort.h"

void pro_sorted_free(pro_sorted *s) {
    free(s->norm);
    free(s->anom);
    free(s->region);
    free(s->inv_size);
    s->norm = s->anom = NULL;
    s->region = NULL;
    s->inv_size = NULL;
    s->nnorm = s->nanom = s->nregions = 0;
}

// Inputs below this many pixels run on one thread: waking threads would
// cost more than the work.
#define PAR_MIN (1 << 16)

// The top `bits` bits of a key: its bucket in the cut-off histogram.
static inline uint32_t key_bucket(uint64_t k, int f64, int bits) {
    return (uint32_t)(k >> ((f64 ? 64 : 32) - bits));
}

int pro_sort(pro_sorted *s, const void *maps, int f64, const uint8_t *masks, int64_t N,
             int64_t H, int64_t W, double max_fpr) {
    *s = (pro_sorted){.f64 = f64, .max_fpr = max_fpr};
    const int64_t HW = H * W;
    if (N < 0 || H < 0 || W < 0 || HW >= INT32_MAX || !(max_fpr > 0)) return TN_EINVAL;
    const size_t ks = f64 ? 8 : 4;
    const int nt = N * HW < PAR_MIN ? 1 : omp_get_max_threads();
    // 2^16 buckets resolve float32 scores to 1/128 (sign, exponent and 7
    // mantissa bits); small inputs make do with fewer.
    const int cb = N * HW < (1 << 20) ? 10 : 16;
    int status = TN_OK;
    // Per image (entry b + 1): anomalous pixels, kept normal and anomalous
    // pixels, regions; prefix sums of them give each image's offsets.
    int64_t *all_at = calloc((size_t)N + 1, sizeof *all_at);
    int64_t *norm_at = calloc((size_t)N + 1, sizeof *norm_at);
    int64_t *anom_at = calloc((size_t)N + 1, sizeof *anom_at);
    int64_t *reg_at = calloc((size_t)N + 1, sizeof *reg_at);
    int64_t *hist = calloc((size_t)nt << cb, sizeof *hist);
    uint32_t *lab_all = NULL, *ptmp = NULL;
    int64_t *size = NULL;
    void *tmp = NULL;
    if (!all_at || !norm_at || !anom_at || !reg_at || !hist) {
        status = TN_ENOMEM;
        goto exit;
    }

    // Pass 1: anomalous pixels per image, finiteness, and a histogram of
    // the normal pixels' keys by their top bits.
    int bad = 0;
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        int64_t *h = hist + ((int64_t)omp_get_thread_num() << cb);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < N; b++) {
            const uint8_t *m = masks + b * HW;
            int64_t a = 0;
            if (f64) {
                const double *x = (const double *)maps + b * HW;
                for (int64_t i = 0; i < HW; i++) {
                    bad |= !finite_f64(x[i]);
                    if (m[i]) a++; else h[key_bucket(key_f64(x[i]), 1, cb)]++;
                }
            } else {
                const float *x = (const float *)maps + b * HW;
                for (int64_t i = 0; i < HW; i++) {
                    bad |= !finite_f32(x[i]);
                    if (m[i]) a++; else h[key_bucket(key_f32(x[i]), 0, cb)]++;
                }
            }
            all_at[b + 1] = a;
        }
    }
    if (bad) {
        status = TN_ENAN;
        goto exit;
    }
    for (int64_t b = 0; b < N; b++) all_at[b + 1] += all_at[b];
    const int64_t nanom_all = all_at[N], nnorm_all = N * HW - nanom_all;

    // The sweep to max_fpr stops at the first point with FP / nnorm >
    // max_fpr, i.e. once `need` normal pixels are passed. Pixels in buckets
    // after the one holding the need-th smallest normal key are never
    // reached (equal keys share a bucket), so they are not kept.
    uint32_t cut = UINT32_MAX;
    if (nnorm_all > 0) {
        int64_t need = (int64_t)floor(max_fpr * (double)nnorm_all);
        while (need > 0 && (double)(need - 1) / (double)nnorm_all > max_fpr) need--;
        while (need <= nnorm_all && (double)need / (double)nnorm_all <= max_fpr) need++;
        if (need <= nnorm_all) {
            int64_t cum = 0;
            for (uint32_t k = 0; k < (1u << cb); k++) {
                for (int t = 0; t < nt; t++) cum += hist[((int64_t)t << cb) + k];
                if (cum >= need) {
                    cut = k;
                    break;
                }
            }
        }
    }
    free(hist);
    hist = NULL;

    // Pass 2: label each mask (8-connected), keeping every anomalous
    // pixel's image-local region in lab_all; count the kept pixels.
    lab_all = malloc(sizeof *lab_all * (size_t)TN_MAX(nanom_all, 1));
    if (!lab_all) {
        status = TN_ENOMEM;
        goto exit;
    }
    int nomem = 0;
#pragma omp parallel num_threads(nt) reduction(| : nomem)
    {
        int32_t *lab = malloc(sizeof *lab * (size_t)TN_MAX(HW, 1));
        int32_t *parent = malloc(sizeof *parent * (size_t)(HW + 1));
        if (!lab || !parent) nomem = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < N; b++) {
            if (nomem) continue;
            const uint8_t *m = masks + b * HW;
            int64_t q = all_at[b], kn = 0, ka = 0;
            if (all_at[b + 1] > q) reg_at[b + 1] = label8(lab, parent, m, H, W);
            for (int64_t i = 0; i < HW; i++) {
                uint64_t k = f64 ? key_f64(((const double *)maps)[b * HW + i])
                                 : key_f32(((const float *)maps)[b * HW + i]);
                int keep = key_bucket(k, f64, cb) <= cut;
                if (m[i]) lab_all[q++] = (uint32_t)lab[i], ka += keep;
                else kn += keep;
            }
            norm_at[b + 1] = kn;
            anom_at[b + 1] = ka;
        }
        free(lab);
        free(parent);
    }
    if (nomem) {
        status = TN_ENOMEM;
        goto exit;
    }
    for (int64_t b = 0; b < N; b++) {
        norm_at[b + 1] += norm_at[b];
        anom_at[b + 1] += anom_at[b];
        reg_at[b + 1] += reg_at[b];
    }
    s->nnorm_all = nnorm_all;
    s->nnorm = norm_at[N];
    s->nanom = anom_at[N];
    s->nregions = reg_at[N];
    s->norm = malloc(ks * (size_t)TN_MAX(s->nnorm, 1));
    s->anom = malloc(ks * (size_t)TN_MAX(s->nanom, 1));
    s->region = malloc(sizeof *s->region * (size_t)TN_MAX(s->nanom, 1));
    s->inv_size = malloc(sizeof *s->inv_size * (size_t)TN_MAX(s->nregions, 1));
    size = calloc((size_t)TN_MAX(s->nregions, 1), sizeof *size);
    if (!s->norm || !s->anom || !s->region || !s->inv_size || !size) {
        status = TN_ENOMEM;
        goto exit;
    }

    // Pass 3: write the kept keys, with global (0-based) region ids, and
    // count the pixels of every region (each image owns its id range).
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < N; b++) {
        const uint8_t *m = masks + b * HW;
        int64_t p = norm_at[b], q = anom_at[b], qa = all_at[b];
        const int64_t r0 = reg_at[b] - 1;
        for (int64_t i = 0; i < HW; i++) {
            uint64_t k = f64 ? key_f64(((const double *)maps)[b * HW + i])
                             : key_f32(((const float *)maps)[b * HW + i]);
            int keep = key_bucket(k, f64, cb) <= cut;
            if (m[i]) {
                int64_t r = r0 + lab_all[qa++];
                size[r]++;
                if (keep) {
                    if (f64) ((uint64_t *)s->anom)[q] = k;
                    else ((uint32_t *)s->anom)[q] = (uint32_t)k;
                    s->region[q++] = (uint32_t)r;
                }
            } else if (keep) {
                if (f64) ((uint64_t *)s->norm)[p++] = k;
                else ((uint32_t *)s->norm)[p++] = (uint32_t)k;
            }
        }
    }
    free(lab_all);
    lab_all = NULL;
    for (int64_t r = 0; r < s->nregions; r++) s->inv_size[r] = 1.0 / (double)size[r];

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
    free(all_at);
    free(norm_at);
    free(anom_at);
    free(reg_at);
    free(hist);
    free(lab_all);
    free(size);
    free(tmp);
    free(ptmp);
    if (status != TN_OK) pro_sorted_free(s);
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

double aupro(const pro_sorted *s, double fpr_limit) {
    // The official trapezoid(fpr, pro, x_max): segments up to fpr_limit,
    // then the one crossing it cut at pro interpolated linearly.
    const double N = (double)s->nnorm_all, R = (double)s->nregions;
    int64_t i = 0, j = 0;
    ksum sum = {0, 0};
    double x0 = 0, y0 = 0, area = 0;
    while (i < s->nnorm || j < s->nanom) {
        next_threshold(s, &i, &j, &sum);
        double x1 = (double)i / N, y1 = fmin((sum.sum + sum.c) / R, 1.0);
        if (x1 > fpr_limit) {
            double y = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0);
            area += 0.5 * (y + y0) * (fpr_limit - x0);
            break;
        }
        area += 0.5 * (y1 + y0) * (x1 - x0);
        x0 = x1, y0 = y1;
        if (x1 == fpr_limit) break;
    }
    return area / fpr_limit;
}
