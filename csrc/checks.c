// The ops' argument contracts (see checks.h). Messages name the op and the
// expected shape; tests/cases_*.py match many of them.
#include "checks.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "py_cuda.h"

// A DeviceArray's shape is a Py_ssize_t[], read here as npy_intp[].
_Static_assert(sizeof(npy_intp) == sizeof(Py_ssize_t), "npy_intp is Py_ssize_t");

// ---------------------------------------------------------------------------
// arrays of either glue

int tn_ndim(PyObject *a) {
    return tn_DeviceArray_Check(a) ? ((tn_DeviceArray *)a)->ndim
                                   : PyArray_NDIM((PyArrayObject *)a);
}

const npy_intp *tn_dims(PyObject *a) {
    return tn_DeviceArray_Check(a) ? ((tn_DeviceArray *)a)->shape
                                   : PyArray_DIMS((PyArrayObject *)a);
}

const char *tn_describe_arg(PyObject *a, char *buf, size_t n) {
    return tn_DeviceArray_Check(a) ? tn_da_describe(a, buf, n) : tn_describe(a, buf, n);
}

const char *tn_fmt_dims(char *buf, size_t n, int ndim, const npy_intp *dims) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %ld" : "%ld", (long)dims[i]);
    if (ndim == 1 && k < n) k += (size_t)snprintf(buf + k, n - k, ",");
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

// PyErr_Format has no %g (it would print "%g" itself): doubles go through
// snprintf first.
static const char *fmt_g(char *buf, size_t n, double v) {
    snprintf(buf, n, "%g", v);
    return buf;
}

// ---------------------------------------------------------------------------
// shapes

void tn_expect_dims(tn_expect *e, const char *sym, int ndim, const npy_intp *dims,
                    int or_none) {
    char shape[160];
    e->ndim = ndim;
    memcpy(e->dims, dims, sizeof(npy_intp) * (size_t)ndim);
    snprintf(e->text, sizeof e->text, "%s = %s%s", sym,
             tn_fmt_dims(shape, sizeof shape, ndim, dims), or_none ? " or None" : "");
}

int tn_check_shape(PyObject *a, const char *op, const char *name, int ndim,
                   const npy_intp *want, const char *expect) {
    const npy_intp *d = tn_dims(a);
    int ok = tn_ndim(a) == ndim;
    for (int i = 0; ok && want && i < ndim; i++)
        if (want[i] >= 0 && d[i] != want[i]) ok = 0;
    if (ok) return 0;
    char got[200];
    PyErr_Format(PyExc_ValueError, "%s: %s must be %s, got %s", op, name, expect,
                 tn_describe_arg(a, got, sizeof got));
    return -1;
}

int tn_check_expect(PyObject *a, const char *op, const char *name, const tn_expect *e) {
    return tn_check_shape(a, op, name, e->ndim, e->dims, e->text);
}

int tn_check_same_shape(PyObject *a, PyObject *ref, const char *op, const char *name,
                        const char *ref_name) {
    char want[160], expect[200];
    snprintf(expect, sizeof expect, "%s float32 (the shape of %s)",
             tn_fmt_dims(want, sizeof want, tn_ndim(ref), tn_dims(ref)), ref_name);
    return tn_check_shape(a, op, name, tn_ndim(ref), tn_dims(ref), expect);
}

int tn_check_min_ndim(PyObject *a, const char *op, const char *name, int min_ndim,
                      const char *expect) {
    if (tn_ndim(a) >= min_ndim) return 0;
    char got[200];
    PyErr_Format(PyExc_ValueError, "%s: %s must be %s float32, got %s", op, name, expect,
                 tn_describe_arg(a, got, sizeof got));
    return -1;
}

int tn_check_fit_int(PyObject *a, const char *op, const char *name) {
    const npy_intp *d = tn_dims(a);
    for (int i = 0; i < tn_ndim(a); i++)
        if (d[i] > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %s dim %d is too large (%ld > %d)", op, name,
                         i, (long)d[i], INT_MAX);
            return -1;
        }
    return 0;
}

