// The elementwise / norm / pool family of the CPU engine (pure C, no Python).
// One <op>_forward / <op>_backward pair per op, llm.c style: outputs first,
// then inputs, then sizes. Shapes are documented at each definition; the glue
// (csrc/py_ops.c) has checked every shape before a kernel runs. All kernels
// return a TN_* status (most cannot fail and return TN_OK).
#ifndef TIMENET_CPU_OPS_H
#define TIMENET_CPU_OPS_H

#include "common.h"

// Below this many elements an op runs on one thread. Waking the sleeping
// OpenMP threads (OMP_WAIT_POLICY passive, timenet/_loader.py) costs about
// 90 us a parallel region on the 2-core VM, median over back-to-back calls
// (the kernel's futex wake of an idle vCPU, and the join's): 1 vs 2 threads,
// us, at 131072 / 262144 / 1048576 elements: silu 105 / 260 / 874 vs
// 145 / 188 / 511, group_norm 49 / 109 / 504 vs 100 / 135 / 332, relu
// 13 / 45 / 288 vs 92 / 96 / 201. (At 32768, the old bound: silu 25 vs 92.)
#define TN_OMP_MIN_WORK 262144

// Most dims add/mul broadcasting handles (any practical tensor).
#define TN_BCAST_MAXDIM 8

// norm.c
int group_norm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C, ptrdiff_t S, int G, float eps);
int group_norm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *w, int N, int C,
                        ptrdiff_t S, int G);
// silu(group_norm(x)) fused; mean, rstd (N, G) are float64 here.
int group_norm_silu_forward(float *y, double *mean, double *rstd, const float *x, const float *w,
                            const float *b, int N, int C, ptrdiff_t S, int G, float eps);
int group_norm_silu_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                             const double *mean, const double *rstd, const float *w,
                             const float *b, int N, int C, ptrdiff_t S, int G);

// act.c
int silu_forward(float *y, const float *x, ptrdiff_t n);
int silu_backward(float *dx, const float *dy, const float *x, ptrdiff_t n);
int sigmoid_forward(float *y, const float *x, ptrdiff_t n);
int sigmoid_backward(float *dx, const float *dy, const float *y, ptrdiff_t n);
int relu_forward(float *y, const float *x, ptrdiff_t n);
int relu_backward(float *dx, const float *dy, const float *x, ptrdiff_t n);

// resize.c
int upsample_nearest_forward(float *y, const float *x, int N, int C, int H, int W, int s);
int upsample_nearest_backward(float *dx, const float *dy, int N, int C, int H, int W, int s);

// pool.c
int avg_pool2d_forward(float *y, const float *x, int N, int C, int H, int W, int k,
                       int stride, int pad);
int avg_pool2d_backward(float *dx, const float *dy, int N, int C, int H, int W, int k,
                        int stride, int pad);
int adaptive_avg_pool2d_forward(float *y, const float *x, int N, int C, int H, int W,
                                int OH, int OW);
int adaptive_avg_pool2d_backward(float *dx, const float *dy, int N, int C, int H, int W,
                                 int OH, int OW);
int max_pool2d_forward(float *y, int32_t *argmax, const float *x, int N, int C, int H,
                       int W, int k, int stride, int pad);
int max_pool2d_backward(float *dx, const float *dy, const int32_t *argmax, int N, int C,
                        int H, int W, int P, int Q);

// embed.c
int embedding_forward(float *y, const float *table, const int64_t *ids, int N, int V, int D);
int embedding_backward(float *dtable, const float *dy, const int64_t *ids, int N, int V,
                       int D);
int timestep_embedding_forward(float *y, const float *t, int N, int dim, double max_period);

// elementwise.c
int concat_forward(float *y, const float *const *xs, const ptrdiff_t *sizes, int n_inputs,
                   int N, ptrdiff_t total);
int concat_backward(float *const *dxs, const float *dy, const ptrdiff_t *sizes, int n_inputs,
                    int N, ptrdiff_t total);
int add_forward(float *y, const float *a, const float *b, int ndim, const ptrdiff_t *a_shape,
                const ptrdiff_t *b_shape);
int mul_forward(float *y, const float *a, const float *b, int ndim, const ptrdiff_t *a_shape,
                const ptrdiff_t *b_shape);
int add_backward(float *da, float *db, const float *dy, int ndim, const ptrdiff_t *a_shape,
                 const ptrdiff_t *b_shape);
int mul_backward(float *da, float *db, const float *dy, const float *a, const float *b,
                 int ndim, const ptrdiff_t *a_shape, const ptrdiff_t *b_shape);

// loss.c
int mse_forward(double *loss, const float *x, const float *y, ptrdiff_t n);
int mse_backward(float *dx, const float *x, const float *y, double g, ptrdiff_t n);

#endif
