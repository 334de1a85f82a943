"""Datasets: MVTec-AD folders, VisA split csvs and plain folders, loaded
with Pillow into float32 arrays.

    ds = MVTecAD(root, split="train")            # every category under root
    ds = VisA(root, split="test")                # <root>/split_csv/1cls.csv
    ds = Folder("good/", "bad/", "masks/")       # one class from plain folders
    x, c = ds.images(), ds.class_ids             # (N, 3, S, S) in [-1, 1], (N,)
    for xb, cb in ds.batches(16, rng): ...       # Jupyter-safe, no workers

Multi-class by default: all categories form one training set, with class
ids in sorted-name order (saved with the model, so they stay stable).

All three share `ImageDataset` (images/masks/labels/class_ids/batches); the
subclasses only find their files, and check at construction that every
image and mask they will read exists. A dataset whose anomalous images lack
pixel ground truth (a `Folder` without mask_dir) has `has_masks == False`
and its masks() raises; callers that compute pixel metrics check
`getattr(ds, "has_masks", True)` first.
"""
import csv
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

__all__ = ["ImageDataset", "MVTecAD", "VisA", "Folder", "Sample", "load_image", "load_mask"]


def load_image(path, size):
    """RGB image -> (3, size, size) float32 in [-1, 1] (grey and RGBA converted)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img, np.float32).transpose(2, 0, 1)
    return a / 127.5 - 1.0


_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def load_mask(path, size):
    """Ground-truth mask -> (size, size) bool, anomalous where the file is > 0.

    0/255 masks (MVTec), small region ids 1, 2, ... (VisA), 16-bit and
    palette masks all work: palette and colour masks are anomalous where the
    pixel's colour is not black (alpha ignored)."""
    try:
        with Image.open(path) as m:
            if m.mode in _COLOUR_MODES:
                a = np.asarray(m.convert("RGB")).any(axis=-1)
            elif m.mode == "LA":
                a = np.asarray(m.convert("L")) > 0
            else:                                    # L, 1, I, I;16, F
                a = np.asarray(m) > 0
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read mask {path}: {e}") from e
    if a.shape != (size, size):
        a = Image.fromarray(a.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
        a = np.asarray(a) > 0
    return a


def _images_in(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTS) and not f.startswith(".")
                  and os.path.isfile(os.path.join(folder, f)))


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


class _MaskIndex:
    """The masks in one folder, found by an image's stem: `<stem>_mask.*` or
    `<stem>.*` (the first in sorted order when several match)."""

    def __init__(self, folder):
        self.folder = folder
        self.by_stem = {}
        for q in _images_in(folder):
            self.by_stem.setdefault(_stem(q), q)

    def find(self, image_path):
        s = _stem(image_path)
        cands = [q for q in (self.by_stem.get(s + "_mask"), self.by_stem.get(s)) if q]
        return min(cands) if cands else None


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


def _as_list(categories):
    if isinstance(categories, str):
        return [c.strip() for c in categories.split(",") if c.strip()]
    return list(categories)


class ImageDataset:
    """What the datasets share. A subclass sets root, split, image_size,
    categories, class_names and samples (a list of Sample); everything else
    is here. `name` prefixes the error messages."""

    name = "dataset"

    def _check_split(self, split, allowed=("train", "test")):
        if split not in allowed:
            raise ValueError(f"{self.name}: split must be " + " or ".join(map(repr, allowed))
                             + f", got {split!r}")
        return split

    def _select(self, categories, found, where, none_msg, class_names):
        """categories (None = found, list or comma string) checked against
        found; sets self.categories and self.class_names."""
        categories = found if categories is None else _as_list(categories)
        missing = [c for c in categories if c not in found]
        if missing:
            raise ValueError(f"{self.name}: categories {missing} not found {where} "
                             f"(found: {found})")
        if not categories:
            raise ValueError(none_msg)
        self.categories = list(categories)
        self.class_names = list(class_names) if class_names is not None else sorted(categories)
        for c in self.categories:
            if c not in self.class_names:
                raise ValueError(f"{self.name}: category {c!r} is not among the model's classes "
                                 f"{self.class_names}")

    def _finish(self, samples, empty_msg):
        if not samples:
            raise ValueError(empty_msg)
        self.samples = samples
        self._x = None

    def __len__(self):
        return len(self.samples)

    @property
    def class_ids(self):
        return np.array([s.class_id for s in self.samples], np.int64)

    @property
    def labels(self):
        return np.array([s.label for s in self.samples], np.int64)

    @property
    def has_masks(self):
        """True when every anomalous image has a ground-truth mask (so masks()
        is the pixel ground truth and pixel metrics are defined)."""
        return all(s.mask_path or not s.label for s in self.samples)

    def images(self):
        """All images, (N, 3, S, S) float32 in [-1, 1], read once and kept."""
        if self._x is None:
            self._x = np.stack([load_image(s.path, self.image_size) for s in self.samples])
        return self._x

    def _no_masks_message(self):
        lacking = [s.path for s in self.samples if s.label and not s.mask_path]
        return (f"{self.name}: {len(lacking)} anomalous images have no ground-truth mask "
                f"(e.g. {lacking[0]}), so there are no pixel labels")

    def masks(self):
        """(N, S, S) bool; all False for normal images. Raises ValueError when
        some anomalous image has no mask (has_masks is False)."""
        if not self.has_masks:
            raise ValueError(self._no_masks_message())
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
        return (f"{type(self).__name__}({self.root!r}, split={self.split!r}, {len(self)} images, "
                f"categories={self.categories})")


