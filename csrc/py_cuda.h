// The CUDA glue's shared part (py_cuda.c: the DeviceArray type and the
// runtime functions; py_cuda_ops.c: the ops). Included after glue.h.
#ifndef TIMENET_PY_CUDA_H
#define TIMENET_PY_CUDA_H

#include "py_args.h"

#ifdef TN_HAVE_CUDA
#include "cuda/tn_cuda.h"
#endif

#define TN_DA_MAXDIM 8

// A C-contiguous array in device memory: float32 (the engine's type), or
// int32 / int64 (argmax, ids). `ptr` comes from the caching allocator and
// goes back to it on dealloc; a view (reshape) shares its base's memory and
// holds a reference to it.
typedef struct {
    PyObject_HEAD
    void *ptr;                     // device pointer; NULL when nbytes == 0
    size_t nbytes;
    int ndim;
    Py_ssize_t shape[TN_DA_MAXDIM];
    int typenum;                   // NPY_FLOAT32, NPY_INT32 or NPY_INT64
    int device;
    PyObject *base;                // owner of ptr for a view, else NULL
} tn_DeviceArray;

extern PyTypeObject tn_DeviceArray_Type;

#define tn_DeviceArray_Check(o) PyObject_TypeCheck((o), &tn_DeviceArray_Type)
#define TN_DA_F32(a) ((float *)((tn_DeviceArray *)(a))->ptr)

// Add the DeviceArray type to the module (module.c's exec slot).
int tn_cuda_add_types(PyObject *m);

// A new uninitialised array on `device` (or NULL with an exception set:
// MemoryError naming the size when the device is out of memory).
tn_DeviceArray *tn_da_empty(int ndim, const Py_ssize_t *shape, int typenum, int device);

// Number of elements.
Py_ssize_t tn_da_size(const tn_DeviceArray *a);

// "(2, 3) float32 on cuda:0" (or the Python type name) into buf.
const char *tn_da_describe(PyObject *obj, char *buf, size_t n);

// The device of an op's inputs (-1 until the first is taken) and the name
// of the argument that fixed it: every input of one call must be on it.
typedef struct {
    int dev;
    char first[32];
} tn_devctx;
#define TN_DEVCTX_INIT {-1, ""}

// obj as a DeviceArray of `typenum` on ctx's device (the first array fixes
// it): TypeError for anything else or another dtype, RuntimeError naming
// both arguments for another device. Borrowed reference, or NULL. The one
// statement of these messages for every CUDA glue file.
tn_DeviceArray *tn_da_arg(PyObject *obj, int typenum, const char *op, const char *name,
                          const char *expect, tn_devctx *ctx);

// Array arguments as float32 DeviceArrays (py_args.h; ctx a tn_devctx *):
// a numpy array or another dtype is a TypeError, another device a
// RuntimeError naming both; outputs are made on the inputs' device.
extern const tn_arg_kind tn_cuda_f32;

// st = an op entry `call` (a tn_cuda_* status) on device `dev`, without the
// GIL; the glue then turns st into its result (tn_arg_result). RUN_CUDA
// below raises and jumps instead.
#define TN_CUDA_RUN(st, dev, call)                \
    do {                                          \
        Py_BEGIN_ALLOW_THREADS                    \
        (st) = tn_cuda_set_device(dev);           \
        if ((st) == TN_OK) (st) = (call);         \
        Py_END_ALLOW_THREADS                      \
    } while (0)

// Set the exception for a CUDA status (TN_ENOMEM -> MemoryError, TN_EINVAL
// -> ValueError, others -> RuntimeError) with tn_cuda_last_error()'s
// message; returns NULL.
PyObject *tn_cuda_raise(int status, const char *op);

// Run a runtime call or op entry without the GIL; on failure raise
// (tn_cuda_raise) and jump to exit.
#define RUN_CUDA(op, call)                        \
    do {                                          \
        int st_;                                  \
        Py_BEGIN_ALLOW_THREADS st_ = (call);      \
        Py_END_ALLOW_THREADS                      \
        if (st_ != TN_OK) {                       \
            tn_cuda_raise(st_, op);               \
            goto exit;                            \
        }                                         \
    } while (0)

#endif
