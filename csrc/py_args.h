// Array arguments that an op's CPU glue and its CUDA twin take with one
// piece of code (py_ode.c / py_cuda_ode.c, py_score.c / py_cuda_score.c).
// The engine ops share their checks (checks.h) and each glue converts its
// own arrays; these ops share the whole parse: an op's argument spec
// (tn_ode_parse_*, tn_score_parse_*) takes its arrays through a tn_arg_kind
// -- numpy arrays for the CPU glue (strict or lenient), DeviceArrays for the
// CUDA glue (tn_cuda_f32, py_cuda.h) -- and makes its outputs with it, so
// host and device raise the same exceptions with the same messages, and each
// glue is left with the kernel call.
#ifndef TIMENET_PY_ARGS_H
#define TIMENET_PY_ARGS_H

#include "checks.h"

// One float32 array argument (or output), host or device.
typedef struct {
    PyObject *ref;           // owned: the array taken (maybe a converted copy) or made
    PyObject *orig;          // borrowed: what the caller passed, for messages
    float *data;             // C-contiguous float32, in host or device memory
    int ndim;
    const Py_ssize_t *dim;   // ndim sizes, owned by ref
    Py_ssize_t size;         // elements
    int writeable;
} tn_arg;

typedef struct {
    // obj as a float32 array into *a, or -1 with TypeError / ValueError /
    // RuntimeError set; `expect` names the shape wanted, for the message.
    // Shapes (ndim, sizes, zero-size dims) are left to the spec's checks.
    int (*take)(tn_arg *a, PyObject *obj, const char *op, const char *name, const char *expect,
                void *ctx);
    // A new uninitialised float32 array (on the inputs' device), or -1.
    int (*empty)(tn_arg *a, int ndim, const Py_ssize_t *dim, void *ctx);
} tn_arg_kind;

// Engine ops: already float32, native byte order, C-contiguous and aligned,
// no zero-size dim (tn_f32); ctx unused.
extern const tn_arg_kind tn_host_f32;
// Scoring: any real array-like, converted to float32 when needed (tn_as).
extern const tn_arg_kind tn_host_any;

// Release a->ref; safe on a zeroed or cleared arg.
void tn_arg_clear(tn_arg *a);
// The argument as passed, for messages ("(2, 3) float64", "(2, 3) float32
// on cuda:0", or a type's name: tn_describe_arg).
const char *tn_arg_describe(const tn_arg *a, char *buf, size_t n);
// ValueError "<op>: <name> has a zero-size dimension: <a>" when one is 0.
int tn_arg_nonzero(const tn_arg *a, const char *op, const char *name);
// (Shapes: tn_check_shape(a->ref, ...) of checks.h.)
// Whether the data of a and b share memory (host or device addresses).
int tn_arg_overlap(const tn_arg *a, const tn_arg *b);

// What an op's glue returns: `result` (a new reference) for status TN_OK,
// else NULL with the exception `raise` sets for the kernel's status (tn_error
// on the CPU), or none more for TN_NOT_PARSED (the parse failed and set it).
#define TN_NOT_PARSED (-1)
PyObject *tn_arg_result(PyObject *result, int status, const char *op,
                        PyObject *(*raise)(int status, const char *op));

#endif
