// Glue for the scoring ops on CUDA arrays (csrc/cuda/score.cu): cuda_<op>
// takes exactly the CPU op's arguments, parsed and checked by the CPU op's
// own spec (py_score.h) with DeviceArrays for its arrays, so a bad input
// raises what the CPU op raises, before anything reaches the GPU. Results
// are DeviceArrays where the CPU op returns float32 arrays; combine_maps'
// ratio is a Python float. Each op reads one small flag back (NaN / inf in
// an input is the CPU's ValueError), so it returns once its kernels ran.
#include "py_cuda.h"

#ifdef TN_HAVE_CUDA

#include "py_score.h"

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

// NaN / inf, and F's coefficient beyond float range, are the CPU op's
// ValueError with its message; CUDA failures carry their own.
static PyObject *score_raise(int status, const char *op) {
    return status == TN_ENAN || status == TN_EINVAL ? tn_error(status, op)
                                                     : tn_cuda_raise(status, op);
}

static PyObject *distance(PyObject *args, PyObject *kw, int cosine) {
    const char *op = cosine ? "cuda_cosine_distance" : "cuda_l2_distance";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_distance(&s, args, kw, cosine, op, &tn_cuda_f32, &ctx) == 0) {
        const int64_t L = s.H * s.W;
        TN_CUDA_RUN(
            st, ctx.dev,
            cosine ? tn_cuda_cosine_distance(s.out.data, s.a.data, s.b.data, s.N, s.C, L, s.eps)
                   : tn_cuda_l2_distance(s.out.data, s.a.data, s.b.data, s.N, s.C, L, s.squared));
    }
    return tn_score_finish(&s, st, op, score_raise);
}

static PyObject *py_l2_distance(PyObject *self, PyObject *args, PyObject *kw) {
    return distance(args, kw, 0);
}

static PyObject *py_cosine_distance(PyObject *self, PyObject *args, PyObject *kw) {
    return distance(args, kw, 1);
}

static PyObject *py_upsample_bilinear(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "cuda_upsample_bilinear";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_upsample(&s, args, kw, op, &tn_cuda_f32, &ctx) == 0)
        TN_CUDA_RUN(st, ctx.dev,
                    tn_cuda_upsample_bilinear(s.out.data, s.a.data, s.N, s.H, s.W, s.OH, s.OW,
                                              s.align_corners));
    return tn_score_finish(&s, st, op, score_raise);
}

static PyObject *py_gaussian_filter(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "cuda_gaussian_filter";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_gaussian(&s, args, kw, op, &tn_cuda_f32, &ctx) == 0)
        TN_CUDA_RUN(st, ctx.dev,
                    tn_cuda_gaussian_filter(s.out.data, s.a.data, s.N, s.H, s.W, s.sigma,
                                            s.truncate, s.mode));
    return tn_score_finish(&s, st, op, score_raise);
}

// box_pool, or image_score with image_max
static PyObject *pool(PyObject *args, PyObject *kw, int image_max) {
    const char *op = image_max ? "cuda_image_score" : "cuda_box_pool";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_pool(&s, args, kw, image_max, op, &tn_cuda_f32, &ctx) == 0)
        TN_CUDA_RUN(st, ctx.dev, image_max
                     ? tn_cuda_image_score(s.out.data, s.a.data, s.N, s.H, s.W, s.kernel, s.rounds)
                     : tn_cuda_box_pool(s.out.data, s.a.data, s.N, s.H, s.W, s.kernel, s.rounds));
    return tn_score_finish(&s, st, op, score_raise);
}

static PyObject *py_box_pool(PyObject *self, PyObject *args, PyObject *kw) {
    return pool(args, kw, 0);
}

static PyObject *py_image_score(PyObject *self, PyObject *args, PyObject *kw) {
    return pool(args, kw, 1);
}

static PyObject *py_combine_maps(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "cuda_combine_maps";
    tn_devctx ctx = TN_DEVCTX_INIT;
    tn_score_args s;
    int st = TN_NOT_PARSED;
    double used = 0;
    if (tn_score_parse_combine(&s, args, kw, op, &tn_cuda_f32, &ctx) == 0)
        TN_CUDA_RUN(st, ctx.dev,
                    tn_cuda_combine_maps(s.out.data, &used, s.a.data, s.b.data, s.N, s.w, s.ratio,
                                         s.compute_ratio));
    PyObject *out = tn_score_finish(&s, st, op, score_raise);
    return out ? Py_BuildValue("Nd", out, used) : NULL;
}

PyMethodDef tn_cuda_score_methods[] = {
    {"cuda_l2_distance", FN(py_l2_distance), KW,
     "cuda_l2_distance(a, b, squared=False)\n--\n\nl2_distance on CUDA arrays."},
    {"cuda_cosine_distance", FN(py_cosine_distance), KW,
     "cuda_cosine_distance(a, b, eps=1e-8)\n--\n\ncosine_distance on CUDA arrays."},
    {"cuda_upsample_bilinear", FN(py_upsample_bilinear), KW,
     "cuda_upsample_bilinear(x, H, W, align_corners=False)\n--\n\n"
     "upsample_bilinear on CUDA arrays."},
    {"cuda_gaussian_filter", FN(py_gaussian_filter), KW,
     "cuda_gaussian_filter(x, sigma, truncate=4.0, mode='reflect')\n--\n\n"
     "gaussian_filter on CUDA arrays (the CPU's taps)."},
    {"cuda_box_pool", FN(py_box_pool), KW,
     "cuda_box_pool(x, kernel=8, rounds=8)\n--\n\nbox_pool on CUDA arrays."},
    {"cuda_image_score", FN(py_image_score), KW,
     "cuda_image_score(x, kernel=8, rounds=8)\n--\n\n"
     "image_score on CUDA arrays: a (N,) float32 CUDA array."},
    {"cuda_combine_maps", FN(py_combine_maps), KW,
     "cuda_combine_maps(d1, d2, w, ratio=None)\n--\n\n"
     "combine_maps on CUDA arrays: (out CUDA array, ratio float)."},
    {NULL, NULL, 0, NULL},
};

#else  // CPU-only build: no CUDA scoring ops

PyMethodDef tn_cuda_score_methods[] = {
    {NULL, NULL, 0, NULL},
};

#endif
