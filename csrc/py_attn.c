// Glue for the attention / optim family (csrc/cpu/attention.c, optim.c):
// argument conversion, every shape and range check, GIL release around the
// kernels. See docs/engine-api.md.
#include "glue.h"

#include <stdio.h>

#include "checks.h"
#include "cpu/attn.h"

// tn_f32 with exactly the dims `want`, named in messages as "<sym> = (2, 4, 8)",
// e.g. "k must be (N, L, C) = q.shape = (2, 4, 8) float32, got ...".
static PyArrayObject *f32_like(PyObject *obj, const char *op, const char *name, int nd,
                               const npy_intp *want, const char *sym) {
    tn_expect e;
    tn_expect_dims(&e, sym, nd, want, 0);
    return tn_f32_expect(obj, op, name, &e);
}

// q (N, L, C) and k, v of q's shape, the inputs both attention ops take.
// New references in *q, *k, *v, which the caller releases (also on error).
static int qkv_inputs(PyObject *qo, PyObject *ko, PyObject *vo, const char *op,
                      PyArrayObject **q, PyArrayObject **k, PyArrayObject **v) {
    if (!(*q = tn_f32(qo, op, "q", 3, "(N, L, C)"))) return -1;
    const npy_intp *qd = PyArray_DIMS(*q);
    if (!(*k = f32_like(ko, op, "k", 3, qd, "(N, L, C) = q.shape"))) return -1;
    if (!(*v = f32_like(vo, op, "v", 3, qd, "(N, L, C) = q.shape"))) return -1;
    return 0;
}

static int check_writeable(PyArrayObject *a, const char *op, const char *name) {
    if (PyArray_ISWRITEABLE(a)) return 0;
    PyErr_Format(PyExc_ValueError, "%s: %s is updated in place and must be writeable, got a "
                 "read-only array", op, name);
    return -1;
}

PyDoc_STRVAR(attention_forward_doc,
"attention_forward(q, k, v, num_heads)\n--\n\n"
"Multi-head scaled dot-product attention.\n\n"
"q, k, v: (N, L, C) float32, C = num_heads * d; head h uses channels\n"
"[h*d, (h+1)*d). Returns (out, probs): out (N, L, C) with\n"
"out_h = softmax(q_h k_h^T / sqrt(d)) v_h, and probs (N, num_heads, L, L),\n"
"the softmax along the key axis, which attention_backward needs.");

static PyObject *py_attention_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"q", "k", "v", "num_heads", NULL};
    const char *op = "attention_forward";
    PyObject *q_obj, *k_obj, *v_obj, *ret = NULL;
    int num_heads;
    PyArrayObject *q = NULL, *k = NULL, *v = NULL, *out = NULL, *probs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOi:attention_forward", kwlist, &q_obj,
                                     &k_obj, &v_obj, &num_heads))
        return NULL;
    if (qkv_inputs(q_obj, k_obj, v_obj, op, &q, &k, &v) < 0) goto exit;
    const npy_intp *qd = PyArray_DIMS(q);
    if (tn_check_heads(op, (PyObject *)q, num_heads, TN_ON_CPU) < 0) goto exit;
    int N = (int)qd[0], L = (int)qd[1], C = (int)qd[2];
    npy_intp pd[4] = {N, num_heads, L, L};
    if (!(out = tn_empty(3, qd, NPY_FLOAT32))) goto exit;
    if (!(probs = tn_empty(4, pd, NPY_FLOAT32))) goto exit;
    RUN_KERNEL(op, attention_forward(TN_F32(out), TN_F32(probs), TN_F32(q), TN_F32(k),
                                     TN_F32(v), N, L, C, num_heads));
    ret = Py_BuildValue("(OO)", out, probs);
exit:
    Py_XDECREF(q); Py_XDECREF(k); Py_XDECREF(v);
    Py_XDECREF(out); Py_XDECREF(probs);
    return ret;
}

PyDoc_STRVAR(attention_backward_doc,
"attention_backward(dout, q, k, v, probs, num_heads)\n--\n\n"
"Gradients of attention_forward. dout, q, k, v: (N, L, C) float32;\n"
"probs: (N, num_heads, L, L) as attention_forward returned it.\n"
"Returns (dq, dk, dv), each (N, L, C).");

