// Glue for the ODE step kernels (csrc/ode/ode.c): the argument specs that
// the CUDA glue shares (py_ode.h), then the CPU ops (GIL released around the
// kernel). Used by timenet.flow's adaptive RK45 (Dormand-Prince).
#include "py_ode.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

// An array of y's shape: "<y> (the shape of y)" in messages.
static int take_like_y(tn_arg *a, PyObject *obj, const tn_ode_args *p, const char *op,
                       const char *name, const tn_arg_kind *kind, void *ctx) {
    char expect[240], got[200];
    snprintf(expect, sizeof expect, "%s (the shape of y)",
             tn_arg_describe(&p->y, got, sizeof got));
    if (kind->take(a, obj, op, name, expect, ctx) < 0 || tn_arg_nonzero(a, op, name) < 0)
        return -1;
    return tn_check_shape(a->ref, op, name, p->y.ndim, p->y.dim, expect);
}

// y: float32 (B, ...) -> p->y, p->B, p->D.
static int take_y(tn_ode_args *p, PyObject *obj, const char *op, const tn_arg_kind *kind,
                  void *ctx) {
    if (kind->take(&p->y, obj, op, "y", "(B, ...)", ctx) < 0 ||
        tn_arg_nonzero(&p->y, op, "y") < 0)
        return -1;
    if (p->y.ndim < 1) {
        PyErr_Format(PyExc_ValueError, "%s: y must have a batch dimension (B, ...)", op);
        return -1;
    }
    if (p->y.dim[0] > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: batch of %zd samples is too large", op, p->y.dim[0]);
        return -1;
    }
    p->B = (int)p->y.dim[0];
    p->D = (ptrdiff_t)(p->y.size / p->y.dim[0]);
    return 0;
}

// ks: a list/tuple of 1..TN_ODE_MAXK float32 arrays of y's shape.
static int take_ks(tn_ode_args *p, PyObject *seq, const char *op, const tn_arg_kind *kind,
                   void *ctx) {
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
    for (Py_ssize_t j = 0; j < n; j++) {
        char name[32];
        snprintf(name, sizeof name, "ks[%zd]", j);
        p->K = (int)j + 1;  // so that clear releases ks[j] however take_like_y ends
        if (take_like_y(&p->ks[j], PySequence_Fast_GET_ITEM(seq, j), p, op, name, kind, ctx) < 0)
            return -1;
        p->kp[j] = p->ks[j].data;
    }
    return 0;
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

static int take_coeffs_h(tn_ode_args *p, PyObject *c_obj, PyObject *h_obj, const char *op) {
    if (!(p->coeffs = as_vec(c_obj, op, "coeffs", p->K, 0))) return -1;
    if (!(p->h = as_vec(h_obj, op, "h", p->B, 1))) return -1;
    return 0;
}

// out: y itself (element i reads y[i] before writing it: in place) or
// memory shared with no input.
static int take_out(tn_ode_args *p, PyObject *obj, const char *op, const tn_arg_kind *kind,
                    void *ctx) {
    if (obj == Py_None) return kind->empty(&p->out, p->y.ndim, p->y.dim, ctx);
    if (take_like_y(&p->out, obj, p, op, "out", kind, ctx) < 0) return -1;
    if (!p->out.writeable) {
        PyErr_Format(PyExc_ValueError, "%s: out must be writeable", op);
        return -1;
    }
    for (int j = 0; j < p->K; j++)
        if (tn_arg_overlap(&p->out, &p->ks[j])) {
            PyErr_Format(PyExc_ValueError, "%s: out must not overlap ks[%d]", op, j);
            return -1;
        }
    if (p->out.ref != p->y.ref && tn_arg_overlap(&p->out, &p->y)) {
        PyErr_Format(PyExc_ValueError, "%s: out must be y itself or not overlap it", op);
        return -1;
    }
    return 0;
}

int tn_ode_parse_combine(tn_ode_args *p, PyObject *args, PyObject *kw, const char *op,
                         const tn_arg_kind *kind, void *ctx) {
    static char *kwlist[] = {"y", "ks", "coeffs", "h", "out", NULL};
    PyObject *y_obj, *ks_obj, *c_obj, *h_obj, *out_obj = Py_None;
    char fmt[64];
    memset(p, 0, sizeof *p);
    snprintf(fmt, sizeof fmt, "OOOO|O:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &y_obj, &ks_obj, &c_obj, &h_obj,
                                     &out_obj))
        return -1;
    if (take_y(p, y_obj, op, kind, ctx) < 0 || take_ks(p, ks_obj, op, kind, ctx) < 0 ||
        take_coeffs_h(p, c_obj, h_obj, op) < 0)
        return -1;
    return take_out(p, out_obj, op, kind, ctx);
}

