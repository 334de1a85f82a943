"""The CUDA backend.

Three groups:

1. Without a GPU (always run): the build reports whether it has CUDA,
   `timenet.cuda.is_available()` is False here and every device function
   raises a clear RuntimeError; so do Tensor(..., device="cuda") and
   Module.to("cuda"); CUDA ops refuse host arrays.
2. An EMULATED device (always run): `emulated_cuda` swaps DeviceArray for a
   numpy-backed stand-in and `_core.cuda_*` for numpy versions of their
   contracts (the engine ops run the CPU kernels). Everything above the C
   glue (the Tensor arithmetic on devices, the dispatch in
   nn.functional, Module.to, the optimizer, the op-table harness of group 3)
   is then checked on a machine without a GPU.
3. On a GPU (skipped, with the reason, where there is none): every op of
   tests/cases_*.py with its inputs moved to the device against the same op
   on the CPU, forward and backward, with a tolerance per op (the ggml
   test-backend-ops pattern); the strided primitives against numpy; the
   allocator; a U-Net step and an AdamW step against the CPU.
   benchmarks/gpu_check.sh runs this file on a GPU machine.
"""
import glob
import importlib
import os
import sys
import warnings

import numpy as np
import pytest

import timenet
from timenet import Tensor, _core, cuda, nn
from timenet.nn import functional as F

sys.path.insert(0, os.path.dirname(__file__))

HAVE_GPU = cuda.is_available()
NO_GPU_REASON = f"no CUDA device: {cuda.unavailable_reason()}"
gpu = pytest.mark.skipif(not HAVE_GPU, reason=NO_GPU_REASON)


# ---------------------------------------------------------------------------
# 1. without a GPU

def test_build_flag_is_reported():
    assert _core.has_cuda in (0, 1)
    assert cuda.is_built() == bool(_core.has_cuda)
    # CI on a machine with nvcc sets this to insist the CUDA objects were linked.
    if os.environ.get("TIMENET_EXPECT_CUDA_BUILD") == "1":
        assert cuda.is_built(), "TIMENET_EXPECT_CUDA_BUILD=1 but _core was built without CUDA"
    if not cuda.is_built():
        assert "without CUDA" in cuda.unavailable_reason()
        assert not any(n.startswith("cuda_conv2d") for n in dir(_core))
    else:
        assert hasattr(_core, "cuda_conv2d_forward")


def test_device_count_never_raises():
    n = cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert cuda.is_available() == (n > 0)
    assert isinstance(cuda.unavailable_reason(), str)


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_no_device_api_raises_clearly():
    assert not cuda.is_available()
    assert cuda.unavailable_reason()
    for f in (cuda.synchronize, cuda.memory_stats, cuda.empty_cache, cuda.mem_get_info,
              cuda.get_device_name, cuda.memory_allocated, cuda.reset_peak_memory_stats):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            f()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cuda.set_device(0)


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_no_device_tensor_and_module_raise():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Tensor(np.ones(3), device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Tensor(np.ones(3)).to("cuda:0")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Tensor(np.ones(3)).cuda()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        nn.Linear(2, 3).to("cuda")
    with pytest.raises(RuntimeError):
        cuda.DeviceArray.from_numpy(np.ones(3, np.float32))
    with pytest.raises(RuntimeError):
        cuda.DeviceArray.zeros((2, 3))


def test_device_strings():
    assert cuda.parse_device("cpu") == ("cpu", None)
    assert cuda.parse_device("cuda:3") == ("cuda", 3)
    assert cuda.parse_device("cuda") == ("cuda", cuda.current_device())
    assert cuda.parse_device(1) == ("cuda", 1)
    for bad in ("gpu", "cuda:x", "cpu:1", "CUDA"):
        with pytest.raises(ValueError, match="unknown device"):
            cuda.parse_device(bad)
    t = Tensor(np.ones(3))
    assert t.device == "cpu" and not t.is_cuda
    assert t.to("cpu") is t and t.cpu() is t
    assert nn.Linear(2, 3).device == "cpu"


def test_device_array_cannot_be_made_directly():
    with pytest.raises(TypeError):
        cuda.DeviceArray()


@pytest.mark.skipif(not cuda.is_built(), reason="a CPU-only build has no CUDA ops")
def test_cuda_ops_refuse_host_arrays():
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"cuda_conv2d_forward: x must be a float32 CUDA array"):
        _core.cuda_conv2d_forward(x, w, None, 1, 1)
    with pytest.raises(TypeError, match=r"cuda_silu_forward: x must be .*on the host"):
        _core.cuda_silu_forward(x)
    with pytest.raises(TypeError, match="cuda_binary: a must be"):
        _core.cuda_binary(0, x, x)
    with pytest.raises(ValueError, match="op must be 0..3"):
        _core.cuda_binary(7, x, x)
    with pytest.raises(TypeError, match="cuda_grad_norm"):
        _core.cuda_grad_norm([x])


# ---------------------------------------------------------------------------
# 2. the emulated device

