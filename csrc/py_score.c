// Glue of the scoring family (csrc/score/, DESIGN.md §1.7): feature
// distances, bilinear upsampling, Gaussian filter, box pooling / image score,
// the map combination F. First the argument specs that the CUDA glue shares
// (py_score.h), then the CPU ops. Evaluation-side, so CPU inputs are
// converted leniently (tn_host_any: any real array-like, copied only when
// needed); outputs are fresh float32 arrays. The GIL is released around each
// kernel.
#include "py_score.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

// An input with `ndim` dims (< 0: at least one), none of size zero.
static int take(tn_arg *a, PyObject *obj, const char *op, const char *name, int ndim,
                const char *expect, const tn_arg_kind *kind, void *ctx) {
    if (kind->take(a, obj, op, name, expect, ctx) < 0) return -1;
    int ok = ndim < 0 ? a->ndim >= 1 : a->ndim == ndim;
    for (int i = 0; ok && i < a->ndim; i++) ok = a->dim[i] > 0;
    if (ok) return 0;
    char got[200];
    PyErr_Format(PyExc_ValueError, "%s: %s must be %s with no zero-size dimension, got %s", op,
                 name, expect, tn_arg_describe(a, got, sizeof got));
    return -1;
}

// b must have exactly a's shape.
static int same_shape(const tn_arg *a, const tn_arg *b, const char *op, const char *an,
                      const char *bn) {
    if (a->ndim == b->ndim && !memcmp(a->dim, b->dim, (size_t)a->ndim * sizeof *a->dim))
        return 0;
    char ga[200], gb[200];
    PyErr_Format(PyExc_ValueError, "%s: %s and %s must have the same shape, got %s and %s", op,
                 an, bn, tn_arg_describe(a, ga, sizeof ga), tn_arg_describe(b, gb, sizeof gb));
    return -1;
}

// s->a as maps (N, H, W) (C = 1).
static int take_maps(tn_score_args *s, PyObject *obj, const char *op, const char *expect,
                     const tn_arg_kind *kind, void *ctx) {
    if (take(&s->a, obj, op, "x", 3, expect, kind, ctx) < 0) return -1;
    s->N = s->a.dim[0], s->C = 1, s->H = s->a.dim[1], s->W = s->a.dim[2];
    return 0;
}

// s->out (N, OH, OW).
static int make_maps(tn_score_args *s, int64_t OH, int64_t OW, const tn_arg_kind *kind,
                     void *ctx) {
    const Py_ssize_t dims[3] = {(Py_ssize_t)s->N, (Py_ssize_t)OH, (Py_ssize_t)OW};
    s->OH = OH, s->OW = OW;
    return kind->empty(&s->out, 3, dims, ctx);
}

// a, b (N, C, h, w) -> (N, h, w): l2 (`squared` optional) or cosine (`eps`).
int tn_score_parse_distance(tn_score_args *s, PyObject *args, PyObject *kw, int cosine,
                            const char *op, const tn_arg_kind *kind, void *ctx) {
    static char *kw_l2[] = {"a", "b", "squared", NULL};
    static char *kw_cos[] = {"a", "b", "eps", NULL};
    PyObject *ao, *bo;
    char fmt[64];
    memset(s, 0, sizeof *s);
    s->eps = 1e-8;
    snprintf(fmt, sizeof fmt, cosine ? "OO|d:%s" : "OO|p:%s", op);
    int ok = cosine ? PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_cos, &ao, &bo, &s->eps)
                    : PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_l2, &ao, &bo, &s->squared);
    if (!ok) return -1;
    if (take(&s->a, ao, op, "a", 4, "(N, C, h, w)", kind, ctx) < 0 ||
        take(&s->b, bo, op, "b", 4, "(N, C, h, w)", kind, ctx) < 0 ||
        same_shape(&s->a, &s->b, op, "a", "b") < 0)
        return -1;
    if (!(s->eps >= 0)) {
        tn_errorf(PyExc_ValueError, "%s: eps must be >= 0, got %g", op, s->eps);
        return -1;
    }
    s->N = s->a.dim[0], s->C = s->a.dim[1], s->H = s->a.dim[2], s->W = s->a.dim[3];
    return make_maps(s, s->H, s->W, kind, ctx);
}

