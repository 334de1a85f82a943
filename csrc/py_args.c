// Host kinds of array arguments and the checks every spec uses (py_args.h).
#include "py_args.h"

#include <stdio.h>

static void from_numpy(tn_arg *a, PyArrayObject *x, PyObject *orig) {
    a->ref = (PyObject *)x;
    a->orig = orig;
    a->data = (float *)PyArray_DATA(x);
    a->ndim = PyArray_NDIM(x);
    a->dim = PyArray_DIMS(x);
    a->size = PyArray_SIZE(x);
    a->writeable = PyArray_ISWRITEABLE(x);
}

static int take_strict(tn_arg *a, PyObject *obj, const char *op, const char *name,
                       const char *expect, void *ctx) {
    PyArrayObject *x = tn_f32(obj, op, name, -1, expect);
    if (!x) return -1;
    from_numpy(a, x, obj);
    return 0;
}

static int take_any(tn_arg *a, PyObject *obj, const char *op, const char *name,
                    const char *expect, void *ctx) {
    PyArrayObject *x = tn_as(obj, NPY_FLOAT32, op, name);
    if (!x) return -1;
    from_numpy(a, x, obj);
    return 0;
}

static int empty_host(tn_arg *a, int ndim, const Py_ssize_t *dim, void *ctx) {
    PyArrayObject *x = tn_empty(ndim, dim, NPY_FLOAT32);
    if (!x) return -1;
    from_numpy(a, x, NULL);
    return 0;
}

const tn_arg_kind tn_host_f32 = {take_strict, empty_host};
const tn_arg_kind tn_host_any = {take_any, empty_host};

void tn_arg_clear(tn_arg *a) {
    Py_CLEAR(a->ref);
    a->data = NULL;
}

const char *tn_arg_describe(const tn_arg *a, char *buf, size_t n) {
    return tn_describe_arg(a->orig ? a->orig : a->ref, buf, n);
}

int tn_arg_nonzero(const tn_arg *a, const char *op, const char *name) {
    for (int i = 0; i < a->ndim; i++)
        if (a->dim[i] == 0) {
            char got[200];
            PyErr_Format(PyExc_ValueError, "%s: %s has a zero-size dimension: %s", op, name,
                         tn_arg_describe(a, got, sizeof got));
            return -1;
        }
    return 0;
}

int tn_arg_overlap(const tn_arg *a, const tn_arg *b) {
    const char *p = (const char *)a->data, *q = (const char *)b->data;
    return p < q + b->size * (Py_ssize_t)sizeof(float) &&
           q < p + a->size * (Py_ssize_t)sizeof(float);
}

PyObject *tn_arg_result(PyObject *result, int status, const char *op,
                        PyObject *(*raise)(int status, const char *op)) {
    if (status == TN_OK) {
        Py_INCREF(result);
        return result;
    }
    if (status != TN_NOT_PARSED) raise(status, op);
    return NULL;
}