static PyObject *py_attention_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"dout", "q", "k", "v", "probs", "num_heads", NULL};
    const char *op = "attention_backward";
    PyObject *dout_obj, *q_obj, *k_obj, *v_obj, *p_obj, *ret = NULL;
    int num_heads;
    PyArrayObject *dout = NULL, *q = NULL, *k = NULL, *v = NULL, *probs = NULL;
    PyArrayObject *dq = NULL, *dk = NULL, *dv = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOi:attention_backward", kwlist, &dout_obj,
                                     &q_obj, &k_obj, &v_obj, &p_obj, &num_heads))
        return NULL;
    if (qkv_inputs(q_obj, k_obj, v_obj, op, &q, &k, &v) < 0) goto exit;
    const npy_intp *qd = PyArray_DIMS(q);
    if (!(dout = f32_like(dout_obj, op, "dout", 3, qd, "(N, L, C) = q.shape"))) goto exit;
    if (tn_check_heads(op, (PyObject *)q, num_heads, TN_ON_CPU) < 0) goto exit;
    int N = (int)qd[0], L = (int)qd[1], C = (int)qd[2];
    npy_intp pd[4] = {N, num_heads, L, L};
    if (!(probs = f32_like(p_obj, op, "probs", 4, pd, "(N, num_heads, L, L)"))) goto exit;
    if (!(dq = tn_zeros_f32(3, qd)) || !(dk = tn_zeros_f32(3, qd)) || !(dv = tn_zeros_f32(3, qd)))
        goto exit;
    RUN_KERNEL(op, attention_backward(TN_F32(dq), TN_F32(dk), TN_F32(dv), TN_F32(dout),
                                      TN_F32(q), TN_F32(k), TN_F32(v), TN_F32(probs), N, L, C,
                                      num_heads));
    ret = Py_BuildValue("(OOO)", dq, dk, dv);
exit:
    Py_XDECREF(dout); Py_XDECREF(q); Py_XDECREF(k); Py_XDECREF(v); Py_XDECREF(probs);
    Py_XDECREF(dq); Py_XDECREF(dk); Py_XDECREF(dv);
    return ret;
}

PyDoc_STRVAR(adamw_step_doc,
"adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)\n--\n\n"
"One torch.optim.AdamW step, in place on p, m and v (float32, C-contiguous,\n"
"writeable, all of g's shape): p *= 1 - lr*weight_decay; m = beta1*m +\n"
"(1-beta1)*g; v = beta2*v + (1-beta2)*g^2; p -= lr * m/(1-beta1^step) /\n"
"(sqrt(v/(1-beta2^step)) + eps). step counts from 1. Returns None.");

static PyObject *py_adamw_step(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"p", "g", "m", "v", "lr", "beta1", "beta2", "eps",
                             "weight_decay", "step", NULL};
    const char *op = "adamw_step";
    PyObject *p_obj, *g_obj, *m_obj, *v_obj, *ret = NULL;
    double lr, beta1, beta2, eps, wd;
    long long step;
    PyArrayObject *p = NULL, *g = NULL, *m = NULL, *v = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOdddddL:adamw_step", kwlist, &p_obj, &g_obj,
                                     &m_obj, &v_obj, &lr, &beta1, &beta2, &eps, &wd, &step))
        return NULL;
    if (!(p = tn_f32(p_obj, op, "p", -1, "(any shape)"))) goto exit;
    const int nd = PyArray_NDIM(p);
    const npy_intp *pd = PyArray_DIMS(p);
    if (!(g = f32_like(g_obj, op, "g", nd, pd, "p.shape"))) goto exit;
    if (!(m = f32_like(m_obj, op, "m", nd, pd, "p.shape"))) goto exit;
    if (!(v = f32_like(v_obj, op, "v", nd, pd, "p.shape"))) goto exit;
    if (check_writeable(p, op, "p") < 0 || check_writeable(m, op, "m") < 0 ||
        check_writeable(v, op, "v") < 0)
        goto exit;
    PyObject *const arrs[4] = {(PyObject *)p, (PyObject *)g, (PyObject *)m, (PyObject *)v};
    const char *const names[4] = {"p", "g", "m", "v"};
    if (tn_check_disjoint(op, 4, arrs, names) < 0) goto exit;
    if (tn_check_adamw(op, lr, beta1, beta2, eps, wd, step) < 0) goto exit;
    size_t n = (size_t)PyArray_SIZE(p);
    Py_BEGIN_ALLOW_THREADS
    adamw_step(TN_F32(p), TN_F32(m), TN_F32(v), TN_F32(g), n, lr, beta1, beta2, eps, wd, step);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    ret = Py_None;