// x (N, h, w) -> (N, H, W)
int tn_score_parse_upsample(tn_score_args *s, PyObject *args, PyObject *kw, const char *op,
                            const tn_arg_kind *kind, void *ctx) {
    static char *kwlist[] = {"x", "H", "W", "align_corners", NULL};
    PyObject *xo;
    Py_ssize_t H, W;
    char fmt[64];
    memset(s, 0, sizeof *s);
    snprintf(fmt, sizeof fmt, "Onn|p:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo, &H, &W, &s->align_corners))
        return -1;
    if (H < 1 || W < 1) {
        PyErr_Format(PyExc_ValueError, "%s: output size (H, W) must be >= 1, got (%zd, %zd)", op,
                     H, W);
        return -1;
    }
    if (take_maps(s, xo, op, "(N, h, w)", kind, ctx) < 0) return -1;
    return make_maps(s, H, W, kind, ctx);
}

// x (N, H, W) -> (N, H, W)
int tn_score_parse_gaussian(tn_score_args *s, PyObject *args, PyObject *kw, const char *op,
                            const tn_arg_kind *kind, void *ctx) {
    static char *kwlist[] = {"x", "sigma", "truncate", "mode", NULL};
    PyObject *xo;
    const char *mode_s = "reflect";
    char fmt[64];
    memset(s, 0, sizeof *s);
    s->truncate = 4.0;
    snprintf(fmt, sizeof fmt, "Od|ds:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo, &s->sigma, &s->truncate,
                                     &mode_s))
        return -1;
    if (!strcmp(mode_s, "reflect")) s->mode = SCORE_REFLECT;
    else if (!strcmp(mode_s, "mirror")) s->mode = SCORE_MIRROR;
    else if (!strcmp(mode_s, "nearest")) s->mode = SCORE_NEAREST;
    else {
        PyErr_Format(PyExc_ValueError,
                     "%s: mode must be 'reflect', 'mirror' or 'nearest' (scipy.ndimage names), "
                     "got '%s'", op, mode_s);
        return -1;
    }
    // The radius must stay a small int: a huge sigma would ask for a huge kernel.
    if (!(s->sigma >= 0) || !(s->truncate >= 0) || s->sigma * s->truncate > 1e6) {
        tn_errorf(PyExc_ValueError,
                  "%s: sigma and truncate must be >= 0 with sigma*truncate <= 1e6, got "
                  "sigma %g, truncate %g", op, s->sigma, s->truncate);
        return -1;
    }
    if (take_maps(s, xo, op, "(N, H, W)", kind, ctx) < 0) return -1;
    return make_maps(s, s->H, s->W, kind, ctx);
}

