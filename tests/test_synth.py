"""DRAEM-style anomaly synthesis: Perlin noise against DRAEM's reference,
mask statistics, the clean fraction, the blend, determinism, each of the ten
augmentations (Pillow as the oracle where DRAEM uses pillike ops), the
procedural textures and a DTD-layout folder."""
import colorsys
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from timenet.anomaly import (FAMILIES, AUGMENTATIONS, DTDTextures, Synthesizer, perlin_2d,
                             perlin_mask, procedural_texture, rotate)
from timenet.anomaly import synth as S


def _draem_perlin(shape, res, rng):
    """DRAEM's rand_perlin_2d_np (perlin.py), np.random.rand -> rng.random."""
    def lerp(a, b, x):
        return a + x * (b - a)
    fade = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3  # noqa: E731
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:delta[0], 0:res[1]:delta[1]].transpose(1, 2, 0) % 1
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)
    tile = lambda s1, s2: np.repeat(np.repeat(gradients[s1[0]:s1[1], s2[0]:s2[1]], d[0],  # noqa
                                              axis=0), d[1], axis=1)
    dot = lambda grad, shift: (np.stack((grid[:shape[0], :shape[1], 0] + shift[0],  # noqa
                                         grid[:shape[0], :shape[1], 1] + shift[1]), axis=-1)
                               * grad[:shape[0], :shape[1]]).sum(axis=-1)
    n00 = dot(tile([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile([0, -1], [1, None]), [0, -1])
    n11 = dot(tile([1, None], [1, None]), [-1, -1])
    t = fade(grid[:shape[0], :shape[1]])
    return math.sqrt(2) * lerp(lerp(n00, n10, t[..., 0]), lerp(n01, n11, t[..., 0]), t[..., 1])


@pytest.mark.parametrize("shape,res", [((64, 64), (1, 1)), ((64, 64), (4, 16)),
                                       ((32, 48), (32, 2)), ((256, 256), (8, 32))])
def test_perlin_matches_draem_reference(shape, res):
    ours = perlin_2d(shape, res, np.random.default_rng(3))
    ref = _draem_perlin(shape, res, np.random.default_rng(3))
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_perlin_any_shape_and_range():
    n = perlin_2d((50, 37), (3, 5), np.random.default_rng(0))
    assert n.shape == (50, 37) and np.all(np.abs(n) <= math.sqrt(2) + 1e-6)
    assert n.std() > 0.05


def test_rotate_is_bilinear_about_the_centre():
    a = np.random.default_rng(0).random((9, 9, 2)).astype(np.float32)
    np.testing.assert_array_equal(rotate(a, 0.0), a)
    np.testing.assert_allclose(rotate(a, 90.0), np.rot90(a, -1), atol=1e-6)
    # far corners of a 45 degree turn fall outside: zero fill
    assert np.all(rotate(np.ones((16, 16)), 45.0)[0, 0] == 0)


def test_mask_statistics():
    rng = np.random.default_rng(0)
    masks = np.stack([perlin_mask((64, 64), rng) for _ in range(300)])
    assert masks.dtype == bool
    cov = masks.mean(axis=(1, 2))
    nonempty = cov > 0
    # Perlin > 0.5 gives sparse blobs: most masks hold some, none is most of the image
    assert 0.4 < nonempty.mean() < 0.95
    assert 0.01 < cov[nonempty].mean() < 0.2
    assert cov.max() < 0.5
    # scale 2^5 along an axis of 32 pixels: the lattice is the pixel grid, the noise is 0
    z = perlin_2d((32, 32), (32, 32), rng)
    assert np.all(z == 0)


def test_clean_fraction_and_empty_masks():
    synth = Synthesizer(seed=0)
    x = np.zeros((400, 3, 16, 16), np.float32)
    rng = np.random.default_rng(1)
    aug, masks = synth(x, rng)
    changed = np.any(aug != x, axis=(1, 2, 3))
    assert masks.shape == (400, 16, 16) and masks.dtype == bool
    # an image is changed only inside its mask, and unchanged images have empty masks
    assert np.all(aug[~np.broadcast_to(masks[:, None], aug.shape)] == 0)
    assert not np.any(changed & ~masks.any(axis=(1, 2)))
    # half the images are kept clean (DRAEM); the others draw a mask that may be empty
    drawn = np.random.default_rng(1)
    flags = []
    for _ in range(400):   # replay the per-image draws: the clean flag comes first
        clean = drawn.random() < 0.5
        flags.append(clean)
        if not clean:
            synth.synthesize(x[0], drawn)
    flags = np.array(flags)
    assert abs(flags.mean() - 0.5) < 0.08
    assert not np.any(masks[flags].any(axis=(1, 2)))
    assert masks[~flags].any(axis=(1, 2)).mean() > 0.4


def test_ensure_nonempty_and_clean_fraction_options():
    synth = Synthesizer(seed=0, clean_fraction=0.0, ensure_nonempty=True)
    _, masks = synth(np.zeros((40, 3, 32, 32), np.float32))
    assert masks.any(axis=(1, 2)).all()
    _, masks = Synthesizer(seed=0, clean_fraction=1.0)(np.zeros((5, 3, 8, 8), np.float32))
    assert not masks.any()


def test_blend_formula():
    synth = Synthesizer(seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32)).astype(np.float32)
    rng = np.random.default_rng(7)
    replay = np.random.default_rng(7)
    aug, m = synth.synthesize(x, rng)
    tex = synth.texture((32, 32), replay).transpose(2, 0, 1) / 127.5 - 1.0
    m2 = synth.mask((32, 32), replay)
    beta = replay.random() * 0.8
    np.testing.assert_array_equal(m, m2)
    M = m[None].astype(np.float64)
    want = x * (1 - M) + (1 - beta) * tex * M + beta * x * M
    np.testing.assert_allclose(aug, want, atol=1e-5)
    assert np.array_equal(aug[:, ~m], x[:, ~m])


def test_determinism():
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 32, 32)).astype(np.float32)
    a1, m1 = Synthesizer(seed=5)(x)
    a2, m2 = Synthesizer(seed=5)(x)
    a3, m3 = Synthesizer()(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(a1, a3)
    a4, m4 = Synthesizer(seed=6)(x)
    assert not np.array_equal(a1, a4)
    np.testing.assert_array_equal(x, np.random.default_rng(0).uniform(-1, 1, x.shape)
                                  .astype(np.float32))  # the input is not modified


def test_input_checks():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        Synthesizer()(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError):
        Synthesizer(beta_max=2.0)


# -- the ten augmentations -----------------------------------------------------

@pytest.fixture(scope="module")
def img():
    rng = np.random.default_rng(0)
    a = procedural_texture((40, 56), rng, "fractal")
    b = (rng.random((40, 56, 3)) ** 2 * 200 + 20).astype(np.uint8)
    return np.concatenate([a, b], 0)


def test_ten_augmentations_listed():
    assert len(AUGMENTATIONS) == 10 and len(set(AUGMENTATIONS)) == 10


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=lambda f: f.__name__)
def test_each_augmentation_keeps_uint8_shape_and_is_seeded(aug, img):
    a = aug(img, np.random.default_rng(1))
    b = aug(img, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == img.shape
    np.testing.assert_array_equal(a, b)


def test_gamma_contrast(img):
    np.testing.assert_array_equal(S.gamma_contrast(img, None, gamma=1.0), img)
    dark = S.gamma_contrast(img, None, gamma=(2.0, 1.0, 0.5))
    assert np.all(dark[..., 0] <= img[..., 0]) and np.all(dark[..., 2] >= img[..., 2])
    np.testing.assert_array_equal(dark[..., 1], img[..., 1])


def test_multiply_add_brightness(img):
    same = S.multiply_add_brightness(img, None, mul=1.0, add=0, mul_first=True)
    assert np.abs(same.astype(int) - img).max() <= 1
    up = S.multiply_add_brightness(img, None, mul=1.0, add=20, mul_first=True)
    assert up.astype(float).mean() > img.mean() + 15
    grey = np.full((4, 4, 3), 100, np.uint8)
    np.testing.assert_array_equal(S.multiply_add_brightness(grey, None, 1.2, 0, True), 120)


@pytest.mark.parametrize("factor", [0.0, 0.3, 1.0, 1.7, 2.0])
def test_enhance_sharpness_is_pils(img, factor):
    ref = np.asarray(ImageEnhance.Sharpness(Image.fromarray(img)).enhance(factor))
    np.testing.assert_array_equal(S.enhance_sharpness(img, None, factor=factor), ref)


def test_add_hue_saturation(img):
    same = S.add_hue_saturation(img, None, hue=0, saturation=0)
    assert np.abs(same.astype(int) - img).max() <= 1
    grey = np.full((4, 4, 3), 77, np.uint8)  # no hue: only saturation can colour it
    np.testing.assert_array_equal(S.add_hue_saturation(grey, None, hue=50, saturation=0), grey)
    # +255 on imgaug's hue circle is a full turn
    assert np.abs(S.add_hue_saturation(img, None, hue=255, saturation=0).astype(int)
                  - img).max() <= 1
    x = np.random.default_rng(0).random((50, 3))
    ref = np.array([colorsys.rgb_to_hsv(*p) for p in x])
    np.testing.assert_allclose(S.rgb_to_hsv(x), ref, atol=1e-12)
    np.testing.assert_allclose(S.hsv_to_rgb(S.rgb_to_hsv(x)), x, atol=1e-12)


def test_solarize(img):
    ref = np.asarray(ImageOps.solarize(Image.fromarray(img), 100))
    np.testing.assert_array_equal(S.solarize(img, np.random.default_rng(0), threshold=100,
                                             apply=True), ref)
    np.testing.assert_array_equal(S.solarize(img, np.random.default_rng(0), apply=False), img)
    hits = [not np.array_equal(S.solarize(img, np.random.default_rng(s)), img)
            for s in range(200)]
    assert 0.35 < np.mean(hits) < 0.65   # p = 0.5


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_posterize(img, bits):
    out = S.posterize(img, None, bits=bits)
    np.testing.assert_array_equal(out, np.asarray(ImageOps.posterize(Image.fromarray(img), bits)))
    assert len(np.unique(out)) <= 2 ** bits


def test_invert(img):
    np.testing.assert_array_equal(S.invert(S.invert(img)), img)
    np.testing.assert_array_equal(S.invert(img), 255 - img.astype(int))


@pytest.mark.parametrize("cutoff", [0, 2, 20])
def test_autocontrast_is_pils(img, cutoff):
    ref = np.asarray(ImageOps.autocontrast(Image.fromarray(img), cutoff=cutoff))
    out = S.autocontrast(img, None, cutoff=cutoff)
    np.testing.assert_array_equal(out, ref)
    if cutoff == 0:
        assert out.min() == 0 and out.max() == 255
    flat = np.full((5, 5, 3), 9, np.uint8)
    np.testing.assert_array_equal(S.autocontrast(flat, None, cutoff=cutoff), flat)


def test_equalize_is_pils(img):
    np.testing.assert_array_equal(S.equalize(img), np.asarray(ImageOps.equalize(
        Image.fromarray(img))))
    flat = np.full((5, 5, 3), 9, np.uint8)
    np.testing.assert_array_equal(S.equalize(flat), flat)


def test_rotate_texture(img):
    np.testing.assert_array_equal(S.rotate_texture(img, None, angle=0.0), img)
    sq = img[:40, :40]
    np.testing.assert_array_equal(S.rotate_texture(sq, None, angle=90.0), np.rot90(sq, -1))
    out = S.rotate_texture(img, None, angle=45.0)
    assert np.all(out[0, 0] == 0)  # black fill outside


# -- textures ----------------------------------------------------------------------

@pytest.mark.parametrize("family", list(FAMILIES))
def test_procedural_families(family):
    a = procedural_texture((24, 40), np.random.default_rng(2), family)
    b = procedural_texture((24, 40), np.random.default_rng(2), family)
    assert a.shape == (24, 40, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert a.std() > 3  # not flat
    with pytest.raises(ValueError, match="unknown family"):
        procedural_texture(8, np.random.default_rng(0), "plaid")


def test_dtd_folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {}
    for cat in ("banded", "dotted"):
        (tmp_path / "images" / cat).mkdir(parents=True)
        for k in range(2):
            a = (rng.random((20 + 7 * k, 30, 3)) * 255).astype(np.uint8)
            p = tmp_path / "images" / cat / f"{cat}_{k}.jpg"
            Image.fromarray(a).save(p)
            imgs[str(p)] = a
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    src = DTDTextures(tmp_path)
    assert len(src) == 4 and src.files == sorted(src.files)
    want = [np.asarray(Image.open(f).convert("RGB").resize((16, 16), Image.BILINEAR))
            for f in src.files]
    t = src.sample(np.random.default_rng(3), 16)
    assert any(np.array_equal(t, w) for w in want)
    synth = Synthesizer(texture_dir=tmp_path, seed=0, clean_fraction=0.0, ensure_nonempty=True)
    aug, masks = synth(np.zeros((4, 3, 16, 16), np.float32))
    assert masks.any(axis=(1, 2)).all() and np.all(np.abs(aug) <= 1.0)
    with pytest.raises(FileNotFoundError, match="images/<category>"):
        DTDTextures(tmp_path / "images" / "banded" / "nothing")
