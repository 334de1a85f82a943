// Glue for the elementwise / norm / pool family (csrc/cpu/ops.h): argument
// conversion, every shape relation checked with a message that names the op
// and the expected shape, the GIL released around the kernel only, one exit:
// label per function. Contract: docs/engine-api.md.
#include "glue.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "checks.h"
#include "cpu/ops.h"

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

// ---------------------------------------------------------------------------
// group norm

// group_norm_forward and group_norm_silu_forward (silu(group_norm(x)), whose
// saved statistics are float64): the same arguments and checks.
static PyObject *group_norm_forward_glue(PyObject *args, PyObject *kw, const char *op,
                                         int silu) {
    static char *kwlist[] = {"x", "num_groups", "w", "b", "eps", NULL};
    PyObject *xo, *wo, *bo;
    int G;
    double eps;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    PyObject *ret = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OiOOd:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo, &G, &wo, &bo, &eps))
        return NULL;
    tn_group_norm g;
    if (!(x = tn_f32_min_ndim(xo, op, "x", 2, "(N, C, *)"))) goto exit;
    if (tn_check_fit_int((PyObject *)x, op, "x") < 0) goto exit;
    if (tn_check_group_norm(op, (PyObject *)x, G, &g) < 0) goto exit;
    if (tn_check_nonneg(op, "eps", eps) < 0) goto exit;
    if (wo != Py_None && !(w = tn_f32_expect(wo, op, "w", &g.param))) goto exit;
    if (bo != Py_None && !(b = tn_f32_expect(bo, op, "b", &g.param))) goto exit;
    if (tn_check_affine(op, (PyObject *)w, (PyObject *)b) < 0) goto exit;
    int stats_type = silu ? NPY_FLOAT64 : NPY_FLOAT32;
    if (!(y = tn_empty(PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    if (!(mean = tn_empty(2, g.stats.dims, stats_type))) goto exit;
    if (!(rstd = tn_empty(2, g.stats.dims, stats_type))) goto exit;
    if (silu)
        RUN_KERNEL(op, group_norm_silu_forward(TN_F32(y), PyArray_DATA(mean), PyArray_DATA(rstd),
                                               TN_F32(x), w ? TN_F32(w) : NULL,
                                               b ? TN_F32(b) : NULL, g.N, g.C, g.S, G,
                                               (float)eps));
    else
        RUN_KERNEL(op, group_norm_forward(TN_F32(y), TN_F32(mean), TN_F32(rstd), TN_F32(x),
                                          w ? TN_F32(w) : NULL, b ? TN_F32(b) : NULL, g.N, g.C,
                                          g.S, G, (float)eps));
    ret = Py_BuildValue("(OOO)", y, mean, rstd);
exit:
    Py_XDECREF(x); Py_XDECREF(w); Py_XDECREF(b);
    Py_XDECREF(y); Py_XDECREF(mean); Py_XDECREF(rstd);
    return ret;
}

static PyObject *py_group_norm_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return group_norm_forward_glue(args, kw, "group_norm_forward", 0);
}

static PyObject *py_group_norm_silu_forward(PyObject *self, PyObject *args, PyObject *kw) {
    return group_norm_forward_glue(args, kw, "group_norm_silu_forward", 1);
}

// group_norm_backward(dy, x, mean, rstd, num_groups, w) and
// group_norm_silu_backward(..., w, b) (b: the forward's, to rebuild its output).
static PyObject *group_norm_backward_glue(PyObject *args, PyObject *kw, const char *op,
                                          int silu) {
    static char *kwlist[] = {"dy", "x", "mean", "rstd", "num_groups", "w", NULL};
    static char *kwlist_silu[] = {"dy", "x", "mean", "rstd", "num_groups", "w", "b", NULL};
    PyObject *dyo, *xo, *mo, *ro, *wo, *bo = Py_None;
    int G;
    PyArrayObject *dy = NULL, *x = NULL, *mean = NULL, *rstd = NULL, *w = NULL, *b = NULL;
    PyArrayObject *dx = NULL, *dw = NULL, *db = NULL;
    PyObject *ret = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%s:%s", silu ? "OOOOiOO" : "OOOOiO", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, silu ? kwlist_silu : kwlist, &dyo, &xo, &mo,
                                     &ro, &G, &wo, &bo))
        return NULL;
    tn_group_norm g;
    if (!(x = tn_f32_min_ndim(xo, op, "x", 2, "(N, C, *)"))) goto exit;
    if (tn_check_fit_int((PyObject *)x, op, "x") < 0) goto exit;
    if (!(dy = tn_f32(dyo, op, "dy", PyArray_NDIM(x), "(the shape of x)"))) goto exit;
    if (tn_check_same_shape((PyObject *)dy, (PyObject *)x, op, "dy", "x") < 0) goto exit;
    if (tn_check_group_norm(op, (PyObject *)x, G, &g) < 0) goto exit;
    if (silu) {
        if (!(mean = tn_f64_expect(mo, op, "mean", &g.stats))) goto exit;
        if (!(rstd = tn_f64_expect(ro, op, "rstd", &g.stats))) goto exit;
    } else {
        if (!(mean = tn_f32_expect(mo, op, "mean", &g.stats))) goto exit;
        if (!(rstd = tn_f32_expect(ro, op, "rstd", &g.stats))) goto exit;
    }
    if (wo != Py_None && !(w = tn_f32_expect(wo, op, "w", &g.param))) goto exit;
    if (bo != Py_None && !(b = tn_f32_expect(bo, op, "b", &g.param))) goto exit;
    if (silu && tn_check_affine(op, (PyObject *)w, (PyObject *)b) < 0) goto exit;
    if (!(dx = tn_empty(PyArray_NDIM(x), PyArray_DIMS(x), NPY_FLOAT32))) goto exit;
    if (w) {
        if (!(dw = tn_zeros_f32(1, g.param.dims))) goto exit;
        if (!(db = tn_zeros_f32(1, g.param.dims))) goto exit;
    }
    if (silu)
        RUN_KERNEL(op, group_norm_silu_backward(TN_F32(dx), dw ? TN_F32(dw) : NULL,
                                                db ? TN_F32(db) : NULL, TN_F32(dy), TN_F32(x),
                                                PyArray_DATA(mean), PyArray_DATA(rstd),
                                                w ? TN_F32(w) : NULL, b ? TN_F32(b) : NULL, g.N,
                                                g.C, g.S, G));
    else
        RUN_KERNEL(op, group_norm_backward(TN_F32(dx), dw ? TN_F32(dw) : NULL,
                                           db ? TN_F32(db) : NULL, TN_F32(dy), TN_F32(x),
                                           TN_F32(mean), TN_F32(rstd), w ? TN_F32(w) : NULL,
                                           g.N, g.C, g.S, G));
    ret = Py_BuildValue("(OOO)", dx, dw ? (PyObject *)dw : Py_None,
                        db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dy); Py_XDECREF(x); Py_XDECREF(mean); Py_XDECREF(rstd); Py_XDECREF(w);
    Py_XDECREF(b); Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

