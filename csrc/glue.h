// The one glue layer: every file that sees Python includes this, nothing
// under cpu/, metrics/, score/, ode/ does. Argument conversion, shape
// checks with precise messages, status -> exception.
#ifndef TIMENET_GLUE_H
#define TIMENET_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL timenet_ARRAY_API
#ifndef TN_GLUE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "common.h"

// Method tables, one per op family (py_<family>.c); module.c adds them all.
// (add `extern PyMethodDef tn_<family>_methods[];` here and the table to module.c)
extern PyMethodDef tn_ode_methods[];
extern PyMethodDef tn_ops_methods[];
extern PyMethodDef tn_metrics_methods[];
extern PyMethodDef tn_conv_methods[];
extern PyMethodDef tn_attn_methods[];
extern PyMethodDef tn_score_methods[];
// CUDA (py_cuda.c, py_cuda_ops.c, py_cuda_metrics.c): present in every
// build; without TN_HAVE_CUDA the runtime reports "built without CUDA" and
// the ops and metrics tables are empty. tn_cuda_add_types adds the
// DeviceArray type.
extern PyMethodDef tn_cuda_methods[];
extern PyMethodDef tn_cuda_ops_methods[];
extern PyMethodDef tn_cuda_ode_methods[];     // py_cuda_ode.c
extern PyMethodDef tn_cuda_score_methods[];   // py_cuda_score.c
extern PyMethodDef tn_cuda_metrics_methods[];
int tn_cuda_add_types(PyObject *m);

// Set a Python exception for a kernel status; returns NULL for `return`.
PyObject *tn_error(int status, const char *op);

// PyErr_Format with C's printf formats (PyErr_Format has no %g / %f: it
// copies the rest of the format as is); the message is cut at 512 bytes.
void tn_errorf(PyObject *exc, const char *fmt, ...);

// "(2, 3, 4) float64" into buf; returns buf.
const char *tn_describe(PyObject *obj, char *buf, size_t n);

// Strict input for engine ops: an ndarray that is already float32, native
// byte order, C-contiguous and aligned, with `ndim` dims (ndim < 0: any) and
// none of size 0. `expect` names the shape in messages, e.g. "(N, C, H, W)".
// Returns a new reference, or NULL with TypeError/ValueError set:
//   "conv2d: x must be (N, C, H, W) float32, got (3, 4) float64"
PyArrayObject *tn_f32(PyObject *obj, const char *op, const char *name, int ndim,
                      const char *expect);

// Lenient input (metrics, scoring): any real array-like (bool, integer,
// float), converted (copied only when needed: non-contiguous, byte-swapped,
// other dtype; float64 -> float32 is forced) to a C-contiguous aligned array
// of `type`. Never writes to the caller's data. TypeError otherwise.
PyArrayObject *tn_as(PyObject *obj, int type, const char *op, const char *name);

// Check dims against `dims` (entries < 0 match anything); on mismatch raise
// ValueError "<op>: <name> must be <expect>, got <shape>". Returns 0 or -1.
// (tn_check_shape in checks.h, for a numpy array.)
int tn_check_dims(PyArrayObject *a, const char *op, const char *name, int ndim,
                  const npy_intp *dims, const char *expect);

// What an array argument must be: `ndim` dims equal to `dims` (an entry < 0
// matches any size), named in messages by `text`, e.g. "(N, C, P, Q) =
// (1, 1, 2, 2)". The op contracts (checks.h) fill one for each argument
// whose shape follows from the others; each glue has one converter that
// takes it (tn_f32_expect here, arg_expect in the device glue).
typedef struct {
    int ndim;
    npy_intp dims[NPY_MAXDIMS];
    char text[224];
} tn_expect;

// More engine-op inputs, all as strict as tn_f32 (new references, or NULL
// with the exception set):
//   tn_f32_min_ndim  any ndim >= min_ndim ("(N, C, *)")
//   tn_f32_expect    exactly e's shape
//   tn_f64_expect    the same, float64 (saved float64 statistics)
//   tn_index         an integer array of exactly `type` (ids int64, argmax int32)
PyArrayObject *tn_f32_min_ndim(PyObject *obj, const char *op, const char *name, int min_ndim,
                               const char *expect);
PyArrayObject *tn_f32_expect(PyObject *obj, const char *op, const char *name,
                             const tn_expect *e);
PyArrayObject *tn_f64_expect(PyObject *obj, const char *op, const char *name,
                             const tn_expect *e);
PyArrayObject *tn_index(PyObject *obj, int type, const char *op, const char *name, int ndim,
                        const char *expect);

// New zero-filled float32 array, or NULL with MemoryError set.
PyArrayObject *tn_zeros_f32(int ndim, const npy_intp *dims);
// New uninitialised array of `type`.
PyArrayObject *tn_empty(int ndim, const npy_intp *dims, int type);

#define TN_F32(a) ((float *)PyArray_DATA(a))

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

#endif
