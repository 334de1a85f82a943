"""Rectified Flow benchmarks: training throughput and memory of the small
presets, one-step reconstruction latency of the paper's U-Net.

    python benchmarks/flow.py            # tiny + small training, paper at batch 1 and 8
    python benchmarks/flow.py --quick    # fewer steps, paper at batch 1 only

Each measurement runs in its own subprocess, so the peak resident memory
(VmHWM from /proc/self/status) is that job's alone. FLOPs are counted from
the shapes the convolutions, linears and attentions actually see during a
forward (2 per multiply-add); a training step is counted as 3 forwards
(forward, and a backward of about twice its cost). Speeds are printed as
GFLOP/s and as the fraction of the FMA peak `_core.fma_peak(threads)`
measured in the same run: the machines are shared and noisy, so ratios
travel better than absolute numbers. Prints figures, asserts nothing.

RESULTS (2-core AVX-512 VM, OpenBLAS 0.3.34, 2 threads, CPU-only builds
(TIMENET_CUDA=0) of the cpu-speed branch's base c0fedc8 ("before") and of
its head ("after"; 3 of the 5 runs at 8b73215, before the tape's in-place
sums), `python benchmarks/flow.py` run alternately, 5 runs each; no other
process busy during them (sampled every 2 s); FMA peak
361-409 GFLOP/s in these runs). img/s, range over the runs:

                          before        after     peak RSS before -> after
  train tiny  32² b16    90-97      151-156    146 -> 130 MiB   (x1.6)
  train small 64² b8     8.7-9.8    12.7-13.0  611 -> 512-522   (x1.35)
  one-step paper b1      0.89-0.96 s  0.78-0.83 s   359 -> 342
  one-step paper b8      7.8-8.6 s    6.6-7.3 s    1585 -> 1499

The training FLOPs run at 58-62 GFLOP/s (tiny, 14-17 % of the FMA peak)
and 114-118 (small, 28-32 %). Where a step goes now (2 threads, _core
calls timed in the training loop): tiny, 100 ms: conv2d 66 % (backward
48 ms, forward 18), fused GroupNorm+SiLU 12 %, attention / concat / add /
upsample 5 %, AdamW + clipping 1 %, Python and numpy in the tape 13 %;
small, 640 ms: conv2d 72 %, GroupNorm+SiLU 12 %, attention 3 %, the rest
small, Python 9 %. The convolutions are bound by OpenBLAS on GEMMs whose
sides are 16-128 (one thread reaches 65-130 GFLOP/s on them, of ~200)
and, at 32² and 64², by memory traffic.

What changed (one commit each, figures in the messages): glibc keeps
freed memory (page faults cost ~10 us each here: 88 -> 121 img/s tiny on
their own); dW as dW^T for 16 <= K <= 128; dW skipped for frozen
weights; the one-thread paths of the 'parallel for simd' loops
vectorised and threads only from 262144 elements (a parallel region
costs ~90 us with sleeping threads); one parallel region per conv
backward; fused GroupNorm+SiLU; shifted GEMMs on 8² and 16² maps up to
128 channels; one vectorised AdamW call. (Summing gradients in place in
the tape, in 2 of the 5 "after" runs, was left off main: its gain was
within the noise and it decided aliasing by reference counts.) All but the
shifted GEMMs keep the losses bit for bit; those change the
float rounding of the convolutions (3-step losses agree to 9 digits).
GOMP_SPINCOUNT=10000 adds ~19 % to tiny training on an otherwise idle
machine and costs 28 % next to one busy process (timenet/_loader.py).
"""
import argparse
import json
import os
import subprocess
import sys
import time

from common import peak_rss_mib  # noqa: E402  (also puts the repo root on sys.path)

import numpy as np  # noqa: E402