class FakeDeviceArray:
    """A numpy-backed stand-in for _core.DeviceArray (same attributes)."""

    def __init__(self, a, device=0):
        assert isinstance(a, np.ndarray) and a.flags.c_contiguous
        assert a.dtype in (np.float32, np.int32, np.int64), a.dtype
        self.a, self.device = a, device

    shape = property(lambda self: self.a.shape)
    ndim = property(lambda self: self.a.ndim)
    size = property(lambda self: self.a.size)
    dtype = property(lambda self: self.a.dtype)
    nbytes = property(lambda self: self.a.nbytes)

    @staticmethod
    def _host(a):
        a = np.asarray(a)
        if a.dtype.kind in "fb":
            return np.array(a, np.float32, order="C")
        if a.dtype == np.int32:
            return np.array(a, order="C")
        if a.dtype.kind in "iu":
            return np.array(a, np.int64, order="C")
        raise TypeError(f"from_numpy: a must be a real array, got {a.dtype}")

    @classmethod
    def from_numpy(cls, a, device=0):
        return cls(cls._host(a), device)

    @classmethod
    def full(cls, shape, value, device=0):
        return cls(np.full(shape, value, np.float32), device)

    @classmethod
    def zeros(cls, shape, device=0, dtype="float32"):
        return cls(np.zeros(shape, dtype), device)

    @classmethod
    def empty(cls, shape, device=0, dtype="float32"):
        return cls(np.full(shape, np.nan, dtype) if dtype == "float32" else np.empty(shape, dtype),
                   device)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return FakeDeviceArray(self.a.reshape(shape), self.device)

    def copy(self):
        return FakeDeviceArray(self.a.copy(), self.device)

    def numpy(self):
        return self.a.copy()

    def __len__(self):
        return len(self.a)

    def __array__(self, *args, **kwargs):
        raise TypeError("a DeviceArray is not converted to numpy implicitly")


def _unwrap(v):
    if isinstance(v, FakeDeviceArray):
        return v.a
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_unwrap(x) for x in v)
    return v


def _wrap(v, dev=0):
    # float64 results are host values by contract (error norms, curves)
    if isinstance(v, np.ndarray) and v.dtype in (np.float32, np.int32, np.int64):
        return FakeDeviceArray(np.ascontiguousarray(v), dev)
    if isinstance(v, list):
        return [_wrap(x, dev) for x in v]
    if isinstance(v, tuple):
        return tuple(_wrap(x, dev) for x in v)
    return v


def _check_all_fake(op, args):
    for a in args:
        if isinstance(a, (list, tuple)):
            _check_all_fake(op, a)
        elif isinstance(a, np.ndarray) and a.dtype == np.float32:
            raise TypeError(f"{op}: x must be a float32 CUDA array, got a numpy array (on the host)")


class FakeCore:
    """_core with `cuda_*` as numpy versions of their contracts: the engine
    ops run the CPU kernels on the arrays behind the stand-ins."""

    DeviceArray = FakeDeviceArray
    has_cuda = 1
    autocast = False   # the bf16 flag: recorded, no effect on the CPU kernels

    def cuda_set_autocast(self, flag):
        self.autocast = bool(flag)

    def cuda_get_autocast(self):
        return self.autocast
    # ops whose CUDA version returns host results as the CPU op does
    # (step control runs on the host: (B,) float64 numpy)
    HOST_RESULTS = {"ode_error_norm"}

    def __getattr__(self, name):
        if name.startswith("cuda_"):
            cpu = getattr(_core, name[5:])
            wrap = (lambda v: v) if name[5:] in self.HOST_RESULTS else _wrap

            def op(*args, **kw):
                _check_all_fake(name, list(args) + list(kw.values()))
                return wrap(cpu(*_unwrap(args), **{k: _unwrap(v) for k, v in kw.items()}))
            return op
        return getattr(_core, name)

    # strided primitives: numpy with the C glue's semantics
    @staticmethod
    def cuda_binary(op, a, b):
        f = (np.add, np.subtract, np.multiply, np.divide)[op]
        return FakeDeviceArray(np.ascontiguousarray(f(a.a, b.a), np.float32), a.device)

    @staticmethod
    def cuda_scalar(op, x, s):
        s = np.float32(s)
        y = (np.add, np.multiply, lambda a, b: b / a, lambda a, b: b - a)[op](x.a, s)
        return FakeDeviceArray(np.ascontiguousarray(y, np.float32), x.device)

    @staticmethod
    def cuda_sum(x, axes=None, keepdims=False):
        y = x.a.sum(axis=None if axes is None else tuple(axes), keepdims=keepdims,
                    dtype=np.float64)
        return FakeDeviceArray(np.ascontiguousarray(np.asarray(y, np.float32)), x.device)

    @staticmethod
    def _view(flat, shape, strides, offset):
        lo = hi = offset
        for n, s in zip(shape, strides):
            if n == 0:
                return None
            lo, hi = (lo + (n - 1) * s, hi) if s < 0 else (lo, hi + (n - 1) * s)
        if lo < 0 or hi >= flat.size:
            raise ValueError("the strided view reaches outside the array")
        return np.lib.stride_tricks.as_strided(flat[offset:], tuple(shape),
                                               tuple(4 * s for s in strides))

    @classmethod
    def cuda_strided_copy(cls, x, shape, strides, offset):
        v = cls._view(x.a.reshape(-1), shape, strides, offset)
        y = np.zeros(tuple(shape), np.float32) if v is None else np.array(v, order="C")
        return FakeDeviceArray(y, x.device)

    @classmethod
    def cuda_strided_add_(cls, y, x, shape, strides, offset):
        v = cls._view(y.a.reshape(-1), shape, strides, offset)
        if v is not None:
            v += x.a

    @staticmethod
    def cuda_mse_forward(x, y):
        return FakeDeviceArray(np.asarray(_core.mse_forward(x.a, y.a), np.float32), x.device)

    @staticmethod
    def cuda_mse_backward(x, y, g=1.0):
        g = float(g.a.reshape(-1)[0]) if isinstance(g, FakeDeviceArray) else float(g)
        return FakeDeviceArray(_core.mse_backward(x.a, y.a, g), x.device)

    @staticmethod
    def cuda_timestep_embedding(t, dim, max_period=10000.0, device=-1):
        dev = t.device if isinstance(t, FakeDeviceArray) else device
        assert dev >= 0, "host t needs a device"
        return FakeDeviceArray(_core.timestep_embedding(np.ascontiguousarray(_unwrap(t)), dim,
                                                        max_period), dev)

    @staticmethod
    def cuda_grad_norm(grads):
        return _core.grad_norm([g.a for g in grads])


