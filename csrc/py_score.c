// Glue of the scoring family (csrc/score/, DESIGN.md §1.7): feature
// distances, bilinear upsampling, Gaussian filter, box pooling / image score,
// the map combination F. Evaluation-side, so inputs are converted leniently
// (tn_as: any real array-like, copied only when needed); outputs
// are fresh float32 arrays. The GIL is released around each kernel.
#include "glue.h"

#include <math.h>
#include <string.h>

#include "score/score.h"

// obj as a C-contiguous float32 array with `ndim` dims, none of size zero.
// Any real array-like is accepted (tn_as: bool, integer, float16/32/64, any
// byte order or strides, cast to float32): scores are evaluation-side, where
// a float64 map from numpy is normal.
static PyArrayObject *score_in(PyObject *obj, const char *op, const char *name, int ndim,
                               const char *expect) {
    char got[160];
    PyArrayObject *a = tn_as(obj, NPY_FLOAT32, op, name);
    if (!a) return NULL;
    int ok = ndim < 0 ? PyArray_NDIM(a) >= 1 : PyArray_NDIM(a) == ndim;
    for (int i = 0; ok && i < PyArray_NDIM(a); i++) ok = PyArray_DIM(a, i) > 0;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s with no zero-size dimension, got %s",
                     op, name, expect, tn_describe(obj, got, sizeof got));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

// b must have exactly a's shape.
static int same_shape(PyArrayObject *a, PyArrayObject *b, const char *op, const char *an,
                      const char *bn) {
    if (PyArray_NDIM(a) == PyArray_NDIM(b) &&
        !memcmp(PyArray_DIMS(a), PyArray_DIMS(b), PyArray_NDIM(a) * sizeof(npy_intp)))
        return 0;
    char ga[160], gb[160];
    PyErr_Format(PyExc_ValueError, "%s: %s and %s must have the same shape, got %s and %s", op,
                 an, bn, tn_describe((PyObject *)a, ga, sizeof ga),
                 tn_describe((PyObject *)b, gb, sizeof gb));
    return -1;
}

// a, b (N, C, h, w) -> (N, h, w): l2 (`squared` optional) or cosine.
static PyObject *distance(PyObject *args, PyObject *kwds, int cosine) {
    const char *op = cosine ? "cosine_distance" : "l2_distance";
    static char *kw_l2[] = {"a", "b", "squared", NULL};
    static char *kw_cos[] = {"a", "b", "eps", NULL};
    PyObject *ao, *bo, *ret = NULL;
    PyArrayObject *a = NULL, *b = NULL, *out = NULL;
    int squared = 0, status;
    double eps = 1e-8;
    int ok = cosine ? PyArg_ParseTupleAndKeywords(args, kwds, "OO|d:cosine_distance", kw_cos,
                                                  &ao, &bo, &eps)
                    : PyArg_ParseTupleAndKeywords(args, kwds, "OO|p:l2_distance", kw_l2, &ao,
                                                  &bo, &squared);
    if (!ok) return NULL;
    if (!(a = score_in(ao, op, "a", 4, "(N, C, h, w)"))) goto exit;
    if (!(b = score_in(bo, op, "b", 4, "(N, C, h, w)"))) goto exit;
    if (same_shape(a, b, op, "a", "b") < 0) goto exit;
    if (!(eps >= 0)) {
        PyErr_Format(PyExc_ValueError, "%s: eps must be >= 0, got %g", op, eps);
        goto exit;
    }
    npy_intp N = PyArray_DIM(a, 0), C = PyArray_DIM(a, 1), h = PyArray_DIM(a, 2),
             w = PyArray_DIM(a, 3);
    npy_intp dims[3] = {N, h, w};
    if (!(out = tn_empty(3, dims, NPY_FLOAT32))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = cosine ? score_cosine_distance(TN_F32(out), TN_F32(a), TN_F32(b), N, C, h * w, eps)
                    : score_l2_distance(TN_F32(out), TN_F32(a), TN_F32(b), N, C, h * w, squared);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = (PyObject *)out;
    out = NULL;
exit:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return ret;
}

static PyObject *py_l2_distance(PyObject *self, PyObject *args, PyObject *kwds) {
    return distance(args, kwds, 0);
}

static PyObject *py_cosine_distance(PyObject *self, PyObject *args, PyObject *kwds) {
    return distance(args, kwds, 1);
}

static PyObject *py_upsample_bilinear(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "upsample_bilinear";
    static char *kwlist[] = {"x", "H", "W", "align_corners", NULL};
    PyObject *xo, *ret = NULL;
    PyArrayObject *x = NULL, *out = NULL;
    Py_ssize_t H, W;
    int align = 0, status;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn|p:upsample_bilinear", kwlist, &xo, &H, &W,
                                     &align))
        return NULL;
    if (H < 1 || W < 1) {
        PyErr_Format(PyExc_ValueError, "%s: output size (H, W) must be >= 1, got (%zd, %zd)", op,
                     H, W);
        return NULL;
    }
    if (!(x = score_in(xo, op, "x", 3, "(N, h, w)"))) goto exit;
    npy_intp N = PyArray_DIM(x, 0), h = PyArray_DIM(x, 1), w = PyArray_DIM(x, 2);
    npy_intp dims[3] = {N, H, W};
    if (!(out = tn_empty(3, dims, NPY_FLOAT32))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = score_upsample_bilinear(TN_F32(out), TN_F32(x), N, h, w, H, W, align);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = (PyObject *)out;
    out = NULL;
exit:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return ret;
}

