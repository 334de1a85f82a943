// Evaluation metrics for anomaly detection: ROC / AUROC, F1-max, and the
// PRO curve / AUPRO of the official MVTec AD evaluation. Pure C, no Python.
//
// Every metric is a sweep over the scores sorted once in descending order,
// one curve point per distinct score value. A sample counts as "predicted
// positive" at threshold t when score >= t. Scores come as float (f64 = 0)
// or double (f64 = 1) and must be finite; labels and masks are bytes,
// non-zero = positive / anomalous.
//
// Use: *_sort() once (the slow part, threaded), then any number of the cheap
// sweeps on its result, then *_sorted_free(). Curve functions take NULL
// outputs to return just the number of points, so callers can size them.
#ifndef TIMENET_METRICS_H
#define TIMENET_METRICS_H

#include "common.h"

// Scores split by class, each sorted by descending score (as sort keys, see
// sort.h: uint32_t when !f64, uint64_t when f64).
typedef struct {
    void *pos, *neg;      // (npos,), (nneg,) keys
    int64_t npos, nneg;
    int f64;
} roc_sorted;

// scores is (n,) float or double; labels is (n,) bytes. n < 2^32.
// Returns TN_OK, TN_ENAN (a score is NaN or inf), TN_ENOMEM or TN_EINVAL.
// On success the caller owns s and frees it with roc_sorted_free; on failure
// s holds nothing.
int roc_sort(roc_sorted *s, const void *scores, int f64, const uint8_t *labels, int64_t n);
void roc_sorted_free(roc_sorted *s);

// The ROC curve as sklearn.metrics.roc_curve returns it: a first point
// (0, 0, +inf), then one point per distinct score in descending order; with
// drop_intermediate, points collinear with both neighbours (zero second
// difference of FP and TP counts) are left out, as sklearn does.
// fpr, tpr, thr are (m,) outputs or all NULL; returns m. Needs npos, nneg > 0.
int64_t roc_curve(double *fpr, double *tpr, double *thr, const roc_sorted *s,
                  int drop_intermediate);

// Area under the ROC curve (trapezoids, ties counted one half), computed
// exactly in integers and rounded once. Needs npos, nneg > 0.
double auroc(const roc_sorted *s);

// Max over thresholds of F1 = 2 TP / (2 TP + FP + FN), and the threshold
// reaching it (the lowest one on exact ties). Needs npos > 0.
void f1_max(double *f1, double *thr, const roc_sorted *s);

// Pixels of a test set split into normal and anomalous, each sorted by
// descending score; anomalous pixels carry the id of their ground-truth
// region (8-connected component of one mask, numbered over the whole set).
// Only the pixels the curve up to fpr = max_fpr needs are kept: those at or
// above about the score where the FPR passes max_fpr (all when max_fpr = 1),
// which for AUPRO at 0.3 skips sorting most normal pixels.
typedef struct {
    void *norm, *anom;    // (nnorm,), (nanom,) kept keys
    uint32_t *region;     // (nanom,) region id of each anomalous key, 0-based
    double *inv_size;     // (nregions,) 1 / pixels in the region
    int64_t nnorm, nanom; // kept pixels
    int64_t nnorm_all;    // all normal pixels, the FPR's denominator
    int64_t nregions;
    double max_fpr;
    int f64;
} pro_sorted;

// maps is (N, H, W) float or double; masks is (N, H, W) bytes; max_fpr > 0.
// Returns TN_OK, TN_ENAN, TN_ENOMEM or TN_EINVAL (H * W >= 2^31).
int pro_sort(pro_sorted *s, const void *maps, int f64, const uint8_t *masks, int64_t N,
             int64_t H, int64_t W, double max_fpr);
void pro_sorted_free(pro_sorted *s);

// The PRO curve: a first point (0, 0, +inf), then one point per distinct
// score in descending order: fpr = normal pixels >= t / all normal pixels,
// pro = mean over all regions of (region pixels >= t) / (region pixels).
// The curve ends at the first point with fpr > max_fpr (the last point,
// (1, 1), when max_fpr >= 1). fpr, pro, thr are (m,) outputs or all NULL;
// returns m. Needs nnorm_all, nregions > 0.
int64_t pro_curve(double *fpr, double *pro, double *thr, const pro_sorted *s);

// Area under the PRO curve for fpr in [0, fpr_limit] (trapezoids, the curve
// linearly interpolated at fpr_limit), divided by fpr_limit: the official
// MVTec AD AU-PRO. 0 < fpr_limit <= s->max_fpr, fpr_limit <= 1.
// Needs nnorm_all, nregions > 0.
double aupro(const pro_sorted *s, double fpr_limit);

// The ground-truth regions alone, for a PRO curve swept elsewhere (the CUDA
// backend sorts on the device, csrc/cuda/metrics.cu): region (N, H, W) out,
// 0 for a normal pixel, else 1 + its region id, the ids numbered as
// pro_sort numbers them (image by image, 8-connected); *size (*nregions,)
// the pixels in each region, malloc'd (the caller frees it; NULL when there
// is no region). masks is (N, H, W) bytes. Returns TN_OK, TN_ENOMEM or
// TN_EINVAL (H * W >= 2^31, or 2^31 - 1 regions or more).
int pro_regions(int32_t *region, uint32_t **size, int64_t *nregions, const uint8_t *masks,
                int64_t N, int64_t H, int64_t W);

// Connected components of one binary image, 8-connected (the 3x3 structure
// of the official evaluation; scipy.ndimage.label's default is 4).
// labels is (H, W) out: 0 background, components 1..count in raster order
// of their first pixel. parent is (H * W + 1,) scratch. mask is (H, W),
// non-zero = foreground. H * W < 2^31. Returns count.
int32_t label8(int32_t *labels, int32_t *parent, const uint8_t *mask, int64_t H, int64_t W);

#endif
