"""timenet.metrics against scikit-learn and a slow, plain PRO reference.

Oracles:
- sklearn.metrics roc_auc_score / roc_curve / precision_recall_curve;
- ref_pro_curve below: the official MVTec AD definition evaluated threshold
  by threshold with numpy and scipy.ndimage.label(structure=ones((3, 3)));
- official_pro_curve below: the official script's cumsum algorithm, as
  published (float32 FPR included), for the AU-PRO it reports.
"""
from bisect import bisect

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from timenet import _core, metrics

STRUCT = np.ones((3, 3), dtype=int)


# ---------------------------------------------------------------- references

def ref_pro_curve(maps, masks):
    """(fpr, pro, thresholds): first point (0, 0, inf), then every distinct
    score, descending; counts recomputed from scratch at each threshold."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks) != 0
    region = np.full(maps.shape, -1, dtype=np.int64)
    nreg = 0
    for i in range(len(maps)):
        lab, n = ndimage.label(masks[i], structure=STRUCT)
        region[i][lab > 0] = lab[lab > 0] - 1 + nreg
        nreg += n
    sizes = np.bincount(region[region >= 0], minlength=nreg)
    normal = ~masks
    fpr, pro, thr = [0.0], [0.0], [np.inf]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fpr.append(np.count_nonzero(above & normal) / np.count_nonzero(normal))
        hits = np.bincount(region[above & masks], minlength=nreg)
        pro.append(np.mean(hits / sizes))
        thr.append(t)
    return np.array(fpr), np.array(pro), np.array(thr)


def official_trapezoid(x, y, x_max=None):
    """generic_util.trapezoid of the MVTec AD evaluation code."""
    x, y = np.array(x), np.array(y)
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) /
                                     (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x, y = x[mask], y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def ref_aupro(maps, masks, limit=0.3):
    fpr, pro, _ = ref_pro_curve(maps, masks)
    return official_trapezoid(np.r_[fpr, 1.0], np.r_[pro, 1.0], x_max=limit) / limit


def official_pro_curve(maps, masks, fpr_dtype=np.float32):
    """pro_curve_util.compute_pro of the MVTec AD evaluation code (which
    rounds the FPR to float32; fpr_dtype=np.float64 keeps it exact)."""
    fp_changes = np.zeros(maps.shape, dtype=np.uint32)
    pro_changes = np.zeros(maps.shape, dtype=np.float64)
    num_ok, num_regions = 0, 0
    for i, gt in enumerate(masks):
        labeled, n = ndimage.label(gt, STRUCT)
        num_regions += n
        ok = labeled == 0
        num_ok += np.sum(ok)
        fp_changes[i][ok] = 1
        for k in range(n):
            r = labeled == k + 1
            pro_changes[i][r] = 1.0 / np.sum(r)
    scores = np.array(maps).ravel()
    idx = np.argsort(scores).astype(np.uint32)[::-1]
    scores = scores[idx]
    fprs = np.cumsum(fp_changes.ravel()[idx]).astype(fpr_dtype) / num_ok
    pros = np.cumsum(pro_changes.ravel()[idx]) / num_regions
    keep = np.append(np.diff(scores) != 0, np.True_)
    fprs, pros = np.clip(fprs, None, 1.0), np.clip(pros, None, 1.0)
    return np.r_[0.0, fprs[keep], 1.0], np.r_[0.0, pros[keep], 1.0]


def ref_f1_max(scores, labels):
    p, r, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return f1.max()


def f1_at(scores, labels, t):
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) != 0
    tp = np.sum((scores >= t) & labels)
    fp = np.sum((scores >= t) & ~labels)
    return 2 * tp / (tp + fp + labels.sum())


# ------------------------------------------------------------------ cases

def blobs(rng, shape, frac=0.1, sigma=1.5):
    """Random smooth blob masks, bool (N, H, W)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (0, sigma, sigma))
    return noise > np.quantile(noise, 1 - frac)


