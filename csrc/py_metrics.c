// Glue for the evaluation metrics (csrc/metrics/): lenient argument
// conversion (any array-like; copies only where needed), shape checks with
// precise messages, the GIL released around the kernels.
//
// The argument checks are shared with the CUDA versions (py_metrics.h).
//
// Every function sorts its input once into a roc_sorted / pro_sorted that
// owns copies of the keys, so the converted inputs are dropped right after
// the sort, and the caller's arrays are only ever read.
#include "py_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"

// Scores and maps: float32 arrays keep their own (faster, smaller) code
// path; everything else numeric becomes float64, exact for bool, float16,
// and integers up to 2^53. Both paths give identical results.
static PyArrayObject *as_scores(PyObject *obj, const char *op, const char *name, int *f64) {
    int f32 = PyArray_Check(obj) && PyArray_TYPE((PyArrayObject *)obj) == NPY_FLOAT32;
    *f64 = !f32;
    return tn_as(obj, f32 ? NPY_FLOAT32 : NPY_FLOAT64, op, name);
}

PyArrayObject *tn_metrics_labels(PyObject *obj, const char *op, const char *name) {
    char got[160];
    PyArrayObject *a = NULL, *ret = NULL;
    PyObject *lo = NULL;
    a = (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_NOTSWAPPED);
    if (!a) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_Format(PyExc_TypeError, "%s: %s must be a bool or integer array, got %s", op, name,
                     tn_describe(obj, got, sizeof got));
        Py_XDECREF(et); Py_XDECREF(ev); Py_XDECREF(tb);
        goto exit;
    }
    int t = PyArray_TYPE(a);
    if (t == NPY_BOOL || t == NPY_UINT8) {
        ret = a;
        a = NULL;
        goto exit;
    }
    if (!PyTypeNum_ISINTEGER(t) && !PyTypeNum_ISFLOAT(t)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a bool or integer array, got %s", op, name,
                     tn_describe((PyObject *)a, got, sizeof got));
        goto exit;
    }
    if ((PyTypeNum_ISSIGNED(t) || PyTypeNum_ISFLOAT(t)) && PyArray_SIZE(a) > 0) {
        double v = (lo = PyObject_CallMethod((PyObject *)a, "min", NULL)) ? PyFloat_AsDouble(lo) : 0;
        if (PyErr_Occurred()) goto exit;
        if (!(v >= 0)) {
            PyErr_Format(PyExc_ValueError,
                         "%s: %s must be 0/1 or bool (non-zero counts as positive), got %s "
                         "values; for {-1, 1} labels pass labels == 1",
                         op, name, isnan(v) ? "NaN" : "negative");
            goto exit;
        }
    }
    ret = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)a, NPY_BOOL,
                                            NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
exit:
    Py_XDECREF(a);
    Py_XDECREF(lo);
    return ret;
}

PyArrayObject *tn_metrics_labels_for(PyObject *obj, const char *op, npy_intp n) {
    char got[160];
    PyArrayObject *labels = tn_metrics_labels(obj, op, "labels");
    if (labels && (PyArray_NDIM(labels) != 1 || PyArray_DIM(labels, 0) != n)) {
        PyErr_Format(PyExc_ValueError, "%s: labels must be (n,) with n = %zd like scores, got %s",
                     op, (Py_ssize_t)n, tn_describe((PyObject *)labels, got, sizeof got));
        Py_CLEAR(labels);
    }
    return labels;
}

PyArrayObject *tn_metrics_masks_for(PyObject *obj, const char *op, const npy_intp *dims) {
    char expect[96];
    PyArrayObject *masks = tn_metrics_labels(obj, op, "masks");
    snprintf(expect, sizeof expect, "(N, H, W) = (%zd, %zd, %zd) like maps", (Py_ssize_t)dims[0],
             (Py_ssize_t)dims[1], (Py_ssize_t)dims[2]);
    if (masks && tn_check_dims(masks, op, "masks", 3, dims, expect) < 0) Py_CLEAR(masks);
    return masks;
}

int tn_metrics_check_input(const char *op, const char *name, int ndim, const npy_intp *dims,
                           int want, const char *expect, const char *got) {
    if (ndim != want) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s, got %s", op, name, expect, got);
        return -1;
    }
    for (int i = 0; i < ndim; i++)
        if (dims[i] == 0) {
            PyErr_Format(PyExc_ValueError, "%s: %s is empty: %s", op, name, got);
            return -1;
        }
    return 0;
}

