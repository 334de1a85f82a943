// Anomaly-scoring kernels (DESIGN.md §1.7): per-position feature distances,
// bilinear upsampling, the Gaussian filter, DiAD's repeated box pooling and
// DDAD's map combination F. Pure C, no Python; batched over the leading N,
// threaded with OpenMP. Outputs first, then inputs, then sizes (llm.c).
//
// Every kernel rejects NaN / inf in its inputs with TN_ENAN (the glue raises
// ValueError): a diverged reconstruction must not turn into silently NaN
// scores that only fail later, inside the metrics.
#ifndef TIMENET_SCORE_H
#define TIMENET_SCORE_H

#include "common.h"
#include "score/score_index.h"

// 1 when all n values are finite.
int score_all_finite(const float *x, int64_t n);

// distance.c -- a, b are (N, C, L) (L = h*w positions); out is (N, L).
// Euclidean distance over channels, sqrt(sum_c (a - b)^2), or its square when
// `squared` (the pixel-level ||x1 - x1_hat||^2). float64 accumulation.
int score_l2_distance(float *out, const float *a, const float *b, int64_t N, int64_t C,
                      int64_t L, int squared);
// Cosine distance 1 - cos, cos = a.b / (max(|a|, eps) * max(|b|, eps)) as
// torch.nn.functional.cosine_similarity; cos is clamped to [-1, 1], so the
// result is in [0, 2]; a zero vector has cos 0 (distance 1).
int score_cosine_distance(float *out, const float *a, const float *b, int64_t N, int64_t C,
                          int64_t L, double eps);

// upsample.c -- x (N, h, w) -> out (N, H, W), bilinear. align_corners = 0 is
// PyTorch's F.interpolate(mode="bilinear", align_corners=False): source
// coordinate (d + 0.5) * in/out - 0.5, clamped below at 0, neighbours clamped
// to the last row/column. align_corners = 1: d * (in - 1) / (out - 1).
int score_upsample_bilinear(float *out, const float *x, int64_t N, int64_t h, int64_t w,
                            int64_t H, int64_t W, int align_corners);

// gaussian.c -- x (N, H, W) -> out (N, H, W): separable Gaussian filter over
// each (H, W) map, scipy.ndimage.gaussian_filter(x, (0, sigma, sigma),
// mode=..., truncate=truncate): kernel exp(-x^2 / (2 sigma^2)) on
// [-r, r], r = (int)(truncate * sigma + 0.5), normalised to sum 1; sigma
// <= 1e-15 copies (as scipy). out may not alias x. mode: SCORE_REFLECT,
// SCORE_MIRROR or SCORE_NEAREST (score_index.h).
int score_gaussian_filter(float *out, const float *x, int64_t N, int64_t H, int64_t W,
                          double sigma, double truncate, int mode);
// The filter's taps, shared with the CUDA filter so both apply the same
// weights: the radius r = (int)(truncate * sigma + 0.5), or -1 when sigma <=
// 1e-15 (no filtering: a copy); wt (2r + 1,) the normalised Gaussian.
int64_t score_gauss_radius(double sigma, double truncate);
void score_gauss_weights(double *wt, double sigma, int64_t r);

// pool.c -- DiAD's image score reduction: `rounds` times
// avg_pool2d(kernel k, stride 1, no padding), each round shrinking the map
// by k - 1 in both dims, so out is (N, H - rounds*(k-1), W - rounds*(k-1));
// needs H, W > rounds*(k-1) (else TN_EINVAL).
int score_box_pool(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                   int rounds);
// The same, then the max of each pooled map: out is (N,).
int score_image_max(float *out, const float *x, int64_t N, int64_t H, int64_t W, int k,
                    int rounds);

// combine.c -- DDAD's F(d1, d2, w) = (w * ratio) * d1 + d2 over n values,
// ratio = max(d2) / max(d1). With compute_ratio, the ratio is taken over
// these n values (the whole batch: DDAD's per-batch mode); else `ratio` is
// used as given (timenet's stored-ratio mode). A batch with max(d1) <= 0
// (d1 all zero) gets ratio 0: the d1 term is then zero anyway, and w*inf*0
// would be NaN. *ratio_used receives the ratio applied.
int score_combine(float *out, double *ratio_used, const float *d1, const float *d2, int64_t n,
                  double w, double ratio, int compute_ratio);
// The factor F applies to d1, from the maxima m1 = max(d1), m2 = max(d2):
// *ratio = m2 / m1 (0 when m1 <= 0) with compute_ratio, else as given;
// *c = (float)(w * *ratio). TN_EINVAL when w, the ratio or c is not finite.
// Shared with the CUDA combine (whose maxima come from the device).
int score_combine_coeff(float *c, double *ratio, double m1, double m2, double w,
                        int compute_ratio);
// max of n values (n >= 1), float64; TN_ENAN on NaN/inf.
int score_max(double *m, const float *x, int64_t n);

#endif
