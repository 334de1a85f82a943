// Glue for the CUDA ops (csrc/cuda/*.cu): `cuda_<op>` takes and returns
// DeviceArrays with exactly the arguments of the CPU op `<op>`
// (docs/engine-api.md), so timenet.nn.functional calls either through the
// same code. Every shape relation is checked here, as in the CPU glue,
// before anything reaches the GPU: a bad shape must be a Python exception,
// never an out-of-bounds access on the device. Inputs must be float32
// DeviceArrays on one device (a numpy array or another device is an error
// naming both); the outputs are allocated here on that device. The GIL is
// released around each launch; the kernels run asynchronously on the
// device's stream.
//
// Also the strided primitives the autograd layer builds Tensor arithmetic,
// slicing, permute and sums from (cuda_binary, cuda_scalar,
// cuda_strided_copy, cuda_strided_add_, cuda_sum).
#include "py_cuda.h"

#ifdef TN_HAVE_CUDA

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

// Run an op entry without the GIL; on a bad status raise and jump to exit.
#define RUN(op, call)                             \
    do {                                          \
        int st_;                                  \
        Py_BEGIN_ALLOW_THREADS st_ = (call);      \
        Py_END_ALLOW_THREADS                      \
        if (st_ != TN_OK) {                       \
            tn_cuda_raise(st_, op);               \
            goto exit;                            \
        }                                         \
    } while (0)

#define DA(o) ((tn_DeviceArray *)(o))

// ---------------------------------------------------------------------------
// argument helpers (borrowed references: the argument tuple keeps them alive)

static const char *dims_str(char *buf, size_t n, int nd, const Py_ssize_t *d) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < nd && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %zd" : "%zd", d[i]);
    if (nd == 1 && k < n) k += (size_t)snprintf(buf + k, n - k, ",");
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

// The device every array of this call lives on (-1 until the first one).
typedef struct {
    int dev;
    const char *first;  // the argument that fixed it
} devctx;

// A device array of `typenum` with `ndim` dims (< 0: any), no zero-size dim,
// on ctx's device. Borrowed reference, or NULL with TypeError / ValueError /
// RuntimeError set.
static tn_DeviceArray *arg_typed(PyObject *obj, int typenum, const char *op, const char *name,
                                 int ndim, const char *expect, devctx *ctx) {
    char got[200];
    const char *tname = typenum == NPY_FLOAT32 ? "float32" : typenum == NPY_INT32 ? "int32"
                                                                                  : "int64";
    if (!tn_DeviceArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be a %s CUDA array %s, got %s; every input of a CUDA op "
                     "must be on the GPU (Tensor.to('cuda'))", op, name, tname, expect,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    tn_DeviceArray *a = DA(obj);
    if (a->typenum != typenum) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    if (ndim >= 0 && a->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] == 0) {
            PyErr_Format(PyExc_ValueError, "%s: %s has a zero-size dimension: %s", op, name,
                         tn_da_describe(obj, got, sizeof got));
            return NULL;
        }
    if (ctx->dev < 0) {
        ctx->dev = a->device;
        ctx->first = name;
    } else if (a->device != ctx->dev) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: expected all inputs on one device, got %s on cuda:%d and %s on cuda:%d",
                     op, ctx->first, ctx->dev, name, a->device);
        return NULL;
    }
    return a;
}

static tn_DeviceArray *arg_f32(PyObject *obj, const char *op, const char *name, int ndim,
                               const char *expect, devctx *ctx) {
    return arg_typed(obj, NPY_FLOAT32, op, name, ndim, expect, ctx);
}

// Optional float32 input: None -> *out = NULL and success.
static int arg_f32_opt(PyObject *obj, const char *op, const char *name, int ndim,
                       const char *expect, devctx *ctx, tn_DeviceArray **out) {
    *out = NULL;
    if (obj == Py_None) return 0;
    *out = arg_f32(obj, op, name, ndim, expect, ctx);
    return *out ? 0 : -1;
}

// a's dims against `want` (entries < 0 match anything).
static int check_dims(const tn_DeviceArray *a, const char *op, const char *name, int ndim,
                      const Py_ssize_t *want, const char *expect) {
    int ok = a->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (want[i] >= 0 && a->shape[i] != want[i]) ok = 0;
    if (ok) return 0;
    char got[200];
    PyErr_Format(PyExc_ValueError, "%s: %s must be %s, got %s", op, name, expect,
                 tn_da_describe((PyObject *)a, got, sizeof got));
    return -1;
}

static int same_shape(const tn_DeviceArray *a, const tn_DeviceArray *ref, const char *op,
                      const char *name, const char *ref_name) {
    char want[160], expect[220];
    snprintf(expect, sizeof expect, "%s float32 (the shape of %s)",
             dims_str(want, sizeof want, ref->ndim, ref->shape), ref_name);
    return check_dims(a, op, name, ref->ndim, ref->shape, expect);
}

static int dims_fit_int(const tn_DeviceArray *a, const char *op, const char *name) {
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %s dim %d is too large (%zd > %d)", op, name, i,
                         a->shape[i], INT_MAX);
            return -1;
        }
    return 0;
}

// A shape argument: exactly `ndim` ints, each in [1, INT_MAX].
static int parse_shape_arg(PyObject *obj, const char *op, const char *name, int ndim,
                           const char *expect, Py_ssize_t *dims) {
    if (PyUnicode_Check(obj) || PyBytes_Check(obj) || !PySequence_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a tuple of %d ints %s, got %s", op, name,
                     ndim, expect, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "shape");
    if (!seq) return -1;
    int rc = -1;
    if (PySequence_Fast_GET_SIZE(seq) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have %d entries %s, got %zd", op, name, ndim,
                     expect, PySequence_Fast_GET_SIZE(seq));
        goto exit;
    }
    for (int i = 0; i < ndim; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t v = PyNumber_AsSsize_t(item, PyExc_OverflowError);
        if (v == -1 && PyErr_Occurred()) goto exit;
        if (v < 1 || v > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %s[%d] must be in [1, %d], got %zd", op, name, i,
                         INT_MAX, v);
            goto exit;
        }
        dims[i] = v;
    }
    rc = 0;
exit:
    Py_DECREF(seq);
    return rc;
}

// A sequence of at most TN_CUDA_MAXDIM ints (any value) -> out; returns the
// count or -1.
static int parse_int_seq(PyObject *obj, const char *op, const char *name, int64_t *out) {
    PyObject *seq = PySequence_Fast(obj, name);
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int rc = -1;
    if (n > TN_CUDA_MAXDIM) {
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd entries, at most %d are supported", op,
                     name, n, TN_CUDA_MAXDIM);
        goto exit;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) goto exit;
        out[i] = (int64_t)v;
    }
    rc = (int)n;
exit:
    Py_DECREF(seq);
    return rc;
}

static tn_DeviceArray *new_f32(int ndim, const Py_ssize_t *shape, int dev) {
    return tn_da_empty(ndim, shape, NPY_FLOAT32, dev);
}

static void to_i64(int nd, const Py_ssize_t *d, int64_t *out) {
    for (int i = 0; i < nd; i++) out[i] = (int64_t)d[i];
}

static int set_dev(int dev, const char *op) {
    int st = tn_cuda_set_device(dev);
    if (st != TN_OK) {
        tn_cuda_raise(st, op);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// strided primitives (the autograd layer's Tensor arithmetic)

// cuda_binary(op, a, b): a op b (0 add, 1 sub, 2 mul, 3 div) with numpy
// broadcasting (dims aligned right, each equal or 1).
static PyObject *py_cuda_binary(PyObject *self, PyObject *args) {
    static const char *op = "cuda_binary";
    int which;
    PyObject *ao, *bo;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "iOO:cuda_binary", &which, &ao, &bo)) return NULL;
    if (which < 0 || which > 3) {
        PyErr_Format(PyExc_ValueError, "%s: op must be 0..3, got %d", op, which);
        return NULL;
    }
    tn_DeviceArray *a = arg_f32(ao, op, "a", -1, "(any shape)", &ctx);
    if (!a) return NULL;
    tn_DeviceArray *b = arg_f32(bo, op, "b", -1, "(broadcastable with a)", &ctx);
    if (!b) return NULL;
    const int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    Py_ssize_t shape[TN_DA_MAXDIM];
    int64_t shp[TN_CUDA_MAXDIM], as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    int64_t ra = 1, rb = 1;
    for (int i = nd - 1; i >= 0; i--) {
        const int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        const Py_ssize_t na = ia >= 0 ? a->shape[ia] : 1, nb = ib >= 0 ? b->shape[ib] : 1;
        if (na != nb && na != 1 && nb != 1) {
            char sa[160], sb[160];
            PyErr_Format(PyExc_ValueError, "%s: shapes %s and %s do not broadcast", op,
                         dims_str(sa, sizeof sa, a->ndim, a->shape),
                         dims_str(sb, sizeof sb, b->ndim, b->shape));
            return NULL;
        }
        shape[i] = na > nb ? na : nb;
        shp[i] = shape[i];
        as[i] = na == 1 ? 0 : ra;
        bs[i] = nb == 1 ? 0 : rb;
        ra *= na;
        rb *= nb;
    }
    if (!(y = new_f32(nd, shape, ctx.dev))) return NULL;
    RUN(op, tn_cuda_binary(TN_DA_F32(y), TN_DA_F32(a), TN_DA_F32(b), which, nd, shp, as, bs));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

// cuda_scalar(op, x, s): x + s, x * s, s / x, s - x (op 0..3).
static PyObject *py_cuda_scalar(PyObject *self, PyObject *args) {
    static const char *op = "cuda_scalar";
    int which;
    PyObject *xo;
    double s;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "iOd:cuda_scalar", &which, &xo, &s)) return NULL;
    if (which < 0 || which > 3) {
        PyErr_Format(PyExc_ValueError, "%s: op must be 0..3, got %d", op, which);
        return NULL;
    }
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    if (!(y = new_f32(x->ndim, x->shape, ctx.dev))) return NULL;
    RUN(op, tn_cuda_scalar(TN_DA_F32(y), TN_DA_F32(x), which, (float)s, tn_da_size(x)));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

