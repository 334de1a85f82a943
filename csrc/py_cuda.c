// Glue for the CUDA runtime: the DeviceArray type (device memory from the
// caching allocator, moved to and from numpy) and the device functions
// behind timenet.cuda (count, synchronize, memory stats, empty_cache,
// settings). The ops on DeviceArrays are in py_cuda_ops.c.
//
// Built with and without CUDA: without TN_HAVE_CUDA the runtime below is a
// stub that reports "built without CUDA", so DeviceArray exists in every
// build (isinstance checks work) and every way to make one raises a clear
// RuntimeError.
#include "py_cuda.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#ifndef TN_HAVE_CUDA
// ---- CPU-only build: the runtime says why there is no device ----------------
enum { TN_ECUDA = 16, TN_ENODEV = 17 };
static const char no_cuda[] =
    "timenet was built without CUDA (the build found no nvcc or cuDNN, or "
    "TIMENET_CUDA=0); rebuild with the CUDA toolkit: TIMENET_CUDA=1 make build";
typedef struct {
    uint64_t allocated, peak_allocated, requested, cached, reserved, peak_reserved;
    uint64_t num_allocs, num_frees, num_device_allocs, num_device_frees, num_ooms;
} tn_cuda_memstats;
static inline const char *tn_cuda_last_error(void) { return no_cuda; }
static inline const char *tn_cuda_unavailable_reason(void) { return no_cuda; }
static inline int tn_cuda_device_count(void) { return 0; }
static inline int tn_cuda_set_device(int dev) { (void)dev; return TN_ENODEV; }
static inline int tn_cuda_synchronize(int dev) { (void)dev; return TN_ENODEV; }
static inline int tn_cuda_malloc(void **p, size_t n, int dev) { (void)n; (void)dev; *p = NULL; return TN_ENODEV; }
static inline void tn_cuda_free(void *p, size_t n, int dev) { (void)p; (void)n; (void)dev; }
static inline int tn_cuda_empty_cache(int dev) { (void)dev; return TN_ENODEV; }
static inline int tn_cuda_memory_stats(int dev, tn_cuda_memstats *s) { (void)dev; (void)s; return TN_ENODEV; }
static inline int tn_cuda_reset_peak_stats(int dev) { (void)dev; return TN_ENODEV; }
static inline int tn_cuda_mem_info(int dev, size_t *f, size_t *t) { (void)dev; (void)f; (void)t; return TN_ENODEV; }
static inline int tn_cuda_device_name(int dev, char *b, size_t n, int *ma, int *mi) {
    (void)dev; (void)b; (void)n; (void)ma; (void)mi; return TN_ENODEV;
}
static inline void *tn_cuda_stream_handle(void) { return NULL; }
static inline int tn_cuda_memcpy_h2d(void *d, const void *s, size_t n) { (void)d; (void)s; (void)n; return TN_ENODEV; }
static inline int tn_cuda_memcpy_d2h(void *d, const void *s, size_t n) { (void)d; (void)s; (void)n; return TN_ENODEV; }
static inline int tn_cuda_memcpy_d2d(void *d, const void *s, size_t n) { (void)d; (void)s; (void)n; return TN_ENODEV; }
static inline int tn_cuda_memset_zero(void *d, size_t n) { (void)d; (void)n; return TN_ENODEV; }
static inline int tn_cuda_fill(float *y, float v, int64_t n) { (void)y; (void)v; (void)n; return TN_ENODEV; }
static inline void tn_cuda_set_allow_tf32(int on) { (void)on; }
static inline int tn_cuda_get_allow_tf32(void) { return 0; }
static inline void tn_cuda_set_cudnn_benchmark(int on) { (void)on; }
static inline int tn_cuda_get_cudnn_benchmark(void) { return 1; }
static inline void tn_cuda_set_autocast(int on) { (void)on; }
static inline int tn_cuda_get_autocast(void) { return 0; }
#endif

PyObject *tn_cuda_raise(int status, const char *op) {
    const char *msg = tn_cuda_last_error();
    PyObject *exc = status == TN_ENOMEM ? PyExc_MemoryError
                    : status == TN_EINVAL ? PyExc_ValueError
                                          : PyExc_RuntimeError;
    PyErr_Format(exc, "%s: %s", op, msg && msg[0] ? msg : "CUDA error");
    return NULL;
}

