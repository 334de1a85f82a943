// Generic strided kernels (binary ops with numpy broadcasting, scalar ops,
// fill, strided copy / add, sum over axes) that the autograd layer builds
// reshape-free Tensor arithmetic, permute, slicing and broadcast_to from;
// and the engine's add/mul-with-broadcast, concat ops on top of them.
//
// Naming as in ggml: <name>_f32 is the kernel, <name>_f32_cuda its launcher
// (grid, stream), tn_cuda_<op> the extern "C" op entry.
//
// Index arithmetic: a logical shape of up to TN_CUDA_MAXDIM dims with one
// stride array per operand (elements; 0 broadcasts, negative steps allowed).
// Before launching, size-1 dims are dropped and neighbours that are
// contiguous in every operand merged, so the common cases (same-shape
// contiguous, a bias broadcast over N and H*W) cost one or two divisions per
// element.
#include "common.cuh"

#include <string.h>

namespace {

template <int NOPS>
struct Strided {
    int ndim;
    int64_t shape[TN_CUDA_MAXDIM];
    int64_t stride[NOPS][TN_CUDA_MAXDIM];
};

// Drop size-1 dims and merge dims i, i+1 where every operand has
// stride[i] == stride[i+1] * shape[i+1]. Returns the element count.
template <int NOPS>
int64_t collapse(Strided<NOPS> &s, int ndim, const int64_t *shape, const int64_t *const *strides) {
    int nd = 0;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        n *= shape[i];
        if (shape[i] == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; merge && k < NOPS; k++)
            if (s.stride[k][nd - 1] != strides[k][i] * shape[i]) merge = false;
        if (merge) {
            s.shape[nd - 1] *= shape[i];
            for (int k = 0; k < NOPS; k++) s.stride[k][nd - 1] = strides[k][i];
        } else {
            s.shape[nd] = shape[i];
            for (int k = 0; k < NOPS; k++) s.stride[k][nd] = strides[k][i];
            nd++;
        }
    }
    if (nd == 0) {  // a single element
        s.shape[0] = 1;
        for (int k = 0; k < NOPS; k++) s.stride[k][0] = 0;
        nd = 1;
    }
    s.ndim = nd;
    return n;
}

template <int NOPS>
__device__ __forceinline__ void offsets(const Strided<NOPS> &s, int64_t i, int64_t *off) {
    for (int k = 0; k < NOPS; k++) off[k] = 0;
    for (int d = s.ndim - 1; d >= 0; d--) {
        const int64_t n = s.shape[d];
        const int64_t q = i / n, r = i - q * n;
        for (int k = 0; k < NOPS; k++) off[k] += r * s.stride[k][d];
        i = q;
    }
}

void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t run = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = run;
        run *= shape[i];
    }
}

// ---- binary -----------------------------------------------------------------

template <int OP>
__device__ __forceinline__ float apply(float a, float b) {
    if (OP == TN_CUDA_ADD) return a + b;
    if (OP == TN_CUDA_SUB) return a - b;
    if (OP == TN_CUDA_MUL) return a * b;
    return a / b;
}

template <int OP>
__global__ void binary_f32(float *__restrict__ y, const float *__restrict__ a,
                           const float *__restrict__ b, Strided<2> s, int64_t n) {
    TN_GRID_LOOP(i, n) {
        int64_t off[2];
        offsets<2>(s, i, off);
        y[i] = apply<OP>(a[off[0]], b[off[1]]);
    }
}

template <int OP>
__global__ void binary_contig_f32(float *__restrict__ y, const float *__restrict__ a,
                                  const float *__restrict__ b, int64_t n) {
    TN_GRID_LOOP(i, n) y[i] = apply<OP>(a[i], b[i]);
}

template <int OP>
void binary_f32_cuda(float *y, const float *a, const float *b, const Strided<2> &s, int64_t n,
                     cudaStream_t st) {
    if (s.ndim == 1 && s.stride[0][0] == 1 && s.stride[1][0] == 1)
        binary_contig_f32<OP><<<tn_blocks(n), TN_THREADS, 0, st>>>(y, a, b, n);
    else
        binary_f32<OP><<<tn_blocks(n), TN_THREADS, 0, st>>>(y, a, b, s, n);
}

