// Shared glue helpers (see glue.h).
#include "glue.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "checks.h"

PyObject *tn_error(int status, const char *op) {
    switch (status) {
    case TN_ENOMEM: PyErr_Format(PyExc_MemoryError, "%s: out of memory", op); break;
    case TN_ENAN: PyErr_Format(PyExc_ValueError, "%s: input contains NaN or inf", op); break;
    case TN_EUNDEF: PyErr_Format(PyExc_ValueError, "%s: result is undefined for this input", op); break;
    case TN_EINVAL: PyErr_Format(PyExc_ValueError, "%s: invalid argument", op); break;
    default: PyErr_Format(PyExc_RuntimeError, "%s: internal error (status %d)", op, status);
    }
    return NULL;
}

void tn_errorf(PyObject *exc, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    PyErr_SetString(exc, msg);
}

const char *tn_describe(PyObject *obj, char *buf, size_t n) {
    if (!PyArray_Check(obj)) {
        snprintf(buf, n, "%s", Py_TYPE(obj)->tp_name);
        return buf;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    size_t k = 0;
    k += snprintf(buf + k, n - k, "(");
    for (int i = 0; i < PyArray_NDIM(a) && k < n; i++)
        k += snprintf(buf + k, n - k, i ? ", %ld" : "%ld", (long)PyArray_DIM(a, i));
    if (PyArray_NDIM(a) == 1 && k < n) k += snprintf(buf + k, n - k, ",");
    if (k < n) {
        PyArray_Descr *d = PyArray_DESCR(a);
        const char *swap = PyArray_ISBYTESWAPPED(a) ? " byte-swapped" : "";
        PyObject *name = PyObject_Str((PyObject *)d);
        snprintf(buf + k, n - k, ") %s%s", name ? PyUnicode_AsUTF8(name) : "?", swap);
        Py_XDECREF(name);
        if (!name) PyErr_Clear();
    }
    return buf;
}

int tn_check_dims(PyArrayObject *a, const char *op, const char *name, int ndim,
                  const npy_intp *dims, const char *expect) {
    return tn_check_shape((PyObject *)a, op, name, ndim, dims, expect);
}

// The layout every strict input needs once its type is right: C-contiguous,
// aligned, no zero-size dim (the kernels assume all three).
static int check_layout(PyArrayObject *a, const char *op, const char *name) {
    char got[160];
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: %s must be C-contiguous and aligned (use np.ascontiguousarray), got %s",
                     op, name, tn_describe((PyObject *)a, got, sizeof got));
        return -1;
    }
    for (int i = 0; i < PyArray_NDIM(a); i++)
        if (PyArray_DIM(a, i) == 0) {
            PyErr_Format(PyExc_ValueError, "%s: %s has a zero-size dimension: %s", op, name,
                         tn_describe((PyObject *)a, got, sizeof got));
            return -1;
        }
    return 0;
}

// tn_f32 for an array of `type`, named `tname` in messages.
static PyArrayObject *strict_array(PyObject *obj, int type, const char *tname, const char *op,
                                   const char *name, int ndim, const char *expect) {
    char got[160];
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a numpy %s array %s, got %s", op, name,
                     tname, expect, tn_describe(obj, got, sizeof got));
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != type || PyArray_ISBYTESWAPPED(a)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_describe(obj, got, sizeof got));
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_describe(obj, got, sizeof got));
        return NULL;
    }
    if (check_layout(a, op, name) < 0) return NULL;
    Py_INCREF(a);
    return a;
}

PyArrayObject *tn_f32(PyObject *obj, const char *op, const char *name, int ndim,
                      const char *expect) {
    return strict_array(obj, NPY_FLOAT32, "float32", op, name, ndim, expect);
}

PyArrayObject *tn_f32_min_ndim(PyObject *obj, const char *op, const char *name, int min_ndim,
                               const char *expect) {
    PyArrayObject *a = tn_f32(obj, op, name, -1, expect);
    if (a && tn_check_min_ndim((PyObject *)a, op, name, min_ndim, expect) < 0) Py_CLEAR(a);
    return a;
}

PyArrayObject *tn_f32_expect(PyObject *obj, const char *op, const char *name,
                             const tn_expect *e) {
    PyArrayObject *a = tn_f32(obj, op, name, e->ndim, e->text);
    if (a && tn_check_expect((PyObject *)a, op, name, e) < 0) Py_CLEAR(a);
    return a;
}

PyArrayObject *tn_f64_expect(PyObject *obj, const char *op, const char *name,
                             const tn_expect *e) {
    PyArrayObject *a = strict_array(obj, NPY_FLOAT64, "float64", op, name, e->ndim, e->text);
    if (a && tn_check_expect((PyObject *)a, op, name, e) < 0) Py_CLEAR(a);
    return a;
}

PyArrayObject *tn_index(PyObject *obj, int type, const char *op, const char *name, int ndim,
                        const char *expect) {
    char got[160];
    const char *tname = type == NPY_INT64 ? "int64" : "int32";
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != type ||
        PyArray_ISBYTESWAPPED((PyArrayObject *)obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_describe(obj, got, sizeof got));
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_describe(obj, got, sizeof got));
        return NULL;
    }
    if (check_layout(a, op, name) < 0) return NULL;
    Py_INCREF(a);
    return a;
}

PyArrayObject *tn_as(PyObject *obj, int type, const char *op, const char *name) {
    char got[160];
    PyArrayObject *raw = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!raw) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be a real array, got %s", op, name,
                     tn_describe(obj, got, sizeof got));
        return NULL;
    }
    // Real kinds only (bool, integer, float): complex, object or string arrays
    // would "convert" with a silent loss or a confusing numpy message.
    if (!(PyArray_ISBOOL(raw) || PyArray_ISINTEGER(raw) || PyArray_ISFLOAT(raw))) {
        PyErr_Format(PyExc_TypeError, "%s: %s cannot be converted to %s (must be a real array), "
                     "got %s", op, name, PyArray_DescrFromType(type)->typeobj->tp_name,
                     tn_describe((PyObject *)raw, got, sizeof got));
        Py_DECREF(raw);
        return NULL;
    }
    // FORCECAST: float64 -> float32 is what evaluation-side callers want.
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)raw, type,
                                                         NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(raw);
    return a;
}

PyArrayObject *tn_zeros_f32(int ndim, const npy_intp *dims) {
    return (PyArrayObject *)PyArray_ZEROS(ndim, dims, NPY_FLOAT32, 0);
}

PyArrayObject *tn_empty(int ndim, const npy_intp *dims, int type) {
    return (PyArrayObject *)PyArray_EMPTY(ndim, dims, type, 0);
}
