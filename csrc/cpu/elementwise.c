// Channel concatenation and broadcasting add / mul.
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops.h"

// ---------------------------------------------------------------------------
// concat along dim 1

// y is (N, total) viewed per sample, xs[i] is (N, sizes[i]) viewed per sample,
// where sizes[i] = C_i * prod(rest) and total = sum sizes[i]: per sample,
// the inputs' blocks are laid end to end.
int concat_forward(float *restrict y, const float *const *xs, const ptrdiff_t *sizes,
                   int n_inputs, int N, ptrdiff_t total) {
#pragma omp parallel for schedule(static) if (N > 1 && N * total >= TN_OMP_MIN_WORK)
    for (int n = 0; n < N; n++) {
        float *dst = y + (ptrdiff_t)n * total;
        for (int i = 0; i < n_inputs; i++) {
            memcpy(dst, xs[i] + (ptrdiff_t)n * sizes[i], sizeof(float) * sizes[i]);
            dst += sizes[i];
        }
    }
    return TN_OK;
}

// dxs[i] is (N, sizes[i]), dy is (N, total): the inverse split.
int concat_backward(float *const *dxs, const float *restrict dy, const ptrdiff_t *sizes,
                    int n_inputs, int N, ptrdiff_t total) {
#pragma omp parallel for schedule(static) if (N > 1 && N * total >= TN_OMP_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float *src = dy + (ptrdiff_t)n * total;
        for (int i = 0; i < n_inputs; i++) {
            memcpy(dxs[i] + (ptrdiff_t)n * sizes[i], src, sizeof(float) * sizes[i]);
            src += sizes[i];
        }
    }
    return TN_OK;
}

// ---------------------------------------------------------------------------
// Broadcasting: a has the output's shape, b has the same ndim with each dim
// equal to a's or 1 (checked by the glue). Adjacent dims with the same
// pattern (b full / b broadcast) are merged and size-1 dims of a dropped, so
// (N, C, H, W) op (1, C, 1, 1) becomes (N: bcast)(C: full)(H*W: bcast). The
// merged last dim is the contiguous inner loop: there b is either one value
// or a run as long as a's row, both of which vectorise.

typedef struct {
    int nd;                          // merged dims
    ptrdiff_t dim[TN_BCAST_MAXDIM];  // merged extents (a's)
    ptrdiff_t bstride[TN_BCAST_MAXDIM];  // b's stride per merged dim (0 = broadcast)
    ptrdiff_t rows, inner, total, nb;  // outer rows, inner length, |a|, |b|
    int inner_bcast;
} bcast_plan;

static void bcast_plan_make(bcast_plan *pl, int ndim, const ptrdiff_t *a_shape,
                            const ptrdiff_t *b_shape) {
    int bc[TN_BCAST_MAXDIM];
    pl->nd = 0;
    pl->total = 1;
    pl->nb = 1;
    for (int i = 0; i < ndim; i++) {
        pl->total *= a_shape[i];
        pl->nb *= b_shape[i];
        if (a_shape[i] == 1) continue;
        const int flag = b_shape[i] == 1;
        if (pl->nd > 0 && bc[pl->nd - 1] == flag) {
            pl->dim[pl->nd - 1] *= a_shape[i];
        } else {
            bc[pl->nd] = flag;
            pl->dim[pl->nd++] = a_shape[i];
        }
    }
    if (pl->nd == 0) {  // every dim is 1: one element
        bc[0] = 0;
        pl->dim[0] = 1;
        pl->nd = 1;
    }
    ptrdiff_t run = 1;
    for (int i = pl->nd - 1; i >= 0; i--) {
        pl->bstride[i] = bc[i] ? 0 : run;
        if (!bc[i]) run *= pl->dim[i];
    }
    pl->inner = pl->dim[pl->nd - 1];
    pl->inner_bcast = bc[pl->nd - 1];
    pl->rows = pl->total / pl->inner;
}

// Offset into b of outer row r (r counts rows of `inner` elements of a).
static inline ptrdiff_t bcast_row_offset(const bcast_plan *pl, ptrdiff_t r) {
    ptrdiff_t off = 0;
    for (int i = pl->nd - 2; i >= 0; i--) {
        off += (r % pl->dim[i]) * pl->bstride[i];
        r /= pl->dim[i];
    }
    return off;
}

enum { OP_ADD, OP_MUL };

static void bcast_apply(float *restrict y, const float *restrict a, const float *restrict b,
                        const bcast_plan *pl, int op) {
    const ptrdiff_t inner = pl->inner;
#pragma omp parallel for schedule(static) if (pl->rows > 1 && pl->total >= TN_OMP_MIN_WORK)
    for (ptrdiff_t r = 0; r < pl->rows; r++) {
        const float *restrict ar = a + r * inner;
        float *restrict yr = y + r * inner;
        const float *restrict br = b + bcast_row_offset(pl, r);
        if (pl->inner_bcast) {
            const float v = br[0];
            if (op == OP_ADD)
                for (ptrdiff_t j = 0; j < inner; j++) yr[j] = ar[j] + v;
            else
                for (ptrdiff_t j = 0; j < inner; j++) yr[j] = ar[j] * v;
        } else {
            if (op == OP_ADD)
                for (ptrdiff_t j = 0; j < inner; j++) yr[j] = ar[j] + br[j];
            else
                for (ptrdiff_t j = 0; j < inner; j++) yr[j] = ar[j] * br[j];
        }
    }
}

