"""Scoring kernels and timenet.scoring against numpy / scipy references."""
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi

from timenet import _core, scoring
from timenet.scoring import Ratios, anomaly_map, estimate_ratios, image_score

rng = np.random.default_rng(0)


# -- references ---------------------------------------------------------------

def ref_l2(a, b, squared=False):
    d = ((a.astype(np.float64) - b) ** 2).sum(1)
    return d if squared else np.sqrt(d)


def ref_cos(a, b, eps=1e-8):
    a, b = a.astype(np.float64), b.astype(np.float64)
    na = np.maximum(np.sqrt((a * a).sum(1)), eps)
    nb = np.maximum(np.sqrt((b * b).sum(1)), eps)
    return 1 - np.clip((a * b).sum(1) / (na * nb), -1, 1)


def _src(out, inp, align_corners):
    """PyTorch's source index rule for one axis: (i0, i1, lambda)."""
    d = np.arange(out, dtype=np.float64)
    if align_corners:
        s = d * (inp - 1) / (out - 1) if out > 1 else np.zeros(out)
    else:
        s = np.maximum((d + 0.5) * inp / out - 0.5, 0)
    i0 = np.minimum(np.floor(s).astype(int), inp - 1)
    return i0, np.minimum(i0 + 1, inp - 1), s - i0


def ref_bilinear(x, H, W, align_corners=False):
    """F.interpolate(x[:, None], (H, W), mode="bilinear", align_corners=...)."""
    x = x.astype(np.float64)
    y0, y1, ly = _src(H, x.shape[1], align_corners)
    x0, x1, lx = _src(W, x.shape[2], align_corners)
    rows = x[:, y0] * (1 - ly)[None, :, None] + x[:, y1] * ly[None, :, None]
    return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx


def ref_box_pool(x, k=8, rounds=8):
    x = x.astype(np.float64)
    for _ in range(rounds):
        x = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2)).mean(axis=(-1, -2))
    return x


def ref_F(d1, d2, w, ratio=None):
    d1, d2 = d1.astype(np.float64), d2.astype(np.float64)
    if ratio is None:
        ratio = d2.max() / d1.max()
    return w * ratio * d1 + d2, ratio


def ref_gauss(x, sigma, mode="reflect"):
    return ndi.gaussian_filter(x.astype(np.float64), (0, sigma, sigma), mode=mode, truncate=4.0)


