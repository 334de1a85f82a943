"""Kernel benchmarks of the CPU engine: GFLOP/s as fractions of the FMA peak.

    python benchmarks/kernels.py            # full table (3-6 minutes)
    python benchmarks/kernels.py --quick    # fewer shapes, shorter timing
    python benchmarks/kernels.py --only conv3x3 --threads 1 --json out.json

Every figure is printed next to baselines measured in the same run (machines
here are shared and noisy, DESIGN.md §5): the register-only FMA loop
(`_core.fma_peak`, 1 thread and all threads) and OpenBLAS sgemm (the same
library the kernels call, through ctypes) at 2048^3 and at the GEMM shapes
the convolutions issue. Rows are timed in interleaved rounds and the best
time kept, so a burst of load from another job spoils one measurement of a
row, not all. Nothing here asserts a time. FLOPs: 2*N*K*C*R*S*P*Q per conv
pass (bwd_x+w counts two), 2*N*I*O per linear pass.

Other op families add rows with a builder in ROW_BUILDERS (see
`linear_rows()`): a Row is (op, shape, flops, fn, workspace_bytes).

RESULTS (2-core AVX-512 VM, OpenBLAS 0.3.34 SkylakeX kernels, OMP_WAIT_POLICY
passive). The FMA loop gives 231 GFLOP/s on 1 thread and 446-488 on 2 (not
the 330/660 DESIGN.md quotes: this VM's cores run AVX-512 at ~3.6 GHz). The
machine ran other builds and a training job throughout (load average 1.7-3.2),
so figures move by +-10 %. 2 threads, best of 3 runs, GFLOP/s (% of peak):

                                       fwd          bwd_x+w       bwd_w
  3x3 64->64    256^2 N1           237 (51 %)    206 (45 %)    186 (40 %)
  3x3 64->64    256^2 N4           224 (49 %)    194 (42 %)    183 (40 %)
  3x3 128->128   64^2 N1           277 (60 %)    256 (55 %)    239 (52 %)
  3x3 128->128   64^2 N4           291 (63 %)    255 (55 %)    244 (53 %)
  3x3 256->256   16^2 N1           239 (52 %)    204 (44 %)    180 (39 %)
  3x3 256->256   16^2 N4           256 (55 %)    252 (55 %)    252 (55 %)
  3x3 3->64 (stem) 256^2 N4         68 (15 %)     75 (16 %)     54 (12 %)
  3x3 s2 64->64  256^2 N4          160 (35 %)    128 (28 %)    150 (33 %)
  3x3 s2 128->128 64^2 N4          211 (46 %)    194 (42 %)    214 (46 %)
  3x3 s2 256->256 16^2 N4          211 (46 %)    184 (40 %)    176 (38 %)
  1x1 64->128    64^2 N4           201 (44 %)    169 (37 %)    144 (31 %)
  1x1 128->64   256^2 N4           113 (24 %)    111 (24 %)    110 (24 %)
  3x3 32->32 64^2 N4 (small)       202 (44 %)    147 (32 %)    128 (28 %)
  3x3 64->64 32^2 N4 (small)       238 (52 %)    194 (42 %)    178 (39 %)
  linear N256 512->512             240 (52 %)    231 (50 %)
  sgemm 2048^3: 339-405 on 2 threads (73-83 %), 173-197 on 1 (75-81 % of 1)
  sgemm on the conv GEMM shapes, 1 thread: 121-184 (53-75 % of 1 thread)
  workspace: at most 2.4 MB forward, 4.5 MB backward (2 threads)
In the quietest run (2-thread peak 488) the 64->64 256^2 N1 conv reached
294 (60 %) forward, 229 (47 %) bwd_x+w, 216 (44 %) bwd_w. On 1 thread
(--threads 1, peak 230): 64->64 256^2 55 / 45 / 41 %, 128->128 64^2
64 / 58 / 55 %, 256->256 16^2 N4 55 / 56 / 59 %: the 2-thread figures are
the per-core efficiency, the threads scale when the cores are free.

What bounds it: OpenBLAS itself reaches only 53-75 % of the FMA peak on the
GEMMs a conv issues (one side is the 64-256 output channels; 2048^3 gets
73-83 %), and the convs run at 75-95 % of their own GEMMs' speed; the rest
is copies (tile padding, im2col/col2im), the junk columns of shifted GEMMs,
the dW private sums and fork/join. 1x1 convs on 256^2 maps move 768 bytes of
x and y per 16 kFLOP and are memory-bound here (24 %); the 3-channel stem is
a GEMM with a reduction of 27 (15 %). Strided convs go through im2col (a
polyphase split into stride-1 shifted GEMMs would save most of its copies;
they are a few % of the U-Net's conv FLOPs, so it was not done).

The other ops (other_rows; --quick, load average 2.8, 2-thread peak 259):
group_norm N4 C128 64^2 0.66 ms forward / 0.69 ms backward; attention N4
L256 C256 1.6 ms forward (65 % of the peak) / 2.7 ms backward (77 %);
upsample x2 of N4 C128 64^2 6.1 ms (40 MB moved: memory-bound); AdamW on
4 M parameters 10 ms (112 MB moved).

Choices measured (same machine, interleaved A/B runs, GFLOP/s, 2 threads):
- Threading. Shipped: OpenMP threads take (image, tile) items, each calling
  OpenBLAS single-threaded. Variant: the same tiles one at a time, each GEMM
  threaded by OpenBLAS (copies on one thread). 64->64 256^2 N4: fwd 231/226
  vs 199/191, bwd_x 205/218 vs 193/189, bwd_w 206/183 vs 160/159; stride 2
  64->64 256^2 N4: fwd 142/146 vs 119/120, bwd_w 149 vs 129/130; 128->128
  64^2 N1 and 256->256 16^2 N4: within +-15 % either way, run to run. With
  another process on one core OpenBLAS's own threads collapse: before linear
  moved to the same scheme, N256 512->512 took 20 ms (0.4 ms quiet) and a
  4x256 @ 256x1024 GEMM ran at 0.5 GFLOP/s; now 1.0 ms and 22 GFLOP/s.
- Shifted GEMMs vs im2col (stride 1, fwd): 64->64 256^2 257 vs 211; 128->128
  64^2 253 vs 227; 32->32 64^2 N4 179 vs 153; at 16^2 (padded width 18)
  im2col was ahead (220 vs 207), hence shifted only from a padded width of 24.
  For dW, shifted GEMMs (9 GEMMs of (K, C)) were 7-25 % slower than im2col.
- GEMM orientation: y (K, J) = W (K, CRS) @ col (CRS, J), shipped, ran
  5-15 % faster in OpenBLAS than the transposed y^T = col^T @ W^T (64x224x576
  on 1 thread: 135-150 vs 127-132 GFLOP/s) and needs no transpose of y.
- Tiles: ~256 positions an im2col tile (at most 2 MB; 56-position tiles of
  256-channel convs were 5-10 % slower); shifted tiles of 256 KB - 2 MB all
  within noise (1 MB kept); 1x1 tiles of 2048 positions 10-15 % better
  than 256; splitting dW by channel groups instead of private sums 10-30 %
  slower; an un-tiled whole-image GEMM (64x65536x576, 151 MB of columns an
  image) runs at 204-263 GFLOP/s on 2 threads, at or below the tiled conv.
"""
import argparse
import ctypes
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import timenet  # noqa: E402
from timenet import _core  # noqa: E402
from timenet._loader import _blas  # noqa: E402


