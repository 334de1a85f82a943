// The argument specs of the scoring ops, shared by their CPU glue
// (py_score.c, lenient numpy input) and CUDA glue (py_cuda_score.c,
// DeviceArrays): one parse, one set of checks and messages (py_args.h).
#ifndef TIMENET_PY_SCORE_H
#define TIMENET_PY_SCORE_H

#include "py_args.h"
#include "score/score.h"

// The parsed arguments of one scoring op (each op fills the fields it has).
typedef struct {
    tn_arg a, b, out;     // inputs (a, b / x / d1, d2) and the output made by the kind
    int64_t N, C, H, W;   // a's sizes: features (N, C, H, W); maps (N, H, W) with C = 1;
                          // combine_maps: N = a's element count
    int64_t OH, OW;       // the output maps' size (upsample_bilinear, box_pool)
    int squared, align_corners, mode, kernel, rounds, compute_ratio;
    double eps, sigma, truncate, w, ratio;
} tn_score_args;

// Each parses the op's Python arguments as the op `op` (the name in
// messages), checks them and makes s->out with `kind`; 0, or -1 with an
// exception set. tn_score_args_clear releases what they took, either way.
int tn_score_parse_distance(tn_score_args *s, PyObject *args, PyObject *kw, int cosine,
                            const char *op, const tn_arg_kind *kind, void *ctx);
int tn_score_parse_upsample(tn_score_args *s, PyObject *args, PyObject *kw, const char *op,
                            const tn_arg_kind *kind, void *ctx);
int tn_score_parse_gaussian(tn_score_args *s, PyObject *args, PyObject *kw, const char *op,
                            const tn_arg_kind *kind, void *ctx);
// box_pool, or image_score with image_max (out is then (N,)).
int tn_score_parse_pool(tn_score_args *s, PyObject *args, PyObject *kw, int image_max,
                        const char *op, const tn_arg_kind *kind, void *ctx);
int tn_score_parse_combine(tn_score_args *s, PyObject *args, PyObject *kw, const char *op,
                           const tn_arg_kind *kind, void *ctx);
void tn_score_args_clear(tn_score_args *s);

// tn_arg_result for s->out, then releases s.
PyObject *tn_score_finish(tn_score_args *s, int status, const char *op,
                          PyObject *(*raise)(int status, const char *op));

#endif