// ---- scalar, fill -------------------------------------------------------------

template <int OP>
__global__ void scalar_f32(float *__restrict__ y, const float *__restrict__ x, float s,
                           int64_t n) {
    TN_GRID_LOOP(i, n) {
        const float v = x[i];
        y[i] = OP == TN_CUDA_SCALAR_ADD ? v + s
             : OP == TN_CUDA_SCALAR_MUL ? v * s
             : OP == TN_CUDA_SCALAR_RDIV ? s / v
                                         : s - v;
    }
}

__global__ void fill_f32(float *__restrict__ y, float v, int64_t n) {
    TN_GRID_LOOP(i, n) y[i] = v;
}

// ---- strided copy / add -------------------------------------------------------

__global__ void strided_copy_f32(float *__restrict__ y, const float *__restrict__ x,
                                 Strided<1> s, int64_t n) {
    TN_GRID_LOOP(i, n) {
        int64_t off;
        offsets<1>(s, i, &off);
        y[i] = x[off];
    }
}

__global__ void strided_add_f32(float *__restrict__ y, const float *__restrict__ x,
                                Strided<1> s, int64_t n) {
    TN_GRID_LOOP(i, n) {
        int64_t off;
        offsets<1>(s, i, &off);
        y[off] += x[i];
    }
}

// ---- sum over axes --------------------------------------------------------------
// x is split into kept dims (the output's, row-major) and reduced dims; both
// index sets are collapsed separately. Two layouts:
// - thread per output, the reduction serial: when the output's innermost dim
//   is x's innermost (neighbouring threads read neighbouring addresses), or
//   the reduction is short;
// - `splits` blocks per output, each a strided slice of the reduction summed
//   by the block; a second kernel adds the splits of each output in order.
// Accumulation in double, fixed order: deterministic.

__global__ void sum_rows_serial_f32(float *__restrict__ y, const float *__restrict__ x,
                                    const float *__restrict__ x2, Strided<1> kept,
                                    Strided<1> red, int64_t n_out, int64_t n_red) {
    TN_GRID_LOOP(o, n_out) {
        int64_t base;
        offsets<1>(kept, o, &base);
        double acc = 0.0;
        for (int64_t r = 0; r < n_red; r++) {
            int64_t off;
            offsets<1>(red, r, &off);
            const double v = x[base + off];
            acc += x2 ? v * (double)x2[base + off] : v;
        }
        y[o] = (float)acc;
    }
}

