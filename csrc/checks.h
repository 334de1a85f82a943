// The engine ops' argument contracts, stated once. Both glues call these:
// the host glue (py_ops.c, py_conv.c, py_attn.c: numpy arrays) and the
// device glue (py_cuda_ops.c: DeviceArrays), so `conv2d_forward` and
// `cuda_conv2d_forward` accept and refuse exactly the same shapes with the
// same messages. Each check sets the Python exception and returns -1, or
// returns 0.
//
// What stays in each glue is what genuinely differs: turning a Python object
// into an array (numpy: dtype, byte order, contiguity; device: a float32
// DeviceArray on the same device as the other inputs) and the kernel call.
// Arrays reach the checks as the PyObject the glue holds, a numpy array or a
// DeviceArray; tn_ndim / tn_dims read either, and messages describe either
// as the glue would ("got (2, 3) float64", "got (2, 3) float32 on cuda:0").
#ifndef TIMENET_CHECKS_H
#define TIMENET_CHECKS_H

#include <stddef.h>

#include "glue.h"

// ---------------------------------------------------------------------------
// arrays of either glue

int tn_ndim(PyObject *a);
const npy_intp *tn_dims(PyObject *a);
// tn_describe for a numpy array, tn_da_describe for a DeviceArray.
const char *tn_describe_arg(PyObject *a, char *buf, size_t n);
// "(2, 3, 4)" (a 1-tuple as "(6,)") into buf; returns buf.
const char *tn_fmt_dims(char *buf, size_t n, int ndim, const npy_intp *dims);

// Which kernels an op runs on, for the few contracts whose size limits
// differ (the CPU kernels index in int; cuDNN and the CUDA kernels limit
// whole tensors).
typedef enum { TN_ON_CPU, TN_ON_CUDA } tn_backend;

// ---------------------------------------------------------------------------
// shapes

// Exactly `dims`: text "sym = (2, 3)", or "sym = (2, 3) or None".
void tn_expect_dims(tn_expect *e, const char *sym, int ndim, const npy_intp *dims,
                    int or_none);

// a has `ndim` dims equal to `want` (entries < 0 match anything), else
// ValueError "<op>: <name> must be <expect>, got <a>".
int tn_check_shape(PyObject *a, const char *op, const char *name, int ndim,
                   const npy_intp *want, const char *expect);
int tn_check_expect(PyObject *a, const char *op, const char *name, const tn_expect *e);
// a has ref's shape: "dy must be (3, 2) float32 (the shape of x), got ...".
int tn_check_same_shape(PyObject *a, PyObject *ref, const char *op, const char *name,
                        const char *ref_name);
// At least `min_ndim` dims: "x must be (N, C, *) float32, got (6,) ...".
int tn_check_min_ndim(PyObject *a, const char *op, const char *name, int min_ndim,
                      const char *expect);
// Every dim fits a C int (the kernels index planes with int sizes).
int tn_check_fit_int(PyObject *a, const char *op, const char *name);

// A shape argument (x_shape, b_shape): a sequence of exactly `ndim` ints,
// each in [1, INT_MAX], into dims.
int tn_parse_shape(PyObject *obj, const char *op, const char *name, int ndim,
                   const char *expect, npy_intp *dims);

// A list or tuple argument of at most INT_MAX arrays, `what` saying of
// what ("float32 arrays"): a new reference to its PySequence_Fast, or NULL.
PyObject *tn_arg_list(PyObject *obj, const char *op, const char *name, const char *what);

// A float argument that must be finite and >= 0 (eps, lr, weight_decay).
int tn_check_nonneg(const char *op, const char *name, double v);

// ---------------------------------------------------------------------------
// group_norm_forward / _backward: x (N, C, *) float32, fit in int

typedef struct {
    int N, C, G;
    ptrdiff_t S;        // prod(*), the spatial size of one (n, c) plane
    tn_expect stats;    // mean, rstd: (N, G)
    tn_expect param;    // w, b: (C,) or None
} tn_group_norm;

// num_groups G >= 1 divides C; fills *g. x has passed tn_check_fit_int.
int tn_check_group_norm(const char *op, PyObject *x, int G, tn_group_norm *g);
// w and b both given (affine) or both None.
int tn_check_affine(const char *op, PyObject *w, PyObject *b);

// ---------------------------------------------------------------------------
// upsample_nearest: x (N, C, H, W) <-> dy (N, C, s*H, s*W)

// x fits int, scale >= 1 and s*H, s*W fit int; *yd = (N, C, s*H, s*W).
int tn_check_upsample(const char *op, PyObject *x, int scale, npy_intp *yd);
// dy fits int, scale >= 1 divides its H and W; *xd = (N, C, H, W).
int tn_check_upsample_grad(const char *op, PyObject *dy, int scale, npy_intp *xd);

