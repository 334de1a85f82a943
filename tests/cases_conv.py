"""conv family rows for tests/test_ops.py: conv2d and linear (see optable.py).

The references are float64 numpy written to be obviously correct, not fast:
a convolution is a sum over kernel offsets (r, s) of a channel contraction of
the strided window of the zero-padded input, and its gradients are the same
loop run backwards (each offset scatters into the padded dx and contracts
into dw[:, :, r, s]).
"""
import zlib

import numpy as np

from optable import Bad, Case
from timenet import _core


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _window(xp, r, s, stride, P, Q):
    """The (N, C, P, Q) slice of padded xp that kernel offset (r, s) sees."""
    return xp[:, :, r:r + stride * (P - 1) + 1:stride, s:s + stride * (Q - 1) + 1:stride]


def _out_size(H, W, R, S, stride, pad):
    return (H + 2 * pad - R) // stride + 1, (W + 2 * pad - S) // stride + 1


def conv2d_ref(x, w, b, stride, pad):
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = _out_size(H, W, R, S, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((N, K, P, Q))
    for r in range(R):
        for s in range(S):
            y += np.einsum("ncpq,kc->nkpq", _window(xp, r, s, stride, P, Q), w[:, :, r, s])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_ref_bwd(gy, x, w, with_bias, stride, pad):
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = _out_size(H, W, R, S, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for r in range(R):
        for s in range(S):
            dw[:, :, r, s] = np.einsum("nkpq,ncpq->kc", gy, _window(xp, r, s, stride, P, Q))
            _window(dxp, r, s, stride, P, Q)[...] += np.einsum("nkpq,kc->ncpq", gy, w[:, :, r, s])
    grads = {"x": dxp[:, :, pad:pad + H, pad:pad + W], "w": dw}
    if with_bias:
        grads["b"] = gy.sum(axis=(0, 2, 3))
    return grads


def conv_case(name, N, C, H, W, K, R, S, stride, pad, bias=True, **tol):
    rng = _rng(name)
    inputs = {"x": rng.standard_normal((N, C, H, W)),
              "w": rng.standard_normal((K, C, R, S)) / np.sqrt(C * R * S)}
    if bias:
        inputs["b"] = rng.standard_normal(K)

    def fwd(d):
        return _core.conv2d_forward(d["x"], d["w"], d.get("b"), stride, pad)

    def bwd(gy, d):
        dx, dw, db = _core.conv2d_backward(gy, d["x"], d["w"], stride, pad,
                                           need_dx=True, need_bias=bias)
        assert (db is None) == (not bias)
        return {"x": dx, "w": dw, **({"b": db} if bias else {})}

    return Case(name, inputs, fwd,
                ref=lambda d: conv2d_ref(d["x"], d["w"], d.get("b"), stride, pad),
                bwd=bwd,
                ref_bwd=lambda gy, d: conv2d_ref_bwd(gy, d["x"], d["w"], bias, stride, pad),
                **tol)


def linear_case(name, N, I, O, bias=True):
    rng = _rng(name)
    inputs = {"x": rng.standard_normal((N, I)), "w": rng.standard_normal((O, I)) / np.sqrt(I)}
    if bias:
        inputs["b"] = rng.standard_normal(O)

    def ref(d):
        return d["x"] @ d["w"].T + (d["b"] if bias else 0.0)

    def ref_bwd(gy, d):
        g = {"x": gy @ d["w"], "w": gy.T @ d["x"]}
        if bias:
            g["b"] = gy.sum(axis=0)
        return g

    def bwd(gy, d):
        dx, dw, db = _core.linear_backward(gy, d["x"], d["w"], need_bias=bias)
        return {"x": dx, "w": dw, **({"b": db} if bias else {})}

    return Case(name, inputs, lambda d: _core.linear_forward(d["x"], d["w"], d.get("b")),
                ref, bwd, ref_bwd)


# (name, N, C, H, W, K, R, S, stride, pad, bias). With 2 threads a batch of one
# image is cut into 2 tiles, so the N=1 rows also cross a tile boundary
# inside an output row.
CASES = [
    conv_case("conv3x3_s1_p1", 2, 5, 8, 8, 6, 3, 3, 1, 1),
    conv_case("conv3x3_s1_p1_batch7", 7, 4, 5, 6, 3, 3, 3, 1, 1),
    conv_case("conv3x3_s1_p1_batch1_c17", 1, 17, 9, 7, 5, 3, 3, 1, 1),
    conv_case("conv3x3_s2_p1_7x7", 2, 3, 7, 7, 4, 3, 3, 2, 1),
    conv_case("conv3x3_s2_p1_9x5_nobias", 1, 17, 9, 5, 5, 3, 3, 2, 1, bias=False),
    conv_case("conv3x3_s2_p0_8x8", 2, 5, 8, 8, 4, 3, 3, 2, 0),
    conv_case("conv3x3_p2", 1, 3, 5, 6, 4, 3, 3, 1, 2),
    conv_case("conv1x1", 2, 17, 6, 6, 8, 1, 1, 1, 0),
    conv_case("conv1x1_batch1_nobias", 1, 5, 7, 9, 3, 1, 1, 1, 0, bias=False),
    conv_case("conv1x1_s2", 2, 5, 7, 7, 4, 1, 1, 2, 0),
    conv_case("conv5x5_s1_p2", 1, 3, 9, 9, 4, 5, 5, 1, 2),
    conv_case("conv4x4_s2_p1", 2, 5, 8, 8, 3, 4, 4, 2, 1),
    conv_case("conv3x1_p1", 2, 3, 6, 5, 4, 3, 1, 1, 1),
    conv_case("conv2x2_s3", 1, 3, 8, 7, 2, 2, 2, 3, 0),
    conv_case("conv3x3_1x1map", 3, 16, 1, 1, 5, 3, 3, 1, 1),
    conv_case("conv1x1_1x1map", 3, 16, 1, 1, 5, 1, 1, 1, 0),
    # im2col tiles cut inside an output row: 64 channels (~227 positions a
    # tile, Q = 21), and with 2 threads one image split in two: stride 2
    # (tiles of 48 positions, Q = 9) and 5 channels (Q = 9).
    conv_case("conv3x3_c64_tiled", 2, 64, 16, 21, 8, 3, 3, 1, 1, atol=3e-5),
    conv_case("conv3x3_s2_tiled", 1, 8, 20, 18, 4, 3, 3, 2, 1),
    conv_case("conv3x3_c5_batch1", 1, 5, 9, 9, 3, 3, 3, 1, 1),
    # Stride 1, >= 16 channels, padded width >= 24: the shifted-GEMM path of
    # forward and dx (N=1 with 2 threads: two row tiles overlapping in dx).
    conv_case("conv3x3_shifted", 2, 16, 5, 24, 6, 3, 3, 1, 1),
    conv_case("conv3x3_shifted_batch1_c17", 1, 17, 7, 23, 5, 3, 3, 1, 1),
    conv_case("conv5x5_shifted_p2_nobias", 1, 16, 6, 20, 3, 5, 5, 1, 2, bias=False),
    conv_case("conv3x1_shifted_p0", 3, 20, 6, 25, 4, 3, 1, 1, 0),
    # Narrow maps (padded width < 24) with <= 128 channels: forward shifted;
    # dx too with >= 8 rows and >= 4 images a thread (8 images, 2 threads).
    conv_case("conv3x3_shifted_narrow", 8, 16, 8, 8, 12, 3, 3, 1, 1),
    conv_case("conv3x3_shifted_narrow_fwd_only", 2, 20, 6, 7, 5, 3, 3, 1, 1),
    conv_case("conv5x5_shifted_narrow_p2_nobias", 8, 17, 9, 10, 3, 5, 5, 1, 2, bias=False),
    # ... with 3 and 4 row tiles an image: dx in two phases (even, odd tiles).
    conv_case("conv3x3_shifted_3tiles", 1, 16, 24, 24, 4, 3, 3, 1, 1),
    conv_case("conv5x5_shifted_4tiles", 2, 16, 40, 20, 3, 5, 5, 1, 2),
    # 16 <= K <= 128: dW summed as dW^T (C*R*S, K) in private buffers, one a
    # thread, transposed into dw (im2col, pointwise, strided, shifted forward).
    conv_case("conv3x3_dw_transposed_k16", 2, 5, 9, 11, 16, 3, 3, 1, 1),
    conv_case("conv1x1_dw_transposed_k24", 2, 9, 6, 7, 24, 1, 1, 1, 0),
    conv_case("conv3x3_s2_dw_transposed_nobias", 3, 6, 9, 9, 32, 3, 3, 2, 1, bias=False),
    conv_case("conv3x3_shifted_dw_transposed_k20", 1, 16, 6, 24, 20, 3, 3, 1, 1),
    # Big weights (dW of 1.2 and 1.1 MB, private per-thread sums of it).
    conv_case("conv3x3_big_weight", 2, 256, 4, 5, 128, 3, 3, 1, 1, atol=5e-5),
    conv_case("conv1x1_big_weight", 2, 512, 3, 3, 520, 1, 1, 1, 0, atol=5e-5),
    linear_case("linear", 5, 7, 3),
    linear_case("linear_nobias", 1, 17, 33, bias=False),
    linear_case("linear_64x128", 16, 64, 128),
    # >= 4 MFLOP: column blocks (128 wide, ragged last ones) on several threads.
    linear_case("linear_blocks", 16, 256, 520),
    linear_case("linear_blocks_nobias", 33, 300, 270, bias=False),
]


def _x(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


_f = _core.conv2d_forward
_b = _core.conv2d_backward
BAD = [
    Bad("conv_float64", lambda: _f(_x(1, 3, 5, 5, dtype=np.float64), _x(4, 3, 3, 3), None, 1, 1),
        TypeError, r"conv2d_forward: x must be \(N, C, H, W\) float32, got \(1, 3, 5, 5\) float64"),
    Bad("conv_list_input", lambda: _f([[1.0]], _x(4, 3, 3, 3), None, 1, 1), TypeError,
        "numpy float32 array"),
    Bad("conv_wrong_ndim", lambda: _f(_x(3, 5, 5), _x(4, 3, 3, 3), None, 1, 1), ValueError,
        r"x must be \(N, C, H, W\)"),
    Bad("conv_w_wrong_ndim", lambda: _f(_x(1, 3, 5, 5), _x(4, 3, 3), None, 1, 1), ValueError,
        r"w must be \(K, C, R, S\)"),
    Bad("conv_channel_mismatch", lambda: _f(_x(1, 3, 5, 5), _x(4, 2, 3, 3), None, 1, 1),
        ValueError, r"w must be \(K, C, R, S\) float32 with C == 3, got \(4, 2, 3, 3\)"),
    Bad("conv_noncontiguous", lambda: _f(_x(1, 3, 5, 10)[:, :, :, ::2], _x(4, 3, 3, 3), None, 1, 1),
        ValueError, "C-contiguous"),
    Bad("conv_zero_size", lambda: _f(_x(0, 3, 5, 5), _x(4, 3, 3, 3), None, 1, 1), ValueError,
        "zero-size"),
    Bad("conv_bias_length", lambda: _f(_x(1, 3, 5, 5), _x(4, 3, 3, 3), _x(3), 1, 1), ValueError,
        r"b must be \(K,\) float32 with K == 4"),
    Bad("conv_bias_ndim", lambda: _f(_x(1, 3, 5, 5), _x(4, 3, 3, 3), _x(4, 1), 1, 1), ValueError,
        r"b must be \(K,\)"),
    Bad("conv_kernel_too_large", lambda: _f(_x(1, 3, 2, 2), _x(4, 3, 5, 5), None, 1, 1),
        ValueError, "larger than the padded input"),
    Bad("conv_stride_0", lambda: _f(_x(1, 3, 5, 5), _x(4, 3, 3, 3), None, 0, 1), ValueError,
        "stride must be >= 1, got 0"),
    Bad("conv_negative_padding", lambda: _f(_x(1, 3, 5, 5), _x(4, 3, 3, 3), None, 1, -1),
        ValueError, "padding must be >= 0, got -1"),
    Bad("conv_huge_padding", lambda: _f(_x(1, 1, 1, 1), _x(1, 1, 1, 1), None, 1, 2**30),
        ValueError, "too large"),
    Bad("conv_huge_output", lambda: _f(_x(1, 1, 1, 1), _x(1, 1, 1, 1), None, 1, 2**29),
        ValueError, "too large"),
    Bad("conv_backward_dy_shape", lambda: _b(_x(1, 4, 4, 5), _x(1, 3, 5, 5), _x(4, 3, 3, 3), 1, 1),
        ValueError, r"conv2d_backward: dy must be \(N, K, P, Q\) float32 == \(1, 4, 5, 5\)"),
    Bad("conv_backward_float64_dy",
        lambda: _b(_x(1, 4, 5, 5, dtype=np.float64), _x(1, 3, 5, 5), _x(4, 3, 3, 3), 1, 1),
        TypeError, "conv2d_backward: dy must be"),
    Bad("linear_float64", lambda: _core.linear_forward(_x(2, 3, dtype=np.float64), _x(4, 3), None),
        TypeError, r"linear_forward: x must be \(N, I\) float32"),
    Bad("linear_in_mismatch", lambda: _core.linear_forward(_x(2, 3), _x(4, 5), None), ValueError,
        r"w must be \(O, I\) float32 with I == 3"),
    Bad("linear_bias_length", lambda: _core.linear_forward(_x(2, 3), _x(4, 3), _x(5)), ValueError,
        r"b must be \(O,\) float32 with O == 4"),
    Bad("linear_backward_dy_shape", lambda: _core.linear_backward(_x(2, 5), _x(2, 3), _x(4, 3)),
        ValueError, r"dy must be \(N, O\) float32 == \(2, 4\)"),
    Bad("fma_peak_threads_0", lambda: _core.fma_peak(0), ValueError, "threads must be"),
    Bad("fma_peak_seconds_0", lambda: _core.fma_peak(1, 0.0), ValueError, "seconds must be"),
]