static PyObject *py_group_norm_backward(PyObject *self, PyObject *args, PyObject *kw) {
    return group_norm_backward_glue(args, kw, "group_norm_backward", 0);
}

static PyObject *py_group_norm_silu_backward(PyObject *self, PyObject *args, PyObject *kw) {
    return group_norm_backward_glue(args, kw, "group_norm_silu_backward", 1);
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
    if (tn_check_same_shape((PyObject *)dy, (PyObject *)s, op, "dy", saved_name) < 0) goto exit;
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
    npy_intp ydims[4];
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (tn_check_upsample(op, (PyObject *)x, s, ydims) < 0) goto exit;
    const npy_intp *d = PyArray_DIMS(x);
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
    npy_intp xdims[4];
    if (!(dy = tn_f32(dyo, op, "dy", 4, "(N, C, s*H, s*W)"))) goto exit;
    if (tn_check_upsample_grad(op, (PyObject *)dy, s, xdims) < 0) goto exit;
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
    npy_intp ydims[4];
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (tn_check_fit_int((PyObject *)x, op, "x") < 0) goto exit;
    const npy_intp *d = PyArray_DIMS(x);
    if (tn_check_pool2d(op, d, k, stride, pad, ydims) < 0) goto exit;
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
    npy_intp ydims[4];
    tn_expect e;
    if (tn_parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) goto exit;
    if (tn_check_pool2d(op, xd, k, stride, pad, ydims) < 0) goto exit;
    tn_expect_dims(&e, "(N, C, P, Q)", 4, ydims, 0);
    if (!(dy = tn_f32_expect(dyo, op, "dy", &e))) goto exit;
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
    if (tn_check_fit_int((PyObject *)x, op, "x") < 0) goto exit;
    if (tn_check_adaptive_pool2d(op, OH, OW) < 0) goto exit;
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
    tn_expect e;
    if (tn_parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) goto exit;
    tn_expect_pool_grad(&e, "(N, C, out_h, out_w)", xd);
    if (!(dy = tn_f32_expect(dyo, op, "dy", &e))) goto exit;
    if (tn_check_fit_int((PyObject *)dy, op, "dy") < 0) goto exit;
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
    npy_intp ydims[4];
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (tn_check_fit_int((PyObject *)x, op, "x") < 0) goto exit;
    const npy_intp *d = PyArray_DIMS(x);
    if (tn_check_argmax_plane(op, d[2], d[3]) < 0) goto exit;
    if (tn_check_pool2d(op, d, k, stride, pad, ydims) < 0) goto exit;
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
    tn_expect e;
    if (tn_parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) goto exit;
    if (tn_check_argmax_plane(op, xd[2], xd[3]) < 0) goto exit;
    tn_expect_pool_grad(&e, "(N, C, P, Q)", xd);
    if (!(dy = tn_f32_expect(dyo, op, "dy", &e))) goto exit;
    if (tn_check_fit_int((PyObject *)dy, op, "dy") < 0) goto exit;
    if (!(am = tn_index(amo, NPY_INT32, op, "argmax", 4, "(N, C, P, Q) (the shape of dy)")))
        goto exit;
    if (tn_check_dims(am, op, "argmax", 4, PyArray_DIMS(dy),
                      "(N, C, P, Q) (the shape of dy) int32") < 0)
        goto exit;
    // On the host the indices are checked here; the CUDA kernel skips bad
    // ones instead (reading them back would cost a device sync).
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

static PyObject *py_embedding_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "embedding_forward";
    static char *kwlist[] = {"table", "ids", NULL};
    PyObject *to, *io;
    PyArrayObject *table = NULL, *ids = NULL, *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:embedding_forward", kwlist, &to, &io))
        return NULL;
    if (!(table = tn_f32(to, op, "table", 2, "(V, D)"))) goto exit;
    if (tn_check_fit_int((PyObject *)table, op, "table") < 0) goto exit;
    if (!(ids = tn_index(io, NPY_INT64, op, "ids", 1, "(N,)"))) goto exit;
    if (tn_check_num_ids(op, PyArray_DIM(ids, 0)) < 0) goto exit;
    if (tn_check_ids(op, (const int64_t *)PyArray_DATA(ids), PyArray_DIM(ids, 0),
                     PyArray_DIM(table, 0)) < 0)
        goto exit;
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
    tn_expect e;
    if (tn_check_num_embeddings(op, V) < 0) goto exit;
    if (!(ids = tn_index(io, NPY_INT64, op, "ids", 1, "(N,)"))) goto exit;
    tn_expect_embedding_grad(&e, PyArray_DIM(ids, 0));
    if (!(dy = tn_f32_expect(dyo, op, "dy", &e))) goto exit;
    if (tn_check_fit_int((PyObject *)dy, op, "dy") < 0) goto exit;
    if (tn_check_ids(op, (const int64_t *)PyArray_DATA(ids), PyArray_DIM(ids, 0), V) < 0)
        goto exit;
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
    if (tn_check_fit_int((PyObject *)t, op, "t") < 0) goto exit;
    if (tn_check_timestep(op, dim, max_period) < 0) goto exit;
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
    if (!(seq = tn_concat_list(xso, op, "float32 arrays"))) goto exit;
    n = PySequence_Fast_GET_SIZE(seq);
    xs = PyMem_Calloc((size_t)n, sizeof *xs);
    ptrs = PyMem_Calloc((size_t)n, sizeof *ptrs);
    sizes = PyMem_Calloc((size_t)n, sizeof *sizes);
    if (!xs || !ptrs || !sizes) {
        PyErr_NoMemory();
        goto exit;
    }
    // The CUDA op runs the same loop with its own converters: the list's
    // contract is tn_concat_list and tn_expect_concat.
    npy_intp ctot = 0;
    tn_expect e;  // of xs[1:]
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zd]", i);
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (i == 0) {
            if (!(xs[0] = tn_f32_min_ndim(item, op, name, 2, "(N, C_i, *)"))) goto exit;
            tn_expect_concat(&e, (PyObject *)xs[0]);
        } else if (!(xs[i] = tn_f32_expect(item, op, name, &e))) {
            goto exit;
        }
        ptrs[i] = TN_F32(xs[i]);
        sizes[i] = (ptrdiff_t)(PyArray_SIZE(xs[i]) / PyArray_DIM(xs[i], 0));
        ctot += PyArray_DIM(xs[i], 1);
    }
    const int nd = PyArray_NDIM(xs[0]);
    npy_intp ydims[NPY_MAXDIMS];
    memcpy(ydims, PyArray_DIMS(xs[0]), sizeof(npy_intp) * nd);
    ydims[1] = ctot;
    if (tn_check_concat_batch(op, ydims[0]) < 0) goto exit;
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
    PyObject *dyo, *so, *list = NULL;
    PyArrayObject *dy = NULL;
    Py_ssize_t *cs = NULL;  // the C_i
    float **ptrs = NULL;
    ptrdiff_t *sizes = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:concat_backward", kwlist, &dyo, &so))
        return NULL;
    if (!(dy = tn_f32_min_ndim(dyo, op, "dy", 2, "(N, sum C_i, *)"))) goto exit;
    if (tn_check_concat_batch(op, PyArray_DIM(dy, 0)) < 0) goto exit;
    const Py_ssize_t n = tn_parse_concat_sizes(so, op, (PyObject *)dy, &cs);
    if (n < 0) goto exit;
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
    npy_intp dims[NPY_MAXDIMS];
    memcpy(dims, PyArray_DIMS(dy), sizeof(npy_intp) * nd);
    for (Py_ssize_t i = 0; i < n; i++) {
        dims[1] = cs[i];
        PyArrayObject *dx = tn_empty(nd, dims, NPY_FLOAT32);
        if (!dx) goto exit;
        PyList_SET_ITEM(list, i, (PyObject *)dx);
        ptrs[i] = TN_F32(dx);
        sizes[i] = (ptrdiff_t)cs[i] * rest;
    }
    RUN_KERNEL(op, concat_backward(ptrs, TN_F32(dy), sizes, (int)n, (int)PyArray_DIM(dy, 0),
                                   (ptrdiff_t)(PyArray_SIZE(dy) / PyArray_DIM(dy, 0))));
    ret = list;
    list = NULL;
