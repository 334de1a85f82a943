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
// The checks themselves are the CPU ops' (checks.h): what stays here is
// what differs on the device, turning arguments into DeviceArrays on one
// device (arg_typed) and the launches.
//
// Also the strided primitives the autograd layer builds Tensor arithmetic,
// slicing, permute and sums from (cuda_binary, cuda_scalar,
// cuda_strided_copy, cuda_strided_add_, cuda_sum).
#include "py_cuda.h"

#ifdef TN_HAVE_CUDA

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "checks.h"

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

#define DA(o) ((tn_DeviceArray *)(o))

// ---------------------------------------------------------------------------
// argument helpers (borrowed references: the argument tuple keeps them alive)

// A device array of `typenum` with `ndim` dims (< 0: any), no zero-size dim,
// on ctx's device (tn_da_arg). Borrowed reference, or NULL with TypeError /
// ValueError / RuntimeError set.
static tn_DeviceArray *arg_typed(PyObject *obj, int typenum, const char *op, const char *name,
                                 int ndim, const char *expect, tn_devctx *ctx) {
    char got[200];
    tn_DeviceArray *a = tn_da_arg(obj, typenum, op, name, expect, ctx);
    if (!a) return NULL;
    if (ndim >= 0 && a->ndim != ndim) {
        const char *tname = typenum == NPY_FLOAT32 ? "float32" : typenum == NPY_INT32 ? "int32"
                                                                                      : "int64";
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
    return a;
}

static tn_DeviceArray *arg_f32(PyObject *obj, const char *op, const char *name, int ndim,
                               const char *expect, tn_devctx *ctx) {
    return arg_typed(obj, NPY_FLOAT32, op, name, ndim, expect, ctx);
}

// arg_f32 with any ndim >= min_ndim ("(N, C, *)").
static tn_DeviceArray *arg_min_ndim(PyObject *obj, const char *op, const char *name,
                                    int min_ndim, const char *expect, tn_devctx *ctx) {
    tn_DeviceArray *a = arg_f32(obj, op, name, -1, expect, ctx);
    if (a && tn_check_min_ndim(obj, op, name, min_ndim, expect) < 0) return NULL;
    return a;
}

// arg_f32 with exactly e's shape.
static tn_DeviceArray *arg_expect(PyObject *obj, const char *op, const char *name,
                                  const tn_expect *e, tn_devctx *ctx) {
    tn_DeviceArray *a = arg_f32(obj, op, name, e->ndim, e->text, ctx);
    if (a && tn_check_expect(obj, op, name, e) < 0) return NULL;
    return a;
}

// arg_f32 with exactly `want`'s dims: "k must be (N, L, C) = q.shape = (2, 4, 8) ...".
static tn_DeviceArray *arg_like(PyObject *obj, const char *op, const char *name, int nd,
                                const Py_ssize_t *want, const char *sym, tn_devctx *ctx) {
    tn_expect e;
    tn_expect_dims(&e, sym, nd, want, 0);
    return arg_expect(obj, op, name, &e, ctx);
}

// An argument of the strided primitives: any float32 DeviceArray (views may
// be empty), whose device the others must share.
static tn_DeviceArray *arg_base(PyObject *obj, const char *op, const char *name) {
    if (tn_DeviceArray_Check(obj) && DA(obj)->typenum == NPY_FLOAT32) return DA(obj);
    char got[200];
    PyErr_Format(PyExc_TypeError, "%s: %s must be a float32 CUDA array, got %s", op, name,
                 tn_da_describe(obj, got, sizeof got));
    return NULL;
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
    tn_devctx ctx = TN_DEVCTX_INIT;
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
                         tn_fmt_dims(sa, sizeof sa, a->ndim, a->shape),
                         tn_fmt_dims(sb, sizeof sb, b->ndim, b->shape));
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
    RUN_CUDA(op, tn_cuda_binary(TN_DA_F32(y), TN_DA_F32(a), TN_DA_F32(b), which, nd, shp, as, bs));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
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
    RUN_CUDA(op, tn_cuda_scalar(TN_DA_F32(y), TN_DA_F32(x), which, (float)s, tn_da_size(x)));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    PyObject *ret = NULL;
    int64_t shape[TN_CUDA_MAXDIM], strides[TN_CUDA_MAXDIM];
    Py_ssize_t pshape[TN_DA_MAXDIM];
    if (!PyArg_ParseTuple(args, "OOOL:cuda_strided_copy", &xo, &so, &sto, &offset)) return NULL;
    tn_DeviceArray *x = arg_base(xo, op, "x");
    if (!x) return NULL;
    ctx.dev = x->device;
    int nd = parse_view(so, sto, op, shape, strides, pshape);
    if (nd < 0) return NULL;
    if (check_strided(op, nd, shape, strides, offset, tn_da_size(x)) < 0) return NULL;
    if (!(y = new_f32(nd, pshape, ctx.dev))) return NULL;
    if (tn_da_size(y) > 0)
        RUN_CUDA(op, tn_cuda_strided_copy(TN_DA_F32(y), TN_DA_F32(x), nd, shape, strides, offset));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    int64_t shape[TN_CUDA_MAXDIM], strides[TN_CUDA_MAXDIM];
    Py_ssize_t pshape[TN_DA_MAXDIM];
    if (!PyArg_ParseTuple(args, "OOOOL:cuda_strided_add_", &yo, &xo, &so, &sto, &offset))
        return NULL;
    tn_DeviceArray *y = arg_base(yo, op, "y");
    if (!y) return NULL;
    ctx.dev = y->device;
    snprintf(ctx.first, sizeof ctx.first, "y");
    int nd = parse_view(so, sto, op, shape, strides, pshape);
    if (nd < 0) return NULL;
    if (check_strided(op, nd, shape, strides, offset, tn_da_size(y)) < 0) return NULL;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    if (n == 0) Py_RETURN_NONE;
    tn_DeviceArray *x = arg_f32(xo, op, "x", nd, "(shape)", &ctx);
    if (!x) return NULL;
    if (tn_check_shape(xo, op, "x", nd, pshape, "(the view's shape)") < 0) return NULL;
    if (set_dev(ctx.dev, op) < 0) return NULL;
    RUN_CUDA(op, tn_cuda_strided_add(TN_DA_F32(y), TN_DA_F32(x), nd, shape, strides, offset));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op:cuda_sum", kwlist, &xo, &axo, &keepdims))
        return NULL;
    tn_DeviceArray *x = arg_base(xo, op, "x");
    if (!x) return NULL;
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
        RUN_CUDA(op, tn_cuda_sum(TN_DA_F32(y), TN_DA_F32(x), NULL, x->ndim, shp, reduce));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "O:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo)) return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    if (!(y = new_f32(x->ndim, x->shape, ctx.dev))) return NULL;
    RUN_CUDA(op, f(TN_DA_F32(y), TN_DA_F32(x), tn_da_size(x)));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, saved[0] == 'x' ? kwlist_x : kwlist_y, &dyo,
                                     &so))
        return NULL;
    tn_DeviceArray *s = arg_f32(so, op, saved, -1, "(any shape)", &ctx);
    if (!s) return NULL;
    char expect[64];
    snprintf(expect, sizeof expect, "(the shape of %s)", saved);
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", s->ndim, expect, &ctx);
    if (!dy || tn_check_same_shape(dyo, so, op, "dy", saved) < 0) return NULL;
    if (!(dx = new_f32(s->ndim, s->shape, ctx.dev))) return NULL;
    RUN_CUDA(op, f(TN_DA_F32(dx), TN_DA_F32(dy), TN_DA_F32(s), tn_da_size(s)));
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

