// Glue for the elementwise / norm / pool family (csrc/cpu/ops.h): argument
// conversion, every shape relation checked with a message that names the op
// and the expected shape, the GIL released around the kernel only, one exit:
// label per function. Contract: docs/engine-api.md.
#include "glue.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cpu/ops.h"

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

// Run a kernel call without the GIL; on a bad status raise and jump to exit.
#define RUN_KERNEL(op, call)                      \
    do {                                          \
        int st_;                                  \
        Py_BEGIN_ALLOW_THREADS st_ = (call);      \
        Py_END_ALLOW_THREADS                      \
        if (st_ != TN_OK) {                       \
            tn_error(st_, op);                    \
            goto exit;                            \
        }                                         \
    } while (0)

// ---------------------------------------------------------------------------
// helpers

// "(2, 3, 4)" into buf.
static const char *fmt_dims(char *buf, size_t n, int ndim, const npy_intp *dims) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %ld" : "%ld", (long)dims[i]);
    if (ndim == 1 && k < n) k += (size_t)snprintf(buf + k, n - k, ",");
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

// tn_f32 for an input of any ndim >= min_ndim.
static PyArrayObject *f32_min_ndim(PyObject *obj, const char *op, const char *name,
                                   int min_ndim, const char *expect) {
    PyArrayObject *a = tn_f32(obj, op, name, -1, expect);
    if (a && PyArray_NDIM(a) < min_ndim) {
        char got[160];
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s float32, got %s", op, name, expect,
                     tn_describe(obj, got, sizeof got));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

// Optional float32 input: None -> *out = NULL and success.
static int f32_optional(PyObject *obj, const char *op, const char *name, int ndim,
                        const char *expect, PyArrayObject **out) {
    *out = NULL;
    if (obj == Py_None) return 0;
    *out = tn_f32(obj, op, name, ndim, expect);
    return *out ? 0 : -1;
}

// Strict integer index array (ids int64, argmax int32): exactly `type`,
// native byte order, C-contiguous, aligned, `ndim` dims, no zero-size dim.
static PyArrayObject *index_array(PyObject *obj, int type, const char *op, const char *name,
                                  int ndim, const char *expect) {
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
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: %s must be C-contiguous and aligned (use np.ascontiguousarray), got %s",
                     op, name, tn_describe(obj, got, sizeof got));
        return NULL;
    }
    if (PyArray_SIZE(a) == 0) {
        PyErr_Format(PyExc_ValueError, "%s: %s has a zero-size dimension: %s", op, name,
                     tn_describe(obj, got, sizeof got));
        return NULL;
    }
    Py_INCREF(a);
    return a;
}

// Every dim of a fits a C int (the kernels index planes with int sizes).
static int dims_fit_int(PyArrayObject *a, const char *op, const char *name) {
    for (int i = 0; i < PyArray_NDIM(a); i++)
        if (PyArray_DIM(a, i) > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %s dim %d is too large (%ld > %d)", op, name,
                         i, (long)PyArray_DIM(a, i), INT_MAX);
            return -1;
        }
    return 0;
}

// A shape argument: a sequence of exactly `ndim` ints, each in [1, INT_MAX].
static int parse_shape(PyObject *obj, const char *op, const char *name, int ndim,
                       const char *expect, npy_intp *dims) {
    if (PyUnicode_Check(obj) || PyBytes_Check(obj) || !PySequence_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a tuple of %d ints %s, got %s", op, name,
                     ndim, expect, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "shape");
    if (!seq) return -1;
    int rc = -1;
    if (PySequence_Fast_GET_SIZE(seq) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have %d entries %s, got %zd", op, name,
                     ndim, expect, PySequence_Fast_GET_SIZE(seq));
        goto exit;
    }
    for (int i = 0; i < ndim; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *idx = PyNumber_Index(item);
        if (!idx) {
            PyErr_Format(PyExc_TypeError, "%s: %s[%d] must be an int, got %s", op, name, i,
                         Py_TYPE(item)->tp_name);
            goto exit;
        }
        Py_ssize_t v = PyLong_AsSsize_t(idx);
        Py_DECREF(idx);
        if (v == -1 && PyErr_Occurred()) goto exit;
        if (v < 1 || v > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %s[%d] must be in [1, %d], got %zd", op, name,
                         i, INT_MAX, v);
            goto exit;
        }
        dims[i] = (npy_intp)v;
    }
    rc = 0;
exit:
    Py_DECREF(seq);
    return rc;
}

static int same_shape(PyArrayObject *a, PyArrayObject *ref, const char *op, const char *name,
                      const char *ref_name) {
    char want[160], expect[200];
    snprintf(expect, sizeof expect, "%s float32 (the shape of %s)",
             fmt_dims(want, sizeof want, PyArray_NDIM(ref), PyArray_DIMS(ref)), ref_name);
    return tn_check_dims(a, op, name, PyArray_NDIM(ref), PyArray_DIMS(ref), expect);
}

