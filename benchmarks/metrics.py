"""AUPRO and P-AUROC on an MVTec-sized test set: timenet.metrics vs numpy.

160 anomaly maps of 256x256 float32 (smooth random fields, raised over
blob-shaped ground-truth regions in half of the images). Everything is
timed in this one run, so the ratios hold on a shared, noisy machine:

  timenet     timenet.metrics.aupro / pixel_auroc (C, OpenMP), best of 5.
  official    the official MVTec AD evaluation code in numpy (compute_pro:
              scipy.ndimage.label with a 3x3 structure, argsort, cumsum;
              trapezoid), the vectorised implementation in common use.
  reference   the tests' plain reference (tests/test_metrics.py:
              ref_pro_curve): every threshold recomputed from scratch with
              numpy. Far too slow to run in full, so it is timed on a few
              thresholds and EXTRAPOLATED: seconds per threshold times the
              number of curve points AUPRO at 0.3 needs (every distinct score
              until the FPR passes 0.3).
  sklearn     sklearn.metrics.roc_auc_score for P-AUROC.

Peak memory: each call runs again in a fresh subprocess that only loads the
inputs first; it reports the growth of peak RSS (VmHWM, which also sees C
mallocs, unlike tracemalloc) during the call, relative to the input size
(maps + masks bytes).

Prints figures; asserts nothing about time.
    python benchmarks/metrics.py [--n 160] [--size 256] [--threads T]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import timenet  # noqa: E402
from timenet import metrics  # noqa: E402

STRUCT = np.ones((3, 3), dtype=int)


def make_data(n, size, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, size, size)
    maps = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0, 4, 4))
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0, 8, 8))
    masks = field > np.quantile(field[: n // 2], 0.97)
    masks[n // 2:] = False
    maps += 0.1 * ndimage.gaussian_filter(masks.astype(np.float32), (0, 2, 2))
    return maps, masks


# ------------------------------------------------------------- baselines

def official_trapezoid(x, y, x_max=None):
    """generic_util.trapezoid of the MVTec AD evaluation code."""
    x, y = np.array(x), np.array(y)
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) /
                                     (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x, y = x[mask], y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def official_aupro(maps, masks, limit=0.3):
    """pro_curve_util.compute_pro + trapezoid of the MVTec AD evaluation code."""
    fp_changes = np.zeros(maps.shape, dtype=np.uint32)
    pro_changes = np.zeros(maps.shape, dtype=np.float64)
    num_ok, num_regions = 0, 0
    for i, gt in enumerate(masks):
        labeled, n = ndimage.label(gt, STRUCT)
        num_regions += n
        ok = labeled == 0
        num_ok += np.sum(ok)
        fp_changes[i][ok] = 1
        for k in range(n):
            r = labeled == k + 1
            pro_changes[i][r] = 1.0 / np.sum(r)
    scores = np.array(maps).ravel()
    idx = np.argsort(scores).astype(np.uint32)[::-1]
    np.take(scores, idx, out=scores)
    fp = fp_changes.ravel()
    np.take(fp, idx, out=fp)
    pro = pro_changes.ravel()
    np.take(pro, idx, out=pro)
    del idx
    np.cumsum(fp, out=fp)
    fprs = fp.astype(np.float32) / num_ok
    np.cumsum(pro, out=pro)
    pros = pro / num_regions
    keep = np.append(np.diff(scores) != 0, np.True_)
    fprs, pros = np.clip(fprs, None, 1.0), np.clip(pros, None, 1.0)
    fprs, pros = np.r_[0.0, fprs[keep], 1.0], np.r_[0.0, pros[keep], 1.0]
    return official_trapezoid(fprs, pros, x_max=limit) / limit


def reference_per_threshold(maps, masks, thresholds):
    """The tests' reference, on the given thresholds only: (fpr, pro) each."""
    region = np.full(maps.shape, -1, dtype=np.int64)
    nreg = 0
    for i in range(len(maps)):
        lab, n = ndimage.label(masks[i], structure=STRUCT)
        region[i][lab > 0] = lab[lab > 0] - 1 + nreg
        nreg += n
    sizes = np.bincount(region[region >= 0], minlength=nreg)
    normal = ~masks
    n_normal = np.count_nonzero(normal)
    out = []
    for t in thresholds:
        above = maps >= t
        fpr = np.count_nonzero(above & normal) / n_normal
        out.append((fpr, np.mean(np.bincount(region[above & masks], minlength=nreg) / sizes)))
    return out


# ------------------------------------------------------------ measuring

