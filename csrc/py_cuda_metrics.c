// Glue for the metrics on the GPU (csrc/cuda/metrics.cu): cuda_roc_curve,
// cuda_auroc, cuda_f1_max, cuda_pro_curve and cuda_aupro take the CPU
// functions' arguments (py_metrics.c) with the scores or maps as a float32
// DeviceArray, and return what those return, on the host.
//
// Labels and masks stay host arrays: they go through the CPU glue's own
// conversion and checks (py_metrics.h), so both raise the same errors, and
// the masks' regions are labelled on the host (pro_regions). The sort and
// the cumulative counts run on the device; results are copied back.
#include "py_cuda.h"
#include "py_metrics.h"

#ifdef TN_HAVE_CUDA

#include <stdlib.h>

#include "metrics/metrics.h"

#define TN_CUDA_PRO_TOO_LARGE \
    "images are too large (H * W must be < 2^31) or have 2^31 - 1 regions or more"

// The scores or maps: a float32 DeviceArray with `want` dims, none 0; its
// device is made current. Borrowed, or NULL with the exception set.
static tn_DeviceArray *device_scores(PyObject *obj, const char *op, const char *name, int want,
                                     const char *expect) {
    char got[200];
    if (!tn_DeviceArray_Check(obj) || ((tn_DeviceArray *)obj)->typenum != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be a float32 CUDA array %s, got %s (timenet.metrics takes "
                     "host arrays to the CPU)", op, name, expect,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    tn_DeviceArray *a = (tn_DeviceArray *)obj;
    npy_intp dims[TN_DA_MAXDIM];
    for (int i = 0; i < a->ndim; i++) dims[i] = a->shape[i];
    if (tn_metrics_check_input(op, name, a->ndim, dims, want, expect,
                               tn_da_describe(obj, got, sizeof got)) < 0)
        return NULL;
    const int st = tn_cuda_set_device(a->device);
    if (st != TN_OK) {
        tn_cuda_raise(st, op);
        return NULL;
    }
    return a;
}

// Labels and masks are read on the host, where they can be range-checked
// (a DeviceArray would be refused by numpy with a less helpful message).
static int host_labels(PyObject *obj, const char *op, const char *name) {
    if (!tn_DeviceArray_Check(obj)) return 0;
    char got[200];
    PyErr_Format(PyExc_TypeError,
                 "%s: %s must be a host (numpy) array, got %s: they are range-checked on the "
                 "host; pass %s.numpy()", op, name, tn_da_describe(obj, got, sizeof got), name);
    return -1;
}

// A failed device sort: the metric's own messages for NaN and size limits,
// the CUDA message otherwise.
static void raise_sort(int status, const char *op, const char *name, const char *too_large) {
    if (status == TN_ENAN || status == TN_EINVAL) tn_metrics_raise(status, op, name, too_large);
    else tn_cuda_raise(status, op);
}

// (scores, labels) -> *s (py_metrics.c's sort_scores on the device).
static int sort_scores(tn_cuda_roc_sorted *s, PyObject *scores_obj, PyObject *labels_obj,
                       const char *op, int need_neg) {
    int ret = -1, status;
    PyArrayObject *labels = NULL;
    *s = (tn_cuda_roc_sorted){0};
    tn_DeviceArray *scores = device_scores(scores_obj, op, "scores", 1, "(n,)");
    if (!scores || host_labels(labels_obj, op, "labels") < 0) return -1;
    const npy_intp n = scores->shape[0];
    if (!(labels = tn_metrics_labels_for(labels_obj, op, n))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = tn_cuda_roc_sort(s, (const float *)scores->ptr, PyArray_DATA(labels), n);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        raise_sort(status, op, "scores", TN_METRICS_ROC_TOO_LARGE);
        goto exit;
    }
    if (tn_metrics_check_classes(op, s->npos, s->nneg, need_neg) < 0) goto exit;
    ret = 0;
exit:
    if (ret < 0) tn_cuda_roc_sorted_free(s);
    Py_XDECREF(labels);
    return ret;
}

// (maps, masks) -> *s: regions labelled on the host, pixels sorted on the
// device (py_metrics.c's sort_maps).
static int sort_maps(tn_cuda_pro_sorted *s, PyObject *maps_obj, PyObject *masks_obj,
                     const char *op) {
    int ret = -1, status;
    PyArrayObject *masks = NULL;
    int32_t *region = NULL;
    uint32_t *size = NULL;
    int64_t nregions = 0;
    *s = (tn_cuda_pro_sorted){0};
    tn_DeviceArray *maps = device_scores(maps_obj, op, "maps", 3, "(N, H, W)");
    if (!maps || host_labels(masks_obj, op, "masks") < 0) return -1;
    const npy_intp dims[3] = {maps->shape[0], maps->shape[1], maps->shape[2]};
    const int64_t n = (int64_t)dims[0] * dims[1] * dims[2];
    if (!(masks = tn_metrics_masks_for(masks_obj, op, dims))) goto exit;
    if (!(region = malloc(sizeof *region * (size_t)n))) {
        PyErr_NoMemory();
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    status = pro_regions(region, &size, &nregions, PyArray_DATA(masks), dims[0], dims[1],
                         dims[2]);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_metrics_raise(status, op, "maps", TN_CUDA_PRO_TOO_LARGE);
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    status = tn_cuda_pro_sort(s, (const float *)maps->ptr, region, size, nregions, n);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        raise_sort(status, op, "maps", TN_CUDA_PRO_TOO_LARGE);
        goto exit;
    }
    if (tn_metrics_check_pro(op, s->nregions, s->nnorm) < 0) goto exit;
    ret = 0;
exit:
    if (ret < 0) tn_cuda_pro_sorted_free(s);
    free(region);
    free(size);
    Py_XDECREF(masks);
    return ret;
}

static PyObject *py_cuda_roc_curve(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_roc_curve";
    static char *kwlist[] = {"scores", "labels", "drop_intermediate", NULL};
    PyObject *scores, *labels, *ret = NULL;
    PyArrayObject *fpr = NULL, *tpr = NULL, *thr = NULL;
    int drop = 1;
    int64_t m = 0;
    tn_cuda_roc_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|p:cuda_roc_curve", kwlist, &scores, &labels,
                                     &drop))
        return NULL;
    if (sort_scores(&s, scores, labels, op, 1) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_roc_curve(NULL, NULL, NULL, &m, &s, drop));
    if (tn_metrics_new_curve(m, &fpr, &tpr, &thr) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_roc_curve(PyArray_DATA(fpr), PyArray_DATA(tpr), PyArray_DATA(thr), &m,
                                   &s, drop));
    ret = PyTuple_Pack(3, fpr, tpr, thr);
exit:
    tn_cuda_roc_sorted_free(&s);
    Py_XDECREF(fpr);
    Py_XDECREF(tpr);
    Py_XDECREF(thr);
    return ret;
}

