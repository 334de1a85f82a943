// Glue for the ODE steps on CUDA arrays (csrc/cuda/ode.cu): cuda_ode_combine
// and cuda_ode_error_norm take exactly the CPU ops' arguments, parsed and
// checked by their own spec (py_ode.h) with DeviceArrays for y, ks, y_new
// and out; coeffs and h stay host values. cuda_ode_error_norm returns the
// (B,) float64 norms as a host numpy array: step control runs on the host.
#include "py_cuda.h"

#ifdef TN_HAVE_CUDA

#include "py_ode.h"

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

#define F64(a) ((const double *)PyArray_DATA(a))

static PyObject *py_ode_combine(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "cuda_ode_combine";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_ode_args p;
    int st = TN_NOT_PARSED;
    if (tn_ode_parse_combine(&p, args, kw, op, &tn_cuda_f32, &ctx) == 0)
        TN_CUDA_RUN(st, ctx.dev,
                    tn_cuda_ode_combine(p.out.data, p.y.data, p.kp, F64(p.coeffs), p.K, F64(p.h),
                                        p.B, p.D));
    PyObject *ret = tn_arg_result(p.out.ref, st, op, tn_cuda_raise);
    tn_ode_args_clear(&p);
    return ret;
}

static PyObject *py_ode_error_norm(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "cuda_ode_error_norm";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_ode_args p;
    int st = TN_NOT_PARSED;
    if (tn_ode_parse_error_norm(&p, args, kw, op, &tn_cuda_f32, &ctx) == 0)
        TN_CUDA_RUN(
            st, ctx.dev,
            tn_cuda_ode_error_norm((double *)PyArray_DATA(p.norm), p.kp, F64(p.coeffs), p.K,
                                   F64(p.h), p.y.data, p.y_new.data, p.rtol, p.atol, p.B, p.D));
    PyObject *ret = tn_arg_result((PyObject *)p.norm, st, op, tn_cuda_raise);
    tn_ode_args_clear(&p);
    return ret;
}

PyMethodDef tn_cuda_ode_methods[] = {
    {"cuda_ode_combine", FN(py_ode_combine), KW,
     "cuda_ode_combine(y, ks, coeffs, h, out=None)\n--\n\n"
     "ode_combine on CUDA arrays (coeffs, h: host values); out may be y."},
    {"cuda_ode_error_norm", FN(py_ode_error_norm), KW,
     "cuda_ode_error_norm(ks, coeffs, h, y, y_new, rtol, atol)\n--\n\n"
     "ode_error_norm on CUDA arrays: the (B,) float64 norms as a host numpy array."},
    {NULL, NULL, 0, NULL},
};

#else  // CPU-only build: no CUDA ODE ops

PyMethodDef tn_cuda_ode_methods[] = {
    {NULL, NULL, 0, NULL},
};

#endif
