"""Noise and texture sources for the DRAEM-style anomaly synthesis.

- `perlin_2d(shape, res, rng)`: gradient (Perlin) noise, DRAEM's
  `rand_perlin_2d_np` vectorised: a (res_y + 1, res_x + 1) lattice of random
  unit gradients, quintic fade 6t^5 - 15t^4 + 10t^3, scaled by sqrt(2). For
  a shape divisible by res the values equal DRAEM's (same gradients, same
  grid); any other shape works too (the lattice is stretched to fit).
- `fractal_noise(shape, rng, ...)`: fBm, a sum of Perlin octaves.
- `procedural_texture(size, rng, family=None)`: a seeded colour texture from
  one of `FAMILIES` (used when no DTD folder is given); `(H, W, 3)` uint8.
- `DTDTextures(root, ...)` / `ProceduralTextures(...)`: texture sources with
  `.sample(rng, size) -> (H, W, 3) uint8 RGB`.

Every random choice is drawn from the numpy Generator passed in, so a
texture is a pure function of the generator's state.
"""
import glob
import math
import os
from collections import OrderedDict

import numpy as np

__all__ = ["perlin_2d", "fractal_noise", "procedural_texture", "FAMILIES",
           "ProceduralTextures", "DTDTextures", "texture_source"]


def _fade(t):
    return ((6.0 * t - 15.0) * t + 10.0) * t * t * t


def perlin_2d(shape, res, rng):
    """Perlin noise of `shape` (H, W) with `res` = (cells along y, cells
    along x); float32, roughly in [-1, 1] (DRAEM's scaling: sqrt(2) times
    the interpolated gradient dot products)."""
    H, W = int(shape[0]), int(shape[1])
    ry, rx = int(res[0]), int(res[1])
    if H < 1 or W < 1 or ry < 1 or rx < 1:
        raise ValueError(f"perlin_2d: need positive shape and res, got {shape}, {res}")
    angles = 2.0 * math.pi * rng.random((ry + 1, rx + 1))
    # DRAEM: gradient (cos, sin) over (axis 0, axis 1)
    gy, gx = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    py = np.arange(H, dtype=np.float64) * (ry / H)
    px = np.arange(W, dtype=np.float64) * (rx / W)
    cy, cx = np.floor(py).astype(np.intp), np.floor(px).astype(np.intp)
    fy = (py - cy).astype(np.float32)[:, None]
    fx = (px - cx).astype(np.float32)[None, :]

    def dot(oy, ox):
        # rows first, then columns: two cheap gathers instead of one (H, W) fancy index
        gyy = gy[cy + oy][:, cx + ox]
        gxx = gx[cy + oy][:, cx + ox]
        return gyy * (fy - oy) + gxx * (fx - ox)

    n00, n10, n01, n11 = dot(0, 0), dot(1, 0), dot(0, 1), dot(1, 1)
    ty, tx = _fade(fy), _fade(fx)
    a = n00 + ty * (n10 - n00)      # lerp along y at x0
    b = n01 + ty * (n11 - n01)      # ... at x1
    return np.float32(math.sqrt(2.0)) * (a + tx * (b - a))


def fractal_noise(shape, rng, base_res=4, octaves=4, persistence=0.5):
    """fBm: sum over octaves o of persistence^o * perlin(res = base_res * 2^o)."""
    H, W = shape
    out = np.zeros((H, W), np.float32)
    amp, total = 1.0, 0.0
    for o in range(int(octaves)):
        r = int(base_res) * 2 ** o
        if r > max(H, W):
            break
        out += np.float32(amp) * perlin_2d((H, W), (r, r), rng)
        total += amp
        amp *= persistence
    return out / np.float32(max(total, 1e-12))


# -- procedural colour textures -------------------------------------------------

def _normalize(s):
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def _palette(rng, k):
    """k random colours (k, 3) in [0, 1], from random hues with varied
    saturation and value (so neither all-grey nor all-neon)."""
    h = rng.random(k)
    s = rng.uniform(0.2, 1.0, k)
    v = rng.uniform(0.15, 1.0, k)
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in
                      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(k)]


def _colorize(s, colors):
    """Map a field s in [0, 1] (H, W) through the piecewise-linear colour ramp."""
    k = len(colors)
    pos = np.clip(s, 0.0, 1.0) * (k - 1)
    i = np.minimum(np.floor(pos).astype(int), k - 2)
    f = (pos - i)[..., None]
    return colors[i] * (1 - f) + colors[i + 1] * f