def smooth(rng, shape, sigma=1.0):
    return ndimage.gaussian_filter(rng.standard_normal(shape), (0, sigma, sigma))


def _many_regions(rng):
    m = np.zeros((2, 12, 12), bool)
    m[:, ::3, ::3] = True                 # isolated dots: 16 regions per image
    m[1, 1, 1] = m[1, 2, 2] = True        # diagonal chain: one 8-connected region
    return rng.random(m.shape), m


def _border(rng):
    m = np.zeros((3, 8, 8), bool)
    m[0, 3, 7] = m[0, 4, 0] = True        # row wrap: two regions, not one
    m[1, :, 0] = True                     # left column
    m[1, 7, :] = True                     # bottom row joins it
    m[2, 0, 0] = m[2, 7, 7] = m[2, 0, 7] = True
    return rng.random(m.shape), m


def _single_pixel(rng):
    m = np.zeros((2, 6, 7), bool)
    m[1, 2, 3] = True
    return rng.random(m.shape), m


def _tied(rng):
    m = blobs(rng, (3, 16, 16))
    return rng.integers(0, 5, m.shape).astype(np.float64), m


def _constant(rng):
    m = blobs(rng, (2, 10, 10))
    return np.full(m.shape, 0.25), m


def _informative(rng):
    m = blobs(rng, (4, 20, 20), frac=0.15)
    return smooth(rng, m.shape) + 1.5 * m, m


def _snakes(rng):
    # U-shapes: two arms that join only at the bottom (union-find merging).
    m = np.zeros((1, 9, 9), bool)
    m[0, 1:8, 1] = m[0, 1:8, 7] = m[0, 7, 1:8] = True
    m[0, 1:6, 4] = True
    m[0, 2, 5] = True
    return rng.random(m.shape).astype(np.float32), m


PRO_CASES = {
    "random": lambda rng: (rng.random((3, 16, 16)), blobs(rng, (3, 16, 16))),
    "random_f32": lambda rng: (rng.random((3, 16, 16)).astype(np.float32), blobs(rng, (3, 16, 16))),
    "informative": _informative,
    "tied": _tied,
    "constant": _constant,
    "border": _border,
    "single_pixel": _single_pixel,
    "many_regions": _many_regions,
    "snakes": _snakes,
    "normal_images_mixed": lambda rng: (
        rng.random((4, 10, 10)),
        np.concatenate([np.zeros((2, 10, 10), bool), blobs(rng, (2, 10, 10), 0.2)])),
    "negative_scores": lambda rng: (rng.standard_normal((2, 12, 12)), blobs(rng, (2, 12, 12))),
}


@pytest.mark.parametrize("case", PRO_CASES)
def test_pro_curve_matches_reference(case):
    maps, masks = PRO_CASES[case](np.random.default_rng(len(case)))
    fpr, pro, thr = metrics.pro_curve(maps, masks)
    rfpr, rpro, rthr = ref_pro_curve(maps, masks)
    assert fpr.shape == rfpr.shape
    np.testing.assert_array_equal(thr, rthr)
    np.testing.assert_array_equal(fpr, rfpr)
    np.testing.assert_allclose(pro, rpro, rtol=0, atol=1e-12)
    assert fpr[-1] == 1.0 and abs(pro[-1] - 1.0) < 1e-12


