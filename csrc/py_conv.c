// Glue of the conv family (docs/engine-api.md): conv2d, linear, fma_peak.
// Converts and checks arguments, allocates outputs, releases the GIL around
// the kernels of csrc/cpu/conv2d.c and csrc/cpu/linear.c.
#include "glue.h"

#include <stdio.h>

#include "checks.h"
#include "cpu/conv2d.h"

static PyObject *py_conv2d_forward(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "conv2d_forward";
    static char *kwlist[] = {"x", "w", "b", "stride", "padding", NULL};
    PyObject *xo, *wo, *bo, *ret = NULL;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *y = NULL;
    int stride, padding;
    tn_conv2d z;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOii:conv2d_forward", kwlist, &xo, &wo,
                                     &bo, &stride, &padding))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (!(w = tn_f32(wo, op, "w", 4, "(K, C, R, S)"))) goto exit;
    if (tn_check_conv2d(op, (PyObject *)x, (PyObject *)w, stride, padding, TN_ON_CPU, &z) < 0)
        goto exit;
    if (bo != Py_None && !(b = tn_f32(bo, op, "b", 1, "(K,)"))) goto exit;
    if (tn_check_bias(op, (PyObject *)b, z.K, "K") < 0) goto exit;
    npy_intp ydims[4] = {z.N, z.K, z.P, z.Q};
    if (!(y = tn_empty(4, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, conv2d_forward(TN_F32(y), TN_F32(x), TN_F32(w), b ? TN_F32(b) : NULL, z.N,
                                  z.C, z.H, z.W, z.K, z.R, z.S, z.stride, z.pad));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(w); Py_XDECREF(b); Py_XDECREF(y);
    return ret;
}

static PyObject *py_conv2d_backward(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "conv2d_backward";
    static char *kwlist[] = {"dy", "x", "w", "stride", "padding", "need_dx", "need_bias",
                             "need_dw", NULL};
    PyObject *dyo, *xo, *wo, *ret = NULL;
    PyArrayObject *dy = NULL, *x = NULL, *w = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    int stride, padding, need_dx = 1, need_bias = 1, need_dw = 1;
    tn_conv2d z;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOii|ppp:conv2d_backward", kwlist, &dyo,
                                     &xo, &wo, &stride, &padding, &need_dx, &need_bias,
                                     &need_dw))
        return NULL;
    if (!(dy = tn_f32(dyo, op, "dy", 4, "(N, K, P, Q)"))) goto exit;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (!(w = tn_f32(wo, op, "w", 4, "(K, C, R, S)"))) goto exit;
    if (tn_check_conv2d(op, (PyObject *)x, (PyObject *)w, stride, padding, TN_ON_CPU, &z) < 0)
        goto exit;
    npy_intp ydims[4] = {z.N, z.K, z.P, z.Q};
    if (tn_check_grad_out(op, (PyObject *)dy, 4, ydims, "(N, K, P, Q)") < 0) goto exit;
    if (need_dx && !(dx = tn_zeros_f32(PyArray_NDIM(x), PyArray_DIMS(x)))) goto exit;
    if (need_dw && !(dw = tn_zeros_f32(PyArray_NDIM(w), PyArray_DIMS(w)))) goto exit;
    npy_intp bdims[1] = {z.K};
    if (need_bias && !(db = tn_zeros_f32(1, bdims))) goto exit;
    RUN_KERNEL(op, conv2d_backward(dx ? TN_F32(dx) : NULL, dw ? TN_F32(dw) : NULL,
                                   db ? TN_F32(db) : NULL, TN_F32(dy), TN_F32(x), TN_F32(w), z.N,
                                   z.C, z.H, z.W, z.K, z.R, z.S, z.stride, z.pad));
    ret = PyTuple_Pack(3, dx ? (PyObject *)dx : Py_None, dw ? (PyObject *)dw : Py_None,
                       db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dy); Py_XDECREF(x); Py_XDECREF(w);
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

