// Glue for the ODE step kernels (csrc/ode/ode.c): argument conversion, shape
// checks, GIL release. Used by timenet.flow's adaptive RK45 (Dormand-Prince).
#include "glue.h"

#include <limits.h>
#include <stdio.h>

#include "ode/ode.h"

// Stage arrays: a list/tuple of K float32 arrays, each with the shape of `like`.
// On success *arrs holds K new references (release with release_ks).
static int collect_ks(PyObject *seq, const char *op, PyArrayObject *like,
                      PyArrayObject **arrs, const float **ptrs, int *K) {
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s: ks must be a list of float32 arrays, got %s", op,
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > TN_ODE_MAXK) {
        PyErr_Format(PyExc_ValueError, "%s: ks must hold 1 to %d arrays, got %zd", op,
                     TN_ODE_MAXK, n);
        return -1;
    }
    char expect[200], got[160];
    snprintf(expect, sizeof expect, "%s (the shape of y)",
             tn_describe((PyObject *)like, got, sizeof got));
    for (Py_ssize_t j = 0; j < n; j++) {
        char name[32];
        snprintf(name, sizeof name, "ks[%zd]", j);
        PyArrayObject *a = tn_f32(PySequence_Fast_GET_ITEM(seq, j), op, name,
                                  PyArray_NDIM(like), expect);
        if (a && tn_check_dims(a, op, name, PyArray_NDIM(like), PyArray_DIMS(like),
                               expect) < 0)
            Py_CLEAR(a);
        if (!a) {
            for (Py_ssize_t i = 0; i < j; i++) Py_DECREF(arrs[i]);
            return -1;
        }
        arrs[j] = a;
        ptrs[j] = TN_F32(a);
    }
    *K = (int)n;
    return 0;
}

static void release_ks(PyArrayObject **arrs, int K) {
    for (int j = 0; j < K; j++) Py_XDECREF(arrs[j]);
}