# -- kernels ------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 70, 9, 11), (3, 1, 1, 1)])
def test_distances(shape):
    a = rng.standard_normal(shape).astype(np.float32)
    b = (a + 0.3 * rng.standard_normal(shape)).astype(np.float32)
    np.testing.assert_allclose(_core.l2_distance(a, b), ref_l2(a, b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_core.l2_distance(a, b, squared=True), ref_l2(a, b, True),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_core.cosine_distance(a, b), ref_cos(a, b), rtol=1e-5, atol=1e-6)
    assert _core.l2_distance(a, b).shape == (shape[0],) + shape[2:]


def test_cosine_edge_cases():
    a = np.zeros((1, 4, 1, 3), np.float32)
    b = np.zeros((1, 4, 1, 3), np.float32)
    a[0, :, 0, 1] = b[0, :, 0, 1] = [1, 2, 3, 4]        # identical -> 0
    a[0, :, 0, 2], b[0, :, 0, 2] = [1, 0, 0, 0], [-1, 0, 0, 0]  # opposite -> 2
    d = _core.cosine_distance(a, b)                     # zero vectors -> 1 (cos 0)
    np.testing.assert_allclose(d[0, 0], [1, 0, 2], atol=1e-7)
    assert np.all(d >= 0) and np.all(d <= 2)
    tiny = np.full((1, 3, 1, 1), 1e-20, np.float32)    # below eps: no division blow-up
    assert np.isfinite(_core.cosine_distance(tiny, tiny)).all()


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("src,dst", [((4, 4), (16, 16)), ((3, 5), (17, 9)), ((8, 8), (3, 5)),
                                     ((1, 1), (4, 3)), ((5, 2), (1, 1))])
def test_upsample_bilinear(src, dst, align_corners):
    x = rng.standard_normal((2,) + src).astype(np.float32)
    y = _core.upsample_bilinear(x, dst[0], dst[1], align_corners)
    assert y.shape == (2,) + dst and y.dtype == np.float32
    np.testing.assert_allclose(y, ref_bilinear(x, *dst, align_corners), rtol=1e-6, atol=1e-6)


def test_upsample_bilinear_known_values():
    # align_corners=False, 2 -> 4: PyTorch gives [a, .75a+.25b, .25a+.75b, b]
    x = np.array([[[0.0, 4.0]]], np.float32)
    np.testing.assert_allclose(_core.upsample_bilinear(x, 1, 4), [[[0, 1, 3, 4]]])
    np.testing.assert_allclose(_core.upsample_bilinear(x, 1, 4, True), [[[0, 4 / 3, 8 / 3, 4]]],
                               rtol=1e-6)


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest"])
@pytest.mark.parametrize("sigma", [0.7, 2.0, 4.0])
def test_gaussian_filter_equals_scipy(sigma, mode):
    x = rng.standard_normal((2, 37, 45)).astype(np.float32)
    np.testing.assert_allclose(_core.gaussian_filter(x, sigma, mode=mode), ref_gauss(x, sigma, mode),
                               rtol=0, atol=1e-5 * np.abs(x).max())


def test_gaussian_filter_border_impulses():
    # impulses on the corners and edges, and a map smaller than the radius (16)
    for shape in [(1, 40, 40), (1, 9, 13), (1, 1, 20)]:
        x = np.zeros(shape, np.float32)
        H, W = shape[1:]
        for (i, j) in [(0, 0), (H - 1, W - 1), (0, W // 2), (H // 2, 0), (H - 1, 0)]:
            x[0, i, j] += 1
        for mode in ("reflect", "mirror"):
            y = _core.gaussian_filter(x, 4.0, mode=mode)
            np.testing.assert_allclose(y, ref_gauss(x, 4.0, mode), rtol=0, atol=1e-6)
            if mode == "reflect":  # mass is preserved by the half-sample reflection
                np.testing.assert_allclose(y.sum(), x.sum(), rtol=1e-5)
    x = rng.random((1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_core.gaussian_filter(x, 0.0), x)  # sigma 0: copy, like scipy


@pytest.mark.parametrize("shape,k,rounds", [((2, 64, 70), 8, 8), ((1, 20, 21), 3, 2),
                                            ((1, 57, 57), 8, 8), ((1, 5, 6), 2, 0)])
def test_box_pool_and_image_score(shape, k, rounds):
    x = rng.random(shape).astype(np.float32)
    p = _core.box_pool(x, k, rounds)
    ref = ref_box_pool(x, k, rounds)
    assert p.shape == ref.shape == (shape[0], shape[1] - rounds * (k - 1), shape[2] - rounds * (k - 1))
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_core.image_score(x, k, rounds), ref.max(axis=(1, 2)), rtol=1e-5)


def test_image_score_api_256():
    m = np.zeros((2, 256, 256), np.float32)
    m[1, 100:110, 50:60] = 1.0
    s = image_score(m)
    assert s.shape == (2,) and s[0] == 0 and s[1] > 0
    np.testing.assert_allclose(s, ref_box_pool(m).max(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"H, W > rounds\*\(kernel-1\) = 56"):
        image_score(np.zeros((1, 56, 300)))


def test_combine_maps():
    d1 = rng.random((3, 8, 8)).astype(np.float32)
    d2 = rng.random((3, 8, 8)).astype(np.float32)
    out, r = _core.combine_maps(d1, d2, 7.0)
    ref, rr = ref_F(d1, d2, 7.0)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert r == pytest.approx(rr, rel=1e-7)
    out, r = _core.combine_maps(d1, d2, 2.0, 0.25)
    np.testing.assert_allclose(out, ref_F(d1, d2, 2.0, 0.25)[0], rtol=1e-6)
    assert r == 0.25
    z, r = _core.combine_maps(np.zeros_like(d1), d2, 7.0)  # max(d1) = 0: ratio 0, not NaN
    assert r == 0 and np.array_equal(z, d2)


BAD = [
    (lambda: _core.l2_distance(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 4))), ValueError,
     "same shape"),
    (lambda: _core.cosine_distance(np.zeros((2, 3, 3)), np.zeros((2, 3, 3))), ValueError,
     r"a must be \(N, C, h, w\)"),
    (lambda: _core.l2_distance(np.zeros((0, 2, 3, 3)), np.zeros((0, 2, 3, 3))), ValueError,
     "zero-size"),
    (lambda: _core.l2_distance(np.full((1, 2, 3, 3), np.nan), np.zeros((1, 2, 3, 3))), ValueError,
     "NaN"),
    (lambda: _core.cosine_distance(np.zeros((1, 2, 3, 3)), np.full((1, 2, 3, 3), np.inf)),
     ValueError, "NaN or inf"),
    (lambda: _core.l2_distance([["a"]], [["b"]]), TypeError, "cannot be converted"),
    (lambda: _core.upsample_bilinear(np.zeros((1, 2, 2)), 0, 4), ValueError, ">= 1"),
    (lambda: _core.upsample_bilinear(np.full((1, 2, 2), np.nan), 4, 4), ValueError, "NaN"),
    (lambda: _core.gaussian_filter(np.zeros((1, 4, 4)), -1.0), ValueError, "sigma"),
    (lambda: _core.gaussian_filter(np.zeros((1, 4, 4)), 1e9), ValueError, "sigma"),
    (lambda: _core.gaussian_filter(np.zeros((1, 4, 4)), 1.0, mode="wrap"), ValueError, "mode"),
    (lambda: _core.gaussian_filter(np.zeros((4, 4)), 1.0), ValueError, r"\(N, H, W\)"),
    (lambda: _core.gaussian_filter(np.full((1, 4, 4), np.nan), 1.0), ValueError, "NaN"),
    (lambda: _core.box_pool(np.zeros((1, 10, 10)), 0, 1), ValueError, "kernel must be >= 1"),
    (lambda: _core.image_score(np.zeros((1, 10, 100))), ValueError, "> rounds"),
    (lambda: _core.image_score(np.full((1, 60, 60), np.nan)), ValueError, "NaN"),
    (lambda: _core.combine_maps(np.zeros(3), np.zeros(4), 7.0), ValueError, "same shape"),
    (lambda: _core.combine_maps(np.zeros(3), np.zeros(3), 7.0, "x"), TypeError, "ratio"),
    (lambda: _core.combine_maps(np.zeros(3), np.zeros(3), float("nan")), ValueError, "finite"),
    (lambda: _core.combine_maps(np.array([np.nan]), np.zeros(1), 7.0), ValueError, "NaN"),
]


@pytest.mark.parametrize("call,exc,match", BAD)
def test_bad_inputs_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_lenient_inputs_are_converted():
    a = rng.standard_normal((1, 3, 4, 5))
    b = rng.standard_normal((1, 3, 5, 4)).transpose(0, 1, 3, 2)  # float64, non-contiguous
    np.testing.assert_allclose(_core.l2_distance(a, b), ref_l2(a, b), rtol=1e-5)
    assert _core.l2_distance(a, b).dtype == np.float32
    be = np.ascontiguousarray(b).astype(">f4")
    np.testing.assert_allclose(_core.cosine_distance(a, be), ref_cos(a, b), rtol=1e-5, atol=1e-6)


# -- timenet.scoring ------------------------------------------------------------

class PoolExtractor:
    """Deterministic features: a fixed 1x1 conv then box-average to 1/4, 1/8."""

    def __init__(self, C=3, seed=0):
        r = np.random.default_rng(seed)
        self.w = {"a": r.standard_normal((5, C)), "b": r.standard_normal((7, C))}
        self.f = {"a": 4, "b": 8}
        self.calls = 0

    def features(self, x, layers):
        self.calls += 1
        out = {}
        for layer in [la for la in layers if la in self.w]:
            y = np.einsum("kc,nchw->nkhw", self.w[layer], x.astype(np.float64))
            s = self.f[layer]
            N, K, H, W = y.shape
            out[layer] = y.reshape(N, K, H // s, s, W // s, s).mean((3, 5)).astype(np.float32)
        return out


def ref_anomaly_map(x1, x1_hat, ext, layers, w, lam, sigma, ratios=None):
    H, W = x1.shape[2:]
    fa, fb = ext.features(x1, layers), ext.features(x1_hat, layers)
    s_f = 0
    for layer in layers:
        d1 = ref_bilinear(ref_l2(fa[layer], fb[layer]), H, W)
        d2 = ref_bilinear(ref_cos(fa[layer], fb[layer]), H, W)
        s_f = s_f + ref_F(d1, d2, w, None if ratios is None else ratios.layers[layer])[0]
    s_p = ref_l2(x1, x1_hat, squared=True)
    s = ref_F(s_p, s_f, lam, None if ratios is None else ratios.pixel)[0]
    return ndi.gaussian_filter(s, (0, sigma, sigma), mode="reflect", truncate=4.0)


def _pair(N=3, H=32, W=40, seed=1):
    r = np.random.default_rng(seed)
    x1 = r.uniform(-1, 1, (N, 3, H, W)).astype(np.float32)
    x1_hat = np.clip(x1 + 0.2 * r.standard_normal(x1.shape), -1, 1).astype(np.float32)
    x1_hat[0, :, 5:12, 8:20] = 0.9  # an "anomaly"
    return x1, x1_hat


def test_anomaly_map_per_batch_matches_reference():
    x1, x1_hat = _pair()
    ext = PoolExtractor()
    got, parts = anomaly_map(x1, x1_hat, ext, layers=("a", "b"), batch_size=2, return_parts=True)
    assert ext.calls == 2 and got.shape == (3, 32, 40) and got.dtype == np.float32
    ref = ref_anomaly_map(x1, x1_hat, ext, ("a", "b"), 7, 7, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert set(parts["ratios"].layers) == {"a", "b"} and parts["ratios"].pixel > 0


def test_stored_ratios_make_scores_per_image():
    x1, x1_hat = _pair(N=4)
    ext = PoolExtractor()
    train1, train2 = _pair(N=5, seed=7)
    ratios = estimate_ratios(train1, train2, ext, layers=("a", "b"), weights=(3, 5), batch_size=2)
    # reference ratios: maxima over all training images of the upsampled maps
    fa, fb = ext.features(train1, ("a", "b")), ext.features(train2, ("a", "b"))
    ref_layers, s_f = {}, 0
    for layer, w in zip(("a", "b"), (3, 5)):
        d1 = ref_bilinear(ref_l2(fa[layer], fb[layer]), 32, 40)
        d2 = ref_bilinear(ref_cos(fa[layer], fb[layer]), 32, 40)
        ref_layers[layer] = d2.max() / d1.max()
        s_f = s_f + ref_F(d1, d2, w, ref_layers[layer])[0]
    for layer in ("a", "b"):
        assert ratios.layers[layer] == pytest.approx(ref_layers[layer], rel=1e-5)
    assert ratios.pixel == pytest.approx(s_f.max() / ref_l2(train1, train2, True).max(), rel=1e-5)
    # round trip through plain floats, and one image's map no longer depends on its batch
    ratios = Ratios.from_dict(ratios.to_dict())
    full = anomaly_map(x1, x1_hat, ext, layers=("a", "b"), weights=(3, 5), ratios=ratios)
    one = anomaly_map(x1[2:3], x1_hat[2:3], ext, layers=("a", "b"), weights=(3, 5), ratios=ratios)
    np.testing.assert_allclose(one[0], full[2], rtol=1e-5, atol=1e-7)
    per_batch_one = anomaly_map(x1[2:3], x1_hat[2:3], ext, layers=("a", "b"))
    per_batch_full = anomaly_map(x1, x1_hat, ext, layers=("a", "b"))
    assert np.abs(per_batch_one[0] - per_batch_full[2]).max() > 1e-4  # DDAD's batch dependence
    # iterable form gives the same ratios
    it = estimate_ratios(iter([(train1[:3], train2[:3]), (train1[3:], train2[3:])]), None, ext,
                         layers=("a", "b"), weights=(3, 5))
    assert it.layers["a"] == pytest.approx(ratios.layers["a"]) and it.pixel == pytest.approx(ratios.pixel)
    with pytest.raises(ValueError, match="re-run estimate_ratios"):
        anomaly_map(x1, x1_hat, ext, layers=("a",), ratios=Ratios({"b": 1.0}, 1.0))


def test_pixel_only():
    x1, x1_hat = _pair()
    for ext in (None, "pixel"):
        got = anomaly_map(x1, x1_hat, ext, sigma=2)
        ref = ndi.gaussian_filter(ref_l2(x1, x1_hat, True), (0, 2, 2), mode="reflect", truncate=4.0)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert estimate_ratios(x1, x1_hat, None) == Ratios()
    s = image_score(anomaly_map(_pair(N=2, H=64, W=64)[0], _pair(N=2, H=64, W=64)[1], None))
    assert s.shape == (2,) and s[0] > s[1]  # image 0 carries the anomaly


def test_anomaly_map_with_backbone():
    import timenet.models.backbones as B
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = B.create("resnet18")
    x1, x1_hat = _pair(N=2, H=32, W=32)
    m = anomaly_map(x1, x1_hat, net, sigma=4)
    assert m.shape == (2, 32, 32) and np.isfinite(m).all()


def test_fallback_is_announced_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMENET_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(scoring, "_announced", set())
    monkeypatch.setattr(scoring, "_cache", {})
    with pytest.warns(scoring.ScoringFallbackWarning, match="wide_resnet101_2-32ee1156.pth.*pixel-only"):
        assert scoring.resolve_extractor("auto") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second time: no new warning
        assert scoring.resolve_extractor("auto") is None
    with pytest.raises(FileNotFoundError, match="TIMENET_WEIGHTS"):
        scoring.resolve_extractor("resnet18", fallback="error")
    with pytest.warns(scoring.ScoringFallbackWarning, match="RANDOM"):
        net = scoring.resolve_extractor("resnet18", fallback="random")
    assert not net.pretrained
    ext = PoolExtractor()
    with pytest.warns(scoring.ScoringFallbackWarning):
        assert scoring.resolve_extractor("resnet34", fallback=ext) is ext
    with pytest.raises(ValueError, match="unknown extractor"):
        scoring.resolve_extractor("alexnet")


def test_anomaly_map_bad_inputs():
    x1, x1_hat = _pair()
    with pytest.raises(ValueError, match="same shape"):
        anomaly_map(x1, x1_hat[:, :, :16], None)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        anomaly_map(x1[0], x1_hat[0], None)
    bad = x1_hat.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        anomaly_map(x1, bad, PoolExtractor(), layers=("a", "b"))
    with pytest.raises(ValueError, match="one per layer"):
        anomaly_map(x1, x1_hat, PoolExtractor(), layers=("a", "b"), weights=(1, 2, 3))
    with pytest.raises(ValueError, match="no 'c' features"):
        anomaly_map(x1, x1_hat, PoolExtractor(), layers=("a", "c"))
