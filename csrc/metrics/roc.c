// ROC curve, AUROC and F1-max over scores sorted once (see metrics.h).
//
// The scores of each class are sorted separately, keys only; a merge of the
// two sorted runs then visits the distinct scores in descending order with
// the exact FP and TP counts at each, which is all these metrics need.
#include "metrics.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "sort.h"

__extension__ typedef unsigned __int128 u128;

// Slices for the threaded split: a fixed count, so both passes agree.
// Inputs below PAR_MIN run on one thread (waking threads costs more).
#define SLICES 64
#define PAR_MIN (1 << 16)

void roc_sorted_free(roc_sorted *s) {
    free(s->pos);
    free(s->neg);
    s->pos = s->neg = NULL;
    s->npos = s->nneg = 0;
}

int roc_sort(roc_sorted *s, const void *scores, int f64, const uint8_t *labels, int64_t n) {
    s->pos = s->neg = NULL;
    s->npos = s->nneg = 0;
    s->f64 = f64;
    if (n < 0 || n >= ((int64_t)1 << 32)) return TN_EINVAL;
    size_t ks = f64 ? 8 : 4;

    // Positives per slice, then each slice writes its keys at its offset.
    int64_t pos_at[SLICES + 1] = {0}, neg_at[SLICES + 1] = {0};
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int c = 0; c < SLICES; c++) {
        int64_t lo = n * c / SLICES, hi = n * (c + 1) / SLICES, p = 0;
        for (int64_t i = lo; i < hi; i++) p += labels[i] != 0;
        pos_at[c + 1] = p;
        neg_at[c + 1] = hi - lo - p;
    }
    for (int c = 0; c < SLICES; c++) {
        pos_at[c + 1] += pos_at[c];
        neg_at[c + 1] += neg_at[c];
    }
    int64_t npos = pos_at[SLICES], nneg = neg_at[SLICES];
    void *pos = malloc(ks * (size_t)TN_MAX(npos, 1));
    void *neg = malloc(ks * (size_t)TN_MAX(nneg, 1));
    void *tmp = malloc(ks * (size_t)TN_MAX(TN_MAX(npos, nneg), 1));
    int status = TN_OK;
    if (!pos || !neg || !tmp) {
        status = TN_ENOMEM;
        goto fail;
    }

    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n >= PAR_MIN)
    for (int c = 0; c < SLICES; c++) {
        int64_t lo = n * c / SLICES, hi = n * (c + 1) / SLICES;
        int64_t p = pos_at[c], q = neg_at[c];
        if (f64) {
            const double *x = scores;
            uint64_t *kp = pos, *kn = neg;
            for (int64_t i = lo; i < hi; i++) {
                bad |= !finite_f64(x[i]);
                uint64_t k = key_f64(x[i]);
                if (labels[i]) kp[p++] = k; else kn[q++] = k;
            }
        } else {
            const float *x = scores;
            uint32_t *kp = pos, *kn = neg;
            for (int64_t i = lo; i < hi; i++) {
                bad |= !finite_f32(x[i]);
                uint32_t k = key_f32(x[i]);
                if (labels[i]) kp[p++] = k; else kn[q++] = k;
            }
        }
    }
    if (bad) {
        status = TN_ENAN;
        goto fail;
    }

    if (f64) {
        status = radix_sort_u64(pos, tmp, NULL, NULL, npos);
        if (status == TN_OK) status = radix_sort_u64(neg, tmp, NULL, NULL, nneg);
    } else {
        status = radix_sort_u32(pos, tmp, NULL, NULL, npos);
        if (status == TN_OK) status = radix_sort_u32(neg, tmp, NULL, NULL, nneg);
    }
    if (status != TN_OK) goto fail;
    free(tmp);
    s->pos = pos;
    s->neg = neg;
    s->npos = npos;
    s->nneg = nneg;
    return TN_OK;

fail:
    free(pos);
    free(neg);
    free(tmp);
    return status;
}

