"""The metrics on the GPU (csrc/cuda/metrics.cu, csrc/py_cuda_metrics.c).

1. The glue without a GPU: the cuda_* metrics refuse host and non-float32
   scores with a TypeError before any device call; a CPU-only build has
   none of them.
2. An EMULATED device: `DeviceModel` is metrics.cu's algorithm in numpy
   (one stable sort of all keys, reduce-by-key over equal keys, inclusive
   scans of the packed TP/FP counts and of the 96-bit fixed-point PRO sums,
   the per-point kernels), behind the real host half (labels checked by the
   CPU glue, regions from _core.pro_regions). Through timenet.metrics with
   device arrays and CUDA tensors it must equal the CPU metrics (AUROC, F1
   and the ROC curve bit for bit, PRO to 1e-12) and sklearn, on random,
   heavy-tie, signed-zero, one-class, tiny and larger inputs.
3. On a GPU (skipped, with the reason, where there is none): the same
   comparisons through the real _core.cuda_*, a 160 x 256^2 test set, the
   CPU's error messages, and memory handed back to the allocator.
"""
import os
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

sys.path.insert(0, os.path.dirname(__file__))

from test_cuda import HAVE_GPU, NO_GPU_REASON, FakeDeviceArray, emulated_cuda  # noqa: E402,F401
from test_metrics import PRO_CASES, blobs, smooth  # noqa: E402

from timenet import Tensor, _core, cuda, metrics  # noqa: E402

gpu = pytest.mark.skipif(not HAVE_GPU, reason=NO_GPU_REASON)
METRICS = ("roc_curve", "auroc", "f1_max", "pro_curve", "aupro")


# ---------------------------------------------------------------------------
# 1. the glue without a GPU

@pytest.mark.skipif(cuda.is_built(), reason="a CUDA build has the CUDA metrics")
def test_cpu_only_build_has_no_cuda_metrics():
    assert not any(hasattr(_core, "cuda_" + m) for m in METRICS)


@pytest.mark.skipif(not cuda.is_built(), reason="a CPU-only build has no CUDA metrics")
@pytest.mark.parametrize("scores", [np.ones(4, np.float32), np.ones(4), [0.1, 0.2, 0.3, 0.4],
                                    None, 1.0], ids=["f32", "f64", "list", "None", "float"])
def test_cuda_metrics_refuse_host_scores(scores):
    y = np.array([0, 1, 0, 1], bool)
    for name in ("auroc", "roc_curve", "f1_max"):
        with pytest.raises(TypeError, match=f"cuda_{name}: scores must be a float32 CUDA array"):
            getattr(_core, "cuda_" + name)(scores, y)
    maps = np.reshape(scores, (1, 2, 2)) if isinstance(scores, (list, np.ndarray)) else scores
    for name in ("pro_curve", "aupro"):
        with pytest.raises(TypeError, match=f"cuda_{name}: maps must be a float32 CUDA array"):
            getattr(_core, "cuda_" + name)(maps, y.reshape(1, 2, 2))


