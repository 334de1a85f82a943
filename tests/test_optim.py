"""adamw_step, grad_norm, scale_ (csrc/cpu/optim.c) against float64 numpy,
attention's threading contract, and a small attention + AdamW training run."""
import ctypes

import numpy as np
import pytest

from timenet import _core
from timenet._loader import _blas


def torch_adamw_reference(p, grads, lr, betas, eps, weight_decay):
    """float64 transcription of torch.optim.AdamW's single-tensor step
    (amsgrad=False, maximize=False), run over the list of grads."""
    b1, b2 = betas
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for step, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        p *= 1 - lr * weight_decay
        m += (1 - b1) * (g - m)                     # exp_avg.lerp_(grad, 1 - beta1)
        v = v * b2 + (1 - b2) * g * g               # exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
        bias_correction1 = 1 - b1 ** step
        bias_correction2 = 1 - b2 ** step
        step_size = lr / bias_correction1
        denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
        p = p - step_size * (m / denom)             # param.addcdiv_(m, denom, value=-step_size)
    return p, m, v


@pytest.mark.parametrize("shape, lr, betas, eps, wd", [
    ((7, 5), 1e-3, (0.9, 0.999), 1e-8, 0.0),
    ((7, 5), 1e-3, (0.9, 0.999), 1e-8, 1e-2),
    ((3, 4, 5), 2e-4, (0.9, 0.999), 1e-8, 0.1),
    ((33,), 1e-2, (0.3, 0.5), 1e-6, 0.05),           # beta1 < 0.5: torch's other lerp form
    ((600, 500), 1e-3, (0.9, 0.99), 1e-8, 1e-2),     # above the OpenMP threshold
])
def test_adamw_matches_torch_transcription(shape, lr, betas, eps, wd):
    rng = np.random.default_rng(sum(shape))
    p0 = rng.standard_normal(shape).astype(np.float32)
    grads = [(rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1)).astype(np.float32)
             for _ in range(20)]
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for step, g in enumerate(grads, start=1):
        assert _core.adamw_step(p, g, m, v, lr, betas[0], betas[1], eps, wd, step) is None
    want_p, want_m, want_v = torch_adamw_reference(p0, grads, lr, betas, eps, wd)
    np.testing.assert_allclose(p, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m, want_m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, want_v, rtol=1e-5, atol=1e-9)
    assert p.dtype == m.dtype == v.dtype == np.float32


def test_adamw_keywords_and_first_step():
    # Step 1 moves every parameter by lr (times sign(g)): the bias
    # corrections cancel m and v's zero start.
    p = np.ones(10, np.float32)
    g = np.linspace(-1, 1, 10).astype(np.float32) + 0.05
    m, v = np.zeros_like(p), np.zeros_like(p)
    _core.adamw_step(p=p, g=g, m=m, v=v, lr=0.1, beta1=0.9, beta2=0.999, eps=0.0,
                     weight_decay=0.0, step=1)
    np.testing.assert_allclose(p, 1 - 0.1 * np.sign(g), rtol=1e-6)


