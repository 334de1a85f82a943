"""TPN benchmarks: anomaly synthesis throughput, TPN training throughput and
memory of the small presets, one-step reconstruction with the TPN for the
paper preset at 256².

    python benchmarks/tpn.py                 # all of it
    python benchmarks/tpn.py --quick         # fewer steps / repetitions
    python benchmarks/tpn.py --texture-dir ~/data/dtd   # also time DTD textures

Training and reconstruction run in their own subprocess each, so the peak
resident memory (VmHWM) is that job's alone. Baselines come from the same
run, since the machines are shared and noisy: TPN training is printed next
to Rectified Flow training of the same preset and batch (`timenet.flow.
train_flow`), and the TPN reconstruction next to the plain one-step of the
same denoiser. The perceptual term is whatever `Perceptual("auto")` finds
(LPIPS with the weight files, else the SSIM fallback), unless --perceptual
says otherwise (lpips-random times the LPIPS path with random weights).
Prints figures, asserts nothing.

RESULTS (same machine and protocol as benchmarks/flow.py's RESULTS:
2-core AVX-512 VM, 2 threads, CPU-only builds of c0fedc8 "before" and of
the cpu-speed head "after" (3 of the 5 runs one commit earlier),
`python benchmarks/tpn.py` alternately, 5 clean runs each; the perceptual
term is the SSIM fallback, no LPIPS weights here). img/s, range over the
runs:

                          before        after     peak RSS before -> after
  TPN train tiny  32² b16  49-56       83-90      231 -> 199-201 MiB  (x1.6)
  TPN train small 64² b8   5.2-5.5     7.3-7.8   1073 -> 875-902     (x1.4)
  paper one-step b1, with TPN   1.81-1.93 s  1.60-1.66 s
  paper one-step b4, with TPN   7.9-8.7 s    6.3-6.9 s
  synthesis (numpy, unchanged): 32² clean 0.5 2000-2300 img/s, 64²
  1080-1200, 256² 110-128

Where a TPN step goes now: tiny, 185 ms: conv2d 59 % (the frozen
denoiser's convs compute no dW), fused GroupNorm+SiLU 14 %, synthesis
8 ms (4 %), the SSIM loss's 1-channel blurs ~7 ms forward and backward
(4 %), AdamW + clipping 1 %, the rest Python and numpy in the tape;
small, 1.1 s: conv2d 67 %, GroupNorm+SiLU 12 %, attention 3 %, Python 13 %
(the tape's numpy adds and copies on 4-12 MB maps, synthesis 9 ms, SSIM
8 ms). A direct (no-GEMM) path for the SSIM's 1-channel convolutions was
tried and was slower than the GEMM one (OpenBLAS's GEMV on 2 threads).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

from common import peak_rss_mib  # noqa: E402  (also puts the repo root on sys.path)

import numpy as np  # noqa: E402


def bench_synthesis(sizes, n, texture_dir=None):
    from timenet.anomaly import Synthesizer
    rows = []
    for src in ([None] + ([texture_dir] if texture_dir else [])):
        for size in sizes:
            x = np.random.default_rng(0).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)
            for clean in (0.5, 0.0):
                synth = Synthesizer(texture_dir=src, clean_fraction=clean)
                synth(x[:2], np.random.default_rng(1))  # warm-up (and the DTD cache's first reads)
                t0 = time.perf_counter()
                synth(x, np.random.default_rng(2))
                dt = time.perf_counter() - t0
                rows.append((("procedural" if src is None else "DTD"), size, clean, n / dt))
    return rows


def _models(preset, num_classes, perceptual):
    import timenet
    from timenet.models import UNet
    from timenet.models.tpn import TPN
    from timenet.timenet_model import TimeNetModel
    timenet.manual_seed(0)
    den = UNet.from_preset(preset, num_classes=num_classes)
    return TimeNetModel(den, TPN.for_denoiser(den))


def child_train(kind, preset, batch, steps, threads, perceptual):
    import timenet
    from timenet import flow
    from timenet.anomaly import Synthesizer
    from timenet.tpn_train import train_tpn
    timenet.set_num_threads(threads)
    model = _models(preset, 15, perceptual)
    S = model.denoiser.config.image_size
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4 * batch, 3, S, S)).astype(np.float32)
    c = np.arange(4 * batch) % 15
    perc_kind = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "tpn":
            from timenet.perceptual import LPIPS, Perceptual, lpips_random_lin
            if perceptual == "lpips-random":   # the LPIPS path's cost, without the files
                from timenet.models.backbones import random_state_dict
                perc = LPIPS(random_state_dict("vgg16"), lpips_random_lin())
                perc_kind = "lpips*"
            else:
                perc = Perceptual(perceptual)
                perc_kind = perc.kind
            kw = dict(perceptual=perc, synthesizer=Synthesizer(), progress=False)
            train_tpn(model, (x, c), steps=1, batch_size=batch, **kw)    # warm-up
            t0 = time.perf_counter()
            train_tpn(model, (x, c), steps=steps, batch_size=batch, seed=1, **kw)
        else:
            den = model.denoiser
            flow.train_flow(den, (x, c), steps=1, batch_size=batch, progress=False)
            t0 = time.perf_counter()
            flow.train_flow(den, (x, c), steps=steps, batch_size=batch, progress=False, seed=1)
    dt = time.perf_counter() - t0
    return {"kind": kind, "preset": preset, "image": S, "batch": batch, "steps": steps,
            "denoiser_params": model.denoiser.num_parameters(),
            "tpn_params": model.tpn.num_parameters(), "perceptual": perc_kind,
            "images_per_s": steps * batch / dt, "rss_mib": peak_rss_mib()}


def child_latency(preset, batch, reps, threads):
    import timenet
    timenet.set_num_threads(threads)
    model = _models(preset, 15, None)
    S = model.denoiser.config.image_size
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, S, S)).astype(np.float32)
    c = np.arange(batch) % 15
    out = {"preset": preset, "image": S, "batch": batch, "reps": reps,
           "denoiser_params": model.denoiser.num_parameters(),
           "tpn_params": model.tpn.num_parameters()}
    for use_tpn in (False, True):
        model.reconstruct(x, c, rng=np.random.default_rng(0), use_tpn=use_tpn)  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.reconstruct(x, c, rng=np.random.default_rng(0), use_tpn=use_tpn)
            times.append(time.perf_counter() - t0)
        out["tpn_s" if use_tpn else "plain_s"] = min(times)
    out["rss_mib"] = peak_rss_mib()
    return out


def run_child(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child"] + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child {args} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--texture-dir", default=None, help="a DTD folder to time as well")
    ap.add_argument("--perceptual", default="auto",
                    choices=("auto", "lpips", "ssim", "none", "lpips-random"),
                    help="the TPN's perceptual term; lpips-random: LPIPS with random VGG/lin "
                         "weights (timing only, printed as lpips*)")
    ap.add_argument("--skip-paper", action="store_true", help="no paper-preset reconstruction")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads is None:
        a.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    if a.child:
        if a.child[0] == "latency":
            _, preset, batch, reps, threads = a.child
            print(json.dumps(child_latency(preset, int(batch), int(reps), int(threads))))
        else:
            kind, preset, batch, steps, threads, perc = a.child
            print(json.dumps(child_train(kind, preset, int(batch), int(steps), int(threads),
                                         perc)))
        return

    import timenet
    print(f"threads: {a.threads} (synthesis is numpy, single-threaded)")
    print("\nanomaly synthesis (DRAEM-style; clean 0.5 = half the images untouched)")
    print(f"{'textures':11} {'image':>6} {'clean':>6} {'img/s':>9}")
    n = 32 if a.quick else 96
    for src, size, clean, ips in bench_synthesis((32, 64, 256), n, a.texture_dir):
        print(f"{src:11} {size:>5}² {clean:>6.1f} {ips:>9.1f}")

    print(f"\nTPN training (Algorithm 2: synthesis + TPN + frozen denoiser, MSE + perceptual; "
          f"15 classes) vs Rectified Flow training, same preset and batch")
    print(f"{'preset':7} {'image':>6} {'batch':>5} {'den. params':>12} {'TPN params':>11} "
          f"{'perceptual':>10} {'TPN img/s':>10} {'flow img/s':>11} {'ratio':>6} "
          f"{'TPN RSS':>9} {'flow RSS':>9}")
    steps = 2 if a.quick else 6
    for preset, batch in [("tiny", 16), ("small", 8)]:
        r = run_child(["tpn", preset, batch, steps, a.threads, a.perceptual])
        f = run_child(["flow", preset, batch, steps, a.threads, a.perceptual])
        print(f"{preset:7} {r['image']:>5}² {batch:>5} {r['denoiser_params']:>12,} "
              f"{r['tpn_params']:>11,} {r['perceptual']:>10} {r['images_per_s']:>10.2f} "
              f"{f['images_per_s']:>11.2f} {r['images_per_s'] / f['images_per_s']:>6.2f} "
              f"{r['rss_mib']:>6.0f} MiB {f['rss_mib']:>6.0f} MiB")

    if a.skip_paper:
        return
    print("\none-step reconstruction, paper preset (no tape): x_t + (1 - T) v(x_t, t, c, "
          "inject=TPN) vs plain x_t + (1 - t) v(x_t, t, c)")
    print(f"{'preset':7} {'image':>6} {'batch':>5} {'den. params':>12} {'TPN params':>11} "
          f"{'plain':>8} {'with TPN':>9} {'ratio':>6} {'peak RSS':>9}")
    for batch in ([1] if a.quick else [1, 4]):
        r = run_child(["latency", "paper", batch, 1 if (a.quick or batch > 1) else 2, a.threads])
        print(f"{'paper':7} {r['image']:>5}² {batch:>5} {r['denoiser_params']:>12,} "
              f"{r['tpn_params']:>11,} {r['plain_s']:>7.2f}s {r['tpn_s']:>8.2f}s "
              f"{r['tpn_s'] / r['plain_s']:>6.2f} {r['rss_mib']:>6.0f} MiB")
    del timenet


if __name__ == "__main__":
    main()
