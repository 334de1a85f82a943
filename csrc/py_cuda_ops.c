// Glue for the CUDA ops (csrc/cuda/*.cu): `cuda_<op>` takes and returns
// DeviceArrays with the arguments of the CPU op `<op>`. The ops land with
// their kernels; the table is empty until then.
#include "py_cuda.h"

PyMethodDef tn_cuda_ops_methods[] = {
    {NULL, NULL, 0, NULL},
};
