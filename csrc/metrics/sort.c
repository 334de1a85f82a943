// Radix sorts for the metrics (see sort.h): the same template for 32- and
// 64-bit keys.
#include "sort.h"

#include <omp.h>
#include <stdlib.h>

// LSD digits of up to 11 bits (8 below RADIX_SMALL keys); inputs of
// MSD_MIN keys or more first go through one threaded MSD pass on 12 bits.
#define RADIX_BITS 11
#define RADIX_SIZE (1 << RADIX_BITS)
#define RADIX_SMALL 4096
#define MSD_BITS 12
#define MSD_MIN (1 << 16)

#define KEY uint32_t
#define FUNC radix_sort_u32
#define LSD lsd_u32
#define VARYING varying_u32
#include "radix_impl.h"
#undef KEY
#undef FUNC
#undef LSD
#undef VARYING

#define KEY uint64_t
#define FUNC radix_sort_u64
#define LSD lsd_u64
#define VARYING varying_u64
#include "radix_impl.h"
#undef KEY
#undef FUNC
#undef LSD
#undef VARYING