// A device index argument: 0 <= dev < count, made current. -1 on error.
static int use_device(int dev, const char *op) {
    int st = tn_cuda_set_device(dev);
    if (st != TN_OK) {
        tn_cuda_raise(st, op);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// DeviceArray

static int itemsize_of(int typenum) { return typenum == NPY_INT64 ? 8 : 4; }

static const char *dtype_name(int typenum) {
    return typenum == NPY_FLOAT32 ? "float32" : typenum == NPY_INT32 ? "int32" : "int64";
}

Py_ssize_t tn_da_size(const tn_DeviceArray *a) {
    Py_ssize_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

static const char *shape_str(char *buf, size_t n, int ndim, const Py_ssize_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %zd" : "%zd", shape[i]);
    if (ndim == 1 && k < n) k += (size_t)snprintf(buf + k, n - k, ",");
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

const char *tn_da_describe(PyObject *obj, char *buf, size_t n) {
    if (!tn_DeviceArray_Check(obj)) {
        if (PyArray_Check(obj)) {
            char tmp[160];
            snprintf(buf, n, "a numpy array %s (on the host)", tn_describe(obj, tmp, sizeof tmp));
        } else {
            snprintf(buf, n, "%s", Py_TYPE(obj)->tp_name);
        }
        return buf;
    }
    tn_DeviceArray *a = (tn_DeviceArray *)obj;
    char s[160];
    snprintf(buf, n, "%s %s on cuda:%d", shape_str(s, sizeof s, a->ndim, a->shape),
             dtype_name(a->typenum), a->device);
    return buf;
}

// Parse a shape: a sequence of ints >= 0 (one -1 allowed when `total` >= 0,
// inferred from it). Returns ndim or -1 with an exception set.
static int parse_shape(PyObject *obj, const char *op, Py_ssize_t total, Py_ssize_t *shape) {
    if (PyLong_Check(obj) || PyIndex_Check(obj)) {
        PyObject *t = PyTuple_Pack(1, obj);
        if (!t) return -1;
        int r = parse_shape(t, op, total, shape);
        Py_DECREF(t);
        return r;
    }
    PyObject *seq = PySequence_Fast(obj, "shape must be a sequence of ints");
    if (!seq) return -1;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    int infer = -1, rc = -1;
    Py_ssize_t known = 1;
    if (nd > TN_DA_MAXDIM) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d dims, got %zd", op, TN_DA_MAXDIM, nd);
        goto exit;
    }
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t v = PyNumber_AsSsize_t(item, PyExc_OverflowError);
        if (v == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s: shape[%zd] must be an int, got %s", op, i,
                             Py_TYPE(item)->tp_name);
            }
            goto exit;
        }
        if (v == -1 && total >= 0 && infer < 0) {
            infer = (int)i;
            continue;
        }
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "%s: shape[%zd] must be >= 0, got %zd", op, i, v);
            goto exit;
        }
        if (v > 0 && known > PY_SSIZE_T_MAX / v) {
            PyErr_Format(PyExc_ValueError, "%s: shape is too large", op);
            goto exit;
        }
        known *= v;
        shape[i] = v;
    }
    if (infer >= 0) {
        if (known == 0 || total % known) {
            PyErr_Format(PyExc_ValueError, "%s: cannot reshape %zd elements with a -1 in the "
                         "shape", op, total);
            goto exit;
        }
        shape[infer] = total / known;
        known = total;
    }
    if (total >= 0 && known != total) {
        char s[160];
        PyErr_Format(PyExc_ValueError, "%s: cannot reshape an array of %zd elements into shape %s",
                     op, total, shape_str(s, sizeof s, (int)nd, shape));
        goto exit;
    }
    rc = (int)nd;
exit:
    Py_DECREF(seq);
    return rc;
}