// coeffs: K floats; h: a float or B floats (one step per sample), as float64.
static PyArrayObject *as_vec(PyObject *obj, const char *op, const char *name, npy_intp n,
                             int allow_scalar) {
    PyArrayObject *a = tn_as(obj, NPY_FLOAT64, op, name);
    if (!a) return NULL;
    if (allow_scalar && PyArray_SIZE(a) == 1 && n != 1) {
        // Broadcast one step size to every sample.
        double v = *(double *)PyArray_DATA(a);
        Py_DECREF(a);
        a = tn_empty(1, &n, NPY_FLOAT64);
        if (!a) return NULL;
        for (npy_intp i = 0; i < n; i++) ((double *)PyArray_DATA(a))[i] = v;
        return a;
    }
    if (PyArray_NDIM(a) > 1 || PyArray_SIZE(a) != n) {
        char got[160];
        PyErr_Format(PyExc_ValueError, "%s: %s must have %ld values%s, got %s", op, name,
                     (long)n, allow_scalar ? " (one per sample) or be a scalar" : "",
                     tn_describe((PyObject *)a, got, sizeof got));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

// y as (B, D): B = first dim, D = the rest.
static int batch_dims(PyArrayObject *y, const char *op, int *B, ptrdiff_t *D) {
    if (PyArray_DIM(y, 0) > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: batch of %ld samples is too large", op,
                     (long)PyArray_DIM(y, 0));
        return -1;
    }
    *B = (int)PyArray_DIM(y, 0);
    *D = PyArray_NDIM(y) > 1 ? (ptrdiff_t)(PyArray_SIZE(y) / PyArray_DIM(y, 0)) : 1;
    return 0;
}

PyDoc_STRVAR(ode_combine_doc,
"ode_combine(y, ks, coeffs, h, out=None)\n--\n\n"
"One Runge-Kutta stage combination, fused: y + h * sum_j coeffs[j] * ks[j].\n\n"
"y: float32 array (B, ...) -- B independent samples; ks: list of K <= 16\n"
"float32 arrays of y's shape; coeffs: K floats (zeros are skipped); h: the\n"
"step size, a float or (B,) floats, one per sample. Sums in float64.\n"
"Returns a new array, or writes into `out` (float32, y's shape; may be y).");

static PyObject *py_ode_combine(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"y", "ks", "coeffs", "h", "out", NULL};
    const char *op = "ode_combine";
    PyObject *y_obj, *ks_obj, *c_obj, *h_obj, *out_obj = Py_None, *ret = NULL;
    PyArrayObject *y = NULL, *coeffs = NULL, *h = NULL, *out = NULL;
    PyArrayObject *ks[TN_ODE_MAXK];
    const float *kp[TN_ODE_MAXK];
    int K = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|O:ode_combine", kwlist, &y_obj, &ks_obj,
                                     &c_obj, &h_obj, &out_obj))
        return NULL;
    if (!(y = tn_f32(y_obj, op, "y", -1, "(B, ...)"))) goto exit;
    if (PyArray_NDIM(y) < 1) {
        PyErr_Format(PyExc_ValueError, "%s: y must have a batch dimension (B, ...)", op);
        goto exit;
    }
    if (collect_ks(ks_obj, op, y, ks, kp, &K) < 0) goto exit;
    int B;
    ptrdiff_t D;
    if (batch_dims(y, op, &B, &D) < 0) goto exit;
    if (!(coeffs = as_vec(c_obj, op, "coeffs", K, 0))) goto exit;
    if (!(h = as_vec(h_obj, op, "h", B, 1))) goto exit;
    if (out_obj == Py_None) {
        if (!(out = tn_empty(PyArray_NDIM(y), PyArray_DIMS(y), NPY_FLOAT32))) goto exit;
    } else {
        char expect[200], got[160];
        snprintf(expect, sizeof expect, "%s (the shape of y)",
                 tn_describe((PyObject *)y, got, sizeof got));
        if (!(out = tn_f32(out_obj, op, "out", PyArray_NDIM(y), expect))) goto exit;
        if (tn_check_dims(out, op, "out", PyArray_NDIM(y), PyArray_DIMS(y), expect) < 0)
            goto exit;
        if (!PyArray_ISWRITEABLE(out)) {
            PyErr_Format(PyExc_ValueError, "%s: out must be writeable", op);
            goto exit;
        }
        // out may be y itself (element i reads y[i] before writing it), but
        // not one of the stages, nor overlap anything partially.
        for (int j = 0; j < K; j++)
            if (PyArray_BYTES(out) < PyArray_BYTES(ks[j]) + PyArray_NBYTES(ks[j]) &&
                PyArray_BYTES(ks[j]) < PyArray_BYTES(out) + PyArray_NBYTES(out)) {
                PyErr_Format(PyExc_ValueError, "%s: out must not overlap ks[%d]", op, j);
                goto exit;
            }
        if (out != y && PyArray_BYTES(out) < PyArray_BYTES(y) + PyArray_NBYTES(y) &&
            PyArray_BYTES(y) < PyArray_BYTES(out) + PyArray_NBYTES(out)) {
            PyErr_Format(PyExc_ValueError, "%s: out must be y itself or not overlap it", op);
            goto exit;
        }
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = ode_combine(TN_F32(out), TN_F32(y), kp, (const double *)PyArray_DATA(coeffs), K,
                         (const double *)PyArray_DATA(h), B, D);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = (PyObject *)out;
    Py_INCREF(ret);
exit:
    release_ks(ks, K);
    Py_XDECREF(y); Py_XDECREF(coeffs); Py_XDECREF(h); Py_XDECREF(out);
    return ret;
}