exit:
    Py_XDECREF(p); Py_XDECREF(g); Py_XDECREF(m); Py_XDECREF(v);
    return ret;
}

// A list/tuple of float32 arrays -> new references in *out (count in *count),
// pointers and sizes in *ptrs / *ns; writeable checked when `inplace`.
// Returns 0, or -1 with an exception set (nothing left to free).
static int collect_arrays(PyObject *seq_obj, const char *op, const char *what, int inplace,
                          PyArrayObject ***out, float ***ptrs, size_t **ns, int *count) {
    *out = NULL; *ptrs = NULL; *ns = NULL; *count = 0;
    PyObject *seq = tn_arg_list(seq_obj, op, what, "float32 arrays");
    if (!seq) return -1;
    int rc = -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq), done = 0;
    PyArrayObject **arrs = NULL;
    float **ps = NULL;
    size_t *sz = NULL;
    arrs = PyMem_Calloc(len ? len : 1, sizeof *arrs);
    ps = PyMem_Calloc(len ? len : 1, sizeof *ps);
    sz = PyMem_Calloc(len ? len : 1, sizeof *sz);
    if (!arrs || !ps || !sz) {
        PyErr_NoMemory();
        goto exit;
    }
    for (; done < len; done++) {
        char name[64];
        snprintf(name, sizeof name, "%s[%zd]", what, done);
        arrs[done] = tn_f32(PySequence_Fast_GET_ITEM(seq, done), op, name, -1, "(any shape)");
        if (!arrs[done]) goto exit;
        if (inplace && check_writeable(arrs[done], op, name) < 0) {
            done++;  // arrs[done] holds a reference to drop
            goto exit;
        }
        ps[done] = TN_F32(arrs[done]);
        sz[done] = (size_t)PyArray_SIZE(arrs[done]);
    }
    *out = arrs; *ptrs = ps; *ns = sz; *count = (int)len;
    rc = 0;
exit:
    if (rc < 0) {
        for (Py_ssize_t i = 0; i < done; i++) Py_DECREF(arrs[i]);
        PyMem_Free(arrs); PyMem_Free(ps); PyMem_Free(sz);
    }
    Py_DECREF(seq);
    return rc;
}

static void release_arrays(PyArrayObject **arrs, float **ptrs, size_t *ns, int count) {
    for (int i = 0; arrs && i < count; i++) Py_XDECREF(arrs[i]);
    PyMem_Free(arrs); PyMem_Free(ptrs); PyMem_Free(ns);
}

PyDoc_STRVAR(adamw_step_multi_doc,
"adamw_step_multi(ps, gs, ms, vs, lr, beta1, beta2, eps, weight_decay, step)\n--\n\n"
"adamw_step on every (ps[i], gs[i], ms[i], vs[i]) of four equally long lists\n"
"of float32 arrays, in one call whose threads share the arrays' chunks: the\n"
"same bits as one adamw_step per array. Each index is checked as adamw_step\n"
"checks its arrays. Returns None.");

