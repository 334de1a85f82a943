// Shared by every pure-C kernel: status codes and small helpers.
// No Python.h here: kernels never see Python objects.
#ifndef TIMENET_COMMON_H
#define TIMENET_COMMON_H

#include <stddef.h>
#include <stdint.h>

// Kernels that can fail return one of these; the glue turns them into
// Python exceptions (tn_raise in glue.h).
enum {
    TN_OK = 0,
    TN_ENOMEM = 1,   // an allocation failed              -> MemoryError
    TN_EINVAL = 2,   // a value the kernel cannot handle  -> ValueError
    TN_ENAN = 3,     // NaN or inf in an input            -> ValueError
    TN_EUNDEF = 4,   // result undefined (e.g. one class) -> ValueError
};

#define TN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TN_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
