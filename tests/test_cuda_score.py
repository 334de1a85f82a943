"""The scoring ops and the ODE steps on a device: `_core.cuda_<op>` against
the CPU `_core.<op>` on the same inputs.

Every test taking `dev` runs twice: on the emulated device of test_cuda.py
(FakeCore maps cuda_<op> onto the CPU op: this pins the contracts that the
Python side is written against -- what goes to the device, what comes back
as a device array, as a host array or as a float) and on a real GPU
(skipped, with the reason, where there is none), where it checks the CUDA
kernels against the CPU kernels, bad inputs included: the same exception
with the same message, but for the op's name and the device in array
descriptions. The ODE ops' numerics are in the op table (tests/cases_ode.py,
run on a device by test_cuda.py).

A CUDA build also checks, with or without a GPU, that the C glue refuses
host arrays before it touches a device; a GPU, that it refuses other dtypes.
"""
import os
import re
import sys

import numpy as np
import pytest

from timenet import _core, cuda

sys.path.insert(0, os.path.dirname(__file__))
from test_cuda import FakeDeviceArray, emulated_cuda, gpu  # noqa: E402,F401 (a fixture)

rng = np.random.default_rng(0)

SCORE_OPS = ["l2_distance", "cosine_distance", "upsample_bilinear", "gaussian_filter",
             "box_pool", "image_score", "combine_maps"]
ODE_OPS = ["ode_combine", "ode_error_norm"]


class Device:
    """One backend's cuda_<op> with numpy in and out: float arrays go to the
    device (as float32), device results come back; host results stay."""

    def __init__(self, core, array_type):
        self.core, self.DA = core, array_type

    def put(self, a):
        return self.DA.from_numpy(np.array(a, np.float32, order="C"))  # keeps 0-d

    def to(self, v):
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            return self.put(v)
        if isinstance(v, list):
            return [self.to(x) for x in v]
        return v

    def back(self, v):
        if isinstance(v, self.DA):
            return v.numpy()
        if isinstance(v, tuple):
            return tuple(self.back(x) for x in v)
        return v

    def op(self, name):
        return getattr(self.core, "cuda_" + name)

    def __call__(self, name, *args, **kw):
        out = self.op(name)(*[self.to(a) for a in args], **{k: self.to(v) for k, v in kw.items()})
        return self.back(out)


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=gpu)])
def dev(request):
    if request.param == "emulated":
        return Device(request.getfixturevalue("emulated_cuda"), FakeDeviceArray)
    return Device(_core, cuda.DeviceArray)


def _close(got, want, rtol, atol, what):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, rtol, atol, f"{what}[{i}]")
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{what}: {type(got)}"
        assert got.dtype == want.dtype and got.shape == want.shape, \
            f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)
    else:
        assert type(got) is type(want), f"{what}: {type(got)} != {type(want)}"
        assert got == pytest.approx(want, rel=rtol, abs=atol), what


def same(dev, name, *args, rtol=1e-5, atol=1e-6, **kw):
    """cuda_<name> on the device equals <name> on the CPU (same types too)."""
    want = getattr(_core, name)(*args, **kw)
    got = dev(name, *args, **kw)
    _close(got, want, rtol, atol, name)
    return got


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------
# results against the CPU

@pytest.mark.parametrize("shape", [(2, 16, 8, 8), (1, 3, 5, 7), (3, 1, 4, 33), (2, 200, 9, 6),
                                   (4, 1024, 16, 16)])
def test_distances(dev, shape):
    a, b = f32(*shape), f32(*shape)
    same(dev, "l2_distance", a, b)
    same(dev, "l2_distance", a, b, squared=True)
    same(dev, "l2_distance", a, a)
    same(dev, "cosine_distance", a, b)
    same(dev, "cosine_distance", a, b, eps=1e-3)
    same(dev, "cosine_distance", a, -a)               # cos = -1: distance 2


def test_cosine_zero_vectors(dev):
    a = f32(2, 5, 3, 4)
    a[0, :, 1, 2] = 0
    d = same(dev, "cosine_distance", a, np.zeros_like(a))
    assert np.all(d == 1.0)                          # a zero vector has cos 0
    tiny = np.full((1, 3, 2, 2), 1e-30, np.float32)
    assert np.isfinite(same(dev, "cosine_distance", tiny, tiny)).all()


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("src, dst", [((1, 4, 4), (16, 16)), ((2, 3, 5), (7, 11)),
                                      ((1, 8, 8), (3, 5)), ((1, 1, 1), (4, 4)),
                                      ((2, 5, 3), (1, 1)), ((3, 16, 16), (64, 64))])