// a (any ndim) and b broadcast to it, the inputs add/mul forward and
// mul_backward take.
static int bcast_inputs(PyObject *ao, PyObject *bo, const char *op, tn_devctx *ctx,
                        tn_DeviceArray **a, tn_DeviceArray **b) {
    if (!(*a = arg_f32(ao, op, "a", -1, "(N, C, H, W) (any ndim)", ctx))) return -1;
    if (!(*b = arg_f32(bo, op, "b", -1, "(a's ndim, each dim equal to a's or 1)", ctx)))
        return -1;
    return tn_check_broadcast(op, "b", (*a)->ndim, (*a)->shape, (*b)->ndim, (*b)->shape,
                              TN_CUDA_MAXDIM);
}

static PyObject *bcast_forward(PyObject *args, PyObject *kw, const char *op, int is_mul) {
    static char *kwlist[] = {"a", "b", NULL};
    PyObject *ao, *bo, *ret = NULL;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "OO:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &ao, &bo)) return NULL;
    tn_DeviceArray *a, *b;
    if (bcast_inputs(ao, bo, op, &ctx, &a, &b) < 0) return NULL;
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    to_i64(a->ndim, a->shape, as);
    to_i64(b->ndim, b->shape, bs);
    if (!(y = new_f32(a->ndim, a->shape, ctx.dev))) return NULL;
    if (is_mul)
        RUN_CUDA(op, tn_cuda_mul_forward(TN_DA_F32(y), TN_DA_F32(a), TN_DA_F32(b), a->ndim, as,
                                         bs));
    else
        RUN_CUDA(op, tn_cuda_add_forward(TN_DA_F32(y), TN_DA_F32(a), TN_DA_F32(b), a->ndim, as,
                                         bs));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *da = NULL, *db = NULL;
    Py_ssize_t bd[TN_DA_MAXDIM];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_add_backward", kwlist, &dyo, &so))
        return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", -1, "(the shape of a)", &ctx);
    if (!dy) return NULL;
    if (tn_check_add_backward(op, dyo, so, TN_CUDA_MAXDIM, bd) < 0) return NULL;
    const int nd = dy->ndim;
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    to_i64(nd, dy->shape, as);
    to_i64(nd, bd, bs);
    if (!(da = new_f32(nd, dy->shape, ctx.dev))) goto exit;
    if (!(db = new_f32(nd, bd, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_add_backward(TN_DA_F32(da), TN_DA_F32(db), TN_DA_F32(dy), nd, as, bs));
    ret = Py_BuildValue("(OO)", da, db);
exit:
    Py_XDECREF(da); Py_XDECREF(db);
    return ret;
}

static PyObject *py_mul_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_mul_backward";
    static char *kwlist[] = {"dy", "a", "b", NULL};
    PyObject *dyo, *ao, *bo, *ret = NULL;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *da = NULL, *db = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:cuda_mul_backward", kwlist, &dyo, &ao, &bo))
        return NULL;
    tn_DeviceArray *a, *b;
    if (bcast_inputs(ao, bo, op, &ctx, &a, &b) < 0) return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", a->ndim, "(the shape of a)", &ctx);
    if (!dy || tn_check_same_shape(dyo, ao, op, "dy", "a") < 0) return NULL;
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    to_i64(a->ndim, a->shape, as);
    to_i64(b->ndim, b->shape, bs);
    if (!(da = new_f32(a->ndim, a->shape, ctx.dev))) goto exit;
    if (!(db = new_f32(b->ndim, b->shape, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_mul_backward(TN_DA_F32(da), TN_DA_F32(db), TN_DA_F32(dy), TN_DA_F32(a),
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray **xs = NULL, *y = NULL;
    const float **ptrs = NULL;
    int64_t *sizes = NULL;
    Py_ssize_t n = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:cuda_concat_forward", kwlist, &xso))
        return NULL;
    if (!(seq = tn_concat_list(xso, op, "float32 CUDA arrays"))) return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    xs = PyMem_Calloc((size_t)n, sizeof *xs);
    ptrs = PyMem_Calloc((size_t)n, sizeof *ptrs);
    sizes = PyMem_Calloc((size_t)n, sizeof *sizes);
    if (!xs || !ptrs || !sizes) {
        PyErr_NoMemory();
        goto exit;
    }
    // As the CPU op's loop, but converting with arg_*: the list's contract
    // is tn_concat_list and tn_expect_concat.
    Py_ssize_t ctot = 0;
    tn_expect e;  // of xs[1:]
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "xs[%zd]", i);
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (i == 0) {
            if (!(xs[0] = arg_min_ndim(item, op, name, 2, "(N, C_i, *)", &ctx))) goto exit;
            tn_expect_concat(&e, item);
        } else if (!(xs[i] = arg_expect(item, op, name, &e, &ctx))) {
            goto exit;
        }
        ptrs[i] = TN_DA_F32(xs[i]);
        sizes[i] = (int64_t)(tn_da_size(xs[i]) / xs[i]->shape[0]);
        ctot += xs[i]->shape[1];
    }
    const int nd = xs[0]->ndim;
    Py_ssize_t ydims[TN_DA_MAXDIM];
    memcpy(ydims, xs[0]->shape, sizeof(Py_ssize_t) * nd);
    ydims[1] = ctot;
    if (tn_check_concat_batch(op, ydims[0]) < 0) goto exit;
    if (!(y = new_f32(nd, ydims, ctx.dev))) goto exit;
    const int64_t total = (int64_t)(tn_da_size(y) / ydims[0]);
    RUN_CUDA(op, tn_cuda_concat_forward(TN_DA_F32(y), ptrs, sizes, (int)n, (int)ydims[0], total));
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
    PyObject *dyo, *so, *list = NULL, *ret = NULL;
    tn_devctx ctx = TN_DEVCTX_INIT;
    Py_ssize_t *cs = NULL;  // the C_i
    float **ptrs = NULL;
    int64_t *sizes = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_concat_backward", kwlist, &dyo, &so))
        return NULL;
    tn_DeviceArray *dy = arg_min_ndim(dyo, op, "dy", 2, "(N, sum C_i, *)", &ctx);
    if (!dy || tn_check_concat_batch(op, dy->shape[0]) < 0) return NULL;
    const Py_ssize_t n = tn_parse_concat_sizes(so, op, dyo, &cs);
    if (n < 0) return NULL;
    // What is left, as in the CPU op, is making the outputs (on the device).
    const int nd = dy->ndim;
    const int64_t rest = (int64_t)(tn_da_size(dy) / (dy->shape[0] * dy->shape[1]));
    ptrs = PyMem_Calloc((size_t)n, sizeof *ptrs);
    sizes = PyMem_Calloc((size_t)n, sizeof *sizes);
    if (!ptrs || !sizes) {
        PyErr_NoMemory();
        goto exit;
    }
    if (!(list = PyList_New(n))) goto exit;
    Py_ssize_t dims[TN_DA_MAXDIM];
    memcpy(dims, dy->shape, sizeof(Py_ssize_t) * nd);
    for (Py_ssize_t i = 0; i < n; i++) {
        dims[1] = cs[i];
        tn_DeviceArray *dx = new_f32(nd, dims, ctx.dev);
        if (!dx) goto exit;
        PyList_SET_ITEM(list, i, (PyObject *)dx);
        ptrs[i] = TN_DA_F32(dx);
        sizes[i] = (int64_t)cs[i] * rest;
    }
    RUN_CUDA(op, tn_cuda_concat_backward(ptrs, TN_DA_F32(dy), sizes, (int)n, (int)dy->shape[0],
                                         (int64_t)(tn_da_size(dy) / dy->shape[0])));
    ret = list;
    list = NULL;
exit:
    PyMem_Free(cs);
    PyMem_Free(ptrs);
    PyMem_Free(sizes);
    Py_XDECREF(list);
    return ret;
}

// ---------------------------------------------------------------------------
// mse: the loss stays on the device (a 0-d array)

static PyObject *py_mse_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_mse_forward";
    static char *kwlist[] = {"x", "y", NULL};
    PyObject *xo, *yo, *ret = NULL;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *loss = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_mse_forward", kwlist, &xo, &yo))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *y = arg_f32(yo, op, "y", x->ndim, "(the shape of x)", &ctx);
    if (!y || tn_check_same_shape(yo, xo, op, "y", "x") < 0) return NULL;
    if (!(loss = new_f32(0, NULL, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_mse_forward(TN_DA_F32(loss), TN_DA_F32(x), TN_DA_F32(y), tn_da_size(x)));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL, *gd = NULL;
    double g = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:cuda_mse_backward", kwlist, &xo, &yo, &go))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", -1, "(any shape)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *y = arg_f32(yo, op, "y", x->ndim, "(the shape of x)", &ctx);
    if (!y || tn_check_same_shape(yo, xo, op, "y", "x") < 0) return NULL;
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
    RUN_CUDA(op, tn_cuda_mse_backward(TN_DA_F32(dx), TN_DA_F32(x), TN_DA_F32(y),
                                      gd ? TN_DA_F32(gd) : NULL, g, tn_da_size(x)));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

// ---------------------------------------------------------------------------
// linear (cuBLAS)

static PyObject *py_linear_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_linear_forward";
    static char *kwlist[] = {"x", "w", "b", NULL};
    PyObject *xo, *wo, *bo = Py_None, *ret = NULL;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL, *b = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:cuda_linear_forward", kwlist, &xo, &wo,
                                     &bo))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 2, "(N, I)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 2, "(O, I)", &ctx);
    if (!w || tn_check_linear(op, xo, wo) < 0) return NULL;
    if (bo != Py_None && !(b = arg_f32(bo, op, "b", 1, "(O,)", &ctx))) return NULL;
    if (tn_check_bias(op, (PyObject *)b, w->shape[0], "O") < 0) return NULL;
    const Py_ssize_t yd[2] = {x->shape[0], w->shape[0]};
    if (!(y = new_f32(2, yd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_linear_forward(TN_DA_F32(y), TN_DA_F32(x), TN_DA_F32(w),
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL, *dw = NULL, *db = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|p:cuda_linear_backward", kwlist, &dyo, &xo,
                                     &wo, &need_bias))
        return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 2, "(N, O)", &ctx);
    if (!dy) return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 2, "(N, I)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 2, "(O, I)", &ctx);
    if (!w || tn_check_linear(op, xo, wo) < 0) return NULL;
    const Py_ssize_t yd[2] = {x->shape[0], w->shape[0]};
    if (tn_check_grad_out(op, dyo, 2, yd, "(N, O)") < 0) return NULL;
    if (!(dx = new_f32(2, x->shape, ctx.dev))) goto exit;
    if (!(dw = new_f32(2, w->shape, ctx.dev))) goto exit;
    if (need_bias && !(db = new_f32(1, w->shape, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_linear_backward(TN_DA_F32(dx), TN_DA_F32(dw), db ? TN_DA_F32(db) : NULL,
                                         TN_DA_F32(dy), TN_DA_F32(x), TN_DA_F32(w), (int)yd[0],
                                         (int)x->shape[1], (int)yd[1]));
    ret = Py_BuildValue("(OOO)", dx, dw, db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

// ---------------------------------------------------------------------------
// conv2d (cuDNN)

static PyObject *py_conv2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_conv2d_forward";
    static char *kwlist[] = {"x", "w", "b", "stride", "padding", NULL};
    PyObject *xo, *wo, *bo = Py_None, *ret = NULL;
    int stride = 1, padding = 0;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL, *b = NULL;
    tn_conv2d z;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|Oii:cuda_conv2d_forward", kwlist, &xo, &wo,
                                     &bo, &stride, &padding))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 4, "(K, C, R, S)", &ctx);
    if (!w || tn_check_conv2d(op, xo, wo, stride, padding, TN_ON_CUDA, &z) < 0) return NULL;
    if (bo != Py_None && !(b = arg_f32(bo, op, "b", 1, "(K,)", &ctx))) return NULL;
    if (tn_check_bias(op, (PyObject *)b, z.K, "K") < 0) return NULL;
    const Py_ssize_t yd[4] = {z.N, z.K, z.P, z.Q};
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_conv2d_forward(TN_DA_F32(y), TN_DA_F32(x), TN_DA_F32(w),
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL, *dw = NULL, *db = NULL;
    tn_conv2d z;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|iipp:cuda_conv2d_backward", kwlist, &dyo,
                                     &xo, &wo, &stride, &padding, &need_dx, &need_bias))
        return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, "(N, K, P, Q)", &ctx);
    if (!dy) return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x) return NULL;
    tn_DeviceArray *w = arg_f32(wo, op, "w", 4, "(K, C, R, S)", &ctx);
    if (!w || tn_check_conv2d(op, xo, wo, stride, padding, TN_ON_CUDA, &z) < 0) return NULL;
    const Py_ssize_t yd[4] = {z.N, z.K, z.P, z.Q};
    if (tn_check_grad_out(op, dyo, 4, yd, "(N, K, P, Q)") < 0) return NULL;
    if (need_dx && !(dx = new_f32(4, x->shape, ctx.dev))) goto exit;
    if (!(dw = new_f32(4, w->shape, ctx.dev))) goto exit;
    if (need_bias && !(db = new_f32(1, w->shape, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_conv2d_backward(dx ? TN_DA_F32(dx) : NULL, TN_DA_F32(dw),
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

static PyObject *py_group_norm_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_group_norm_forward";
    static char *kwlist[] = {"x", "num_groups", "w", "b", "eps", NULL};
    PyObject *xo, *wo, *bo, *ret = NULL;
    int G;
    double eps;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *w = NULL, *b = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiOOd:cuda_group_norm_forward", kwlist, &xo, &G,
                                     &wo, &bo, &eps))
        return NULL;
    tn_group_norm g;
    tn_DeviceArray *x = arg_min_ndim(xo, op, "x", 2, "(N, C, *)", &ctx);
    if (!x || tn_check_fit_int(xo, op, "x") < 0) return NULL;
    if (tn_check_group_norm(op, xo, G, &g) < 0) return NULL;
    if (tn_check_nonneg(op, "eps", eps) < 0) return NULL;
    if (wo != Py_None && !(w = arg_expect(wo, op, "w", &g.param, &ctx))) return NULL;
    if (bo != Py_None && !(b = arg_expect(bo, op, "b", &g.param, &ctx))) return NULL;
    if (tn_check_affine(op, (PyObject *)w, (PyObject *)b) < 0) return NULL;
    if (!(y = new_f32(x->ndim, x->shape, ctx.dev))) goto exit;
    if (!(mean = new_f32(2, g.stats.dims, ctx.dev))) goto exit;
    if (!(rstd = new_f32(2, g.stats.dims, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_group_norm_forward(TN_DA_F32(y), TN_DA_F32(mean), TN_DA_F32(rstd),
                                            TN_DA_F32(x), w ? TN_DA_F32(w) : NULL,
                                            b ? TN_DA_F32(b) : NULL, g.N, g.C, g.S, G,
                                            (float)eps));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *w = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOiO:cuda_group_norm_backward", kwlist, &dyo,
                                     &xo, &mo, &ro, &G, &wo))
        return NULL;
    tn_group_norm g;
    tn_DeviceArray *x = arg_min_ndim(xo, op, "x", 2, "(N, C, *)", &ctx);
    if (!x || tn_check_fit_int(xo, op, "x") < 0) return NULL;
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", x->ndim, "(the shape of x)", &ctx);
    if (!dy || tn_check_same_shape(dyo, xo, op, "dy", "x") < 0) return NULL;
    if (tn_check_group_norm(op, xo, G, &g) < 0) return NULL;
    tn_DeviceArray *mean = arg_expect(mo, op, "mean", &g.stats, &ctx);
    if (!mean) return NULL;
    tn_DeviceArray *rstd = arg_expect(ro, op, "rstd", &g.stats, &ctx);
    if (!rstd) return NULL;
    if (wo != Py_None && !(w = arg_expect(wo, op, "w", &g.param, &ctx))) return NULL;
    if (!(dx = new_f32(x->ndim, x->shape, ctx.dev))) goto exit;
    if (w) {
        if (!(dw = new_f32(1, g.param.dims, ctx.dev))) goto exit;
        if (!(db = new_f32(1, g.param.dims, ctx.dev))) goto exit;
    }
    RUN_CUDA(op, tn_cuda_group_norm_backward(TN_DA_F32(dx), dw ? TN_DA_F32(dw) : NULL,
                                             db ? TN_DA_F32(db) : NULL, TN_DA_F32(dy),
                                             TN_DA_F32(x), TN_DA_F32(mean), TN_DA_F32(rstd),
                                             w ? TN_DA_F32(w) : NULL, g.N, g.C, g.S, G));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi:cuda_upsample_nearest_forward", kwlist, &xo,
                                     &s))
        return NULL;
    Py_ssize_t yd[4];
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || tn_check_upsample(op, xo, s, yd) < 0) return NULL;
    const Py_ssize_t *d = x->shape;
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_upsample_nearest_forward(TN_DA_F32(y), TN_DA_F32(x), (int)d[0], (int)d[1],
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi:cuda_upsample_nearest_backward", kwlist, &dyo,
                                     &s))
        return NULL;
    Py_ssize_t xd[4];
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 4, "(N, C, s*H, s*W)", &ctx);
    if (!dy || tn_check_upsample_grad(op, dyo, s, xd) < 0) return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_upsample_nearest_backward(TN_DA_F32(dx), TN_DA_F32(dy), (int)xd[0],
                                                   (int)xd[1], (int)xd[2], (int)xd[3], s));
    ret = (PyObject *)dx;
    dx = NULL;