@pytest.mark.parametrize("limit", [0.3, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("case", PRO_CASES)
def test_aupro_matches_reference(case, limit):
    maps, masks = PRO_CASES[case](np.random.default_rng(len(case)))
    got = metrics.aupro(maps, masks, fpr_limit=limit)
    assert abs(got - ref_aupro(maps, masks, limit)) < 1e-12
    assert 0.0 <= got <= 1.0


@pytest.mark.parametrize("case", ["random", "informative", "tied", "many_regions"])
def test_aupro_matches_official_script(case):
    # The official code casts the FPR to float32; agreement to ~1e-6.
    maps, masks = PRO_CASES[case](np.random.default_rng(len(case)))
    fpr, pro = official_pro_curve(maps, masks)
    want = official_trapezoid(fpr, pro, x_max=0.3) / 0.3
    assert abs(metrics.aupro(maps, masks) - want) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aupro_large_threaded(dtype):
    # Big enough for the threaded sorts (>= 2^16 keys per run, with
    # payload), ties from rounding, regions over many images.
    rng = np.random.default_rng(11)
    masks = blobs(rng, (4, 256, 256), frac=0.3, sigma=6)
    maps = np.round(smooth(rng, masks.shape, 2) + masks, 3).astype(dtype)
    for limit in (0.3, 1.0):
        fpr, pro = official_pro_curve(maps, masks, fpr_dtype=np.float64)
        want = official_trapezoid(fpr, pro, x_max=limit) / limit
        assert abs(metrics.aupro(maps, masks, limit) - want) < 1e-9
    f, p, t = metrics.pro_curve(maps, masks)
    np.testing.assert_allclose(f, fpr[:-1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(p, pro[:-1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("max_fpr", [0.01, 0.3, 0.999])
@pytest.mark.parametrize("case", ["random", "tied", "informative", "constant"])
def test_pro_curve_max_fpr_is_a_prefix(case, max_fpr):
    maps, masks = PRO_CASES[case](np.random.default_rng(len(case)))
    full = metrics.pro_curve(maps, masks)
    part = metrics.pro_curve(maps, masks, max_fpr=max_fpr)
    m = len(part[0])
    assert part[0][-1] > max_fpr and (m == 1 or part[0][-2] <= max_fpr)
    for a, b in zip(part, full):
        np.testing.assert_array_equal(a, b[:m])


def test_aupro_limit_hit_exactly():
    # 10 normal pixels at distinct scores: fpr steps of 0.1 reach 0.5 exactly.
    maps = np.arange(12, dtype=np.float64).reshape(1, 3, 4)
    masks = np.zeros((1, 3, 4), bool)
    masks[0, 2, 2:] = True          # scores 10, 11: the two highest
    assert metrics.aupro(maps, masks, 0.5) == pytest.approx(1.0, abs=1e-15)
    assert abs(metrics.aupro(maps, masks, 0.5) - ref_aupro(maps, masks, 0.5)) < 1e-15
    assert metrics.aupro(-maps, masks, 0.5) == 0.0


def test_aupro_known_values():
    # A constant map: the curve jumps straight to (1, 1); up to 0.3 it is the
    # diagonal, area 0.045, normalised 0.15 (never by the last FPR reached).
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = True
    assert metrics.aupro(np.zeros((1, 4, 4)), masks) == pytest.approx(0.15, abs=1e-15)
    # A perfect map: PRO is 1 from FPR 0 on.
    assert metrics.aupro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-15)


def test_regions_are_8_connected():
    # Two diagonal pixels: one region (8-connectivity). Scores make the
    # first pixel alone reach PRO 1/2 if they were two regions, 1/2 of one.
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 1, 1] = 1.0
    fpr, pro, _ = metrics.pro_curve(maps, masks)
    np.testing.assert_allclose(pro, [0.0, 0.5, 1.0])
    # Regions on the same pixels of different images stay apart.
    masks2 = np.concatenate([masks, masks])
    maps2 = np.concatenate([maps, np.zeros((1, 4, 4))])
    _, pro2, _ = metrics.pro_curve(maps2, masks2)
    np.testing.assert_allclose(pro2, [0.0, 0.25, 1.0])


@pytest.mark.parametrize("case", PRO_CASES)
def test_pro_regions_are_scipy_labels(case):
    # The regions the CUDA path sorts with (labelled on the host): scipy's
    # 8-connected labels, numbered on across the images.
    _, masks = PRO_CASES[case](np.random.default_rng(8))
    region, sizes = _core.pro_regions(masks.astype(np.uint8) * 255)
    assert region.dtype == np.int32 and region.shape == masks.shape and sizes.dtype == np.uint32
    want, nreg = np.zeros(masks.shape, np.int32), 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=STRUCT)
        want[i] = np.where(lab > 0, lab + nreg, 0)
        nreg += n
    np.testing.assert_array_equal(region, want)
    np.testing.assert_array_equal(sizes, np.bincount(want.ravel(), minlength=nreg + 1)[1:])
    big = np.zeros((40, 64, 64), bool)
    big[:, ::4, ::4] = True  # threaded: 256 regions per image
    region, sizes = _core.pro_regions(big)
    assert len(sizes) == 40 * 256 and np.all(sizes == 1) and region.max() == 40 * 256
    assert np.array_equal(np.unique(region[big]), np.arange(1, 40 * 256 + 1))
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\)"):
        _core.pro_regions(big[0])
    with pytest.raises(ValueError, match="NaN"):
        _core.pro_regions(np.full((1, 3, 3), np.nan))
    with pytest.raises(TypeError, match="bool or integer"):
        _core.pro_regions(np.zeros((1, 3, 3), complex))
    strided = big[:2, :, ::2]          # non-contiguous: converted, the input untouched
    before = strided.copy()
    region, _ = _core.pro_regions(strided)
    assert region.shape == strided.shape and np.array_equal(strided, before)


# ------------------------------------------------------- ROC, AUROC, F1

def _roc_case(name, rng):
    n = 400
    y = rng.random(n) < 0.3
    if name == "random":
        return rng.standard_normal(n) + y, y
    if name == "random_f32":
        return (rng.standard_normal(n) + y).astype(np.float32), y
    if name == "heavy_ties":
        return rng.integers(0, 4, n).astype(np.float64) + y * rng.integers(0, 2, n), y
    if name == "all_tied":
        return np.ones(n), y
    if name == "separated":
        return y + 0.1 * rng.random(n), y
    if name == "reversed":
        return -(y + 0.1 * rng.random(n)), y
    if name == "two":
        return np.array([0.3, 0.7]), np.array([0, 1])
    if name == "int_scores":
        return rng.integers(-5, 5, n), y
    if name == "bool_scores":
        return rng.random(n) < 0.5, y
    if name == "signed_zeros":
        return rng.choice([-0.0, 0.0, 1.0, -1.0], n), y
    if name == "large_f32":
        y = rng.random(200_000) < 0.05
        return (rng.random(200_000) + 0.2 * y).astype(np.float32), y
    if name == "tiny_range":
        return 1.0 + rng.integers(0, 3, n) * np.finfo(float).eps, y
    raise KeyError(name)


ROC_CASES = ["random", "random_f32", "heavy_ties", "all_tied", "separated", "reversed", "two",
             "int_scores", "bool_scores", "signed_zeros", "large_f32", "tiny_range"]


@pytest.mark.parametrize("case", ROC_CASES)
def test_auroc_matches_sklearn(case):
    s, y = _roc_case(case, np.random.default_rng(len(case)))
    assert abs(metrics.auroc(s, y) - roc_auc_score(y, s)) < 1e-9


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("case", ROC_CASES)
def test_roc_curve_matches_sklearn(case, drop):
    s, y = _roc_case(case, np.random.default_rng(len(case)))
    got = metrics.roc_curve(s, y, drop_intermediate=drop)
    want = sk_roc_curve(y, s, drop_intermediate=drop)
    for g, w, what in zip(got, want, ("fpr", "tpr", "thresholds")):
        assert g.shape == w.shape, what
        np.testing.assert_array_equal(g, w.astype(np.float64), err_msg=what)


def test_roc_curve_default_drops_like_sklearn():
    s, y = _roc_case("random", np.random.default_rng(5))
    got, want = metrics.roc_curve(s, y), sk_roc_curve(y, s)
    assert got[0].shape == want[0].shape and got[2][0] == np.inf


@pytest.mark.parametrize("case", ROC_CASES)
def test_f1_max_matches_sklearn(case):
    s, y = _roc_case(case, np.random.default_rng(len(case)))
    f1, t = metrics.f1_max(s, y)
    assert abs(f1 - ref_f1_max(s, y)) < 1e-12
    assert abs(f1_at(s, y, t) - f1) < 1e-12


def test_f1_max_ties_take_lowest_threshold():
    # F1 = 2/3 at threshold 4 and at threshold 1.
    assert metrics.f1_max([4, 3, 2, 1], [1, 0, 0, 1]) == (pytest.approx(2 / 3, abs=1e-15), 1.0)
    # Only positives: F1 = 1 at the lowest score.
    assert metrics.f1_max([0.5, 0.2], [1, 1]) == (1.0, 0.2)


def test_pixel_auroc_is_flat_auroc():
    rng = np.random.default_rng(3)
    masks = blobs(rng, (3, 16, 16))
    maps = smooth(rng, masks.shape) + masks
    want = roc_auc_score(masks.ravel(), maps.ravel())
    assert abs(metrics.pixel_auroc(maps, masks) - want) < 1e-12
    assert metrics.pixel_auroc(maps, masks) == metrics.auroc(maps.ravel(), masks.ravel())


# ------------------------------------------------ layouts and dtypes

def _layouts(x):
    """Non-contiguous, Fortran-order and byte-swapped variants of x."""
    big = np.zeros((2,) + x.shape, x.dtype)
    big[1] = x
    yield "strided", big[1]
    yield "fortran", np.asfortranarray(x)
    yield "swapped", x.astype(x.dtype.newbyteorder(">" if x.dtype.byteorder != ">" else "<"))
    rev = np.flip(x).copy()
    yield "negative_strides", np.flip(rev)


def test_layouts_roc():
    rng = np.random.default_rng(7)
    s, y = rng.standard_normal(300), rng.random(300) < 0.4
    for sdt in (np.float64, np.float32, np.int32):
        sv = (s * 10).astype(sdt)
        want = roc_auc_score(y, sv)
        for name, sl in _layouts(sv):
            assert abs(metrics.auroc(sl, y) - want) < 1e-12, (sdt, name)
        for name, yl in _layouts(y.astype(np.int32)):
            assert abs(metrics.auroc(sv, yl) - want) < 1e-12, (sdt, name)
    assert metrics.auroc(list(s), list(y)) == metrics.auroc(s, y)


def test_layouts_pro():
    rng = np.random.default_rng(8)
    maps, masks = rng.random((3, 12, 14)), blobs(rng, (3, 12, 14))
    want = metrics.aupro(maps, masks)
    assert abs(want - ref_aupro(maps, masks)) < 1e-12
    for name, m in _layouts(maps):
        assert metrics.aupro(m, masks) == want, name
        np.testing.assert_array_equal(metrics.pro_curve(m, masks)[1],
                                      metrics.pro_curve(maps, masks)[1])
    for name, k in _layouts(masks.astype(np.int16)):
        assert metrics.aupro(maps, k) == want, name
    # float32 and float64 of the same values agree exactly.
    m32 = maps.astype(np.float32)
    assert metrics.aupro(m32, masks) == metrics.aupro(m32.astype(np.float64), masks)
    # masks as uint8 0/255, float 0/1, and a list of 2-D arrays.
    assert metrics.aupro(maps, masks.astype(np.uint8) * 255) == want
    assert metrics.aupro(maps, masks.astype(np.float32)) == want
    assert metrics.aupro(list(maps), list(masks)) == want


# ------------------------------------------------------------ bad input

def _roc_bad():
    s, y = np.linspace(0, 1, 10), np.arange(10) % 2
    return [
        ("2-D scores", s.reshape(2, 5), y.reshape(2, 5), ValueError, "scores must be (n,)"),
        ("length mismatch", s, y[:9], ValueError, "labels must be (n,) with n = 10"),
        ("NaN", np.r_[s[:9], np.nan], y, ValueError, "NaN or inf"),
        ("inf", np.r_[s[:9], np.inf], y, ValueError, "NaN or inf"),
        ("-inf f32", np.r_[s[:9], -np.inf].astype(np.float32), y, ValueError, "NaN or inf"),
        ("no positive", s, np.zeros(10), ValueError, "no positive"),
        ("no negative", s, np.ones(10, bool), ValueError, "no negative"),
        ("empty", np.zeros(0), np.zeros(0, bool), ValueError, "empty"),
        ("scalar", 1.0, 1, ValueError, "scores must be (n,)"),
        ("negative labels", s, 2 * y - 1, ValueError, "labels == 1"),
        ("NaN labels", s, np.r_[y[:9], np.nan], ValueError, "NaN"),
        ("complex scores", s + 1j, y, TypeError, "scores cannot be converted"),
        ("string labels", s, np.array(["a"] * 10), TypeError, "labels must be a bool"),
        ("object scores", [object()] * 10, y, TypeError, "scores"),
    ]


@pytest.mark.parametrize("fn", ["auroc", "roc_curve", "f1_max"])
@pytest.mark.parametrize("bad", _roc_bad(), ids=[b[0] for b in _roc_bad()])
def test_roc_bad_input(fn, bad):
    name, s, y, exc, msg = bad
    if fn == "f1_max" and name == "no negative":
        metrics.f1_max(s, y)  # defined: F1 = 1 at the lowest score
        return
    before = [np.array(s, copy=True) if isinstance(s, np.ndarray) else None,
              np.array(y, copy=True) if isinstance(y, np.ndarray) else None]
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        getattr(metrics, fn)(s, y)
    for b, a in zip(before, (s, y)):
        if b is not None:
            np.testing.assert_array_equal(a, b)


def _pro_bad():
    rng = np.random.default_rng(0)
    maps, masks = rng.random((2, 6, 6)), blobs(rng, (2, 6, 6), 0.2)
    nan = maps.copy()
    nan[1, 2, 3] = np.nan
    inf32 = maps.astype(np.float32)
    inf32[0, 0, 0] = np.inf
    return [
        ("2-D maps", maps[0], masks[0], ValueError, "maps must be (N, H, W)"),
        ("4-D maps", maps[None], masks[None], ValueError, "maps must be (N, H, W)"),
        ("mask shape", maps, masks[:, :5], ValueError, "masks must be (N, H, W) = (2, 6, 6)"),
        ("mask count", maps, masks[:1], ValueError, "masks must be (N, H, W) = (2, 6, 6)"),
        ("NaN", nan, masks, ValueError, "maps contains NaN or inf"),
        ("inf f32", inf32, masks, ValueError, "maps contains NaN or inf"),
        ("no anomalous pixel", maps, np.zeros_like(masks), ValueError, "no anomalous pixel"),
        ("no normal pixel", maps, np.ones_like(masks), ValueError, "no normal pixel"),
        ("empty", np.zeros((0, 6, 6)), np.zeros((0, 6, 6), bool), ValueError, "empty"),
        ("empty width", np.zeros((2, 6, 0)), np.zeros((2, 6, 0), bool), ValueError, "empty"),
        ("negative masks", maps, -masks.astype(int), ValueError, "non-zero counts"),
        ("complex maps", maps + 1j, masks, TypeError, "maps cannot be converted"),
    ]


@pytest.mark.parametrize("fn", ["aupro", "pro_curve", "pixel_auroc"])
@pytest.mark.parametrize("bad", _pro_bad(), ids=[b[0] for b in _pro_bad()])
def test_pro_bad_input(fn, bad):
    name, maps, masks, exc, msg = bad
    if fn == "pixel_auroc":
        if "shape" in name or "count" in name:
            msg = "masks must have the shape of maps"
        elif "D maps" in name:
            return  # any shape is fine for pixel_auroc
        elif "anomalous" in name:
            msg = "no positive"
        elif "normal" in name:
            msg = "no negative"
        elif "NaN" in name or "inf" in name:
            msg = "scores contains NaN or inf"
        elif "negative" in name:
            msg = "labels must be 0/1"
        elif "complex" in name:
            msg = "scores cannot be converted"
    before = (maps.copy(), masks.copy())
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        getattr(metrics, fn)(maps, masks)
    np.testing.assert_array_equal(maps, before[0])
    np.testing.assert_array_equal(masks, before[1])


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5, np.nan, np.inf])
def test_aupro_bad_limit(limit):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="fpr_limit must be in"):
        metrics.aupro(rng.random((1, 4, 4)), np.eye(4, dtype=bool)[None], fpr_limit=limit)
    with pytest.raises(ValueError, match="max_fpr must be in"):
        metrics.pro_curve(rng.random((1, 4, 4)), np.eye(4, dtype=bool)[None], max_fpr=limit)