tn_DeviceArray *tn_da_empty(int ndim, const Py_ssize_t *shape, int typenum, int device) {
    if (use_device(device, "DeviceArray") < 0) return NULL;
    Py_ssize_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] > 0 && n > PY_SSIZE_T_MAX / 8 / shape[i]) {
            PyErr_SetString(PyExc_MemoryError, "DeviceArray: shape is too large");
            return NULL;
        }
        n *= shape[i];
    }
    tn_DeviceArray *a = PyObject_New(tn_DeviceArray, &tn_DeviceArray_Type);
    if (!a) return NULL;
    a->ptr = NULL;
    a->nbytes = (size_t)n * (size_t)itemsize_of(typenum);
    a->ndim = ndim;
    for (int i = 0; i < ndim; i++) a->shape[i] = shape[i];
    a->typenum = typenum;
    a->device = device;
    a->base = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = tn_cuda_malloc(&a->ptr, a->nbytes, device);
    Py_END_ALLOW_THREADS
    if (st != TN_OK) {
        a->nbytes = 0;  // nothing to free
        Py_DECREF(a);
        tn_cuda_raise(st, "DeviceArray");
        return NULL;
    }
    return a;
}

static void da_dealloc(tn_DeviceArray *self) {
    if (self->base) Py_DECREF(self->base);
    else if (self->ptr) tn_cuda_free(self->ptr, self->nbytes, self->device);
    PyObject_Free(self);
}

static int dtype_arg(PyObject *obj, int *typenum) {
    *typenum = NPY_FLOAT32;
    if (!obj || obj == Py_None) return 0;
    PyArray_Descr *d = NULL;
    if (!PyArray_DescrConverter(obj, &d)) return -1;
    const int t = d->type_num;
    Py_DECREF(d);
    if (t != NPY_FLOAT32 && t != NPY_INT32 && t != NPY_INT64) {
        PyErr_SetString(PyExc_TypeError, "DeviceArray: dtype must be float32, int32 or int64");
        return -1;
    }
    *typenum = t;
    return 0;
}

static PyObject *da_from_numpy(PyObject *cls, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"a", "device", NULL};
    static const char *op = "DeviceArray.from_numpy";
    PyObject *obj, *ret = NULL;
    int device = 0;
    PyArrayObject *raw = NULL, *a = NULL;
    tn_DeviceArray *da = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i:from_numpy", kwlist, &obj, &device))
        return NULL;
    if (use_device(device, op) < 0) return NULL;
    if (!(raw = (PyArrayObject *)PyArray_FROM_O(obj))) return NULL;
    int type;
    if (PyArray_ISFLOAT(raw) || PyArray_ISBOOL(raw)) type = NPY_FLOAT32;
    else if (PyArray_TYPE(raw) == NPY_INT32) type = NPY_INT32;
    else if (PyArray_ISINTEGER(raw)) type = NPY_INT64;
    else {
        char got[160];
        PyErr_Format(PyExc_TypeError, "%s: a must be a real (float, int or bool) array, got %s",
                     op, tn_describe((PyObject *)raw, got, sizeof got));
        goto exit;
    }
    if (PyArray_NDIM(raw) > TN_DA_MAXDIM) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d dims, got %d", op, TN_DA_MAXDIM,
                     PyArray_NDIM(raw));
        goto exit;
    }
    a = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)raw, type,
                                          NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (!a) goto exit;
    Py_ssize_t shape[TN_DA_MAXDIM];
    for (int i = 0; i < PyArray_NDIM(a); i++) shape[i] = PyArray_DIM(a, i);
    if (!(da = tn_da_empty(PyArray_NDIM(a), shape, type, device))) goto exit;
    RUN_CUDA(op, tn_cuda_memcpy_h2d(da->ptr, PyArray_DATA(a), da->nbytes));
    ret = (PyObject *)da;
    da = NULL;
exit:
    Py_XDECREF(raw); Py_XDECREF(a); Py_XDECREF(da);
    return ret;
}

