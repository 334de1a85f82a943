"""bf16 autocast (timenet.cuda.autocast; csrc/cuda/bf16.cu and the conv2d,
linear and attention GEMMs).

1. Everywhere: the context manager's state (nesting, restore on exception,
   decorator, per thread); a CPU-only build refuses to turn it on and
   accepts off; CPU ops ignore it.
2. On a GPU (skipped, with the reason, where there is none): conv2d,
   linear and attention forward and backward under autocast are float32
   arrays within bf16 tolerance of float32 (and not equal to it: the bf16
   path ran), bias gradients exactly float32's; the float32 plans are
   unchanged after an autocast call (algorithms cached per shape and type);
   a tiny U-Net training step under autocast is close to float32's and
   leaves float32 parameters and moments.
"""
import os
import sys
import threading

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from test_cuda import (HAVE_GPU, NO_GPU_REASON, _tiny_unet, _unet_step,  # noqa: E402,F401
                       emulated_cuda)

from timenet import Tensor, _core, cuda  # noqa: E402
from timenet.nn import functional as F  # noqa: E402

gpu = pytest.mark.skipif(not HAVE_GPU, reason=NO_GPU_REASON)
cuda_build = pytest.mark.skipif(not cuda.is_built(), reason="a CPU-only build refuses autocast")


# ---------------------------------------------------------------------------
# 1. the switch

def test_emulated_backward_runs_in_its_forwards_state(emulated_cuda, monkeypatch):
    """loss.backward() after the block: conv2d / linear / attention backward
    still run under autocast (the state their forward saw), and the flag is
    what it was afterwards; ops recorded outside the block stay float32."""
    seen = []
    for op in ("conv2d_backward", "linear_backward", "attention_backward"):
        real = getattr(emulated_cuda, "cuda_" + op)

        def spy(*a, _op=op, _real=real, **k):
            seen.append((_op, emulated_cuda.autocast))
            return _real(*a, **k)
        monkeypatch.setattr(emulated_cuda, "cuda_" + op, spy, raising=False)
    rng = np.random.default_rng(0)

    def dev(*shape):
        return Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True,
                      device="cuda")
    x, w, lw, q = dev(1, 2, 5, 5), dev(3, 2, 3, 3), dev(4, 3), dev(1, 6, 4)
    with cuda.autocast():
        y = F.conv2d(x, w, None, 1, 1)                      # (1, 3, 5, 5)
        z = F.linear(y.permute(0, 2, 3, 1), lw)             # (1, 5, 5, 4)
    a = F.multi_head_attention(q, q, q, 2)                  # outside: float32
    assert not emulated_cuda.autocast
    (z.sum() + a.sum()).backward()
    assert not emulated_cuda.autocast
    assert sorted(seen) == [("attention_backward", False), ("conv2d_backward", True),
                            ("linear_backward", True)]


@cuda_build
def test_autocast_nests_and_restores():
    assert not cuda.autocast_enabled()
    with cuda.autocast():
        assert cuda.autocast_enabled()
        with cuda.autocast(enabled=False):
            assert not cuda.autocast_enabled()
            with cuda.autocast():
                assert cuda.autocast_enabled()
            assert not cuda.autocast_enabled()
        assert cuda.autocast_enabled()
    assert not cuda.autocast_enabled()
    with pytest.raises(KeyError):
        with cuda.autocast():
            raise KeyError("inside")
    assert not cuda.autocast_enabled()
    cuda.set_autocast(True)
    try:
        with cuda.autocast(False):
            assert not cuda.autocast_enabled()
        assert cuda.autocast_enabled()
    finally:
        cuda.set_autocast(False)
    assert not cuda.autocast_enabled()


@cuda_build
def test_autocast_as_decorator_and_per_thread():
    @cuda.autocast()
    def inside():
        return cuda.autocast_enabled()

    assert inside() and not cuda.autocast_enabled()
    seen = []
    with cuda.autocast():
        t = threading.Thread(target=lambda: seen.append(cuda.autocast_enabled()))
        t.start()
        t.join()
        assert cuda.autocast_enabled()
    assert seen == [False]  # another thread keeps its own precision


@pytest.mark.skipif(cuda.is_built(), reason="a CUDA build accepts autocast")
def test_cpu_only_build_refuses_autocast():
    with pytest.raises(RuntimeError, match="bf16 autocast needs the CUDA backend.*without CUDA"):
        with cuda.autocast():
            pass
    with pytest.raises(RuntimeError, match="without CUDA"):
        cuda.set_autocast(True)
    assert not cuda.autocast_enabled()
    with cuda.autocast(enabled=False):  # off is fine everywhere
        assert not cuda.autocast_enabled()
    cuda.set_autocast(False)


@cuda_build
def test_cpu_ops_ignore_autocast():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    w = Tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32))
    lw = Tensor(rng.standard_normal((7, 5 * 64)).astype(np.float32))
    want = F.linear(F.conv2d(x, w, None, 1, 1).reshape(4, -1), lw, None).numpy()
    with cuda.autocast():
        assert cuda.autocast_enabled()      # the flag is on while the CPU ops run
        got = F.linear(F.conv2d(x, w, None, 1, 1).reshape(4, -1), lw, None).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, want), "CPU ops changed under autocast"