void tn_metrics_raise(int status, const char *op, const char *name, const char *too_large) {
    if (status == TN_ENAN) PyErr_Format(PyExc_ValueError, "%s: %s contains NaN or inf", op, name);
    else if (status == TN_EINVAL) PyErr_Format(PyExc_ValueError, "%s: %s %s", op, name, too_large);
    else tn_error(status, op);
}

int tn_metrics_check_classes(const char *op, int64_t npos, int64_t nneg, int need_neg) {
    if (npos > 0 && (nneg > 0 || !need_neg)) return 0;
    PyErr_Format(PyExc_ValueError,
                 "%s: labels has no %s entry; the metric is undefined with one class", op,
                 npos == 0 ? "positive (non-zero)" : "negative (zero)");
    return -1;
}

int tn_metrics_check_pro(const char *op, int64_t nregions, int64_t nnorm) {
    if (nregions == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: masks has no anomalous pixel; PRO is undefined without a region", op);
        return -1;
    }
    if (nnorm == 0) {
        PyErr_Format(PyExc_ValueError, "%s: masks has no normal pixel; FPR is undefined", op);
        return -1;
    }
    return 0;
}

int tn_metrics_check_fraction(double x, const char *op, const char *name) {
    if (x > 0 && x <= 1) return 0;
    char buf[32];
    snprintf(buf, sizeof buf, "%g", x);
    PyErr_Format(PyExc_ValueError, "%s: %s must be in (0, 1], got %s", op, name, buf);
    return -1;
}

int tn_metrics_new_curve(npy_intp m, PyArrayObject **a, PyArrayObject **b, PyArrayObject **c) {
    *a = tn_empty(1, &m, NPY_FLOAT64);
    *b = tn_empty(1, &m, NPY_FLOAT64);
    *c = tn_empty(1, &m, NPY_FLOAT64);
    return *a && *b && *c ? 0 : -1;
}

// (scores, labels) -> *s, sorted with the GIL released. need_neg: both
// classes must be present (ROC, AUROC), else positives only (F1).
static int sort_scores(roc_sorted *s, PyObject *scores_obj, PyObject *labels_obj, const char *op,
                       int need_neg) {
    int ret = -1, f64 = 0, status;
    char got[160];
    PyArrayObject *scores = NULL, *labels = NULL;
    *s = (roc_sorted){0};
    if (!(scores = as_scores(scores_obj, op, "scores", &f64))) goto exit;
    if (tn_metrics_check_input(op, "scores", PyArray_NDIM(scores), PyArray_DIMS(scores), 1,
                               "(n,)", tn_describe((PyObject *)scores, got, sizeof got)) < 0)
        goto exit;
    npy_intp n = PyArray_DIM(scores, 0);
    if (!(labels = tn_metrics_labels_for(labels_obj, op, n))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = roc_sort(s, PyArray_DATA(scores), f64, PyArray_DATA(labels), n);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_metrics_raise(status, op, "scores", TN_METRICS_ROC_TOO_LARGE);
        goto exit;
    }
    if (tn_metrics_check_classes(op, s->npos, s->nneg, need_neg) < 0) goto exit;
    ret = 0;
exit:
    if (ret < 0) roc_sorted_free(s);
    Py_XDECREF(scores);
    Py_XDECREF(labels);
    return ret;
}

// (maps, masks) -> *s, sorted with the GIL released, for the curve up to
// fpr = max_fpr.
static int sort_maps(pro_sorted *s, PyObject *maps_obj, PyObject *masks_obj, const char *op,
                     double max_fpr) {
    int ret = -1, f64 = 0, status;
    char got[160];
    PyArrayObject *maps = NULL, *masks = NULL;
    *s = (pro_sorted){0};
    if (!(maps = as_scores(maps_obj, op, "maps", &f64))) goto exit;
    if (tn_metrics_check_input(op, "maps", PyArray_NDIM(maps), PyArray_DIMS(maps), 3,
                               "(N, H, W)", tn_describe((PyObject *)maps, got, sizeof got)) < 0)
        goto exit;
    const npy_intp *dims = PyArray_DIMS(maps);
    if (!(masks = tn_metrics_masks_for(masks_obj, op, dims))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = pro_sort(s, PyArray_DATA(maps), f64, PyArray_DATA(masks), dims[0], dims[1], dims[2],
                      max_fpr);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_metrics_raise(status, op, "maps", TN_METRICS_PRO_TOO_LARGE);
        goto exit;
    }
    if (tn_metrics_check_pro(op, s->nregions, s->nnorm_all) < 0) goto exit;
    ret = 0;
exit:
    if (ret < 0) pro_sorted_free(s);
    Py_XDECREF(maps);
    Py_XDECREF(masks);
    return ret;
}