def test_upsample_bilinear(dev, src, dst, align_corners):
    x = f32(*src)
    same(dev, "upsample_bilinear", x, *dst, align_corners)
    same(dev, "upsample_bilinear", x, dst[0], dst[1], align_corners=align_corners)


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest"])
@pytest.mark.parametrize("shape, sigma, truncate", [((2, 17, 23), 1.3, 4.0), ((1, 64, 48), 4.0, 4.0),
                                                    ((3, 3, 5), 4.0, 4.0), ((1, 1, 9), 2.0, 4.0),
                                                    ((2, 12, 12), 2.5, 1.5), ((1, 6, 7), 0.0, 4.0),
                                                    ((1, 6, 7), 0.3, 4.0)])
def test_gaussian_filter(dev, shape, sigma, truncate, mode):
    # the (3, 5) and (1, 9) maps are smaller than the radius (16 and 8): the
    # border folds more than once
    x = f32(*shape)
    same(dev, "gaussian_filter", x, sigma, truncate, mode)
    if mode == "reflect" and truncate == 4.0:
        same(dev, "gaussian_filter", x, sigma)        # the defaults


@pytest.mark.parametrize("shape, k, rounds", [((2, 40, 50), 4, 3), ((1, 64, 64), 8, 7),
                                              ((3, 20, 9), 1, 5), ((1, 10, 12), 3, 0),
                                              ((2, 9, 11), 3, 1), ((2, 30, 17), 2, 2),
                                              ((2, 256, 256), 8, 8)])
def test_box_pool_and_image_score(dev, shape, k, rounds):
    x = f32(*shape)
    same(dev, "box_pool", x, k, rounds)
    same(dev, "image_score", x, kernel=k, rounds=rounds)


def test_pool_defaults(dev):
    x = f32(2, 60, 70)
    same(dev, "box_pool", x)
    same(dev, "image_score", x)


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 5, 7), (17,), (2, 300, 1000)])
def test_combine_maps(dev, shape):
    d1, d2 = np.abs(f32(*shape)), np.abs(f32(*shape))
    out, r = same(dev, "combine_maps", d1, d2, 7.0)              # ratio computed
    assert isinstance(r, float)
    assert r == pytest.approx(float(d2.max()) / float(d1.max()), rel=1e-12)
    out, r = same(dev, "combine_maps", d1, d2, 2.0, 0.25)        # ratio given
    assert r == 0.25
    same(dev, "combine_maps", d1, d2, w=3.0, ratio=None)
    out, r = same(dev, "combine_maps", np.zeros_like(d1), d2, 7.0)  # max(d1) = 0: ratio 0
    assert r == 0.0 and np.array_equal(out, d2)
    same(dev, "combine_maps", -d1, d2, 7.0)                      # max(d1) < 0: ratio 0


def test_results_live_where_the_cpu_ops_put_them(dev):
    """Device arrays for the CPU's float32 arrays, host values for its floats
    and float64 arrays; outputs on the inputs' device."""
    DA, put = dev.DA, dev.put
    a, m = put(f32(2, 3, 4, 5)), put(np.abs(f32(2, 20, 20)))
    for y in (dev.op("l2_distance")(a, a), dev.op("cosine_distance")(a, a),
              dev.op("upsample_bilinear")(m, 7, 9), dev.op("gaussian_filter")(m, 1.0),
              dev.op("box_pool")(m, 2, 2), dev.op("image_score")(m, 2, 2)):
        assert isinstance(y, DA) and y.dtype == np.float32 and y.device == 0
    assert dev.op("image_score")(m, 2, 2).shape == (2,)
    out, r = dev.op("combine_maps")(m, m, 7.0)
    assert isinstance(out, DA) and out.shape == (2, 20, 20) and isinstance(r, float)
    y = put(f32(2, 3))
    assert isinstance(dev.op("ode_combine")(y, [y], [1.0], 0.1), DA)
    norm = dev.op("ode_error_norm")([y], [1.0], 0.1, y, y, 1e-5, 1e-5)
    assert isinstance(norm, np.ndarray) and norm.dtype == np.float64 and norm.shape == (2,)


# ---------------------------------------------------------------------------
# the ODE steps' in-place and out= forms (their values: the op table)