PyDoc_STRVAR(ode_error_norm_doc,
"ode_error_norm(ks, coeffs, h, y, y_new, rtol, atol)\n--\n\n"
"scipy's RK45 error norm, fused, per sample b:\n"
"  err = h[b] * sum_j coeffs[j] * ks[j][b]    (the embedded error estimate)\n"
"  sc  = atol + rtol * max(|y[b]|, |y_new[b]|)\n"
"  norm[b] = sqrt(mean((err / sc)^2))\n"
"ks: list of K float32 arrays of y's shape (B, ...); coeffs: K floats; h: a\n"
"float or (B,) floats; y, y_new: float32 (B, ...). Returns (B,) float64; a\n"
"step is accepted where norm < 1.");

static PyObject *py_ode_error_norm(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ks", "coeffs", "h", "y", "y_new", "rtol", "atol", NULL};
    const char *op = "ode_error_norm";
    PyObject *ks_obj, *c_obj, *h_obj, *y_obj, *yn_obj, *ret = NULL;
    double rtol, atol;
    PyArrayObject *y = NULL, *y_new = NULL, *coeffs = NULL, *h = NULL, *norm = NULL;
    PyArrayObject *ks[TN_ODE_MAXK];
    const float *kp[TN_ODE_MAXK];
    int K = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOdd:ode_error_norm", kwlist, &ks_obj,
                                     &c_obj, &h_obj, &y_obj, &yn_obj, &rtol, &atol))
        return NULL;
    if (!(rtol >= 0.0) || !(atol >= 0.0) || !(rtol + atol > 0.0)) {
        PyErr_Format(PyExc_ValueError, "%s: rtol and atol must be >= 0 and not both 0, got "
                     "rtol=%g, atol=%g", op, rtol, atol);
        return NULL;
    }
    if (!(y = tn_f32(y_obj, op, "y", -1, "(B, ...)"))) goto exit;
    if (PyArray_NDIM(y) < 1) {
        PyErr_Format(PyExc_ValueError, "%s: y must have a batch dimension (B, ...)", op);
        goto exit;
    }
    {
        char expect[200], got[160];
        snprintf(expect, sizeof expect, "%s (the shape of y)",
                 tn_describe((PyObject *)y, got, sizeof got));
        if (!(y_new = tn_f32(yn_obj, op, "y_new", PyArray_NDIM(y), expect))) goto exit;
        if (tn_check_dims(y_new, op, "y_new", PyArray_NDIM(y), PyArray_DIMS(y), expect) < 0)
            goto exit;
    }
    if (collect_ks(ks_obj, op, y, ks, kp, &K) < 0) goto exit;
    int B;
    ptrdiff_t D;
    if (batch_dims(y, op, &B, &D) < 0) goto exit;
    if (!(coeffs = as_vec(c_obj, op, "coeffs", K, 0))) goto exit;
    if (!(h = as_vec(h_obj, op, "h", B, 1))) goto exit;
    npy_intp nb = B;
    if (!(norm = tn_empty(1, &nb, NPY_FLOAT64))) goto exit;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = ode_error_norm((double *)PyArray_DATA(norm), kp,
                            (const double *)PyArray_DATA(coeffs), K,
                            (const double *)PyArray_DATA(h), TN_F32(y), TN_F32(y_new), rtol,
                            atol, B, D);
    Py_END_ALLOW_THREADS
    if (status != TN_OK) {
        tn_error(status, op);
        goto exit;
    }
    ret = (PyObject *)norm;
    Py_INCREF(ret);
exit:
    release_ks(ks, K);
    Py_XDECREF(y); Py_XDECREF(y_new); Py_XDECREF(coeffs); Py_XDECREF(h); Py_XDECREF(norm);
    return ret;
}

PyMethodDef tn_ode_methods[] = {
    {"ode_combine", (PyCFunction)(void (*)(void))py_ode_combine, METH_VARARGS | METH_KEYWORDS,
     ode_combine_doc},
    {"ode_error_norm", (PyCFunction)(void (*)(void))py_ode_error_norm,
     METH_VARARGS | METH_KEYWORDS, ode_error_norm_doc},
    {NULL, NULL, 0, NULL},
};