// One int of a sequence argument: "<name>[i] must be an int, got float".
static int index_item(PyObject *item, const char *op, const char *name, Py_ssize_t i,
                      Py_ssize_t *v) {
    PyObject *idx = PyNumber_Index(item);
    if (!idx) {
        PyErr_Format(PyExc_TypeError, "%s: %s[%zd] must be an int, got %s", op, name, i,
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    *v = PyLong_AsSsize_t(idx);
    Py_DECREF(idx);
    return *v == -1 && PyErr_Occurred() ? -1 : 0;
}

int tn_parse_shape(PyObject *obj, const char *op, const char *name, int ndim,
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
        Py_ssize_t v;
        if (index_item(PySequence_Fast_GET_ITEM(seq, i), op, name, i, &v) < 0) goto exit;
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

PyObject *tn_arg_list(PyObject *obj, const char *op, const char *name, const char *what) {
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a list or tuple of %s, got %s", op, name,
                     what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(obj, name);
    if (seq && PySequence_Fast_GET_SIZE(seq) > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many arrays (%zd)", op,
                     PySequence_Fast_GET_SIZE(seq));
        Py_CLEAR(seq);
    }
    return seq;
}

int tn_check_nonneg(const char *op, const char *name, double v) {
    if (v >= 0.0 && isfinite(v)) return 0;
    char g[32];
    PyErr_Format(PyExc_ValueError, "%s: %s must be finite and >= 0, got %s", op, name,
                 fmt_g(g, sizeof g, v));
    return -1;
}

// ---------------------------------------------------------------------------
// group norm

int tn_check_group_norm(const char *op, PyObject *x, int G, tn_group_norm *g) {
    const npy_intp *d = tn_dims(x);
    const int N = (int)d[0], C = (int)d[1];
    if (G < 1 || C % G != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: num_groups must be >= 1 and divide C = %d, got num_groups = %d", op,
                     C, G);
        return -1;
    }
    npy_intp size = 1;
    for (int i = 0; i < tn_ndim(x); i++) size *= d[i];
    g->N = N;
    g->C = C;
    g->G = G;
    g->S = (ptrdiff_t)(size / ((npy_intp)N * C));
    const npy_intp sd[2] = {N, G}, cd[1] = {C};
    tn_expect_dims(&g->stats, "(N, G)", 2, sd, 0);
    tn_expect_dims(&g->param, "(C,)", 1, cd, 1);
    return 0;
}

int tn_check_affine(const char *op, PyObject *w, PyObject *b) {
    if ((w == NULL) == (b == NULL)) return 0;
    // The backward returns dw and db only when w is given: a lone bias
    // would silently get no gradient.
    PyErr_Format(PyExc_ValueError,
                 "%s: w and b must both be arrays (affine) or both None, got w %s, b %s", op,
                 w ? "given" : "None", b ? "given" : "None");
    return -1;
}

// ---------------------------------------------------------------------------
// upsample_nearest

static int check_scale(const char *op, int s) {
    if (s >= 1) return 0;
    PyErr_Format(PyExc_ValueError, "%s: scale must be an integer >= 1, got %d", op, s);
    return -1;
}

int tn_check_upsample(const char *op, PyObject *x, int s, npy_intp *yd) {
    if (tn_check_fit_int(x, op, "x") < 0 || check_scale(op, s) < 0) return -1;
    const npy_intp *d = tn_dims(x);
    if ((int64_t)d[2] * s > INT_MAX || (int64_t)d[3] * s > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: scale %d makes the output too large", op, s);
        return -1;
    }
    yd[0] = d[0], yd[1] = d[1], yd[2] = d[2] * s, yd[3] = d[3] * s;
    return 0;
}

int tn_check_upsample_grad(const char *op, PyObject *dy, int s, npy_intp *xd) {
    if (tn_check_fit_int(dy, op, "dy") < 0 || check_scale(op, s) < 0) return -1;
    const npy_intp *d = tn_dims(dy);
    if (d[2] % s || d[3] % s) {
        char got[200];
        PyErr_Format(PyExc_ValueError,
                     "%s: dy must be (N, C, s*H, s*W) float32 with s = %d dividing its H and W, "
                     "got %s", op, s, tn_describe_arg(dy, got, sizeof got));
        return -1;
    }
    xd[0] = d[0], xd[1] = d[1], xd[2] = d[2] / s, xd[3] = d[3] / s;
    return 0;
}

// ---------------------------------------------------------------------------
// pools

int tn_check_pool2d(const char *op, const npy_intp *xd, int k, int stride, int pad,
                    npy_intp *yd) {
    const int H = (int)xd[2], W = (int)xd[3];
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
    yd[0] = xd[0];
    yd[1] = xd[1];
    yd[2] = (xd[2] + 2 * pad - k) / stride + 1;
    yd[3] = (xd[3] + 2 * pad - k) / stride + 1;
    return 0;
}

int tn_check_argmax_plane(const char *op, npy_intp H, npy_intp W) {
    if ((int64_t)H * W <= INT32_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s: H*W = %ld does not fit the int32 argmax", op,
                 (long)(H * W));
    return -1;
}

int tn_check_adaptive_pool2d(const char *op, int out_h, int out_w) {
    if (out_h >= 1 && out_w >= 1) return 0;
    PyErr_Format(PyExc_ValueError, "%s: out_h and out_w must be >= 1, got (%d, %d)", op, out_h,
                 out_w);
    return -1;
}

void tn_expect_pool_grad(tn_expect *e, const char *sym, const npy_intp *xd) {
    e->ndim = 4;
    e->dims[0] = xd[0], e->dims[1] = xd[1], e->dims[2] = -1, e->dims[3] = -1;
    snprintf(e->text, sizeof e->text, "%s with N, C = %ld, %ld", sym, (long)xd[0],
             (long)xd[1]);
}

// ---------------------------------------------------------------------------
// embeddings

int tn_check_ids(const char *op, const int64_t *ids, npy_intp n, npy_intp V) {
    for (npy_intp i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            PyErr_Format(PyExc_ValueError,
                         "%s: id %lld (ids[%ld]) is out of range for %ld embeddings "
                         "(need 0 <= id < %ld)", op, (long long)ids[i], (long)i, (long)V,
                         (long)V);
            return -1;
        }
    return 0;
}

int tn_check_num_embeddings(const char *op, Py_ssize_t V) {
    if (V >= 1 && V <= INT_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s: num_embeddings must be in [1, %d], got %zd", op, INT_MAX,
                 V);
    return -1;
}

int tn_check_num_ids(const char *op, npy_intp n) {
    if (n <= INT_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s: too many ids", op);
    return -1;
}

void tn_expect_embedding_grad(tn_expect *e, npy_intp n) {
    e->ndim = 2;
    e->dims[0] = n, e->dims[1] = -1;
    snprintf(e->text, sizeof e->text, "(N, D) with N = len(ids) = %ld", (long)n);
}

int tn_check_timestep(const char *op, int dim, double max_period) {
    if (dim < 4) {
        PyErr_Format(PyExc_ValueError,
                     "%s: dim must be >= 4 (the frequencies divide by dim // 2 - 1), got %d", op,
                     dim);
        return -1;
    }
    if (!(max_period > 0.0) || !isfinite(max_period)) {
        char g[32];
        PyErr_Format(PyExc_ValueError, "%s: max_period must be finite and > 0, got %s", op,
                     fmt_g(g, sizeof g, max_period));
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// concat

PyObject *tn_concat_list(PyObject *obj, const char *op, const char *what) {
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: xs must be a list of (N, C_i, *) %s, got %s", op, what,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(obj, "xs");
    if (!seq) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: xs must hold at least one array, got %zd", op, n);
        Py_DECREF(seq);
        return NULL;
    }
    return seq;
}

void tn_expect_concat(tn_expect *e, PyObject *x0) {
    char shape[160];
    e->ndim = tn_ndim(x0);
    memcpy(e->dims, tn_dims(x0), sizeof(npy_intp) * (size_t)e->ndim);
    e->dims[1] = -1;
    snprintf(e->text, sizeof e->text, "(N, C_i, *) matching xs[0] %s in every dim but 1",
             tn_fmt_dims(shape, sizeof shape, e->ndim, tn_dims(x0)));
}

int tn_check_concat_batch(const char *op, npy_intp N) {
    if (N <= INT_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s: batch too large", op);
    return -1;
}

Py_ssize_t tn_parse_concat_sizes(PyObject *obj, const char *op, PyObject *dy,
                                 Py_ssize_t **out) {
    *out = NULL;
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: sizes must be a list of ints C_i, got %s", op,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "sizes");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), rc = -1;
    Py_ssize_t *sizes = NULL;
    if (n < 1 || n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes must hold at least one int", op);
        goto exit;
    }
    if (!(sizes = PyMem_Calloc((size_t)n, sizeof *sizes))) {
        PyErr_NoMemory();
        goto exit;
    }
    const npy_intp C = tn_dims(dy)[1];
    npy_intp ctot = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t c;
        if (index_item(PySequence_Fast_GET_ITEM(seq, i), op, "sizes", i, &c) < 0) goto exit;
        if (c < 1) {
            PyErr_Format(PyExc_ValueError, "%s: sizes[%zd] must be >= 1, got %zd", op, i, c);
            goto exit;
        }
        ctot += c;
        if (ctot > C) break;  // reported below (the rest need not even be ints)
        sizes[i] = c;
    }
    if (ctot != C) {
        char got[200];
        PyErr_Format(PyExc_ValueError,
                     "%s: dy must be (N, sum C_i, *) float32 with sum(sizes) channels, "
                     "got %s and sizes summing to %s%ld", op,
                     tn_describe_arg(dy, got, sizeof got), ctot > C ? "at least " : "",
                     (long)ctot);
        goto exit;
    }
    *out = sizes;
    sizes = NULL;
    rc = n;
exit:
    PyMem_Free(sizes);
    Py_DECREF(seq);
    return rc;
}

// ---------------------------------------------------------------------------
// broadcasting add / mul

int tn_check_broadcast(const char *op, const char *name, int a_nd, const npy_intp *ad,
                       int b_nd, const npy_intp *bd, int maxdim) {
    int ok = a_nd == b_nd && a_nd <= maxdim;
    for (int i = 0; ok && i < a_nd; i++)
        if (bd[i] != ad[i] && bd[i] != 1) ok = 0;
    if (ok) return 0;
    char abuf[160], bbuf[160];
    PyErr_Format(PyExc_ValueError,
                 "%s: %s must have a's ndim (%d, at most %d) with each dim equal to a's %s or 1, "
                 "got %s", op, name, a_nd, maxdim, tn_fmt_dims(abuf, sizeof abuf, a_nd, ad),
                 tn_fmt_dims(bbuf, sizeof bbuf, b_nd, bd));
    return -1;
}

int tn_check_add_backward(const char *op, PyObject *dy, PyObject *b_shape, int maxdim,
                          npy_intp *bd) {
    const int nd = tn_ndim(dy);
    if (nd > maxdim) {
        PyErr_Format(PyExc_ValueError, "%s: dy has %d dims, at most %d are supported", op, nd,
                     maxdim);
        return -1;
    }
    if (tn_parse_shape(b_shape, op, "b_shape", nd, "(dy's ndim)", bd) < 0) return -1;
    return tn_check_broadcast(op, "b_shape", nd, tn_dims(dy), nd, bd, maxdim);
}

// ---------------------------------------------------------------------------
// linear and conv2d

int tn_check_linear(const char *op, PyObject *x, PyObject *w) {
    const npy_intp *xd = tn_dims(x), *wd = tn_dims(w);
    char expect[64];
    snprintf(expect, sizeof expect, "(O, I) float32 with I == %ld", (long)xd[1]);
    const npy_intp want[2] = {-1, xd[1]};
    if (tn_check_shape(w, op, "w", 2, want, expect) < 0) return -1;
    if (xd[0] > INT_MAX || xd[1] > INT_MAX || wd[0] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes too large (each of N, I, O must be < 2**31)",
                     op);
        return -1;
    }
    return 0;
}

static int too_big(long long v) { return v > INT_MAX; }

int tn_check_conv2d(const char *op, PyObject *x, PyObject *w, int stride, int padding,
                    tn_backend on, tn_conv2d *z) {
    const npy_intp *xd = tn_dims(x), *wd = tn_dims(w);
    char expect[96];
    snprintf(expect, sizeof expect, "(K, C, R, S) float32 with C == %ld", (long)xd[1]);
    const npy_intp want[4] = {-1, xd[1], -1, -1};
    if (tn_check_shape(w, op, "w", 4, want, expect) < 0) return -1;
    if (stride < 1) {
        PyErr_Format(PyExc_ValueError, "%s: stride must be >= 1, got %d", op, stride);
        return -1;
    }
    if (padding < 0) {
        PyErr_Format(PyExc_ValueError, "%s: padding must be >= 0, got %d", op, padding);
        return -1;
    }
    long long N = xd[0], C = xd[1], H = xd[2], W = xd[3], K = wd[0], R = wd[2], S = wd[3];
    long long Hp = H + 2LL * padding, Wp = W + 2LL * padding;
    if (R > Hp || S > Wp) {
        PyErr_Format(PyExc_ValueError,
                     "%s: kernel (R, S) = (%lld, %lld) is larger than the padded input "
                     "(H + 2*padding, W + 2*padding) = (%lld, %lld)",
                     op, R, S, Hp, Wp);
        return -1;
    }
    long long P = (Hp - R) / stride + 1, Q = (Wp - S) / stride + 1;
    // The limits differ by backend, so each keeps its own. Left to right,
    // each product only once its factors are known < 2**31, so none of them
    // can overflow long long.
    if (on == TN_ON_CPU) {
        // The CPU kernels form GEMM sizes, leading dimensions and tile
        // indices in int.
        if (too_big(N) || too_big(C) || too_big(K) || too_big(Hp) || too_big(Wp) ||
            too_big(H * W) || too_big(C * R) || too_big(C * R * S) || too_big(P * Q) ||
            too_big(N * P * Q)) {
            PyErr_Format(PyExc_ValueError,
                         "%s: sizes too large for the CPU kernels (x (%lld, %lld, %lld, %lld), "
                         "w (%lld, %lld, %lld, %lld), padding %d: each of N*P*Q, C*R*S, H*W and "
                         "H + 2*padding must be < 2**31)",
                         op, N, C, H, W, K, C, R, S, padding);
            return -1;
        }
    } else {
        // cuDNN's tensors are int-indexed: every tensor below 2**31 elements.
        if (too_big(N) || too_big(C) || too_big(K) || too_big(Hp) || too_big(Wp) ||
            too_big(H * W) || too_big(C * H * W) || too_big(N * C * H * W) ||
            too_big(C * R * S) || too_big(K * C * R * S) || too_big(K * P * Q) ||
            too_big(N * K * P * Q)) {
            PyErr_Format(PyExc_ValueError,
                         "%s: sizes too large for cuDNN (x (%lld, %lld, %lld, %lld), w (%lld, "
                         "%lld, %lld, %lld): every tensor must have < 2**31 elements)",
                         op, N, C, H, W, K, C, R, S);
            return -1;
        }
    }
    *z = (tn_conv2d){(int)N, (int)C, (int)H, (int)W, (int)K, (int)R, (int)S,
                     (int)P, (int)Q, stride, padding};
    return 0;
}

int tn_check_bias(const char *op, PyObject *b, npy_intp K, const char *dim) {
    if (!b) return 0;
    char expect[64];
    snprintf(expect, sizeof expect, "(%s,) float32 with %s == %ld (or None)", dim, dim, (long)K);
    const npy_intp want[1] = {K};
    return tn_check_shape(b, op, "b", 1, want, expect);
}

int tn_check_grad_out(const char *op, PyObject *dy, int ndim, const npy_intp *dims,
                      const char *sym) {
    char shape[96], expect[160];
    snprintf(expect, sizeof expect, "%s float32 == %s (the output shape)", sym,
             tn_fmt_dims(shape, sizeof shape, ndim, dims));
    return tn_check_shape(dy, op, "dy", ndim, dims, expect);
}

// ---------------------------------------------------------------------------
// attention and the optimizer

int tn_check_heads(const char *op, PyObject *q, int num_heads, tn_backend on) {
    if (num_heads < 1) {
        PyErr_Format(PyExc_ValueError, "%s: num_heads must be >= 1, got %d", op, num_heads);
        return -1;
    }
    const npy_intp *d = tn_dims(q);
    const npy_intp N = d[0], L = d[1], C = d[2];
    if (C % num_heads != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: C = %ld (q's last dim) must be divisible by num_heads = %d", op,
                     (long)C, num_heads);
        return -1;
    }
    // BLAS takes int sizes; probs holds N * heads * L * L floats. The CUDA
    // kernels also index q itself (N * L * C) in int.
    const double probs_bytes = (double)N * num_heads * (double)L * (double)L * sizeof(float);
    if (N > INT_MAX || L > INT_MAX || C > INT_MAX || probs_bytes > (double)NPY_MAX_INTP ||
        (on == TN_ON_CUDA && (double)N * L * C > INT_MAX)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: q of shape (%ld, %ld, %ld) with %d heads is too large (probs would "
                     "be (N, heads, L, L))", op, (long)N, (long)L, (long)C, num_heads);
        return -1;
    }
    return 0;
}

int tn_check_adamw(const char *op, double lr, double beta1, double beta2, double eps,
                   double wd, long long step) {
    if (tn_check_nonneg(op, "lr", lr) < 0) return -1;
    if (!(beta1 >= 0.0 && beta1 < 1.0) || !(beta2 >= 0.0 && beta2 < 1.0)) {
        char g1[32], g2[32];
        PyErr_Format(PyExc_ValueError, "%s: betas must be in [0, 1), got (%s, %s)", op,
                     fmt_g(g1, sizeof g1, beta1), fmt_g(g2, sizeof g2, beta2));
        return -1;
    }
    if (tn_check_nonneg(op, "eps", eps) < 0) return -1;
    if (tn_check_nonneg(op, "weight_decay", wd) < 0) return -1;
    if (step < 1) {
        PyErr_Format(PyExc_ValueError, "%s: step must be >= 1 (it counts from 1), got %lld", op,
                     step);
        return -1;
    }
    return 0;
}

// The bytes an array's data spans, and where (-1: host memory).
static void data_range(PyObject *a, const char **lo, size_t *n, int *device) {
    if (tn_DeviceArray_Check(a)) {
        const tn_DeviceArray *d = (const tn_DeviceArray *)a;
        *lo = d->ptr, *n = d->nbytes, *device = d->device;
    } else {
        *lo = PyArray_BYTES((PyArrayObject *)a);
        *n = (size_t)PyArray_NBYTES((PyArrayObject *)a);
        *device = -1;
    }
}

int tn_check_disjoint(const char *op, int n, PyObject *const *arrs, const char *const *names) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            const char *a0, *b0;
            size_t na, nb;
            int da, db;
            data_range(arrs[i], &a0, &na, &da);
            data_range(arrs[j], &b0, &nb, &db);
            if (da == db && a0 < b0 + nb && b0 < a0 + na) {
                PyErr_Format(PyExc_ValueError, "%s: %s and %s must not share memory", op,
                             names[i], names[j]);
                return -1;
            }
        }
    return 0;
}