// Every position offset + sum idx_i * strides_i (idx_i < shape_i) lies in [0, n).
static int check_strided(const char *op, int nd, const int64_t *shape, const int64_t *strides,
                         int64_t offset, int64_t n) {
    int64_t lo = offset, hi = offset;
    for (int i = 0; i < nd; i++) {
        if (shape[i] < 0) {
            PyErr_Format(PyExc_ValueError, "%s: shape[%d] must be >= 0, got %lld", op, i,
                         (long long)shape[i]);
            return -1;
        }
        if (shape[i] == 0) return 0;  // nothing is touched
        const int64_t span = (shape[i] - 1) * strides[i];
        if (span > 0) hi += span;
        else lo += span;
    }
    if (lo < 0 || hi >= n) {
        PyErr_Format(PyExc_ValueError,
                     "%s: the strided view reaches elements [%lld, %lld] of an array of %lld",
                     op, (long long)lo, (long long)hi, (long long)n);
        return -1;
    }
    return 0;
}

static int parse_view(PyObject *so, PyObject *sto, const char *op, int64_t *shape,
                      int64_t *strides, Py_ssize_t *pshape) {
    int nd = parse_int_seq(so, op, "shape", shape);
    if (nd < 0) return -1;
    int nd2 = parse_int_seq(sto, op, "strides", strides);
    if (nd2 < 0) return -1;
    if (nd2 != nd) {
        PyErr_Format(PyExc_ValueError, "%s: shape has %d entries, strides %d", op, nd, nd2);
        return -1;
    }
    for (int i = 0; i < nd; i++) pshape[i] = (Py_ssize_t)shape[i];
    return nd;
}

// cuda_strided_copy(x, shape, strides, offset) -> y (shape), y[i] = x[offset + idx.strides]
static PyObject *py_cuda_strided_copy(PyObject *self, PyObject *args) {
    static const char *op = "cuda_strided_copy";
    PyObject *xo, *so, *sto;
    long long offset;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    PyObject *ret = NULL;
    int64_t shape[TN_CUDA_MAXDIM], strides[TN_CUDA_MAXDIM];
    Py_ssize_t pshape[TN_DA_MAXDIM];
    if (!PyArg_ParseTuple(args, "OOOL:cuda_strided_copy", &xo, &so, &sto, &offset)) return NULL;
    if (!tn_DeviceArray_Check(xo) || DA(xo)->typenum != NPY_FLOAT32) {
        char got[200];
        PyErr_Format(PyExc_TypeError, "%s: x must be a float32 CUDA array, got %s", op,
                     tn_da_describe(xo, got, sizeof got));
        return NULL;
    }
    tn_DeviceArray *x = DA(xo);
    ctx.dev = x->device;
    int nd = parse_view(so, sto, op, shape, strides, pshape);
    if (nd < 0) return NULL;
    if (check_strided(op, nd, shape, strides, offset, tn_da_size(x)) < 0) return NULL;
    if (!(y = new_f32(nd, pshape, ctx.dev))) return NULL;
    if (tn_da_size(y) > 0)
        RUN(op, tn_cuda_strided_copy(TN_DA_F32(y), TN_DA_F32(x), nd, shape, strides, offset));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

// cuda_strided_add_(y, x, shape, strides, offset): y[offset + idx.strides] += x
static PyObject *py_cuda_strided_add_(PyObject *self, PyObject *args) {
    static const char *op = "cuda_strided_add_";
    PyObject *yo, *xo, *so, *sto;
    long long offset;
    devctx ctx = {-1, NULL};
    int64_t shape[TN_CUDA_MAXDIM], strides[TN_CUDA_MAXDIM];
    Py_ssize_t pshape[TN_DA_MAXDIM];
    if (!PyArg_ParseTuple(args, "OOOOL:cuda_strided_add_", &yo, &xo, &so, &sto, &offset))
        return NULL;
    if (!tn_DeviceArray_Check(yo) || DA(yo)->typenum != NPY_FLOAT32) {
        char got[200];
        PyErr_Format(PyExc_TypeError, "%s: y must be a float32 CUDA array, got %s", op,
                     tn_da_describe(yo, got, sizeof got));
        return NULL;
    }
    tn_DeviceArray *y = DA(yo);
    ctx.dev = y->device;
    ctx.first = "y";
    int nd = parse_view(so, sto, op, shape, strides, pshape);
    if (nd < 0) return NULL;
    if (check_strided(op, nd, shape, strides, offset, tn_da_size(y)) < 0) return NULL;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    if (n == 0) Py_RETURN_NONE;
    tn_DeviceArray *x = arg_f32(xo, op, "x", nd, "(shape)", &ctx);
    if (!x) return NULL;
    if (check_dims(x, op, "x", nd, pshape, "(the view's shape)") < 0) return NULL;
    if (set_dev(ctx.dev, op) < 0) return NULL;
    RUN(op, tn_cuda_strided_add(TN_DA_F32(y), TN_DA_F32(x), nd, shape, strides, offset));
    Py_RETURN_NONE;
exit:
    return NULL;
}

// cuda_sum(x, axes=None, keepdims=False): the sum over axes (None: all).
static PyObject *py_cuda_sum(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_sum";
    static char *kwlist[] = {"x", "axes", "keepdims", NULL};
    PyObject *xo, *axo = Py_None;
    int keepdims = 0;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op:cuda_sum", kwlist, &xo, &axo, &keepdims))
        return NULL;
    if (!tn_DeviceArray_Check(xo) || DA(xo)->typenum != NPY_FLOAT32) {
        char got[200];
        PyErr_Format(PyExc_TypeError, "%s: x must be a float32 CUDA array, got %s", op,
                     tn_da_describe(xo, got, sizeof got));
        return NULL;
    }
    tn_DeviceArray *x = DA(xo);
    ctx.dev = x->device;
    int reduce[TN_CUDA_MAXDIM] = {0};
    if (axo == Py_None) {
        for (int i = 0; i < x->ndim; i++) reduce[i] = 1;
    } else {
        int64_t axes[TN_CUDA_MAXDIM];
        int na = parse_int_seq(axo, op, "axes", axes);
        if (na < 0) return NULL;
        for (int i = 0; i < na; i++) {
            int64_t a = axes[i] < 0 ? axes[i] + x->ndim : axes[i];
            if (a < 0 || a >= x->ndim) {
                PyErr_Format(PyExc_ValueError, "%s: axis %lld is out of range for %d dims", op,
                             (long long)axes[i], x->ndim);
                return NULL;
            }
            reduce[a] = 1;
        }
    }
    Py_ssize_t yshape[TN_DA_MAXDIM];
    int ynd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (!reduce[i]) yshape[ynd++] = x->shape[i];
        else if (keepdims) yshape[ynd++] = 1;
    }
    if (!(y = new_f32(ynd, yshape, ctx.dev))) return NULL;
    int64_t shp[TN_CUDA_MAXDIM];
    to_i64(x->ndim, x->shape, shp);
    if (tn_da_size(y) > 0)
        RUN(op, tn_cuda_sum(TN_DA_F32(y), TN_DA_F32(x), NULL, x->ndim, shp, reduce));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

// ---------------------------------------------------------------------------
// activations

typedef int (*unary_fn)(float *, const float *, int64_t);
typedef int (*unary_grad_fn)(float *, const float *, const float *, int64_t);

static PyObject *unary_forward(PyObject *args, PyObject *kw, const char *op, unary_fn f) {
    static char *kwlist[] = {"x", NULL};
    PyObject *xo, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "O:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo)) return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    if (!(y = new_f32(x->ndim, x->shape, ctx.dev))) return NULL;
    RUN(op, f(TN_DA_F32(y), TN_DA_F32(x), tn_da_size(x)));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *unary_backward(PyObject *args, PyObject *kw, const char *op,
                                const char *saved, unary_grad_fn f) {
    static char *kwlist_x[] = {"dy", "x", NULL};
    static char *kwlist_y[] = {"dy", "y", NULL};
    PyObject *dyo, *so, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, saved[0] == 'x' ? kwlist_x : kwlist_y, &dyo,
                                     &so))
        return NULL;
    tn_DeviceArray *s = arg_f32(so, op, saved, -1, "(any shape)", &ctx);
    if (!s) return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", s->ndim, "(the shape of the saved input)", &ctx);
    if (!dy || same_shape(dy, s, op, "dy", saved) < 0) return NULL;
    if (!(dx = new_f32(s->ndim, s->shape, ctx.dev))) return NULL;
    RUN(op, f(TN_DA_F32(dx), TN_DA_F32(dy), TN_DA_F32(s), tn_da_size(s)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

static PyObject *py_silu_forward(PyObject *s, PyObject *a, PyObject *k) {
    return unary_forward(a, k, "cuda_silu_forward", tn_cuda_silu_forward);
}
static PyObject *py_silu_backward(PyObject *s, PyObject *a, PyObject *k) {
    return unary_backward(a, k, "cuda_silu_backward", "x", tn_cuda_silu_backward);
}
static PyObject *py_sigmoid_forward(PyObject *s, PyObject *a, PyObject *k) {
    return unary_forward(a, k, "cuda_sigmoid_forward", tn_cuda_sigmoid_forward);
}
static PyObject *py_sigmoid_backward(PyObject *s, PyObject *a, PyObject *k) {
    return unary_backward(a, k, "cuda_sigmoid_backward", "y", tn_cuda_sigmoid_backward);
}
static PyObject *py_relu_forward(PyObject *s, PyObject *a, PyObject *k) {
    return unary_forward(a, k, "cuda_relu_forward", tn_cuda_relu_forward);
}
static PyObject *py_relu_backward(PyObject *s, PyObject *a, PyObject *k) {
    return unary_backward(a, k, "cuda_relu_backward", "x", tn_cuda_relu_backward);
}

// ---------------------------------------------------------------------------
// broadcasting add / mul (b: a's ndim, each dim a's or 1), as the CPU ops

static int check_broadcast(const char *op, const char *name, int a_nd, const Py_ssize_t *ad,
                           int b_nd, const Py_ssize_t *bd) {
    int ok = a_nd == b_nd && a_nd <= TN_CUDA_MAXDIM;
    for (int i = 0; ok && i < a_nd; i++)
        if (bd[i] != ad[i] && bd[i] != 1) ok = 0;
    if (ok) return 0;
    char abuf[160], bbuf[160];
    PyErr_Format(PyExc_ValueError,
                 "%s: %s must have a's ndim (%d, at most %d) with each dim equal to a's %s or 1, "
                 "got %s", op, name, a_nd, TN_CUDA_MAXDIM, dims_str(abuf, sizeof abuf, a_nd, ad),
                 dims_str(bbuf, sizeof bbuf, b_nd, bd));
    return -1;
}

static PyObject *bcast_forward(PyObject *args, PyObject *kw, const char *op, int is_mul) {
    static char *kwlist[] = {"a", "b", NULL};
    PyObject *ao, *bo, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &ao, &bo)) return NULL;
    tn_DeviceArray *a = arg_f32(ao, op, "a", -1, "(N, C, H, W) (any ndim)", &ctx);
    if (!a) return NULL;
    tn_DeviceArray *b = arg_f32(bo, op, "b", -1, "(a's ndim, each dim equal to a's or 1)", &ctx);
    if (!b) return NULL;
    if (check_broadcast(op, "b", a->ndim, a->shape, b->ndim, b->shape) < 0) return NULL;
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    to_i64(a->ndim, a->shape, as);
    to_i64(b->ndim, b->shape, bs);
    if (!(y = new_f32(a->ndim, a->shape, ctx.dev))) return NULL;
    if (is_mul)
        RUN(op, tn_cuda_mul_forward(TN_DA_F32(y), TN_DA_F32(a), TN_DA_F32(b), a->ndim, as, bs));
    else
        RUN(op, tn_cuda_add_forward(TN_DA_F32(y), TN_DA_F32(a), TN_DA_F32(b), a->ndim, as, bs));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_add_forward(PyObject *s, PyObject *a, PyObject *k) {
    return bcast_forward(a, k, "cuda_add_forward", 0);
}
static PyObject *py_mul_forward(PyObject *s, PyObject *a, PyObject *k) {
    return bcast_forward(a, k, "cuda_mul_forward", 1);
}

static PyObject *py_add_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_add_backward";
    static char *kwlist[] = {"dy", "b_shape", NULL};
    PyObject *dyo, *so, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *da = NULL, *db = NULL;
    Py_ssize_t bd[TN_DA_MAXDIM];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_add_backward", kwlist, &dyo, &so))
        return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", -1, "(the shape of a)", &ctx);
    if (!dy) return NULL;
    const int nd = dy->ndim;
    if (nd > TN_CUDA_MAXDIM) {
        PyErr_Format(PyExc_ValueError, "%s: dy has %d dims, at most %d are supported", op, nd,
                     TN_CUDA_MAXDIM);
        return NULL;
    }
    if (parse_shape_arg(so, op, "b_shape", nd, "(dy's ndim)", bd) < 0) return NULL;
    if (check_broadcast(op, "b_shape", nd, dy->shape, nd, bd) < 0) return NULL;
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    to_i64(nd, dy->shape, as);
    to_i64(nd, bd, bs);
    if (!(da = new_f32(nd, dy->shape, ctx.dev))) goto exit;
    if (!(db = new_f32(nd, bd, ctx.dev))) goto exit;
    RUN(op, tn_cuda_add_backward(TN_DA_F32(da), TN_DA_F32(db), TN_DA_F32(dy), nd, as, bs));
    ret = Py_BuildValue("(OO)", da, db);
exit:
    Py_XDECREF(da); Py_XDECREF(db);
    return ret;
}

static PyObject *py_mul_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_mul_backward";
    static char *kwlist[] = {"dy", "a", "b", NULL};
    PyObject *dyo, *ao, *bo, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *da = NULL, *db = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:cuda_mul_backward", kwlist, &dyo, &ao, &bo))
        return NULL;
    tn_DeviceArray *a = arg_f32(ao, op, "a", -1, "(N, C, H, W) (any ndim)", &ctx);
    if (!a) return NULL;
    tn_DeviceArray *b = arg_f32(bo, op, "b", -1, "(a's ndim, each dim equal to a's or 1)", &ctx);
    if (!b) return NULL;
    if (check_broadcast(op, "b", a->ndim, a->shape, b->ndim, b->shape) < 0) return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", a->ndim, "(the shape of a)", &ctx);
    if (!dy || same_shape(dy, a, op, "dy", "a") < 0) return NULL;
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    to_i64(a->ndim, a->shape, as);
    to_i64(b->ndim, b->shape, bs);
    if (!(da = new_f32(a->ndim, a->shape, ctx.dev))) goto exit;
    if (!(db = new_f32(b->ndim, b->shape, ctx.dev))) goto exit;
    RUN(op, tn_cuda_mul_backward(TN_DA_F32(da), TN_DA_F32(db), TN_DA_F32(dy), TN_DA_F32(a),
                                 TN_DA_F32(b), a->ndim, as, bs));
    ret = Py_BuildValue("(OO)", da, db);
exit:
    Py_XDECREF(da); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// concat along dim 1

static PyObject *py_concat_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_concat_forward";
    static char *kwlist[] = {"xs", NULL};
    PyObject *xso, *seq = NULL, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray **xs = NULL, *y = NULL;
    const float **ptrs = NULL;
    int64_t *sizes = NULL;
    Py_ssize_t n = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:cuda_concat_forward", kwlist, &xso))
        return NULL;
    if (!PyList_Check(xso) && !PyTuple_Check(xso)) {
        PyErr_Format(PyExc_TypeError, "%s: xs must be a list of (N, C_i, *) float32 CUDA arrays, "
                     "got %s", op, Py_TYPE(xso)->tp_name);
        return NULL;
    }
    if (!(seq = PySequence_Fast(xso, "xs"))) return NULL;
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
    Py_ssize_t ctot = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zd]", i);
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (i == 0) {
            if (!(xs[0] = arg_f32(item, op, name, -1, "(N, C_i, *)", &ctx))) goto exit;
            if (xs[0]->ndim < 2) {
                char got[200];
                PyErr_Format(PyExc_ValueError, "%s: %s must be (N, C_i, *) float32, got %s", op,
                             name, tn_da_describe(item, got, sizeof got));
                goto exit;
            }
        } else {
            const int nd = xs[0]->ndim;
            Py_ssize_t want[TN_DA_MAXDIM];
            char wbuf[160], expect[220];
            memcpy(want, xs[0]->shape, sizeof(Py_ssize_t) * nd);
            want[1] = -1;
            snprintf(expect, sizeof expect, "(N, C_i, *) matching xs[0] %s in every dim but 1",
                     dims_str(wbuf, sizeof wbuf, nd, xs[0]->shape));
            if (!(xs[i] = arg_f32(item, op, name, nd, expect, &ctx))) goto exit;
            if (check_dims(xs[i], op, name, nd, want, expect) < 0) goto exit;
        }
        ptrs[i] = TN_DA_F32(xs[i]);
        sizes[i] = (int64_t)(tn_da_size(xs[i]) / xs[i]->shape[0]);
        ctot += xs[i]->shape[1];
    }
    const int nd = xs[0]->ndim;
    Py_ssize_t ydims[TN_DA_MAXDIM];
    memcpy(ydims, xs[0]->shape, sizeof(Py_ssize_t) * nd);
    ydims[1] = ctot;
    if (ydims[0] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: batch too large", op);
        goto exit;
    }
    if (!(y = new_f32(nd, ydims, ctx.dev))) goto exit;
    const int64_t total = (int64_t)(tn_da_size(y) / ydims[0]);
    RUN(op, tn_cuda_concat_forward(TN_DA_F32(y), ptrs, sizes, (int)n, (int)ydims[0], total));
    ret = (PyObject *)y;
    y = NULL;