static PyObject *py_gaussian_filter(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "gaussian_filter";
    static char *kwlist[] = {"x", "sigma", "truncate", "mode", NULL};
    PyObject *xo, *ret = NULL;
    PyArrayObject *x = NULL, *out = NULL;
    double sigma, truncate = 4.0;
    const char *mode_s = "reflect";
    int mode, status;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Od|ds:gaussian_filter", kwlist, &xo, &sigma,
                                     &truncate, &mode_s))
        return NULL;
    if (!strcmp(mode_s, "reflect")) mode = SCORE_REFLECT;
    else if (!strcmp(mode_s, "mirror")) mode = SCORE_MIRROR;
    else if (!strcmp(mode_s, "nearest")) mode = SCORE_NEAREST;
    else {
        PyErr_Format(PyExc_ValueError,
                     "%s: mode must be 'reflect', 'mirror' or 'nearest' (scipy.ndimage names), "
                     "got '%s'", op, mode_s);
        return NULL;
    }
    // The radius must stay a small int: a huge sigma would ask for a huge kernel.
    if (!(sigma >= 0) || !(truncate >= 0) || sigma * truncate > 1e6) {
        PyErr_Format(PyExc_ValueError,
                     "%s: sigma and truncate must be >= 0 with sigma*truncate <= 1e6, got "
                     "sigma %g, truncate %g", op, sigma, truncate);
        return NULL;
    }
    if (!(x = score_in(xo, op, "x", 3, "(N, H, W)"))) goto exit;
    npy_intp N = PyArray_DIM(x, 0), H = PyArray_DIM(x, 1), W = PyArray_DIM(x, 2);
    if (!(out = tn_empty(3, PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = score_gaussian_filter(TN_F32(out), TN_F32(x), N, H, W, sigma, truncate, mode);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = (PyObject *)out;
    out = NULL;
exit:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return ret;
}

// Shared by box_pool and image_score: x (N, H, W) with H, W > rounds*(k-1).
static PyObject *pool(PyObject *args, PyObject *kwds, int image_max) {
    const char *op = image_max ? "image_score" : "box_pool";
    static char *kwlist[] = {"x", "kernel", "rounds", NULL};
    PyObject *xo, *ret = NULL;
    PyArrayObject *x = NULL, *out = NULL;
    int k = 8, rounds = 8, status;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, image_max ? "O|ii:image_score" : "O|ii:box_pool",
                                     kwlist, &xo, &k, &rounds))
        return NULL;
    if (k < 1 || rounds < 0 || k > 1 << 20 || rounds > 1 << 20) {
        PyErr_Format(PyExc_ValueError,
                     "%s: kernel must be >= 1 and rounds >= 0, got kernel %d, rounds %d", op, k,
                     rounds);
        return NULL;
    }
    if (!(x = score_in(xo, op, "x", 3, "(N, H, W)"))) goto exit;
    npy_intp N = PyArray_DIM(x, 0), H = PyArray_DIM(x, 1), W = PyArray_DIM(x, 2);
    npy_intp shrink = (npy_intp)rounds * (k - 1);
    if (H <= shrink || W <= shrink) {
        char got[160];
        PyErr_Format(PyExc_ValueError,
                     "%s: x must be (N, H, W) with H, W > rounds*(kernel-1) = %zd (%d rounds of "
                     "%dx%d stride-1 pooling without padding shrink the map by %d each), got %s",
                     op, (Py_ssize_t)shrink, rounds, k, k, k - 1,
                     tn_describe((PyObject *)x, got, sizeof got));
        goto exit;
    }
    npy_intp dims[3] = {N, H - shrink, W - shrink};
    if (!(out = image_max ? tn_empty(1, dims, NPY_FLOAT32) : tn_empty(3, dims, NPY_FLOAT32)))
        goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = image_max ? score_image_max(TN_F32(out), TN_F32(x), N, H, W, k, rounds)
                       : score_box_pool(TN_F32(out), TN_F32(x), N, H, W, k, rounds);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = (PyObject *)out;
    out = NULL;
exit:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return ret;
}

static PyObject *py_box_pool(PyObject *self, PyObject *args, PyObject *kwds) {
    return pool(args, kwds, 0);
}

