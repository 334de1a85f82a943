"""DRAEM-style anomaly synthesis (DESIGN.md §1.6; Zavrtanik et al., DRAEM,
ICCV 2021, `data_loader.MVTecDRAEMTrainDataset.augment_image`).

For each image, with probability `clean_fraction` (DRAEM: 0.5) it stays
clean with an empty mask; otherwise

1. mask: Perlin noise (`textures.perlin_2d`) with per-axis scale 2^k,
   k ~ U{0..5} drawn independently per axis, rotated by an angle
   ~ U(-90, 90) degrees (bilinear, zero fill, as imgaug's Affine), then
   thresholded: M = noise > 0.5;
2. texture: a random image of the DTD folder (when `texture_dir` is given)
   or a built-in procedural texture (`textures.FAMILIES`), at the image size;
3. three distinct augmentations, drawn without replacement from DRAEM's ten
   (`AUGMENTATIONS`, the imgaug list below, each re-implemented in numpy on
   uint8 RGB as imgaug/PIL do), applied in the drawn order:

       GammaContrast((0.5, 2.0), per_channel=True)     -> gamma_contrast
       MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))
                                                       -> multiply_add_brightness
       pillike.EnhanceSharpness()  (factor 0..2)       -> enhance_sharpness
       AddToHueAndSaturation((-50, 50), per_channel=True) -> add_hue_saturation
       Solarize(0.5, threshold=(32, 128))              -> solarize
       Posterize()  (1..8 bits)                        -> posterize
       Invert()                                        -> invert
       pillike.Autocontrast()  (cutoff 0..20 %)        -> autocontrast
       pillike.Equalize()                              -> equalize
       Affine(rotate=(-45, 45))                        -> rotate_texture

4. blend: aug = x (1 - M) + (1 - beta) tex M + beta x M, beta ~ U(0, 0.8).

Images are float32 (N, 3, H, W) in [-1, 1] (DRAEM works in [0, 1]; the
blend is affine, so it is the same operation). Every random choice comes
from the numpy Generator passed to `Synthesizer.__call__` (or the one made
from `seed`), in a fixed order per image, so a seed reproduces a batch.

Two simplifications, both within imgaug's own randomness: the brightness
augmentation works on the luma of YCrCb (imgaug picks one of several
colour spaces at random), and AddToHueAndSaturation uses an exact float HSV
instead of OpenCV's 8-bit one. The PIL-like ops (sharpness, posterize,
solarize, autocontrast, equalize) give PIL's exact bytes (tests compare
against Pillow).
"""
import math

import numpy as np

from .textures import perlin_2d, texture_source

__all__ = ["Synthesizer", "perlin_mask", "rotate", "AUGMENTATIONS", "gamma_contrast",
           "multiply_add_brightness", "enhance_sharpness", "add_hue_saturation", "solarize",
           "posterize", "invert", "autocontrast", "equalize", "rotate_texture",
           "rgb_to_hsv", "hsv_to_rgb"]


# -- geometry -----------------------------------------------------------------