// Pool window arguments, as PyTorch checks them.
static int check_window(const char *op, int k, int stride, int pad, int H, int W) {
    if (k < 1 || stride < 1 || pad < 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: need kernel >= 1, stride >= 1, padding >= 0, got kernel=%d, "
                     "stride=%d, padding=%d", op, k, stride, pad);
        return -1;
    }
    if (pad > k / 2) {
        PyErr_Format(PyExc_ValueError,
                     "%s: padding must be at most half the kernel (padding <= %d), got %d", op,
                     k / 2, pad);
        return -1;
    }
    if ((int64_t)H + 2 * (int64_t)pad < k || (int64_t)W + 2 * (int64_t)pad < k) {
        PyErr_Format(PyExc_ValueError,
                     "%s: kernel %d is larger than the padded input (%d + 2*%d, %d + 2*%d)", op,
                     k, H, pad, W, pad);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// group norm

static PyObject *py_group_norm_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "group_norm_forward";
    static char *kwlist[] = {"x", "num_groups", "w", "b", "eps", NULL};
    PyObject *xo, *wo, *bo;
    int G;
    double eps;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiOOd:group_norm_forward", kwlist, &xo, &G,
                                     &wo, &bo, &eps))
        return NULL;
    if (!(x = f32_min_ndim(xo, op, "x", 2, "(N, C, *)"))) goto exit;
    if (dims_fit_int(x, op, "x") < 0) goto exit;
    const int N = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1);
    const ptrdiff_t S = (ptrdiff_t)(PyArray_SIZE(x) / ((npy_intp)N * C));
    if (G < 1 || C % G != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: num_groups must be >= 1 and divide C = %d, got num_groups = %d", op,
                     C, G);
        goto exit;
    }
    if (!(eps >= 0.0) || !isfinite(eps)) {
        PyErr_Format(PyExc_ValueError, "%s: eps must be finite and >= 0, got %g", op, eps);
        goto exit;
    }
    char expect[64];
    snprintf(expect, sizeof expect, "(C,) = (%d,) or None", C);
    const npy_intp cdims[1] = {C};
    if (f32_optional(wo, op, "w", 1, expect, &w) < 0) goto exit;
    if (w && tn_check_dims(w, op, "w", 1, cdims, expect) < 0) goto exit;
    if (f32_optional(bo, op, "b", 1, expect, &b) < 0) goto exit;
    if (b && tn_check_dims(b, op, "b", 1, cdims, expect) < 0) goto exit;
    if ((w == NULL) != (b == NULL)) {
        // The backward returns dw and db only when w is given: a lone bias
        // would silently get no gradient.
        PyErr_Format(PyExc_ValueError,
                     "%s: w and b must both be arrays (affine) or both None, got w %s, b %s",
                     op, w ? "given" : "None", b ? "given" : "None");
        goto exit;
    }
    const npy_intp sdims[2] = {N, G};
    if (!(y = tn_empty(PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    if (!(mean = tn_empty(2, sdims, NPY_FLOAT32))) goto exit;
    if (!(rstd = tn_empty(2, sdims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, group_norm_forward(TN_F32(y), TN_F32(mean), TN_F32(rstd), TN_F32(x),
                                      w ? TN_F32(w) : NULL, b ? TN_F32(b) : NULL, N, C, S, G,
                                      (float)eps));
    ret = Py_BuildValue("(OOO)", y, mean, rstd);
exit:
    Py_XDECREF(x); Py_XDECREF(w); Py_XDECREF(b);
    Py_XDECREF(y); Py_XDECREF(mean); Py_XDECREF(rstd);
    return ret;
}

static PyObject *py_group_norm_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "group_norm_backward";
    static char *kwlist[] = {"dy", "x", "mean", "rstd", "num_groups", "w", NULL};
    PyObject *dyo, *xo, *mo, *ro, *wo;
    int G;
    PyArrayObject *dy = NULL, *x = NULL, *mean = NULL, *rstd = NULL, *w = NULL;
    PyArrayObject *dx = NULL, *dw = NULL, *db = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOiO:group_norm_backward", kwlist, &dyo, &xo,
                                     &mo, &ro, &G, &wo))
        return NULL;
    if (!(x = f32_min_ndim(xo, op, "x", 2, "(N, C, *)"))) goto exit;
    if (dims_fit_int(x, op, "x") < 0) goto exit;
    if (!(dy = tn_f32(dyo, op, "dy", PyArray_NDIM(x), "(the shape of x)"))) goto exit;
    if (same_shape(dy, x, op, "dy", "x") < 0) goto exit;
    const int N = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1);
    const ptrdiff_t S = (ptrdiff_t)(PyArray_SIZE(x) / ((npy_intp)N * C));
    if (G < 1 || C % G != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: num_groups must be >= 1 and divide C = %d, got num_groups = %d", op,
                     C, G);
        goto exit;
    }
    char expect[64];
    const npy_intp sdims[2] = {N, G};
    snprintf(expect, sizeof expect, "(N, G) = (%d, %d)", N, G);
    if (!(mean = tn_f32(mo, op, "mean", 2, expect))) goto exit;
    if (tn_check_dims(mean, op, "mean", 2, sdims, expect) < 0) goto exit;
    if (!(rstd = tn_f32(ro, op, "rstd", 2, expect))) goto exit;
    if (tn_check_dims(rstd, op, "rstd", 2, sdims, expect) < 0) goto exit;
    snprintf(expect, sizeof expect, "(C,) = (%d,) or None", C);
    const npy_intp cdims[1] = {C};
    if (f32_optional(wo, op, "w", 1, expect, &w) < 0) goto exit;
    if (w && tn_check_dims(w, op, "w", 1, cdims, expect) < 0) goto exit;
    if (!(dx = tn_empty(PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    if (w) {
        if (!(dw = tn_zeros_f32(1, cdims))) goto exit;
        if (!(db = tn_zeros_f32(1, cdims))) goto exit;
    }
    RUN_KERNEL(op, group_norm_backward(TN_F32(dx), dw ? TN_F32(dw) : NULL,
                                       db ? TN_F32(db) : NULL, TN_F32(dy), TN_F32(x),
                                       TN_F32(mean), TN_F32(rstd), w ? TN_F32(w) : NULL, N, C,
                                       S, G));
    ret = Py_BuildValue("(OOO)", dx, dw ? (PyObject *)dw : Py_None,
                        db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dy); Py_XDECREF(x); Py_XDECREF(mean); Py_XDECREF(rstd); Py_XDECREF(w);
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// activations: any shape, one flat loop

typedef int (*unary_kernel)(float *, const float *, ptrdiff_t);
typedef int (*unary_grad_kernel)(float *, const float *, const float *, ptrdiff_t);

static PyObject *unary_forward(PyObject *args, PyObject *kw, const char *op, unary_kernel k) {
    static char *kwlist[] = {"x", NULL};
    PyObject *xo;
    PyArrayObject *x = NULL, *y = NULL;
    PyObject *ret = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "O:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo)) return NULL;
    if (!(x = tn_f32(xo, op, "x", -1, "(any shape)"))) goto exit;
    if (!(y = tn_empty(PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, k(TN_F32(y), TN_F32(x), (ptrdiff_t)PyArray_SIZE(x)));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(y);
    return ret;
}

// dx = k(dy, saved) where saved (x or y, named `saved_name`) has dy's shape.
static PyObject *unary_backward(PyObject *args, PyObject *kw, const char *op,
                                const char *saved_name, unary_grad_kernel k) {
    static char *kwlist_x[] = {"dy", "x", NULL};
    static char *kwlist_y[] = {"dy", "y", NULL};
    PyObject *dyo, *so;
    PyArrayObject *dy = NULL, *s = NULL, *dx = NULL;
    PyObject *ret = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, saved_name[0] == 'x' ? kwlist_x : kwlist_y,
                                     &dyo, &so))
        return NULL;
    if (!(s = tn_f32(so, op, saved_name, -1, "(any shape)"))) goto exit;
    char expect[64];
    snprintf(expect, sizeof expect, "(the shape of %s)", saved_name);
    if (!(dy = tn_f32(dyo, op, "dy", PyArray_NDIM(s), expect))) goto exit;
    if (same_shape(dy, s, op, "dy", saved_name) < 0) goto exit;
    if (!(dx = tn_empty(PyArray_NDIM(s), PyArray_DIMS(s), NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, k(TN_F32(dx), TN_F32(dy), TN_F32(s), (ptrdiff_t)PyArray_SIZE(s)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dy); Py_XDECREF(s); Py_XDECREF(dx);
    return ret;
}

static PyObject *py_silu_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return unary_forward(args, kw, "silu_forward", silu_forward);
}
static PyObject *py_silu_backward(PyObject *self, PyObject *args, PyObject *kw) {
    return unary_backward(args, kw, "silu_backward", "x", silu_backward);
}
static PyObject *py_sigmoid_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return unary_forward(args, kw, "sigmoid_forward", sigmoid_forward);
}
static PyObject *py_sigmoid_backward(PyObject *self, PyObject *args, PyObject *kw) {
    return unary_backward(args, kw, "sigmoid_backward", "y", sigmoid_backward);
}
static PyObject *py_relu_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return unary_forward(args, kw, "relu_forward", relu_forward);
}
static PyObject *py_relu_backward(PyObject *self, PyObject *args, PyObject *kw) {
    return unary_backward(args, kw, "relu_backward", "x", relu_backward);
}

// ---------------------------------------------------------------------------
// upsample_nearest

static PyObject *py_upsample_nearest_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "upsample_nearest_forward";
    static char *kwlist[] = {"x", "scale", NULL};
    PyObject *xo;
    int s;
    PyArrayObject *x = NULL, *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi:upsample_nearest_forward", kwlist, &xo, &s))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (dims_fit_int(x, op, "x") < 0) goto exit;
    if (s < 1) {
        PyErr_Format(PyExc_ValueError, "%s: scale must be an integer >= 1, got %d", op, s);
        goto exit;
    }
    const npy_intp *d = PyArray_DIMS(x);
    if ((int64_t)d[2] * s > INT_MAX || (int64_t)d[3] * s > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: scale %d makes the output too large", op, s);
        goto exit;
    }
    const npy_intp ydims[4] = {d[0], d[1], d[2] * s, d[3] * s};
    if (!(y = tn_empty(4, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, upsample_nearest_forward(TN_F32(y), TN_F32(x), (int)d[0], (int)d[1],
                                            (int)d[2], (int)d[3], s));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(y);
    return ret;
}

static PyObject *py_upsample_nearest_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "upsample_nearest_backward";
    static char *kwlist[] = {"dy", "scale", NULL};
    PyObject *dyo;
    int s;
    PyArrayObject *dy = NULL, *dx = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi:upsample_nearest_backward", kwlist, &dyo, &s))
        return NULL;
    if (!(dy = tn_f32(dyo, op, "dy", 4, "(N, C, s*H, s*W)"))) goto exit;
    if (dims_fit_int(dy, op, "dy") < 0) goto exit;
    if (s < 1) {
        PyErr_Format(PyExc_ValueError, "%s: scale must be an integer >= 1, got %d", op, s);
        goto exit;
    }
    const npy_intp *d = PyArray_DIMS(dy);
    if (d[2] % s || d[3] % s) {
        char got[160];
        PyErr_Format(PyExc_ValueError,
                     "%s: dy must be (N, C, s*H, s*W) float32 with s = %d dividing its H and W, "
                     "got %s", op, s, tn_describe(dyo, got, sizeof got));
        goto exit;
    }
    const npy_intp xdims[4] = {d[0], d[1], d[2] / s, d[3] / s};
    if (!(dx = tn_empty(4, xdims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, upsample_nearest_backward(TN_F32(dx), TN_F32(dy), (int)xdims[0],
                                             (int)xdims[1], (int)xdims[2], (int)xdims[3], s));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dy); Py_XDECREF(dx);
    return ret;
}

// ---------------------------------------------------------------------------
// pools

static PyObject *py_avg_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "avg_pool2d_forward";
    static char *kwlist[] = {"x", "kernel", "stride", "padding", NULL};
    PyObject *xo;
    int k, stride, pad;
    PyArrayObject *x = NULL, *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii:avg_pool2d_forward", kwlist, &xo, &k,
                                     &stride, &pad))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (dims_fit_int(x, op, "x") < 0) goto exit;
    const npy_intp *d = PyArray_DIMS(x);
    if (check_window(op, k, stride, pad, (int)d[2], (int)d[3]) < 0) goto exit;
    const npy_intp ydims[4] = {d[0], d[1], (d[2] + 2 * pad - k) / stride + 1,
                               (d[3] + 2 * pad - k) / stride + 1};
    if (!(y = tn_empty(4, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, avg_pool2d_forward(TN_F32(y), TN_F32(x), (int)d[0], (int)d[1], (int)d[2],
                                      (int)d[3], k, stride, pad));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(y);
    return ret;
}

static PyObject *py_avg_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "avg_pool2d_backward";
    static char *kwlist[] = {"dy", "x_shape", "kernel", "stride", "padding", NULL};
    PyObject *dyo, *so;
    int k, stride, pad;
    npy_intp xd[4];
    PyArrayObject *dy = NULL, *dx = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOiii:avg_pool2d_backward", kwlist, &dyo, &so,
                                     &k, &stride, &pad))
        return NULL;
    if (parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) goto exit;
    if (check_window(op, k, stride, pad, (int)xd[2], (int)xd[3]) < 0) goto exit;
    const npy_intp ydims[4] = {xd[0], xd[1], (xd[2] + 2 * pad - k) / stride + 1,
                               (xd[3] + 2 * pad - k) / stride + 1};
    char want[96], expect[128];
    snprintf(expect, sizeof expect, "(N, C, P, Q) = %s", fmt_dims(want, sizeof want, 4, ydims));
    if (!(dy = tn_f32(dyo, op, "dy", 4, expect))) goto exit;
    if (tn_check_dims(dy, op, "dy", 4, ydims, expect) < 0) goto exit;
    if (!(dx = tn_empty(4, xd, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, avg_pool2d_backward(TN_F32(dx), TN_F32(dy), (int)xd[0], (int)xd[1],
                                       (int)xd[2], (int)xd[3], k, stride, pad));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dy); Py_XDECREF(dx);
    return ret;
}

static PyObject *py_adaptive_avg_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "adaptive_avg_pool2d_forward";
    static char *kwlist[] = {"x", "out_h", "out_w", NULL};
    PyObject *xo;
    int OH, OW;
    PyArrayObject *x = NULL, *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oii:adaptive_avg_pool2d_forward", kwlist, &xo,
                                     &OH, &OW))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (dims_fit_int(x, op, "x") < 0) goto exit;
    if (OH < 1 || OW < 1) {
        PyErr_Format(PyExc_ValueError, "%s: out_h and out_w must be >= 1, got (%d, %d)", op, OH,
                     OW);
        goto exit;
    }
    const npy_intp *d = PyArray_DIMS(x);
    const npy_intp ydims[4] = {d[0], d[1], OH, OW};
    if (!(y = tn_empty(4, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, adaptive_avg_pool2d_forward(TN_F32(y), TN_F32(x), (int)d[0], (int)d[1],
                                               (int)d[2], (int)d[3], OH, OW));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(y);
    return ret;
}

static PyObject *py_adaptive_avg_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "adaptive_avg_pool2d_backward";
    static char *kwlist[] = {"dy", "x_shape", NULL};
    PyObject *dyo, *so;
    npy_intp xd[4];
    PyArrayObject *dy = NULL, *dx = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:adaptive_avg_pool2d_backward", kwlist, &dyo,
                                     &so))
        return NULL;
    if (parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) goto exit;
    char expect[96];
    snprintf(expect, sizeof expect, "(N, C, out_h, out_w) with N, C = %ld, %ld", (long)xd[0],
             (long)xd[1]);
    const npy_intp want[4] = {xd[0], xd[1], -1, -1};
    if (!(dy = tn_f32(dyo, op, "dy", 4, expect))) goto exit;
    if (tn_check_dims(dy, op, "dy", 4, want, expect) < 0) goto exit;
    if (dims_fit_int(dy, op, "dy") < 0) goto exit;
    if (!(dx = tn_empty(4, xd, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, adaptive_avg_pool2d_backward(TN_F32(dx), TN_F32(dy), (int)xd[0], (int)xd[1],
                                                (int)xd[2], (int)xd[3], (int)PyArray_DIM(dy, 2),
                                                (int)PyArray_DIM(dy, 3)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dy); Py_XDECREF(dx);
    return ret;
}

static PyObject *py_max_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "max_pool2d_forward";
    static char *kwlist[] = {"x", "kernel", "stride", "padding", NULL};
    PyObject *xo;
    int k, stride, pad;
    PyArrayObject *x = NULL, *y = NULL, *am = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii:max_pool2d_forward", kwlist, &xo, &k,
                                     &stride, &pad))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (dims_fit_int(x, op, "x") < 0) goto exit;
    const npy_intp *d = PyArray_DIMS(x);
    if ((int64_t)d[2] * d[3] > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: H*W = %ld does not fit the int32 argmax", op,
                     (long)(d[2] * d[3]));
        goto exit;
    }
    if (check_window(op, k, stride, pad, (int)d[2], (int)d[3]) < 0) goto exit;
    const npy_intp ydims[4] = {d[0], d[1], (d[2] + 2 * pad - k) / stride + 1,
                               (d[3] + 2 * pad - k) / stride + 1};
    if (!(y = tn_empty(4, ydims, NPY_FLOAT32))) goto exit;
    if (!(am = tn_empty(4, ydims, NPY_INT32))) goto exit;
    RUN_KERNEL(op, max_pool2d_forward(TN_F32(y), (int32_t *)PyArray_DATA(am), TN_F32(x),
                                      (int)d[0], (int)d[1], (int)d[2], (int)d[3], k, stride,
                                      pad));
    ret = Py_BuildValue("(OO)", y, am);
