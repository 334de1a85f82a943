"""Op-table rows for the attention family (see optable.py).

attention_forward / attention_backward against a float64 numpy reference:
per head h (channels [h*d, (h+1)*d) of C), P = softmax(q_h k_h^T / sqrt(d))
along the key axis, out_h = P v_h; the backward is written out by hand.
The adamw / grad_norm / scale_ kernels have no (x -> y) shape for this
table; tests/test_optim.py covers them.
"""
import zlib

import numpy as np

from optable import Bad, Case
from timenet import _core


def _heads(x, H):
    """(N, L, C) -> (N, H, L, d)."""
    N, L, C = x.shape
    return x.reshape(N, L, H, C // H).transpose(0, 2, 1, 3)


def _merge(x):
    """(N, H, L, d) -> (N, L, H*d)."""
    N, H, L, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(N, L, H * d)


def ref_attention(x, H):
    """float64 forward: (out (N, L, C), probs (N, H, L, L))."""
    q, k, v = (_heads(x[n], H) for n in "qkv")
    d = q.shape[-1]
    S = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    S = S - S.max(axis=-1, keepdims=True)
    P = np.exp(S)
    P /= P.sum(axis=-1, keepdims=True)
    return _merge(P @ v), P


def ref_attention_backward(gy, x, H):
    """float64 gradients of sum(gy * out) with respect to q, k, v."""
    q, k, v = (_heads(x[n], H) for n in "qkv")
    d = q.shape[-1]
    _, P = ref_attention(x, H)
    g = _heads(gy, H)
    dv = P.transpose(0, 1, 3, 2) @ g
    dP = g @ v.transpose(0, 1, 3, 2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    dq = dS @ k / np.sqrt(d)
    dk = dS.transpose(0, 1, 3, 2) @ q / np.sqrt(d)
    return {"q": _merge(dq), "k": _merge(dk), "v": _merge(dv)}


def c_attention(x, H):
    out, probs = _core.attention_forward(x["q"], x["k"], x["v"], H)
    return out


def c_attention_backward(gy, x, H):
    _, probs = _core.attention_forward(x["q"], x["k"], x["v"], H)
    dq, dk, dv = _core.attention_backward(gy, x["q"], x["k"], x["v"], probs, H)
    return {"q": dq, "k": dk, "v": dv}


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


CASES = []
for N in (1, 7):
    for L in (1, 4, 17, 64):
        for C, H in ((3, 1), (8, 2), (12, 3)):
            name = f"attention_N{N}_L{L}_C{C}_h{H}"
            rng = _rng(name)
            inputs = {n: rng.standard_normal((N, L, C)) for n in "qkv"}
            CASES.append(Case(
                name=name,
                inputs=inputs,
                fwd=lambda x, H=H: c_attention(x, H),
                ref=lambda x, H=H: ref_attention(x, H)[0],
                bwd=lambda gy, x, H=H: c_attention_backward(gy, x, H),
                ref_bwd=lambda gy, x, H=H: ref_attention_backward(gy, x, H),
            ))


def _f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


_q = _f32(2, 4, 8)
_k = _f32(2, 4, 8, seed=1)
_v = _f32(2, 4, 8, seed=2)
_probs = _core.attention_forward(_q, _k, _v, 2)[1]

BAD = [
    Bad("attention_forward_k_shape",
        lambda: _core.attention_forward(_q, _f32(2, 5, 8), _v, 2), ValueError,
        r"attention_forward: k must be \(N, L, C\) = q.shape = \(2, 4, 8\), got \(2, 5, 8\)"),
    Bad("attention_forward_v_shape",
        lambda: _core.attention_forward(_q, _k, _f32(2, 4, 6), 2), ValueError,
        r"attention_forward: v must be \(N, L, C\) = q.shape = \(2, 4, 8\)"),
    Bad("attention_forward_q_2d",
        lambda: _core.attention_forward(_f32(4, 8), _k, _v, 2), ValueError,
        r"attention_forward: q must be \(N, L, C\) float32, got \(4, 8\)"),
    Bad("attention_forward_heads_not_dividing",
        lambda: _core.attention_forward(_q, _k, _v, 3), ValueError,
        r"attention_forward: C = 8 .* divisible by num_heads = 3"),
    Bad("attention_forward_zero_heads",
        lambda: _core.attention_forward(_q, _k, _v, 0), ValueError,
        r"attention_forward: num_heads must be >= 1, got 0"),
    Bad("attention_forward_float64",
        lambda: _core.attention_forward(_q.astype(np.float64), _k, _v, 2), TypeError,
        r"attention_forward: q must be \(N, L, C\) float32, got \(2, 4, 8\) float64"),
    Bad("attention_forward_k_float64",
        lambda: _core.attention_forward(_q, _k.astype(np.float64), _v, 2), TypeError,
        r"attention_forward: k must be .* float32"),
    Bad("attention_forward_noncontiguous",
        lambda: _core.attention_forward(_f32(2, 8, 8)[:, ::2], _k, _v, 2), ValueError,
        r"attention_forward: q must be C-contiguous"),
    Bad("attention_forward_list",
        lambda: _core.attention_forward(_q.tolist(), _k, _v, 2), TypeError,
        r"attention_forward: q must be a numpy float32 array"),
    Bad("attention_forward_zero_size",
        lambda: _core.attention_forward(*[np.zeros((2, 0, 8), np.float32)] * 3, 2), ValueError,
        r"attention_forward: q has a zero-size dimension"),
    Bad("attention_backward_probs_shape",
        lambda: _core.attention_backward(_q, _q, _k, _v, _f32(2, 2, 4, 5), 2), ValueError,
        r"attention_backward: probs must be \(N, num_heads, L, L\) = \(2, 2, 4, 4\), got \(2, 2, 4, 5\)"),
    Bad("attention_backward_probs_heads",
        lambda: _core.attention_backward(_q, _q, _k, _v, _probs, 1), ValueError,
        r"attention_backward: probs must be \(N, num_heads, L, L\) = \(2, 1, 4, 4\)"),
    Bad("attention_backward_probs_float64",
        lambda: _core.attention_backward(_q, _q, _k, _v, _probs.astype(np.float64), 2),
        TypeError, r"attention_backward: probs must be .* float32"),
    Bad("attention_backward_dout_shape",
        lambda: _core.attention_backward(_f32(2, 4, 4), _q, _k, _v, _probs, 2), ValueError,
        r"attention_backward: dout must be \(N, L, C\) = q.shape = \(2, 4, 8\)"),
    Bad("attention_backward_heads_not_dividing",
        lambda: _core.attention_backward(_q, _q, _k, _v, _probs, 3), ValueError,
        r"attention_backward: C = 8 .* divisible by num_heads = 3"),
    Bad("attention_backward_noncontiguous_v",
        lambda: _core.attention_backward(_q, _q, _k, _f32(2, 4, 16)[:, :, ::2], _probs, 2),
        ValueError, r"attention_backward: v must be C-contiguous"),
]
