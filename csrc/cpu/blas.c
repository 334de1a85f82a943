// The BLAS thread switch shared by every kernel that runs GEMMs inside its
// own OpenMP region (see blas.h).
#include "cpu/blas.h"

static int blas_serial_users, blas_saved_threads;

void blas_serial_begin(void) {
    #pragma omp critical(tn_blas_threads)
    {
        if (blas_serial_users++ == 0) {
            blas_saved_threads = scipy_openblas_get_num_threads();
            if (blas_saved_threads != 1) scipy_openblas_set_num_threads(1);
        }
    }
}

void blas_serial_end(void) {
    #pragma omp critical(tn_blas_threads)
    {
        if (--blas_serial_users == 0 && blas_saved_threads != 1)
            scipy_openblas_set_num_threads(blas_saved_threads);
    }
}