class MVTecAD(ImageDataset):
    """An MVTec-AD style folder: <cat>/train/good, <cat>/test/<defect>,
    <cat>/ground_truth/<defect>/<stem>_mask.png.

    categories: names to use (default: every folder under root that has a
    train/ or test/ folder); class_names: the full id order when it must
    match a trained model's (default: sorted categories).
    """

    name = "MVTecAD"

    def __init__(self, root, categories=None, split="train", image_size=256, class_names=None):
        self._check_split(split)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"MVTecAD: no dataset folder at {root}")
        found = sorted(d for d in os.listdir(root)
                       if os.path.isdir(os.path.join(root, d, "train"))
                       or os.path.isdir(os.path.join(root, d, "test")))
        self.root, self.split, self.image_size = root, split, int(image_size)
        self._select(categories, found, f"under {root}",
                     f"MVTecAD: no categories (folders with train/ or test/) in {root}", class_names)
        samples = []
        for cat in self.categories:
            samples += self._scan(cat)
        self._finish(samples, f"MVTecAD: no {split} images under {root} for {self.categories}")

    def _scan(self, cat):
        cid = self.class_names.index(cat)
        base = os.path.join(self.root, cat, self.split)
        if self.split == "train":
            return [Sample(p, cat, cid, "good", None) for p in _images_in(os.path.join(base, "good"))]
        out = []
        defects = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))) \
            if os.path.isdir(base) else []
        for d in defects:
            gt = _MaskIndex(os.path.join(self.root, cat, "ground_truth", d)) if d != "good" else None
            for p in _images_in(os.path.join(base, d)):
                mask = None
                if gt is not None:
                    mask = gt.find(p)
                    if mask is None:
                        raise ValueError(f"MVTecAD: no ground-truth mask for {p} (expected "
                                         f"{os.path.join(gt.folder, _stem(p) + '_mask.png')})")
                out.append(Sample(p, cat, cid, d, mask))
        return out


class VisA(ImageDataset):
    """VisA from its split csv (default <root>/split_csv/1cls.csv), columns
    object, split, label ("normal"/"anomaly"), image, mask (paths relative
    to root; mask empty for normal images). Masks are anomalous where > 0.

    categories: objects to use (default: every object in the csv);
    class_names: the full id order when it must match a trained model's
    (default: sorted categories). split_csv: another csv in the same format
    (as given, else relative to root). Anomalous samples have defect
    "anomaly", normal ones "good".
    """

    name = "VisA"
    COLUMNS = ("object", "split", "label", "image", "mask")

    def __init__(self, root, categories=None, split="train", image_size=256, class_names=None,
                 split_csv=None):
        self._check_split(split)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"VisA: no dataset folder at {root}")
        csv_path = self._csv_path(root, split_csv)
        rows = self._read_csv(csv_path)
        found = sorted({r["object"] for _, r in rows})
        self.root, self.split, self.image_size = root, split, int(image_size)
        self.split_csv = csv_path
        self._select(categories, found, f"in {csv_path}",
                     f"VisA: no categories (objects) in {csv_path}", class_names)
        wanted = set(self.categories)
        by_cat = {c: [] for c in self.categories}
        for line, r in rows:
            if r["object"] in wanted and r["split"] == split:
                by_cat[r["object"]].append(self._sample(csv_path, line, r))
        samples = [s for c in self.categories for s in by_cat[c]]
        self._finish(samples, f"VisA: no {split} rows in {csv_path} for {self.categories}")

    @staticmethod
    def _csv_path(root, split_csv):
        if split_csv is None:
            path = os.path.join(root, "split_csv", "1cls.csv")
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"VisA: no split csv at {path}; VisA ships split_csv/1cls.csv next to the "
                    "category folders (pass split_csv= for another one)")
            return path
        for path in (split_csv, os.path.join(root, split_csv)):
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"VisA: split csv {split_csv} not found (nor under {root})")

    def _read_csv(self, path):
        """[(line number, row dict with stripped values)]."""
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            missing = [c for c in self.COLUMNS if c not in header]
            if missing:
                raise ValueError(f"VisA: {path} lacks the columns {missing} "
                                 f"(header: {reader.fieldnames}; expected {list(self.COLUMNS)})")
            reader.fieldnames = header
            rows = []
            for r in reader:
                r = {k: (v or "").strip() for k, v in r.items() if k is not None}
                if not any(r.values()):
                    continue                       # blank line
                rows.append((reader.line_num, r))
        return rows

    def _sample(self, csv_path, line, r):
        where = f"{csv_path} line {line}"
        label = r["label"].lower()
        if label not in ("normal", "anomaly"):
            raise ValueError(f"VisA: {where}: label must be 'normal' or 'anomaly', got {r['label']!r}")
        if not r["image"]:
            raise ValueError(f"VisA: {where}: empty image path")
        image = os.path.join(self.root, r["image"])
        if not os.path.isfile(image):
            raise FileNotFoundError(f"VisA: image {image} listed in {where} does not exist")
        mask = None
        if label == "anomaly":
            if not r["mask"]:
                raise ValueError(f"VisA: {where}: anomalous image {image} has no mask path")
            mask = os.path.join(self.root, r["mask"])
            if not os.path.isfile(mask):
                raise FileNotFoundError(f"VisA: mask {mask} listed in {where} does not exist")
        cat = r["object"]
        return Sample(image, cat, self.class_names.index(cat),
                      "anomaly" if mask else "good", mask)


