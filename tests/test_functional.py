"""Every timenet.nn.functional op through the tape: gradients of a scalar
loss against central finite differences of the same Python call (this
checks the wrappers' plumbing; tests/test_ops.py checks the kernels)."""
import numpy as np
import pytest

import timenet
import timenet.nn.functional as F
from timenet import Tensor

R = np.random.default_rng(0)


def t(*shape, scale=1.0):
    return R.standard_normal(shape) * scale


def perm(*shape):  # distinct, well-separated values: no kinks for max/relu under FD
    return (R.permutation(int(np.prod(shape))).reshape(shape) - np.prod(shape) / 2 + 0.5) / 8.0


CASES = [
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [t(2, 3, 7, 7), t(4, 3, 3, 3), t(4)]),
    ("conv2d no bias", lambda x, w: F.conv2d(x, w, None, padding=(1, 1)), [t(1, 2, 5, 5), t(3, 2, 3, 3)]),
    ("linear 3-d", lambda x, w, b: F.linear(x, w, b), [t(2, 3, 5), t(4, 5), t(4)]),
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [t(2, 4, 3, 3), t(4), t(4)]),
    ("group_norm plain", lambda x: F.group_norm(x, 1), [t(2, 3, 4)]),
    ("group_norm_silu", lambda x, w, b: F.group_norm_silu(x, 2, w, b), [t(2, 4, 3, 3), t(4), t(4)]),
    ("group_norm_silu plain", lambda x: F.group_norm_silu(x, 1), [t(2, 3, 4)]),
    ("silu", lambda x: F.silu(x), [t(2, 3, 4)]),
    ("sigmoid", lambda x: F.sigmoid(x), [t(5, 3)]),
    ("relu", lambda x: F.relu(x), [perm(2, 3, 4)]),
    ("interpolate", lambda x: F.interpolate(x, scale_factor=2), [t(1, 2, 3, 3)]),
    ("interpolate size", lambda x: F.interpolate(x, size=(6, 6)), [t(1, 2, 2, 2)]),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [t(2, 2, 7, 7)]),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [t(1, 2, 7, 5)]),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), [perm(1, 2, 6, 6)]),
    ("embedding", lambda w: F.embedding(np.array([2, 0, 2]), w), [t(4, 3)]),
    ("cat", lambda a, b: F.cat([a, b], dim=1), [t(2, 1, 3, 3), t(2, 2, 3, 3)]),
    ("broadcast_add", lambda a, b: F.broadcast_add(a, b), [t(2, 3, 4, 4), t(1, 3, 1, 1)]),
    ("broadcast_mul", lambda a, b: F.broadcast_mul(a, b), [t(2, 3, 4, 4), t(2, 3, 1, 1)]),
    ("mse_loss", lambda a, b: F.mse_loss(a, b), [t(2, 3, 4), t(2, 3, 4)]),
    ("attention", lambda q, k, v: F.multi_head_attention(q, k, v, num_heads=2), [t(2, 5, 4), t(2, 5, 4), t(2, 5, 4)]),
]


@pytest.mark.parametrize("name,f,inputs", CASES, ids=[c[0] for c in CASES])
def test_functional_gradients(name, f, inputs):
    xs = [Tensor(a, requires_grad=True) for a in inputs]
    out = f(*xs)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    (out * g).sum().backward()
    for i, x in enumerate(xs):
        u = np.random.default_rng(2 + i).standard_normal(x.shape)
        eps = 1e-2

        def loss(e):
            args = [Tensor(a + (e * u if j == i else 0)) for j, a in enumerate(inputs)]
            with timenet.no_grad():
                return float(np.sum(f(*args).numpy().astype(np.float64) * g))
        fd = (loss(eps) - loss(-eps)) / (2 * eps)
        an = float(np.sum(x.grad.numpy().astype(np.float64) * u))
        assert abs(fd - an) <= 2e-2 * (1 + abs(fd)), f"{name} input {i}: {an} vs {fd}"


def test_timestep_embedding_is_not_differentiable_and_shaped():
    e = F.timestep_embedding(np.array([0.0, 500.0, 999.0], np.float32), 16)
    assert e.shape == (3, 16) and not e.requires_grad
    np.testing.assert_allclose(e.numpy()[0], [0] * 8 + [1] * 8, atol=1e-6)


def test_bad_functional_arguments():
    x = Tensor(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="square"):
        F.conv2d(x, Tensor(np.zeros((2, 2, 3, 3))), stride=(1, 2))
    with pytest.raises(ValueError, match="integer multiple"):
        F.interpolate(x, size=(6, 6))
    with pytest.raises(ValueError, match="dim=1"):
        F.cat([x, x], dim=0)
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(x, x, reduction="sum")


def test_conv2d_frozen_weight_skips_dw_and_keeps_dx():
    """A weight that does not require grad (the TPN stage's frozen denoiser)
    gets no dW computed; dx and db are the very ones of the full backward."""
    x, w, b = t(2, 16, 9, 9), t(24, 16, 3, 3), t(24)
    g = np.random.default_rng(2).standard_normal((2, 24, 9, 9)).astype(np.float32)
    full = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    F.conv2d(*full, padding=1).backward(g)
    xs, ws, bs = Tensor(x, requires_grad=True), Tensor(w), Tensor(b, requires_grad=True)
    F.conv2d(xs, ws, bs, padding=1).backward(g)
    assert ws.grad is None
    np.testing.assert_array_equal(xs.grad.numpy(), full[0].grad.numpy())
    np.testing.assert_array_equal(bs.grad.numpy(), full[2].grad.numpy())
    dx, dw, db = timenet._core.conv2d_backward(g, x.astype(np.float32), w.astype(np.float32),
                                               1, 1, False, False, False)
    assert dx is None and dw is None and db is None
