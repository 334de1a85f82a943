"""The tape: gradients of the numpy-level ops, accumulation, freeing, no_grad."""
import numpy as np
import pytest

import timenet
from timenet import Tensor, no_grad


def fd_grad(f, x, eps=1e-3):
    g = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


CASES = [
    ("add broadcast", lambda a, b: (a + b).sum(), (3, 4), (4,)),
    ("mul broadcast", lambda a, b: (a * b).sum(), (2, 3, 4), (3, 1)),
    ("sub and div", lambda a, b: ((a - b) / (b * b + 2.0)).sum(), (5,), (5,)),
    ("reshape permute", lambda a, b: (a.reshape(4, 3).permute(1, 0) * b).sum(), (3, 4), (3, 4)),
    ("getitem slice", lambda a, b: (a[1:, ::2] * b).sum(), (3, 4), (2, 2)),
    ("getitem fancy repeats", lambda a, b: (a[np.array([0, 0, 2])] * b).sum(), (3, 2), (3, 2)),
    ("mean axis", lambda a, b: (a.mean(axis=1) * b).sum(), (3, 4), (3,)),
    ("sum keepdims", lambda a, b: (a.sum(axis=0, keepdims=True) * b).sum(), (3, 4), (1, 4)),
]


@pytest.mark.parametrize("name,f,sa,sb", CASES, ids=[c[0] for c in CASES])
def test_numpy_level_grads(name, f, sa, sb):
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal(sa), rng.standard_normal(sb)
    a, b = Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True)
    f(a, b).backward()
    ga = fd_grad(lambda x: f(Tensor(x), Tensor(b0)).item(), a0.astype(np.float32))
    gb = fd_grad(lambda x: f(Tensor(a0), Tensor(x)).item(), b0.astype(np.float32))
    np.testing.assert_allclose(a.grad.numpy(), ga, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(b.grad.numpy(), gb, rtol=1e-2, atol=1e-2)


def test_grad_accumulates_and_shared_input():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x + x).sum().backward()          # d/dx = 2x + 1
    np.testing.assert_allclose(x.grad.numpy(), [3, 5])
    (x * 2.0).sum().backward()            # accumulates like PyTorch
    np.testing.assert_allclose(x.grad.numpy(), [5, 7])


def test_tape_is_freed_after_backward():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert timenet.is_grad_enabled()


def test_backward_errors():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="non-scalar"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match="grad shape"):
        (x * 2.0).backward(np.ones(4))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()
    with pytest.raises(TypeError, match="float"):
        Tensor(np.arange(3), requires_grad=True)


def test_deep_graph_has_no_recursion_limit():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1, 1])