class Folder(ImageDataset):
    """One class from plain folders: normal_dir (label 0) and, optionally,
    abnormal_dir (label 1, defect "anomaly") with masks in mask_dir paired
    by stem (`<stem>_mask.png` or `<stem>.png`). Non-image files are
    skipped; folders are not searched recursively.

    split: "train" (normal images only) or "test"; default "test" when
    abnormal_dir is given, else "train". Without mask_dir the abnormal
    images have no pixel ground truth: has_masks is False and masks()
    raises. class_names: the full id order when it must match a trained
    model's (default: [category]).
    """

    name = "Folder"

    def __init__(self, normal_dir, abnormal_dir=None, mask_dir=None, image_size=256,
                 category="folder", split=None, class_names=None):
        if split is None:
            split = "test" if abnormal_dir is not None else "train"
        self._check_split(split)
        if split == "train" and abnormal_dir is not None:
            raise ValueError("Folder: a train split holds normal images only; drop abnormal_dir "
                             "or use split='test'")
        if mask_dir is not None and abnormal_dir is None:
            raise ValueError("Folder: mask_dir is given without abnormal_dir (masks belong to "
                             "the abnormal images)")
        for what, d in (("normal_dir", normal_dir), ("abnormal_dir", abnormal_dir),
                        ("mask_dir", mask_dir)):
            if d is not None and not os.path.isdir(d):
                raise FileNotFoundError(f"Folder: {what} {d} is not a folder")
        if mask_dir is not None and os.path.samefile(mask_dir, abnormal_dir):
            raise ValueError("Folder: mask_dir must not be abnormal_dir (the masks would be "
                             "read as abnormal images)")
        if not isinstance(category, str) or not category or "," in category:
            raise ValueError(f"Folder: category must be a non-empty name without commas, "
                             f"got {category!r}")
        self.root, self.split, self.image_size = normal_dir, split, int(image_size)
        self.normal_dir, self.abnormal_dir, self.mask_dir = normal_dir, abnormal_dir, mask_dir
        self._select([category], [category], "", "", class_names)
        cid = self.class_names.index(category)
        samples = [Sample(p, category, cid, "good", None) for p in _images_in(normal_dir)]
        if abnormal_dir is not None:
            index = _MaskIndex(mask_dir) if mask_dir is not None else None
            for p in _images_in(abnormal_dir):
                mask = None
                if index is not None:
                    mask = index.find(p)
                    if mask is None:
                        raise ValueError(f"Folder: no mask for the abnormal image {p} (expected "
                                         f"{os.path.join(mask_dir, _stem(p) + '.png')} or "
                                         f"{_stem(p) + '_mask.png'})")
                samples.append(Sample(p, category, cid, "anomaly", mask))
        dirs = normal_dir if abnormal_dir is None else f"{normal_dir} or {abnormal_dir}"
        self._finish(samples, f"Folder: no images ({', '.join(IMAGE_EXTS)}) in {dirs}")

    def _no_masks_message(self):
        n = int(self.labels.sum())
        return (f"Folder: the {n} abnormal images in {self.abnormal_dir} have no ground-truth "
                "masks (no mask_dir given), so there are no pixel labels; pass mask_dir= for "
                "pixel metrics, or check ds.has_masks and use image-level metrics only")

    def __repr__(self):
        return (f"Folder({self.normal_dir!r}, abnormal_dir={self.abnormal_dir!r}, "
                f"mask_dir={self.mask_dir!r}, split={self.split!r}, {len(self)} images "
                f"({int(self.labels.sum())} abnormal), category={self.categories[0]!r})")