// empty / zeros / full: (shape, [value,] device=0, dtype=float32)
static PyObject *da_make(PyObject *args, PyObject *kw, const char *op, int fill, int with_value) {
    static char *kw_plain[] = {"shape", "device", "dtype", NULL};
    static char *kw_value[] = {"shape", "value", "device", NULL};
    PyObject *shape_obj, *dtype_obj = NULL;
    double value = 0.0;
    int device = 0, typenum = NPY_FLOAT32;
    tn_DeviceArray *da = NULL;
    PyObject *ret = NULL;
    if (with_value) {
        if (!PyArg_ParseTupleAndKeywords(args, kw, "Od|i", kw_value, &shape_obj, &value, &device))
            return NULL;
    } else if (!PyArg_ParseTupleAndKeywords(args, kw, "O|iO", kw_plain, &shape_obj, &device,
                                            &dtype_obj)) {
        return NULL;
    }
    if (dtype_arg(dtype_obj, &typenum) < 0) return NULL;
    Py_ssize_t shape[TN_DA_MAXDIM];
    int nd = parse_shape(shape_obj, op, -1, shape);
    if (nd < 0) return NULL;
    if (!(da = tn_da_empty(nd, shape, typenum, device))) return NULL;
    if (with_value) {
        RUN_CUDA(op, tn_cuda_fill((float *)da->ptr, (float)value, (int64_t)tn_da_size(da)));
    } else if (fill) {
        RUN_CUDA(op, tn_cuda_memset_zero(da->ptr, da->nbytes));
    }
    ret = (PyObject *)da;
    da = NULL;
exit:
    Py_XDECREF(da);
    return ret;
}

static PyObject *da_empty(PyObject *cls, PyObject *args, PyObject *kw) {
    return da_make(args, kw, "DeviceArray.empty", 0, 0);
}
static PyObject *da_zeros(PyObject *cls, PyObject *args, PyObject *kw) {
    return da_make(args, kw, "DeviceArray.zeros", 1, 0);
}
static PyObject *da_full(PyObject *cls, PyObject *args, PyObject *kw) {
    return da_make(args, kw, "DeviceArray.full", 1, 1);
}

static PyObject *da_numpy(tn_DeviceArray *self, PyObject *noargs) {
    static const char *op = "DeviceArray.numpy";
    npy_intp dims[TN_DA_MAXDIM];
    for (int i = 0; i < self->ndim; i++) dims[i] = self->shape[i];
    PyArrayObject *a = (PyArrayObject *)PyArray_EMPTY(self->ndim, dims, self->typenum, 0);
    PyObject *ret = NULL;
    if (!a) return NULL;
    if (self->nbytes) {
        if (use_device(self->device, op) < 0) goto exit;
        RUN_CUDA(op, tn_cuda_memcpy_d2h(PyArray_DATA(a), self->ptr, self->nbytes));
    }
    ret = (PyObject *)a;
    a = NULL;
exit:
    Py_XDECREF(a);
    return ret;
}

static PyObject *da_copy(tn_DeviceArray *self, PyObject *noargs) {
    static const char *op = "DeviceArray.copy";
    tn_DeviceArray *c = tn_da_empty(self->ndim, self->shape, self->typenum, self->device);
    PyObject *ret = NULL;
    if (!c) return NULL;
    RUN_CUDA(op, tn_cuda_memcpy_d2d(c->ptr, self->ptr, self->nbytes));
    ret = (PyObject *)c;
    c = NULL;
exit:
    Py_XDECREF(c);
    return ret;
}

// A view of the same memory with another shape (-1 inferred).
static PyObject *da_reshape(tn_DeviceArray *self, PyObject *args) {
    PyObject *shape_obj = PyTuple_GET_SIZE(args) == 1 ? PyTuple_GET_ITEM(args, 0) : args;
    Py_ssize_t shape[TN_DA_MAXDIM];
    int nd = parse_shape(shape_obj, "DeviceArray.reshape", tn_da_size(self), shape);
    if (nd < 0) return NULL;
    tn_DeviceArray *v = PyObject_New(tn_DeviceArray, &tn_DeviceArray_Type);
    if (!v) return NULL;
    v->ptr = self->ptr;
    v->nbytes = self->nbytes;
    v->ndim = nd;
    for (int i = 0; i < nd; i++) v->shape[i] = shape[i];
    v->typenum = self->typenum;
    v->device = self->device;
    v->base = self->base ? self->base : (PyObject *)self;
    Py_INCREF(v->base);
    return (PyObject *)v;
}

static PyObject *da_array(tn_DeviceArray *self, PyObject *args, PyObject *kw) {
    PyErr_SetString(PyExc_TypeError,
                    "a DeviceArray is not converted to numpy implicitly (it would copy from the "
                    "GPU behind your back); use .numpy(), or Tensor.cpu()");
    return NULL;
}