exit:
    PyMem_Free(xs);
    PyMem_Free(ptrs);
    PyMem_Free(sizes);
    Py_XDECREF(seq);
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_concat_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_concat_backward";
    static char *kwlist[] = {"dy", "sizes", NULL};
    PyObject *dyo, *so, *seq = NULL, *list = NULL, *ret = NULL;
    devctx ctx = {-1, NULL};
    float **ptrs = NULL;
    int64_t *sizes = NULL;
    Py_ssize_t n = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_concat_backward", kwlist, &dyo, &so))
        return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", -1, "(N, sum C_i, *)", &ctx);
    if (!dy) return NULL;
    if (dy->ndim < 2 || dy->shape[0] > INT_MAX) {
        char got[200];
        PyErr_Format(PyExc_ValueError, "%s: dy must be (N, sum C_i, *) float32 with N < 2**31, "
                     "got %s", op, tn_da_describe(dyo, got, sizeof got));
        return NULL;
    }
    if (!PyList_Check(so) && !PyTuple_Check(so)) {
        PyErr_Format(PyExc_TypeError, "%s: sizes must be a list of ints C_i, got %s", op,
                     Py_TYPE(so)->tp_name);
        return NULL;
    }
    if (!(seq = PySequence_Fast(so, "sizes"))) return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes must hold at least one int", op);
        goto exit;
    }
    const int nd = dy->ndim;
    const int64_t rest = (int64_t)(tn_da_size(dy) / (dy->shape[0] * dy->shape[1]));
    ptrs = PyMem_Calloc((size_t)n, sizeof *ptrs);
    sizes = PyMem_Calloc((size_t)n, sizeof *sizes);
    if (!ptrs || !sizes) {
        PyErr_NoMemory();
        goto exit;
    }
    if (!(list = PyList_New(n))) goto exit;
    Py_ssize_t ctot = 0, dims[TN_DA_MAXDIM];
    memcpy(dims, dy->shape, sizeof(Py_ssize_t) * nd);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t c = PyNumber_AsSsize_t(item, PyExc_OverflowError);
        if (c == -1 && PyErr_Occurred()) goto exit;
        if (c < 1) {
            PyErr_Format(PyExc_ValueError, "%s: sizes[%zd] must be >= 1, got %zd", op, i, c);
            goto exit;
        }
        ctot += c;
        if (ctot > dy->shape[1]) break;  // reported below
        dims[1] = c;
        tn_DeviceArray *dx = new_f32(nd, dims, ctx.dev);
        if (!dx) goto exit;
        PyList_SET_ITEM(list, i, (PyObject *)dx);
        ptrs[i] = TN_DA_F32(dx);
        sizes[i] = (int64_t)c * rest;
    }
    if (ctot != dy->shape[1]) {
        char got[200];
        PyErr_Format(PyExc_ValueError,
                     "%s: dy must be (N, sum C_i, *) float32 with sum(sizes) channels, got %s and "
                     "sizes summing to %s%zd", op, tn_da_describe(dyo, got, sizeof got),
                     ctot > dy->shape[1] ? "at least " : "", ctot);
        goto exit;
    }
    RUN(op, tn_cuda_concat_backward(ptrs, TN_DA_F32(dy), sizes, (int)n, (int)dy->shape[0],
                                    (int64_t)(tn_da_size(dy) / dy->shape[0])));
    ret = list;
    list = NULL;
exit:
    PyMem_Free(ptrs);
    PyMem_Free(sizes);
    Py_XDECREF(seq);
    Py_XDECREF(list);
    return ret;
}

// ---------------------------------------------------------------------------
// mse: the loss stays on the device (a 0-d array)