__global__ void sum_split_f64(double *__restrict__ part, const float *__restrict__ x,
                              const float *__restrict__ x2, Strided<1> kept, Strided<1> red,
                              int64_t n_red, int splits) {
    const int64_t o = blockIdx.x / splits;
    const int split = blockIdx.x % splits;
    int64_t base;
    offsets<1>(kept, o, &base);
    double acc = 0.0;
    for (int64_t r = (int64_t)split * blockDim.x + threadIdx.x; r < n_red;
         r += (int64_t)splits * blockDim.x) {
        int64_t off;
        offsets<1>(red, r, &off);
        const double v = x[base + off];
        acc += x2 ? v * (double)x2[base + off] : v;
    }
    acc = tn_block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void sum_finish_f32(float *__restrict__ y, const double *__restrict__ part,
                               int64_t n_out, int splits) {
    TN_GRID_LOOP(o, n_out) {
        double acc = 0.0;
        for (int k = 0; k < splits; k++) acc += part[o * splits + k];
        y[o] = (float)acc;
    }
}

int sum_f32_cuda(float *y, const float *x, const float *x2, int ndim, const int64_t *shape,
                 const int *reduce, cudaStream_t st) {
    int64_t xs[TN_CUDA_MAXDIM];
    contiguous_strides(ndim, shape, xs);
    int64_t kshape[TN_CUDA_MAXDIM], kstr[TN_CUDA_MAXDIM], rshape[TN_CUDA_MAXDIM],
        rstr[TN_CUDA_MAXDIM];
    int nk = 0, nr = 0;
    for (int i = 0; i < ndim; i++) {
        if (reduce[i]) {
            rshape[nr] = shape[i];
            rstr[nr++] = xs[i];
        } else {
            kshape[nk] = shape[i];
            kstr[nk++] = xs[i];
        }
    }
    Strided<1> kept, red;
    const int64_t *kp = kstr, *rp = rstr;
    const int64_t n_out = collapse<1>(kept, nk, kshape, &kp);
    const int64_t n_red = collapse<1>(red, nr, rshape, &rp);
    if (n_out == 0) return TN_OK;
    if (n_red == 0) {
        fill_f32<<<tn_blocks(n_out), TN_THREADS, 0, st>>>(y, 0.0f, n_out);
        TN_LAUNCH_CHECK();
        return TN_OK;
    }
    // Neighbouring outputs read neighbouring addresses exactly when the kept
    // dims' innermost (collapsed, so size-1 dims are ignored) has stride 1.
    const bool inner_kept = kept.stride[0][kept.ndim - 1] == 1;
    if (n_red <= 32 || (inner_kept && n_out >= 1024)) {
        sum_rows_serial_f32<<<tn_blocks(n_out), TN_THREADS, 0, st>>>(y, x, x2, kept, red, n_out,
                                                                     n_red);
        TN_LAUNCH_CHECK();
        return TN_OK;
    }
    // Enough blocks to fill the GPU even for one output, at least 16
    // elements a thread, at most 65536 blocks in all.
    int64_t splits = n_red / (TN_THREADS * 16);
    if (splits < 1) splits = 1;
    if (splits > 1024) splits = 1024;
    while (splits > 1 && n_out * splits > 65536) splits /= 2;
    if (n_out > 65536 * 16) {  // very many outputs: serial per output is fine
        sum_rows_serial_f32<<<tn_blocks(n_out), TN_THREADS, 0, st>>>(y, x, x2, kept, red, n_out,
                                                                     n_red);
        TN_LAUNCH_CHECK();
        return TN_OK;
    }
    TnBuffer part;
    TN_TRY(part.alloc(sizeof(double) * (size_t)(n_out * splits)));
    sum_split_f64<<<(unsigned)(n_out * splits), TN_THREADS, 0, st>>>(part.as<double>(), x, x2,
                                                                      kept, red, n_red,
                                                                      (int)splits);
    TN_LAUNCH_CHECK();
    sum_finish_f32<<<tn_blocks(n_out), TN_THREADS, 0, st>>>(y, part.as<double>(), n_out,
                                                            (int)splits);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

int binary_dispatch(float *y, const float *a, const float *b, int op, int ndim,
                    const int64_t *shape, const int64_t *as, const int64_t *bs, cudaStream_t st) {
    Strided<2> s;
    const int64_t *strides[2] = {as, bs};
    const int64_t n = collapse<2>(s, ndim, shape, strides);
    if (n == 0) return TN_OK;
    switch (op) {
    case TN_CUDA_ADD: binary_f32_cuda<TN_CUDA_ADD>(y, a, b, s, n, st); break;
    case TN_CUDA_SUB: binary_f32_cuda<TN_CUDA_SUB>(y, a, b, s, n, st); break;
    case TN_CUDA_MUL: binary_f32_cuda<TN_CUDA_MUL>(y, a, b, s, n, st); break;
    case TN_CUDA_DIV: binary_f32_cuda<TN_CUDA_DIV>(y, a, b, s, n, st); break;
    default: return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "binary", "unknown op");
    }
    TN_LAUNCH_CHECK();
    return TN_OK;
}

// b's strides when broadcast against a (same ndim, each dim equal or 1).
void bcast_strides(int ndim, const int64_t *a_shape, const int64_t *b_shape, int64_t *bs) {
    contiguous_strides(ndim, b_shape, bs);
    for (int i = 0; i < ndim; i++)
        if (b_shape[i] == 1 && a_shape[i] != 1) bs[i] = 0;
}

// The strided entries index fixed TN_CUDA_MAXDIM arrays (host and kernel
// parameters): more dims would overrun them, not merely fail.
int ew_check_ndim(int ndim, const char *op) {
    if (ndim < 0 || ndim > TN_CUDA_MAXDIM)
        return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, op,
                            "ndim must be in [0, TN_CUDA_MAXDIM]");
    return TN_OK;
}

}  // namespace