exit:
    Py_XDECREF(x); Py_XDECREF(y); Py_XDECREF(am);
    return ret;
}

static PyObject *py_max_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "max_pool2d_backward";
    static char *kwlist[] = {"dy", "argmax", "x_shape", NULL};
    PyObject *dyo, *amo, *so;
    npy_intp xd[4];
    PyArrayObject *dy = NULL, *am = NULL, *dx = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:max_pool2d_backward", kwlist, &dyo, &amo,
                                     &so))
        return NULL;
    if (parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) goto exit;
    if ((int64_t)xd[2] * xd[3] > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: H*W = %ld does not fit the int32 argmax", op,
                     (long)(xd[2] * xd[3]));
        goto exit;
    }
    char expect[96];
    snprintf(expect, sizeof expect, "(N, C, P, Q) with N, C = %ld, %ld", (long)xd[0],
             (long)xd[1]);
    const npy_intp want[4] = {xd[0], xd[1], -1, -1};
    if (!(dy = tn_f32(dyo, op, "dy", 4, expect))) goto exit;
    if (tn_check_dims(dy, op, "dy", 4, want, expect) < 0) goto exit;
    if (dims_fit_int(dy, op, "dy") < 0) goto exit;
    if (!(am = index_array(amo, NPY_INT32, op, "argmax", 4, "(N, C, P, Q) (the shape of dy)")))
        goto exit;
    if (tn_check_dims(am, op, "argmax", 4, PyArray_DIMS(dy),
                      "(N, C, P, Q) (the shape of dy) int32") < 0)
        goto exit;
    const int32_t *a = (const int32_t *)PyArray_DATA(am);
    const npy_intp HW = xd[2] * xd[3];
    for (npy_intp i = 0; i < PyArray_SIZE(am); i++)
        if (a[i] < 0 || a[i] >= HW) {
            PyErr_Format(PyExc_ValueError,
                         "%s: argmax[%ld] = %d is out of range for an H*W = %ld plane", op,
                         (long)i, (int)a[i], (long)HW);
            goto exit;
        }
    if (!(dx = tn_empty(4, xd, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, max_pool2d_backward(TN_F32(dx), TN_F32(dy), a, (int)xd[0], (int)xd[1],
                                       (int)xd[2], (int)xd[3], (int)PyArray_DIM(dy, 2),
                                       (int)PyArray_DIM(dy, 3)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dy); Py_XDECREF(am); Py_XDECREF(dx);
    return ret;
}

// ---------------------------------------------------------------------------
// embeddings

// Every id in [0, V); raises ValueError naming the first bad one.
static int check_ids(PyArrayObject *ids, const char *op, npy_intp V) {
    const int64_t *p = (const int64_t *)PyArray_DATA(ids);
    for (npy_intp i = 0; i < PyArray_SIZE(ids); i++)
        if (p[i] < 0 || p[i] >= V) {
            PyErr_Format(PyExc_ValueError,
                         "%s: id %lld (ids[%ld]) is out of range for %ld embeddings "
                         "(need 0 <= id < %ld)", op, (long long)p[i], (long)i, (long)V, (long)V);
            return -1;
        }
    return 0;
}

static PyObject *py_embedding_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "embedding_forward";
    static char *kwlist[] = {"table", "ids", NULL};
    PyObject *to, *io;
    PyArrayObject *table = NULL, *ids = NULL, *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:embedding_forward", kwlist, &to, &io))
        return NULL;
    if (!(table = tn_f32(to, op, "table", 2, "(V, D)"))) goto exit;
    if (dims_fit_int(table, op, "table") < 0) goto exit;
    if (!(ids = index_array(io, NPY_INT64, op, "ids", 1, "(N,)"))) goto exit;
    if (PyArray_DIM(ids, 0) > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many ids", op);
        goto exit;
    }
    if (check_ids(ids, op, PyArray_DIM(table, 0)) < 0) goto exit;
    const npy_intp ydims[2] = {PyArray_DIM(ids, 0), PyArray_DIM(table, 1)};
    if (!(y = tn_empty(2, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, embedding_forward(TN_F32(y), TN_F32(table), (const int64_t *)PyArray_DATA(ids),
                                     (int)ydims[0], (int)PyArray_DIM(table, 0), (int)ydims[1]));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(table); Py_XDECREF(ids); Py_XDECREF(y);
    return ret;
}

static PyObject *py_embedding_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "embedding_backward";
    static char *kwlist[] = {"dy", "ids", "num_embeddings", NULL};
    PyObject *dyo, *io;
    Py_ssize_t V;
    PyArrayObject *dy = NULL, *ids = NULL, *dt = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOn:embedding_backward", kwlist, &dyo, &io, &V))
        return NULL;
    if (V < 1 || V > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: num_embeddings must be in [1, %d], got %zd", op,
                     INT_MAX, V);
        goto exit;
    }
    if (!(ids = index_array(io, NPY_INT64, op, "ids", 1, "(N,)"))) goto exit;
    char expect[64];
    snprintf(expect, sizeof expect, "(N, D) with N = len(ids) = %ld", (long)PyArray_DIM(ids, 0));
    const npy_intp want[2] = {PyArray_DIM(ids, 0), -1};
    if (!(dy = tn_f32(dyo, op, "dy", 2, expect))) goto exit;
    if (tn_check_dims(dy, op, "dy", 2, want, expect) < 0) goto exit;
    if (dims_fit_int(dy, op, "dy") < 0) goto exit;
    if (check_ids(ids, op, V) < 0) goto exit;
    const npy_intp tdims[2] = {V, PyArray_DIM(dy, 1)};
    if (!(dt = tn_zeros_f32(2, tdims))) goto exit;
    RUN_KERNEL(op, embedding_backward(TN_F32(dt), TN_F32(dy), (const int64_t *)PyArray_DATA(ids),
                                      (int)PyArray_DIM(dy, 0), (int)V, (int)tdims[1]));
    ret = (PyObject *)dt;
    dt = NULL;
exit:
    Py_XDECREF(dy); Py_XDECREF(ids); Py_XDECREF(dt);
    return ret;
}

static PyObject *py_timestep_embedding(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "timestep_embedding";
    static char *kwlist[] = {"t", "dim", "max_period", NULL};
    PyObject *to;
    int dim;
    double max_period = 10000.0;
    PyArrayObject *t = NULL, *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|d:timestep_embedding", kwlist, &to, &dim,
                                     &max_period))
        return NULL;
    if (!(t = tn_f32(to, op, "t", 1, "(N,)"))) goto exit;
    if (dims_fit_int(t, op, "t") < 0) goto exit;
    if (dim < 4) {
        PyErr_Format(PyExc_ValueError,
                     "%s: dim must be >= 4 (the frequencies divide by dim // 2 - 1), got %d", op,
                     dim);
        goto exit;
    }
    if (!(max_period > 0.0) || !isfinite(max_period)) {
        PyErr_Format(PyExc_ValueError, "%s: max_period must be finite and > 0, got %g", op,
                     max_period);
        goto exit;
    }
    const npy_intp ydims[2] = {PyArray_DIM(t, 0), dim};
    if (!(y = tn_empty(2, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, timestep_embedding_forward(TN_F32(y), TN_F32(t), (int)ydims[0], dim,
                                              max_period));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(t); Py_XDECREF(y);
    return ret;
}

// ---------------------------------------------------------------------------
// concat

static PyObject *py_concat_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "concat_forward";
    static char *kwlist[] = {"xs", NULL};
    PyObject *xso, *seq = NULL;
    PyArrayObject **xs = NULL, *y = NULL;
    const float **ptrs = NULL;
    ptrdiff_t *sizes = NULL;
    Py_ssize_t n = 0;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:concat_forward", kwlist, &xso)) return NULL;
    if (!PyList_Check(xso) && !PyTuple_Check(xso)) {
        PyErr_Format(PyExc_TypeError, "%s: xs must be a list of (N, C_i, *) float32 arrays, got %s",
                     op, Py_TYPE(xso)->tp_name);
        goto exit;
    }
    if (!(seq = PySequence_Fast(xso, "xs"))) goto exit;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: xs must hold at least one array, got %zd", op, n);
        goto exit;
    }
    xs = PyMem_Calloc((size_t)n, sizeof *xs);
    ptrs = PyMem_Calloc((size_t)n, sizeof *ptrs);
    sizes = PyMem_Calloc((size_t)n, sizeof *sizes);
    if (!xs || !ptrs || !sizes) {
        PyErr_NoMemory();
        goto exit;
    }
    npy_intp ctot = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zd]", i);
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (i == 0) {
            if (!(xs[0] = f32_min_ndim(item, op, name, 2, "(N, C_i, *)"))) goto exit;
        } else {
            // N and the trailing dims must equal xs[0]'s; C_i is free.
            PyArrayObject *x0 = xs[0];
            const int nd = PyArray_NDIM(x0);
            npy_intp want[NPY_MAXDIMS];
            char wbuf[160], expect[220];
            memcpy(want, PyArray_DIMS(x0), sizeof(npy_intp) * nd);
            want[1] = -1;
            fmt_dims(wbuf, sizeof wbuf, nd, PyArray_DIMS(x0));
            snprintf(expect, sizeof expect,
                     "(N, C_i, *) matching xs[0] %s in every dim but 1", wbuf);
            if (!(xs[i] = tn_f32(item, op, name, nd, expect))) goto exit;
            if (tn_check_dims(xs[i], op, name, nd, want, expect) < 0) goto exit;
        }
        ptrs[i] = TN_F32(xs[i]);
        sizes[i] = (ptrdiff_t)(PyArray_SIZE(xs[i]) / PyArray_DIM(xs[i], 0));
        ctot += PyArray_DIM(xs[i], 1);
    }
    const int nd = PyArray_NDIM(xs[0]);
    npy_intp ydims[NPY_MAXDIMS];
    memcpy(ydims, PyArray_DIMS(xs[0]), sizeof(npy_intp) * nd);
    ydims[1] = ctot;
    if (ydims[0] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: batch too large", op);
        goto exit;
    }
    if (!(y = tn_empty(nd, ydims, NPY_FLOAT32))) goto exit;
    const ptrdiff_t total = (ptrdiff_t)(PyArray_SIZE(y) / ydims[0]);
    RUN_KERNEL(op, concat_forward(TN_F32(y), ptrs, sizes, (int)n, (int)ydims[0], total));
    ret = (PyObject *)y;
    y = NULL;
