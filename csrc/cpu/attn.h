// Attention and optimizer kernels (attention.c, optim.c). Pure C: no Python.h.
// Outputs first, then inputs, then sizes (llm.c). Kernels that can fail
// return a TN_* status (common.h).
#ifndef TIMENET_ATTN_H
#define TIMENET_ATTN_H

#include <stddef.h>

#include "common.h"

// ---- multi-head scaled dot-product attention (attention.c) ----
// q, k, v, out are (N, L, C) with C = num_heads * d; head h owns channels
// [h*d, (h+1)*d). probs is (N, num_heads, L, L): softmax(q_h k_h^T / sqrt(d))
// along the key axis, written by forward and read by backward.
int attention_forward(float *out, float *probs,
                      const float *q, const float *k, const float *v,
                      int N, int L, int C, int num_heads);
// dq, dk, dv (N, L, C) ACCUMULATE (+=, llm.c style): pass zeroed buffers.
int attention_backward(float *dq, float *dk, float *dv,
                       const float *dout, const float *q, const float *k, const float *v,
                       const float *probs,
                       int N, int L, int C, int num_heads);

// ---- optimizer kernels (optim.c) ----
// One torch.optim.AdamW step on n elements, in place on p, m, v; g is read.
// step is the 1-based step count after this update (bias correction).
void adamw_step(float *p, float *m, float *v, const float *g, size_t n,
                double lr, double beta1, double beta2, double eps,
                double weight_decay, long long step);
// The same step for count arrays at once (ps[i], ms[i], vs[i], gs[i] have
// ns[i] elements), in chunks that the threads share: the same bits as one
// adamw_step per array. Returns TN_OK or TN_ENOMEM.
int adamw_step_multi(float *const *ps, float *const *ms, float *const *vs,
                     const float *const *gs, const size_t *ns, int count, double lr,
                     double beta1, double beta2, double eps, double weight_decay,
                     long long step);
// sqrt(sum_i sum_j xs[i][j]^2), accumulated in double; count arrays,
// xs[i] has ns[i] elements.
double grad_norm(const float *const *xs, const size_t *ns, int count);
// xs[i][j] *= factor for every array, in place.
void scale_inplace(float *const *xs, const size_t *ns, int count, float factor);

#endif