static PyObject *py_mse_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_mse_forward";
    static char *kwlist[] = {"x", "y", NULL};
    PyObject *xo, *yo, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *loss = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_mse_forward", kwlist, &xo, &yo))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *y = arg_f32(yo, op, "y", x->ndim, "(the shape of x)", &ctx);
    if (!y || same_shape(y, x, op, "y", "x") < 0) return NULL;
    if (!(loss = new_f32(0, NULL, ctx.dev))) return NULL;
    RUN(op, tn_cuda_mse_forward(TN_DA_F32(loss), TN_DA_F32(x), TN_DA_F32(y), tn_da_size(x)));
    ret = (PyObject *)loss;
    loss = NULL;
exit:
    Py_XDECREF(loss);
    return ret;
}

// cuda_mse_backward(x, y, g=1.0): g a float, or a one-element float32 CUDA array
static PyObject *py_mse_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_mse_backward";
    static char *kwlist[] = {"x", "y", "g", NULL};
    PyObject *xo, *yo, *go = NULL, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL, *gd = NULL;
    double g = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:cuda_mse_backward", kwlist, &xo, &yo, &go))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *y = arg_f32(yo, op, "y", x->ndim, "(the shape of x)", &ctx);
    if (!y || same_shape(y, x, op, "y", "x") < 0) return NULL;
    if (go && tn_DeviceArray_Check(go)) {
        if (!(gd = arg_f32(go, op, "g", -1, "(one element)", &ctx))) return NULL;
        if (tn_da_size(gd) != 1) {
            char got[200];
            PyErr_Format(PyExc_ValueError, "%s: g must hold one element, got %s", op,
                         tn_da_describe(go, got, sizeof got));
            return NULL;
        }
    } else if (go) {
        g = PyFloat_AsDouble(go);
        if (g == -1.0 && PyErr_Occurred()) return NULL;
    }
    if (!(dx = new_f32(x->ndim, x->shape, ctx.dev))) return NULL;
    RUN(op, tn_cuda_mse_backward(TN_DA_F32(dx), TN_DA_F32(x), TN_DA_F32(y),
                                 gd ? TN_DA_F32(gd) : NULL, g, tn_da_size(x)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

// ---------------------------------------------------------------------------
// linear (cuBLAS)

static int check_linear(const char *op, const tn_DeviceArray *x, const tn_DeviceArray *w) {
    char expect[96];
    snprintf(expect, sizeof expect, "(O, I) float32 with I == %zd", x->shape[1]);
    const Py_ssize_t wd[2] = {-1, x->shape[1]};
    if (check_dims(w, op, "w", 2, wd, expect) < 0) return -1;
    if (x->shape[0] > INT_MAX || x->shape[1] > INT_MAX || w->shape[0] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes too large (each of N, I, O must be < 2**31)",
                     op);
        return -1;
    }
    return 0;
}

static PyObject *py_linear_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_linear_forward";
    static char *kwlist[] = {"x", "w", "b", NULL};
    PyObject *xo, *wo, *bo = Py_None, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL, *b = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:cuda_linear_forward", kwlist, &xo, &wo,
                                     &bo))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 2, "(N, I)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 2, "(O, I)", &ctx);
    if (!w || check_linear(op, x, w) < 0) return NULL;
    char expect[64];
    snprintf(expect, sizeof expect, "(O,) = (%zd,) or None", w->shape[0]);
    if (arg_f32_opt(bo, op, "b", 1, expect, &ctx, &b) < 0) return NULL;
    if (b && check_dims(b, op, "b", 1, w->shape, expect) < 0) return NULL;
    const Py_ssize_t yd[2] = {x->shape[0], w->shape[0]};
    if (!(y = new_f32(2, yd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_linear_forward(TN_DA_F32(y), TN_DA_F32(x), TN_DA_F32(w),
                                   b ? TN_DA_F32(b) : NULL, (int)x->shape[0], (int)x->shape[1],
                                   (int)w->shape[0]));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_linear_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_linear_backward";
    static char *kwlist[] = {"dy", "x", "w", "need_bias", NULL};
    PyObject *dyo, *xo, *wo, *ret = NULL;
    int need_bias = 1;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL, *dw = NULL, *db = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|p:cuda_linear_backward", kwlist, &dyo, &xo,
                                     &wo, &need_bias))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 2, "(N, I)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 2, "(O, I)", &ctx);
    if (!w || check_linear(op, x, w) < 0) return NULL;
    char expect[64];
    const Py_ssize_t yd[2] = {x->shape[0], w->shape[0]};
    snprintf(expect, sizeof expect, "(N, O) = (%zd, %zd)", yd[0], yd[1]);
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 2, expect, &ctx);
    if (!dy || check_dims(dy, op, "dy", 2, yd, expect) < 0) return NULL;
    if (!(dx = new_f32(2, x->shape, ctx.dev))) goto exit;
    if (!(dw = new_f32(2, w->shape, ctx.dev))) goto exit;
    if (need_bias && !(db = new_f32(1, w->shape, ctx.dev))) goto exit;
    RUN(op, tn_cuda_linear_backward(TN_DA_F32(dx), TN_DA_F32(dw), db ? TN_DA_F32(db) : NULL,
                                    TN_DA_F32(dy), TN_DA_F32(x), TN_DA_F32(w), (int)yd[0],
                                    (int)x->shape[1], (int)yd[1]));
    ret = Py_BuildValue("(OOO)", dx, dw, db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// conv2d (cuDNN)

typedef struct {
    int N, C, H, W, K, R, S, P, Q, stride, pad;
} conv_sizes;

static int check_conv(const char *op, const tn_DeviceArray *x, const tn_DeviceArray *w,
                      int stride, int padding, conv_sizes *z) {
    char expect[96];
    snprintf(expect, sizeof expect, "(K, C, R, S) float32 with C == %zd", x->shape[1]);
    const Py_ssize_t wd[4] = {-1, x->shape[1], -1, -1};
    if (check_dims(w, op, "w", 4, wd, expect) < 0) return -1;
    if (stride < 1) {
        PyErr_Format(PyExc_ValueError, "%s: stride must be >= 1, got %d", op, stride);
        return -1;
    }
    if (padding < 0) {
        PyErr_Format(PyExc_ValueError, "%s: padding must be >= 0, got %d", op, padding);
        return -1;
    }
    long long N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3],
              K = w->shape[0], R = w->shape[2], S = w->shape[3];
    long long Hp = H + 2LL * padding, Wp = W + 2LL * padding;
    if (R > Hp || S > Wp) {
        PyErr_Format(PyExc_ValueError,
                     "%s: kernel (R, S) = (%lld, %lld) is larger than the padded input "
                     "(H + 2*padding, W + 2*padding) = (%lld, %lld)", op, R, S, Hp, Wp);
        return -1;
    }
    long long P = (Hp - R) / stride + 1, Q = (Wp - S) / stride + 1;
    // cuDNN's tensors are int-indexed: every tensor below 2**31 elements.
    const long long lim = INT_MAX;
    if (N > lim || C > lim || K > lim || Hp > lim || Wp > lim || H * W > lim ||
        C * H * W > lim || N * C * H * W > lim || C * R * S > lim || K * C * R * S > lim ||
        K * P * Q > lim || N * K * P * Q > lim) {
        PyErr_Format(PyExc_ValueError,
                     "%s: sizes too large for cuDNN (x (%lld, %lld, %lld, %lld), w (%lld, %lld, "
                     "%lld, %lld): every tensor must have < 2**31 elements)",
                     op, N, C, H, W, K, C, R, S);
        return -1;
    }
    *z = (conv_sizes){(int)N, (int)C, (int)H, (int)W, (int)K, (int)R, (int)S,
                      (int)P, (int)Q, stride, padding};
    return 0;
}