// ---------------------------------------------------------------------------
// pools (square window, floor mode), as PyTorch checks them

// kernel >= 1, stride >= 1, 0 <= padding <= kernel / 2, kernel fits the
// padded input; xd (N, C, H, W) -> *yd (N, C, P, Q),
// P = (H + 2*padding - kernel) // stride + 1.
int tn_check_pool2d(const char *op, const npy_intp *xd, int k, int stride, int pad,
                    npy_intp *yd);
// max_pool2d's argmax holds flat h*W + w indices in int32.
int tn_check_argmax_plane(const char *op, npy_intp H, npy_intp W);
int tn_check_adaptive_pool2d(const char *op, int out_h, int out_w);
// dy of a pool backward whose output size the glue does not recompute:
// (N, C, *, *) with x_shape's N and C, text "sym with N, C = 2, 3".
void tn_expect_pool_grad(tn_expect *e, const char *sym, const npy_intp *xd);

// ---------------------------------------------------------------------------
// embeddings

// Every id in [0, V); names the first bad one.
int tn_check_ids(const char *op, const int64_t *ids, npy_intp n, npy_intp V);
int tn_check_num_embeddings(const char *op, Py_ssize_t V);
// At most INT_MAX ids (the kernels take int N).
int tn_check_num_ids(const char *op, npy_intp n);
// dy (N, D) with N = len(ids).
void tn_expect_embedding_grad(tn_expect *e, npy_intp n);
// timestep_embedding: dim >= 4, max_period finite and > 0.
int tn_check_timestep(const char *op, int dim, double max_period);

// ---------------------------------------------------------------------------
// concat on dim 1

// concat_forward's xs: a list or tuple of at least one (and at most
// INT_MAX) arrays, `what` saying of what ("float32 arrays"): a new
// reference to its PySequence_Fast, or NULL.
PyObject *tn_concat_list(PyObject *obj, const char *op, const char *what);
// Every xs[i], i > 0, matches xs[0] (N, C_0, *) in every dim but 1.
void tn_expect_concat(tn_expect *e, PyObject *x0);
// The output's N fits int.
int tn_check_concat_batch(const char *op, npy_intp N);
// concat_backward's sizes: a list of ints C_i >= 1 summing to dy's dim 1.
// Returns their count with the C_i in a new PyMem array *out, or -1.
Py_ssize_t tn_parse_concat_sizes(PyObject *obj, const char *op, PyObject *dy,
                                 Py_ssize_t **out);

// ---------------------------------------------------------------------------
// broadcasting add / mul: b has a's ndim (<= maxdim, the kernels' limit),
// each dim equal to a's or 1 (no implicit numpy broadcasting)

int tn_check_broadcast(const char *op, const char *name, int a_nd, const npy_intp *ad,
                       int b_nd, const npy_intp *bd, int maxdim);
// add_backward(dy, b_shape): b_shape into bd, checked against dy.
int tn_check_add_backward(const char *op, PyObject *dy, PyObject *b_shape, int maxdim,
                          npy_intp *bd);

// ---------------------------------------------------------------------------
// linear and conv2d

// x (N, I), w (O, I) agree on I; N, I, O fit int.
int tn_check_linear(const char *op, PyObject *x, PyObject *w);

// The sizes of one convolution; all fit int once tn_check_conv2d passed.
typedef struct {
    int N, C, H, W, K, R, S, P, Q, stride, pad;
} tn_conv2d;

// x (N, C, H, W), w (K, C, R, S) agree on C; stride >= 1, padding >= 0;
// (R, S) fits the padded input; the sizes fit the backend's kernels.
int tn_check_conv2d(const char *op, PyObject *x, PyObject *w, int stride, int padding,
                    tn_backend on, tn_conv2d *z);

// b: NULL (None) or (K,) with K == the output channels; `dim` names K.
int tn_check_bias(const char *op, PyObject *b, npy_intp K, const char *dim);
// dy: the output's shape `dims` (sym names it, "(N, K, P, Q)").
int tn_check_grad_out(const char *op, PyObject *dy, int ndim, const npy_intp *dims,
                      const char *sym);

// ---------------------------------------------------------------------------
// attention and the optimizer

// q (N, L, C): num_heads >= 1 divides C; the sizes (and probs, N * heads *
// L * L floats) fit the backend's kernels.
int tn_check_heads(const char *op, PyObject *q, int num_heads, tn_backend on);
// lr, eps, weight_decay finite and >= 0; betas in [0, 1); step >= 1.
int tn_check_adamw(const char *op, double lr, double beta1, double beta2, double eps,
                   double wd, long long step);
// No two of the n arrays share memory (an in-place update would read its
// own writes).
int tn_check_disjoint(const char *op, int n, PyObject *const *arrs, const char *const *names);

#endif