// The merge: from positions *i, *j in the sorted positives and negatives,
// take every key equal to the smallest next one (the highest remaining
// score). Returns that key; *i, *j advance past it, so they are the TP and
// FP counts at threshold = its score. Needs *i < npos or *j < nneg.
static inline uint64_t next_threshold(const roc_sorted *s, int64_t *i, int64_t *j) {
    const int f64 = s->f64;
    uint64_t kp = *i < s->npos ? key_at(s->pos, f64, *i) : UINT64_MAX;
    uint64_t kn = *j < s->nneg ? key_at(s->neg, f64, *j) : UINT64_MAX;
    uint64_t k = TN_MIN(kp, kn);
    while (*i < s->npos && key_at(s->pos, f64, *i) == k) (*i)++;
    while (*j < s->nneg && key_at(s->neg, f64, *j) == k) (*j)++;
    return k;
}

int64_t roc_curve(double *fpr, double *tpr, double *thr, const roc_sorted *s,
                  int drop_intermediate) {
    const double P = (double)s->npos, N = (double)s->nneg;
    int64_t m = 0;
#define EMIT(fp, tp, t)                     \
    do {                                    \
        if (fpr) {                          \
            fpr[m] = (double)(fp) / N;      \
            tpr[m] = (double)(tp) / P;      \
            thr[m] = (t);                   \
        }                                   \
        m++;                                \
    } while (0)
    EMIT(0, 0, INFINITY);
    // Window over three consecutive distinct thresholds a, b, c: b is kept
    // unless dropping applies and both counts change linearly through it.
    int64_t i = 0, j = 0;
    int64_t tp_a = 0, fp_a = 0, tp_b = 0, fp_b = 0;
    uint64_t k_b = 0;
    int have_a = 0, have_b = 0;
    while (i < s->npos || j < s->nneg) {
        uint64_t k = next_threshold(s, &i, &j);
        if (have_b) {
            int keep = !drop_intermediate || !have_a || fp_a - 2 * fp_b + j != 0 ||
                       tp_a - 2 * tp_b + i != 0;
            if (keep) EMIT(fp_b, tp_b, key_value(k_b, s->f64));
            tp_a = tp_b, fp_a = fp_b, have_a = 1;
        }
        tp_b = i, fp_b = j, k_b = k, have_b = 1;
    }
    if (have_b) EMIT(fp_b, tp_b, key_value(k_b, s->f64));
#undef EMIT
    return m;
}

double auroc(const roc_sorted *s) {
    // Twice the area in units of 1 / (P N): sum of dFP * (TP + TP_prev).
    // n < 2^32 bounds it by n^2 / 2 < 2^63.
    int64_t i = 0, j = 0, tp = 0, fp = 0;
    uint64_t area2 = 0;
    while (i < s->npos || j < s->nneg) {
        next_threshold(s, &i, &j);
        area2 += (uint64_t)(j - fp) * (uint64_t)(i + tp);
        tp = i, fp = j;
    }
    return (double)area2 / (2.0 * (double)s->npos * (double)s->nneg);
}

void f1_max(double *f1, double *thr, const roc_sorted *s) {
    // F1 = 2 TP / (TP + FP + P); fractions compared exactly (128-bit
    // cross products), so exact ties resolve to the lowest threshold.
    const int64_t P = s->npos;
    int64_t i = 0, j = 0;
    uint64_t best_num = 0, best_den = 1, best_key = 0;
    while (i < s->npos || j < s->nneg) {
        uint64_t k = next_threshold(s, &i, &j);
        uint64_t num = 2 * (uint64_t)i, den = (uint64_t)(i + j + P);
        if ((u128)num * best_den >= (u128)best_num * den) {
            best_num = num, best_den = den, best_key = k;
        }
    }
    *f1 = (double)best_num / (double)best_den;
    *thr = key_value(best_key, s->f64);
}