static PyObject *py_cuda_auroc(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_auroc";
    static char *kwlist[] = {"scores", "labels", NULL};
    PyObject *scores, *labels, *ret = NULL;
    double area = 0;
    tn_cuda_roc_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_auroc", kwlist, &scores, &labels))
        return NULL;
    if (sort_scores(&s, scores, labels, op, 1) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_auroc(&area, &s));
    ret = PyFloat_FromDouble(area);
exit:
    tn_cuda_roc_sorted_free(&s);
    return ret;
}

static PyObject *py_cuda_f1_max(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_f1_max";
    static char *kwlist[] = {"scores", "labels", NULL};
    PyObject *scores, *labels, *ret = NULL;
    double f1 = 0, thr = 0;
    tn_cuda_roc_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_f1_max", kwlist, &scores, &labels))
        return NULL;
    if (sort_scores(&s, scores, labels, op, 0) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_f1_max(&f1, &thr, &s));
    ret = Py_BuildValue("(dd)", f1, thr);
exit:
    tn_cuda_roc_sorted_free(&s);
    return ret;
}

static PyObject *py_cuda_pro_curve(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_pro_curve";
    static char *kwlist[] = {"maps", "masks", "max_fpr", NULL};
    PyObject *maps, *masks, *ret = NULL;
    PyArrayObject *fpr = NULL, *pro = NULL, *thr = NULL;
    double max_fpr = 1.0;
    int64_t m = 0;
    tn_cuda_pro_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|d:cuda_pro_curve", kwlist, &maps, &masks,
                                     &max_fpr))
        return NULL;
    if (tn_metrics_check_fraction(max_fpr, op, "max_fpr") < 0) goto exit;
    if (sort_maps(&s, maps, masks, op) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_pro_curve(NULL, NULL, NULL, &m, &s, max_fpr));
    if (tn_metrics_new_curve(m, &fpr, &pro, &thr) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_pro_curve(PyArray_DATA(fpr), PyArray_DATA(pro), PyArray_DATA(thr), &m,
                                   &s, max_fpr));
    ret = PyTuple_Pack(3, fpr, pro, thr);
