"""The embedded demo dataset: real photographs in MVTec-AD layout.

`build(root)` writes a small multi-class dataset from the photographs that
scikit-image ships inside its wheel (no download): three grey textures
(brick, grass, gravel) and two colour ones (a stained tissue section and a
deep-field sky). Normal images are random crops of the upper 60 % of each
photograph; test images are crops of the lower part, which training never
sees. Defects are drawn by this module and are of other kinds than the
training-time synthesis (Perlin-masked texture blends): scratches
(anti-aliased strokes), stains (smooth-edged colour blobs), and swaps (a
patch cut from another class). Every defect comes with its ground-truth
mask.

    <root>/<class>/train/good/000.png
    <root>/<class>/test/good/000.png
    <root>/<class>/test/<defect>/000.png
    <root>/<class>/ground_truth/<defect>/000_mask.png
"""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("brick", "grass", "gravel", "tissue", "sky")
DEFECTS = ("scratch", "stain", "swap")


def _photo(name):
    try:
        import skimage.data as d
    except ImportError as e:
        raise ImportError("the demo data is cut from scikit-image's bundled photographs: "
                          "pip install 'timenet[demo]' (or scikit-image)") from e
    img = {"brick": d.brick, "grass": d.grass, "gravel": d.gravel,
           "tissue": d.immunohistochemistry, "sky": d.hubble_deep_field}[name]()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _crop(photo, rng, size, rows):
    """A random crop inside the band of rows (lo, hi) (fractions of the height),
    its window 25-35 % of the photo's width whatever the band (so train and
    test crops share one scale), resized to size x size, randomly flipped."""
    H, W, _ = photo.shape
    win = min(int(W * rng.uniform(0.25, 0.35)), int(H * (rows[1] - rows[0])) - 1)
    y = rng.integers(int(H * rows[0]), max(int(H * rows[0]) + 1, int(H * rows[1]) - win))
    x = rng.integers(0, W - win)
    img = Image.fromarray(photo[y:y + win, x:x + win]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def _scratch(img, rng, size):
    mask = Image.new("L", (size, size), 0)
    draw_m, draw_i = ImageDraw.Draw(mask), ImageDraw.Draw(img)
    pts = [tuple(rng.uniform(0.15, 0.85, 2) * size)]
    for _ in range(rng.integers(2, 4)):
        step = rng.normal(0, 0.18, 2) * size
        pts.append(tuple(np.clip(np.array(pts[-1]) + step, 2, size - 3)))
    width = max(1, int(size * rng.uniform(0.02, 0.04)))
    shade = tuple(int(v) for v in rng.choice([rng.integers(0, 40, 3), rng.integers(215, 256, 3)]))
    draw_i.line(pts, fill=shade, width=width, joint="curve")
    draw_m.line(pts, fill=255, width=width, joint="curve")
    return img, mask


def _stain(img, rng, size):
    mask = Image.new("L", (size, size), 0)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    rx, ry = rng.uniform(0.06, 0.14, 2) * size
    ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    soft = mask.filter(ImageFilter.GaussianBlur(size * 0.015))
    color = rng.integers(0, 256, 3).astype(np.float32)
    a = np.asarray(soft, np.float32)[..., None] / 255.0 * rng.uniform(0.6, 0.9)
    out = np.asarray(img, np.float32) * (1 - a) + color * a
    return Image.fromarray(out.clip(0, 255).astype(np.uint8)), soft.point(lambda v: 255 if v > 64 else 0)


def _swap(img, rng, size, other):
    mask = Image.new("L", (size, size), 0)
    w, h = (rng.uniform(0.18, 0.32, 2) * size).astype(int)
    x, y = rng.integers(0, size - w), rng.integers(0, size - h)
    patch = other.resize((size, size)).crop((x, y, x + w, y + h))
    img = img.copy()
    img.paste(patch, (x, y))
    ImageDraw.Draw(mask).rectangle([x, y, x + w - 1, y + h - 1], fill=255)
    return img, mask


def build(root, image_size=64, n_train=40, n_test_good=8, n_test_defect=4, seed=0,
          classes=CLASSES):
    """Write the demo dataset under `root` (MVTec-AD layout); return root.

    Sizes are per class: n_train normal training images, n_test_good normal
    test images and n_test_defect images of each defect kind. Deterministic
    for a given seed. An existing complete build with the same settings is
    reused (a stamp file records them).
    """
    stamp = os.path.join(root, ".timenet-demo")
    key = f"{image_size} {n_train} {n_test_good} {n_test_defect} {seed} {','.join(classes)}\n"
    if os.path.exists(stamp) and open(stamp).read() == key:
        return root
    rng = np.random.default_rng(seed)
    photos = {c: _photo(c) for c in classes}
    for ci, c in enumerate(classes):
        def save(img, *parts):
            path = os.path.join(root, c, *parts)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            img.save(path)
        for i in range(n_train):
            save(_crop(photos[c], rng, image_size, (0.0, 0.6)), "train", "good", f"{i:03d}.png")
        for i in range(n_test_good):
            save(_crop(photos[c], rng, image_size, (0.6, 1.0)), "test", "good", f"{i:03d}.png")
        for d in DEFECTS:
            for i in range(n_test_defect):
                img = _crop(photos[c], rng, image_size, (0.6, 1.0))
                if d == "scratch":
                    img, mask = _scratch(img, rng, image_size)
                elif d == "stain":
                    img, mask = _stain(img, rng, image_size)
                else:
                    other = classes[(ci + 1 + rng.integers(len(classes) - 1)) % len(classes)]
                    img, mask = _swap(img, rng, image_size, _crop(photos[other], rng, image_size, (0, 1)))
                save(img, "test", d, f"{i:03d}.png")
                save(mask, "ground_truth", d, f"{i:03d}_mask.png")
    with open(stamp, "w") as f:
        f.write(key)
    return root