def _coords(H, W, rng):
    """Pixel coordinates in [0, 1) rotated by a random angle: (u, v)."""
    yy, xx = np.meshgrid(np.arange(H) / max(H, W), np.arange(W) / max(H, W), indexing="ij")
    th = rng.uniform(0, math.pi)
    return xx * math.cos(th) + yy * math.sin(th), -xx * math.sin(th) + yy * math.cos(th)


def _tex_fractal(H, W, rng):
    s = fractal_noise((H, W), rng, base_res=int(rng.integers(1, 9)),
                      octaves=int(rng.integers(2, 7)), persistence=rng.uniform(0.35, 0.7))
    if rng.random() < 0.5:  # per-channel independent fields: a mottled colour noise
        chans = [s] + [fractal_noise((H, W), rng, base_res=int(rng.integers(1, 9)),
                                     octaves=3) for _ in range(2)]
        base = _palette(rng, 1)[0]
        amp = rng.uniform(0.3, 0.8)
        return np.clip(base + amp * np.stack([_normalize(c) - 0.5 for c in chans], -1), 0, 1)
    return _colorize(_normalize(s), _palette(rng, int(rng.integers(2, 5))))


def _tex_stripes(H, W, rng):
    u, _ = _coords(H, W, rng)
    freq = rng.uniform(2, 24)
    turb = rng.uniform(0, 1.5) * fractal_noise((H, W), rng, base_res=int(rng.integers(1, 5)),
                                               octaves=3)
    s = 0.5 + 0.5 * np.sin(2 * math.pi * freq * u + rng.uniform(0, 2 * math.pi) + turb)
    if rng.random() < 0.5:  # hard-edged bands
        s = (s > rng.uniform(0.3, 0.7)).astype(np.float64)
    return _colorize(s, _palette(rng, int(rng.integers(2, 4))))


def _tex_marble(H, W, rng):
    u, v = _coords(H, W, rng)
    turb = fractal_noise((H, W), rng, base_res=int(rng.integers(2, 6)), octaves=5)
    freq = rng.uniform(1, 8)
    if rng.random() < 0.5:   # wood rings
        r = np.sqrt((u - u.mean()) ** 2 + (v - v.mean()) ** 2)
        s = 0.5 + 0.5 * np.sin(2 * math.pi * freq * 3 * r + rng.uniform(2, 8) * turb)
    else:                    # marble veins
        s = np.abs(np.sin(2 * math.pi * freq * u + rng.uniform(3, 10) * turb)) ** rng.uniform(0.3, 2)
    return _colorize(s, _palette(rng, int(rng.integers(2, 4))))


def _tex_checkers(H, W, rng):
    u, v = _coords(H, W, rng)
    cells = rng.uniform(2, 16)
    s = ((np.floor(u * cells) + np.floor(v * cells)) % 2).astype(np.float64)
    colors = _palette(rng, 2)
    img = _colorize(s, colors)
    noise = fractal_noise((H, W), rng, base_res=8, octaves=3)[..., None]
    return np.clip(img + rng.uniform(0, 0.15) * noise, 0, 1)


def _tex_cellular(H, W, rng):
    n = int(rng.integers(6, 48))
    pts = rng.random((n, 2)).astype(np.float32)
    yy = (np.arange(H, dtype=np.float32) / H)[:, None, None]
    xx = (np.arange(W, dtype=np.float32) / W)[None, :, None]
    # toroidal distances, so cells tile without an edge seam
    dy = np.abs(yy - pts[:, 0])
    dx = np.abs(xx - pts[:, 1])
    d = np.minimum(dy, 1 - dy) ** 2 + np.minimum(dx, 1 - dx) ** 2   # squared, (H, W, n)
    mode = rng.integers(3)
    if mode == 0:      # Voronoi mosaic: one colour per cell
        cols = _palette(rng, n)
        return cols[np.argmin(d, axis=-1)]
    two = np.sqrt(np.partition(d, 1, axis=-1)[..., :2])
    s = two[..., 0] if mode == 1 else two[..., 1] - two[..., 0]  # Worley F1, or F2 - F1 (cracks)
    return _colorize(_normalize(s), _palette(rng, int(rng.integers(2, 4))))


