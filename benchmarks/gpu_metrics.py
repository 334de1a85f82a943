"""P-AUROC and AUPRO on the GPU vs the CPU op, one MVTec-sized test set.

    python benchmarks/gpu_metrics.py [--n 160] [--size 256] [--repeat 5]

The data is benchmarks/metrics.py's (160 float32 anomaly maps of 256x256,
blob-shaped regions in half of the images: 10^7 pixels). The maps are copied
to the device once, as a model's maps on the GPU would already be there;
each GPU figure is then the whole call: the masks' region labelling on the
host (AUPRO only, also timed alone), the labels copied over, CUB's sort and
the sweeps on the device, the result back. The CPU figure is the same
metric on the host arrays (csrc/metrics, OpenMP) in this process. Best of
--repeat each; the values are compared. Prints figures, asserts nothing;
without a GPU it says so and exits 0.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timenet  # noqa: E402
from timenet import _core, cuda, metrics  # noqa: E402


def best_of(fn, repeat, sync=lambda: None):
    times, out = [], None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not cuda.is_available():
        print(f"no GPU: {cuda.unavailable_reason()}; skipped")
        return
    from metrics import make_data  # benchmarks/metrics.py

    maps, masks = make_data(args.n, args.size)
    n = maps.size
    print(f"{args.n} maps of {args.size}x{args.size} ({n / 1e6:.1f} M pixels, "
          f"{masks.mean():.2%} anomalous) on {cuda.get_device_name()}; CPU: "
          f"{timenet.get_num_threads()} threads")
    d = cuda.DeviceArray.from_numpy(maps)
    sync = cuda.synchronize
    metrics.aupro(d, masks)  # warm up: stream, handles, allocator blocks
    cuda.reset_peak_memory_stats()
    base = cuda.memory_allocated()

    rows = [
        ("P-AUROC", lambda: metrics.pixel_auroc(maps, masks),
         lambda: metrics.pixel_auroc(d, masks), 0.0),
        ("AUPRO 0.3", lambda: metrics.aupro(maps, masks), lambda: metrics.aupro(d, masks), 1e-10),
    ]
    print(f"\n{'metric':10s} {'CPU s':>8s} {'GPU s':>8s} {'GPU/CPU':>8s} "
          f"{'GPU Mpx/s':>10s}  values")
    for name, cpu_fn, gpu_fn, tol in rows:
        t_cpu, v_cpu = best_of(cpu_fn, args.repeat)
        t_gpu, v_gpu = best_of(gpu_fn, args.repeat, sync)
        same = "equal" if abs(v_gpu - v_cpu) <= tol else "DIFFER"
        print(f"{name:10s} {t_cpu:8.4f} {t_gpu:8.4f} {t_gpu / t_cpu:8.3f} {n / t_gpu / 1e6:10.0f}"
              f"  {v_cpu:.9f} / {v_gpu:.9f} ({same}, |diff| {abs(v_gpu - v_cpu):.1e})")
    t_lab, _ = best_of(lambda: _core.pro_regions(masks), args.repeat)
    peak = cuda.max_memory_allocated() - base
    print(f"\nAUPRO's host part, labelling the regions (pro_regions): {t_lab:.4f} s")
    print(f"peak device memory of the calls: {peak / 2**20:.0f} MiB = {peak / n:.0f} bytes per "
          f"pixel")


if __name__ == "__main__":
    main()