@pytest.fixture
def emulated_cuda(monkeypatch):
    """One emulated CUDA device behind the whole Python stack: every timenet
    module's `_core`, `_DeviceArray` and `_cuda_kernels` are swapped."""
    import pkgutil
    from timenet import autograd
    for info in pkgutil.walk_packages(timenet.__path__, "timenet."):
        importlib.import_module(info.name)   # lazily imported modules are swapped too
    fake = FakeCore()
    kernels = autograd._CudaKernels()
    for name, mod in list(sys.modules.items()):
        if not (name == "timenet" or name.startswith("timenet.")) or name == "timenet._loader":
            continue
        if getattr(mod, "_DeviceArray", None) is cuda.DeviceArray:
            monkeypatch.setattr(mod, "_DeviceArray", FakeDeviceArray)
        if getattr(mod, "_core", None) is _core:
            monkeypatch.setattr(mod, "_core", fake)
        if isinstance(getattr(mod, "_cuda_kernels", None), autograd._CudaKernels):
            monkeypatch.setattr(mod, "_cuda_kernels", kernels)
    monkeypatch.setattr(cuda, "_require", lambda index=None: 0 if index is None else int(index))
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    return fake


def _dev(a):
    return Tensor(np.asarray(a, np.float32), device="cuda")


def test_emulated_tensor_basics(emulated_cuda):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = Tensor(a, device="cuda")
    assert isinstance(t.data, FakeDeviceArray) and t.device == "cuda:0" and t.is_cuda
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.size == 6 and len(t) == 2
    np.testing.assert_array_equal(t.numpy(), a)
    np.testing.assert_array_equal(t.cpu().numpy(), a)
    assert t.to("cuda") is t and t.to("cuda:0") is t
    assert "cuda:0" in repr(t)
    assert Tensor(t).data is t.data            # shared, as numpy data is
    assert t.reshape(3, 2).shape == (3, 2)
    assert t.sum().item() == 15.0


def _both(fn, *arrays, requires_grad=True, gy_seed=0):
    """fn on CPU tensors and on emulated CUDA tensors: (outputs, input grads) twice."""
    out = []
    for dev in (None, "cuda"):
        ts = [Tensor(np.asarray(a, np.float32), requires_grad=requires_grad, device=dev)
              for a in arrays]
        y = fn(*ts)
        gy = np.random.default_rng(gy_seed).standard_normal(y.shape).astype(np.float32)
        if requires_grad:
            y.backward(Tensor(gy, device=dev))
        out.append((y.numpy(), [None if t.grad is None else t.grad.numpy() for t in ts]))
        if dev:
            assert y.device == "cuda:0"
            assert all(t.grad is None or t.grad.device == "cuda:0" for t in ts)
    return out


def _assert_same(res, atol=1e-6):
    (y0, g0), (y1, g1) = res
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=atol)
    for a, b in zip(g0, g1):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name, fn, shapes", [
    ("add same", lambda a, b: a + b, [(2, 3), (2, 3)]),
    ("add bcast", lambda a, b: a + b, [(2, 3, 4), (3, 1)]),
    ("add bcast both", lambda a, b: a + b, [(2, 1, 4), (3, 1)]),
    ("sub", lambda a, b: a - b, [(2, 3), (1, 3)]),
    ("mul bcast", lambda a, b: a * b, [(4, 1, 5), (4, 3, 1)]),
    ("div", lambda a, b: a / (b * b + 1.0), [(2, 3), (2, 3)]),
    ("scalars", lambda a: (2.0 * a - 1.0) / 4.0 + 3, [(5,)]),
    ("rsub", lambda a: 1.0 - a, [(2, 2)]),
    ("neg", lambda a: -a, [(3,)]),
    ("numpy scalar", lambda a: np.float32(0.5) * a, [(3,)]),
    ("sum all", lambda a: a.sum(), [(2, 3, 4)]),
    ("sum axis", lambda a: a.sum(axis=1), [(2, 3, 4)]),
    ("sum keepdims", lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    ("sum negative axis", lambda a: a.sum(axis=-1), [(2, 3, 4)]),
    ("mean", lambda a: a.mean(axis=0), [(4, 5)]),
    ("permute", lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    ("transpose", lambda a: a.transpose(0, 1), [(3, 5)]),
    ("getitem int", lambda a: a[1], [(3, 4)]),
    ("getitem slices", lambda a: a[:, 1:5:2, ::-1], [(2, 6, 3)]),
    ("getitem ellipsis none", lambda a: a[..., None, 0], [(2, 3, 4)]),
    ("getitem negative", lambda a: a[-1, -2:], [(3, 4)]),
    ("getitem rows", lambda a: a[1:3], [(4, 5, 6)]),
    ("reshape flatten", lambda a: a.reshape(-1, 2).flatten(), [(2, 3, 4)]),
    ("attention block shapes", lambda a: a.reshape(2, 3, 4, 5).permute(1, 0, 3, 2)[0], [(2, 12, 5)]),
])
def test_emulated_tensor_ops_match_cpu(emulated_cuda, name, fn, shapes):
    rng = np.random.default_rng(len(name))
    arrays = [rng.standard_normal(s) for s in shapes]
    _assert_same(_both(fn, *arrays))