exit:
    if (xs)
        for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(xs[i]);
    PyMem_Free(xs);
    PyMem_Free(ptrs);
    PyMem_Free(sizes);
    Py_XDECREF(seq);
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_concat_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "concat_backward";
    static char *kwlist[] = {"dy", "sizes", NULL};
    PyObject *dyo, *so, *seq = NULL, *list = NULL;
    PyArrayObject *dy = NULL;
    float **ptrs = NULL;
    ptrdiff_t *sizes = NULL;
    Py_ssize_t n = 0;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:concat_backward", kwlist, &dyo, &so))
        return NULL;
    if (!(dy = f32_min_ndim(dyo, op, "dy", 2, "(N, sum C_i, *)"))) goto exit;
    if (PyArray_DIM(dy, 0) > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: batch too large", op);
        goto exit;
    }
    if (!PyList_Check(so) && !PyTuple_Check(so)) {
        PyErr_Format(PyExc_TypeError, "%s: sizes must be a list of ints C_i, got %s", op,
                     Py_TYPE(so)->tp_name);
        goto exit;
    }
    if (!(seq = PySequence_Fast(so, "sizes"))) goto exit;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes must hold at least one int", op);
        goto exit;
    }
    const int nd = PyArray_NDIM(dy);
    const ptrdiff_t rest =
        (ptrdiff_t)(PyArray_SIZE(dy) / (PyArray_DIM(dy, 0) * PyArray_DIM(dy, 1)));
    ptrs = PyMem_Calloc((size_t)n, sizeof *ptrs);
    sizes = PyMem_Calloc((size_t)n, sizeof *sizes);
    if (!ptrs || !sizes) {
        PyErr_NoMemory();
        goto exit;
    }
    if (!(list = PyList_New(n))) goto exit;
    npy_intp ctot = 0;
    npy_intp dims[NPY_MAXDIMS];
    memcpy(dims, PyArray_DIMS(dy), sizeof(npy_intp) * nd);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *idx = PyNumber_Index(item);
        if (!idx) {
            PyErr_Format(PyExc_TypeError, "%s: sizes[%zd] must be an int, got %s", op, i,
                         Py_TYPE(item)->tp_name);
            goto exit;
        }
        Py_ssize_t c = PyLong_AsSsize_t(idx);
        Py_DECREF(idx);
        if (c == -1 && PyErr_Occurred()) goto exit;
        if (c < 1) {
            PyErr_Format(PyExc_ValueError, "%s: sizes[%zd] must be >= 1, got %zd", op, i, c);
            goto exit;
        }
        ctot += c;
        if (ctot > PyArray_DIM(dy, 1)) break;  // reported below
        dims[1] = c;
        PyArrayObject *dx = tn_empty(nd, dims, NPY_FLOAT32);
        if (!dx) goto exit;
        PyList_SET_ITEM(list, i, (PyObject *)dx);
        ptrs[i] = TN_F32(dx);
        sizes[i] = (ptrdiff_t)c * rest;
    }
    if (ctot != PyArray_DIM(dy, 1)) {
        char got[160];
        PyErr_Format(PyExc_ValueError,
                     "%s: dy must be (N, sum C_i, *) float32 with sum(sizes) channels, "
                     "got %s and sizes summing to %s%ld", op,
                     tn_describe(dyo, got, sizeof got),
                     ctot > PyArray_DIM(dy, 1) ? "at least " : "", (long)ctot);
        goto exit;
    }
    RUN_KERNEL(op, concat_backward(ptrs, TN_F32(dy), sizes, (int)n, (int)PyArray_DIM(dy, 0),
                                   (ptrdiff_t)(PyArray_SIZE(dy) / PyArray_DIM(dy, 0))));
    ret = list;
    list = NULL;
