// Lookup embeddings (nn.Embedding) and the sinusoidal timestep embedding.
#include <math.h>
#include <string.h>

#include "common.h"
#include "ops.h"

// y is (N, D), table is (V, D), ids is (N,) with 0 <= ids[i] < V (the glue
// checks the range before the GIL is released).
int embedding_forward(float *restrict y, const float *restrict table,
                      const int64_t *restrict ids, int N, int V, int D) {
    for (int i = 0; i < N; i++)
        memcpy(y + (ptrdiff_t)i * D, table + (ptrdiff_t)ids[i] * D, sizeof(float) * D);
    return TN_OK;
}

// dtable is (V, D) (zeroed by the glue, accumulated with +=), dy is (N, D),
// ids is (N,). A repeated id adds up. Serial: N is a batch of class ids, and
// rows with the same id would race.
int embedding_backward(float *restrict dtable, const float *restrict dy,
                       const int64_t *restrict ids, int N, int V, int D) {
    for (int i = 0; i < N; i++) {
        float *restrict row = dtable + (ptrdiff_t)ids[i] * D;
        const float *restrict g = dy + (ptrdiff_t)i * D;
        for (int j = 0; j < D; j++) row[j] += g[j];
    }
    return TN_OK;
}

// y is (N, dim), t is (N,). The DDPM reference (Ho et al.'s
// diffusion_utils.get_timestep_embedding, as ported in pytorch_diffusion):
//   half = dim // 2
//   f_j  = exp(-j * log(max_period) / (half - 1)),  j = 0 .. half-1
//   y    = [sin(t f_0), .., sin(t f_{half-1}), cos(t f_0), .., cos(t f_{half-1})]
//   and one zero column appended when dim is odd.
// The frequencies span exactly 1 .. 1/max_period (dividing by half - 1; this
// is also diffusers' get_timestep_embedding with its defaults,
// flip_sin_to_cos=False, downscale_freq_shift=1). The glue requires dim >= 4
// so that half - 1 > 0. Computed in double: t reaches ~1000, where float
// argument reduction of sin/cos would already lose digits.
int timestep_embedding_forward(float *restrict y, const float *restrict t, int N, int dim,
                               double max_period) {
    const int half = dim / 2;
    const double step = log(max_period) / (double)(half - 1);
    for (int i = 0; i < N; i++) {
        float *restrict row = y + (ptrdiff_t)i * dim;
        for (int j = 0; j < half; j++) {
            const double arg = (double)t[i] * exp(-(double)j * step);
            row[j] = (float)sin(arg);
            row[half + j] = (float)cos(arg);
        }
        if (dim & 1) row[dim - 1] = 0.0f;
    }
    return TN_OK;
}