@pytest.mark.skipif(not cuda.is_built(), reason="a CPU-only build has no CUDA metrics")
def test_cuda_metrics_check_arguments_first():
    m = np.ones((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="cuda_aupro: fpr_limit must be in"):
        _core.cuda_aupro(m, m, fpr_limit=1.5)
    with pytest.raises(ValueError, match="cuda_pro_curve: max_fpr must be in"):
        _core.cuda_pro_curve(m, m, max_fpr=0.0)
    with pytest.raises(TypeError):
        _core.cuda_auroc(m.ravel())  # labels missing


def test_host_inputs_stay_on_the_cpu(monkeypatch):
    class NoCuda:
        def __getattr__(self, name):
            if name.startswith("cuda_"):
                raise AssertionError(f"{name} called for host inputs")
            return getattr(_core, name)
    monkeypatch.setattr(metrics, "_core", NoCuda())
    rng = np.random.default_rng(0)
    s, y = rng.random(50).astype(np.float32), np.arange(50) % 2
    assert metrics.auroc(s, y) == _core.auroc(s, y)
    maps, masks = rng.random((2, 8, 8)), blobs(rng, (2, 8, 8), 0.2)
    assert metrics.aupro(maps, masks) == _core.aupro(maps, masks)


# ---------------------------------------------------------------------------
# 2. metrics.cu's algorithm in numpy, on the emulated device

ONES_LOW = (1 << 32) - 1


def sort_keys(x):
    """csrc/metrics/sort.h's key_f32: ascending keys are descending scores,
    -0 and +0 one key."""
    x = np.array(x, np.float32).ravel()
    x[x == 0] = 0
    u = x.view(np.uint32)
    return ~np.where(u & 0x80000000, ~u, u | 0x80000000).astype(np.uint32)


def key_values(k):
    u = ~k.astype(np.uint32)
    return np.where(u & 0x80000000, u & 0x7FFFFFFF, ~u).astype(np.uint32).view(
        np.float32).astype(np.float64)


def by_distinct_key(keys, values):
    """SortPairs + ReduceByKey + InclusiveScan: the distinct keys, ascending,
    and the cumulative sums of `values` at each."""
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    starts = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
    return k[starts], np.cumsum(np.add.reduceat(v, starts))


class DeviceModel:
    """metrics.cu in numpy: the same integers, the same per-point formulas."""

    @staticmethod
    def roc(scores, labels):
        packed = np.where(labels, np.uint64(1 << 32), np.uint64(1))
        key, cum = by_distinct_key(sort_keys(scores), packed)
        return key, (cum >> np.uint64(32)).astype(np.int64), (cum & np.uint64(ONES_LOW)).astype(
            np.int64)

    @classmethod
    def auroc(cls, scores, labels):
        _, tp, fp = cls.roc(scores, labels)
        tpp, fpp = np.r_[0, tp[:-1]], np.r_[0, fp[:-1]]
        area2 = int(np.sum((fp - fpp).astype(np.uint64) * (tp + tpp).astype(np.uint64)))
        return area2 / (2.0 * float(tp[-1]) * float(fp[-1]))

    @classmethod
    def f1_max(cls, scores, labels):
        key, tp, fp = cls.roc(scores, labels)
        num, den = 2 * tp, tp + fp + tp[-1]
        f = num / den
        best = None  # exact among the near-best: larger fraction, then larger g
        for g in np.flatnonzero(f >= f.max() * (1 - 1e-12)):
            a = (int(num[g]), int(den[g]), g)
            if best is None or a[0] * best[1] > best[0] * a[1] or (
                    a[0] * best[1] == best[0] * a[1] and g > best[2]):
                best = a
        return best[0] / best[1], float(key_values(key[best[2]:best[2] + 1])[0])

    @classmethod
    def roc_curve(cls, scores, labels, drop_intermediate=True):
        key, tp, fp = cls.roc(scores, labels)
        m = len(key)
        keep = np.ones(m, bool)
        if drop_intermediate and m > 2:
            keep[1:-1] = (np.diff(fp, 2) != 0) | (np.diff(tp, 2) != 0)
        return (np.r_[0.0, fp[keep] / fp[-1]], np.r_[0.0, tp[keep] / tp[-1]],
                np.r_[np.inf, key_values(key[keep])])

    @staticmethod
    def pro(maps, masks):
        region, sizes = _core.pro_regions(masks)  # the host half, as the glue
        weight = np.array([0] + [int((1.0 / float(s)) * 2.0 ** 96) for s in sizes], object)
        keys = sort_keys(maps)
        key, fix = by_distinct_key(keys, weight[region.ravel()])
        _, nn = by_distinct_key(keys, (region.ravel() == 0).astype(np.int64))
        fpr = nn / float(nn[-1])
        pro = np.minimum(np.array([int(v) / (1 << 96) for v in fix]) / len(sizes), 1.0)
        return key, fpr, pro

    @classmethod
    def pro_curve(cls, maps, masks, max_fpr=1.0):
        key, fpr, pro = cls.pro(maps, masks)
        over = np.flatnonzero(fpr > max_fpr)
        last = over[0] if len(over) else len(key) - 1
        return (np.r_[0.0, fpr[:last + 1]], np.r_[0.0, pro[:last + 1]],
                np.r_[np.inf, key_values(key[:last + 1])])

    @classmethod
    def aupro(cls, maps, masks, fpr_limit=0.3):
        _, x1, y1 = cls.pro(maps, masks)
        x0, y0 = np.r_[0.0, x1[:-1]], np.r_[0.0, y1[:-1]]
        full = 0.5 * (y0 + y1) * (x1 - x0)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        cut = 0.5 * (y + y0) * (fpr_limit - x0)
        seg = np.where(x1 <= fpr_limit, full, np.where(x0 >= fpr_limit, 0.0, cut))
        return float(np.sum(seg)) / fpr_limit


class FakeMetricsCore:
    """_core with the cuda_* metrics emulated: the CPU glue checks the
    arguments (the CUDA glue shares its checks), DeviceModel computes."""

    def __getattr__(self, name):
        if not name.startswith("cuda_"):
            return getattr(_core, name)
        cpu, model = getattr(_core, name[5:]), getattr(DeviceModel, name[5:])

        def op(scores, labels, **kw):
            if type(scores) is not FakeDeviceArray or scores.dtype != np.float32:
                raise TypeError(f"{name}: scores must be a float32 CUDA array")
            if type(labels) is FakeDeviceArray:
                raise TypeError(f"{name}: labels must be a host (numpy) array")
            cpu(scores.a, labels, **kw)  # raises what the glue raises
            return model(scores.a, np.asarray(labels) != 0, **kw)
        return op


@pytest.fixture
def emulated_metrics(emulated_cuda, monkeypatch):
    monkeypatch.setattr(metrics, "_core", FakeMetricsCore())
    monkeypatch.setattr(metrics, "_DeviceArray", FakeDeviceArray)
    return FakeDeviceArray


# ---- cases ------------------------------------------------------------------

def roc_cases(large=20_000):
    rng = np.random.default_rng(0)
    s = rng.standard_normal(large).astype(np.float32)
    yield "random", s, rng.random(large) < 0.3
    yield "heavy ties", (np.round(rng.random(5000) * 8) / 8).astype(np.float32), \
        rng.random(5000) < 0.5
    yield "one value", np.full(100, 0.5, np.float32), np.arange(100) % 3 == 0
    z = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, -0.0, 2.0], np.float32)
    yield "signed zeros", z, np.array([1, 0, 0, 1, 1, 0, 1, 0], bool)
    yield "tiny", np.array([0.2, 0.7], np.float32), np.array([False, True])
    yield "inverted", np.arange(50, dtype=np.float32), np.arange(50) < 10
    yield "0/255 labels", rng.random(300).astype(np.float32), \
        (rng.random(300) < 0.5).astype(np.uint8) * 255
    g = rng.standard_normal((3, large // 4))
    extreme = np.r_[g[0] * 1e30, g[1] * 1e-35, g[2] * 1e-42].astype(np.float32)  # subnormals too
    yield "extreme magnitudes", extreme, rng.random(len(extreme)) < 0.1


def pro_cases(n=4, size=48):
    rng = np.random.default_rng(1)
    yield "blobs", smooth(rng, (n, size, size)).astype(np.float32), \
        blobs(rng, (n, size, size), 0.15)
    masks = blobs(rng, (n, 32, 32), 0.2)
    masks[1] = False
    yield "heavy ties, a normal image", (np.round(rng.random((n, 32, 32)) * 10) / 10).astype(
        np.float32), masks
    m = np.zeros((2, 12, 12), bool)
    m[:, ::3, ::3] = True
    m[1, 1, 1] = m[1, 2, 2] = True
    yield "many regions", rng.random(m.shape).astype(np.float32), m
    yield "tiny", np.array([[[0.1, 0.9], [0.4, 0.4]]], np.float32), \
        np.array([[[0, 1], [0, 0]]], bool)
    yield "one value", np.zeros((2, 8, 8), np.float32), blobs(rng, (2, 8, 8), 0.3)
    for name, make in PRO_CASES.items():  # test_metrics' cases, in float32
        maps, masks = make(rng)
        yield name, maps.astype(np.float32), masks


ROC = list(roc_cases())
PRO = list(pro_cases())


def check_roc(to_dev, s, y):
    """Every ROC metric of device scores against the CPU (and sklearn)."""
    d = to_dev(s)
    assert metrics.auroc(d, y) == metrics.auroc(s, y)
    assert abs(metrics.auroc(d, y) - roc_auc_score(y != 0, s)) < 1e-12
    assert metrics.f1_max(d, y) == metrics.f1_max(s, y)
    for drop in (True, False):
        got, want = metrics.roc_curve(d, y, drop), metrics.roc_curve(s, y, drop)
        for g, w in zip(got, want):
            assert isinstance(g, np.ndarray) and g.dtype == np.float64
            np.testing.assert_array_equal(g, w)
    fpr, tpr, _ = sk_roc_curve(y != 0, s)
    np.testing.assert_allclose(metrics.roc_curve(d, y)[0], fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(metrics.roc_curve(d, y)[1], tpr, rtol=0, atol=1e-15)


def check_pro(to_dev, maps, masks):
    d = to_dev(maps)
    for max_fpr in (1.0, 0.3, 0.01):
        got, want = metrics.pro_curve(d, masks, max_fpr), metrics.pro_curve(maps, masks, max_fpr)
        assert got[0].shape == want[0].shape
        np.testing.assert_array_equal(got[0], want[0])    # integer counts / N
        np.testing.assert_allclose(got[1], want[1], rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(got[2], want[2])
    for limit in (0.3, 1.0, 0.05):
        assert abs(metrics.aupro(d, masks, limit) - metrics.aupro(maps, masks, limit)) < 1e-12
    assert metrics.pixel_auroc(d, masks) == metrics.pixel_auroc(maps, masks)


@pytest.mark.parametrize("name, s, y", ROC, ids=[c[0] for c in ROC])
def test_emulated_roc_matches_cpu(emulated_metrics, name, s, y):
    check_roc(emulated_metrics.from_numpy, s, y)


@pytest.mark.parametrize("name, maps, masks", PRO, ids=[c[0] for c in PRO])
def test_emulated_pro_matches_cpu(emulated_metrics, name, maps, masks):
    check_pro(emulated_metrics.from_numpy, maps, masks)


def test_emulated_tensors_and_device_labels(emulated_metrics):
    rng = np.random.default_rng(3)
    maps, masks = smooth(rng, (3, 16, 16)).astype(np.float32), blobs(rng, (3, 16, 16), 0.2)
    t = Tensor(maps, device="cuda")
    assert t.is_cuda
    tm = Tensor(masks.astype(np.float32), device="cuda")   # device masks come back to the host
    assert metrics.aupro(t, tm) == metrics.aupro(t, masks)
    assert abs(metrics.aupro(t, masks) - metrics.aupro(maps, masks)) < 1e-12
    assert metrics.pixel_auroc(t, tm) == metrics.pixel_auroc(maps, masks)
    s, y = maps.ravel(), masks.ravel()
    assert metrics.auroc(Tensor(s, device="cuda"), Tensor(y.astype(np.float32),
                                                          device="cuda")) == metrics.auroc(s, y)
    with pytest.raises(ValueError, match="masks must have the shape of maps"):
        metrics.pixel_auroc(t, masks[:2])


def test_emulated_errors_are_the_cpu_errors(emulated_metrics):
    D = emulated_metrics.from_numpy
    s = np.linspace(0, 1, 10, dtype=np.float32)
    with pytest.raises(ValueError, match="no negative"):
        metrics.auroc(D(s), np.ones(10, bool))
    with pytest.raises(ValueError, match="no positive"):
        metrics.roc_curve(D(s), np.zeros(10, bool))
    assert metrics.f1_max(D(s), np.ones(10, bool)) == (1.0, 0.0)  # all positive: defined
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.auroc(D(np.r_[s[:9], np.float32(np.inf)]), np.arange(10) % 2)
    with pytest.raises(ValueError, match="no anomalous pixel"):
        metrics.aupro(D(np.ones((1, 4, 4), np.float32)), np.zeros((1, 4, 4), bool))


def test_emulated_model_is_the_cpu_on_a_larger_set(emulated_metrics):
    rng = np.random.default_rng(5)
    maps = smooth(rng, (8, 64, 64), 2.0).astype(np.float32)
    masks = blobs(rng, maps.shape, 0.05)
    check_pro(emulated_metrics.from_numpy, maps, masks)
    check_roc(emulated_metrics.from_numpy, maps.ravel(), masks.ravel())


# ---------------------------------------------------------------------------
# 3. on a GPU

def _dev(a):
    return cuda.DeviceArray.from_numpy(np.ascontiguousarray(a, np.float32))


@gpu
@pytest.mark.parametrize("name, s, y", ROC, ids=[c[0] for c in ROC])
def test_gpu_roc_matches_cpu(name, s, y):
    check_roc(_dev, s, y)


@gpu
@pytest.mark.parametrize("name, maps, masks", PRO, ids=[c[0] for c in PRO])
def test_gpu_pro_matches_cpu(name, maps, masks):
    check_pro(_dev, maps, masks)


@gpu
def test_gpu_test_set_sized():
    # 160 maps of 256^2: 10^7 pixels, ~3% anomalous in half of the images.
    rng = np.random.default_rng(7)
    maps = smooth(rng, (160, 256, 256), 3.0).astype(np.float32)
    masks = blobs(rng, maps.shape, 0.03)
    masks[80:] = False
    d = _dev(maps)
    assert metrics.pixel_auroc(d, masks) == metrics.pixel_auroc(maps, masks)
    assert abs(metrics.aupro(d, masks) - metrics.aupro(maps, masks)) < 1e-10
    assert metrics.f1_max(d.reshape(-1), masks.ravel()) == metrics.f1_max(maps.ravel(),
                                                                          masks.ravel())
    got, want = metrics.pro_curve(d, masks, 0.3), metrics.pro_curve(maps, masks, 0.3)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-15)


@gpu
def test_gpu_tensors_and_device_labels():
    rng = np.random.default_rng(3)
    maps, masks = smooth(rng, (3, 16, 16)).astype(np.float32), blobs(rng, (3, 16, 16), 0.2)
    t = Tensor(maps, device="cuda")
    assert metrics.aupro(t, Tensor(masks.astype(np.float32), device="cuda")) == \
        metrics.aupro(t, masks)
    assert metrics.pixel_auroc(t, masks) == metrics.pixel_auroc(maps, masks)


@gpu
def test_gpu_glue_errors():
    s = np.linspace(0, 1, 10, dtype=np.float32)
    y = np.arange(10) % 2
    with pytest.raises(TypeError, match="scores must be a float32 CUDA array"):
        _core.cuda_auroc(cuda.DeviceArray.from_numpy(np.arange(10, dtype=np.int32)), y)
    with pytest.raises(TypeError, match="labels must be a host"):
        _core.cuda_auroc(_dev(s), cuda.DeviceArray.from_numpy(y.astype(np.float32)))
    with pytest.raises(ValueError, match=r"scores must be \(n,\)"):
        _core.cuda_auroc(_dev(s.reshape(2, 5)), y.reshape(2, 5))
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        _core.cuda_aupro(_dev(s.reshape(2, 5)), y.reshape(2, 5))
    with pytest.raises(ValueError, match="scores is empty"):
        _core.cuda_auroc(_dev(np.zeros(0)), np.zeros(0, bool))


def _message(fn, *args):
    try:
        fn(*args)
    except (TypeError, ValueError) as e:
        return type(e), str(e).split(": ", 1)[1]
    return None


@gpu
def test_gpu_errors_are_the_cpu_errors():
    rng = np.random.default_rng(0)
    s, y = np.linspace(0, 1, 10, dtype=np.float32), np.arange(10) % 2
    maps, masks = rng.random((2, 6, 6)).astype(np.float32), blobs(rng, (2, 6, 6), 0.2)
    nan = maps.copy()
    nan[1, 2, 3] = np.nan
    roc_bad = [(s, y[:9]), (np.r_[s[:9], np.nan].astype(np.float32), y), (s, np.zeros(10)),
               (s, np.ones(10, bool)), (s, 2 * y - 1), (s, np.r_[y[:9], np.nan]),
               (s, np.array(["a"] * 10))]
    for scores, labels in roc_bad:
        for name in ("auroc", "roc_curve", "f1_max"):
            want = _message(getattr(_core, name), scores, labels)
            assert _message(getattr(_core, "cuda_" + name), _dev(scores), labels) == want
    pro_bad = [(maps, masks[:, :5]), (nan, masks), (maps, np.zeros_like(masks)),
               (maps, np.ones_like(masks)), (maps, -masks.astype(int))]
    for m, k in pro_bad:
        for name in ("aupro", "pro_curve"):
            want = _message(getattr(_core, name), m, k)
            assert _message(getattr(_core, "cuda_" + name), _dev(m), k) == want


@gpu
def test_gpu_metrics_give_their_memory_back():
    import gc
    rng = np.random.default_rng(2)
    maps, masks = smooth(rng, (4, 64, 64)).astype(np.float32), blobs(rng, (4, 64, 64), 0.1)
    d = _dev(maps)
    gc.collect()
    cuda.synchronize()
    before = cuda.memory_stats()["allocated_bytes"]
    for _ in range(3):
        metrics.aupro(d, masks)
        metrics.pro_curve(d, masks)
        metrics.roc_curve(d.reshape(-1), masks.ravel())
        metrics.auroc(d.reshape(-1), masks.ravel())
        metrics.f1_max(d.reshape(-1), masks.ravel())
        with pytest.raises(ValueError):
            metrics.aupro(d, np.zeros_like(masks))
    assert cuda.memory_stats()["allocated_bytes"] == before