exit:
    PyMem_Free(ptrs);
    PyMem_Free(sizes);
    Py_XDECREF(seq);
    Py_XDECREF(list);
    Py_XDECREF(dy);
    return ret;
}

// ---------------------------------------------------------------------------
// broadcasting add / mul

// b (or b_shape) has a's ndim and each dim equal to a's or 1.
static int check_broadcast(const char *op, const char *name, int a_nd, const npy_intp *ad,
                           int b_nd, const npy_intp *bd) {
    int ok = a_nd == b_nd && a_nd <= TN_BCAST_MAXDIM;
    for (int i = 0; ok && i < a_nd; i++)
        if (bd[i] != ad[i] && bd[i] != 1) ok = 0;
    if (ok) return 0;
    char abuf[160], bbuf[160];
    PyErr_Format(PyExc_ValueError,
                 "%s: %s must have a's ndim (%d, at most %d) with each dim equal to a's %s or 1, "
                 "got %s", op, name, a_nd, TN_BCAST_MAXDIM, fmt_dims(abuf, sizeof abuf, a_nd, ad),
                 fmt_dims(bbuf, sizeof bbuf, b_nd, bd));
    return -1;
}

static void to_ptrdiff(int nd, const npy_intp *d, ptrdiff_t *out) {
    for (int i = 0; i < nd; i++) out[i] = (ptrdiff_t)d[i];
}