def rotate(img, angle, fill=0.0):
    """Rotate (H, W) or (H, W, C) float array by `angle` degrees about its
    centre: bilinear, constant `fill` outside (imgaug Affine, order=1)."""
    img = np.asarray(img, np.float32)
    H, W = img.shape[:2]
    a = math.radians(float(angle))
    ca, sa = math.cos(a), math.sin(a)
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    dy = (np.arange(H, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(W, dtype=np.float32) - cx)[None, :]
    sy = ca * dy - sa * dx + cy   # inverse map: output pixel <- source position
    sx = sa * dy + ca * dx + cx
    y0, x0 = np.floor(sy), np.floor(sx)
    wy, wx = sy - y0, sx - x0
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(img, pad, constant_values=fill)
    iy0 = np.clip(y0.astype(np.intp) + 1, 0, H + 1)
    iy1 = np.clip(y0.astype(np.intp) + 2, 0, H + 1)
    ix0 = np.clip(x0.astype(np.intp) + 1, 0, W + 1)
    ix1 = np.clip(x0.astype(np.intp) + 2, 0, W + 1)
    if img.ndim == 3:
        wy, wx = wy[..., None], wx[..., None]
    top = p[iy0, ix0] * (1 - wx) + p[iy0, ix1] * wx
    bot = p[iy1, ix0] * (1 - wx) + p[iy1, ix1] * wx
    return (top * (1 - wy) + bot * wy).astype(np.float32)


def perlin_mask(shape, rng, max_scale_exp=5, rotation=90.0, threshold=0.5):
    """DRAEM's anomaly mask (H, W) bool: Perlin noise of scale (2^ky, 2^kx),
    ky, kx ~ U{0..max_scale_exp}, rotated by U(-rotation, rotation) degrees,
    > threshold."""
    ky = int(rng.integers(0, max_scale_exp + 1))
    kx = int(rng.integers(0, max_scale_exp + 1))
    noise = perlin_2d(shape, (2 ** ky, 2 ** kx), rng)
    noise = rotate(noise, rng.uniform(-rotation, rotation))
    return noise > threshold


# -- colour helpers -------------------------------------------------------------

def _u8(a):
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def rgb_to_hsv(rgb):
    """(..., 3) floats in [0, 1] -> (..., 3) (h, s, v), h in [0, 1)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1)
    h = np.where(mx == r, (g - b) / safe, np.where(mx == g, 2 + (b - r) / safe,
                                                    4 + (r - g) / safe))
    h = np.where(d > 0, (h / 6) % 1, 0)
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1), 0)
    return np.stack([h, s, mx], -1)


def hsv_to_rgb(hsv):
    """Inverse of rgb_to_hsv: f(n) = v - v s max(0, min(k, 4 - k, 1)),
    k = (n + 6 h) mod 6, for n = 5, 3, 1 (r, g, b)."""
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    k = (np.asarray([5, 3, 1], hsv.dtype) + 6 * h) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


# -- the ten augmentations (uint8 (H, W, 3) RGB in, uint8 out) -----------------
# Each draws its parameters from rng unless they are given.

def gamma_contrast(img, rng, gamma=None):
    """255 (x / 255)^gamma, gamma ~ U(0.5, 2) per channel."""
    if gamma is None:
        gamma = rng.uniform(0.5, 2.0, 3)
    g = np.broadcast_to(np.asarray(gamma, np.float64), (3,))
    return _u8(255.0 * (img / 255.0) ** g)


def multiply_add_brightness(img, rng, mul=None, add=None, mul_first=None):
    """Multiply the luma Y (YCrCb) by mul ~ U(0.8, 1.2) and add add ~ U{-30..30},
    in random order; chroma kept (so every channel moves by the change of Y)."""
    if mul is None:
        mul = rng.uniform(0.8, 1.2)
    if add is None:
        add = int(rng.integers(-30, 31))
    if mul_first is None:
        mul_first = bool(rng.random() < 0.5)
    x = img.astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    y2 = np.clip(np.rint(y), 0, 255)
    if mul_first:
        y2 = np.clip(np.clip(np.rint(y2 * mul), 0, 255) + add, 0, 255)
    else:
        y2 = np.clip(np.rint(np.clip(y2 + add, 0, 255) * mul), 0, 255)
    return _u8(x + (y2 - y)[..., None])


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13.0


def enhance_sharpness(img, rng, factor=None):
    """PIL ImageEnhance.Sharpness: blend of PIL's SMOOTH-filtered image (3x3,
    centre 5, /13, border pixels unfiltered) and the image; factor ~ U(0, 2)
    (0: smoothed, 1: unchanged, 2: sharpened)."""
    if factor is None:
        factor = rng.uniform(0.0, 2.0)
    x = img.astype(np.float64)
    H, W = x.shape[:2]
    deg = x.copy()
    if H > 2 and W > 2:
        acc = np.zeros((H - 2, W - 2, x.shape[2]))
        for i in range(3):
            for j in range(3):
                acc += _SMOOTH[i, j] * x[i:i + H - 2, j:j + W - 2]
        deg[1:-1, 1:-1] = np.rint(acc)
    return np.clip(np.trunc(deg + factor * (x - deg)), 0, 255).astype(np.uint8)  # PIL's blend


def add_hue_saturation(img, rng, hue=None, saturation=None):
    """Add hue ~ U{-50..50} (on imgaug's 0..255 hue circle, i.e. hue*360/255
    degrees) and saturation ~ U{-50..50} (0..255 scale), drawn separately
    (per_channel=True)."""
    if hue is None:
        hue = int(rng.integers(-50, 51))
    if saturation is None:
        saturation = int(rng.integers(-50, 51))
    hsv = rgb_to_hsv(img.astype(np.float32) / np.float32(255))
    hsv[..., 0] = (hsv[..., 0] + np.float32(hue / 255.0)) % 1
    hsv[..., 1] = np.clip(hsv[..., 1] + np.float32(saturation / 255.0), 0, 1)
    return _u8(hsv_to_rgb(hsv) * 255)


def solarize(img, rng, p=0.5, threshold=None, apply=None):
    """With probability p: invert every value >= threshold ~ U(32, 128)."""
    a = rng.random() < p
    t = rng.uniform(32, 128)
    apply = a if apply is None else apply
    threshold = t if threshold is None else threshold
    if not apply:
        return img.copy()
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


def posterize(img, rng, bits=None):
    """Keep the top `bits` ~ U{1..8} bits of every value (PIL posterize)."""
    if bits is None:
        bits = int(rng.integers(1, 9))
    mask = (0xFF << (8 - int(bits))) & 0xFF
    return (img & np.uint8(mask)).astype(np.uint8)


def invert(img, rng=None):
    """255 - x."""
    return (255 - img).astype(np.uint8)


def autocontrast(img, rng, cutoff=None):
    """PIL ImageOps.autocontrast per channel: drop `cutoff` ~ U{0..20} percent
    of the pixels at each end of the histogram, stretch the rest to 0..255."""
    if cutoff is None:
        cutoff = int(rng.integers(0, 21))
    out = np.empty_like(img)
    ix = np.arange(256)
    for ch in range(img.shape[2]):
        band = img[..., ch]
        h = np.bincount(band.ravel(), minlength=256)
        n = int(h.sum())
        cut = n * int(cutoff) // 100
        cs = np.cumsum(h)
        rcs = np.cumsum(h[::-1])[::-1]
        lo = int(np.argmax(cs > cut)) if cs[-1] > cut else 255
        hi = int(255 - np.argmax(rcs[::-1] > cut)) if rcs[0] > cut else 0
        if hi <= lo:
            out[..., ch] = band
            continue
        scale = 255.0 / (hi - lo)
        lut = np.clip((ix * scale - lo * scale).astype(np.int64), 0, 255).astype(np.uint8)
        out[..., ch] = lut[band]
    return out


def equalize(img, rng=None):
    """PIL ImageOps.equalize per channel (its exact lookup table)."""
    out = np.empty_like(img)
    for ch in range(img.shape[2]):
        band = img[..., ch]
        h = np.bincount(band.ravel(), minlength=256)
        nz = h[h > 0]
        if len(nz) <= 1:
            out[..., ch] = band
            continue
        step = (int(nz.sum()) - int(nz[-1])) // 255
        if step == 0:
            out[..., ch] = band
            continue
        before = np.concatenate([[0], np.cumsum(h)[:-1]])
        lut = np.minimum((step // 2 + before) // step, 255).astype(np.uint8)
        out[..., ch] = lut[band]
    return out


def rotate_texture(img, rng, angle=None):
    """Rotate by angle ~ U(-45, 45) degrees, bilinear, black outside."""
    if angle is None:
        angle = rng.uniform(-45.0, 45.0)
    return _u8(rotate(img.astype(np.float32), angle, fill=0.0))


AUGMENTATIONS = (gamma_contrast, multiply_add_brightness, enhance_sharpness, add_hue_saturation,
                 solarize, posterize, invert, autocontrast, equalize, rotate_texture)


# -- the synthesizer ----------------------------------------------------------------

class Synthesizer:
    """DRAEM-style synthetic anomalies (see the module docstring).

    texture_dir: a DTD-layout folder (`images/<category>/*.jpg`), or None for
        the built-in procedural textures (`textures.FAMILIES`).
    image_size: the size textures are made at (default: each batch's H, W).
    seed: seeds the generator used when `__call__` gets no rng.
    clean_fraction: probability an image stays clean (DRAEM: 0.5).
    beta_max: beta ~ U(0, beta_max) (DRAEM: 0.8); n_augment: augmentations
    per texture (3); max_scale_exp: Perlin scale 2^k, k <= this (5);
    rotation: mask rotation range in degrees (90); threshold: 0.5.
    ensure_nonempty: redraw a mask (up to 16 times) when an image chosen to
        be anomalous got an empty one. DRAEM does not (False): at scale 2^5
        on a 32-pixel axis the noise is identically 0, and small smooth
        fields can stay under 0.5, so some "anomalous" draws are clean.

    `synth(x, rng)`: x (N, 3, H, W) float in [-1, 1] -> (x_aug float32
    (N, 3, H, W), masks (N, H, W) bool); clean images are returned unchanged
    with an all-False mask.
    """

    def __init__(self, texture_dir=None, image_size=None, seed=None, clean_fraction=0.5,
                 beta_max=0.8, n_augment=3, max_scale_exp=5, rotation=90.0, threshold=0.5,
                 ensure_nonempty=False, families=None):
        self.textures = texture_source(texture_dir, families=families)
        self.texture_dir = texture_dir
        self.image_size = None if image_size is None else int(image_size)
        self.clean_fraction = float(clean_fraction)
        self.beta_max = float(beta_max)
        self.n_augment = int(n_augment)
        self.max_scale_exp = int(max_scale_exp)
        self.rotation, self.threshold = float(rotation), float(threshold)
        self.ensure_nonempty = bool(ensure_nonempty)
        if not 0.0 <= self.clean_fraction <= 1.0 or not 0.0 <= self.beta_max <= 1.0:
            raise ValueError("Synthesizer: clean_fraction and beta_max must lie in [0, 1]")
        if not 0 <= self.n_augment <= len(AUGMENTATIONS):
            raise ValueError(f"Synthesizer: n_augment must be in 0..{len(AUGMENTATIONS)}")
        self.rng = np.random.default_rng(seed)

    def __repr__(self):
        return (f"Synthesizer({self.textures!r}, clean_fraction={self.clean_fraction}, "
                f"beta_max={self.beta_max}, n_augment={self.n_augment})")

    # pieces, each drawing from rng
    def mask(self, shape, rng):
        m = perlin_mask(shape, rng, self.max_scale_exp, self.rotation, self.threshold)
        if self.ensure_nonempty:
            for _ in range(16):
                if m.any():
                    break
                m = perlin_mask(shape, rng, self.max_scale_exp, self.rotation, self.threshold)
        return m

    def texture(self, shape, rng):
        """An augmented texture (H, W, 3) uint8 RGB."""
        size = shape if self.image_size is None else (self.image_size, self.image_size)
        tex = self.textures.sample(rng, size)
        if tuple(tex.shape[:2]) != tuple(shape):
            from PIL import Image
            tex = np.asarray(Image.fromarray(tex).resize((shape[1], shape[0]), Image.BILINEAR))
        for k in rng.choice(len(AUGMENTATIONS), self.n_augment, replace=False):
            tex = AUGMENTATIONS[int(k)](tex, rng)
        return tex

    def synthesize(self, x, rng):
        """One anomalous image: x (3, H, W) in [-1, 1] -> (aug (3, H, W), mask (H, W))."""
        H, W = x.shape[1:]
        tex = self.texture((H, W), rng)
        m = self.mask((H, W), rng)
        beta = np.float32(rng.random() * self.beta_max)
        t = tex.transpose(2, 0, 1).astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
        M = m.astype(np.float32)[None]
        aug = x * (1 - M) + (1 - beta) * t * M + beta * x * M
        return aug.astype(np.float32), m

    def __call__(self, x, rng=None):
        rng = self.rng if rng is None else rng
        x = np.asarray(getattr(x, "data", x), np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Synthesizer: x must be (N, 3, H, W) in [-1, 1], got {x.shape}")
        N, _, H, W = x.shape
        out = x.copy()
        masks = np.zeros((N, H, W), bool)
        for i in range(N):
            if rng.random() < self.clean_fraction:
                continue
            out[i], masks[i] = self.synthesize(x[i], rng)
        return out, masks