exit:
    PyMem_Free(cs);
    PyMem_Free(ptrs);
    PyMem_Free(sizes);
    Py_XDECREF(list);
    Py_XDECREF(dy);
    return ret;
}

// ---------------------------------------------------------------------------
// broadcasting add / mul

static void to_ptrdiff(int nd, const npy_intp *d, ptrdiff_t *out) {
    for (int i = 0; i < nd; i++) out[i] = (ptrdiff_t)d[i];
}

// a (any ndim) and b broadcast to it, the inputs add/mul forward and
// mul_backward take. New references in *a, *b, which the caller releases.
static int bcast_inputs(PyObject *ao, PyObject *bo, const char *op, PyArrayObject **a,
                        PyArrayObject **b) {
    if (!(*a = tn_f32(ao, op, "a", -1, "(N, C, H, W) (any ndim)"))) return -1;
    if (!(*b = tn_f32(bo, op, "b", -1, "(a's ndim, each dim equal to a's or 1)"))) return -1;
    return tn_check_broadcast(op, "b", PyArray_NDIM(*a), PyArray_DIMS(*a), PyArray_NDIM(*b),
                              PyArray_DIMS(*b), TN_BCAST_MAXDIM);
}

static PyObject *binary_forward(PyObject *args, PyObject *kw, const char *op, int is_mul) {
    static char *kwlist[] = {"a", "b", NULL};
    PyObject *ao, *bo;
    PyArrayObject *a = NULL, *b = NULL, *y = NULL;
    PyObject *ret = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &ao, &bo)) return NULL;
    if (bcast_inputs(ao, bo, op, &a, &b) < 0) goto exit;
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
    if (tn_check_add_backward(op, (PyObject *)dy, so, TN_BCAST_MAXDIM, bd) < 0) goto exit;
    const int nd = PyArray_NDIM(dy);
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
    if (bcast_inputs(ao, bo, op, &a, &b) < 0) goto exit;
    const int nd = PyArray_NDIM(a);
    if (!(dy = tn_f32(dyo, op, "dy", nd, "(the shape of a)"))) goto exit;
    if (tn_check_same_shape((PyObject *)dy, (PyObject *)a, op, "dy", "a") < 0) goto exit;
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
    return tn_check_same_shape((PyObject *)*y, (PyObject *)*x, op, "y", "x");
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
    {"group_norm_silu_forward", FN(py_group_norm_silu_forward), KW,
     "group_norm_silu_forward(x, num_groups, w, b, eps)\n--\n\n"
     "silu(group_norm_forward(x, ...)) in one pass (the same bits), without storing the\n"
     "normalised map: (y, mean, rstd), mean and rstd (N, G) float64 (what the backward\n"
     "needs to rebuild that map exactly)."},
    {"group_norm_silu_backward", FN(py_group_norm_silu_backward), KW,
     "group_norm_silu_backward(dy, x, mean, rstd, num_groups, w, b)\n--\n\n"
     "Gradients of group_norm_silu_forward (mean, rstd its float64 ones; w, b its\n"
     "affine parameters or None): (dx, dw, db); dw and db are None when w is None."},
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