static PyObject *binary_forward(PyObject *args, PyObject *kw, const char *op, int is_mul) {
    static char *kwlist[] = {"a", "b", NULL};
    PyObject *ao, *bo;
    PyArrayObject *a = NULL, *b = NULL, *y = NULL;
    PyObject *ret = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &ao, &bo)) return NULL;
    if (!(a = tn_f32(ao, op, "a", -1, "(N, C, H, W) (any ndim)"))) goto exit;
    if (!(b = tn_f32(bo, op, "b", -1, "(a's ndim, each dim equal to a's or 1)"))) goto exit;
    if (check_broadcast(op, "b", PyArray_NDIM(a), PyArray_DIMS(a), PyArray_NDIM(b),
                        PyArray_DIMS(b)) < 0)
        goto exit;
    const int nd = PyArray_NDIM(a);
    ptrdiff_t as[TN_BCAST_MAXDIM], bs[TN_BCAST_MAXDIM];
    to_ptrdiff(nd, PyArray_DIMS(a), as);
    to_ptrdiff(nd, PyArray_DIMS(b), bs);
    if (!(y = tn_empty(nd, PyArray_DIMS(a), NPY_FLOAT32))) goto exit;
    if (is_mul)
        RUN_KERNEL(op, mul_forward(TN_F32(y), TN_F32(a), TN_F32(b), nd, as, bs));
    else
        RUN_KERNEL(op, add_forward(TN_F32(y), TN_F32(a), TN_F32(b), nd, as, bs));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(y);
    return ret;
}