static PyObject *py_linear_forward(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "linear_forward";
    static char *kwlist[] = {"x", "w", "b", NULL};
    PyObject *xo, *wo, *bo, *ret = NULL;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:linear_forward", kwlist, &xo, &wo, &bo))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 2, "(N, I)"))) goto exit;
    if (!(w = tn_f32(wo, op, "w", 2, "(O, I)"))) goto exit;
    if (tn_check_linear(op, (PyObject *)x, (PyObject *)w) < 0) goto exit;
    int N = (int)PyArray_DIM(x, 0), in_dim = (int)PyArray_DIM(x, 1);
    int out_dim = (int)PyArray_DIM(w, 0);
    if (bo != Py_None && !(b = tn_f32(bo, op, "b", 1, "(O,)"))) goto exit;
    if (tn_check_bias(op, (PyObject *)b, out_dim, "O") < 0) goto exit;
    npy_intp ydims[2] = {N, out_dim};
    if (!(y = tn_empty(2, ydims, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, linear_forward(TN_F32(y), TN_F32(x), TN_F32(w), b ? TN_F32(b) : NULL, N,
                                  in_dim, out_dim));
    ret = (PyObject *)y;
    y = NULL;
exit:
    Py_XDECREF(x); Py_XDECREF(w); Py_XDECREF(b); Py_XDECREF(y);
    return ret;
}

static PyObject *py_linear_backward(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *op = "linear_backward";
    static char *kwlist[] = {"dy", "x", "w", "need_bias", NULL};
    PyObject *dyo, *xo, *wo, *ret = NULL;
    PyArrayObject *dy = NULL, *x = NULL, *w = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    int need_bias = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|p:linear_backward", kwlist, &dyo, &xo,
                                     &wo, &need_bias))
        return NULL;
    if (!(dy = tn_f32(dyo, op, "dy", 2, "(N, O)"))) goto exit;
    if (!(x = tn_f32(xo, op, "x", 2, "(N, I)"))) goto exit;
    if (!(w = tn_f32(wo, op, "w", 2, "(O, I)"))) goto exit;
    if (tn_check_linear(op, (PyObject *)x, (PyObject *)w) < 0) goto exit;
    int N = (int)PyArray_DIM(x, 0), in_dim = (int)PyArray_DIM(x, 1);
    int out_dim = (int)PyArray_DIM(w, 0);
    npy_intp ydims[2] = {N, out_dim};
    if (tn_check_grad_out(op, (PyObject *)dy, 2, ydims, "(N, O)") < 0) goto exit;
    if (!(dx = tn_zeros_f32(2, PyArray_DIMS(x)))) goto exit;
    if (!(dw = tn_zeros_f32(2, PyArray_DIMS(w)))) goto exit;
    npy_intp bdims[1] = {out_dim};
    if (need_bias && !(db = tn_zeros_f32(1, bdims))) goto exit;
    RUN_KERNEL(op, linear_backward(TN_F32(dx), TN_F32(dw), db ? TN_F32(db) : NULL, TN_F32(dy),
                                   TN_F32(x), TN_F32(w), N, in_dim, out_dim));
    ret = PyTuple_Pack(3, (PyObject *)dx, (PyObject *)dw, db ? (PyObject *)db : Py_None);
exit:
    Py_XDECREF(dy); Py_XDECREF(x); Py_XDECREF(w);
    Py_XDECREF(dx); Py_XDECREF(dw); Py_XDECREF(db);
    return ret;
}

static PyObject *py_fma_peak(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"threads", "seconds", NULL};
    int threads;
    double seconds = 0.2, gflops;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|d:fma_peak", kwlist, &threads, &seconds))
        return NULL;
    if (threads < 1 || threads > 4096) {
        PyErr_Format(PyExc_ValueError, "fma_peak: threads must be in [1, 4096], got %d", threads);
        return NULL;
    }
    if (!(seconds > 0.0 && seconds <= 600.0)) {
        char g[32];  // PyErr_Format has no %g
        snprintf(g, sizeof g, "%g", seconds);
        PyErr_Format(PyExc_ValueError, "fma_peak: seconds must be in (0, 600], got %s", g);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    gflops = fma_peak(threads, seconds);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(gflops);
}