def test_emulated_advanced_index_is_refused(emulated_cuda):
    t = _dev(np.ones((3, 4)))
    with pytest.raises(NotImplementedError, match="basic indices"):
        t[np.array([0, 2])]
    with pytest.raises(NotImplementedError, match="basic indices"):
        t[True]


def test_emulated_mixing_devices_is_an_error(emulated_cuda):
    a, b = _dev(np.ones((2, 3))), Tensor(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="cpu"):
        a + b
    with pytest.raises(RuntimeError, match=r"conv2d: .*input on cpu and weight on cuda:0"):
        F.conv2d(Tensor(np.ones((1, 2, 4, 4))), _dev(np.ones((3, 2, 3, 3))))
    with pytest.raises(RuntimeError, match=r"linear: .*input on cuda:0 and weight on cpu"):
        F.linear(_dev(np.ones((2, 4))), Tensor(np.ones((3, 4))))
    with pytest.raises(RuntimeError, match=r"cat: .*tensors\[0\] on cuda:0 and tensors\[1\] on cpu"):
        F.cat([_dev(np.ones((1, 2, 2, 2))), Tensor(np.ones((1, 2, 2, 2)))])
    with pytest.raises(RuntimeError, match="backward: grad is on cpu"):
        y = _dev(np.ones(3)).requires_grad_() * 2.0
        y.backward(np.ones(3, np.float32))


def test_emulated_to_is_differentiable(emulated_cuda):
    x = Tensor(np.arange(4, dtype=np.float32), requires_grad=True)
    y = (x.to("cuda") * 3.0).cpu().sum()
    y.backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), np.full(4, 3.0, np.float32))


@pytest.mark.parametrize("name, fn, shapes", [
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 8, 8), (4, 3, 3, 3), (4,)]),
    ("linear 3-d", lambda x, w, b: F.linear(x, w, b), [(2, 5, 6), (3, 6), (3,)]),
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3, 3), (4,), (4,)]),
    ("silu sigmoid relu", lambda x: F.relu(F.sigmoid(F.silu(x)) - 0.6), [(2, 3, 4)]),
    ("interpolate", lambda x: F.interpolate(x, scale_factor=2), [(1, 2, 3, 3)]),
    ("pools", lambda x: F.max_pool2d(F.avg_pool2d(x, 2), 2) + F.adaptive_avg_pool2d(x, 2),
     [(2, 2, 8, 8)]),
    ("cat", lambda a, b: F.cat([a, b]), [(2, 1, 3, 3), (2, 2, 3, 3)]),
    ("broadcast add mul", lambda a, b: F.broadcast_mul(F.broadcast_add(a, b), b), [(2, 3, 4, 4), (1, 3, 1, 1)]),
    ("mse", lambda a, b: F.mse_loss(a, b), [(2, 3, 4), (2, 3, 4)]),
    ("attention", lambda q, k, v: F.multi_head_attention(q, k, v, 2), [(2, 5, 4)] * 3),
])
def test_emulated_functional_matches_cpu(emulated_cuda, name, fn, shapes):
    rng = np.random.default_rng(len(name))
    _assert_same(_both(fn, *[rng.standard_normal(s) for s in shapes]), atol=1e-5)


def test_emulated_embedding_ids_host_or_device(emulated_cuda):
    table = _dev(np.arange(12).reshape(4, 3)).requires_grad_()
    for ids in (np.array([3, 0, 3]), Tensor(np.array([3, 0, 3]), device="cuda")):
        table.grad = None
        y = F.embedding(ids, table)
        assert y.device == "cuda:0"
        np.testing.assert_array_equal(y.numpy(), np.arange(12).reshape(4, 3)[[3, 0, 3]])
        y.sum().backward()
        np.testing.assert_array_equal(table.grad.numpy()[:, 0], [1, 0, 0, 2])
    emb = F.timestep_embedding(np.array([1.0, 500.0]), 8, device="cuda")
    assert emb.device == "cuda:0"
    np.testing.assert_allclose(emb.numpy(), F.timestep_embedding(np.array([1.0, 500.0]), 8).numpy())


def _tiny_unet():
    from timenet.models.unet import UNet
    timenet.manual_seed(3)
    return UNet.from_preset("tiny", num_classes=3)


def _unet_step(model, dev):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32), device=dev)
    target = Tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32), device=dev)
    model.zero_grad()
    loss = F.mse_loss(model(x, np.array([0.3, 0.9], np.float32), np.array([0, 2])), target)
    loss.backward()
    return loss.item(), {n: p.grad.numpy() for n, p in model.named_parameters()}


def test_emulated_unet_forward_backward_matches_cpu(emulated_cuda):
    cpu_model = _tiny_unet()
    loss0, g0 = _unet_step(cpu_model, None)
    dev_model = _tiny_unet().to("cuda")
    assert dev_model.device == "cuda:0"
    assert all(p.device == "cuda:0" for p in dev_model.parameters())
    loss1, g1 = _unet_step(dev_model, "cuda")
    assert abs(loss1 - loss0) <= 1e-6 * abs(loss0)
    for n in g0:
        np.testing.assert_allclose(g1[n], g0[n], rtol=1e-4, atol=1e-6, err_msg=n)
    # state_dict gives host arrays; load_state_dict keeps the device
    sd = dev_model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    dev_model.load_state_dict(cpu_model.state_dict())
    assert all(p.device == "cuda:0" for p in dev_model.parameters())
    dev_model.cpu()
    assert all(p.device == "cpu" for p in dev_model.parameters())


