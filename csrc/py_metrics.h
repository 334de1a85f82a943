// The metric glue's argument checks, shared by the CPU entry points
// (py_metrics.c) and their CUDA versions (py_cuda_metrics.c), so that both
// accept the same labels and masks and raise the same errors. Each returns
// NULL / -1 with the exception set. Included after glue.h.
#ifndef TIMENET_PY_METRICS_H
#define TIMENET_PY_METRICS_H

#include "glue.h"

// Labels and masks: bool and uint8 arrays are read as they are, non-zero =
// positive (so 0/255 masks work). Other integer and float arrays must be
// >= 0 and not NaN (this catches sklearn's {-1, 1} convention, which would
// otherwise make every label positive) and become bool. A new reference.
PyArrayObject *tn_metrics_labels(PyObject *obj, const char *op, const char *name);
// ... that must be (n,) for n scores, or (N, H, W) = dims for maps.
PyArrayObject *tn_metrics_labels_for(PyObject *obj, const char *op, npy_intp n);
PyArrayObject *tn_metrics_masks_for(PyObject *obj, const char *op, const npy_intp *dims);

// Scores (n,) or maps (N, H, W): `ndim` dims (`want` expected, named by
// `expect`), none of them 0; `got` describes the argument for the message.
int tn_metrics_check_input(const char *op, const char *name, int ndim, const npy_intp *dims,
                           int want, const char *expect, const char *got);

// A sort's failure: TN_ENAN names the input, TN_EINVAL says `too_large`
// ("has 2^32 or more elements (not supported)"), others via tn_error.
void tn_metrics_raise(int status, const char *op, const char *name, const char *too_large);

// After the sort: ROC and AUROC need both classes (need_neg), F1 a positive;
// PRO needs a region and a normal pixel.
int tn_metrics_check_classes(const char *op, int64_t npos, int64_t nneg, int need_neg);
int tn_metrics_check_pro(const char *op, int64_t nregions, int64_t nnorm);

// ValueError unless 0 < x <= 1 (max_fpr, fpr_limit).
int tn_metrics_check_fraction(double x, const char *op, const char *name);

// Three new (m,) float64 arrays (fpr, tpr or pro, thresholds), or -1 with
// MemoryError; the caller releases them.
int tn_metrics_new_curve(npy_intp m, PyArrayObject **a, PyArrayObject **b, PyArrayObject **c);

#define TN_METRICS_ROC_TOO_LARGE "has 2^32 or more elements (not supported)"
#define TN_METRICS_PRO_TOO_LARGE "images are too large (H * W must be < 2^31)"

#endif