// Not part of the op contract: what the benchmarks report as workspace.
static PyObject *py_conv2d_workspace_bytes(PyObject *self, PyObject *args) {
    static const char *op = "_conv2d_workspace_bytes";
    PyObject *xo, *wo;
    PyArrayObject *x = NULL, *w = NULL;
    PyObject *ret = NULL;
    int stride, padding;
    tn_conv2d z;
    if (!PyArg_ParseTuple(args, "OOii:_conv2d_workspace_bytes", &xo, &wo, &stride, &padding))
        return NULL;
    if (!(x = tn_f32(xo, op, "x", 4, "(N, C, H, W)"))) goto exit;
    if (!(w = tn_f32(wo, op, "w", 4, "(K, C, R, S)"))) goto exit;
    if (tn_check_conv2d(op, (PyObject *)x, (PyObject *)w, stride, padding, TN_ON_CPU, &z) < 0)
        goto exit;
    size_t f[3];
    for (int k = 0; k < 3; k++)
        f[k] = conv2d_workspace_bytes(k, z.N, z.C, z.H, z.W, z.K, z.R, z.S, z.stride, z.pad);
    ret = Py_BuildValue("(nnn)", (Py_ssize_t)f[0], (Py_ssize_t)f[1], (Py_ssize_t)f[2]);
exit:
    Py_XDECREF(x); Py_XDECREF(w);
    return ret;
}

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

PyMethodDef tn_conv_methods[] = {
    {"conv2d_forward", FN(py_conv2d_forward), KW,
     "conv2d_forward(x, w, b, stride, padding)\n--\n\n"
     "2-D convolution (cross-correlation, zero padding), PyTorch's conv2d.\n"
     "x (N, C, H, W), w (K, C, R, S), b (K,) or None -> y (N, K, P, Q) with\n"
     "P = (H + 2*padding - R) // stride + 1, Q likewise. All float32, C-contiguous."},
    {"conv2d_backward", FN(py_conv2d_backward), KW,
     "conv2d_backward(dy, x, w, stride, padding, need_dx=True, need_bias=True,\n"
     "                need_dw=True)\n--\n\n"
     "Gradients of conv2d_forward: dy (N, K, P, Q) -> (dx (N, C, H, W) or None,\n"
     "dw (K, C, R, S) or None, db (K,) or None). dx is skipped when need_dx is\n"
     "false (e.g. the network's input), dw when need_dw is false (a frozen\n"
     "weight), db when need_bias is false."},
    {"linear_forward", FN(py_linear_forward), KW,
     "linear_forward(x, w, b)\n--\n\n"
     "y = x @ w.T + b: x (N, I), w (O, I) (PyTorch layout), b (O,) or None -> y (N, O)."},
    {"linear_backward", FN(py_linear_backward), KW,
     "linear_backward(dy, x, w, need_bias=True)\n--\n\n"
     "Gradients of linear_forward: dy (N, O) -> (dx (N, I), dw (O, I), db (O,) or None)."},
    {"fma_peak", FN(py_fma_peak), KW,
     "fma_peak(threads, seconds=0.2)\n--\n\n"
     "GFLOP/s of a register-only float32 FMA loop on `threads` threads (AVX-512,\n"
     "else AVX2/FMA, else scalar): the peak the benchmarks report fractions of."},
    {"_conv2d_workspace_bytes", py_conv2d_workspace_bytes, METH_VARARGS,
     "_conv2d_workspace_bytes(x, w, stride, padding)\n--\n\n"
     "Scratch bytes (forward, backward_input, backward_weight) the conv2d kernels\n"
     "allocate for these arrays with the current thread count (for benchmarks)."},
    {NULL, NULL, 0, NULL},
};