def _adamw_args(**over):
    p = np.zeros((4, 3), np.float32)
    a = dict(p=p, g=np.ones_like(p), m=np.zeros_like(p), v=np.zeros_like(p), lr=1e-3,
             beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    a.update(over)
    return a


def _readonly(shape):
    a = np.zeros(shape, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("over, exc, match", [
    (dict(p=_readonly((4, 3))), ValueError, r"adamw_step: p is updated in place and must be writeable"),
    (dict(m=_readonly((4, 3))), ValueError, r"adamw_step: m .* writeable"),
    (dict(v=_readonly((4, 3))), ValueError, r"adamw_step: v .* writeable"),
    (dict(g=np.ones((3, 4), np.float32)), ValueError,
     r"adamw_step: g must be p.shape = \(4, 3\), got \(3, 4\) float32"),
    (dict(m=np.zeros(12, np.float32)), ValueError, r"adamw_step: m must be p.shape = \(4, 3\)"),
    (dict(p=np.zeros((4, 3))), TypeError, r"adamw_step: p must be .*float32, got \(4, 3\) float64"),
    (dict(v=np.zeros((4, 3))), TypeError, r"adamw_step: v must be .*float32"),
    (dict(g=np.ones((4, 6), np.float32)[:, ::2]), ValueError, r"adamw_step: g must be C-contiguous"),
    (dict(step=0), ValueError, r"adamw_step: step must be >= 1"),
    (dict(lr=-1.0), ValueError, r"adamw_step: lr must be finite and >= 0"),
    (dict(lr=float("nan")), ValueError, r"adamw_step: lr"),
    (dict(beta1=1.0), ValueError, r"adamw_step: betas must be in \[0, 1\)"),
    (dict(beta2=-0.1), ValueError, r"adamw_step: betas"),
    (dict(eps=-1e-8), ValueError, r"adamw_step: eps"),
    (dict(weight_decay=-0.1), ValueError, r"adamw_step: weight_decay"),
    (dict(p=[0.0] * 12), TypeError, r"adamw_step: p must be a numpy float32 array"),
])
def test_adamw_bad_inputs(over, exc, match):
    with pytest.raises(exc, match=match):
        _core.adamw_step(**_adamw_args(**over))


def test_adamw_rejects_shared_buffers():
    a = _adamw_args()
    with pytest.raises(ValueError, match=r"adamw_step: p and m must not share memory"):
        _core.adamw_step(**dict(a, m=a["p"]))
    buf = np.zeros(24, np.float32)
    with pytest.raises(ValueError, match=r"adamw_step: m and v must not share memory"):
        _core.adamw_step(**dict(a, m=buf[:12].reshape(4, 3), v=buf[6:18].reshape(4, 3)))
    # Disjoint halves of one buffer are fine.
    _core.adamw_step(**dict(a, m=buf[:12].reshape(4, 3), v=buf[12:].reshape(4, 3)))


def test_grad_norm_matches_numpy():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(np.float32)
              for s in [(64, 3, 3, 3), (64,), (1,), (513, 600), (5, 7)]]   # one above the threshold
    want = np.linalg.norm(np.concatenate([a.astype(np.float64).ravel() for a in arrays]))
    got = _core.grad_norm(arrays)
    assert isinstance(got, float)
    assert abs(got - want) <= 1e-12 * want
    assert _core.grad_norm(tuple(arrays)) == got
    assert _core.grad_norm([]) == 0.0
    assert _core.grad_norm([np.full(3, 1e30, np.float32)]) == pytest.approx(np.sqrt(3) * 1e30)


def test_scale_in_place():
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (300000,), (2,)]]
    before = [a.copy() for a in arrays]
    assert _core.scale_(arrays, 0.25) is None
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b * np.float32(0.25))
    _core.scale_([], 2.0)


def test_clip_grad_norm_composition():
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal((10, 10)).astype(np.float32) * 3 for _ in range(3)]
    total = _core.grad_norm(grads)
    _core.scale_(grads, 1.0 / (total + 1e-6))
    assert _core.grad_norm(grads) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: _core.grad_norm([np.zeros(3)]), TypeError, r"grad_norm: grads\[0\] must be .*float32"),
    (lambda: _core.grad_norm([np.zeros(3, np.float32), np.zeros((4, 4), np.float32)[:, ::2]]),
     ValueError, r"grad_norm: grads\[1\] must be C-contiguous"),
    (lambda: _core.grad_norm(np.zeros(3, np.float32)), TypeError,
     r"grad_norm: grads must be a list or tuple"),
    (lambda: _core.grad_norm([None]), TypeError, r"grad_norm: grads\[0\] must be a numpy"),
    (lambda: _core.scale_([np.zeros(3, np.float32), _readonly(3)], 2.0), ValueError,
     r"scale_: arrays\[1\] is updated in place and must be writeable"),
    (lambda: _core.scale_([np.zeros(3, np.int32)], 2.0), TypeError, r"scale_: arrays\[0\]"),
    (lambda: _core.scale_([np.zeros(3, np.float32)], "2"), TypeError, r"must be real number"),
])
def test_grad_norm_scale_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_scale_checks_everything_before_writing():
    a = np.ones(3, np.float32)
    with pytest.raises(ValueError):
        _core.scale_([a, _readonly(3)], 2.0)
    np.testing.assert_array_equal(a, 1.0)


# ---- attention: threading contract (csrc/cpu/attention.c) ----

def _blas_threads():
    _blas.scipy_openblas_get_num_threads.restype = ctypes.c_int
    return _blas.scipy_openblas_get_num_threads()


def test_attention_batch_equals_per_sample_and_restores_blas_threads():
    # A batch takes the (n, head)-parallel path with 1-thread GEMMs; one
    # sample with one head runs in turn with OpenBLAS threading the GEMMs.
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((6, 40, 16)).astype(np.float32) for _ in range(3))
    before = _blas_threads()
    out, probs = _core.attention_forward(q, k, v, 1)
    grads = _core.attention_backward(out, q, k, v, probs, 1)
    assert _blas_threads() == before
    for n in range(6):
        o1, p1 = _core.attention_forward(q[n:n + 1], k[n:n + 1], v[n:n + 1], 1)
        np.testing.assert_allclose(o1[0], out[n], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p1[0], probs[n], rtol=1e-5, atol=1e-7)
        g1 = _core.attention_backward(o1, q[n:n + 1], k[n:n + 1], v[n:n + 1], p1, 1)
        for a, b in zip(g1, grads):
            np.testing.assert_allclose(a[0], b[n], rtol=1e-4, atol=1e-5)
    assert _blas_threads() == before