static PyObject *py_conv2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_conv2d_forward";
    static char *kwlist[] = {"x", "w", "b", "stride", "padding", NULL};
    PyObject *xo, *wo, *bo = Py_None, *ret = NULL;
    int stride = 1, padding = 0;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL, *b = NULL;
    conv_sizes z;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|Oii:cuda_conv2d_forward", kwlist, &xo, &wo,
                                     &bo, &stride, &padding))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 4, "(K, C, R, S)", &ctx);
    if (!w || check_conv(op, x, w, stride, padding, &z) < 0) return NULL;
    char expect[64];
    snprintf(expect, sizeof expect, "(K,) = (%d,) or None", z.K);
    if (arg_f32_opt(bo, op, "b", 1, expect, &ctx, &b) < 0) return NULL;
    if (b && check_dims(b, op, "b", 1, w->shape, expect) < 0) return NULL;
    const Py_ssize_t yd[4] = {z.N, z.K, z.P, z.Q};
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_conv2d_forward(TN_DA_F32(y), TN_DA_F32(x), TN_DA_F32(w),
                                   b ? TN_DA_F32(b) : NULL, z.N, z.C, z.H, z.W, z.K, z.R, z.S,
                                   z.stride, z.pad));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_conv2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_conv2d_backward";
    static char *kwlist[] = {"dy", "x", "w", "stride", "padding", "need_dx", "need_bias", NULL};
    PyObject *dyo, *xo, *wo, *ret = NULL;
    int stride = 1, padding = 0, need_dx = 1, need_bias = 1;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL, *dw = NULL, *db = NULL;
    conv_sizes z;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|iipp:cuda_conv2d_backward", kwlist, &dyo,
                                     &xo, &wo, &stride, &padding, &need_dx, &need_bias))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 4, "(K, C, R, S)", &ctx);
    if (!w || check_conv(op, x, w, stride, padding, &z) < 0) return NULL;
    char expect[96];
    const Py_ssize_t yd[4] = {z.N, z.K, z.P, z.Q};
    snprintf(expect, sizeof expect, "(N, K, P, Q) = (%d, %d, %d, %d)", z.N, z.K, z.P, z.Q);
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, expect, &ctx);
    if (!dy || check_dims(dy, op, "dy", 4, yd, expect) < 0) return NULL;
    if (need_dx && !(dx = new_f32(4, x->shape, ctx.dev))) goto exit;
    if (!(dw = new_f32(4, w->shape, ctx.dev))) goto exit;
    if (need_bias && !(db = new_f32(1, w->shape, ctx.dev))) goto exit;
    RUN(op, tn_cuda_conv2d_backward(dx ? TN_DA_F32(dx) : NULL, TN_DA_F32(dw),
                                    db ? TN_DA_F32(db) : NULL, TN_DA_F32(dy), TN_DA_F32(x),
                                    TN_DA_F32(w), z.N, z.C, z.H, z.W, z.K, z.R, z.S, z.stride,
                                    z.pad));
    ret = Py_BuildValue("(OOO)", dx ? (PyObject *)dx : Py_None, dw,
                        db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// group norm

static tn_DeviceArray *arg_min_ndim(PyObject *obj, const char *op, const char *name,
                                    int min_ndim, const char *expect, devctx *ctx) {
    tn_DeviceArray *a = arg_f32(obj, op, name, -1, expect, ctx);
    if (a && a->ndim < min_ndim) {
        char got[200];
        PyErr_Format(PyExc_ValueError, "%s: %s must be %s float32, got %s", op, name, expect,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    return a;
}

static int check_groups(const char *op, int C, int G) {
    if (G < 1 || C % G != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: num_groups must be >= 1 and divide C = %d, got num_groups = %d", op, C,
                     G);
        return -1;
    }
    return 0;
}

static PyObject *py_group_norm_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_group_norm_forward";
    static char *kwlist[] = {"x", "num_groups", "w", "b", "eps", NULL};
    PyObject *xo, *wo, *bo, *ret = NULL;
    int G;
    double eps;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *w = NULL, *b = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiOOd:cuda_group_norm_forward", kwlist, &xo, &G,
                                     &wo, &bo, &eps))
        return NULL;
    tn_DeviceArray *x = arg_min_ndim(xo, op, "x", 2, "(N, C, *)", &ctx);
    if (!x || dims_fit_int(x, op, "x") < 0) return NULL;
    const int N = (int)x->shape[0], C = (int)x->shape[1];
    const int64_t S = (int64_t)(tn_da_size(x) / ((Py_ssize_t)N * C));
    if (check_groups(op, C, G) < 0) return NULL;
    if (!(eps >= 0.0) || !isfinite(eps)) {
        PyErr_Format(PyExc_ValueError, "%s: eps must be finite and >= 0, got %g", op, eps);
        return NULL;
    }
    char expect[64];
    snprintf(expect, sizeof expect, "(C,) = (%d,) or None", C);
    const Py_ssize_t cd[1] = {C};
    if (arg_f32_opt(wo, op, "w", 1, expect, &ctx, &w) < 0) return NULL;
    if (w && check_dims(w, op, "w", 1, cd, expect) < 0) return NULL;
    if (arg_f32_opt(bo, op, "b", 1, expect, &ctx, &b) < 0) return NULL;
    if (b && check_dims(b, op, "b", 1, cd, expect) < 0) return NULL;
    if ((w == NULL) != (b == NULL)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: w and b must both be arrays (affine) or both None, got w %s, b %s", op,
                     w ? "given" : "None", b ? "given" : "None");
        return NULL;
    }
    const Py_ssize_t sd[2] = {N, G};
    if (!(y = new_f32(x->ndim, x->shape, ctx.dev))) goto exit;
    if (!(mean = new_f32(2, sd, ctx.dev))) goto exit;
    if (!(rstd = new_f32(2, sd, ctx.dev))) goto exit;
    RUN(op, tn_cuda_group_norm_forward(TN_DA_F32(y), TN_DA_F32(mean), TN_DA_F32(rstd),
                                       TN_DA_F32(x), w ? TN_DA_F32(w) : NULL,
                                       b ? TN_DA_F32(b) : NULL, N, C, S, G, (float)eps));
    ret = Py_BuildValue("(OOO)", y, mean, rstd);
exit:
    Py_XDECREF(y); Py_XDECREF(mean); Py_XDECREF(rstd);
    return ret;
}

static PyObject *py_group_norm_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_group_norm_backward";
    static char *kwlist[] = {"dy", "x", "mean", "rstd", "num_groups", "w", NULL};
    PyObject *dyo, *xo, *mo, *ro, *wo, *ret = NULL;
    int G;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *w = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOiO:cuda_group_norm_backward", kwlist, &dyo,
                                     &xo, &mo, &ro, &G, &wo))
        return NULL;
    tn_DeviceArray *x = arg_min_ndim(xo, op, "x", 2, "(N, C, *)", &ctx);
    if (!x || dims_fit_int(x, op, "x") < 0) return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", x->ndim, "(the shape of x)", &ctx);
    if (!dy || same_shape(dy, x, op, "dy", "x") < 0) return NULL;
    const int N = (int)x->shape[0], C = (int)x->shape[1];
    const int64_t S = (int64_t)(tn_da_size(x) / ((Py_ssize_t)N * C));
    if (check_groups(op, C, G) < 0) return NULL;
    char expect[64];
    const Py_ssize_t sd[2] = {N, G};
    snprintf(expect, sizeof expect, "(N, G) = (%d, %d)", N, G);
    tn_DeviceArray *mean = arg_f32(mo, op, "mean", 2, expect, &ctx);
    if (!mean || check_dims(mean, op, "mean", 2, sd, expect) < 0) return NULL;
    tn_DeviceArray *rstd = arg_f32(ro, op, "rstd", 2, expect, &ctx);
    if (!rstd || check_dims(rstd, op, "rstd", 2, sd, expect) < 0) return NULL;
    snprintf(expect, sizeof expect, "(C,) = (%d,) or None", C);
    const Py_ssize_t cd[1] = {C};
    if (arg_f32_opt(wo, op, "w", 1, expect, &ctx, &w) < 0) return NULL;
    if (w && check_dims(w, op, "w", 1, cd, expect) < 0) return NULL;
    if (!(dx = new_f32(x->ndim, x->shape, ctx.dev))) goto exit;
    if (w) {
        if (!(dw = new_f32(1, cd, ctx.dev))) goto exit;
        if (!(db = new_f32(1, cd, ctx.dev))) goto exit;
    }
    RUN(op, tn_cuda_group_norm_backward(TN_DA_F32(dx), dw ? TN_DA_F32(dw) : NULL,
                                        db ? TN_DA_F32(db) : NULL, TN_DA_F32(dy), TN_DA_F32(x),
                                        TN_DA_F32(mean), TN_DA_F32(rstd),
                                        w ? TN_DA_F32(w) : NULL, N, C, S, G));
    ret = Py_BuildValue("(OOO)", dx, dw ? (PyObject *)dw : Py_None,
                        db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// upsample, pools

static PyObject *py_upsample_nearest_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_upsample_nearest_forward";
    static char *kwlist[] = {"x", "scale", NULL};
    PyObject *xo, *ret = NULL;
    int s;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi:cuda_upsample_nearest_forward", kwlist, &xo,
                                     &s))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || dims_fit_int(x, op, "x") < 0) return NULL;
    if (s < 1) {
        PyErr_Format(PyExc_ValueError, "%s: scale must be an integer >= 1, got %d", op, s);
        return NULL;
    }
    const Py_ssize_t *d = x->shape;
    if ((int64_t)d[2] * s > INT_MAX || (int64_t)d[3] * s > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: scale %d makes the output too large", op, s);
        return NULL;
    }
    const Py_ssize_t yd[4] = {d[0], d[1], d[2] * s, d[3] * s};
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_upsample_nearest_forward(TN_DA_F32(y), TN_DA_F32(x), (int)d[0], (int)d[1],
                                             (int)d[2], (int)d[3], s));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_upsample_nearest_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_upsample_nearest_backward";
    static char *kwlist[] = {"dy", "scale", NULL};
    PyObject *dyo, *ret = NULL;
    int s;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi:cuda_upsample_nearest_backward", kwlist, &dyo,
                                     &s))
        return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, "(N, C, s*H, s*W)", &ctx);
    if (!dy || dims_fit_int(dy, op, "dy") < 0) return NULL;
    if (s < 1) {
        PyErr_Format(PyExc_ValueError, "%s: scale must be an integer >= 1, got %d", op, s);
        return NULL;
    }
    const Py_ssize_t *d = dy->shape;
    if (d[2] % s || d[3] % s) {
        char got[200];
        PyErr_Format(PyExc_ValueError,
                     "%s: dy must be (N, C, s*H, s*W) float32 with s = %d dividing its H and W, "
                     "got %s", op, s, tn_da_describe(dyo, got, sizeof got));
        return NULL;
    }
    const Py_ssize_t xd[4] = {d[0], d[1], d[2] / s, d[3] / s};
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_upsample_nearest_backward(TN_DA_F32(dx), TN_DA_F32(dy), (int)xd[0],
                                              (int)xd[1], (int)xd[2], (int)xd[3], s));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

static int check_window(const char *op, int k, int stride, int pad, int H, int W) {
    if (k < 1 || stride < 1 || pad < 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: need kernel >= 1, stride >= 1, padding >= 0, got kernel=%d, stride=%d, "
                     "padding=%d", op, k, stride, pad);
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

static int pool_out(int H, int k, int stride, int pad) { return (H + 2 * pad - k) / stride + 1; }

static PyObject *py_avg_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_avg_pool2d_forward";
    static char *kwlist[] = {"x", "kernel", "stride", "padding", NULL};
    PyObject *xo, *ret = NULL;
    int k, stride, pad;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii:cuda_avg_pool2d_forward", kwlist, &xo, &k,
                                     &stride, &pad))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || dims_fit_int(x, op, "x") < 0) return NULL;
    const Py_ssize_t *d = x->shape;
    if (check_window(op, k, stride, pad, (int)d[2], (int)d[3]) < 0) return NULL;
    const Py_ssize_t yd[4] = {d[0], d[1], pool_out((int)d[2], k, stride, pad),
                              pool_out((int)d[3], k, stride, pad)};
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_avg_pool2d_forward(TN_DA_F32(y), TN_DA_F32(x), (int)d[0], (int)d[1],
                                       (int)d[2], (int)d[3], k, stride, pad));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_avg_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_avg_pool2d_backward";
    static char *kwlist[] = {"dy", "x_shape", "kernel", "stride", "padding", NULL};
    PyObject *dyo, *so, *ret = NULL;
    int k, stride, pad;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL;
    Py_ssize_t xd[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOiii:cuda_avg_pool2d_backward", kwlist, &dyo,
                                     &so, &k, &stride, &pad))
        return NULL;
    if (parse_shape_arg(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) return NULL;
    if (check_window(op, k, stride, pad, (int)xd[2], (int)xd[3]) < 0) return NULL;
    const Py_ssize_t yd[4] = {xd[0], xd[1], pool_out((int)xd[2], k, stride, pad),
                              pool_out((int)xd[3], k, stride, pad)};
    char want[160], expect[200];
    snprintf(expect, sizeof expect, "(N, C, P, Q) = %s", dims_str(want, sizeof want, 4, yd));
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, expect, &ctx);
    if (!dy || check_dims(dy, op, "dy", 4, yd, expect) < 0) return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_avg_pool2d_backward(TN_DA_F32(dx), TN_DA_F32(dy), (int)xd[0], (int)xd[1],
                                        (int)xd[2], (int)xd[3], k, stride, pad));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