def best_of(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(which, data_dir, threads):
    """Run one call after loading the inputs; print peak-RSS growth."""
    if threads:
        timenet.set_num_threads(threads)
    maps = np.load(os.path.join(data_dir, "maps.npy"))
    masks = np.load(os.path.join(data_dir, "masks.npy"))
    fn = {
        "timenet_aupro": lambda: metrics.aupro(maps, masks),
        "timenet_pixel_auroc": lambda: metrics.pixel_auroc(maps, masks),
        "official_aupro": lambda: official_aupro(maps, masks),
        "sklearn_pixel_auroc": lambda: __import__("sklearn.metrics").metrics.roc_auc_score(
            masks.ravel(), maps.ravel()),
    }[which]
    if which.startswith("sklearn"):
        import sklearn.metrics  # noqa: F401  (import outside the measured call)
    try:  # reset VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    rss = _status("VmRSS")
    hwm0 = _status("VmHWM")
    fn()
    peak = _status("VmHWM") - (rss if reset else max(rss, hwm0))
    print(json.dumps({"peak": peak, "input": maps.nbytes + masks.nbytes, "reset": reset}))


def peak_memory(which, data_dir, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--data", data_dir]
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip().splitlines()[-1:]
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ref-thresholds", type=int, default=8)
    ap.add_argument("--child")
    ap.add_argument("--data")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.data, args.threads)
    if args.threads:
        timenet.set_num_threads(args.threads)

    maps, masks = make_data(args.n, args.size)
    mb = (maps.nbytes + masks.nbytes) / 2**20
    print(f"{args.n} maps of {args.size}x{args.size} float32 + bool masks ({mb:.0f} MiB), "
          f"{masks.mean():.2%} anomalous pixels, {timenet.get_num_threads()} threads")

    t_aupro, aupro = best_of(lambda: metrics.aupro(maps, masks), 5)
    t_pauroc, pauroc = best_of(lambda: metrics.pixel_auroc(maps, masks), 5)
    t_curve, curve = best_of(lambda: metrics.pro_curve(maps, masks, max_fpr=0.3), 1)
    npoints = len(curve[0])

    t_off, off = best_of(lambda: official_aupro(maps, masks), 1)
    from sklearn.metrics import roc_auc_score
    t_skl, skl = best_of(lambda: roc_auc_score(masks.ravel(), maps.ravel()), 1)

    # The reference on a few thresholds spread over the part of the curve
    # AUPRO uses; check them against timenet's curve while at it.
    pick = np.linspace(1, npoints - 1, args.ref_thresholds).astype(int)
    t0 = time.perf_counter()
    ref = reference_per_threshold(maps, masks, curve[2][pick])
    t_ref_each = (time.perf_counter() - t0) / len(pick)
    t_ref = t_ref_each * npoints
    err = max(max(abs(f - curve[0][i]), abs(p - curve[1][i])) for (f, p), i in zip(ref, pick))

    print(f"\nAUPRO (fpr_limit 0.3) = {aupro:.6f}; official numpy code {off:.6f} "
          f"(|diff| {abs(aupro - off):.1e}: it rounds the FPR to float32)")
    print(f"  timenet            {t_aupro:8.3f} s")
    print(f"  official numpy     {t_off:8.3f} s   timenet is {t_off / t_aupro:6.1f}x faster")
    print(f"  reference          {t_ref:8.0f} s   timenet is {t_ref / t_aupro:6.0f}x faster "
          f"(EXTRAPOLATED: {t_ref_each * 1e3:.1f} ms/threshold on {len(pick)} thresholds "
          f"x {npoints} curve points; max |diff| there {err:.1e})")
    print(f"  pro_curve(max_fpr=0.3): {t_curve:.3f} s for its {npoints} points")
    print(f"\nP-AUROC = {pauroc:.6f}; sklearn {skl:.6f} (|diff| {abs(pauroc - skl):.1e})")
    print(f"  timenet            {t_pauroc:8.3f} s")
    print(f"  sklearn            {t_skl:8.3f} s   timenet is {t_skl / t_pauroc:6.1f}x faster")

    print("\npeak memory during the call (peak RSS growth / input size), fresh processes:")
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "maps.npy"), maps)
        np.save(os.path.join(d, "masks.npy"), masks)
        del maps, masks
        for which in ("timenet_aupro", "timenet_pixel_auroc", "official_aupro",
                      "sklearn_pixel_auroc"):
            r, err = peak_memory(which, d, args.threads)
            if r is None:
                print(f"  {which:22s} failed: {err}")
                continue
            note = "" if r["reset"] else "  (VmHWM could not be reset: upper bound)"
            print(f"  {which:22s} {r['peak'] / 2**20:7.1f} MiB = {r['peak'] / r['input']:5.2f}x "
                  f"input{note}")


if __name__ == "__main__":
    main()