exit:
    Py_XDECREF(dx);
    return ret;
}

static PyObject *py_avg_pool2d_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_avg_pool2d_forward";
    static char *kwlist[] = {"x", "kernel", "stride", "padding", NULL};
    PyObject *xo, *ret = NULL;
    int k, stride, pad;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii:cuda_avg_pool2d_forward", kwlist, &xo, &k,
                                     &stride, &pad))
        return NULL;
    Py_ssize_t yd[4];
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || tn_check_fit_int(xo, op, "x") < 0) return NULL;
    const Py_ssize_t *d = x->shape;
    if (tn_check_pool2d(op, d, k, stride, pad, yd) < 0) return NULL;
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_avg_pool2d_forward(TN_DA_F32(y), TN_DA_F32(x), (int)d[0], (int)d[1],
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL;
    Py_ssize_t xd[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOiii:cuda_avg_pool2d_backward", kwlist, &dyo,
                                     &so, &k, &stride, &pad))
        return NULL;
    Py_ssize_t yd[4];
    if (tn_parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) return NULL;
    if (tn_check_pool2d(op, xd, k, stride, pad, yd) < 0) return NULL;
    tn_DeviceArray *dy = arg_like(dyo, op, "dy", 4, yd, "(N, C, P, Q)", &ctx);
    if (!dy) return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_avg_pool2d_backward(TN_DA_F32(dx), TN_DA_F32(dy), (int)xd[0], (int)xd[1],
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oii:cuda_adaptive_avg_pool2d_forward", kwlist,
                                     &xo, &OH, &OW))
        return NULL;
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || tn_check_fit_int(xo, op, "x") < 0) return NULL;
    if (tn_check_adaptive_pool2d(op, OH, OW) < 0) return NULL;
    const Py_ssize_t *d = x->shape;
    const Py_ssize_t yd[4] = {d[0], d[1], OH, OW};
    if (!(y = new_f32(4, yd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_adaptive_avg_pool2d_forward(TN_DA_F32(y), TN_DA_F32(x), (int)d[0],
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL;
    Py_ssize_t xd[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_adaptive_avg_pool2d_backward", kwlist,
                                     &dyo, &so))
        return NULL;
    tn_expect e;
    if (tn_parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) return NULL;
    tn_expect_pool_grad(&e, "(N, C, out_h, out_w)", xd);
    tn_DeviceArray *dy = arg_expect(dyo, op, "dy", &e, &ctx);
    if (!dy || tn_check_fit_int(dyo, op, "dy") < 0) return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_adaptive_avg_pool2d_backward(TN_DA_F32(dx), TN_DA_F32(dy), (int)xd[0],
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL, *am = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oiii:cuda_max_pool2d_forward", kwlist, &xo, &k,
                                     &stride, &pad))
        return NULL;
    Py_ssize_t yd[4];
    tn_DeviceArray *x = arg_f32(xo, op, "x", 4, "(N, C, H, W)", &ctx);
    if (!x || tn_check_fit_int(xo, op, "x") < 0) return NULL;
    const Py_ssize_t *d = x->shape;
    if (tn_check_argmax_plane(op, d[2], d[3]) < 0) return NULL;
    if (tn_check_pool2d(op, d, k, stride, pad, yd) < 0) return NULL;
    if (!(y = new_f32(4, yd, ctx.dev))) goto exit;
    if (!(am = tn_da_empty(4, yd, NPY_INT32, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_max_pool2d_forward(TN_DA_F32(y), (int32_t *)am->ptr, TN_DA_F32(x),
                                            (int)d[0], (int)d[1], (int)d[2], (int)d[3], k, stride,
                                            pad));
    ret = Py_BuildValue("(OO)", y, am);
exit:
    Py_XDECREF(y); Py_XDECREF(am);
    return ret;
}

static PyObject *py_max_pool2d_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_max_pool2d_backward";
    static char *kwlist[] = {"dy", "argmax", "x_shape", NULL};
    PyObject *dyo, *amo, *so, *ret = NULL;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dx = NULL;
    Py_ssize_t xd[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:cuda_max_pool2d_backward", kwlist, &dyo,
                                     &amo, &so))
        return NULL;
    tn_expect e;
    if (tn_parse_shape(so, op, "x_shape", 4, "(N, C, H, W)", xd) < 0) return NULL;
    if (tn_check_argmax_plane(op, xd[2], xd[3]) < 0) return NULL;
    tn_expect_pool_grad(&e, "(N, C, P, Q)", xd);
    tn_DeviceArray *dy = arg_expect(dyo, op, "dy", &e, &ctx);
    if (!dy || tn_check_fit_int(dyo, op, "dy") < 0) return NULL;
    // argmax is not range-checked here (it stays on the device): the kernel
    // skips out-of-range entries.
    tn_DeviceArray *am = arg_typed(amo, NPY_INT32, op, "argmax", 4,
                                   "(N, C, P, Q) (the shape of dy)", &ctx);
    if (!am || tn_check_shape(amo, op, "argmax", 4, dy->shape,
                              "(N, C, P, Q) (the shape of dy) int32") < 0)
        return NULL;
    if (!(dx = new_f32(4, xd, ctx.dev))) return NULL;
    RUN_CUDA(op, tn_cuda_max_pool2d_backward(TN_DA_F32(dx), TN_DA_F32(dy), (const int32_t *)am->ptr,
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
static const int64_t *ids_arg(PyObject *obj, const char *op, int64_t V, tn_devctx *ctx,
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
    if (tn_check_ids(op, hv, N, V) < 0) {
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *y = NULL, *tmp = NULL;
    Py_ssize_t N = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:cuda_embedding_forward", kwlist, &to, &io))
        return NULL;
    tn_DeviceArray *table = arg_f32(to, op, "table", 2, "(V, D)", &ctx);
    if (!table || tn_check_fit_int(to, op, "table") < 0) return NULL;
    const int64_t *ids = ids_arg(io, op, table->shape[0], &ctx, &N, &tmp);
    if (!ids) return NULL;
    if (tn_check_num_ids(op, N) < 0) goto exit;
    const Py_ssize_t yd[2] = {N, table->shape[1]};
    if (!(y = new_f32(2, yd, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_embedding_forward(TN_DA_F32(y), TN_DA_F32(table), ids, (int)N,
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dt = NULL, *tmp = NULL;
    Py_ssize_t N = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOn:cuda_embedding_backward", kwlist, &dyo, &io,
                                     &V))
        return NULL;
    tn_expect e;
    if (tn_check_num_embeddings(op, V) < 0) return NULL;
    // dy before ids (the CPU op takes ids first): host ids are copied to
    // dy's device.
    tn_DeviceArray *dy = arg_f32(dyo, op, "dy", 2, "(N, D)", &ctx);
    if (!dy || tn_check_fit_int(dyo, op, "dy") < 0) return NULL;
    const int64_t *ids = ids_arg(io, op, V, &ctx, &N, &tmp);
    if (!ids) return NULL;
    tn_expect_embedding_grad(&e, N);
    if (tn_check_expect(dyo, op, "dy", &e) < 0) goto exit;
    const Py_ssize_t td[2] = {V, dy->shape[1]};
    if (!(dt = new_f32(2, td, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_embedding_backward(TN_DA_F32(dt), TN_DA_F32(dy), ids, (int)N, (int)V,
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *t = NULL, *tmp = NULL, *y = NULL;
    PyArrayObject *h = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|di:cuda_timestep_embedding", kwlist, &to,
                                     &dim, &max_period, &device))
        return NULL;
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
    }
    // `to` is t on either side; host values are copied once they passed.
    if (tn_check_fit_int(to, op, "t") < 0) goto exit;
    if (tn_check_timestep(op, dim, max_period) < 0) goto exit;
    if (h) {
        const Py_ssize_t shp[1] = {PyArray_DIM(h, 0)};
        if (!(tmp = new_f32(1, shp, device))) goto exit;
        RUN_CUDA(op, tn_cuda_memcpy_h2d(tmp->ptr, PyArray_DATA(h), tmp->nbytes));
        t = tmp;
    }
    const Py_ssize_t yd[2] = {t->shape[0], dim};
    if (!(y = new_f32(2, yd, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_timestep_embedding_forward(TN_DA_F32(y), TN_DA_F32(t), (int)yd[0], dim,
                                                    max_period));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(h); Py_XDECREF(tmp); Py_XDECREF(y);
    return ret;
}

// ---------------------------------------------------------------------------
// attention

// q (N, L, C) and k, v of q's shape, the inputs both attention ops take.
static int qkv_inputs(PyObject *qo, PyObject *ko, PyObject *vo, const char *op, tn_devctx *ctx,
                      tn_DeviceArray **q, tn_DeviceArray **k, tn_DeviceArray **v) {
    if (!(*q = arg_f32(qo, op, "q", 3, "(N, L, C)", ctx))) return -1;
    const Py_ssize_t *qd = (*q)->shape;
    if (!(*k = arg_like(ko, op, "k", 3, qd, "(N, L, C) = q.shape", ctx))) return -1;
    if (!(*v = arg_like(vo, op, "v", 3, qd, "(N, L, C) = q.shape", ctx))) return -1;
    return 0;
}

static PyObject *py_attention_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_attention_forward";
    static char *kwlist[] = {"q", "k", "v", "num_heads", NULL};
    PyObject *qo, *ko, *vo, *ret = NULL;
    int H;
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *out = NULL, *probs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOi:cuda_attention_forward", kwlist, &qo, &ko,
                                     &vo, &H))
        return NULL;
    tn_DeviceArray *q, *k, *v;
    if (qkv_inputs(qo, ko, vo, op, &ctx, &q, &k, &v) < 0) return NULL;
    if (tn_check_heads(op, qo, H, TN_ON_CUDA) < 0) return NULL;
    const Py_ssize_t N = q->shape[0], L = q->shape[1], C = q->shape[2];
    const Py_ssize_t pd[4] = {N, H, L, L};
    if (!(out = new_f32(3, q->shape, ctx.dev))) goto exit;
    if (!(probs = new_f32(4, pd, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_attention_forward(TN_DA_F32(out), TN_DA_F32(probs), TN_DA_F32(q),
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_DeviceArray *dq = NULL, *dk = NULL, *dv = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOi:cuda_attention_backward", kwlist, &dto,
                                     &qo, &ko, &vo, &po, &H))
        return NULL;
    tn_DeviceArray *q, *k, *v;
    if (qkv_inputs(qo, ko, vo, op, &ctx, &q, &k, &v) < 0) return NULL;
    tn_DeviceArray *dout = arg_like(dto, op, "dout", 3, q->shape, "(N, L, C) = q.shape", &ctx);
    if (!dout || tn_check_heads(op, qo, H, TN_ON_CUDA) < 0) return NULL;
    const Py_ssize_t N = q->shape[0], L = q->shape[1], C = q->shape[2];
    const Py_ssize_t pd[4] = {N, H, L, L};
    tn_DeviceArray *probs = arg_like(po, op, "probs", 4, pd, "(N, num_heads, L, L)", &ctx);
    if (!probs) return NULL;
    if (!(dq = new_f32(3, q->shape, ctx.dev))) goto exit;
    if (!(dk = new_f32(3, q->shape, ctx.dev))) goto exit;
    if (!(dv = new_f32(3, q->shape, ctx.dev))) goto exit;
    RUN_CUDA(op, tn_cuda_attention_backward(TN_DA_F32(dq), TN_DA_F32(dk), TN_DA_F32(dv),
                                            TN_DA_F32(dout), TN_DA_F32(q), TN_DA_F32(k),
                                            TN_DA_F32(v), TN_DA_F32(probs), (int)N, (int)L,
                                            (int)C, H));
    ret = Py_BuildValue("(OOO)", dq, dk, dv);
exit:
    Py_XDECREF(dq); Py_XDECREF(dk); Py_XDECREF(dv);
    return ret;
}

// ---------------------------------------------------------------------------
// optimizer

static PyObject *py_adamw_step(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *op = "cuda_adamw_step";
    static char *kwlist[] = {"p", "g", "m", "v", "lr", "beta1", "beta2", "eps",
                             "weight_decay", "step", NULL};
    PyObject *po, *go, *mo, *vo;
    double lr, beta1, beta2, eps, wd;
    long long step;
    tn_devctx ctx = TN_DEVCTX_INIT;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOdddddL:cuda_adamw_step", kwlist, &po, &go,
                                     &mo, &vo, &lr, &beta1, &beta2, &eps, &wd, &step))
        return NULL;
    tn_DeviceArray *p = arg_f32(po, op, "p", -1, "(any shape)", &ctx);
    if (!p) return NULL;
    tn_DeviceArray *g = arg_like(go, op, "g", p->ndim, p->shape, "p.shape", &ctx);
    if (!g) return NULL;
    tn_DeviceArray *m = arg_like(mo, op, "m", p->ndim, p->shape, "p.shape", &ctx);
    if (!m) return NULL;
    tn_DeviceArray *v = arg_like(vo, op, "v", p->ndim, p->shape, "p.shape", &ctx);
    if (!v) return NULL;
    PyObject *const arrs[4] = {po, go, mo, vo};
    const char *const names[4] = {"p", "g", "m", "v"};
    if (tn_check_disjoint(op, 4, arrs, names) < 0) return NULL;
    if (tn_check_adamw(op, lr, beta1, beta2, eps, wd, step) < 0) return NULL;
    if (set_dev(ctx.dev, op) < 0) return NULL;
    RUN_CUDA(op, tn_cuda_adamw_step(TN_DA_F32(p), TN_DA_F32(m), TN_DA_F32(v), TN_DA_F32(g),
                                    tn_da_size(p), lr, beta1, beta2, eps, wd, step));
    Py_RETURN_NONE;
exit:
    return NULL;
}

// A list/tuple of float32 CUDA arrays on one device -> pointers and sizes.
static int collect(PyObject *seq_obj, const char *op, const char *what, tn_devctx *ctx,
                   float ***ptrs, int64_t **ns, int *count) {
    *ptrs = NULL;
    *ns = NULL;
    *count = 0;
    PyObject *seq = tn_arg_list(seq_obj, op, what, "float32 CUDA arrays");
    if (!seq) return -1;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    *ptrs = PyMem_Calloc((size_t)(n ? n : 1), sizeof **ptrs);
    *ns = PyMem_Calloc((size_t)(n ? n : 1), sizeof **ns);
    if (!*ptrs || !*ns) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s[%zd]", what, i);
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    float **ptrs;
    int64_t *ns;
    int count;
    double norm = 0.0;
    PyObject *ret = NULL;
    if (collect(arg, op, "grads", &ctx, &ptrs, &ns, &count) < 0) return NULL;
    if (count == 0) {
        ret = PyFloat_FromDouble(0.0);
        goto exit;
    }
    if (set_dev(ctx.dev, op) < 0) goto exit;
    RUN_CUDA(op, tn_cuda_grad_norm(&norm, (const float *const *)ptrs, ns, count));
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
    tn_devctx ctx = TN_DEVCTX_INIT;
    float **ptrs;
    int64_t *ns;
    int count;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Od:cuda_scale_", kwlist, &seq, &factor))
        return NULL;
    if (collect(seq, op, "arrays", &ctx, &ptrs, &ns, &count) < 0) return NULL;
    if (count > 0) {
        if (set_dev(ctx.dev, op) < 0) goto exit;
        RUN_CUDA(op, tn_cuda_scale_inplace(ptrs, ns, count, (float)factor));
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