static PyObject *py_adaptive_avg_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_adaptive_avg_pool2d_forward";
    static char *kwlist[] = {"x", "out_h", "out_w", NULL};
    PyObject *xo, *ret = NULL;
    int OH, OW;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oii:cuda_adaptive_avg_pool2d_forward", kwlist,
                                     &xo, &OH, &OW))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || dims_fit_int(x, op, "x") < 0) return NULL;
    if (OH < 1 || OW < 1) {
        PyErr_Format(PyExc_ValueError, "%s: out_h and out_w must be >= 1, got (%d, %d)", op, OH,
                     OW);
        return NULL;
    }
    const Py_ssize_t *d = x->shape;
    const Py_ssize_t yd[4] = {d[0], d[1], OH, OW};
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_adaptive_avg_pool2d_forward(TN_DA_F32(y), TN_DA_F32(x), (int)d[0],
                                                (int)d[1], (int)d[2], (int)d[3], OH, OW));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y);
    return ret;
}

static PyObject *py_adaptive_avg_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_adaptive_avg_pool2d_backward";
    static char *kwlist[] = {"dy", "x_shape", NULL};
    PyObject *dyo, *so, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL;
    Py_ssize_t xd[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_adaptive_avg_pool2d_backward", kwlist,
                                     &dyo, &so))
        return NULL;
    if (parse_shape_arg(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) return NULL;
    char expect[200];
    snprintf(expect, sizeof expect, "(N, C, out_h, out_w) with (N, C) = (%zd, %zd)", xd[0],
             xd[1]);
    const Py_ssize_t want[4] = {xd[0], xd[1], -1, -1};
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, expect, &ctx);
    if (!dy || check_dims(dy, op, "dy", 4, want, expect) < 0) return NULL;
    if (dims_fit_int(dy, op, "dy") < 0) return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_adaptive_avg_pool2d_backward(TN_DA_F32(dx), TN_DA_F32(dy), (int)xd[0],
                                                 (int)xd[1], (int)xd[2], (int)xd[3],
                                                 (int)dy->shape[2], (int)dy->shape[3]));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

static PyObject *py_max_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_max_pool2d_forward";
    static char *kwlist[] = {"x", "kernel", "stride", "padding", NULL};
    PyObject *xo, *ret = NULL;
    int k, stride, pad;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL, *am = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii:cuda_max_pool2d_forward", kwlist, &xo, &k,
                                     &stride, &pad))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || dims_fit_int(x, op, "x") < 0) return NULL;
    const Py_ssize_t *d = x->shape;
    if (d[2] * d[3] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: H*W = %zd does not fit the int32 argmax", op,
                     d[2] * d[3]);
        return NULL;
    }
    if (check_window(op, k, stride, pad, (int)d[2], (int)d[3]) < 0) return NULL;
    const Py_ssize_t yd[4] = {d[0], d[1], pool_out((int)d[2], k, stride, pad),
                              pool_out((int)d[3], k, stride, pad)};
    if (!(y = new_f32(4, yd, ctx.dev))) goto exit;
    if (!(am = tn_da_empty(4, yd, NPY_INT32, ctx.dev))) goto exit;
    RUN(op, tn_cuda_max_pool2d_forward(TN_DA_F32(y), (int32_t *)am->ptr, TN_DA_F32(x), (int)d[0],
                                       (int)d[1], (int)d[2], (int)d[3], k, stride, pad));
    ret = Py_BuildValue("(OO)", y, am);
exit:
    Py_XDECREF(y); Py_XDECREF(am);
    return ret;
}

static PyObject *py_max_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_max_pool2d_backward";
    static char *kwlist[] = {"dy", "argmax", "x_shape", NULL};
    PyObject *dyo, *amo, *so, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dx = NULL;
    Py_ssize_t xd[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:cuda_max_pool2d_backward", kwlist, &dyo,
                                     &amo, &so))
        return NULL;
    if (parse_shape_arg(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) return NULL;
    if (xd[2] * xd[3] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: H*W = %zd does not fit the int32 argmax", op,
                     xd[2] * xd[3]);
        return NULL;
    }
    char expect[200];
    snprintf(expect, sizeof expect, "(N, C, P, Q) with (N, C) = (%zd, %zd)", xd[0], xd[1]);
    const Py_ssize_t want[4] = {xd[0], xd[1], -1, -1};
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, expect, &ctx);
    if (!dy || check_dims(dy, op, "dy", 4, want, expect) < 0) return NULL;
    if (dims_fit_int(dy, op, "dy") < 0) return NULL;
    tn_DeviceArray *am = arg_typed(amo, NPY_INT32, op, "argmax", 4,
                                   "(N, C, P, Q) (the shape of dy)", &ctx);
    if (!am || check_dims(am, op, "argmax", 4, dy->shape, "(N, C, P, Q) (the shape of dy)") < 0)
        return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN(op, tn_cuda_max_pool2d_backward(TN_DA_F32(dx), TN_DA_F32(dy), (const int32_t *)am->ptr,
                                        (int)xd[0], (int)xd[1], (int)xd[2], (int)xd[3],
                                        (int)dy->shape[2], (int)dy->shape[3]));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

// ---------------------------------------------------------------------------
// embeddings

// ids: a host int64 (N,) array, range-checked against V and copied to the
// device (*tmp holds the copy), or an int64 CUDA array (N,) used as is (the
// kernels skip out-of-range ids). Returns the device pointer or NULL.
static const int64_t *ids_arg(PyObject *obj, const char *op, int64_t V, devctx *ctx,
                              Py_ssize_t *n, tn_DeviceArray **tmp) {
    *tmp = NULL;
    if (tn_DeviceArray_Check(obj)) {
        tn_DeviceArray *a = arg_typed(obj, NPY_INT64, op, "ids", 1, "(N,)", ctx);
        if (!a) return NULL;
        *n = a->shape[0];
        return (const int64_t *)a->ptr;
    }
    char got[160];
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_INT64 ||
        PyArray_NDIM((PyArrayObject *)obj) != 1 || PyArray_SIZE((PyArrayObject *)obj) == 0) {
        PyErr_Format(PyExc_TypeError, "%s: ids must be (N,) int64 (a numpy or CUDA array), got %s",
                     op, tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    PyArrayObject *h = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_INT64, NPY_ARRAY_IN_ARRAY);
    if (!h) return NULL;
    const int64_t *hv = (const int64_t *)PyArray_DATA(h);
    const Py_ssize_t N = PyArray_DIM(h, 0);
    for (Py_ssize_t i = 0; i < N; i++)
        if (hv[i] < 0 || hv[i] >= V) {
            PyErr_Format(PyExc_ValueError, "%s: ids[%zd] = %lld is out of range [0, %lld)", op, i,
                         (long long)hv[i], (long long)V);
            Py_DECREF(h);
            return NULL;
        }
    if (ctx->dev < 0) {
        PyErr_Format(PyExc_RuntimeError, "%s: no device given for host ids", op);
        Py_DECREF(h);
        return NULL;
    }
    const Py_ssize_t shp[1] = {N};
    *tmp = tn_da_empty(1, shp, NPY_INT64, ctx->dev);
    if (!*tmp) {
        Py_DECREF(h);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = tn_cuda_memcpy_h2d((*tmp)->ptr, hv, sizeof(int64_t) * (size_t)N);
    Py_END_ALLOW_THREADS
    Py_DECREF(h);
    if (st != TN_OK) {
        Py_CLEAR(*tmp);
        tn_cuda_raise(st, op);
        return NULL;
    }
    *n = N;
    return (const int64_t *)(*tmp)->ptr;
}

static PyObject *py_embedding_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_embedding_forward";
    static char *kwlist[] = {"table", "ids", NULL};
    PyObject *to, *io, *ret = NULL;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *y = NULL, *tmp = NULL;
    Py_ssize_t N = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_embedding_forward", kwlist, &to, &io))
        return NULL;
    tn_DeviceArray *table = arg_f32(to, op, "table", 2, "(V, D)", &ctx);
    if (!table || dims_fit_int(table, op, "table") < 0) return NULL;
    const int64_t *ids = ids_arg(io, op, table->shape[0], &ctx, &N, &tmp);
    if (!ids) return NULL;
    if (N > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many ids", op);
        goto exit;
    }
    const Py_ssize_t yd[2] = {N, table->shape[1]};
    if (!(y = new_f32(2, yd, ctx.dev))) goto exit;
    RUN(op, tn_cuda_embedding_forward(TN_DA_F32(y), TN_DA_F32(table), ids, (int)N,
                                      (int)table->shape[0], (int)table->shape[1]));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(y); Py_XDECREF(tmp);
    return ret;
}

static PyObject *py_embedding_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_embedding_backward";
    static char *kwlist[] = {"dy", "ids", "num_embeddings", NULL};
    PyObject *dyo, *io, *ret = NULL;
    Py_ssize_t V;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dt = NULL, *tmp = NULL;
    Py_ssize_t N = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOn:cuda_embedding_backward", kwlist, &dyo, &io,
                                     &V))
        return NULL;
    if (V < 1 || V > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: num_embeddings must be in [1, %d], got %zd", op,
                     INT_MAX, V);
        return NULL;
    }
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 2, "(N, D)", &ctx);
    if (!dy || dims_fit_int(dy, op, "dy") < 0) return NULL;
    const int64_t *ids = ids_arg(io, op, V, &ctx, &N, &tmp);
    if (!ids) return NULL;
    if (N != dy->shape[0]) {
        PyErr_Format(PyExc_ValueError, "%s: ids must be (N,) with N = %zd (dy's rows), got %zd",
                     op, dy->shape[0], N);
        goto exit;
    }
    const Py_ssize_t td[2] = {V, dy->shape[1]};
    if (!(dt = new_f32(2, td, ctx.dev))) goto exit;
    RUN(op, tn_cuda_embedding_backward(TN_DA_F32(dt), TN_DA_F32(dy), ids, (int)N, (int)V,
                                       (int)dy->shape[1]));
    ret = (PyObject *)dt;
    dt = NULL;
exit:
    Py_XDECREF(dt); Py_XDECREF(tmp);
    return ret;
}

