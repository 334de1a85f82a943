"""Anomaly-scoring benchmark: WideResNet-101-2 features and the whole step.

    python benchmarks/scoring.py                 # 256^2, batch 4, all threads
    python benchmarks/scoring.py --batch 2 --size 256 --threads 1 --arch resnet18

Random weights (no file is needed, none is downloaded): the cost is the same
as with the torchvision weights. Reported, best of a few runs:

- feature extraction, `layer1..3` (the paper's layers; layer4 is never
  computed): images/s and GFLOP/s, FLOPs = 2 * K*C*R*S*P*Q summed over the
  convolutions run (`Backbone.flops`), as a fraction of the register-only FMA
  loop `_core.fma_peak(threads)` measured in the same run (DESIGN.md §5);
- the whole scoring step per image (x1 and x1_hat through the backbone,
  distances, upsampling, F, Gaussian sigma 4, image score), images/s;
- the map kernels alone (everything but the backbone), ms per image.
Nothing here asserts a time.

RESULTS (2-core AVX-512 VM shared with five other build/test jobs, load
average about 3, so the FMA peak itself measured 110-240 GFLOP/s instead of
the 330/660 of a quiet machine; only the ratios within one run mean much):
  wide_resnet101_2, 256^2, batch 4 pairs, layer1..3 = 53.7 GFLOP / image
  2 threads: peak 110.5, features 46.2 GFLOP/s (42 % of peak), 0.86 images/s,
             whole step 0.48 pairs/s, map kernels 10 ms / image (0.5 % of the step)
  1 thread:  peak 237.5, features 111.2 GFLOP/s (47 % of peak), 2.07 images/s,
             whole step 0.71 pairs/s, map kernels 35 ms / image
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import timenet  # noqa: E402
from timenet import _core, scoring  # noqa: E402
from timenet.models import backbones  # noqa: E402


def best(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="wide_resnet101_2", choices=backbones.ARCHS[:-1])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4, help="images per scoring call")
    ap.add_argument("--threads", type=int, default=timenet.get_num_threads())
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    timenet.set_num_threads(args.threads)
    layers = scoring.DEFAULT_LAYERS
    N, S = args.batch, args.size

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = backbones.create(args.arch, weights=None)
    t_load = time.perf_counter() - t0
    peak = _core.fma_peak(args.threads)
    rng = np.random.default_rng(0)
    x1 = rng.uniform(-1, 1, (N, 3, S, S)).astype(np.float32)
    x1_hat = np.clip(x1 + 0.1 * rng.standard_normal(x1.shape), -1, 1).astype(np.float32)
    both = np.concatenate([x1, x1_hat])

    flops = net.flops(S, S, layers)
    t_feat = best(lambda: net.features(both, layers, batch_size=2 * N), args.reps)
    gflops = flops * 2 * N / t_feat / 1e9
    ratios = scoring.estimate_ratios(x1, x1_hat, net, layers, batch_size=N)

    def step():
        maps = scoring.anomaly_map(x1, x1_hat, net, layers, ratios=ratios, batch_size=N)
        return scoring.image_score(maps)
    t_step = best(step, args.reps)

    feats = net.features(both, layers, batch_size=2 * N)

    def maps_only():
        s_p = _core.l2_distance(x1, x1_hat, squared=True)
        s_f = None
        for layer in layers:
            a, b = feats[layer][:N], feats[layer][N:]
            u1 = _core.upsample_bilinear(_core.l2_distance(a, b), S, S)
            u2 = _core.upsample_bilinear(_core.cosine_distance(a, b), S, S)
            t, _ = _core.combine_maps(u1, u2, 7.0, ratios.layers[layer])
            s_f = t if s_f is None else s_f + t
        s, _ = _core.combine_maps(s_p, s_f, 7.0, ratios.pixel)
        return _core.image_score(_core.gaussian_filter(s, 4.0))
    t_maps = best(maps_only, max(3, args.reps))

    print(f"scoring benchmark: {args.arch} (random weights, {net.num_parameters() / 1e6:.1f} M "
          f"folded params, built in {t_load:.1f} s), {S}x{S}, batch {N}, {args.threads} threads")
    print(f"FMA peak ({args.threads} threads)           : {peak:8.1f} GFLOP/s")
    print(f"features {'+'.join(layers)} : {flops / 1e9:8.2f} GFLOP / image")
    print(f"  {2 * N} images (x1 and x1_hat)          : {t_feat:8.3f} s  "
          f"{2 * N / t_feat:6.2f} images/s  {gflops:7.1f} GFLOP/s  "
          f"{gflops / peak:5.1%} of peak")
    print(f"whole scoring step, {N} pairs          : {t_step:8.3f} s  {N / t_step:6.2f} images/s "
          f"(pairs scored per second)")
    print(f"map kernels only (no backbone)        : {t_maps / N * 1e3:8.2f} ms / image "
          f"({t_maps / t_step:5.1%} of the step)")


if __name__ == "__main__":
    main()