def test_emulated_optimizer_and_clipping(emulated_cuda):
    from timenet.nn.utils import clip_grad_norm_
    from timenet.optim import AdamW
    results = []
    for dev in (None, "cuda"):
        timenet.manual_seed(1)
        model = nn.Linear(4, 3)
        opt = AdamW(model.parameters(), lr=1e-2)
        if dev:
            model.to(dev)   # after the optimizer: its moments follow the parameters
        for step in range(3):
            x = Tensor(np.random.default_rng(step).standard_normal((5, 4)).astype(np.float32),
                       device=dev)
            opt.zero_grad()
            (model(x) * model(x)).sum().backward()
            norm = clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
        state = opt.state_dict()
        assert all(isinstance(m, np.ndarray) for m in state["m"])
        results.append((norm, model.weight.numpy(), model.bias.numpy()))
    (n0, w0, b0), (n1, w1, b1) = results
    assert abs(n1 - n0) <= 1e-5 * n0
    np.testing.assert_allclose(w1, w0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0, rtol=1e-5, atol=1e-6)


def test_emulated_rk45_state_stays_on_the_device(emulated_cuda):
    """solve_rk45 with a device state (samples of different stiffness, so they
    finish and get rejected at different steps: the row gather / scatter
    paths) gives the host run's numbers, step counts included."""
    from timenet import flow
    rng = np.random.default_rng(0)
    y0 = rng.standard_normal((5, 2, 3, 3)).astype(np.float32)
    rate = np.array([0.5, 3.0, 12.0, 40.0, 1.0])   # per sample: dy/dt = -rate y + sin t

    def f_host(t, y, idx):
        r = rate[idx].reshape(-1, 1, 1, 1)
        return (-r * y + np.sin(t).reshape(-1, 1, 1, 1)).astype(np.float32)
    calls = []

    def f_dev(t, y, idx):
        assert isinstance(y, FakeDeviceArray)
        calls.append(len(idx))
        return FakeDeviceArray(f_host(t, y.a, idx))
    want, info0 = flow.solve_rk45(f_host, y0, 0.0, 1.0, rtol=1e-4, atol=1e-4)
    got, info1 = flow.solve_rk45(f_dev, FakeDeviceArray(y0.copy()), 0.0, 1.0, rtol=1e-4,
                                 atol=1e-4)
    assert isinstance(got, FakeDeviceArray)
    np.testing.assert_array_equal(got.a, want)
    for k in ("nfev", "nfev_per_sample", "steps", "rejected"):
        np.testing.assert_array_equal(info1[k], info0[k], err_msg=k)
    assert min(calls) < 5 and info0["rejected"].sum() > 0   # the subset paths ran


def test_emulated_reflow_pairs_match_cpu(emulated_cuda):
    from timenet import flow
    cpu = _tiny_unet()
    dev = _tiny_unet().to("cuda")
    x0 = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    a, nfe0 = flow.sample(cpu, x0, [0, 1, 2], "rk45", rtol=1e-3, atol=1e-3)
    b, nfe1 = flow.sample(dev, x0, [0, 1, 2], "rk45", rtol=1e-3, atol=1e-3)
    assert isinstance(b, np.ndarray) and nfe1 == nfe0
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def _fit_tiny_pipeline(device, tmp, extractor):
    """TimeNet fitted on a 2-class 32 px set (every stage, resume files
    included) on `device`; its predictions on held-out images and the run."""
    from test_pipeline import FAST, make_dataset
    from timenet.data import MVTecAD
    from timenet.pipeline import TimeNet
    root = make_dataset(tmp / "data")
    run = str(tmp / f"run-{device}")
    tn = TimeNet(device=device, extractor=extractor, fallback="random", **FAST)
    with warnings.catch_warnings():   # the random-weights fallback is announced
        warnings.simplefilter("ignore")
        tn.fit(MVTecAD(root, split="train", image_size=32), out_dir=run, progress=False)
    test = MVTecAD(root, split="test", image_size=32, class_names=tn.class_names)
    pred = tn.predict(test.images(), test.class_ids, batch_size=3, progress=False)
    return tn, pred, run


@pytest.mark.parametrize("extractor", ["pixel", "resnet18"])
def test_emulated_pipeline_matches_cpu(emulated_cuda, tmp_path, extractor):
    """fit (flow, Reflow with RK45 pairs, TPN with the SSIM loss, ratios) and
    predict on a device give the CPU's numbers: everything that runs on the
    device goes through `_core.cuda_*` (here the emulation), the noise and
    step control stay on the host."""
    from timenet import scoring
    scoring._cache.clear()
    scoring._announced.clear()
    timenet.set_num_threads(1)
    try:
        cpu_tn, cpu_pred, _ = _fit_tiny_pipeline("cpu", tmp_path, extractor)
        scoring._announced.clear()
        dev_tn, dev_pred, run = _fit_tiny_pipeline("cuda", tmp_path, extractor)
    finally:
        timenet.set_num_threads(timenet._default_threads())
        scoring._cache.clear()
    assert dev_tn.device == "cuda:0" and "cuda:0" in repr(dev_tn)
    assert all(p.device == "cuda:0" for p in dev_tn.model.parameters())
    for key in ("reconstruction", "map", "score", "T"):
        assert isinstance(dev_pred[key], np.ndarray)
        np.testing.assert_allclose(dev_pred[key], cpu_pred[key], rtol=1e-4, atol=1e-5,
                                   err_msg=key)
    r0, r1 = cpu_tn.ratios, dev_tn.ratios
    assert r1.layers == pytest.approx(r0.layers, rel=1e-5)
    assert (r1.pixel is None) == (r0.pixel is None) == (extractor == "pixel")
    if r0.pixel is not None:
        assert r1.pixel == pytest.approx(r0.pixel, rel=1e-5)
    # a saved device run loads anywhere
    from timenet.pipeline import TimeNet
    back = TimeNet.load(run)
    assert back.device == "cpu" and back.model.device == "cpu"
    assert TimeNet.load(run, device="cuda").model.device == "cuda:0"