static PyObject *py_add_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return binary_forward(args, kw, "add_forward", 0);
}
static PyObject *py_mul_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return binary_forward(args, kw, "mul_forward", 1);
}

static PyObject *py_add_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "add_backward";
    static char *kwlist[] = {"dy", "b_shape", NULL};
    PyObject *dyo, *so;
    PyArrayObject *dy = NULL, *da = NULL, *db = NULL;
    npy_intp bd[TN_BCAST_MAXDIM];
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:add_backward", kwlist, &dyo, &so)) return NULL;
    if (!(dy = tn_f32(dyo, op, "dy", -1, "(the shape of a)"))) goto exit;
    const int nd = PyArray_NDIM(dy);
    if (nd > TN_BCAST_MAXDIM) {
        PyErr_Format(PyExc_ValueError, "%s: dy has %d dims, at most %d are supported", op, nd,
                     TN_BCAST_MAXDIM);
        goto exit;
    }
    if (parse_shape(so, op, "b_shape", nd, "(dy's ndim)", bd) < 0) goto exit;
    if (check_broadcast(op, "b_shape", nd, PyArray_DIMS(dy), nd, bd) < 0) goto exit;
    ptrdiff_t as[TN_BCAST_MAXDIM], bs[TN_BCAST_MAXDIM];
    to_ptrdiff(nd, PyArray_DIMS(dy), as);
    to_ptrdiff(nd, bd, bs);
    if (!(da = tn_empty(nd, PyArray_DIMS(dy), NPY_FLOAT32))) goto exit;
    if (!(db = tn_zeros_f32(nd, bd))) goto exit;
    RUN_KERNEL(op, add_backward(TN_F32(da), TN_F32(db), TN_F32(dy), nd, as, bs));
    ret = Py_BuildValue("(OO)", da, db);
exit:
    Py_XDECREF(dy); Py_XDECREF(da); Py_XDECREF(db);
    return ret;
}

static PyObject *py_mul_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "mul_backward";
    static char *kwlist[] = {"dy", "a", "b", NULL};
    PyObject *dyo, *ao, *bo;
    PyArrayObject *dy = NULL, *a = NULL, *b = NULL, *da = NULL, *db = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:mul_backward", kwlist, &dyo, &ao, &bo))
        return NULL;
    if (!(a = tn_f32(ao, op, "a", -1, "(N, C, H, W) (any ndim)"))) goto exit;
    if (!(b = tn_f32(bo, op, "b", -1, "(a's ndim, each dim equal to a's or 1)"))) goto exit;
    if (check_broadcast(op, "b", PyArray_NDIM(a), PyArray_DIMS(a), PyArray_NDIM(b),
                        PyArray_DIMS(b)) < 0)
        goto exit;
    const int nd = PyArray_NDIM(a);
    if (!(dy = tn_f32(dyo, op, "dy", nd, "(the shape of a)"))) goto exit;
    if (same_shape(dy, a, op, "dy", "a") < 0) goto exit;
    ptrdiff_t as[TN_BCAST_MAXDIM], bs[TN_BCAST_MAXDIM];
    to_ptrdiff(nd, PyArray_DIMS(a), as);
    to_ptrdiff(nd, PyArray_DIMS(b), bs);
    if (!(da = tn_empty(nd, PyArray_DIMS(a), NPY_FLOAT32))) goto exit;
    if (!(db = tn_zeros_f32(nd, PyArray_DIMS(b)))) goto exit;
    RUN_KERNEL(op, mul_backward(TN_F32(da), TN_F32(db), TN_F32(dy), TN_F32(a), TN_F32(b), nd,
                                as, bs));
    ret = Py_BuildValue("(OO)", da, db);
exit:
    Py_XDECREF(dy); Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(da); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// mse

static int mse_inputs(PyObject *xo, PyObject *yo, const char *op, PyArrayObject **x,
                      PyArrayObject **y) {
    if (!(*x = tn_f32(xo, op, "x", -1, "(any shape)"))) return -1;
    if (!(*y = tn_f32(yo, op, "y", PyArray_NDIM(*x), "(the shape of x)"))) return -1;
    return same_shape(*y, *x, op, "y", "x");
}

static PyObject *py_mse_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "mse_forward";
    static char *kwlist[] = {"x", "y", NULL};
    PyObject *xo, *yo;
    PyArrayObject *x = NULL, *y = NULL;
    double loss = 0.0;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:mse_forward", kwlist, &xo, &yo)) return NULL;
    if (mse_inputs(xo, yo, op, &x, &y) < 0) goto exit;
    RUN_KERNEL(op, mse_forward(&loss, TN_F32(x), TN_F32(y), (ptrdiff_t)PyArray_SIZE(x)));
    ret = PyFloat_FromDouble(loss);
exit:
    Py_XDECREF(x); Py_XDECREF(y);
    return ret;
}

