// Optimizer kernels: AdamW step, global gradient norm, in-place scaling
// (clip_grad_norm = grad_norm + scale_). Element-wise loops, written so the
// compiler vectorises them; OpenMP only above a size where the fork/join
// (about 90 us with sleeping threads, see TN_OMP_MIN_WORK) is paid back.
#include <math.h>

#include "attn.h"
#include "ops.h"

#define OPTIM_PAR_MIN TN_OMP_MIN_WORK  // elements; smaller arrays run on one thread

// p, m, v, g are (n,). torch.optim.AdamW (amsgrad=False, maximize=False),
// as its single-tensor path computes it:
//   p *= 1 - lr*wd
//   m  = lerp(m, g, 1 - b1)           (= b1*m + (1-b1)*g)
//   v  = b2*v + (1-b2)*g*g
//   p -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
// The scalar factors are formed in double (torch does them in Python floats).
// (sqrtf may set errno, so without -fno-math-errno GCC keeps this loop
// scalar; it streams 28 bytes an element and is memory-bound regardless.)
void adamw_step(float *p, float *m, float *v, const float *g, size_t n,
                double lr, double beta1, double beta2, double eps,
                double weight_decay, long long step) {
    const float decay = (float)(1.0 - lr * weight_decay);
    const float w1 = (float)(1.0 - beta1);
    const int lerp_low = w1 < 0.5f;  // torch's lerp switches form at weight 0.5
    const float b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    const float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    const float epsf = (float)eps;
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (nn > OPTIM_PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        float gi = g[i];
        float mi = lerp_low ? m[i] + w1 * (gi - m[i]) : gi - (gi - m[i]) * (1.0f - w1);
        float vi = b2 * v[i] + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + epsf;
        p[i] = p[i] * decay - step_size * (mi / denom);
    }
}

// xs[i] has ns[i] elements. sqrt of the sum of squares, summed in double.
double grad_norm(const float *const *xs, const size_t *ns, int count) {
    double total = 0.0;
    for (int a = 0; a < count; a++) {
        const float *x = xs[a];
        const long long nn = (long long)ns[a];
        double s = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : s) \
    if (parallel : nn > OPTIM_PAR_MIN)
        for (long long i = 0; i < nn; i++) s += (double)x[i] * (double)x[i];
        total += s;
    }
    return sqrt(total);
}

// xs[i] has ns[i] elements; each is multiplied by factor in place.
void scale_inplace(float *const *xs, const size_t *ns, int count, float factor) {
    for (int a = 0; a < count; a++) {
        float *x = xs[a];
        const long long nn = (long long)ns[a];
#pragma omp parallel for simd schedule(static) if (parallel : nn > OPTIM_PAR_MIN)
        for (long long i = 0; i < nn; i++) x[i] *= factor;
    }
}