@gpu
def test_gpu_pipeline_matches_cpu(tmp_path):
    """The same fit + predict on the GPU and the CPU. cuDNN / cuBLAS round
    differently and 12 training steps (and RK45's accept / reject choices)
    carry that forward, so this is a loose agreement, not equality."""
    from timenet import scoring
    scoring._cache.clear()
    cpu_tn, cpu_pred, _ = _fit_tiny_pipeline("cpu", tmp_path, "resnet18")
    dev_tn, dev_pred, _ = _fit_tiny_pipeline("cuda", tmp_path, "resnet18")
    scoring._cache.clear()
    assert dev_tn.model.device == "cuda:0"
    for key in ("reconstruction", "map", "score", "T"):
        a, b = dev_pred[key], cpu_pred[key]
        assert np.all(np.isfinite(a)), key
        np.testing.assert_allclose(a, b, rtol=0.02, atol=0.02 * float(np.abs(b).max()),
                                   err_msg=key)


# ---------------------------------------------------------------------------
# 3. the op table on a device (emulated here, real on a GPU)

def _load_cases():
    mods = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "cases_*.py"))):
        mods.append(importlib.import_module(os.path.basename(path)[:-3]))
    return mods


CASE_MODULES = _load_cases()
ALL_CASES = [(m, c) for m in CASE_MODULES for c in getattr(m, "CASES", [])]

# |cuda - cpu| <= atol * max(1, max|cpu|) + rtol * |cpu|, by op (a prefix of
# the case name); cuBLAS / cuDNN sum in other orders than the CPU.
TOLERANCE = {
    "conv": (2e-5, 1e-4), "linear": (2e-5, 1e-4), "attention": (2e-5, 1e-4),
    "group_norm": (1e-5, 1e-4), "mse": (1e-6, 1e-5), "timestep": (2e-6, 0.0),
}
DEFAULT_TOLERANCE = (1e-6, 1e-5)
NO_CUDA_OPS = {"fma_peak"}


class NoCudaOp(Exception):
    pass


class DeviceCore:
    """Stands in for `_core` inside a cases module: each op runs its CUDA
    version on copies of the numpy inputs moved to the device, and returns
    numpy (in-place ops write back)."""

    INPLACE = {"adamw_step", "scale_"}

    def __init__(self, core, array_type):
        self.core, self.DA = core, array_type

    def _to(self, v):
        if isinstance(v, np.ndarray) and v.dtype in (np.float32, np.int32, np.int64):
            return self.DA.from_numpy(v, 0)
        if isinstance(v, list):
            return [self._to(x) for x in v]
        if isinstance(v, tuple) and any(isinstance(x, np.ndarray) for x in v):
            return tuple(self._to(x) for x in v)
        return v

    def _back(self, v):
        if isinstance(v, self.DA):
            a = v.numpy()
            return float(a) if a.ndim == 0 else a
        if isinstance(v, list):
            return [self._back(x) for x in v]
        if isinstance(v, tuple):
            return tuple(self._back(x) for x in v)
        return v

    def __getattr__(self, name):
        if name in NO_CUDA_OPS or not hasattr(self.core, "cuda_" + name):
            raise NoCudaOp(name)
        f = getattr(self.core, "cuda_" + name)

        def call(*args, **kw):
            dargs, dkw = [self._to(a) for a in args], {k: self._to(v) for k, v in kw.items()}
            out = f(*dargs, **dkw)
            if name in self.INPLACE:
                for h, d in zip(args, dargs):
                    if isinstance(h, np.ndarray) and isinstance(d, self.DA):
                        h[...] = d.numpy()
            return self._back(out)
        return call


def _tolerance(case):
    for prefix, tol in TOLERANCE.items():
        if case.name.startswith(prefix):
            return tol
    return DEFAULT_TOLERANCE


def _close(got, want, tol, what):
    atol, rtol = tol
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = np.abs(got - want)
    bound = atol * scale + rtol * np.abs(want)
    worst = int(np.argmax(err - bound))
    assert np.all(err <= bound), (f"{what}: max excess at {worst}: got {got.flat[worst]!r}, "
                                  f"want {want.flat[worst]!r} (max abs err {err.max():.3g})")


def _run_on_device(monkeypatch, mod, case, core, array_type):
    from optable import f32
    x32 = f32(case.inputs)
    cpu_y = case.fwd(x32)
    gy = np.random.default_rng(len(case.name)).standard_normal(np.shape(cpu_y)).astype(np.float32)
    cpu_g = case.bwd(gy, x32) if case.bwd else None
    monkeypatch.setattr(mod, "_core", DeviceCore(core, array_type))
    try:
        dev_y = case.fwd(f32(case.inputs))
        dev_g = case.bwd(gy, f32(case.inputs)) if case.bwd else None
    except NoCudaOp as e:
        pytest.skip(f"{e} has no CUDA version")
    tol = _tolerance(case)
    _close(dev_y, cpu_y, tol, f"{case.name} forward")
    if cpu_g is not None:
        assert set(dev_g) == set(cpu_g)
        for k in cpu_g:
            _close(dev_g[k], cpu_g[k], tol, f"{case.name} d{k}")


@pytest.mark.parametrize("mod, case", ALL_CASES, ids=[c.name for _, c in ALL_CASES])
def test_op_table_on_emulated_device(emulated_cuda, monkeypatch, mod, case):
    _run_on_device(monkeypatch, mod, case, emulated_cuda, FakeDeviceArray)