// cuda_timestep_embedding(t, dim, max_period=10000.0, device=-1): t a float32
// CUDA array (N,), or host values (N,) copied to `device`.
static PyObject *py_timestep_embedding(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_timestep_embedding";
    static char *kwlist[] = {"t", "dim", "max_period", "device", NULL};
    PyObject *to, *ret = NULL;
    int dim, device = -1;
    double max_period = 10000.0;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *t = NULL, *tmp = NULL, *y = NULL;
    PyArrayObject *h = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|di:cuda_timestep_embedding", kwlist, &to,
                                     &dim, &max_period, &device))
        return NULL;
    if (dim < 4) {
        PyErr_Format(PyExc_ValueError,
                     "%s: dim must be >= 4 (the frequencies divide by dim // 2 - 1), got %d", op,
                     dim);
        return NULL;
    }
    if (!(max_period > 0.0) || !isfinite(max_period)) {
        PyErr_Format(PyExc_ValueError, "%s: max_period must be finite and > 0, got %g", op,
                     max_period);
        return NULL;
    }
    if (tn_DeviceArray_Check(to)) {
        if (!(t = arg_f32(to, op, "t", 1, "(N,)", &ctx))) return NULL;
        if (device >= 0 && device != ctx.dev) {
            PyErr_Format(PyExc_RuntimeError, "%s: t is on cuda:%d, device is cuda:%d", op,
                         ctx.dev, device);
            return NULL;
        }
    } else {
        if (device < 0) {
            PyErr_Format(PyExc_ValueError, "%s: host t needs a device index", op);
            return NULL;
        }
        if (!(h = tn_f32(to, op, "t", 1, "(N,)"))) return NULL;
        ctx.dev = device;
        const Py_ssize_t shp[1] = {PyArray_DIM(h, 0)};
        if (!(tmp = new_f32(1, shp, device))) goto exit;
        RUN(op, tn_cuda_memcpy_h2d(tmp->ptr, PyArray_DATA(h), tmp->nbytes));
        t = tmp;
    }
    if (t->shape[0] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many timesteps", op);
        goto exit;
    }
    const Py_ssize_t yd[2] = {t->shape[0], dim};
    if (!(y = new_f32(2, yd, ctx.dev))) goto exit;
    RUN(op, tn_cuda_timestep_embedding_forward(TN_DA_F32(y), TN_DA_F32(t), (int)yd[0], dim,
                                               max_period));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(h); Py_XDECREF(tmp); Py_XDECREF(y);
    return ret;
}

// ---------------------------------------------------------------------------
// attention

static int check_heads(const char *op, const tn_DeviceArray *q, int num_heads) {
    if (num_heads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: num_heads must be >= 1, got %d", op, num_heads);
        return -1;
    }
    const Py_ssize_t N = q->shape[0], L = q->shape[1], C = q->shape[2];
    if (C % num_heads != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: C = %zd (q's last dim) must be divisible by num_heads = %d", op, C,
                     num_heads);
        return -1;
    }
    const double probs = (double)N * num_heads * (double)L * (double)L;
    if (N > INT_MAX || L > INT_MAX || C > INT_MAX || (double)N * L * C > INT_MAX ||
        probs * sizeof(float) > (double)PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "%s: q of shape (%zd, %zd, %zd) with %d heads is too large (probs would be "
                     "(N, heads, L, L))", op, N, L, C, num_heads);
        return -1;
    }
    return 0;
}

static tn_DeviceArray *arg_like(PyObject *obj, const char *op, const char *name,
                                const tn_DeviceArray *ref, const char *sym, devctx *ctx) {
    char shape[96], expect[160];
    snprintf(expect, sizeof expect, "%s = %s", sym, dims_str(shape, sizeof shape, ref->ndim,
                                                              ref->shape));
    tn_DeviceArray *a = arg_f32(obj, op, name, ref->ndim, expect, ctx);
    if (a && check_dims(a, op, name, ref->ndim, ref->shape, expect) < 0) return NULL;
    return a;
}

static PyObject *py_attention_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_attention_forward";
    static char *kwlist[] = {"q", "k", "v", "num_heads", NULL};
    PyObject *qo, *ko, *vo, *ret = NULL;
    int H;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *out = NULL, *probs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOi:cuda_attention_forward", kwlist, &qo, &ko,
                                     &vo, &H))
        return NULL;
    tn_DeviceArray *q = arg_f32(qo, op, "q", 3, "(N, L, C)", &ctx);
    if (!q) return NULL;
    tn_DeviceArray *k = arg_like(ko, op, "k", q, "(N, L, C) = q.shape", &ctx);
    if (!k) return NULL;
    tn_DeviceArray *v = arg_like(vo, op, "v", q, "(N, L, C) = q.shape", &ctx);
    if (!v || check_heads(op, q, H) < 0) return NULL;
    const Py_ssize_t N = q->shape[0], L = q->shape[1], C = q->shape[2];
    const Py_ssize_t pd[4] = {N, H, L, L};
    if (!(out = new_f32(3, q->shape, ctx.dev))) goto exit;
    if (!(probs = new_f32(4, pd, ctx.dev))) goto exit;
    RUN(op, tn_cuda_attention_forward(TN_DA_F32(out), TN_DA_F32(probs), TN_DA_F32(q),
                                      TN_DA_F32(k), TN_DA_F32(v), (int)N, (int)L, (int)C, H));
    ret = Py_BuildValue("(OO)", out, probs);
exit:
    Py_XDECREF(out); Py_XDECREF(probs);
    return ret;
}

static PyObject *py_attention_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_attention_backward";
    static char *kwlist[] = {"dout", "q", "k", "v", "probs", "num_heads", NULL};
    PyObject *dto, *qo, *ko, *vo, *po, *ret = NULL;
    int H;
    devctx ctx = {-1, NULL};
    tn_DeviceArray *dq = NULL, *dk = NULL, *dv = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOi:cuda_attention_backward", kwlist, &dto,
                                     &qo, &ko, &vo, &po, &H))
        return NULL;
    tn_DeviceArray *q = arg_f32(qo, op, "q", 3, "(N, L, C)", &ctx);
    if (!q) return NULL;
    tn_DeviceArray *k = arg_like(ko, op, "k", q, "(N, L, C) = q.shape", &ctx);
    if (!k) return NULL;
    tn_DeviceArray *v = arg_like(vo, op, "v", q, "(N, L, C) = q.shape", &ctx);
    if (!v) return NULL;
    tn_DeviceArray *dout = arg_like(dto, op, "dout", q, "(N, L, C) = q.shape", &ctx);
    if (!dout || check_heads(op, q, H) < 0) return NULL;
    const Py_ssize_t N = q->shape[0], L = q->shape[1], C = q->shape[2];
    const Py_ssize_t pd[4] = {N, H, L, L};
    char want[96], expect[160];
    snprintf(expect, sizeof expect, "(N, num_heads, L, L) = %s", dims_str(want, sizeof want, 4, pd));
    tn_DeviceArray *probs = arg_f32(po, op, "probs", 4, expect, &ctx);
    if (!probs || check_dims(probs, op, "probs", 4, pd, expect) < 0) return NULL;
    if (!(dq = new_f32(3, q->shape, ctx.dev))) goto exit;
    if (!(dk = new_f32(3, q->shape, ctx.dev))) goto exit;
    if (!(dv = new_f32(3, q->shape, ctx.dev))) goto exit;
    RUN(op, tn_cuda_attention_backward(TN_DA_F32(dq), TN_DA_F32(dk), TN_DA_F32(dv),
                                       TN_DA_F32(dout), TN_DA_F32(q), TN_DA_F32(k), TN_DA_F32(v),
                                       TN_DA_F32(probs), (int)N, (int)L, (int)C, H));
    ret = Py_BuildValue("(OOO)", dq, dk, dv);
exit:
    Py_XDECREF(dq); Py_XDECREF(dk); Py_XDECREF(dv);
    return ret;
}

// ---------------------------------------------------------------------------
// optimizer

static int ranges_overlap(const tn_DeviceArray *a, const tn_DeviceArray *b) {
    const char *a0 = a->ptr, *b0 = b->ptr;
    return a->device == b->device && a0 < b0 + b->nbytes && b0 < a0 + a->nbytes;
}

static PyObject *py_adamw_step(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_adamw_step";
    static char *kwlist[] = {"p", "g", "m", "v", "lr", "beta1", "beta2", "eps",
                             "weight_decay", "step", NULL};
    PyObject *po, *go, *mo, *vo;
    double lr, beta1, beta2, eps, wd;
    long long step;
    devctx ctx = {-1, NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOdddddL:cuda_adamw_step", kwlist, &po, &go,
                                     &mo, &vo, &lr, &beta1, &beta2, &eps, &wd, &step))
        return NULL;
    tn_DeviceArray *p = arg_f32(po, op, "p", -1, "(any shape)", &ctx);
    if (!p) return NULL;
    tn_DeviceArray *g = arg_like(go, op, "g", p, "p.shape", &ctx);
    if (!g) return NULL;
    tn_DeviceArray *m = arg_like(mo, op, "m", p, "p.shape", &ctx);
    if (!m) return NULL;
    tn_DeviceArray *v = arg_like(vo, op, "v", p, "p.shape", &ctx);
    if (!v) return NULL;
    tn_DeviceArray *arr[4] = {p, g, m, v};
    const char *names[4] = {"p", "g", "m", "v"};
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (ranges_overlap(arr[i], arr[j])) {
                PyErr_Format(PyExc_ValueError, "%s: %s and %s must not share memory", op,
                             names[i], names[j]);
                return NULL;
            }
    if (!(lr >= 0.0) || !isfinite(lr)) {
        PyErr_Format(PyExc_ValueError, "%s: lr must be finite and >= 0, got %g", op, lr);
        return NULL;
    }
    if (!(beta1 >= 0.0 && beta1 < 1.0) || !(beta2 >= 0.0 && beta2 < 1.0)) {
        PyErr_Format(PyExc_ValueError, "%s: betas must be in [0, 1), got (%g, %g)", op, beta1,
                     beta2);
        return NULL;
    }
    if (!(eps >= 0.0) || !isfinite(eps)) {
        PyErr_Format(PyExc_ValueError, "%s: eps must be finite and >= 0, got %g", op, eps);
        return NULL;
    }
    if (!(wd >= 0.0) || !isfinite(wd)) {
        PyErr_Format(PyExc_ValueError, "%s: weight_decay must be finite and >= 0, got %g", op,
                     wd);
        return NULL;
    }
    if (step < 1) {
        PyErr_Format(PyExc_ValueError, "%s: step must be >= 1 (it counts from 1), got %lld", op,
                     step);
        return NULL;
    }
    if (set_dev(ctx.dev, op) < 0) return NULL;
    RUN(op, tn_cuda_adamw_step(TN_DA_F32(p), TN_DA_F32(m), TN_DA_F32(v), TN_DA_F32(g),
                               tn_da_size(p), lr, beta1, beta2, eps, wd, step));
    Py_RETURN_NONE;