def test_emulated_fit_trains_under_autocast_only(emulated_cuda, monkeypatch, tmp_path):
    """TimeNet(autocast=True) on a device: the flow, Reflow and TPN steps run
    their convolutions under autocast; the Reflow pairs' RK45, the ratios and
    predict run in float32; the flag is off afterwards."""
    import warnings
    from test_pipeline import FAST, make_dataset
    from timenet.data import MVTecAD
    from timenet.pipeline import TimeNet
    flags = []
    real = emulated_cuda.cuda_conv2d_forward

    def spy(*a, **k):
        flags.append(emulated_cuda.autocast)
        return real(*a, **k)
    monkeypatch.setattr(emulated_cuda, "cuda_conv2d_forward", spy, raising=False)
    root = make_dataset(tmp_path / "data")
    tn = TimeNet(device="cuda", autocast=True, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tn.fit(MVTecAD(root, split="train", image_size=32), progress=False)
    assert True in flags and False in flags and not emulated_cuda.autocast
    n_fit = len(flags)
    tn.predict(np.zeros((2, 3, 32, 32), np.float32), "cat_a", progress=False)
    assert len(flags) > n_fit and not any(flags[n_fit:])


# ---------------------------------------------------------------------------
# 2. on a GPU

def _rel(got, want):
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _both(fn, *arrays):
    """fn on device copies of `arrays` in float32 and under autocast: the two
    results as numpy (tuples of them), checked to be float32 DeviceArrays."""
    out = []
    for on in (False, True):
        dev = [cuda.DeviceArray.from_numpy(a) for a in arrays]
        with cuda.autocast(on):
            r = fn(*dev)
        r = r if isinstance(r, tuple) else (r,)
        assert all(isinstance(v, cuda.DeviceArray) and v.dtype == np.float32 for v in r
                   if v is not None)
        out.append([None if v is None else v.numpy() for v in r])
    return out


BF16 = 1e-2  # max |bf16 - fp32| / max |fp32|: 8-bit mantissa products, float32 sums


@gpu
def test_gpu_linear_under_autocast():
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((64, 256), (96, 256), (96,)))
    dy = rng.standard_normal((64, 96)).astype(np.float32)
    (y0,), (y1,) = _both(lambda x, w, b: _core.cuda_linear_forward(x, w, b), x, w, b)
    assert 0 < _rel(y1, y0) < BF16
    g0, g1 = _both(lambda dy, x, w: _core.cuda_linear_backward(dy, x, w), dy, x, w)
    for name, a, b_ in zip(("dx", "dw"), g0, g1):
        assert 0 < _rel(b_, a) < BF16, name
    np.testing.assert_array_equal(g1[2], g0[2])  # db sums the float32 dy either way


@gpu
@pytest.mark.parametrize("stride, pad, k", [(1, 1, 3), (2, 1, 3), (1, 0, 1)])
def test_gpu_conv2d_under_autocast(stride, pad, k):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 24, 24)).astype(np.float32)
    w = (rng.standard_normal((32, 16, k, k)) / (4 * k)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    fwd = lambda x, w, b: _core.cuda_conv2d_forward(x, w, b, stride, pad)  # noqa: E731
    (y0,), (y1,) = _both(fwd, x, w, b)
    assert 0 < _rel(y1, y0) < BF16
    dy = rng.standard_normal(y0.shape).astype(np.float32)
    g0, g1 = _both(lambda dy, x, w: _core.cuda_conv2d_backward(dy, x, w, stride, pad), dy, x, w)
    for name, a, b_ in zip(("dx", "dw"), g0, g1):
        assert 0 < _rel(b_, a) < BF16, name
    np.testing.assert_array_equal(g1[2], g0[2])
    # the float32 plan is its own: float32 again gives float32's result
    (y2,), _ = _both(fwd, x, w, b)
    np.testing.assert_array_equal(y2, y0)


@gpu
def test_gpu_attention_under_autocast():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 64, 64)).astype(np.float32) for _ in range(3))
    (o0, p0), (o1, p1) = _both(lambda q, k, v: _core.cuda_attention_forward(q, k, v, 4), q, k, v)
    assert 0 < _rel(o1, o0) < BF16
    assert 0 < _rel(p1, p0) < 3 * BF16  # softmax of bf16-product scores
    np.testing.assert_allclose(p1.sum(-1), 1.0, rtol=1e-5)  # the softmax itself is float32
    dout = rng.standard_normal(o0.shape).astype(np.float32)
    g0, g1 = _both(lambda d, q, k, v, p: _core.cuda_attention_backward(d, q, k, v, p, 4),
                   dout, q, k, v, p0)
    for name, a, b_ in zip(("dq", "dk", "dv"), g0, g1):
        assert 0 < _rel(b_, a) < 2 * BF16, name


@gpu
def test_gpu_unet_training_step_under_autocast():
    from timenet.optim import AdamW
    ref = _tiny_unet().to("cuda")
    loss0, g0 = _unet_step(ref, "cuda")
    model = _tiny_unet().to("cuda")
    opt = AdamW(model.parameters(), lr=1e-3)
    with cuda.autocast():
        loss1, g1 = _unet_step(model, "cuda")
        opt.step()
    assert abs(loss1 - loss0) <= 1e-2 * abs(loss0)
    flat0 = np.concatenate([g.ravel() for g in g0.values()])
    flat1 = np.concatenate([g1[n].ravel() for n in g0])
    err = np.linalg.norm(flat1 - flat0) / np.linalg.norm(flat0)
    assert 0 < err < 5e-2, err
    for n in g0:
        scale = max(1e-3, float(np.abs(g0[n]).max()))
        assert np.abs(g1[n] - g0[n]).max() / scale < 0.1, n
    # fp32 master weights: every parameter (and its gradient) is still float32
    for p in model.parameters():
        assert isinstance(p.data, cuda.DeviceArray) and p.data.dtype == np.float32
        assert p.grad.data.dtype == np.float32
