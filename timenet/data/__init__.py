"""Datasets: MVTec-AD layout folders, loaded with Pillow into float32 arrays.

    ds = MVTecAD(root, split="train")            # every category under root
    x, c = ds.images(), ds.class_ids             # (N, 3, S, S) in [-1, 1], (N,)
    for xb, cb in ds.batches(16, rng): ...       # Jupyter-safe, no workers

Multi-class by default: all categories form one training set, with class
ids in sorted-name order (saved with the model, so they stay stable).
"""
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

__all__ = ["MVTecAD", "Sample", "load_image", "load_mask"]


def load_image(path, size):
    """RGB image -> (3, size, size) float32 in [-1, 1] (grey and RGBA converted)."""
    try:
        img = Image.open(path)
        img = img.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img, np.float32).transpose(2, 0, 1)
    return a / 127.5 - 1.0


def load_mask(path, size):
    """Ground-truth mask -> (size, size) bool, anomalous where the file is > 0."""
    try:
        m = Image.open(path).convert("L")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read mask {path}: {e}") from e
    if m.size != (size, size):
        m = m.resize((size, size), Image.NEAREST)
    return np.asarray(m) > 0


def _images_in(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."))


@dataclass
class Sample:
    path: str
    category: str
    class_id: int
    defect: str          # "good" for normal images
    mask_path: str       # None for normal images

    @property
    def label(self):
        return int(self.defect != "good")


class MVTecAD:
    """An MVTec-AD style folder: <cat>/train/good, <cat>/test/<defect>,
    <cat>/ground_truth/<defect>/<stem>_mask.png.

    categories: names to use (default: every folder under root that has a
    train/ or test/ folder); class_names: the full id order when it must
    match a trained model's (default: sorted categories).
    """

    def __init__(self, root, categories=None, split="train", image_size=256, class_names=None):
        if split not in ("train", "test"):
            raise ValueError(f"MVTecAD: split must be 'train' or 'test', got {split!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"MVTecAD: no dataset folder at {root}")
        found = sorted(d for d in os.listdir(root)
                       if os.path.isdir(os.path.join(root, d, "train"))
                       or os.path.isdir(os.path.join(root, d, "test")))
        if categories is None:
            categories = found
        if isinstance(categories, str):
            categories = [c for c in categories.split(",") if c]
        missing = [c for c in categories if c not in found]
        if missing:
            raise ValueError(f"MVTecAD: categories {missing} not found under {root} "
                             f"(found: {found})")
        if not categories:
            raise ValueError(f"MVTecAD: no categories (folders with train/ or test/) in {root}")
        self.root, self.split, self.image_size = root, split, int(image_size)
        self.categories = list(categories)
        self.class_names = list(class_names) if class_names is not None else sorted(categories)
        for c in self.categories:
            if c not in self.class_names:
                raise ValueError(f"MVTecAD: category {c!r} is not among the model's classes "
                                 f"{self.class_names}")
        self.samples = []
        for cat in self.categories:
            self.samples += self._scan(cat)
        if not self.samples:
            raise ValueError(f"MVTecAD: no {split} images under {root} for {self.categories}")
        self._x = None

    def _scan(self, cat):
        cid = self.class_names.index(cat)
        base = os.path.join(self.root, cat, self.split)
        if self.split == "train":
            return [Sample(p, cat, cid, "good", None) for p in _images_in(os.path.join(base, "good"))]
        out = []
        defects = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))) \
            if os.path.isdir(base) else []
        for d in defects:
            for p in _images_in(os.path.join(base, d)):
                mask = None
                if d != "good":
                    stem = os.path.splitext(os.path.basename(p))[0]
                    gt = os.path.join(self.root, cat, "ground_truth", d)
                    cands = [q for q in _images_in(gt)
                             if os.path.splitext(os.path.basename(q))[0] in (stem + "_mask", stem)]
                    if not cands:
                        raise ValueError(f"MVTecAD: no ground-truth mask for {p} "
                                         f"(expected {os.path.join(gt, stem + '_mask.png')})")
                    mask = cands[0]
                out.append(Sample(p, cat, cid, d, mask))
        return out

    def __len__(self):
        return len(self.samples)

    @property
    def class_ids(self):
        return np.array([s.class_id for s in self.samples], np.int64)

    @property
    def labels(self):
        return np.array([s.label for s in self.samples], np.int64)

    def images(self):
        """All images, (N, 3, S, S) float32 in [-1, 1], read once and kept."""
        if self._x is None:
            self._x = np.stack([load_image(s.path, self.image_size) for s in self.samples])
        return self._x

    def masks(self):
        """(N, S, S) bool; all False for normal images."""
        S = self.image_size
        return np.stack([load_mask(s.mask_path, S) if s.mask_path else np.zeros((S, S), bool)
                         for s in self.samples])

    def batches(self, batch_size, rng=None, shuffle=True):
        """Yield (images, class_ids) batches; one pass over the data."""
        x, c = self.images(), self.class_ids
        order = rng.permutation(len(x)) if shuffle and rng is not None else np.arange(len(x))
        for i in range(0, len(order), batch_size):
            j = order[i:i + batch_size]
            yield x[j], c[j]

    def __repr__(self):
        return (f"MVTecAD({self.root!r}, split={self.split!r}, {len(self)} images, "
                f"categories={self.categories})")