def _tex_dots(H, W, rng):
    colors = _palette(rng, 3)
    img = np.broadcast_to(colors[0], (H, W, 3)).copy()
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    n = int(rng.integers(5, 60))
    for _ in range(n):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        r = rng.uniform(0.02, 0.15) * max(H, W)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[inside] = colors[1 + int(rng.integers(2))]
    return img


def _tex_grain(H, W, rng):
    base = _palette(rng, 1)[0]
    amp = rng.uniform(0.1, 0.5)
    noise = rng.standard_normal((H, W, 1 if rng.random() < 0.5 else 3))
    blur = fractal_noise((H, W), rng, base_res=int(rng.integers(4, 16)), octaves=2)[..., None]
    return np.clip(base + amp * (0.6 * noise / 3 + 0.4 * blur), 0, 1)


FAMILIES = OrderedDict([
    ("fractal", _tex_fractal), ("stripes", _tex_stripes), ("marble", _tex_marble),
    ("checkers", _tex_checkers), ("cellular", _tex_cellular), ("dots", _tex_dots),
    ("grain", _tex_grain),
])


def procedural_texture(size, rng, family=None):
    """A colour texture (H, W, 3) uint8 RGB from `rng`. size: int or (H, W);
    family: one of FAMILIES (default: drawn uniformly)."""
    H, W = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    names = list(FAMILIES)
    if family is None:
        family = names[int(rng.integers(len(names)))]
    elif family not in FAMILIES:
        raise ValueError(f"procedural_texture: unknown family {family!r}; choose from {names}")
    img = FAMILIES[family](H, W, rng)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


class ProceduralTextures:
    """Built-in texture source: every draw makes a fresh procedural texture."""

    def __init__(self, families=None):
        self.families = tuple(FAMILIES) if families is None else tuple(families)
        for f in self.families:
            if f not in FAMILIES:
                raise ValueError(f"ProceduralTextures: unknown family {f!r}")

    def __len__(self):
        return len(self.families)

    def sample(self, rng, size):
        fam = self.families[int(rng.integers(len(self.families)))]
        return procedural_texture(size, rng, fam)

    def __repr__(self):
        return f"ProceduralTextures({', '.join(self.families)})"


_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DTDTextures:
    """Textures from a DTD-layout folder: `<root>/images/<category>/*.jpg`
    (root may also be the `images` folder itself, or hold `dtd/images`).
    Files are sorted, so a seed picks the same files on every machine; each
    image is read with Pillow, converted to RGB and resized (bilinear, no
    aspect preservation, as DRAEM's cv2.resize) to the requested size. The
    last `cache_size` resized images are kept in memory."""

    def __init__(self, root, cache_size=256):
        root = os.fspath(root)
        cands = [os.path.join(root, "images"), os.path.join(root, "dtd", "images"), root]
        files = []
        for c in cands:
            if os.path.isdir(c):
                files = sorted(f for f in glob.glob(os.path.join(glob.escape(c), "*", "*"))
                               if f.lower().endswith(_IMAGE_EXT))
                if files:
                    break
        if not files:
            raise FileNotFoundError(f"DTDTextures: no images under {root!r} (expected "
                                    f"images/<category>/*.jpg)")
        self.root, self.files = root, files
        self.cache_size = int(cache_size)
        self._cache = OrderedDict()

    def __len__(self):
        return len(self.files)

    def load(self, i, size):
        H, W = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
        key = (i, H, W)
        img = self._cache.get(key)
        if img is not None:
            self._cache.move_to_end(key)
            return img
        from PIL import Image
        with Image.open(self.files[i]) as im:
            img = np.asarray(im.convert("RGB").resize((W, H), Image.BILINEAR), np.uint8)
        if self.cache_size > 0:
            self._cache[key] = img
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return img

    def sample(self, rng, size):
        return self.load(int(rng.integers(len(self.files))), size)

    def __repr__(self):
        return f"DTDTextures({self.root!r}, {len(self.files)} images)"


def texture_source(texture_dir=None, **kw):
    """DTDTextures(texture_dir) when a folder is given, else ProceduralTextures()."""
    if texture_dir is None:
        return ProceduralTextures(kw.get("families"))
    return DTDTextures(texture_dir, kw.get("cache_size", 256))