static PyObject *py_image_score(PyObject *self, PyObject *args, PyObject *kwds) {
    return pool(args, kwds, 1);
}

static PyObject *py_combine_maps(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "combine_maps";
    static char *kwlist[] = {"d1", "d2", "w", "ratio", NULL};
    PyObject *d1o, *d2o, *ratio_o = Py_None, *ret = NULL;
    PyArrayObject *d1 = NULL, *d2 = NULL, *out = NULL;
    double w, ratio = 0, used = 0;
    int status;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOd|O:combine_maps", kwlist, &d1o, &d2o, &w,
                                     &ratio_o))
        return NULL;
    int compute = ratio_o == Py_None;
    if (!compute) {
        ratio = PyFloat_AsDouble(ratio_o);
        if (ratio == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "%s: ratio must be a float or None, got %s", op,
                         Py_TYPE(ratio_o)->tp_name);
            return NULL;
        }
    }
    if (!isfinite(w) || !isfinite(ratio)) {
        PyErr_Format(PyExc_ValueError, "%s: w and ratio must be finite, got w %g, ratio %g", op,
                     w, ratio);
        return NULL;
    }
    if (!(d1 = score_in(d1o, op, "d1", -1, "an array"))) goto exit;
    if (!(d2 = score_in(d2o, op, "d2", -1, "an array"))) goto exit;
    if (same_shape(d1, d2, op, "d1", "d2") < 0) goto exit;
    if (!(out = tn_empty(PyArray_NDIM(d1), PyArray_DIMS(d1), NPY_FLOAT32))) goto exit;
    Py_BEGIN_ALLOW_THREADS
    status = score_combine(TN_F32(out), &used, TN_F32(d1), TN_F32(d2), PyArray_SIZE(d1), w,
                           ratio, compute);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = Py_BuildValue("Od", (PyObject *)out, used);
exit:
    Py_XDECREF(d1);
    Py_XDECREF(d2);
    Py_XDECREF(out);
    return ret;
}

#define KW (PyCFunction)(void (*)(void))

PyMethodDef tn_score_methods[] = {
    {"l2_distance", KW py_l2_distance, METH_VARARGS | METH_KEYWORDS,
     "l2_distance(a, b, squared=False)\n--\n\n"
     "Euclidean distance over channels per position: a, b (N, C, h, w) -> (N, h, w)\n"
     "float32 (squared: the sum of squares). NaN/inf -> ValueError."},
    {"cosine_distance", KW py_cosine_distance, METH_VARARGS | METH_KEYWORDS,
     "cosine_distance(a, b, eps=1e-8)\n--\n\n"
     "1 - cos over channels per position, cos = a.b / (max(|a|, eps) max(|b|, eps))\n"
     "(torch cosine_similarity), clamped to [0, 2]: (N, C, h, w) -> (N, h, w)."},
    {"upsample_bilinear", KW py_upsample_bilinear, METH_VARARGS | METH_KEYWORDS,
     "upsample_bilinear(x, H, W, align_corners=False)\n--\n\n"
     "Bilinear resize (N, h, w) -> (N, H, W), PyTorch F.interpolate(mode='bilinear')\n"
     "with the given align_corners (False: half-pixel centres, PyTorch's default)."},
    {"gaussian_filter", KW py_gaussian_filter, METH_VARARGS | METH_KEYWORDS,
     "gaussian_filter(x, sigma, truncate=4.0, mode='reflect')\n--\n\n"
     "Gaussian filter of each (H, W) map of x (N, H, W), equal to\n"
     "scipy.ndimage.gaussian_filter(x, (0, sigma, sigma), mode=mode, truncate=truncate);\n"
     "radius int(truncate*sigma + 0.5); mode 'reflect', 'mirror' or 'nearest'."},
    {"box_pool", KW py_box_pool, METH_VARARGS | METH_KEYWORDS,
     "box_pool(x, kernel=8, rounds=8)\n--\n\n"
     "`rounds` times avg_pool2d(kernel, stride 1, no padding) of x (N, H, W):\n"
     "-> (N, H - rounds*(kernel-1), W - rounds*(kernel-1))."},
    {"image_score", KW py_image_score, METH_VARARGS | METH_KEYWORDS,
     "image_score(x, kernel=8, rounds=8)\n--\n\n"
     "The max of box_pool(x, kernel, rounds) per map: (N, H, W) -> (N,) float32."},
    {"combine_maps", KW py_combine_maps, METH_VARARGS | METH_KEYWORDS,
     "combine_maps(d1, d2, w, ratio=None)\n--\n\n"
     "F(d1, d2, w) = (w * ratio) * d1 + d2 for d1, d2 of one shape -> (out, ratio).\n"
     "ratio None: max(d2) / max(d1) over the given arrays (0 when max(d1) <= 0)."},
    {NULL, NULL, 0, NULL},
};
