// Lookup embeddings (nn.Embedding) and the sinusoidal timestep embedding
// (csrc/cpu/embed.c). Device ids are not range-checked on the host (that
// would need a copy back): an id outside [0, V) reads as a zero row and is
// skipped by the backward, so no access is ever out of bounds.
#include "common.cuh"

#include <math.h>

namespace {

// y is (N, D), table (V, D), ids (N,)
__global__ void embedding_forward_f32(float *__restrict__ y, const float *__restrict__ table,
                                      const int64_t *__restrict__ ids, int N, int V, int D) {
    TN_GRID_LOOP(i, (int64_t)N * D) {
        const int64_t r = i / D;
        const int j = (int)(i % D);
        const int64_t id = ids[r];
        y[i] = (id >= 0 && id < V) ? table[id * D + j] : 0.0f;
    }
}

// dtable (V, D), written: row v = the sum of dy[i] over the i with ids[i] == v,
// in order of i (deterministic). A thread per (v, j): N is a batch of ids.
__global__ void embedding_backward_gather_f32(float *__restrict__ dtable,
                                              const float *__restrict__ dy,
                                              const int64_t *__restrict__ ids, int N, int V,
                                              int D) {
    TN_GRID_LOOP(i, (int64_t)V * D) {
        const int64_t v = i / D;
        const int j = (int)(i % D);
        float acc = 0.0f;
        for (int r = 0; r < N; r++)
            if (ids[r] == v) acc += dy[(int64_t)r * D + j];
        dtable[i] = acc;
    }
}

// Many ids: scatter with atomics into a zeroed table.
__global__ void embedding_backward_scatter_f32(float *__restrict__ dtable,
                                               const float *__restrict__ dy,
                                               const int64_t *__restrict__ ids, int N, int V,
                                               int D) {
    TN_GRID_LOOP(i, (int64_t)N * D) {
        const int64_t r = i / D;
        const int j = (int)(i % D);
        const int64_t id = ids[r];
        if (id >= 0 && id < V) atomicAdd(dtable + id * D + j, dy[i]);
    }
}

// y is (N, dim), t (N,): [sin(t f_0..f_{half-1}), cos(...)], f_j =
// exp(-j log(max_period) / (half - 1)), a zero column when dim is odd.
// In double, as the CPU kernel (t reaches ~1000).
__global__ void timestep_embedding_f32(float *__restrict__ y, const float *__restrict__ t,
                                       int N, int dim, double step) {
    const int half = dim / 2;
    TN_GRID_LOOP(i, (int64_t)N * half) {
        const int64_t r = i / half;
        const int j = (int)(i % half);
        const double arg = (double)t[r] * exp(-(double)j * step);
        float *__restrict__ row = y + r * dim;
        row[j] = (float)sin(arg);
        row[half + j] = (float)cos(arg);
        if ((dim & 1) && j == 0) row[dim - 1] = 0.0f;
    }
}

}  // namespace

extern "C" int tn_cuda_embedding_forward(float *y, const float *table, const int64_t *ids,
                                         int N, int V, int D) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    embedding_forward_f32<<<tn_blocks((int64_t)N * D), TN_THREADS, 0, st>>>(y, table, ids, N, V,
                                                                            D);
    TN_LAUNCH_CHECK();
    return TN_OK;
}

extern "C" int tn_cuda_embedding_backward(float *dtable, const float *dy, const int64_t *ids,
                                          int N, int V, int D) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    if ((int64_t)N * V <= ((int64_t)1 << 20)) {
        embedding_backward_gather_f32<<<tn_blocks((int64_t)V * D), TN_THREADS, 0, st>>>(
            dtable, dy, ids, N, V, D);
    } else {
        TN_CUDA_CHECK(cudaMemsetAsync(dtable, 0, sizeof(float) * (size_t)V * (size_t)D, st));
        embedding_backward_scatter_f32<<<tn_blocks((int64_t)N * D), TN_THREADS, 0, st>>>(
            dtable, dy, ids, N, V, D);
    }
    TN_LAUNCH_CHECK();
    return TN_OK;
}

extern "C" int tn_cuda_timestep_embedding_forward(float *y, const float *t, int N, int dim,
                                                  double max_period) {
    cudaStream_t st;
    TN_TRY(tn_cuda_stream(&st));
    const int half = dim / 2;
    const double step = log(max_period) / (double)(half - 1);
    timestep_embedding_f32<<<tn_blocks((int64_t)N * half), TN_THREADS, 0, st>>>(y, t, N, dim,
                                                                                step);
    TN_LAUNCH_CHECK();
    return TN_OK;
}
