"""elementwise / norm / pool family rows for tests/test_ops.py (see optable.py).

References are float64 numpy written to be obviously correct, not fast:
pools are explicit loops over output cells (the window rule is the thing
under test), and every backward is written out by hand from its definition
(the harness then checks it against float64 finite differences).
"""
import math
import zlib

import numpy as np

from optable import Bad, Case
from timenet import _core


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


CASES, BAD = [], []


# ---------------------------------------------------------------------------
# group norm

def group_norm_ref(x, G, w, b, eps):
    N, C = x.shape[:2]
    xg = x.reshape(N, G, -1)
    mu = xg.mean(axis=2, keepdims=True)
    var = ((xg - mu) ** 2).mean(axis=2, keepdims=True)        # biased, as PyTorch
    y = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if w is not None:
        y = y * w.reshape(bshape)
    if b is not None:
        y = y + b.reshape(bshape)
    return y


def group_norm_ref_bwd(gy, x, G, w, eps, affine):
    N, C = x.shape[:2]
    bshape = (1, C) + (1,) * (x.ndim - 2)
    xg = x.reshape(N, G, -1)
    mu = xg.mean(axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(((xg - mu) ** 2).mean(axis=2, keepdims=True) + eps)
    xhat = (xg - mu) * rstd
    dxhat = (gy * (w.reshape(bshape) if w is not None else 1.0)).reshape(N, G, -1)
    dx = rstd * (dxhat - dxhat.mean(axis=2, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=2, keepdims=True))
    grads = {"x": dx.reshape(x.shape)}
    if affine:
        axes = (0,) + tuple(range(2, x.ndim))
        grads["w"] = (gy * xhat.reshape(x.shape)).sum(axis=axes)
        grads["b"] = gy.sum(axis=axes)
    return grads


def group_norm_case(name, shape, G, affine, eps=1e-5, scale=1.0, shift=0.0, **tol):
    rng = _rng(name)
    C = shape[1]
    inputs = {"x": rng.standard_normal(shape) * scale + shift}
    if affine:
        inputs["w"] = 1.0 + 0.5 * rng.standard_normal(C)
        inputs["b"] = rng.standard_normal(C)

    def fwd(d):
        y, mean, rstd = _core.group_norm_forward(d["x"], G, d.get("w"), d.get("b"), eps)
        assert mean.shape == rstd.shape == (shape[0], G)
        assert mean.dtype == rstd.dtype == np.float32
        return y

    def bwd(gy, d):
        _, mean, rstd = _core.group_norm_forward(d["x"], G, d.get("w"), d.get("b"), eps)
        dx, dw, db = _core.group_norm_backward(gy, d["x"], mean, rstd, G, d.get("w"))
        assert (dw is None) == (db is None) == (not affine)
        return {"x": dx, **({"w": dw, "b": db} if affine else {})}

    return Case(name, inputs, fwd,
                ref=lambda d: group_norm_ref(d["x"], G, d.get("w"), d.get("b"), eps),
                bwd=bwd,
                ref_bwd=lambda gy, d: group_norm_ref_bwd(gy, d["x"], G, d.get("w"), eps, affine),
                **tol)


CASES += [
    group_norm_case("group_norm 2x6x5x7 G=3 affine", (2, 6, 5, 7), 3, True),
    group_norm_case("group_norm 2x6x5x7 G=3 plain", (2, 6, 5, 7), 3, False),
    group_norm_case("group_norm 1x5x3x3 G=1 (layer norm)", (1, 5, 3, 3), 1, True),
    group_norm_case("group_norm 7x5x2x3 G=C (instance norm)", (7, 5, 2, 3), 5, True),
    group_norm_case("group_norm 3x17x4x3 G=17", (3, 17, 4, 3), 17, False),
    group_norm_case("group_norm 2x4x1x1 G=2 1x1 map", (2, 4, 1, 1), 2, True),
    group_norm_case("group_norm 2x8x1x1 G=8 single element groups", (2, 8, 1, 1), 8, True),
    group_norm_case("group_norm 3-D 2x6x11 G=2", (2, 6, 11), 2, True),
    group_norm_case("group_norm 2-D 5x12 G=4", (5, 12), 4, True),
    # |mean| >> std: a one-pass float variance would fail this row.
    group_norm_case("group_norm 2x4x8x8 G=2 offset 1e3", (2, 4, 8, 8), 2, True,
                    scale=1.0, shift=1000.0, atol=2e-3, rtol=1e-3, gatol=2e-3, grtol=2e-3,
                    fd=False),
    group_norm_case("group_norm eps=1e-2", (2, 6, 3, 3), 3, True, eps=1e-2),
    # Big enough to take the OpenMP path (>= TN_OMP_MIN_WORK = 262144 elements).
    group_norm_case("group_norm 2x32x64x64 G=8 threaded", (2, 32, 64, 64), 8, True,
                    fd_tol=3e-2),
    # Slabs of 3*899 = 2697 elements and planes of 899: neither a multiple of
    # the CUDA blocks (512 threads a slab forward, 256 a plane backward), so
    # every thread loops and the last pass is partial; 3 channels a group.
    group_norm_case("group_norm 2x9x29x31 G=3 block tails", (2, 9, 29, 31), 3, True,
                    fd_tol=3e-2),
]


# ---------------------------------------------------------------------------
# group norm + SiLU, fused: silu(group_norm(x)); the backward chains the two
# references. The kernel must also give the two ops' bits exactly.

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def group_norm_silu_case(name, shape, G, affine, eps=1e-5, **tol):
    rng = _rng(name)
    C = shape[1]
    inputs = {"x": rng.standard_normal(shape) * 1.5 + 0.3}
    if affine:
        inputs["w"] = 1.0 + 0.5 * rng.standard_normal(C)
        inputs["b"] = rng.standard_normal(C)

    def ref(d):
        z = group_norm_ref(d["x"], G, d.get("w"), d.get("b"), eps)
        return z * _sigmoid(z)

    def ref_bwd(gy, d):
        z = group_norm_ref(d["x"], G, d.get("w"), d.get("b"), eps)
        s = _sigmoid(z)
        return group_norm_ref_bwd(gy * s * (1 + z * (1 - s)), d["x"], G, d.get("w"), eps,
                                  affine)

    def fwd(d):
        y, mean, rstd = _core.group_norm_silu_forward(d["x"], G, d.get("w"), d.get("b"), eps)
        assert mean.shape == rstd.shape == (shape[0], G)
        assert mean.dtype == rstd.dtype == np.float64
        z, _, _ = _core.group_norm_forward(d["x"], G, d.get("w"), d.get("b"), eps)
        np.testing.assert_array_equal(y, _core.silu_forward(z))     # the two ops' bits
        return y

    def bwd(gy, d):
        _, mean, rstd = _core.group_norm_silu_forward(d["x"], G, d.get("w"), d.get("b"), eps)
        dx, dw, db = _core.group_norm_silu_backward(gy, d["x"], mean, rstd, G, d.get("w"),
                                                    d.get("b"))
        assert (dw is None) == (db is None) == (not affine)
        z, m32, r32 = _core.group_norm_forward(d["x"], G, d.get("w"), d.get("b"), eps)
        two = _core.group_norm_backward(_core.silu_backward(gy, z), d["x"], m32, r32, G,
                                        d.get("w"))
        for got, want in zip((dx, dw, db), two):
            assert (got is None and want is None) or np.array_equal(got, want)
        return {"x": dx, **({"w": dw, "b": db} if affine else {})}

    return Case(name, inputs, fwd, ref, bwd, ref_bwd, **tol)


CASES += [
    group_norm_silu_case("group_norm_silu 2x6x5x7 G=3 affine", (2, 6, 5, 7), 3, True),
    group_norm_silu_case("group_norm_silu 2x6x5x7 G=3 plain", (2, 6, 5, 7), 3, False),
    group_norm_silu_case("group_norm_silu 7x5x2x3 G=C", (7, 5, 2, 3), 5, True),
    group_norm_silu_case("group_norm_silu 3-D 2x6x11 G=2", (2, 6, 11), 2, True),
    group_norm_silu_case("group_norm_silu eps=1e-2", (2, 6, 3, 3), 3, True, eps=1e-2),
    # The OpenMP path (>= TN_OMP_MIN_WORK elements): one dz slab per thread.
    group_norm_silu_case("group_norm_silu 2x32x64x64 G=8 threaded", (2, 32, 64, 64), 8, True,
                         fd_tol=3e-2),
]


# ---------------------------------------------------------------------------
# activations


def silu_case(name, shape, scale=3.0):
    rng = _rng(name)
    return Case(name, {"x": rng.standard_normal(shape) * scale},
                fwd=lambda d: _core.silu_forward(d["x"]),
                ref=lambda d: d["x"] * _sigmoid(d["x"]),
                bwd=lambda gy, d: {"x": _core.silu_backward(gy, d["x"])},
                ref_bwd=lambda gy, d: {"x": gy * _sigmoid(d["x"]) * (
                    1 + d["x"] * (1 - _sigmoid(d["x"])))})


def sigmoid_case(name, shape, scale=3.0):
    rng = _rng(name)
    return Case(name, {"x": rng.standard_normal(shape) * scale},
                fwd=lambda d: _core.sigmoid_forward(d["x"]),
                ref=lambda d: _sigmoid(d["x"]),
                bwd=lambda gy, d: {"x": _core.sigmoid_backward(gy, _core.sigmoid_forward(d["x"]))},
                ref_bwd=lambda gy, d: {"x": gy * _sigmoid(d["x"]) * (1 - _sigmoid(d["x"]))})


def relu_case(name, shape):
    rng = _rng(name)
    # |x| >= 0.25 so no FD step (<= ~0.05) crosses the kink at 0.
    z = rng.standard_normal(shape)
    x = np.sign(z) * (0.25 + np.abs(z))
    return Case(name, {"x": x},
                fwd=lambda d: _core.relu_forward(d["x"]),
                ref=lambda d: np.maximum(d["x"], 0.0),
                bwd=lambda gy, d: {"x": _core.relu_backward(gy, d["x"])},
                ref_bwd=lambda gy, d: {"x": gy * (d["x"] > 0)})


CASES += [
    silu_case("silu 2x3x5x7", (2, 3, 5, 7)),
    silu_case("silu 17", (17,)),
    silu_case("silu large |x| 3x5", (3, 5), scale=40.0),
    silu_case("silu 2x16x64x129 threaded", (2, 16, 64, 129)),
    sigmoid_case("sigmoid 1x5x7x5", (1, 5, 7, 5)),
    sigmoid_case("sigmoid large |x| 4x17", (4, 17), scale=40.0),
    sigmoid_case("sigmoid 2x16x64x129 threaded", (2, 16, 64, 129)),
    relu_case("relu 7x3x5x7", (7, 3, 5, 7)),
    relu_case("relu 1x1x1x1", (1, 1, 1, 1)),
    relu_case("relu 2x16x64x129 threaded", (2, 16, 64, 129)),
]


# ---------------------------------------------------------------------------
# nearest upsampling

def upsample_ref(x, s):
    return x.repeat(s, axis=2).repeat(s, axis=3)


def upsample_ref_bwd(gy, s):
    N, C, OH, OW = gy.shape
    return gy.reshape(N, C, OH // s, s, OW // s, s).sum(axis=(3, 5))


def upsample_case(name, shape, s):
    rng = _rng(name)
    return Case(name, {"x": rng.standard_normal(shape)},
                fwd=lambda d: _core.upsample_nearest_forward(d["x"], s),
                ref=lambda d: upsample_ref(d["x"], s),
                bwd=lambda gy, d: {"x": _core.upsample_nearest_backward(gy, s)},
                ref_bwd=lambda gy, d: {"x": upsample_ref_bwd(gy, s)})


CASES += [
    upsample_case("upsample x2 2x3x5x7", (2, 3, 5, 7), 2),
    upsample_case("upsample x3 1x5x1x1", (1, 5, 1, 1), 3),
    upsample_case("upsample x1 identity 3x2x4x3", (3, 2, 4, 3), 1),
    upsample_case("upsample x2 2x8x64x64 threaded", (2, 8, 64, 64), 2),
    upsample_case("upsample x3 2x3x5x7", (2, 3, 5, 7), 3),
]


# ---------------------------------------------------------------------------
# pools

def _out(H, k, stride, pad):
    return (H + 2 * pad - k) // stride + 1


def avg_pool_ref(x, k, stride, pad):
    N, C, H, W = x.shape
    P, Q = _out(H, k, stride, pad), _out(W, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))   # zeros count (include_pad)
    y = np.zeros((N, C, P, Q))
    for p in range(P):
        for q in range(Q):
            y[:, :, p, q] = xp[:, :, p * stride:p * stride + k, q * stride:q * stride + k].sum(
                axis=(2, 3)) / (k * k)
    return y


def avg_pool_ref_bwd(gy, shape, k, stride, pad):
    N, C, H, W = shape
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    for p in range(gy.shape[2]):
        for q in range(gy.shape[3]):
            dxp[:, :, p * stride:p * stride + k, q * stride:q * stride + k] += (
                gy[:, :, p, q][:, :, None, None] / (k * k))
    return dxp[:, :, pad:pad + H, pad:pad + W]


def avg_pool_case(name, shape, k, stride, pad):
    rng = _rng(name)
    return Case(name, {"x": rng.standard_normal(shape)},
                fwd=lambda d: _core.avg_pool2d_forward(d["x"], k, stride, pad),
                ref=lambda d: avg_pool_ref(d["x"], k, stride, pad),
                bwd=lambda gy, d: {"x": _core.avg_pool2d_backward(gy, d["x"].shape, k, stride,
                                                                  pad)},
                ref_bwd=lambda gy, d: {"x": avg_pool_ref_bwd(gy, d["x"].shape, k, stride, pad)})


def _adaptive_windows(n_in, n_out):
    return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


def adaptive_ref(x, oh, ow):
    N, C, H, W = x.shape
    y = np.zeros((N, C, oh, ow))
    for i, (ha, hb) in enumerate(_adaptive_windows(H, oh)):
        for j, (wa, wb) in enumerate(_adaptive_windows(W, ow)):
            y[:, :, i, j] = x[:, :, ha:hb, wa:wb].mean(axis=(2, 3))
    return y


def adaptive_ref_bwd(gy, shape):
    N, C, H, W = shape
    oh, ow = gy.shape[2:]
    dx = np.zeros(shape)
    for i, (ha, hb) in enumerate(_adaptive_windows(H, oh)):
        for j, (wa, wb) in enumerate(_adaptive_windows(W, ow)):
            dx[:, :, ha:hb, wa:wb] += gy[:, :, i, j][:, :, None, None] / ((hb - ha) * (wb - wa))
    return dx


def adaptive_case(name, shape, oh, ow):
    rng = _rng(name)
    return Case(name, {"x": rng.standard_normal(shape)},
                fwd=lambda d: _core.adaptive_avg_pool2d_forward(d["x"], oh, ow),
                ref=lambda d: adaptive_ref(d["x"], oh, ow),
                bwd=lambda gy, d: {"x": _core.adaptive_avg_pool2d_backward(gy, d["x"].shape)},
                ref_bwd=lambda gy, d: {"x": adaptive_ref_bwd(gy, d["x"].shape)})


def max_pool_ref(x, k, stride, pad):
    N, C, H, W = x.shape
    P, Q = _out(H, k, stride, pad), _out(W, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    y = np.zeros((N, C, P, Q))
    for p in range(P):
        for q in range(Q):
            y[:, :, p, q] = xp[:, :, p * stride:p * stride + k, q * stride:q * stride + k].max(
                axis=(2, 3))
    return y


def max_pool_ref_bwd(gy, x, k, stride, pad):
    """Each output cell sends its gradient to the (first) maximum of its window."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    for n in range(N):
        for c in range(C):
            for p in range(gy.shape[2]):
                for q in range(gy.shape[3]):
                    win = xp[n, c, p * stride:p * stride + k, q * stride:q * stride + k]
                    r, s = np.unravel_index(np.argmax(win), win.shape)
                    dxp[n, c, p * stride + r, q * stride + s] += gy[n, c, p, q]
    return dxp[:, :, pad:pad + H, pad:pad + W]


def max_pool_case(name, shape, k, stride, pad):
    rng = _rng(name)
    # Distinct values 0.25 apart: no FD step crosses a change of argmax.
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) - np.prod(shape) / 2) * 0.25

    def bwd(gy, d):
        y, argmax = _core.max_pool2d_forward(d["x"], k, stride, pad)
        assert argmax.dtype == np.int32 and argmax.shape == y.shape
        return {"x": _core.max_pool2d_backward(gy, argmax, d["x"].shape)}

    return Case(name, {"x": x},
                fwd=lambda d: _core.max_pool2d_forward(d["x"], k, stride, pad)[0],
                ref=lambda d: max_pool_ref(d["x"], k, stride, pad),
                bwd=bwd,
                ref_bwd=lambda gy, d: {"x": max_pool_ref_bwd(gy, d["x"], k, stride, pad)})


CASES += [
    avg_pool_case("avg_pool k2 s2 p0 2x3x6x8", (2, 3, 6, 8), 2, 2, 0),
    avg_pool_case("avg_pool k3 s2 p1 1x5x7x5", (1, 5, 7, 5), 3, 2, 1),
    avg_pool_case("avg_pool k3 s1 p1 2x3x5x7", (2, 3, 5, 7), 3, 1, 1),
    avg_pool_case("avg_pool k8 s1 p0 1x1x9x11 (image score)", (1, 1, 9, 11), 8, 1, 0),
    avg_pool_case("avg_pool k1 s1 p0 1x1x1x1", (1, 1, 1, 1), 1, 1, 0),
    avg_pool_case("avg_pool k4 s3 p2 7x2x9x6", (7, 2, 9, 6), 4, 3, 2),
    avg_pool_case("avg_pool k2 s2 2x8x128x128 threaded", (2, 8, 128, 128), 2, 2, 0),
    # stride > kernel: rows / columns 1, 4, 7 lie in no window (gradient 0;
    # the CUDA backward's gather finds an empty window range there).
    avg_pool_case("avg_pool k2 s3 p1 1x2x8x7 gaps", (1, 2, 8, 7), 2, 3, 1),
    adaptive_case("adaptive 7x5 -> 3x2", (2, 3, 7, 5), 3, 2),
    adaptive_case("adaptive 5x7 -> 5x7 identity", (1, 2, 5, 7), 5, 7),
    adaptive_case("adaptive 3x2 -> 5x7 (upsampling)", (2, 3, 3, 2), 5, 7),
    adaptive_case("adaptive 8x8 -> 1x1 (global)", (7, 5, 8, 8), 1, 1),
    adaptive_case("adaptive 1x1 -> 1x1", (1, 17, 1, 1), 1, 1),
    adaptive_case("adaptive 2x8x128x128 -> 16x16 threaded", (2, 8, 128, 128), 16, 16),
    max_pool_case("max_pool k2 s2 p0 2x3x6x8", (2, 3, 6, 8), 2, 2, 0),
    max_pool_case("max_pool k3 s2 p1 1x5x7x5", (1, 5, 7, 5), 3, 2, 1),
    max_pool_case("max_pool k3 s1 p1 2x2x5x7 overlapping", (2, 2, 5, 7), 3, 1, 1),
    max_pool_case("max_pool k2 s1 p1 1x3x1x1", (1, 3, 1, 1), 2, 1, 1),
    max_pool_case("max_pool k4 s3 p2 3x2x9x6", (3, 2, 9, 6), 4, 3, 2),
    max_pool_case("max_pool k2 s3 p1 1x2x8x7 gaps", (1, 2, 8, 7), 2, 3, 1),
]


# ---------------------------------------------------------------------------
# embeddings

def embedding_case(name, V, D, ids):
    rng = _rng(name)
    ids = np.asarray(ids, dtype=np.int64)

    def ref_bwd(gy, d):
        dt = np.zeros((V, D))
        for i, j in enumerate(d["ids"]):
            dt[j] += gy[i]
        return {"table": dt}

    return Case(name, {"table": rng.standard_normal((V, D)), "ids": ids},
                fwd=lambda d: _core.embedding_forward(d["table"], d["ids"]),
                ref=lambda d: d["table"][d["ids"]],
                bwd=lambda gy, d: {"table": _core.embedding_backward(gy, d["ids"], V)},
                ref_bwd=ref_bwd, no_grad=("ids",))


def timestep_ref(t, dim, max_period=10000.0):
    """DDPM's get_timestep_embedding (diffusion_tf/nn.py), in float64."""
    half = dim // 2
    emb = math.log(max_period) / (half - 1)
    emb = np.exp(np.arange(half) * -emb)
    emb = t[:, None] * emb[None, :]
    emb = np.concatenate([np.sin(emb), np.cos(emb)], axis=1)
    if dim % 2 == 1:
        emb = np.pad(emb, ((0, 0), (0, 1)))
    return emb


def timestep_case(name, t, dim, **kw):
    t = _f32(t).astype(np.float64)       # float32-exact, so both sides see the same t
    return Case(name, {"t": t},
                fwd=lambda d: _core.timestep_embedding(d["t"], dim, **kw),
                ref=lambda d: timestep_ref(d["t"], dim, **kw),
                atol=2e-6, rtol=0)


CASES += [
    embedding_case("embedding V=10 D=5 repeated ids", 10, 5, [3, 0, 9, 3, 3, 7, 0]),
    embedding_case("embedding V=1 D=17", 1, 17, [0, 0]),
    embedding_case("embedding V=15 D=3 one id", 15, 3, [14]),
    # N * V > 2**20: the CUDA backward's zero-then-atomicAdd scatter path
    # (smaller tables gather per row); ids repeat.
    embedding_case("embedding V=1025 D=3 N=1024 scatter", 1025, 3,
                   np.random.default_rng(7).integers(0, 1025, 1024)),
    timestep_case("timestep_embedding dim=128 t*999", np.array([0.0, 0.001, 0.5, 0.83, 1.0]) * 999,
                  128),
    timestep_case("timestep_embedding dim=7 odd", np.array([0.0, 3.0, 250.5]), 7),
    timestep_case("timestep_embedding dim=4 one t", np.array([17.0]), 4),
    timestep_case("timestep_embedding max_period=100", np.array([1.0, 10.0, 99.0]), 10,
                  max_period=100.0),
]


# ---------------------------------------------------------------------------
# concat

def concat_case(name, shapes):
    rng = _rng(name)
    names = [f"x{i}" for i in range(len(shapes))]
    sizes = [s[1] for s in shapes]

    def ref_bwd(gy, d):
        bounds = np.cumsum([0] + sizes)
        return {k: gy[:, bounds[i]:bounds[i + 1]] for i, k in enumerate(names)}

    def bwd(gy, d):
        dxs = _core.concat_backward(gy, sizes)
        assert isinstance(dxs, list) and len(dxs) == len(names)
        return dict(zip(names, dxs))

    return Case(name, {k: rng.standard_normal(s) for k, s in zip(names, shapes)},
                fwd=lambda d: _core.concat_forward([d[k] for k in names]),
                ref=lambda d: np.concatenate([d[k] for k in names], axis=1),
                bwd=bwd, ref_bwd=ref_bwd)


CASES += [
    concat_case("concat 3+5+1 channels 2x_x5x7", [(2, 3, 5, 7), (2, 5, 5, 7), (2, 1, 5, 7)]),
    concat_case("concat one input 1x17x1x1", [(1, 17, 1, 1)]),
    concat_case("concat 3-D 7x(2+3)x11", [(7, 2, 11), (7, 3, 11)]),
    concat_case("concat 2-D 3x(4+1)", [(3, 4), (3, 1)]),
    concat_case("concat 4x(32+32)x32x32 threaded", [(4, 32, 32, 32), (4, 32, 32, 32)]),
]


# ---------------------------------------------------------------------------
# broadcasting add / mul

def _sum_to(g, shape):
    axes = tuple(i for i, n in enumerate(shape) if n == 1)
    return g.sum(axis=axes, keepdims=True)


def add_case(name, a_shape, b_shape):
    rng = _rng(name)

    def bwd(gy, d):
        da, db = _core.add_backward(gy, d["b"].shape)
        return {"a": da, "b": db}

    return Case(name, {"a": rng.standard_normal(a_shape), "b": rng.standard_normal(b_shape)},
                fwd=lambda d: _core.add_forward(d["a"], d["b"]),
                ref=lambda d: d["a"] + d["b"],
                bwd=bwd,
                ref_bwd=lambda gy, d: {"a": gy, "b": _sum_to(gy, d["b"].shape)})


def mul_case(name, a_shape, b_shape):
    rng = _rng(name)

    def bwd(gy, d):
        da, db = _core.mul_backward(gy, d["a"], d["b"])
        return {"a": da, "b": db}

    return Case(name, {"a": rng.standard_normal(a_shape), "b": rng.standard_normal(b_shape)},
                fwd=lambda d: _core.mul_forward(d["a"], d["b"]),
                ref=lambda d: d["a"] * d["b"],
                bwd=bwd,
                ref_bwd=lambda gy, d: {"a": gy * d["b"], "b": _sum_to(gy * d["a"], d["b"].shape)})


_BCAST = [
    ("same shape", (2, 3, 5, 7), (2, 3, 5, 7)),
    ("over N", (7, 3, 5, 7), (1, 3, 5, 7)),
    ("over H,W", (2, 5, 5, 7), (2, 5, 1, 1)),
    ("over C", (2, 17, 3, 5), (2, 1, 3, 5)),
    ("over N,H,W (channel bias)", (7, 3, 5, 7), (1, 3, 1, 1)),
    ("over N,C,H (row)", (2, 3, 4, 5), (1, 1, 1, 5)),
    ("mixed 1xCx1xW", (2, 3, 4, 5), (1, 3, 1, 5)),
    ("scalar", (2, 3, 5, 7), (1, 1, 1, 1)),
    ("1x1 maps", (1, 5, 1, 1), (1, 5, 1, 1)),
    ("2-D (N, C) + (1, C)", (7, 17), (1, 17)),
    ("2-D (N, C) + (N, 1)", (7, 17), (7, 1)),
    ("3-D (N, L, C) + (N, 1, C)", (2, 9, 6), (2, 1, 6)),
    ("threaded over H,W", (2, 64, 64, 64), (2, 64, 1, 1)),
    ("threaded over N", (4, 16, 64, 64), (1, 16, 64, 64)),
    # The CUDA db reductions' layouts: split blocks with 2 splits (9216
    # summed a value), thread per output over coalesced rows (1100 outputs,
    # 40 summed), and a trailing size-1 dim (1100 outputs 40 floats apart).
    ("split reduction over H,W", (1, 3, 96, 96), (1, 3, 1, 1)),
    ("over N, wide rows", (40, 1, 1100), (1, 1, 1100)),
    ("over C, trailing 1", (1100, 40, 1), (1100, 1, 1)),
]
CASES += [add_case(f"add {n} {a}+{b}", a, b) for n, a, b in _BCAST]
CASES += [mul_case(f"mul {n} {a}*{b}", a, b) for n, a, b in _BCAST]


# ---------------------------------------------------------------------------
# mse

def mse_case(name, shape):
    rng = _rng(name)

    def bwd(gy, d):
        dx = _core.mse_backward(d["x"], d["y"], float(gy))
        return {"x": dx, "y": -dx}

    def ref_bwd(gy, d):
        dx = gy * 2 * (d["x"] - d["y"]) / d["x"].size
        return {"x": dx, "y": -dx}

    def fwd(d):
        loss = _core.mse_forward(d["x"], d["y"])
        assert isinstance(loss, float)
        return np.array(loss, dtype=np.float32)

    return Case(name, {"x": rng.standard_normal(shape), "y": rng.standard_normal(shape)},
                fwd=fwd, ref=lambda d: np.array(np.mean((d["x"] - d["y"]) ** 2)),
                bwd=bwd, ref_bwd=ref_bwd)


CASES += [
    mse_case("mse 2x3x5x7", (2, 3, 5, 7)),
    mse_case("mse 1", (1,)),
    mse_case("mse 8x3x128x128 threaded", (8, 3, 128, 128)),
]


# ---------------------------------------------------------------------------
# bad inputs

def _x(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


_ncol = np.ones((2, 3, 4, 10), np.float32)[..., ::2]          # non-contiguous view
_ids_bad = np.array([1, 10], np.int64)
_am = np.zeros((1, 1, 2, 2), np.int32)
_am_bad = _am.copy()
_am_bad[0, 0, 1, 1] = 16


BAD += [
    # group norm
    Bad("group_norm float64 x", lambda: _core.group_norm_forward(
        _x(2, 4, 3, 3, dtype=np.float64), 2, None, None, 1e-5), TypeError, "float32"),
    Bad("group_norm 1-D x", lambda: _core.group_norm_forward(_x(8), 2, None, None, 1e-5),
        ValueError, r"group_norm_forward: x must be \(N, C, \*\)"),
    Bad("group_norm C not divisible", lambda: _core.group_norm_forward(
        _x(2, 6, 3, 3), 4, None, None, 1e-5), ValueError, "divide C = 6"),
    Bad("group_norm zero groups", lambda: _core.group_norm_forward(
        _x(2, 6, 3, 3), 0, None, None, 1e-5), ValueError, "num_groups"),
    Bad("group_norm w wrong length", lambda: _core.group_norm_forward(
        _x(2, 6, 3, 3), 3, _x(5), _x(6), 1e-5), ValueError, r"w must be \(C,\) = \(6,\)"),
    Bad("group_norm w without b", lambda: _core.group_norm_forward(
        _x(2, 6, 3, 3), 3, _x(6), None, 1e-5), ValueError, "both"),
    Bad("group_norm negative eps", lambda: _core.group_norm_forward(
        _x(2, 6, 3, 3), 3, None, None, -1.0), ValueError, "eps"),
    Bad("group_norm_backward mean shape", lambda: _core.group_norm_backward(
        _x(2, 6, 3, 3), _x(2, 6, 3, 3), _x(2, 2), _x(2, 3), 3, None), ValueError,
        r"mean must be \(N, G\) = \(2, 3\)"),
    Bad("group_norm_backward dy shape", lambda: _core.group_norm_backward(
        _x(2, 6, 3, 4), _x(2, 6, 3, 3), _x(2, 3), _x(2, 3), 3, None), ValueError,
        r"dy must be \(2, 6, 3, 3\)"),
    # group norm + SiLU
    Bad("group_norm_silu float64 x", lambda: _core.group_norm_silu_forward(
        _x(2, 4, 3, 3, dtype=np.float64), 2, None, None, 1e-5), TypeError,
        "group_norm_silu_forward: x must be"),
    Bad("group_norm_silu w without b", lambda: _core.group_norm_silu_forward(
        _x(2, 6, 3, 3), 3, _x(6), None, 1e-5), ValueError, "both"),
    Bad("group_norm_silu_backward float32 stats", lambda: _core.group_norm_silu_backward(
        _x(2, 6, 3, 3), _x(2, 6, 3, 3), _x(2, 3), _x(2, 3), 3, None, None), TypeError,
        r"mean must be \(N, G\) = \(2, 3\) float64"),
    Bad("group_norm_silu_backward stats shape", lambda: _core.group_norm_silu_backward(
        _x(2, 6, 3, 3), _x(2, 6, 3, 3), _x(2, 3, dtype=np.float64), _x(2, 2, dtype=np.float64),
        3, None, None), ValueError, r"rstd must be \(N, G\) = \(2, 3\)"),
    Bad("group_norm_silu_backward w without b", lambda: _core.group_norm_silu_backward(
        _x(2, 6, 3, 3), _x(2, 6, 3, 3), _x(2, 3, dtype=np.float64), _x(2, 3, dtype=np.float64),
        3, _x(6), None), ValueError, "both"),
    Bad("group_norm_silu_backward dy shape", lambda: _core.group_norm_silu_backward(
        _x(2, 6, 3, 4), _x(2, 6, 3, 3), _x(2, 3, dtype=np.float64), _x(2, 3, dtype=np.float64),
        3, None, None), ValueError, r"dy must be \(2, 6, 3, 3\)"),
    # activations
    Bad("silu non-contiguous", lambda: _core.silu_forward(_ncol), ValueError, "C-contiguous"),
    Bad("silu zero-size", lambda: _core.silu_forward(_x(2, 0, 3)), ValueError, "zero-size"),
    Bad("silu list", lambda: _core.silu_forward([1.0, 2.0]), TypeError, "silu_forward"),
    Bad("silu float64", lambda: _core.silu_forward(_x(3, dtype=np.float64)), TypeError,
        "float32"),
    Bad("silu_backward shape mismatch", lambda: _core.silu_backward(_x(2, 3), _x(3, 2)),
        ValueError, r"silu_backward: dy must be \(3, 2\)"),
    Bad("sigmoid_backward ndim mismatch", lambda: _core.sigmoid_backward(_x(6), _x(2, 3)),
        ValueError, "sigmoid_backward: dy"),
    Bad("relu byte-swapped", lambda: _core.relu_forward(_x(3, dtype=">f4")), TypeError,
        "byte-swapped"),
    # upsample
    Bad("upsample scale 0", lambda: _core.upsample_nearest_forward(_x(1, 2, 3, 3), 0),
        ValueError, "scale must be"),
    Bad("upsample 3-D x", lambda: _core.upsample_nearest_forward(_x(2, 3, 3), 2), ValueError,
        r"x must be \(N, C, H, W\)"),
    Bad("upsample_backward not divisible", lambda: _core.upsample_nearest_backward(
        _x(1, 2, 5, 4), 2), ValueError, "dividing"),
    # pools
    Bad("avg_pool negative kernel", lambda: _core.avg_pool2d_forward(_x(1, 1, 4, 4), -2, 1, 0),
        ValueError, "kernel >= 1"),
    Bad("avg_pool zero stride", lambda: _core.avg_pool2d_forward(_x(1, 1, 4, 4), 2, 0, 0),
        ValueError, "stride >= 1"),
    Bad("avg_pool padding > k/2", lambda: _core.avg_pool2d_forward(_x(1, 1, 4, 4), 3, 1, 2),
        ValueError, "at most half"),
    Bad("avg_pool kernel > input", lambda: _core.avg_pool2d_forward(_x(1, 1, 4, 4), 5, 1, 0),
        ValueError, "larger than the padded input"),
    Bad("avg_pool_backward dy shape", lambda: _core.avg_pool2d_backward(
        _x(1, 1, 3, 2), (1, 1, 4, 4), 2, 2, 0), ValueError, r"dy must be \(N, C, P, Q\) = "
        r"\(1, 1, 2, 2\)"),
    Bad("avg_pool_backward bad x_shape", lambda: _core.avg_pool2d_backward(
        _x(1, 1, 2, 2), (1, 4, 4), 2, 2, 0), ValueError, "x_shape must have 4 entries"),
    Bad("adaptive out 0", lambda: _core.adaptive_avg_pool2d_forward(_x(1, 1, 4, 4), 0, 2),
        ValueError, "out_h and out_w"),
    Bad("adaptive_backward N mismatch", lambda: _core.adaptive_avg_pool2d_backward(
        _x(2, 1, 2, 2), (1, 1, 4, 4)), ValueError, "adaptive_avg_pool2d_backward: dy"),
    Bad("max_pool negative padding", lambda: _core.max_pool2d_forward(_x(1, 1, 4, 4), 2, 2, -1),
        ValueError, "padding >= 0"),
    Bad("max_pool argmax out of range", lambda: _core.max_pool2d_backward(
        _x(1, 1, 2, 2), _am_bad, (1, 1, 4, 4)), ValueError, r"argmax\[3\] = 16"),
    Bad("max_pool argmax int64", lambda: _core.max_pool2d_backward(
        _x(1, 1, 2, 2), _am.astype(np.int64), (1, 1, 4, 4)), TypeError, "int32"),
    Bad("max_pool argmax shape", lambda: _core.max_pool2d_backward(
        _x(1, 1, 2, 2), np.zeros((1, 1, 2, 3), np.int32), (1, 1, 4, 4)), ValueError, "argmax"),
    # embeddings
    Bad("embedding id out of range", lambda: _core.embedding_forward(_x(10, 4), _ids_bad),
        ValueError, r"id 10 \(ids\[1\]\) is out of range for 10"),
    Bad("embedding negative id", lambda: _core.embedding_forward(
        _x(10, 4), np.array([-1], np.int64)), ValueError, "id -1"),
    Bad("embedding ids int32", lambda: _core.embedding_forward(
        _x(10, 4), np.array([1], np.int32)), TypeError, "int64"),
    Bad("embedding ids 2-D", lambda: _core.embedding_forward(
        _x(10, 4), np.zeros((2, 1), np.int64)), ValueError, r"ids must be \(N,\)"),
    Bad("embedding_backward id out of range", lambda: _core.embedding_backward(
        _x(2, 4), _ids_bad, 10), ValueError, "id 10"),
    Bad("embedding_backward dy rows", lambda: _core.embedding_backward(
        _x(3, 4), np.array([1, 2], np.int64), 10), ValueError, "N = len\\(ids\\) = 2"),
    Bad("timestep dim 3", lambda: _core.timestep_embedding(_x(2), 3), ValueError,
        "dim must be >= 4"),
    Bad("timestep 2-D t", lambda: _core.timestep_embedding(_x(2, 1), 8), ValueError,
        r"t must be \(N,\)"),
    Bad("timestep max_period 0", lambda: _core.timestep_embedding(_x(2), 8, 0.0), ValueError,
        "max_period"),
    # concat
    Bad("concat N mismatch", lambda: _core.concat_forward([_x(2, 3, 4), _x(3, 3, 4)]),
        ValueError, r"xs\[1\] must be"),
    Bad("concat rest mismatch", lambda: _core.concat_forward([_x(2, 3, 4, 4), _x(2, 1, 4, 5)]),
        ValueError, r"matching xs\[0\] \(2, 3, 4, 4\)"),
    Bad("concat ndim mismatch", lambda: _core.concat_forward([_x(2, 3, 4), _x(2, 3, 4, 1)]),
        ValueError, r"xs\[1\]"),
    Bad("concat empty list", lambda: _core.concat_forward([]), ValueError, "at least one"),
    Bad("concat not a list", lambda: _core.concat_forward(_x(2, 3)), TypeError, "list"),
    Bad("concat float64 member", lambda: _core.concat_forward(
        [_x(2, 3), _x(2, 3, dtype=np.float64)]), TypeError, r"xs\[1\]"),
    Bad("concat_backward sizes sum", lambda: _core.concat_backward(_x(2, 5, 3), [2, 2]),
        ValueError, "summing to 4"),
    Bad("concat_backward sizes too big", lambda: _core.concat_backward(_x(2, 5, 3), [4, 4]),
        ValueError, "summing to at least 8"),
    Bad("concat_backward size 0", lambda: _core.concat_backward(_x(2, 5, 3), [5, 0]),
        ValueError, r"sizes\[1\] must be >= 1"),
    # broadcasting
    Bad("add broadcast mismatch", lambda: _core.add_forward(_x(2, 4, 3, 3), _x(1, 3, 1, 1)),
        ValueError,
        r"add_forward: b must have a's ndim .* \(2, 4, 3, 3\) or 1, got \(1, 3, 1, 1\)"),
    Bad("add b bigger than a", lambda: _core.add_forward(_x(1, 4), _x(2, 4)), ValueError,
        "add_forward: b"),
    Bad("mul ndim mismatch (no silent broadcast)", lambda: _core.mul_forward(
        _x(2, 4, 3, 3), _x(4, 1, 1)), ValueError, "mul_forward: b must have a's ndim"),
    Bad("add_backward b_shape mismatch", lambda: _core.add_backward(_x(2, 4, 3, 3), (1, 2, 1, 1)),
        ValueError, "add_backward: b_shape"),
    Bad("add_backward b_shape length", lambda: _core.add_backward(_x(2, 4, 3, 3), (1, 4)),
        ValueError, "b_shape must have 4 entries"),
    Bad("mul_backward dy shape", lambda: _core.mul_backward(_x(2, 4), _x(2, 3), _x(1, 3)),
        ValueError, r"mul_backward: dy must be \(2, 3\)"),
    # mse
    Bad("mse shape mismatch", lambda: _core.mse_forward(_x(2, 3), _x(3, 2)), ValueError,
        r"mse_forward: y must be \(2, 3\)"),
    Bad("mse float64", lambda: _core.mse_backward(_x(2, dtype=np.float64), _x(2)), TypeError,
        "mse_backward: x"),
]