// db (b's shape, +=) = sum over the broadcast dims of dy (* a when a != NULL).
// Sums are in double, in a fixed order for any thread count. Two layouts:
// - inner run is broadcast: each row reduces to one value; rows are summed
//   in parallel into a per-row buffer, then added into db serially (rows with
//   the same b offset would race);
// - inner run is full: threads split the inner run into column blocks, and
//   each owns its columns of a double copy of db across all rows.
#define BCAST_COL_BLOCK 512
static int bcast_reduce(float *restrict db, const float *restrict dy, const float *restrict a,
                        const bcast_plan *pl) {
    const ptrdiff_t inner = pl->inner, rows = pl->rows;
    const int threaded = pl->total >= TN_OMP_MIN_WORK;
    if (pl->nb == pl->total) {  // no broadcast at all: elementwise
#pragma omp parallel for simd schedule(static) if (parallel : threaded)
        for (ptrdiff_t i = 0; i < pl->total; i++) db[i] += a ? dy[i] * a[i] : dy[i];
        return TN_OK;
    }
    if (pl->inner_bcast) {
        double *rowsum = malloc(sizeof(double) * (size_t)rows);
        if (!rowsum) return TN_ENOMEM;
#pragma omp parallel for schedule(static) if (threaded && rows > 1)
        for (ptrdiff_t r = 0; r < rows; r++) {
            const float *restrict g = dy + r * inner;
            double s = 0.0;
            if (a) {
                const float *restrict ar = a + r * inner;
#pragma omp simd reduction(+ : s)
                for (ptrdiff_t j = 0; j < inner; j++) s += (double)g[j] * (double)ar[j];
            } else {
#pragma omp simd reduction(+ : s)
                for (ptrdiff_t j = 0; j < inner; j++) s += g[j];
            }
            rowsum[r] = s;
        }
        // b has at most `rows` distinct offsets; accumulate in double first.
        double *acc = calloc((size_t)pl->nb, sizeof(double));
        if (!acc) {
            free(rowsum);
            return TN_ENOMEM;
        }
        for (ptrdiff_t r = 0; r < rows; r++) acc[bcast_row_offset(pl, r)] += rowsum[r];
        for (ptrdiff_t i = 0; i < pl->nb; i++) db[i] += (float)acc[i];
        free(acc);
        free(rowsum);
        return TN_OK;
    }
    double *acc = calloc((size_t)pl->nb, sizeof(double));
    if (!acc) return TN_ENOMEM;
    const ptrdiff_t nblocks = (inner + BCAST_COL_BLOCK - 1) / BCAST_COL_BLOCK;
#pragma omp parallel for schedule(static) if (threaded && nblocks > 1)
    for (ptrdiff_t blk = 0; blk < nblocks; blk++) {
        const ptrdiff_t j0 = blk * BCAST_COL_BLOCK;
        const ptrdiff_t j1 = TN_MIN(j0 + BCAST_COL_BLOCK, inner);
        for (ptrdiff_t r = 0; r < rows; r++) {
            double *restrict acr = acc + bcast_row_offset(pl, r);
            const float *restrict g = dy + r * inner;
            if (a) {
                const float *restrict ar = a + r * inner;
                for (ptrdiff_t j = j0; j < j1; j++) acr[j] += (double)g[j] * (double)ar[j];
            } else {
                for (ptrdiff_t j = j0; j < j1; j++) acr[j] += g[j];
            }
        }
    }
#pragma omp parallel for simd schedule(static) if (parallel : threaded)
    for (ptrdiff_t i = 0; i < pl->nb; i++) db[i] += (float)acc[i];
    free(acc);
    return TN_OK;
}

// y and a are a_shape (ndim dims), b is b_shape: y = a + b, b broadcast.
int add_forward(float *y, const float *a, const float *b, int ndim, const ptrdiff_t *a_shape,
                const ptrdiff_t *b_shape) {
    bcast_plan pl;
    bcast_plan_make(&pl, ndim, a_shape, b_shape);
    bcast_apply(y, a, b, &pl, OP_ADD);
    return TN_OK;
}

// y and a are a_shape, b is b_shape: y = a * b, b broadcast.
int mul_forward(float *y, const float *a, const float *b, int ndim, const ptrdiff_t *a_shape,
                const ptrdiff_t *b_shape) {
    bcast_plan pl;
    bcast_plan_make(&pl, ndim, a_shape, b_shape);
    bcast_apply(y, a, b, &pl, OP_MUL);
    return TN_OK;
}

// da and dy are a_shape, db is b_shape (zeroed by the glue, +=):
// da = dy, db = dy summed over b's broadcast dims.
int add_backward(float *restrict da, float *restrict db, const float *restrict dy, int ndim,
                 const ptrdiff_t *a_shape, const ptrdiff_t *b_shape) {
    bcast_plan pl;
    bcast_plan_make(&pl, ndim, a_shape, b_shape);
    memcpy(da, dy, sizeof(float) * (size_t)pl.total);
    return bcast_reduce(db, dy, NULL, &pl);
}

// da, dy, a are a_shape, db and b are b_shape (db zeroed by the glue, +=):
// da = dy * b (broadcast, the same loop as the forward), db = sum(dy * a).
int mul_backward(float *restrict da, float *restrict db, const float *restrict dy,
                 const float *restrict a, const float *restrict b, int ndim,
                 const ptrdiff_t *a_shape, const ptrdiff_t *b_shape) {
    bcast_plan pl;
    bcast_plan_make(&pl, ndim, a_shape, b_shape);
    bcast_apply(da, dy, b, &pl, OP_MUL);
    return bcast_reduce(db, dy, a, &pl);
}