static PyObject *py_roc_curve(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"scores", "labels", "drop_intermediate", NULL};
    PyObject *scores, *labels, *ret = NULL;
    PyArrayObject *fpr = NULL, *tpr = NULL, *thr = NULL;
    int drop = 1;
    int64_t m;
    roc_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|p:roc_curve", kwlist, &scores, &labels, &drop))
        return NULL;
    if (sort_scores(&s, scores, labels, "roc_curve", 1) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    m = roc_curve(NULL, NULL, NULL, &s, drop);
    Py_END_ALLOW_THREADS
    if (tn_metrics_new_curve(m, &fpr, &tpr, &thr) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    roc_curve(PyArray_DATA(fpr), PyArray_DATA(tpr), PyArray_DATA(thr), &s, drop);
    Py_END_ALLOW_THREADS
    ret = PyTuple_Pack(3, fpr, tpr, thr);
exit:
    roc_sorted_free(&s);
    Py_XDECREF(fpr);
    Py_XDECREF(tpr);
    Py_XDECREF(thr);
    return ret;
}

static PyObject *py_auroc(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"scores", "labels", NULL};
    PyObject *scores, *labels, *ret = NULL;
    double area;
    roc_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:auroc", kwlist, &scores, &labels)) return NULL;
    if (sort_scores(&s, scores, labels, "auroc", 1) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    area = auroc(&s);
    Py_END_ALLOW_THREADS
    ret = PyFloat_FromDouble(area);
exit:
    roc_sorted_free(&s);
    return ret;
}

static PyObject *py_f1_max(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"scores", "labels", NULL};
    PyObject *scores, *labels, *ret = NULL;
    double f1, thr;
    roc_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:f1_max", kwlist, &scores, &labels)) return NULL;
    if (sort_scores(&s, scores, labels, "f1_max", 0) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    f1_max(&f1, &thr, &s);
    Py_END_ALLOW_THREADS
    ret = Py_BuildValue("(dd)", f1, thr);
exit:
    roc_sorted_free(&s);
    return ret;
}

static PyObject *py_pro_curve(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"maps", "masks", "max_fpr", NULL};
    PyObject *maps, *masks, *ret = NULL;
    PyArrayObject *fpr = NULL, *pro = NULL, *thr = NULL;
    double max_fpr = 1.0;
    int64_t m;
    pro_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|d:pro_curve", kwlist, &maps, &masks, &max_fpr))
        return NULL;
    if (tn_metrics_check_fraction(max_fpr, "pro_curve", "max_fpr") < 0) goto exit;
    if (sort_maps(&s, maps, masks, "pro_curve", max_fpr) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    m = pro_curve(NULL, NULL, NULL, &s);
    Py_END_ALLOW_THREADS
    if (tn_metrics_new_curve(m, &fpr, &pro, &thr) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    pro_curve(PyArray_DATA(fpr), PyArray_DATA(pro), PyArray_DATA(thr), &s);
    Py_END_ALLOW_THREADS
    ret = PyTuple_Pack(3, fpr, pro, thr);
exit:
    pro_sorted_free(&s);
    Py_XDECREF(fpr);
    Py_XDECREF(pro);
    Py_XDECREF(thr);
    return ret;
}

static PyObject *py_aupro(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"maps", "masks", "fpr_limit", NULL};
    PyObject *maps, *masks, *ret = NULL;
    double limit = 0.3, area;
    pro_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|d:aupro", kwlist, &maps, &masks, &limit))
        return NULL;
    if (tn_metrics_check_fraction(limit, "aupro", "fpr_limit") < 0) goto exit;
    if (sort_maps(&s, maps, masks, "aupro", limit) < 0) goto exit;
    Py_BEGIN_ALLOW_THREADS
    area = aupro(&s, limit);
    Py_END_ALLOW_THREADS
    ret = PyFloat_FromDouble(area);
exit:
    pro_sorted_free(&s);
    return ret;
}

static PyObject *py_pro_regions(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "pro_regions";
    static char *kwlist[] = {"masks", NULL};
    PyObject *masks_obj, *ret = NULL;
    PyArrayObject *masks = NULL, *region = NULL, *sizes = NULL;
    uint32_t *size = NULL;
    int64_t nregions = 0;
    int status;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:pro_regions", kwlist, &masks_obj)) return NULL;
    if (!(masks = tn_metrics_labels(masks_obj, op, "masks"))) goto exit;
    if (tn_check_dims(masks, op, "masks", 3, NULL, "(N, H, W)") < 0) goto exit;
    const npy_intp *dims = PyArray_DIMS(masks);
    if (!(region = tn_empty(3, dims, NPY_INT32))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = pro_regions(PyArray_DATA(region), &size, &nregions, PyArray_DATA(masks), dims[0],
                         dims[1], dims[2]);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_metrics_raise(status, op, "masks", TN_METRICS_PRO_TOO_LARGE);
        goto exit;
    }
    npy_intp r = (npy_intp)nregions;
    if (!(sizes = tn_empty(1, &r, NPY_UINT32))) goto exit;
    if (r) memcpy(PyArray_DATA(sizes), size, sizeof *size * (size_t)r);
    ret = PyTuple_Pack(2, region, sizes);
exit:
    free(size);
    Py_XDECREF(masks);
    Py_XDECREF(region);
    Py_XDECREF(sizes);
    return ret;
}

#define KWFUNC(f) (PyCFunction)(void (*)(void))(f)

PyMethodDef tn_metrics_methods[] = {
    {"roc_curve", KWFUNC(py_roc_curve), METH_VARARGS | METH_KEYWORDS,
     "roc_curve(scores, labels, drop_intermediate=True)\n--\n\n"
     "ROC curve (fpr, tpr, thresholds) as sklearn.metrics.roc_curve: first point\n"
     "(0, 0, inf), then one per distinct score, descending. scores (n,) finite;\n"
     "labels (n,), non-zero = positive; both classes must be present."},
    {"auroc", KWFUNC(py_auroc), METH_VARARGS | METH_KEYWORDS,
     "auroc(scores, labels)\n--\n\n"
     "Area under the ROC curve (= sklearn.metrics.roc_auc_score), ties counted one\n"
     "half. scores (n,) finite; labels (n,), non-zero = positive."},
    {"f1_max", KWFUNC(py_f1_max), METH_VARARGS | METH_KEYWORDS,
     "f1_max(scores, labels)\n--\n\n"
     "(f1, threshold): max F1 over thresholds t (positive when score >= t), the\n"
     "lowest such t on exact ties. labels must have a positive."},
    {"pro_curve", KWFUNC(py_pro_curve), METH_VARARGS | METH_KEYWORDS,
     "pro_curve(maps, masks, max_fpr=1.0)\n--\n\n"
     "PRO curve (fpr, pro, thresholds) of the official MVTec AD evaluation: first\n"
     "point (0, 0, inf), then one per distinct score, descending, up to the first\n"
     "point with fpr > max_fpr. maps (N, H, W) finite; masks (N, H, W), non-zero =\n"
     "anomalous, regions 8-connected."},
    {"aupro", KWFUNC(py_aupro), METH_VARARGS | METH_KEYWORDS,
     "aupro(maps, masks, fpr_limit=0.3)\n--\n\n"
     "Area under the PRO curve up to fpr_limit (interpolated there), divided by\n"
     "fpr_limit: the official MVTec AD AU-PRO."},
    {"pro_regions", KWFUNC(py_pro_regions), METH_VARARGS | METH_KEYWORDS,
     "pro_regions(masks)\n--\n\n"
     "(region, sizes): the ground-truth regions PRO averages over. region (N, H, W)\n"
     "int32 is 0 for a normal pixel, else 1 + the region id (8-connected components,\n"
     "numbered image by image); sizes (R,) uint32 their pixel counts."},
    {NULL, NULL, 0, NULL},
};