def test_attention_probs_rows_sum_to_one_and_large_scores_are_stable():
    rng = np.random.default_rng(8)
    q = (rng.standard_normal((2, 9, 4)) * 60).astype(np.float32)   # scores in the thousands
    k = (rng.standard_normal((2, 9, 4)) * 60).astype(np.float32)
    v = rng.standard_normal((2, 9, 4)).astype(np.float32)
    out, probs = _core.attention_forward(q, k, v, 2)
    assert np.all(np.isfinite(out)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


# ---- training sanity: attention + AdamW ----

def test_attention_adamw_training_loss_falls():
    """Learn q/k/v projections of a 2-head self-attention to match a fixed
    random teacher; gradients clipped with grad_norm + scale_."""
    rng = np.random.default_rng(9)
    N, L, C, H = 8, 12, 8, 2
    x = rng.standard_normal((N, L, C)).astype(np.float32)
    teacher = [(rng.standard_normal((C, C)) / np.sqrt(C)).astype(np.float32) for _ in range(3)]
    target, _ = _core.attention_forward(*[np.ascontiguousarray(x @ w) for w in teacher], H)
    params = [(rng.standard_normal((C, C)) / np.sqrt(C)).astype(np.float32) for _ in range(3)]
    state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    xf = x.reshape(N * L, C)

    def loss_and_grads():
        q, k, v = (np.ascontiguousarray(x @ w) for w in params)
        out, probs = _core.attention_forward(q, k, v, H)
        diff = out - target
        loss = float(np.mean(diff.astype(np.float64) ** 2))
        dout = (2.0 / diff.size * diff).astype(np.float32)
        dq, dk, dv = _core.attention_backward(dout, q, k, v, probs, H)
        grads = [np.ascontiguousarray(xf.T @ d.reshape(N * L, C)) for d in (dq, dk, dv)]
        return loss, grads

    first, _ = loss_and_grads()
    for step in range(1, 151):
        loss, grads = loss_and_grads()
        norm = _core.grad_norm(grads)
        if norm > 1.0:
            _core.scale_(grads, 1.0 / norm)
        for p, g, (m, v) in zip(params, grads, state):
            _core.adamw_step(p, g, m, v, 2e-2, 0.9, 0.999, 1e-8, 1e-4, step)
    last, _ = loss_and_grads()
    assert last < 0.2 * first, (first, last)


def test_adamw_step_multi_equals_one_call_per_array():
    """One call for many arrays (chunks of 16384 shared by the threads; the
    big one takes several) gives the very bits of adamw_step on each."""
    rng = np.random.default_rng(7)
    shapes = [(300, 1000), (64, 3, 3, 3), (1,), (40000,), (5, 7)]
    ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ms = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in shapes]
    vs = [np.abs(rng.standard_normal(s)).astype(np.float32) * 0.01 for s in shapes]
    one = [[a.copy() for a in arrs] for arrs in (ps, ms, vs)]
    for p, g, m, v in zip(one[0], gs, one[1], one[2]):
        _core.adamw_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3)
    assert _core.adamw_step_multi(ps, gs, ms, vs, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3) is None
    for got, want in zip(ps + ms + vs, one[0] + one[1] + one[2]):
        np.testing.assert_array_equal(got, want)
    _core.adamw_step_multi([], [], [], [], 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)   # nothing to do


@pytest.mark.parametrize("lists, exc, match", [
    (lambda a: ([a()], [a()], [a()], []), ValueError, r"vs has 0 arrays, ps has 1"),
    (lambda a: ([a()], [a((3, 4))], [a()], [a()]), ValueError,
     r"adamw_step_multi: gs\[0\] must be ps\[i\].shape = \(4, 3\)"),
    (lambda a: ([a()], [a()], [_readonly((4, 3))], [a()]), ValueError,
     r"ms\[0\] is updated in place"),
    (lambda a: ([a()], [a().astype(np.float64)], [a()], [a()]), TypeError, r"gs\[0\] must be"),
    (lambda a: ((lambda x: ([x], [a()], [x], [a()]))(a())), ValueError, "overlap|share|alias"),
])
def test_adamw_step_multi_bad_inputs(lists, exc, match):
    def a(shape=(4, 3)):
        return np.zeros(shape, np.float32)
    ps, gs, ms, vs = lists(a)
    with pytest.raises(exc, match=match):
        _core.adamw_step_multi(ps, gs, ms, vs, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="lr"):
        _core.adamw_step_multi([a()], [a()], [a()], [a()], -1.0, 0.9, 0.999, 1e-8, 0.0, 1)