class FlopCounter:
    """Counts the FLOPs of F.conv2d / F.linear / F.multi_head_attention while
    active (the wrappers only look at shapes)."""

    def __init__(self):
        from timenet.nn import functional as F
        self.F, self.flops, self.saved = F, 0, {}

    def __enter__(self):
        F = self.F
        self.saved = {n: getattr(F, n) for n in ("conv2d", "linear", "multi_head_attention")}
        conv, lin, att = (self.saved[n] for n in ("conv2d", "linear", "multi_head_attention"))

        def conv2d(x, w, b=None, stride=1, padding=0):
            y = conv(x, w, b, stride, padding)
            N, K, P, Q = y.shape
            self.flops += 2 * N * K * P * Q * int(np.prod(w.shape[1:]))
            return y

        def linear(x, w, b=None):
            self.flops += 2 * (x.size // x.shape[-1]) * w.shape[0] * w.shape[1]
            return lin(x, w, b)

        def multi_head_attention(q, k, v, num_heads=1):
            N, L, C = q.shape
            self.flops += 4 * N * L * L * C  # q k^T and probs v
            return att(q, k, v, num_heads)

        F.conv2d, F.linear, F.multi_head_attention = conv2d, linear, multi_head_attention
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(self.F, n, f)


def child_train(preset, batch, steps, threads):
    import timenet
    from timenet import flow
    from timenet.models import UNet
    timenet.set_num_threads(threads)
    timenet.manual_seed(0)
    model = UNet.from_preset(preset, num_classes=15)
    S, C = model.config.image_size, model.config.in_channels
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4 * batch, C, S, S)).astype(np.float32)
    c = np.arange(4 * batch) % 15
    with FlopCounter() as fc, timenet.no_grad():
        model(x[:1], 0.5, c[:1])
    fwd_flops = fc.flops  # one image
    flow.train_flow(model, (x, c), steps=1, batch_size=batch, progress=False)  # warm-up
    t0 = time.perf_counter()
    flow.train_flow(model, (x, c), steps=steps, batch_size=batch, progress=False, seed=1)
    dt = time.perf_counter() - t0
    return {"preset": preset, "params": model.num_parameters(), "image": S, "batch": batch,
            "steps": steps, "seconds": dt, "images_per_s": steps * batch / dt,
            "train_gflop_per_image": 3 * fwd_flops / 1e9, "rss_mib": peak_rss_mib()}


def child_latency(preset, batch, reps, threads):
    import timenet
    from timenet import flow
    from timenet.models import UNet
    timenet.set_num_threads(threads)
    timenet.manual_seed(0)
    model = UNet.from_preset(preset, num_classes=15)
    S, C = model.config.image_size, model.config.in_channels
    x = np.random.default_rng(0).uniform(-1, 1, (batch, C, S, S)).astype(np.float32)
    c = np.arange(batch) % 15
    with FlopCounter() as fc:  # the warm-up forward also counts the FLOPs
        flow.one_step(model, x, 0.83, c)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        flow.one_step(model, x, 0.83, c)
        times.append(time.perf_counter() - t0)
    return {"preset": preset, "params": model.num_parameters(), "image": S, "batch": batch,
            "reps": reps, "seconds": min(times), "median_s": float(np.median(times)),
            "gflop": fc.flops / 1e9, "rss_mib": peak_rss_mib()}


def run_child(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child"] + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child {args} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps; paper at batch 1 only")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads is None:
        a.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    if a.child:
        kind, preset, batch, n, threads = a.child
        fn = child_train if kind == "train" else child_latency
        print(json.dumps(fn(preset, int(batch), int(n), int(threads))))
        return

    from timenet._loader import _core
    peak = _core.fma_peak(a.threads)
    print(f"FMA peak, {a.threads} thread(s): {peak:.0f} GFLOP/s (register-only loop, this run)")

    print("\ntraining (Rectified Flow loss, AdamW, grad clip; 15 classes)")
    print(f"{'preset':7} {'params':>10} {'image':>6} {'batch':>5} {'img/s':>8} "
          f"{'GFLOP/s':>8} {'of peak':>8} {'peak RSS':>9}")
    steps = 3 if a.quick else 10
    for preset, batch in [("tiny", 16), ("small", 8)]:
        r = run_child(["train", preset, batch, steps, a.threads])
        gf = r["images_per_s"] * r["train_gflop_per_image"]
        print(f"{preset:7} {r['params']:>10,} {r['image']:>5}² {batch:>5} "
              f"{r['images_per_s']:>8.1f} {gf:>8.1f} {gf / peak:>8.1%} {r['rss_mib']:>6.0f} MiB")

    print("\none-step reconstruction x_t + (1 - t) v(x_t, t, c), t = 0.83 (no tape)")
    print(f"{'preset':7} {'params':>10} {'image':>6} {'batch':>5} {'GFLOP':>8} {'latency':>9} "
          f"{'per img':>8} {'GFLOP/s':>8} {'of peak':>8} {'peak RSS':>9}")
    for batch in ([1] if a.quick else [1, 8]):
        reps = 1 if (a.quick or batch > 1) else 3
        r = run_child(["latency", "paper", batch, reps, a.threads])
        gfs = r["gflop"] / r["seconds"]
        print(f"{'paper':7} {r['params']:>10,} {r['image']:>5}² {batch:>5} {r['gflop']:>8.1f} "
              f"{r['seconds']:>8.2f}s {r['seconds'] / batch:>7.2f}s {gfs:>8.1f} "
              f"{gfs / peak:>8.1%} {r['rss_mib']:>6.0f} MiB")


if __name__ == "__main__":
    main()