exit:
    tn_cuda_pro_sorted_free(&s);
    Py_XDECREF(fpr);
    Py_XDECREF(pro);
    Py_XDECREF(thr);
    return ret;
}

static PyObject *py_cuda_aupro(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_aupro";
    static char *kwlist[] = {"maps", "masks", "fpr_limit", NULL};
    PyObject *maps, *masks, *ret = NULL;
    double limit = 0.3, area = 0;
    tn_cuda_pro_sorted s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|d:cuda_aupro", kwlist, &maps, &masks, &limit))
        return NULL;
    if (tn_metrics_check_fraction(limit, op, "fpr_limit") < 0) goto exit;
    if (sort_maps(&s, maps, masks, op) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_aupro(&area, &s, limit));
    ret = PyFloat_FromDouble(area);
exit:
    tn_cuda_pro_sorted_free(&s);
    return ret;
}

#define KWFUNC(f) (PyCFunction)(void (*)(void))(f)

PyMethodDef tn_cuda_metrics_methods[] = {
    {"cuda_roc_curve", KWFUNC(py_cuda_roc_curve), METH_VARARGS | METH_KEYWORDS,
     "cuda_roc_curve(scores, labels, drop_intermediate=True)\n--\n\n"
     "roc_curve with scores a float32 CUDA array (n,); labels on the host."},
    {"cuda_auroc", KWFUNC(py_cuda_auroc), METH_VARARGS | METH_KEYWORDS,
     "cuda_auroc(scores, labels)\n--\n\n"
     "auroc with scores a float32 CUDA array (n,); labels on the host."},
    {"cuda_f1_max", KWFUNC(py_cuda_f1_max), METH_VARARGS | METH_KEYWORDS,
     "cuda_f1_max(scores, labels)\n--\n\n"
     "f1_max with scores a float32 CUDA array (n,); labels on the host."},
    {"cuda_pro_curve", KWFUNC(py_cuda_pro_curve), METH_VARARGS | METH_KEYWORDS,
     "cuda_pro_curve(maps, masks, max_fpr=1.0)\n--\n\n"
     "pro_curve with maps a float32 CUDA array (N, H, W); masks on the host."},
    {"cuda_aupro", KWFUNC(py_cuda_aupro), METH_VARARGS | METH_KEYWORDS,
     "cuda_aupro(maps, masks, fpr_limit=0.3)\n--\n\n"
     "aupro with maps a float32 CUDA array (N, H, W); masks on the host."},
    {NULL, NULL, 0, NULL},
};

#else  // CPU-only build: no CUDA metrics

PyMethodDef tn_cuda_metrics_methods[] = {
    {NULL, NULL, 0, NULL},
};

#endif