def test_ode_combine_out_and_in_place(dev):
    y, k0, k1 = f32(3, 4, 5), f32(3, 4, 5), f32(3, 4, 5)
    h = [0.1, 0.2, 0.05]
    want = _core.ode_combine(y, [k0, k1], [0.5, -1.5], h)
    Y, K = dev.put(y), [dev.put(k0), dev.put(k1)]
    out = dev.DA.empty((3, 4, 5))
    r = dev.op("ode_combine")(Y, K, [0.5, -1.5], h, out=out)    # returns out, written
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(r.numpy(), out.numpy())
    dev.op("ode_combine")(Y, K, np.array([0.5, -1.5]), np.array(h), out=Y)   # in place
    np.testing.assert_allclose(Y.numpy(), want, rtol=1e-6, atol=1e-6)
    norm = dev.op("ode_error_norm")(K, [0.5, -1.5], 0.1, Y, Y, 1e-4, 1e-4)
    np.testing.assert_allclose(norm, _core.ode_error_norm([k0, k1], [0.5, -1.5], 0.1, want, want,
                                                          1e-4, 1e-4), rtol=1e-6)


def test_ode_out_overlapping_an_input_is_refused(dev):
    y, k = f32(2, 3), f32(2, 3)
    Y, K = dev.put(y), dev.put(k)
    with pytest.raises(ValueError, match=r"out must not overlap ks\[0\]"):
        dev.op("ode_combine")(Y, [K], [1.0], 0.1, out=K.reshape(2, 3))
    with pytest.raises(ValueError, match="out must be y itself or not overlap it"):
        dev.op("ode_combine")(Y, [K], [1.0], 0.1, out=Y.reshape(2, 3))


# ---------------------------------------------------------------------------
# bad inputs: the CPU op's exception and message

def _norm_msg(msg, name):
    return re.sub(r" on cuda:\d+", "", msg.replace("cuda_" + name, name))


_y = f32(2, 3)
_m = f32(1, 10, 10)
BAD = [
    ("l2_distance", (f32(1, 2, 3, 3), f32(1, 2, 3, 4)), {}, ValueError, "same shape"),
    ("cosine_distance", (f32(2, 3, 3), f32(2, 3, 3)), {}, ValueError, r"a must be \(N, C, h, w\)"),
    ("l2_distance", (f32(0, 2, 3, 3), f32(0, 2, 3, 3)), {}, ValueError, "zero-size"),
    ("cosine_distance", (f32(1, 2, 3, 3), f32(1, 2, 3, 3)), {"eps": -1.0}, ValueError,
     "eps must be >= 0, got -1"),
    ("upsample_bilinear", (f32(1, 2, 2), 0, 4), {}, ValueError, ">= 1"),
    ("upsample_bilinear", (f32(2, 2), 4, 4), {}, ValueError, r"\(N, h, w\)"),
    ("gaussian_filter", (_m, -1.0), {}, ValueError, "sigma -1, truncate 4"),
    ("gaussian_filter", (_m, 1e9), {}, ValueError, "sigma"),
    ("gaussian_filter", (_m, 1.0), {"mode": "wrap"}, ValueError, "mode"),
    ("gaussian_filter", (f32(4, 4), 1.0), {}, ValueError, r"\(N, H, W\)"),
    ("box_pool", (_m, 0, 1), {}, ValueError, "kernel must be >= 1"),
    ("image_score", (f32(1, 10, 100),), {}, ValueError, r"> rounds\*\(kernel-1\) = 56"),
    ("combine_maps", (f32(3), f32(4), 7.0), {}, ValueError, "same shape"),
    ("combine_maps", (f32(3), f32(3), 7.0, "x"), {}, TypeError, "ratio must be a float"),
    ("combine_maps", (f32(3), f32(3), float("nan")), {}, ValueError, "w nan"),
    ("combine_maps", (np.ones(3, np.float32), np.ones(3, np.float32), 1e30, 1e30), {}, ValueError,
     "invalid argument"),
    ("ode_combine", (_y, [f32(2, 4)], [1.0], 0.1), {}, ValueError,
     r"ks\[0\] must be \(2, 3\) float32"),
    ("ode_combine", (_y, [_y, _y], [1.0], 0.1), {}, ValueError, "coeffs must have 2 values"),
    ("ode_combine", (_y, [_y], [1.0], [0.1, 0.2, 0.3]), {}, ValueError,
     r"h must have 2 values \(one per sample\)"),
    ("ode_combine", (_y, [], [], 0.1), {}, ValueError, "ks must hold 1 to 16 arrays"),
    ("ode_combine", (_y, [_y] * 17, [1.0] * 17, 0.1), {}, ValueError, "got 17"),
    ("ode_combine", (_y, 5, [1.0], 0.1), {}, TypeError, "ks must be a list"),
    ("ode_combine", (np.ones((), np.float32), [np.ones((), np.float32)], [1.0], 0.1), {},
     ValueError, "batch dimension"),
    ("ode_combine", (_y, [_y], [1.0], 0.1), {"out": f32(3, 2)}, ValueError, "out must be"),
    ("ode_combine", (f32(2, 0), [f32(2, 0)], [1.0], 0.1), {}, ValueError, "zero-size"),
    ("ode_error_norm", ([_y], [1.0], 0.1, _y, _y, 0.0, 0.0), {}, ValueError,
     "not both 0, got rtol=0, atol=0"),
    ("ode_error_norm", ([_y], [1.0], 0.1, _y, f32(3, 2), 1e-5, 1e-5), {}, ValueError,
     r"y_new must be \(2, 3\) float32"),
    ("ode_error_norm", ([_y], [1.0], 0.1, _y, _y, 1e-5), {}, TypeError, "atol"),
]