// x (N, H, W) with H, W > rounds*(k-1) -> (N, H - rounds*(k-1), W - ...), or
// (N,) with image_max.
int tn_score_parse_pool(tn_score_args *s, PyObject *args, PyObject *kw, int image_max,
                        const char *op, const tn_arg_kind *kind, void *ctx) {
    static char *kwlist[] = {"x", "kernel", "rounds", NULL};
    PyObject *xo;
    char fmt[64];
    memset(s, 0, sizeof *s);
    s->kernel = 8, s->rounds = 8;
    snprintf(fmt, sizeof fmt, "O|ii:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &xo, &s->kernel, &s->rounds))
        return -1;
    const int k = s->kernel, rounds = s->rounds;
    if (k < 1 || rounds < 0 || k > 1 << 20 || rounds > 1 << 20) {
        PyErr_Format(PyExc_ValueError,
                     "%s: kernel must be >= 1 and rounds >= 0, got kernel %d, rounds %d", op, k,
                     rounds);
        return -1;
    }
    if (take_maps(s, xo, op, "(N, H, W)", kind, ctx) < 0) return -1;
    int64_t shrink = (int64_t)rounds * (k - 1);
    if (s->H <= shrink || s->W <= shrink) {
        char got[200];
        PyErr_Format(PyExc_ValueError,
                     "%s: x must be (N, H, W) with H, W > rounds*(kernel-1) = %lld (%d rounds of "
                     "%dx%d stride-1 pooling without padding shrink the map by %d each), got %s",
                     op, (long long)shrink, rounds, k, k, k - 1,
                     tn_arg_describe(&s->a, got, sizeof got));
        return -1;
    }
    if (!image_max) return make_maps(s, s->H - shrink, s->W - shrink, kind, ctx);
    s->OH = s->H - shrink, s->OW = s->W - shrink;
    const Py_ssize_t n = (Py_ssize_t)s->N;
    return kind->empty(&s->out, 1, &n, ctx);
}

// d1, d2 of one shape -> out of that shape; ratio None: computed.
int tn_score_parse_combine(tn_score_args *s, PyObject *args, PyObject *kw, const char *op,
                           const tn_arg_kind *kind, void *ctx) {
    static char *kwlist[] = {"d1", "d2", "w", "ratio", NULL};
    PyObject *d1o, *d2o, *ratio_o = Py_None;
    char fmt[64];
    memset(s, 0, sizeof *s);
    snprintf(fmt, sizeof fmt, "OOd|O:%s", op);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &d1o, &d2o, &s->w, &ratio_o))
        return -1;
    s->compute_ratio = ratio_o == Py_None;
    if (!s->compute_ratio) {
        s->ratio = PyFloat_AsDouble(ratio_o);
        if (s->ratio == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "%s: ratio must be a float or None, got %s", op,
                         Py_TYPE(ratio_o)->tp_name);
            return -1;
        }
    }
    if (!isfinite(s->w) || !isfinite(s->ratio)) {
        tn_errorf(PyExc_ValueError, "%s: w and ratio must be finite, got w %g, ratio %g", op,
                  s->w, s->ratio);
        return -1;
    }
    if (take(&s->a, d1o, op, "d1", -1, "(any shape)", kind, ctx) < 0 ||
        take(&s->b, d2o, op, "d2", -1, "(any shape)", kind, ctx) < 0 ||
        same_shape(&s->a, &s->b, op, "d1", "d2") < 0)
        return -1;
    s->N = s->a.size;
    return kind->empty(&s->out, s->a.ndim, s->a.dim, ctx);
}

void tn_score_args_clear(tn_score_args *s) {
    tn_arg_clear(&s->a);
    tn_arg_clear(&s->b);
    tn_arg_clear(&s->out);
}

PyObject *tn_score_finish(tn_score_args *s, int status, const char *op,
                          PyObject *(*raise)(int status, const char *op)) {
    PyObject *ret = tn_arg_result(s->out.ref, status, op, raise);
    tn_score_args_clear(s);
    return ret;
}

// ---------------------------------------------------------------------------
// the CPU ops

static PyObject *distance(PyObject *args, PyObject *kw, int cosine) {
    const char *op = cosine ? "cosine_distance" : "l2_distance";
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_distance(&s, args, kw, cosine, op, &tn_host_any, NULL) == 0) {
        const int64_t L = s.H * s.W;
        Py_BEGIN_ALLOW_THREADS
        st = cosine ? score_cosine_distance(s.out.data, s.a.data, s.b.data, s.N, s.C, L, s.eps)
                    : score_l2_distance(s.out.data, s.a.data, s.b.data, s.N, s.C, L, s.squared);
        Py_END_ALLOW_THREADS
    }
    return tn_score_finish(&s, st, op, tn_error);
}

static PyObject *py_l2_distance(PyObject *self, PyObject *args, PyObject *kw) {
    return distance(args, kw, 0);
}

static PyObject *py_cosine_distance(PyObject *self, PyObject *args, PyObject *kw) {
    return distance(args, kw, 1);
}

static PyObject *py_upsample_bilinear(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "upsample_bilinear";
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_upsample(&s, args, kw, op, &tn_host_any, NULL) == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = score_upsample_bilinear(s.out.data, s.a.data, s.N, s.H, s.W, s.OH, s.OW,
                                     s.align_corners);
        Py_END_ALLOW_THREADS
    }
    return tn_score_finish(&s, st, op, tn_error);
}

static PyObject *py_gaussian_filter(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "gaussian_filter";
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_gaussian(&s, args, kw, op, &tn_host_any, NULL) == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = score_gaussian_filter(s.out.data, s.a.data, s.N, s.H, s.W, s.sigma, s.truncate,
                                   s.mode);
        Py_END_ALLOW_THREADS
    }
    return tn_score_finish(&s, st, op, tn_error);
}

