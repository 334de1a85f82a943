// Optimizer kernels: AdamW step, global gradient norm, in-place scaling
// (clip_grad_norm = grad_norm + scale_). Element-wise loops, written so the
// compiler vectorises them; OpenMP only above a size where the fork/join
// (about 90 us with sleeping threads, see TN_OMP_MIN_WORK) is paid back.
#include <math.h>
#include <omp.h>
#include <stdlib.h>

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
// (It streams 28 bytes an element: memory-bound once vectorised, which
// needs -fno-math-errno, see setup.py: sqrtf may not set errno.)
typedef struct {
    float decay, w1, b2, w2, step_size, bc2_sqrt, eps;
    int lerp_low;  // torch's lerp switches form at weight 0.5
} adamw_factors;

static adamw_factors adamw_make(double lr, double beta1, double beta2, double eps,
                                double weight_decay, long long step) {
    adamw_factors f;
    f.decay = (float)(1.0 - lr * weight_decay);
    f.w1 = (float)(1.0 - beta1);
    f.lerp_low = f.w1 < 0.5f;
    f.b2 = (float)beta2;
    f.w2 = (float)(1.0 - beta2);
    f.step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    f.bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    f.eps = (float)eps;
    return f;
}

// Elements [lo, hi) of one array. Vectorised: the loop-invariant lerp form
// is hoisted, and sqrtf becomes a vector square root (both correctly
// rounded: the bits of the scalar loop).
static inline void adamw_range(float *restrict p, float *restrict m, float *restrict v,
                               const float *restrict g, long long lo, long long hi,
                               const adamw_factors *f) {
    const float w1 = f->w1, b2 = f->b2, w2 = f->w2, bc2 = f->bc2_sqrt, eps = f->eps;
    const float decay = f->decay, step_size = f->step_size;
#define ADAMW_BODY(MI)                                          \
    for (long long i = lo; i < hi; i++) {                       \
        float gi = g[i];                                        \
        float mi = (MI);                                        \
        float vi = b2 * v[i] + w2 * gi * gi;                    \
        m[i] = mi;                                              \
        v[i] = vi;                                              \
        float denom = sqrtf(vi) / bc2 + eps;                    \
        p[i] = p[i] * decay - step_size * (mi / denom);         \
    }
    if (f->lerp_low)
        ADAMW_BODY(m[i] + w1 * (gi - m[i]))
    else
        ADAMW_BODY(gi - (gi - m[i]) * (1.0f - w1))
#undef ADAMW_BODY
}

void adamw_step(float *p, float *m, float *v, const float *g, size_t n,
                double lr, double beta1, double beta2, double eps,
                double weight_decay, long long step) {
    const adamw_factors f = adamw_make(lr, beta1, beta2, eps, weight_decay, step);
    const long long nn = (long long)n;
    if (nn <= OPTIM_PAR_MIN) {
        adamw_range(p, m, v, g, 0, nn, &f);
        return;
    }
#pragma omp parallel
    {
        // schedule(static)'s split: contiguous runs, the first nn % threads one longer
        long long t = omp_get_num_threads(), id = omp_get_thread_num();
        long long q = nn / t, extra = nn % t;
        long long lo = id * q + (id < extra ? id : extra);
        adamw_range(p, m, v, g, lo, lo + q + (id < extra), &f);
    }
}

// Chunks of this many elements are the work items of adamw_step_multi.
#define ADAMW_CHUNK 16384

int adamw_step_multi(float *const *ps, float *const *ms, float *const *vs,
                     const float *const *gs, const size_t *ns, int count, double lr,
                     double beta1, double beta2, double eps, double weight_decay,
                     long long step) {
    const adamw_factors f = adamw_make(lr, beta1, beta2, eps, weight_decay, step);
    // first[a]: the first item of array a; items of array a are its chunks.
    size_t *first = malloc(sizeof(size_t) * ((size_t)count + 1));
    if (!first) return TN_ENOMEM;
    size_t total = 0;
    first[0] = 0;
    for (int a = 0; a < count; a++) {
        first[a + 1] = first[a] + (ns[a] + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
        total += ns[a];
    }
    const long long items = (long long)first[count];
#pragma omp parallel for schedule(dynamic, 1) if (total > OPTIM_PAR_MIN)
    for (long long it = 0; it < items; it++) {
        int lo = 0, hi = count - 1;  // the array a with first[a] <= it < first[a + 1]
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (first[mid] <= (size_t)it) lo = mid; else hi = mid - 1;
        }
        long long c0 = ((long long)it - (long long)first[lo]) * ADAMW_CHUNK;
        long long c1 = TN_MIN(c0 + ADAMW_CHUNK, (long long)ns[lo]);
        adamw_range(ps[lo], ms[lo], vs[lo], gs[lo], c0, c1, &f);
    }
    free(first);
    return TN_OK;
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
