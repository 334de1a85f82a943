// timenet._core: module definition (multi-phase init). Each op family's
// glue lives in its own py_<family>.c and exports a method table; this file
// adds them all and holds the engine-wide settings (threads).
#define TN_GLUE_MAIN
#include "glue.h"

#include <cblas.h>
#include <omp.h>

static PyObject *py_set_num_threads(PyObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i:set_num_threads", &n)) return NULL;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: n must be >= 1, got %d", n);
        return NULL;
    }
    omp_set_num_threads(n);
    scipy_openblas_set_num_threads(n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs) {
    return PyLong_FromLong(omp_get_max_threads());
}

static PyMethodDef core_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_VARARGS,
     "set_num_threads(n)\n--\n\nThreads for C kernels (OpenMP) and GEMM (OpenBLAS)."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS,
     "get_num_threads()\n--\n\nThreads the C kernels use."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef *const families[] = {
    core_methods,
    tn_ode_methods,
    tn_ops_methods,
    tn_metrics_methods,
    tn_conv_methods,
    tn_attn_methods,
    tn_score_methods,
    tn_cuda_methods,
    tn_cuda_ops_methods,
    tn_cuda_ode_methods,
    tn_cuda_score_methods,
    tn_cuda_metrics_methods,
};

static int core_exec(PyObject *m) {
    import_array1(-1);
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (PyModule_AddFunctions(m, families[i]) < 0) return -1;
#ifdef TN_HAVE_CUDA
    if (PyModule_AddIntConstant(m, "has_cuda", 1) < 0) return -1;
#else
    if (PyModule_AddIntConstant(m, "has_cuda", 0) < 0) return -1;
#endif
    if (tn_cuda_add_types(m) < 0) return -1;
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "timenet._core",
    .m_doc = "timenet compute core: C kernels behind the CPython and NumPy C APIs.",
    .m_size = 0,
    .m_slots = core_slots,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