// box_pool, or image_score with image_max
static PyObject *pool(PyObject *args, PyObject *kw, int image_max) {
    const char *op = image_max ? "image_score" : "box_pool";
    tn_score_args s;
    int st = TN_NOT_PARSED;
    if (tn_score_parse_pool(&s, args, kw, image_max, op, &tn_host_any, NULL) == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = image_max ? score_image_max(s.out.data, s.a.data, s.N, s.H, s.W, s.kernel, s.rounds)
                       : score_box_pool(s.out.data, s.a.data, s.N, s.H, s.W, s.kernel, s.rounds);
        Py_END_ALLOW_THREADS
    }
    return tn_score_finish(&s, st, op, tn_error);
}

static PyObject *py_box_pool(PyObject *self, PyObject *args, PyObject *kw) {
    return pool(args, kw, 0);
}

static PyObject *py_image_score(PyObject *self, PyObject *args, PyObject *kw) {
    return pool(args, kw, 1);
}

static PyObject *py_combine_maps(PyObject *self, PyObject *args, PyObject *kw) {
    const char *op = "combine_maps";
    tn_score_args s;
    int st = TN_NOT_PARSED;
    double used = 0;
    if (tn_score_parse_combine(&s, args, kw, op, &tn_host_any, NULL) == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = score_combine(s.out.data, &used, s.a.data, s.b.data, s.N, s.w, s.ratio,
                           s.compute_ratio);
        Py_END_ALLOW_THREADS
    }
    PyObject *out = tn_score_finish(&s, st, op, tn_error);
    return out ? Py_BuildValue("Nd", out, used) : NULL;
}

#define KW (PyCFunction)(void (*)(void))

PyMethodDef tn_score_methods[] = {
    {"l2_distance", KW py_l2_distance, METH_VARARGS | METH_KEYWORDS,
     "l2_distance(a, b, squared=False)\n--\n\n"
     "Euclidean distance over channels per position: a, b (N, C, h, w) -> (N, h, w)\n"
     "float32 (squared: the sum of squares). NaN/inf -> ValueError."},
    {"cosine_distance", KW py_cosine_distance, METH_VARARGS | METH_KEYWORDS,
     "cosine_distance(a, b, eps=1e-8)\n--\n\n"
     "1 - cos over channels per position, cos = a.b / (max(|a|, eps) max(|b|, eps))\n"
     "(torch cosine_similarity), clamped to [0, 2]: (N, C, h, w) -> (N, h, w)."},
    {"upsample_bilinear", KW py_upsample_bilinear, METH_VARARGS | METH_KEYWORDS,
     "upsample_bilinear(x, H, W, align_corners=False)\n--\n\n"
     "Bilinear resize (N, h, w) -> (N, H, W), PyTorch F.interpolate(mode='bilinear')\n"
     "with the given align_corners (False: half-pixel centres, PyTorch's default)."},
    {"gaussian_filter", KW py_gaussian_filter, METH_VARARGS | METH_KEYWORDS,
     "gaussian_filter(x, sigma, truncate=4.0, mode='reflect')\n--\n\n"
     "Gaussian filter of each (H, W) map of x (N, H, W), equal to\n"
     "scipy.ndimage.gaussian_filter(x, (0, sigma, sigma), mode=mode, truncate=truncate);\n"
     "radius int(truncate*sigma + 0.5); mode 'reflect', 'mirror' or 'nearest'."},
    {"box_pool", KW py_box_pool, METH_VARARGS | METH_KEYWORDS,
     "box_pool(x, kernel=8, rounds=8)\n--\n\n"
     "`rounds` times avg_pool2d(kernel, stride 1, no padding) of x (N, H, W):\n"
     "-> (N, H - rounds*(kernel-1), W - rounds*(kernel-1))."},
    {"image_score", KW py_image_score, METH_VARARGS | METH_KEYWORDS,
     "image_score(x, kernel=8, rounds=8)\n--\n\n"
     "The max of box_pool(x, kernel, rounds) per map: (N, H, W) -> (N,) float32."},
    {"combine_maps", KW py_combine_maps, METH_VARARGS | METH_KEYWORDS,
     "combine_maps(d1, d2, w, ratio=None)\n--\n\n"
     "F(d1, d2, w) = (w * ratio) * d1 + d2 for d1, d2 of one shape -> (out, ratio).\n"
     "ratio None: max(d2) / max(d1) over the given arrays (0 when max(d1) <= 0)."},
    {NULL, NULL, 0, NULL},
};
