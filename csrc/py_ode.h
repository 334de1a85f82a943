// The argument specs of the ODE step ops, shared by their CPU glue
// (py_ode.c, numpy arrays) and CUDA glue (py_cuda_ode.c, DeviceArrays):
// one parse, one set of checks and messages (py_args.h).
#ifndef TIMENET_PY_ODE_H
#define TIMENET_PY_ODE_H

#include "py_args.h"
#include "ode/ode.h"

typedef struct {
    tn_arg y, y_new, out, ks[TN_ODE_MAXK];  // y_new: error_norm; out: combine
    const float *kp[TN_ODE_MAXK];           // the stages' data
    int K, B;                               // stages; samples (y's first dim)
    ptrdiff_t D;                            // floats per sample
    PyArrayObject *coeffs, *h;              // host float64 (K,) and (B,)
    PyArrayObject *norm;                    // error_norm's result: host float64 (B,)
    double rtol, atol;
} tn_ode_args;

// ode_combine(y, ks, coeffs, h, out=None) as the op `op` (the name in
// messages): p->out is the given out or a new array made by `kind`.
int tn_ode_parse_combine(tn_ode_args *p, PyObject *args, PyObject *kw, const char *op,
                         const tn_arg_kind *kind, void *ctx);
// ode_error_norm(ks, coeffs, h, y, y_new, rtol, atol): p->norm is made here.
int tn_ode_parse_error_norm(tn_ode_args *p, PyObject *args, PyObject *kw, const char *op,
                            const tn_arg_kind *kind, void *ctx);
// Release everything a parse took or made (also after a failed parse).
void tn_ode_args_clear(tn_ode_args *p);

#endif