@pytest.mark.parametrize("name, args, kw, exc, match", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_what_the_cpu_raises(dev, name, args, kw, exc, match):
    with pytest.raises(exc, match=match) as cpu:
        getattr(_core, name)(*args, **kw)
    with pytest.raises(exc, match=match) as got:
        dev(name, *args, **kw)
    assert _norm_msg(str(got.value), name) == str(cpu.value)


@pytest.mark.parametrize("name, args", [
    ("l2_distance", lambda x: (x, x)),
    ("cosine_distance", lambda x: (np.zeros_like(x), x)),
    ("upsample_bilinear", lambda x: (x[0], 4, 4)),
    ("gaussian_filter", lambda x: (x[0], 1.0)),
    ("gaussian_filter", lambda x: (x[0], 0.0)),          # the copy path checks too
    ("box_pool", lambda x: (x[0], 2, 2)),
    ("box_pool", lambda x: (x[0], 1, 3)),                # and the nothing-to-pool path
    ("image_score", lambda x: (x[0], 2, 2)),
    ("combine_maps", lambda x: (x[0], np.abs(x[0]), 7.0)),
    ("combine_maps", lambda x: (np.abs(x[0]), x[0], 7.0, 0.5)),
])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_input_is_a_value_error(dev, name, args, bad):
    x = np.abs(f32(2, 3, 8, 8))
    x.reshape(-1)[77] = bad                           # lands in x[0] and in every form above
    args = args(x)
    with pytest.raises(ValueError, match=f"^{name}: input contains NaN or inf$"):
        getattr(_core, name)(*args)
    with pytest.raises(ValueError, match=f"^(cuda_)?{name}: input contains NaN or inf$"):
        dev(name, *args)


# ---------------------------------------------------------------------------
# the C glue itself (a CUDA build; a GPU for device arrays)

HOST_CALLS = [
    ("l2_distance", "a", lambda h: (h((1, 2, 4, 4)), h((1, 2, 4, 4))), {"squared": True}),
    ("cosine_distance", "a", lambda h: (h((1, 2, 4, 4)), h((1, 2, 4, 4))), {}),
    ("upsample_bilinear", "x", lambda h: (h((1, 4, 4)), 8, 8), {}),
    ("gaussian_filter", "x", lambda h: (h((1, 4, 4)), 1.0), {"mode": "nearest"}),
    ("box_pool", "x", lambda h: (h((1, 20, 20)),), {}),
    ("image_score", "x", lambda h: (h((1, 20, 20)), 2, 2), {}),
    ("combine_maps", "d1", lambda h: (h((1, 4, 4)), h((1, 4, 4)), 7.0), {}),
    ("ode_combine", "y", lambda h: (h((2, 3)), [h((2, 3))], [1.0], 0.1), {}),
    ("ode_error_norm", "y", lambda h: ([h((2, 3))], [1.0], 0.1, h((2, 3)), h((2, 3)), 1e-5, 1e-5),
     {}),
]


@pytest.mark.skipif(not cuda.is_built(), reason="a CPU-only build has no CUDA ops")
@pytest.mark.parametrize("name, first, make, kw", HOST_CALLS, ids=[c[0] for c in HOST_CALLS])
def test_cuda_glue_refuses_host_arrays(name, first, make, kw):
    """Checked before any device call: this runs without a GPU."""
    op = getattr(_core, "cuda_" + name)
    args = make(lambda s: np.ones(s, np.float32))
    with pytest.raises(TypeError, match=rf"^cuda_{name}: {first} must be a float32 CUDA array .*"
                                        r"a numpy array .* \(on the host\)"):
        op(*args, **kw)
    with pytest.raises(TypeError, match=rf"cuda_{name}"):
        op(*args, bogus=1)
    assert op.__text_signature__ == getattr(_core, name).__text_signature__


@pytest.mark.skipif(not cuda.is_built(), reason="a CPU-only build has no CUDA ops")
def test_cuda_glue_checks_host_arguments_first():
    """What the CPU op checks before its arrays, the CUDA op checks too (no GPU needed)."""
    x = np.ones((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"^cuda_upsample_bilinear: output size \(H, W\) must be >= 1"):
        _core.cuda_upsample_bilinear(x, 0, 4)
    with pytest.raises(ValueError, match="^cuda_gaussian_filter: mode must be"):
        _core.cuda_gaussian_filter(x, 1.0, mode="constant")
    with pytest.raises(ValueError, match="^cuda_box_pool: kernel must be >= 1"):
        _core.cuda_box_pool(x, 0)
    with pytest.raises(ValueError, match="^cuda_ode_error_norm: rtol and atol"):
        _core.cuda_ode_error_norm([x], [1.0], 0.1, x, x, -1.0, 1e-5)
    with pytest.raises(TypeError, match="^cuda_combine_maps: ratio must be a float or None"):
        _core.cuda_combine_maps(x, x, 7.0, [1])


@pytest.mark.skipif(cuda.is_built(), reason="a CUDA build")
def test_cpu_only_build_has_no_cuda_scoring_ops():
    for name in SCORE_OPS + ODE_OPS:
        assert not hasattr(_core, "cuda_" + name)


@gpu
def test_gpu_glue_refuses_other_dtypes_and_mixed_hosts():
    DA = cuda.DeviceArray
    i32 = DA.from_numpy(np.ones((1, 2, 4, 4), np.int32))
    f = DA.from_numpy(np.ones((1, 2, 4, 4), np.float32))
    with pytest.raises(TypeError, match=r"cuda_l2_distance: b must be \(N, C, h, w\) float32, "
                                        r"got \(1, 2, 4, 4\) int32 on cuda:0"):
        _core.cuda_l2_distance(f, i32)
    with pytest.raises(TypeError, match="cuda_cosine_distance: b must be a float32 CUDA array"):
        _core.cuda_cosine_distance(f, np.ones((1, 2, 4, 4), np.float32))
    m = DA.from_numpy(np.ones((1, 20, 20), np.float32))
    with pytest.raises(TypeError, match="cuda_combine_maps: d2 must be a float32 CUDA array"):
        _core.cuda_combine_maps(m, np.ones((1, 20, 20), np.float32), 7.0)
    with pytest.raises(TypeError, match=r"cuda_image_score: x must be \(N, H, W\) float32, got .* int64"):
        _core.cuda_image_score(DA.from_numpy(np.ones((1, 20, 20), np.int64)))
    y = DA.from_numpy(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"cuda_ode_combine: ks\[1\] must be a float32 CUDA array"):
        _core.cuda_ode_combine(y, [y, np.ones((2, 3), np.float32)], [1.0, 1.0], 0.1)
    with pytest.raises(TypeError, match="cuda_ode_error_norm: y_new must be a float32 CUDA array"):
        _core.cuda_ode_error_norm([y], [1.0], 0.1, y, np.ones((2, 3), np.float32), 1e-5, 1e-5)
    with pytest.raises(TypeError, match="cuda_ode_combine: out must be"):
        _core.cuda_ode_combine(y, [y], [1.0], 0.1, out=DA.from_numpy(np.ones((2, 3), np.int32)))


@gpu
def test_gpu_results_are_deterministic():
    DA = cuda.DeviceArray
    a, b = DA.from_numpy(f32(4, 512, 16, 16)), DA.from_numpy(f32(4, 512, 16, 16))
    for op in (_core.cuda_l2_distance, _core.cuda_cosine_distance):
        assert np.array_equal(op(a, b).numpy(), op(a, b).numpy())
    ks = [DA.from_numpy(f32(3, 3, 64, 64)) for _ in range(7)]
    c = [-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40]
    n1 = _core.cuda_ode_error_norm(ks, c, [0.1, 0.2, 0.3], ks[0], ks[1], 1e-5, 1e-5)
    n2 = _core.cuda_ode_error_norm(ks, c, [0.1, 0.2, 0.3], ks[0], ks[1], 1e-5, 1e-5)
    assert np.array_equal(n1, n2)