def test_inputs_unchanged():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 8, 8)).astype(">f8")[:, ::-1]
    masks = blobs(rng, (2, 8, 8)).astype(np.int64)
    m0, k0 = maps.copy(), masks.copy()
    for fn in (metrics.aupro, metrics.pro_curve, metrics.pixel_auroc):
        fn(maps, masks)
    for fn in (metrics.auroc, metrics.roc_curve, metrics.f1_max):
        fn(maps.ravel(), masks.ravel())
    np.testing.assert_array_equal(maps, m0)
    np.testing.assert_array_equal(masks, k0)
    assert maps.dtype == np.dtype(">f8")


# ------------------------------------------------------------------ leaks

def test_no_reference_or_python_leak():
    # Contiguous float64 / bool inputs are used without a copy: a missed
    # DECREF would show in their refcounts; a leaked array or float would
    # show in tracemalloc (numpy reports its data buffers to it).
    import sys
    import tracemalloc

    rng = np.random.default_rng(4)
    maps, masks = rng.random((2, 16, 16)), blobs(rng, (2, 16, 16), 0.2)
    s, y = maps.ravel(), masks.ravel()
    refs = sys.getrefcount(maps), sys.getrefcount(masks), sys.getrefcount(s), sys.getrefcount(y)

    def calls():
        metrics.aupro(maps, masks)
        metrics.pro_curve(maps, masks, max_fpr=0.5)
        metrics.roc_curve(s, y)
        metrics.auroc(s, y)
        metrics.f1_max(s, y)
        for fn, args in ((metrics.aupro, (maps, np.zeros_like(masks))),
                         (metrics.auroc, (s, y[:-1]))):
            try:
                fn(*args)
            except ValueError:
                pass

    for _ in range(20):
        calls()
    tracemalloc.start()
    try:
        for _ in range(10):
            calls()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            calls()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4 << 10, f"traced memory grew by {grown} bytes over 500 rounds"
    assert refs == (sys.getrefcount(maps), sys.getrefcount(masks), sys.getrefcount(s),
                    sys.getrefcount(y))


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_no_leak():
    rng = np.random.default_rng(2)
    maps = rng.random((2, 24, 24))[:, ::2]             # non-contiguous: a copy each call
    masks = blobs(rng, maps.shape, 0.2).astype(np.uint8) * 255
    s, y = maps.ravel(), masks.ravel()

    def calls():
        metrics.aupro(maps, masks)
        metrics.pro_curve(maps, masks)
        metrics.auroc(s, y)
        metrics.roc_curve(s, y)
        metrics.f1_max(s, y)
        _core.pro_regions(masks)
        for bad in ((maps, np.zeros_like(masks)), (maps[0], masks[0])):
            try:
                metrics.aupro(*bad)
            except ValueError:
                pass
        try:
            metrics.auroc(s, np.zeros_like(y))
        except ValueError:
            pass

    for _ in range(200):
        calls()
    before = _rss()
    for _ in range(2000):
        calls()
    grown = _rss() - before
    assert grown < 2 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 2000 rounds"