// ---------------------------------------------------------------------------
// op entries

extern "C" int tn_cuda_binary(float *y, const float *a, const float *b, int op, int ndim,
                              const int64_t *shape, const int64_t *a_strides,
                              const int64_t *b_strides) {
    TN_TRY(ew_check_ndim(ndim, "binary"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    return binary_dispatch(y, a, b, op, ndim, shape, a_strides, b_strides, st);
}

extern "C" int tn_cuda_scalar(float *y, const float *x, int op, float s, int64_t n) {
    if (n == 0) return TN_OK;
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const unsigned g = tn_blocks(n);
    switch (op) {
    case TN_CUDA_SCALAR_ADD: scalar_f32<TN_CUDA_SCALAR_ADD><<<g, TN_THREADS, 0, st>>>(y, x, s, n); break;
    case TN_CUDA_SCALAR_MUL: scalar_f32<TN_CUDA_SCALAR_MUL><<<g, TN_THREADS, 0, st>>>(y, x, s, n); break;
    case TN_CUDA_SCALAR_RDIV: scalar_f32<TN_CUDA_SCALAR_RDIV><<<g, TN_THREADS, 0, st>>>(y, x, s, n); break;
    case TN_CUDA_SCALAR_RSUB: scalar_f32<TN_CUDA_SCALAR_RSUB><<<g, TN_THREADS, 0, st>>>(y, x, s, n); break;
    default: return tn_cuda_fail(TN_EINVAL, __FILE__, __LINE__, "scalar", "unknown op");
    }
    TN_LAUNCH_CHECK();
    return TN_OK;
}

extern "C" int tn_cuda_fill(float *y, float value, int64_t n) {
    if (n == 0) return TN_OK;
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    fill_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(y, value, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

extern "C" int tn_cuda_strided_copy(float *y, const float *x, int ndim, const int64_t *shape,
                                    const int64_t *strides, int64_t offset) {
    TN_TRY(ew_check_ndim(ndim, "strided_copy"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    Strided<1> s;
    const int64_t n = collapse<1>(s, ndim, shape, &strides);
    if (n == 0) return TN_OK;
    if (s.ndim == 1 && s.stride[0][0] == 1) {
        TN_CUDA_CHECK(cudaMemcpyAsync(y, x + offset, sizeof(float) * (size_t)n,
                                      cudaMemcpyDeviceToDevice, st));
        return TN_OK;
    }
    strided_copy_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(y, x + offset, s, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

extern "C" int tn_cuda_strided_add(float *y, const float *x, int ndim, const int64_t *shape,
                                   const int64_t *strides, int64_t offset) {
    TN_TRY(ew_check_ndim(ndim, "strided_add"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    Strided<1> s;
    const int64_t n = collapse<1>(s, ndim, shape, &strides);
    if (n == 0) return TN_OK;
    strided_add_f32<<<tn_blocks(n), TN_THREADS, 0, st>>>(y + offset, x, s, n);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

extern "C" int tn_cuda_sum(float *y, const float *x, const float *x2, int ndim,
                           const int64_t *shape, const int *reduce) {
    TN_TRY(ew_check_ndim(ndim, "sum"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    return sum_f32_cuda(y, x, x2, ndim, shape, reduce, st);
}

// y and a are a_shape (ndim dims), b is b_shape (each dim a's or 1): y = a + b.
extern "C" int tn_cuda_add_forward(float *y, const float *a, const float *b, int ndim,
                                   const int64_t *a_shape, const int64_t *b_shape) {
    TN_TRY(ew_check_ndim(ndim, "add_forward"));
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    contiguous_strides(ndim, a_shape, as);
    bcast_strides(ndim, a_shape, b_shape, bs);
    return tn_cuda_binary(y, a, b, TN_CUDA_ADD, ndim, a_shape, as, bs);
}

// y and a are a_shape, b is b_shape: y = a * b.
extern "C" int tn_cuda_mul_forward(float *y, const float *a, const float *b, int ndim,
                                   const int64_t *a_shape, const int64_t *b_shape) {
    TN_TRY(ew_check_ndim(ndim, "mul_forward"));
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    contiguous_strides(ndim, a_shape, as);
    bcast_strides(ndim, a_shape, b_shape, bs);
    return tn_cuda_binary(y, a, b, TN_CUDA_MUL, ndim, a_shape, as, bs);
}

// The dims b is broadcast over (reduced by the backward).
static void bcast_reduce_dims(int ndim, const int64_t *a_shape, const int64_t *b_shape,
                              int *reduce) {
    for (int i = 0; i < ndim; i++) reduce[i] = b_shape[i] == 1 && a_shape[i] != 1;
}

// da and dy are a_shape, db is b_shape (written): da = dy, db = dy summed
// over b's broadcast dims.
extern "C" int tn_cuda_add_backward(float *da, float *db, const float *dy, int ndim,
                                    const int64_t *a_shape, const int64_t *b_shape) {
    TN_TRY(ew_check_ndim(ndim, "add_backward"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= a_shape[i];
    TN_CUDA_CHECK(cudaMemcpyAsync(da, dy, sizeof(float) * (size_t)n, cudaMemcpyDeviceToDevice,
                                  st));
    int reduce[TN_CUDA_MAXDIM];
    bcast_reduce_dims(ndim, a_shape, b_shape, reduce);
    return sum_f32_cuda(db, dy, nullptr, ndim, a_shape, reduce, st);
}

// da, dy, a are a_shape, db and b are b_shape (written): da = dy * b
// (broadcast), db = sum of dy * a over b's broadcast dims.
extern "C" int tn_cuda_mul_backward(float *da, float *db, const float *dy, const float *a,
                                    const float *b, int ndim, const int64_t *a_shape,
                                    const int64_t *b_shape) {
    TN_TRY(ew_check_ndim(ndim, "mul_backward"));
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    int64_t as[TN_CUDA_MAXDIM], bs[TN_CUDA_MAXDIM];
    contiguous_strides(ndim, a_shape, as);
    bcast_strides(ndim, a_shape, b_shape, bs);
    TN_TRY(binary_dispatch(da, dy, b, TN_CUDA_MUL, ndim, a_shape, as, bs, st));
    int reduce[TN_CUDA_MAXDIM];
    bcast_reduce_dims(ndim, a_shape, b_shape, reduce);
    return sum_f32_cuda(db, dy, a, ndim, a_shape, reduce, st);
}

// ---------------------------------------------------------------------------
// concat along dim 1: per sample n, y[n] is the inputs' blocks xs[i][n]
// (sizes[i] floats each) end to end; total = sum sizes[i]. One 2-D copy
// (N rows) per input.

extern "C" int tn_cuda_concat_forward(float *y, const float *const *xs, const int64_t *sizes,
                                      int n_inputs, int N, int64_t total) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    int64_t off = 0;
    for (int i = 0; i < n_inputs; i++) {
        TN_CUDA_CHECK(cudaMemcpy2DAsync(y + off, sizeof(float) * (size_t)total, xs[i],
                                        sizeof(float) * (size_t)sizes[i],
                                        sizeof(float) * (size_t)sizes[i], (size_t)N,
                                        cudaMemcpyDeviceToDevice, st));
        off += sizes[i];
    }
    return TN_OK;
}

// dxs[i] is (N, sizes[i]), dy is (N, total): the inverse split.
extern "C" int tn_cuda_concat_backward(float *const *dxs, const float *dy, const int64_t *sizes,
                                       int n_inputs, int N, int64_t total) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    int64_t off = 0;
    for (int i = 0; i < n_inputs; i++) {
        TN_CUDA_CHECK(cudaMemcpy2DAsync(dxs[i], sizeof(float) * (size_t)sizes[i], dy + off,
                                        sizeof(float) * (size_t)total,
                                        sizeof(float) * (size_t)sizes[i], (size_t)N,
                                        cudaMemcpyDeviceToDevice, st));
        off += sizes[i];
    }
    return TN_OK;
}