static PyObject *py_adamw_step_multi(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ps", "gs", "ms", "vs", "lr", "beta1", "beta2", "eps",
                             "weight_decay", "step", NULL};
    const char *op = "adamw_step_multi";
    static const char *const what[4] = {"ps", "gs", "ms", "vs"};
    PyObject *lists[4], *ret = NULL;
    double lr, beta1, beta2, eps, wd;
    long long step;
    PyArrayObject **arrs[4] = {NULL};
    float **ptrs[4] = {NULL};
    size_t *ns[4] = {NULL};
    int count[4] = {0}, got = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOdddddL:adamw_step_multi", kwlist,
                                     &lists[0], &lists[1], &lists[2], &lists[3], &lr, &beta1,
                                     &beta2, &eps, &wd, &step))
        return NULL;
    for (; got < 4; got++)  // ps, ms, vs are updated in place; gs only read
        if (collect_arrays(lists[got], op, what[got], got != 1, &arrs[got], &ptrs[got],
                           &ns[got], &count[got]) < 0)
            goto exit;
    for (int k = 1; k < 4; k++)
        if (count[k] != count[0]) {
            PyErr_Format(PyExc_ValueError, "%s: %s has %d arrays, ps has %d", op, what[k],
                         count[k], count[0]);
            goto exit;
        }
    for (int i = 0; i < count[0]; i++) {
        char names[4][48];
        const char *nm[4];
        PyObject *const a4[4] = {(PyObject *)arrs[0][i], (PyObject *)arrs[1][i],
                                 (PyObject *)arrs[2][i], (PyObject *)arrs[3][i]};
        for (int k = 0; k < 4; k++) {
            snprintf(names[k], sizeof names[k], "%s[%d]", what[k], i);
            nm[k] = names[k];
        }
        tn_expect e;
        tn_expect_dims(&e, "ps[i].shape", PyArray_NDIM(arrs[0][i]), PyArray_DIMS(arrs[0][i]), 0);
        for (int k = 1; k < 4; k++)
            if (tn_check_expect(a4[k], op, nm[k], &e) < 0) goto exit;
        if (tn_check_disjoint(op, 4, a4, nm) < 0) goto exit;
    }
    if (tn_check_adamw(op, lr, beta1, beta2, eps, wd, step) < 0) goto exit;
    RUN_KERNEL(op, adamw_step_multi(ptrs[0], ptrs[2], ptrs[3], (const float *const *)ptrs[1],
                                    ns[0], count[0], lr, beta1, beta2, eps, wd, step));
    Py_INCREF(Py_None);
    ret = Py_None;
exit:
    for (int k = 0; k < got; k++) release_arrays(arrs[k], ptrs[k], ns[k], count[k]);
    return ret;
}

PyDoc_STRVAR(grad_norm_doc,
"grad_norm(grads)\n--\n\n"
"Global L2 norm sqrt(sum of g^2 over every array) of a list of float32\n"
"arrays, accumulated in float64. An empty list gives 0.0.");

static PyObject *py_grad_norm(PyObject *self, PyObject *arg) {
    const char *op = "grad_norm";
    PyArrayObject **arrs;
    float **ptrs;
    size_t *ns;
    int count;
    PyObject *ret = NULL;
    if (collect_arrays(arg, op, "grads", 0, &arrs, &ptrs, &ns, &count) < 0) return NULL;
    double norm;
    Py_BEGIN_ALLOW_THREADS
    norm = grad_norm((const float *const *)ptrs, ns, count);
    Py_END_ALLOW_THREADS
    ret = PyFloat_FromDouble(norm);
    release_arrays(arrs, ptrs, ns, count);
    return ret;
}

PyDoc_STRVAR(scale_doc,
"scale_(arrays, factor)\n--\n\n"
"Multiply every float32 array in the list by factor, in place (the arrays\n"
"must be writeable). Returns None. With grad_norm this is clip_grad_norm.");

static PyObject *py_scale_(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"arrays", "factor", NULL};
    const char *op = "scale_";
    PyObject *seq;
    double factor;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Od:scale_", kwlist, &seq, &factor)) return NULL;
    PyArrayObject **arrs;
    float **ptrs;
    size_t *ns;
    int count;
    if (collect_arrays(seq, op, "arrays", 1, &arrs, &ptrs, &ns, &count) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    scale_inplace(ptrs, ns, count, (float)factor);
    Py_END_ALLOW_THREADS
    release_arrays(arrs, ptrs, ns, count);
    Py_RETURN_NONE;
}

PyMethodDef tn_attn_methods[] = {
    {"attention_forward", (PyCFunction)(void (*)(void))py_attention_forward,
     METH_VARARGS | METH_KEYWORDS, attention_forward_doc},
    {"attention_backward", (PyCFunction)(void (*)(void))py_attention_backward,
     METH_VARARGS | METH_KEYWORDS, attention_backward_doc},
    {"adamw_step", (PyCFunction)(void (*)(void))py_adamw_step, METH_VARARGS | METH_KEYWORDS,
     adamw_step_doc},
    {"adamw_step_multi", (PyCFunction)(void (*)(void))py_adamw_step_multi,
     METH_VARARGS | METH_KEYWORDS, adamw_step_multi_doc},
    {"grad_norm", py_grad_norm, METH_O, grad_norm_doc},
    {"scale_", (PyCFunction)(void (*)(void))py_scale_, METH_VARARGS | METH_KEYWORDS, scale_doc},
    {NULL, NULL, 0, NULL},
};