exit:
    return NULL;
}

// A list/tuple of float32 CUDA arrays on one device -> pointers and sizes.
static int collect(PyObject *seq_obj, const char *op, devctx *ctx, float ***ptrs, int64_t **ns,
                   int *count) {
    *ptrs = NULL;
    *ns = NULL;
    *count = 0;
    if (!PyList_Check(seq_obj) && !PyTuple_Check(seq_obj)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a list of float32 CUDA arrays, got %s", op,
                     Py_TYPE(seq_obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(seq_obj, "arrays");
    if (!seq) return -1;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many arrays", op);
        Py_DECREF(seq);
        return -1;
    }
    *ptrs = PyMem_Calloc((size_t)(n ? n : 1), sizeof **ptrs);
    *ns = PyMem_Calloc((size_t)(n ? n : 1), sizeof **ns);
    if (!*ptrs || !*ns) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "arrays[%zd]", i);
        tn_DeviceArray *a = arg_f32(PySequence_Fast_GET_ITEM(seq, i), op, name, -1,
                                    "(any shape)", ctx);
        if (!a) goto fail;
        (*ptrs)[i] = TN_DA_F32(a);
        (*ns)[i] = (int64_t)tn_da_size(a);
    }
    *count = (int)n;
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    PyMem_Free(*ptrs);
    PyMem_Free(*ns);
    *ptrs = NULL;
    *ns = NULL;
    return -1;
}

static PyObject *py_grad_norm(PyObject *self, PyObject *arg) {
    static const char *op = "cuda_grad_norm";
    devctx ctx = {-1, NULL};
    float **ptrs;
    int64_t *ns;
    int count;
    double norm = 0.0;
    PyObject *ret = NULL;
    if (collect(arg, op, &ctx, &ptrs, &ns, &count) < 0) return NULL;
    if (count == 0) {
        ret = PyFloat_FromDouble(0.0);
        goto exit;
    }
    if (set_dev(ctx.dev, op) < 0) goto exit;
    RUN(op, tn_cuda_grad_norm(&norm, (const float *const *)ptrs, ns, count));
    ret = PyFloat_FromDouble(norm);
exit:
    PyMem_Free(ptrs);
    PyMem_Free(ns);
    return ret;
}

static PyObject *py_scale_(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_scale_";
    static char *kwlist[] = {"arrays", "factor", NULL};
    PyObject *seq;
    double factor;
    devctx ctx = {-1, NULL};
    float **ptrs;
    int64_t *ns;
    int count;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Od:cuda_scale_", kwlist, &seq, &factor))
        return NULL;
    if (collect(seq, op, &ctx, &ptrs, &ns, &count) < 0) return NULL;
    if (count > 0) {
        if (set_dev(ctx.dev, op) < 0) goto exit;
        RUN(op, tn_cuda_scale_inplace(ptrs, ns, count, (float)factor));
    }
    Py_INCREF(Py_None);
    ret = Py_None;
exit:
    PyMem_Free(ptrs);
    PyMem_Free(ns);
    return ret;
}

// ---------------------------------------------------------------------------

PyMethodDef tn_cuda_ops_methods[] = {
    // strided primitives (timenet.autograd)
    {"cuda_binary", py_cuda_binary, METH_VARARGS,
     "cuda_binary(op, a, b)\n--\n\na op b (0 add, 1 sub, 2 mul, 3 div), numpy broadcasting."},
    {"cuda_scalar", py_cuda_scalar, METH_VARARGS,
     "cuda_scalar(op, x, s)\n--\n\nx + s (0), x * s (1), s / x (2), s - x (3)."},
    {"cuda_strided_copy", py_cuda_strided_copy, METH_VARARGS,
     "cuda_strided_copy(x, shape, strides, offset)\n--\n\n"
     "y (shape) = x[offset + sum idx_i * strides_i] (element strides; 0 broadcasts)."},
    {"cuda_strided_add_", py_cuda_strided_add_, METH_VARARGS,
     "cuda_strided_add_(y, x, shape, strides, offset)\n--\n\n"
     "y[offset + sum idx_i * strides_i] += x, in place (distinct positions)."},
    {"cuda_sum", FN(py_cuda_sum), KW,
     "cuda_sum(x, axes=None, keepdims=False)\n--\n\nSum over axes, in double, deterministic."},
    // engine ops: the CPU ops' arguments on CUDA arrays
    {"cuda_silu_forward", FN(py_silu_forward), KW, "cuda_silu_forward(x)\n--\n\n"},
    {"cuda_silu_backward", FN(py_silu_backward), KW, "cuda_silu_backward(dy, x)\n--\n\n"},
    {"cuda_sigmoid_forward", FN(py_sigmoid_forward), KW, "cuda_sigmoid_forward(x)\n--\n\n"},
    {"cuda_sigmoid_backward", FN(py_sigmoid_backward), KW, "cuda_sigmoid_backward(dy, y)\n--\n\n"},
    {"cuda_relu_forward", FN(py_relu_forward), KW, "cuda_relu_forward(x)\n--\n\n"},
    {"cuda_relu_backward", FN(py_relu_backward), KW, "cuda_relu_backward(dy, x)\n--\n\n"},
    {"cuda_add_forward", FN(py_add_forward), KW, "cuda_add_forward(a, b)\n--\n\n"},
    {"cuda_mul_forward", FN(py_mul_forward), KW, "cuda_mul_forward(a, b)\n--\n\n"},
    {"cuda_add_backward", FN(py_add_backward), KW, "cuda_add_backward(dy, b_shape)\n--\n\n"},
    {"cuda_mul_backward", FN(py_mul_backward), KW, "cuda_mul_backward(dy, a, b)\n--\n\n"},
    {"cuda_concat_forward", FN(py_concat_forward), KW, "cuda_concat_forward(xs)\n--\n\n"},
    {"cuda_concat_backward", FN(py_concat_backward), KW,
     "cuda_concat_backward(dy, sizes)\n--\n\n"},
    {"cuda_mse_forward", FN(py_mse_forward), KW,
     "cuda_mse_forward(x, y)\n--\n\nThe mean squared error as a 0-d float32 CUDA array."},
    {"cuda_mse_backward", FN(py_mse_backward), KW,
     "cuda_mse_backward(x, y, g=1.0)\n--\n\ng: a float or a one-element CUDA array."},
    {"cuda_linear_forward", FN(py_linear_forward), KW, "cuda_linear_forward(x, w, b)\n--\n\n"},
    {"cuda_linear_backward", FN(py_linear_backward), KW,
     "cuda_linear_backward(dy, x, w, need_bias=True)\n--\n\n"},
    {"cuda_conv2d_forward", FN(py_conv2d_forward), KW,
     "cuda_conv2d_forward(x, w, b, stride, padding)\n--\n\n"},
    {"cuda_conv2d_backward", FN(py_conv2d_backward), KW,
     "cuda_conv2d_backward(dy, x, w, stride, padding, need_dx=True, need_bias=True)\n--\n\n"},
    {"cuda_group_norm_forward", FN(py_group_norm_forward), KW,
     "cuda_group_norm_forward(x, num_groups, w, b, eps)\n--\n\n"},
    {"cuda_group_norm_backward", FN(py_group_norm_backward), KW,
     "cuda_group_norm_backward(dy, x, mean, rstd, num_groups, w)\n--\n\n"},
    {"cuda_upsample_nearest_forward", FN(py_upsample_nearest_forward), KW,
     "cuda_upsample_nearest_forward(x, scale)\n--\n\n"},
    {"cuda_upsample_nearest_backward", FN(py_upsample_nearest_backward), KW,
     "cuda_upsample_nearest_backward(dy, scale)\n--\n\n"},
    {"cuda_avg_pool2d_forward", FN(py_avg_pool2d_forward), KW,
     "cuda_avg_pool2d_forward(x, kernel, stride, padding)\n--\n\n"},
    {"cuda_avg_pool2d_backward", FN(py_avg_pool2d_backward), KW,
     "cuda_avg_pool2d_backward(dy, x_shape, kernel, stride, padding)\n--\n\n"},
    {"cuda_adaptive_avg_pool2d_forward", FN(py_adaptive_avg_pool2d_forward), KW,
     "cuda_adaptive_avg_pool2d_forward(x, out_h, out_w)\n--\n\n"},
    {"cuda_adaptive_avg_pool2d_backward", FN(py_adaptive_avg_pool2d_backward), KW,
     "cuda_adaptive_avg_pool2d_backward(dy, x_shape)\n--\n\n"},
    {"cuda_max_pool2d_forward", FN(py_max_pool2d_forward), KW,
     "cuda_max_pool2d_forward(x, kernel, stride, padding)\n--\n\n(y, argmax int32)"},
    {"cuda_max_pool2d_backward", FN(py_max_pool2d_backward), KW,
     "cuda_max_pool2d_backward(dy, argmax, x_shape)\n--\n\n"},
    {"cuda_embedding_forward", FN(py_embedding_forward), KW,
     "cuda_embedding_forward(table, ids)\n--\n\nids: (N,) int64, host (range-checked) or CUDA."},
    {"cuda_embedding_backward", FN(py_embedding_backward), KW,
     "cuda_embedding_backward(dy, ids, num_embeddings)\n--\n\n"},
    {"cuda_timestep_embedding", FN(py_timestep_embedding), KW,
     "cuda_timestep_embedding(t, dim, max_period=10000.0, device=-1)\n--\n\n"
     "t: a float32 CUDA array (N,), or host values copied to `device`."},
    {"cuda_attention_forward", FN(py_attention_forward), KW,
     "cuda_attention_forward(q, k, v, num_heads)\n--\n\n(out, probs)"},
    {"cuda_attention_backward", FN(py_attention_backward), KW,
     "cuda_attention_backward(dout, q, k, v, probs, num_heads)\n--\n\n(dq, dk, dv)"},
    {"cuda_adamw_step", FN(py_adamw_step), KW,
     "cuda_adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)\n--\n\n"
     "In place on p, m, v (torch.optim.AdamW)."},
    {"cuda_grad_norm", py_grad_norm, METH_O,
     "cuda_grad_norm(grads)\n--\n\nGlobal L2 norm (double), returned to the host."},
    {"cuda_scale_", FN(py_scale_), KW, "cuda_scale_(arrays, factor)\n--\n\nIn place."},
    {NULL, NULL, 0, NULL},
};

#else  // CPU-only build: no CUDA ops

PyMethodDef tn_cuda_ops_methods[] = {
    {NULL, NULL, 0, NULL},
};

#endif