int tn_ode_parse_error_norm(tn_ode_args *p, PyObject *args, PyObject *kw, const char *op,
                            const tn_arg_kind *kind, void *ctx) {
    static char *kwlist[] = {"ks", "coeffs", "h", "y", "y_new", "rtol", "atol", NULL};
    PyObject *ks_obj, *c_obj, *h_obj, *y_obj, *yn_obj;
    char fmt[64];
    memset(p, 0, sizeof *p);
    snprintf(fmt, sizeof fmt, "OOOOOdd:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &ks_obj, &c_obj, &h_obj, &y_obj,
                                     &yn_obj, &p->rtol, &p->atol))
        return -1;
    if (!(p->rtol >= 0.0) || !(p->atol >= 0.0) || !(p->rtol + p->atol > 0.0)) {
        tn_errorf(PyExc_ValueError, "%s: rtol and atol must be >= 0 and not both 0, got "
                  "rtol=%g, atol=%g", op, p->rtol, p->atol);
        return -1;
    }
    if (take_y(p, y_obj, op, kind, ctx) < 0 ||
        take_like_y(&p->y_new, yn_obj, p, op, "y_new", kind, ctx) < 0 ||
        take_ks(p, ks_obj, op, kind, ctx) < 0 || take_coeffs_h(p, c_obj, h_obj, op) < 0)
        return -1;
    npy_intp nb = p->B;
    return (p->norm = tn_empty(1, &nb, NPY_FLOAT64)) ? 0 : -1;
}

void tn_ode_args_clear(tn_ode_args *p) {
    tn_arg_clear(&p->y);
    tn_arg_clear(&p->y_new);
    tn_arg_clear(&p->out);
    for (int j = 0; j < p->K; j++) tn_arg_clear(&p->ks[j]);
    Py_CLEAR(p->coeffs);
    Py_CLEAR(p->h);
    Py_CLEAR(p->norm);
}

#define F64(a) ((const double *)PyArray_DATA(a))

// ---------------------------------------------------------------------------
// the CPU ops

PyDoc_STRVAR(ode_combine_doc,
"ode_combine(y, ks, coeffs, h, out=None)\n--\n\n"
"One Runge-Kutta stage combination, fused: y + h * sum_j coeffs[j] * ks[j].\n\n"
"y: float32 array (B, ...) -- B independent samples; ks: list of K <= 16\n"
"float32 arrays of y's shape; coeffs: K floats (zeros are skipped); h: the\n"
"step size, a float or (B,) floats, one per sample. Sums in float64.\n"
"Returns a new array, or writes into `out` (float32, y's shape; may be y).");

static PyObject *py_ode_combine(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "ode_combine";
    tn_ode_args p;
    int st = TN_NOT_PARSED;
    if (tn_ode_parse_combine(&p, args, kw, op, &tn_host_f32, NULL) == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = ode_combine(p.out.data, p.y.data, p.kp, F64(p.coeffs), p.K, F64(p.h), p.B, p.D);
        Py_END_ALLOW_THREADS
    }
    PyObject *ret = tn_arg_result(p.out.ref, st, op, tn_error);
    tn_ode_args_clear(&p);
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
    const char *op = "ode_error_norm";
    tn_ode_args p;
    int st = TN_NOT_PARSED;
    if (tn_ode_parse_error_norm(&p, args, kw, op, &tn_host_f32, NULL) == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = ode_error_norm((double *)PyArray_DATA(p.norm), p.kp, F64(p.coeffs), p.K, F64(p.h),
                            p.y.data, p.y_new.data, p.rtol, p.atol, p.B, p.D);
        Py_END_ALLOW_THREADS
    }
    PyObject *ret = tn_arg_result((PyObject *)p.norm, st, op, tn_error);
    tn_ode_args_clear(&p);
    return ret;
}

PyMethodDef tn_ode_methods[] = {
    {"ode_combine", (PyCFunction)(void (*)(void))py_ode_combine, METH_VARARGS | METH_KEYWORDS,
     ode_combine_doc},
    {"ode_error_norm", (PyCFunction)(void (*)(void))py_ode_error_norm,
     METH_VARARGS | METH_KEYWORDS, ode_error_norm_doc},
    {NULL, NULL, 0, NULL},
};