@dataclass
class Row:
    op: str
    shape: str
    flops: float          # floating-point operations of one call
    fn: Callable          # the call to time
    workspace: int = -1   # scratch bytes the kernel allocates (-1: not reported)
    one_thread: bool = False  # runs on one thread: a fraction of the 1-thread peak


def best_time(fn, min_time, warm_up=True, max_reps=50):
    """Best wall time of fn() over repeats filling about min_time seconds."""
    if warm_up:
        fn()  # first-touch of outputs, OpenBLAS buffers
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < 2 or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# --- OpenBLAS sgemm through ctypes: the very library the kernels link ------
_blas.scipy_cblas_sgemm.restype = None
_blas.scipy_cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [
    ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
    ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def sgemm_fn(M, N, K, trans_a=False, trans_b=False, threads=None):
    """C (M, N) = op(A) @ op(B) on fresh random float32 arrays, row-major."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((K, M) if trans_a else (M, K), dtype=np.float32)
    B = rng.standard_normal((N, K) if trans_b else (K, N), dtype=np.float32)
    C = np.zeros((M, N), np.float32)
    args = (ROW_MAJOR, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, M, N, K,
            1.0, A.ctypes.data, A.shape[1], B.ctypes.data, B.shape[1], 0.0, C.ctypes.data, N)

    def fn(keep=(A, B, C)):  # the arrays must outlive the raw pointers in args
        if threads is not None:
            _blas.scipy_openblas_set_num_threads(threads)
        _blas.scipy_cblas_sgemm(*args)
        if threads is not None:
            _blas.scipy_openblas_set_num_threads(timenet.get_num_threads())
    return fn


# --- conv family -----------------------------------------------------------
# The paper U-Net (DESIGN.md §1): 256^2 input, base 64 channels, multipliers
# (1, 1, 2, 2, 4, 4) -> 64 ch at 256^2 and 128^2, 128 at 64^2 and 32^2,
# 256 at 16^2 and 8^2; 2 res blocks per level (3x3 convs), stride-2 3x3
# downsampling convs, 1x1 skip convs where the channel count changes.
# (name, N, C, H, W, K, R, S, stride, pad)
PAPER = [
    ("conv3x3", 1, 64, 256, 256, 64, 3, 3, 1, 1),
    ("conv3x3", 4, 64, 256, 256, 64, 3, 3, 1, 1),
    ("conv3x3", 1, 128, 64, 64, 128, 3, 3, 1, 1),
    ("conv3x3", 4, 128, 64, 64, 128, 3, 3, 1, 1),
    ("conv3x3", 1, 256, 16, 16, 256, 3, 3, 1, 1),
    ("conv3x3", 4, 256, 16, 16, 256, 3, 3, 1, 1),
    ("conv3x3_in", 4, 3, 256, 256, 64, 3, 3, 1, 1),      # the stem: image -> 64 ch
    ("down3x3_s2", 1, 64, 256, 256, 64, 3, 3, 2, 1),
    ("down3x3_s2", 4, 64, 256, 256, 64, 3, 3, 2, 1),
    ("down3x3_s2", 4, 128, 64, 64, 128, 3, 3, 2, 1),
    ("down3x3_s2", 4, 256, 16, 16, 256, 3, 3, 2, 1),
    ("skip1x1", 1, 64, 64, 64, 128, 1, 1, 1, 0),
    ("skip1x1", 4, 64, 64, 64, 128, 1, 1, 1, 0),
    ("skip1x1", 4, 128, 16, 16, 256, 1, 1, 1, 0),
    ("skip1x1", 4, 128, 256, 256, 64, 1, 1, 1, 0),     # decoder: concat 128 -> 64
]
# Small presets (demo / CI models).
SMALL = [
    ("conv3x3", 4, 32, 64, 64, 32, 3, 3, 1, 1),
    ("conv3x3", 4, 64, 32, 32, 64, 3, 3, 1, 1),
    ("down3x3_s2", 4, 32, 64, 64, 32, 3, 3, 2, 1),
    ("skip1x1", 4, 32, 32, 32, 64, 1, 1, 1, 0),
]
QUICK = {0, 2, 4, 7, 11}  # PAPER rows kept by --quick


def conv_rows(shapes):
    rows = []
    rng = np.random.default_rng(0)
    for name, N, C, H, W, K, R, S, st, pad in shapes:
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = rng.standard_normal((K, C, R, S), dtype=np.float32) * (C * R * S) ** -0.5
        b = rng.standard_normal(K, dtype=np.float32)
        P, Q = (H + 2 * pad - R) // st + 1, (W + 2 * pad - S) // st + 1
        dy = rng.standard_normal((N, K, P, Q), dtype=np.float32)
        flops = 2.0 * N * K * P * Q * C * R * S
        ws_f, ws_x, ws_w = _core._conv2d_workspace_bytes(x, w, st, pad)
        shape = f"N{N} {C}->{K} {H}x{W} k{R}x{S} s{st}"
        rows.append(Row(f"{name} fwd", shape, flops,
                        lambda x=x, w=w, b=b, st=st, pad=pad: _core.conv2d_forward(x, w, b, st, pad),
                        ws_f))
        rows.append(Row(f"{name} bwd_w", shape, flops,
                        lambda dy=dy, x=x, w=w, st=st, pad=pad:
                        _core.conv2d_backward(dy, x, w, st, pad, need_dx=False), ws_w))
        rows.append(Row(f"{name} bwd_x+w", shape, 2 * flops,
                        lambda dy=dy, x=x, w=w, st=st, pad=pad:
                        _core.conv2d_backward(dy, x, w, st, pad), max(ws_x, ws_w)))
    return rows


def linear_rows(quick):
    rows = []
    rng = np.random.default_rng(1)
    shapes = [(4, 256, 256), (4, 64, 256)] if quick else [(4, 64, 256), (4, 256, 256),
                                                          (4, 256, 1024), (256, 512, 512)]
    for N, I, O in shapes:
        x = rng.standard_normal((N, I), dtype=np.float32)
        w = rng.standard_normal((O, I), dtype=np.float32)
        b = rng.standard_normal(O, dtype=np.float32)
        dy = rng.standard_normal((N, O), dtype=np.float32)
        flops = 2.0 * N * I * O
        shape = f"N{N} {I}->{O}"
        rows.append(Row("linear fwd", shape, flops, lambda x=x, w=w, b=b: _core.linear_forward(x, w, b)))
        rows.append(Row("linear bwd", shape, 2 * flops,
                        lambda dy=dy, x=x, w=w: _core.linear_backward(dy, x, w)))
    return rows


def gemm_rows(quick):
    """OpenBLAS alone: dense 2048^3, and the GEMMs conv2d issues on the paper
    shapes (2 threads, batch 1), each on one thread as conv2d runs them."""
    threads = timenet.get_num_threads()
    rows = [Row("sgemm", f"2048^3 {threads} thr", 2.0 * 2048 ** 3, sgemm_fn(2048, 2048, 2048)),
            Row("sgemm", "2048^3 1 thr", 2.0 * 2048 ** 3, sgemm_fn(2048, 2048, 2048, threads=1),
                one_thread=True)]
    shapes = [  # (M, N, K, trans_a, trans_b, what)
        (64, 1806, 64, 0, 0, "64ch 256^2 fwd shifted"),     # W_rs @ xpad view: 7 rows x 258
        (64, 256, 576, 0, 0, "64ch 256^2 fwd as im2col"),   # W @ col tile (path not taken)
        (64, 1806, 64, 1, 0, "64ch 256^2 dx shifted"),      # W_rs^T @ dywide
        (64, 576, 256, 0, 1, "64ch 256^2 dw im2col"),       # dy tile @ col^T
        (128, 528, 128, 0, 0, "128ch 64^2 fwd shifted"),    # 8 rows x 66
        (256, 64, 2304, 0, 0, "256ch 16^2 fwd im2col"),     # 4 rows of 16 a tile
    ]
    for M, N, K, ta, tb, what in shapes[:2] if quick else shapes:
        op = ("T" if ta else "N") + ("T" if tb else "N")
        rows.append(Row("sgemm", f"{what} {M}x{N}x{K} {op} 1 thr", 2.0 * M * N * K,
                        sgemm_fn(M, N, K, ta, tb, threads=1), one_thread=True))
    # What an im2col over a whole 256^2 image would run: one big GEMM,
    # threaded by OpenBLAS (and a 151 MB column matrix per image).
    rows.append(Row("sgemm", f"64ch 256^2 fwd whole image 64x65536x576 {threads} thr",
                    2.0 * 64 * 65536 * 576, sgemm_fn(64, 65536, 576)))
    return rows


def paper_conv_rows(quick):
    return conv_rows([s for i, s in enumerate(PAPER) if not quick or i in QUICK])


def small_conv_rows(quick):
    return conv_rows(SMALL[:2] if quick else SMALL)


# Every table row comes from one of these: f(quick) -> list of Row. Another
# op family adds its builder here (e.g. attention_rows, norm_rows).
def other_rows(quick):
    """The rest of the engine on the paper U-Net's shapes. Apart from
    attention these ops are memory-bound: their "flops" are a nominal count
    per element (GroupNorm 8 forward / 12 backward, SiLU 4 / 6, upsample and
    pools 1, AdamW 12), so read the ms, not the fraction of the FMA peak."""
    rng = np.random.default_rng(2)
    rows = []
    maps = [(1, 64, 256, 256), (4, 128, 64, 64), (4, 256, 16, 16)]
    for shp in maps[1:] if quick else maps:
        x = rng.standard_normal(shp, dtype=np.float32)
        dy = rng.standard_normal(shp, dtype=np.float32)
        w, b = np.ones(shp[1], np.float32), np.zeros(shp[1], np.float32)
        n = x.size
        name = f"N{shp[0]} C{shp[1]} {shp[2]}^2"
        _, mean, rstd = _core.group_norm_forward(x, 32, w, b, 1e-5)
        rows.append(Row("group_norm fwd", name, 8 * n,
                        lambda x=x, w=w, b=b: _core.group_norm_forward(x, 32, w, b, 1e-5)))
        rows.append(Row("group_norm bwd", name, 12 * n,
                        lambda dy=dy, x=x, m=mean, r=rstd, w=w:
                        _core.group_norm_backward(dy, x, m, r, 32, w)))
        rows.append(Row("silu fwd", name, 4 * n, lambda x=x: _core.silu_forward(x)))
        rows.append(Row("silu bwd", name, 6 * n, lambda dy=dy, x=x: _core.silu_backward(dy, x)))
        rows.append(Row("upsample x2 fwd", name, 4 * n,
                        lambda x=x: _core.upsample_nearest_forward(x, 2)))
        rows.append(Row("avg_pool2d 2x2 fwd", name, n,
                        lambda x=x: _core.avg_pool2d_forward(x, 2, 2, 0)))
    # attention at the paper's 16^2 (C 256) and 8^2 levels, one head
    for N, L, C in ([(4, 256, 256)] if quick else [(1, 256, 256), (4, 256, 256), (4, 64, 256)]):
        q, k, v = (rng.standard_normal((N, L, C), dtype=np.float32) for _ in range(3))
        out, probs = _core.attention_forward(q, k, v, 1)
        flops = 4.0 * N * L * L * C
        name = f"N{N} L{L} C{C} 1 head"
        rows.append(Row("attention fwd", name, flops,
                        lambda q=q, k=k, v=v: _core.attention_forward(q, k, v, 1)))
        rows.append(Row("attention bwd", name, 2 * flops,
                        lambda d=out, q=q, k=k, v=v, p=probs:
                        _core.attention_backward(d, q, k, v, p, 1)))
    # AdamW over a 4 M-element parameter (the paper U-Net has 29.8 M)
    p = rng.standard_normal(1 << 22, dtype=np.float32)
    g, m, vv = (rng.standard_normal(1 << 22, dtype=np.float32) * 0.01 for _ in range(3))
    vv = np.abs(vv)
    rows.append(Row("adamw step", "4M params", 12 * p.size,
                    lambda: _core.adamw_step(p, g, m, vv, 1e-4, 0.9, 0.999, 1e-8, 0.0, 1)))
    return rows


ROW_BUILDERS = [gemm_rows, paper_conv_rows, small_conv_rows, linear_rows, other_rows]


def fma_peak(threads, tries=5):
    """Best of a few short FMA-loop runs: a busy neighbour only lowers a run."""
    return max(_core.fma_peak(threads, 0.05) for _ in range(tries))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all)")
    ap.add_argument("--only", default="", help="only rows whose op contains this string")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per row and round")
    ap.add_argument("--rounds", type=int, default=None,
                    help="passes over all rows, best time kept (default 3, --quick 2)")
    ap.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = ap.parse_args()
    if args.threads:
        timenet.set_num_threads(args.threads)
    threads = timenet.get_num_threads()
    min_time = args.min_time or (0.1 if args.quick else 0.3)
    rounds = args.rounds or (2 if args.quick else 3)

    rows = [r for build in ROW_BUILDERS for r in build(args.quick)]
    if args.only:
        rows = [r for r in rows if args.only in r.op]

    # Rounds interleave the rows, so a burst of load from another job spoils
    # one measurement of a row, not all of them; the peaks are re-measured
    # every round and the best kept likewise.
    best = [float("inf")] * len(rows)
    peak1 = peak = 0.0
    for k in range(rounds):
        peak1 = max(peak1, fma_peak(1))
        peak = max(peak, fma_peak(threads))
        for i, r in enumerate(rows):
            best[i] = min(best[i], best_time(r.fn, min_time, warm_up=k == 0))
    peak1 = max(peak1, fma_peak(1))
    peak = max(peak, fma_peak(threads))

    print(f"FMA peak: {peak1:.0f} GFLOP/s on 1 thread, {peak:.0f} on {threads} threads "
          f"(the 'peak' column: fraction of the {threads}-thread figure; rows marked "
          f"'1 thr': of the 1-thread one)")
    print(f"load average {os.getloadavg()[0]:.2f}; best of {rounds} rounds")
    print(f"{'op':18s} {'shape':46s} {'ms':>9s} {'GFLOP/s':>8s} {'peak':>6s} {'workspace':>10s}")
    table = []
    for r, t in zip(rows, best):
        gf = r.flops / t / 1e9
        frac = gf / (peak1 if r.one_thread else peak)
        ws = "" if r.workspace < 0 else f"{r.workspace / 2**20:.2f} MB"
        print(f"{r.op:18s} {r.shape:46s} {t * 1e3:9.3f} {gf:8.1f} {frac:6.1%} {ws:>10s}")
        table.append({"op": r.op, "shape": r.shape, "ms": t * 1e3, "gflops": gf,
                      "fraction_of_peak": frac, "workspace_bytes": r.workspace})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "fma_peak_1": peak1, "fma_peak": peak,
                       "load_average": os.getloadavg()[0], "rows": table}, f, indent=1)


if __name__ == "__main__":
    main()