@gpu
@pytest.mark.parametrize("mod, case", ALL_CASES, ids=[c.name for _, c in ALL_CASES])
def test_op_table_on_gpu(monkeypatch, mod, case):
    _run_on_device(monkeypatch, mod, case, _core, cuda.DeviceArray)


# ---------------------------------------------------------------------------
# 3b. the GPU only

@gpu
def test_device_array_round_trip():
    DA = cuda.DeviceArray
    for a in (np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.arange(5, dtype=np.int64),
              np.arange(6, dtype=np.int32).reshape(3, 2), np.full((), 3.5, np.float32),
              np.zeros((0, 3), np.float32)):
        d = DA.from_numpy(a)
        assert d.shape == a.shape and d.dtype == a.dtype and d.nbytes == a.nbytes
        assert d.device == 0 and d.size == a.size
        np.testing.assert_array_equal(d.numpy(), a)
        np.testing.assert_array_equal(d.copy().numpy(), a)
    d = DA.from_numpy(np.arange(6, dtype=np.float64))
    assert d.dtype == np.float32
    v = d.reshape(2, -1)
    assert v.shape == (2, 3) and v.base is d and v.ptr == d.ptr
    np.testing.assert_array_equal(v.numpy(), np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError):
        d.reshape(4, 2)
    with pytest.raises(TypeError, match="implicitly"):
        np.asarray(d)
    np.testing.assert_array_equal(DA.zeros((2, 2)).numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(DA.full((3,), 2.5).numpy(), np.full(3, 2.5))
    cai = d.__cuda_array_interface__
    assert cai["shape"] == (6,) and cai["typestr"] == "<f4" and cai["data"][0] == d.ptr


@gpu
def test_allocator_caches_and_reports():
    import gc
    gc.collect()  # no earlier test's arrays freed in the middle of this one
    cuda.synchronize()
    cuda.empty_cache()
    s0 = cuda.memory_stats()
    a = cuda.DeviceArray.zeros((1000, 1000))
    s1 = cuda.memory_stats()
    assert s1["allocated_bytes"] - s0["allocated_bytes"] >= 4_000_000
    assert s1["peak_allocated_bytes"] >= s1["allocated_bytes"]
    del a
    s2 = cuda.memory_stats()
    assert s2["allocated_bytes"] == s0["allocated_bytes"]
    assert s2["cached_bytes"] >= 4_000_000
    b = cuda.DeviceArray.zeros((1000, 1000))  # the cached block is reused
    assert cuda.memory_stats()["num_device_allocs"] == s2["num_device_allocs"]
    del b
    cuda.empty_cache()
    assert cuda.memory_stats()["cached_bytes"] == 0
    free, total = cuda.mem_get_info()
    assert 0 < free <= total
    assert cuda.get_device_name()


@gpu
def test_out_of_memory_is_a_memory_error_with_the_size():
    with pytest.raises(MemoryError, match=r"tried to allocate .*\(\d+ bytes\)"):
        cuda.DeviceArray.empty((1 << 46,))  # 256 TiB
    a = cuda.DeviceArray.zeros((10,))   # the device still works
    np.testing.assert_array_equal(a.numpy(), np.zeros(10))


@gpu
def test_cuda_tensor_basics_and_errors():
    t = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device="cuda")
    assert t.device == "cuda:0" and isinstance(t.data, cuda.DeviceArray)
    np.testing.assert_array_equal(t.cpu().numpy(), np.arange(6).reshape(2, 3))
    with pytest.raises(RuntimeError, match="cpu"):
        t + Tensor(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="does not exist"):
        Tensor(np.ones(2), device=f"cuda:{cuda.device_count()}")
    cuda.synchronize()
    cuda.synchronize("cuda:0")