static PyObject *py_mse_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "mse_backward";
    static char *kwlist[] = {"x", "y", "g", NULL};
    PyObject *xo, *yo;
    double g = 1.0;
    PyArrayObject *x = NULL, *y = NULL, *dx = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|d:mse_backward", kwlist, &xo, &yo, &g))
        return NULL;
    if (mse_inputs(xo, yo, op, &x, &y) < 0) goto exit;
    if (!(dx = tn_empty(PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, mse_backward(TN_F32(dx), TN_F32(x), TN_F32(y), g, (ptrdiff_t)PyArray_SIZE(x)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(y); Py_XDECREF(dx);
    return ret;
}

// ---------------------------------------------------------------------------

PyMethodDef tn_ops_methods[] = {
    {"group_norm_forward", FN(py_group_norm_forward), KW,
     "group_norm_forward(x, num_groups, w, b, eps)\n--\n\n"
     "GroupNorm as F.group_norm. x (N, C, *) float32; w, b (C,) or None (both or\n"
     "neither); biased variance, eps inside the square root. Returns (y, mean, rstd),\n"
     "mean and rstd (N, G) float32 for the backward."},
    {"group_norm_backward", FN(py_group_norm_backward), KW,
     "group_norm_backward(dy, x, mean, rstd, num_groups, w)\n--\n\n"
     "Gradients of group_norm_forward: (dx, dw, db); dw and db are None when w is None."},
    {"silu_forward", FN(py_silu_forward), KW,
     "silu_forward(x)\n--\n\ny = x * sigmoid(x), any shape."},
    {"silu_backward", FN(py_silu_backward), KW,
     "silu_backward(dy, x)\n--\n\ndx = dy * s * (1 + x (1 - s)), s = sigmoid(x)."},
    {"sigmoid_forward", FN(py_sigmoid_forward), KW,
     "sigmoid_forward(x)\n--\n\ny = 1 / (1 + exp(-x)), any shape."},
    {"sigmoid_backward", FN(py_sigmoid_backward), KW,
     "sigmoid_backward(dy, y)\n--\n\ndx = dy * y * (1 - y), from the forward OUTPUT y."},
    {"relu_forward", FN(py_relu_forward), KW,
     "relu_forward(x)\n--\n\ny = max(x, 0), any shape (NaN stays NaN)."},
    {"relu_backward", FN(py_relu_backward), KW,
     "relu_backward(dy, x)\n--\n\ndx = dy where x > 0, else 0."},
    {"upsample_nearest_forward", FN(py_upsample_nearest_forward), KW,
     "upsample_nearest_forward(x, scale)\n--\n\n"
     "Nearest upsampling by an integer scale >= 1 (F.interpolate(mode='nearest',\n"
     "scale_factor=scale)): (N, C, H, W) -> (N, C, scale*H, scale*W)."},
    {"upsample_nearest_backward", FN(py_upsample_nearest_backward), KW,
     "upsample_nearest_backward(dy, scale)\n--\n\n"
     "dy (N, C, scale*H, scale*W) -> dx (N, C, H, W), each scale x scale block summed."},
    {"avg_pool2d_forward", FN(py_avg_pool2d_forward), KW,
     "avg_pool2d_forward(x, kernel, stride, padding)\n--\n\n"
     "F.avg_pool2d with a square kernel, count_include_pad=True, floor mode;\n"
     "padding <= kernel // 2. x (N, C, H, W) -> (N, C, P, Q),\n"
     "P = (H + 2*padding - kernel) // stride + 1."},
    {"avg_pool2d_backward", FN(py_avg_pool2d_backward), KW,
     "avg_pool2d_backward(dy, x_shape, kernel, stride, padding)\n--\n\n"
     "dy (N, C, P, Q) -> dx of shape x_shape (N, C, H, W)."},
    {"adaptive_avg_pool2d_forward", FN(py_adaptive_avg_pool2d_forward), KW,
     "adaptive_avg_pool2d_forward(x, out_h, out_w)\n--\n\n"
     "F.adaptive_avg_pool2d: output cell i averages input rows\n"
     "[floor(i*H/out_h), ceil((i+1)*H/out_h)) (same for columns)."},
    {"adaptive_avg_pool2d_backward", FN(py_adaptive_avg_pool2d_backward), KW,
     "adaptive_avg_pool2d_backward(dy, x_shape)\n--\n\n"
     "dy (N, C, out_h, out_w) -> dx of shape x_shape (N, C, H, W)."},
    {"max_pool2d_forward", FN(py_max_pool2d_forward), KW,
     "max_pool2d_forward(x, kernel, stride, padding)\n--\n\n"
     "F.max_pool2d with a square kernel, -inf padding (padding <= kernel // 2),\n"
     "floor mode. Returns (y, argmax): argmax int32 (N, C, P, Q), the flat index\n"
     "h*W + w of each maximum in its (H, W) plane; ties keep the first."},
    {"max_pool2d_backward", FN(py_max_pool2d_backward), KW,
     "max_pool2d_backward(dy, argmax, x_shape)\n--\n\n"
     "Scatter-add dy to the argmax positions: dx of shape x_shape (N, C, H, W)."},
    {"embedding_forward", FN(py_embedding_forward), KW,
     "embedding_forward(table, ids)\n--\n\n"
     "nn.Embedding: table (V, D) float32, ids (N,) int64 in [0, V) -> (N, D)."},
    {"embedding_backward", FN(py_embedding_backward), KW,
     "embedding_backward(dy, ids, num_embeddings)\n--\n\n"
     "dtable (num_embeddings, D): row ids[i] += dy[i] (repeated ids add up)."},
    {"timestep_embedding", FN(py_timestep_embedding), KW,
     "timestep_embedding(t, dim, max_period=10000.0)\n--\n\n"
     "Sinusoidal timestep embedding, exactly the DDPM reference\n"
     "get_timestep_embedding (Ho et al., diffusion_tf/nn.py; diffusers' defaults):\n"
     "  half = dim // 2\n"
     "  f_j = exp(-j * log(max_period) / (half - 1)), j = 0 .. half-1\n"
     "  y = concat([sin(t f), cos(t f)], axis=1), then one zero column if dim is odd.\n"
     "t (N,) float32 -> (N, dim) float32; dim >= 4. Computed in double."},
    {"concat_forward", FN(py_concat_forward), KW,
     "concat_forward(xs)\n--\n\n"
     "Concatenate a list of (N, C_i, *rest) float32 arrays on dim 1 -> (N, sum C_i, *rest)."},
    {"concat_backward", FN(py_concat_backward), KW,
     "concat_backward(dy, sizes)\n--\n\n"
     "Split dy (N, sum C_i, *rest) on dim 1 into a list of (N, C_i, *rest), sizes = [C_i]."},
    {"add_forward", FN(py_add_forward), KW,
     "add_forward(a, b)\n--\n\n"
     "y = a + b; b has a's ndim, each dim equal to a's or 1 (broadcast); y has a's shape."},
    {"mul_forward", FN(py_mul_forward), KW,
     "mul_forward(a, b)\n--\n\n"
     "y = a * b; b has a's ndim, each dim equal to a's or 1 (broadcast); y has a's shape."},
    {"add_backward", FN(py_add_backward), KW,
     "add_backward(dy, b_shape)\n--\n\n"
     "(da, db): da = dy, db = dy summed over the dims where b_shape is 1."},
    {"mul_backward", FN(py_mul_backward), KW,
     "mul_backward(dy, a, b)\n--\n\n"
     "(da, db): da = dy * b (broadcast), db = dy * a summed over b's broadcast dims."},
    {"mse_forward", FN(py_mse_forward), KW,
     "mse_forward(x, y)\n--\n\n"
     "F.mse_loss(x, y, reduction='mean') as a Python float (double accumulation)."},
    {"mse_backward", FN(py_mse_backward), KW,
     "mse_backward(x, y, g=1.0)\n--\n\n"
     "dx = g * 2 * (x - y) / x.size (the gradient for y is -dx)."},
    {NULL, NULL, 0, NULL},
};