static PyObject *da_get_shape(tn_DeviceArray *self, void *c) {
    PyObject *t = PyTuple_New(self->ndim);
    if (!t) return NULL;
    for (int i = 0; i < self->ndim; i++) {
        PyObject *v = PyLong_FromSsize_t(self->shape[i]);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}
static PyObject *da_get_ndim(tn_DeviceArray *self, void *c) { return PyLong_FromLong(self->ndim); }
static PyObject *da_get_size(tn_DeviceArray *self, void *c) {
    return PyLong_FromSsize_t(tn_da_size(self));
}
static PyObject *da_get_nbytes(tn_DeviceArray *self, void *c) {
    return PyLong_FromSize_t(self->nbytes);
}
static PyObject *da_get_itemsize(tn_DeviceArray *self, void *c) {
    return PyLong_FromLong(itemsize_of(self->typenum));
}
static PyObject *da_get_dtype(tn_DeviceArray *self, void *c) {
    return (PyObject *)PyArray_DescrFromType(self->typenum);
}
static PyObject *da_get_device(tn_DeviceArray *self, void *c) {
    return PyLong_FromLong(self->device);
}
static PyObject *da_get_ptr(tn_DeviceArray *self, void *c) {
    return PyLong_FromVoidPtr(self->ptr);
}
static PyObject *da_get_base(tn_DeviceArray *self, void *c) {
    PyObject *b = self->base ? self->base : Py_None;
    Py_INCREF(b);
    return b;
}

// The CUDA Array Interface (version 3): zero-copy exchange with CuPy,
// PyTorch, Numba. "stream" is this device's stream: consumers order their
// work after it.
static PyObject *da_get_cai(tn_DeviceArray *self, void *c) {
    const char *typestr = self->typenum == NPY_FLOAT32 ? "<f4"
                          : self->typenum == NPY_INT32 ? "<i4" : "<i8";
    PyObject *shape = da_get_shape(self, NULL);
    if (!shape) return NULL;
    if (use_device(self->device, "__cuda_array_interface__") < 0) {
        Py_DECREF(shape);
        return NULL;
    }
    void *stream = tn_cuda_stream_handle();
    PyObject *d = Py_BuildValue("{s:N,s:s,s:(N,O),s:i,s:O,s:N}", "shape", shape, "typestr",
                                typestr, "data", PyLong_FromVoidPtr(self->ptr), Py_False,
                                "version", 3, "strides", Py_None, "stream",
                                PyLong_FromVoidPtr(stream));
    return d;
}

static Py_ssize_t da_len(tn_DeviceArray *self) {
    if (self->ndim == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d DeviceArray");
        return -1;
    }
    return self->shape[0];
}

static PyObject *da_repr(tn_DeviceArray *self) {
    char s[160];
    return PyUnicode_FromFormat("DeviceArray(shape=%s, dtype=%s, device='cuda:%d')",
                                shape_str(s, sizeof s, self->ndim, self->shape),
                                dtype_name(self->typenum), self->device);
}

static PyMethodDef da_methods[] = {
    {"from_numpy", (PyCFunction)(void (*)(void))da_from_numpy,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "from_numpy(a, device=0)\n--\n\n"
     "Copy a host array to the device: float (and bool) arrays become float32,\n"
     "int32 stays int32, other integers become int64."},
    {"empty", (PyCFunction)(void (*)(void))da_empty, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "empty(shape, device=0, dtype='float32')\n--\n\nUninitialised device memory."},
    {"zeros", (PyCFunction)(void (*)(void))da_zeros, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "zeros(shape, device=0, dtype='float32')\n--\n\nZero-filled device memory."},
    {"full", (PyCFunction)(void (*)(void))da_full, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "full(shape, value, device=0)\n--\n\nA float32 array filled with value."},
    {"numpy", (PyCFunction)da_numpy, METH_NOARGS,
     "numpy()\n--\n\nA new host (numpy) copy; waits for the device's queued work."},
    {"copy", (PyCFunction)da_copy, METH_NOARGS, "copy()\n--\n\nA device copy."},
    {"reshape", (PyCFunction)da_reshape, METH_VARARGS,
     "reshape(*shape)\n--\n\nA view with another shape (one -1 is inferred); no copy."},
    {"__array__", (PyCFunction)(void (*)(void))da_array, METH_VARARGS | METH_KEYWORDS,
     "Refuses implicit conversion: use .numpy()."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef da_getset[] = {
    {"shape", (getter)da_get_shape, NULL, "tuple of ints", NULL},
    {"ndim", (getter)da_get_ndim, NULL, "number of dims", NULL},
    {"size", (getter)da_get_size, NULL, "number of elements", NULL},
    {"nbytes", (getter)da_get_nbytes, NULL, "bytes of data", NULL},
    {"itemsize", (getter)da_get_itemsize, NULL, "bytes per element", NULL},
    {"dtype", (getter)da_get_dtype, NULL, "numpy dtype (float32, int32 or int64)", NULL},
    {"device", (getter)da_get_device, NULL, "CUDA device index", NULL},
    {"ptr", (getter)da_get_ptr, NULL, "device pointer (int)", NULL},
    {"base", (getter)da_get_base, NULL, "the array a view shares memory with, or None", NULL},
    {"__cuda_array_interface__", (getter)da_get_cai, NULL, "CUDA Array Interface v3", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods da_as_mapping = {
    .mp_length = (lenfunc)da_len,
};

PyTypeObject tn_DeviceArray_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "timenet._core.DeviceArray",
    .tp_basicsize = sizeof(tn_DeviceArray),
    .tp_dealloc = (destructor)da_dealloc,
    .tp_repr = (reprfunc)da_repr,
    .tp_as_mapping = &da_as_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A C-contiguous float32 (or int32/int64) array in CUDA device memory.\n\n"
              "Made by DeviceArray.from_numpy / empty / zeros / full; .numpy() copies it\n"
              "back. Memory comes from timenet's caching allocator and returns to it\n"
              "when the array is freed.",
    .tp_methods = da_methods,
    .tp_getset = da_getset,
};

int tn_cuda_add_types(PyObject *m) {
    if (PyType_Ready(&tn_DeviceArray_Type) < 0) return -1;
    Py_INCREF(&tn_DeviceArray_Type);
    if (PyModule_AddObject(m, "DeviceArray", (PyObject *)&tn_DeviceArray_Type) < 0) {
        Py_DECREF(&tn_DeviceArray_Type);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// DeviceArrays as op arguments: tn_da_arg for every CUDA glue file, and the
// tn_cuda_f32 kind of py_args.h built on it

static void arg_from_da(tn_arg *a, tn_DeviceArray *x, PyObject *orig) {
    a->ref = (PyObject *)x;
    a->orig = orig;
    a->data = (float *)x->ptr;
    a->ndim = x->ndim;
    a->dim = x->shape;
    a->size = tn_da_size(x);
    a->writeable = 1;
}

tn_DeviceArray *tn_da_arg(PyObject *obj, int typenum, const char *op, const char *name,
                          const char *expect, tn_devctx *ctx) {
    char got[200];
    const char *tname = typenum == NPY_FLOAT32 ? "float32" : typenum == NPY_INT32 ? "int32"
                                                                                  : "int64";
    if (!tn_DeviceArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be a %s CUDA array %s, got %s; every input of a CUDA op "
                     "must be on the GPU (Tensor.to('cuda'))", op, name, tname, expect,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    tn_DeviceArray *x = (tn_DeviceArray *)obj;
    if (x->typenum != typenum) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s %s, got %s", op, name, expect, tname,
                     tn_da_describe(obj, got, sizeof got));
        return NULL;
    }
    if (ctx->dev < 0) {
        ctx->dev = x->device;
        snprintf(ctx->first, sizeof ctx->first, "%s", name);
    } else if (x->device != ctx->dev) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: expected all inputs on one device, got %s on cuda:%d and %s on cuda:%d",
                     op, ctx->first, ctx->dev, name, x->device);
        return NULL;
    }
    return x;
}

static int arg_take_da(tn_arg *a, PyObject *obj, const char *op, const char *name,
                       const char *expect, void *ctx) {
    tn_DeviceArray *x = tn_da_arg(obj, NPY_FLOAT32, op, name, expect, ctx);
    if (!x) return -1;
    Py_INCREF(obj);
    arg_from_da(a, x, obj);
    return 0;
}

static int arg_empty_da(tn_arg *a, int ndim, const Py_ssize_t *dim, void *ctx) {
    tn_DeviceArray *x = tn_da_empty(ndim, dim, NPY_FLOAT32, ((tn_devctx *)ctx)->dev);
    if (!x) return -1;
    arg_from_da(a, x, NULL);
    return 0;
}

const tn_arg_kind tn_cuda_f32 = {arg_take_da, arg_empty_da};

// ---------------------------------------------------------------------------
// device functions (timenet.cuda)

static PyObject *py_cuda_device_count(PyObject *self, PyObject *noargs) {
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = tn_cuda_device_count();
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
}

static PyObject *py_cuda_unavailable_reason(PyObject *self, PyObject *noargs) {
    const char *r;
    Py_BEGIN_ALLOW_THREADS
    r = tn_cuda_unavailable_reason();
    Py_END_ALLOW_THREADS
    return PyUnicode_FromString(r);
}

static PyObject *py_cuda_synchronize(PyObject *self, PyObject *args) {
    int dev = -1;
    if (!PyArg_ParseTuple(args, "|i:cuda_synchronize", &dev)) return NULL;
    if (tn_cuda_device_count() == 0) return tn_cuda_raise(TN_ENODEV, "cuda_synchronize");
    RUN_CUDA("cuda_synchronize", tn_cuda_synchronize(dev));
    Py_RETURN_NONE;
exit:
    return NULL;
}

static PyObject *py_cuda_empty_cache(PyObject *self, PyObject *args) {
    int dev = -1;
    if (!PyArg_ParseTuple(args, "|i:cuda_empty_cache", &dev)) return NULL;
    if (tn_cuda_device_count() == 0) return tn_cuda_raise(TN_ENODEV, "cuda_empty_cache");
    RUN_CUDA("cuda_empty_cache", tn_cuda_empty_cache(dev));
    Py_RETURN_NONE;
exit:
    return NULL;
}

static PyObject *py_cuda_memory_stats(PyObject *self, PyObject *args) {
    int dev;
    tn_cuda_memstats s;
    if (!PyArg_ParseTuple(args, "i:cuda_memory_stats", &dev)) return NULL;
    int st = tn_cuda_memory_stats(dev, &s);
    if (st != TN_OK) return tn_cuda_raise(st, "cuda_memory_stats");
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "allocated_bytes",
        (unsigned long long)s.allocated, "peak_allocated_bytes",
        (unsigned long long)s.peak_allocated, "requested_bytes",
        (unsigned long long)s.requested, "cached_bytes", (unsigned long long)s.cached,
        "reserved_bytes", (unsigned long long)s.reserved, "peak_reserved_bytes",
        (unsigned long long)s.peak_reserved, "num_allocs", (unsigned long long)s.num_allocs,
        "num_frees", (unsigned long long)s.num_frees, "num_device_allocs",
        (unsigned long long)s.num_device_allocs, "num_device_frees",
        (unsigned long long)s.num_device_frees, "num_ooms", (unsigned long long)s.num_ooms);
}

static PyObject *py_cuda_reset_peak_memory_stats(PyObject *self, PyObject *args) {
    int dev;
    if (!PyArg_ParseTuple(args, "i:cuda_reset_peak_memory_stats", &dev)) return NULL;
    int st = tn_cuda_reset_peak_stats(dev);
    if (st != TN_OK) return tn_cuda_raise(st, "cuda_reset_peak_memory_stats");
    Py_RETURN_NONE;
}

static PyObject *py_cuda_mem_get_info(PyObject *self, PyObject *args) {
    int dev;
    size_t fr = 0, tot = 0;
    if (!PyArg_ParseTuple(args, "i:cuda_mem_get_info", &dev)) return NULL;
    int st = tn_cuda_mem_info(dev, &fr, &tot);
    if (st != TN_OK) return tn_cuda_raise(st, "cuda_mem_get_info");
    return Py_BuildValue("(KK)", (unsigned long long)fr, (unsigned long long)tot);
}

static PyObject *py_cuda_get_device_name(PyObject *self, PyObject *args) {
    int dev, major = 0, minor = 0;
    char name[256] = "";
    if (!PyArg_ParseTuple(args, "i:cuda_get_device_name", &dev)) return NULL;
    int st = tn_cuda_device_name(dev, name, sizeof name, &major, &minor);
    if (st != TN_OK) return tn_cuda_raise(st, "cuda_get_device_name");
    return Py_BuildValue("(sii)", name, major, minor);
}

static PyObject *py_cuda_set_allow_tf32(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    tn_cuda_set_allow_tf32(on);
    Py_RETURN_NONE;
}
static PyObject *py_cuda_get_allow_tf32(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(tn_cuda_get_allow_tf32());
}
static PyObject *py_cuda_set_cudnn_benchmark(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    tn_cuda_set_cudnn_benchmark(on);
    Py_RETURN_NONE;
}
static PyObject *py_cuda_get_cudnn_benchmark(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(tn_cuda_get_cudnn_benchmark());
}

// Autocast can be switched off anywhere, on only where there are CUDA ops
// for it to change (a CPU-only build says why not).
static PyObject *py_cuda_set_autocast(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
#ifndef TN_HAVE_CUDA
    if (on) {
        PyErr_Format(PyExc_RuntimeError, "cuda_set_autocast: bf16 autocast needs the CUDA "
                     "backend: %s", no_cuda);
        return NULL;
    }
#endif
    tn_cuda_set_autocast(on);
    Py_RETURN_NONE;
}
static PyObject *py_cuda_get_autocast(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(tn_cuda_get_autocast());
}

PyMethodDef tn_cuda_methods[] = {
    {"cuda_device_count", py_cuda_device_count, METH_NOARGS,
     "cuda_device_count()\n--\n\nCUDA devices (0 without a driver or GPU, or in a CPU-only build)."},
    {"cuda_unavailable_reason", py_cuda_unavailable_reason, METH_NOARGS,
     "cuda_unavailable_reason()\n--\n\nWhy there is no device ('' when there is one)."},
    {"cuda_synchronize", py_cuda_synchronize, METH_VARARGS,
     "cuda_synchronize(device=-1)\n--\n\nWait for a device's queued work (-1: all)."},
    {"cuda_empty_cache", py_cuda_empty_cache, METH_VARARGS,
     "cuda_empty_cache(device=-1)\n--\n\nReturn the allocator's cached blocks to the driver."},
    {"cuda_memory_stats", py_cuda_memory_stats, METH_VARARGS,
     "cuda_memory_stats(device)\n--\n\nThe caching allocator's counters (bytes and calls)."},
    {"cuda_reset_peak_memory_stats", py_cuda_reset_peak_memory_stats, METH_VARARGS,
     "cuda_reset_peak_memory_stats(device)\n--\n\nPeaks restart from the current values."},
    {"cuda_mem_get_info", py_cuda_mem_get_info, METH_VARARGS,
     "cuda_mem_get_info(device)\n--\n\n(free, total) bytes of device memory (cudaMemGetInfo)."},
    {"cuda_get_device_name", py_cuda_get_device_name, METH_VARARGS,
     "cuda_get_device_name(device)\n--\n\n(name, major, minor) compute capability."},
    {"cuda_set_allow_tf32", py_cuda_set_allow_tf32, METH_O,
     "cuda_set_allow_tf32(flag)\n--\n\nTF32 tensor cores for float32 GEMMs and convolutions."},
    {"cuda_get_allow_tf32", py_cuda_get_allow_tf32, METH_NOARGS, "cuda_get_allow_tf32()\n--\n\n"},
    {"cuda_set_cudnn_benchmark", py_cuda_set_cudnn_benchmark, METH_O,
     "cuda_set_cudnn_benchmark(flag)\n--\n\nTime cuDNN's algorithms once per shape (True) or "
     "take its heuristic choice."},
    {"cuda_get_cudnn_benchmark", py_cuda_get_cudnn_benchmark, METH_NOARGS,
     "cuda_get_cudnn_benchmark()\n--\n\n"},
    {"cuda_set_autocast", py_cuda_set_autocast, METH_O,
     "cuda_set_autocast(flag)\n--\n\nbf16 autocast of conv2d, linear and attention on "
     "CUDA, for this thread."},
    {"cuda_get_autocast", py_cuda_get_autocast, METH_NOARGS, "cuda_get_autocast()\n--\n\n"},
    {NULL, NULL, 0, NULL},
};