@gpu
@pytest.mark.parametrize("name, fn, shapes", [
    ("add bcast both", lambda a, b: a + b, [(2, 1, 4), (3, 1)]),
    ("mul bcast", lambda a, b: a * b, [(4, 1, 5), (4, 3, 1)]),
    ("div sub", lambda a, b: (a - b) / (b * b + 1.0), [(2, 3), (2, 3)]),
    ("scalars", lambda a: 1.0 - (2.0 * a - 1.0) / 4.0, [(50,)]),
    ("sum all big", lambda a: a.sum(), [(64, 1000)]),
    ("sum axis", lambda a: a.sum(axis=(0, 2), keepdims=True), [(8, 33, 70)]),
    ("mean inner", lambda a: a.mean(axis=-1), [(300, 257)]),
    ("permute", lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    ("getitem", lambda a: a[:, 1:5:2, ::-1], [(2, 6, 3)]),
    ("getitem rows (contiguous copy at an offset)", lambda a: a[1:3], [(4, 5, 6)]),
    ("attention shapes", lambda a: a.reshape(2, 3, 4, 5).permute(1, 0, 3, 2)[0], [(2, 12, 5)]),
])
def test_gpu_tensor_ops_match_cpu(name, fn, shapes):
    rng = np.random.default_rng(len(name))
    _assert_same(_both(fn, *[rng.standard_normal(s) for s in shapes]), atol=1e-5)


# Past what the capped grids cover in one pass (tn_blocks: 65536 blocks of
# 256 threads; reductions: 1024 partial sums) and not a multiple of the
# block: every thread of the grid-stride loops goes round more than once and
# the last pass is partial.
_TAIL_N = 65536 * 256 + 1237


@gpu
def test_gpu_grid_stride_tails_match_cpu():
    D = cuda.DeviceArray.from_numpy
    n = _TAIL_N
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    dx, dy = D(x), D(y)

    def close(got, want):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    close(_core.cuda_silu_forward(dx).numpy(), _core.silu_forward(x))
    close(_core.cuda_silu_backward(dy, dx).numpy(), _core.silu_backward(y, x))
    np.testing.assert_array_equal(_core.cuda_scalar(1, dx, 0.5).numpy(), x * np.float32(0.5))
    np.testing.assert_array_equal(_core.cuda_binary(0, dx, dy).numpy(), x + y)
    assert np.all(cuda.DeviceArray.full((n,), 2.5).numpy() == 2.5)
    # reversed: the strided kernel (a forward contiguous run is a memcpy)
    np.testing.assert_array_equal(
        _core.cuda_strided_copy(dx, (n,), (-1,), n - 1).numpy(), x[::-1])
    exact = x.astype(np.float64).sum()
    assert float(_core.cuda_sum(dx).numpy()) == pytest.approx(
        exact, rel=1e-6, abs=1e-9 * float(np.abs(x).sum()))
    want = float(np.mean((x.astype(np.float64) - y) ** 2))
    assert float(_core.cuda_mse_forward(dx, dy).numpy()) == pytest.approx(want, rel=1e-6)
    close(_core.cuda_mse_backward(dx, dy, 0.75).numpy(), _core.mse_backward(x, y, 0.75))
    small = rng.standard_normal(77).astype(np.float32)
    assert _core.cuda_grad_norm([dx, D(small)]) == pytest.approx(
        _core.grad_norm([x, small]), rel=1e-10)
    dz, ds = D(x), D(small)
    _core.cuda_scale_([dz, ds], 0.25)
    np.testing.assert_array_equal(dz.numpy(), x * np.float32(0.25))
    np.testing.assert_array_equal(ds.numpy(), small * np.float32(0.25))
    for beta1 in (0.9, 0.3):   # both forms of torch's lerp (weight < 0.5 and >= 0.5)
        p, m, v = x.copy(), np.full(n, 0.1, np.float32), np.full(n, 0.2, np.float32)
        dp, dm, dv = D(p), D(m), D(v)
        _core.cuda_adamw_step(dp, dy, dm, dv, 1e-3, beta1, 0.999, 1e-8, 0.01, 3)
        _core.adamw_step(p, y, m, v, 1e-3, beta1, 0.999, 1e-8, 0.01, 3)
        for got, want in ((dp, p), (dm, m), (dv, v)):
            close(got.numpy(), want)


# cuda_sum's layouts (elementwise.cu): serial per output (short reductions;
# coalesced rows; more than 2**20 outputs), split blocks (1 split, several).
@gpu
@pytest.mark.parametrize("shape, axes", [
    ((50, 7, 9), (1,)),              # 7 summed: serial
    ((300, 2048), (0,)),             # rows kept innermost, 2048 outputs: serial, coalesced
    ((5, 70000), (1,)),              # 17 splits an output
    ((1100, 40, 1), (1,)),           # kept dims 40 floats apart (trailing size-1 dim): split
    ((1100000, 33), (1,)),           # > 2**20 outputs, 33 summed: serial fallback
    ((3, 1, 5, 1), (0, 2)),          # size-1 dims everywhere
])
def test_gpu_sum_layouts_match_numpy(shape, axes):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    got = _core.cuda_sum(cuda.DeviceArray.from_numpy(x), axes).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=axes), rtol=1e-6, atol=1e-6)


@gpu
def test_gpu_unet_step_matches_cpu():
    cpu_model = _tiny_unet()
    loss0, g0 = _unet_step(cpu_model, None)
    dev_model = _tiny_unet().to("cuda")
    loss1, g1 = _unet_step(dev_model, "cuda")
    assert abs(loss1 - loss0) <= 1e-4 * abs(loss0)
    for n in g0:
        scale = max(1e-3, float(np.abs(g0[n]).max()))
        np.testing.assert_allclose(g1[n] / scale, g0[n] / scale, atol=2e-4, err_msg=n)


@gpu
def test_gpu_optimizer_matches_cpu():
    from timenet.nn.utils import clip_grad_norm_
    from timenet.optim import AdamW
    results = []
    for dev in (None, "cuda"):
        timenet.manual_seed(1)
        model = nn.Linear(40, 30).to(dev or "cpu")
        opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        for step in range(3):
            x = Tensor(np.random.default_rng(step).standard_normal((50, 40)).astype(np.float32),
                       device=dev)
            opt.zero_grad()
            F.mse_loss(model(x), Tensor(np.zeros((50, 30), np.float32), device=dev)).backward()
            norm = clip_grad_norm_(model.parameters(), 0.05)
            opt.step()
        results.append((norm, model.weight.numpy(), model.bias.numpy()))
    (n0, w0, b0), (n1, w1, b1) = results
    assert abs(n1 - n0) <= 1e-4 * n0
    np.testing.assert_allclose(w1, w0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b1, b0, rtol=1e-4, atol=1e-5)


@gpu
def test_gpu_tf32_and_heuristic_algorithms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    want = _core.conv2d_forward(x, w, None, 1, 1)
    D = cuda.DeviceArray.from_numpy
    try:
        for tf32, bench in ((True, True), (False, False)):
            cuda.set_allow_tf32(tf32)
            cuda.set_cudnn_benchmark(bench)
            got = _core.cuda_conv2d_forward(D(x), D(w), None, 1, 1).numpy()
            tol = 1e-2 if tf32 else 1e-4
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    finally:
        cuda.set_allow_tf32(False)
        cuda.set_cudnn_benchmark(True)
