"""Dataset loaders on small MVTec-layout trees the tests make."""
import os

import numpy as np
import pytest
from PIL import Image

from timenet.data import MVTecAD, demo


def _img(path, mode="RGB", size=(20, 16)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(len(path)).integers(0, 255, size[::-1] + ((len(mode),) if mode != "L" else ()),
                                                    dtype=np.uint8)
    Image.fromarray(arr.squeeze(), mode=mode).save(path)


def make_tree(root, mask_stem="_mask"):
    for cat in ("b_cat", "a_cat"):
        _img(f"{root}/{cat}/train/good/000.png")
        _img(f"{root}/{cat}/train/good/001.png", mode="L")      # grey -> RGB
        _img(f"{root}/{cat}/train/good/002.png", mode="RGBA")   # alpha dropped
        open(f"{root}/{cat}/train/good/notes.txt", "w").write("not an image")
        _img(f"{root}/{cat}/test/good/000.png")
        _img(f"{root}/{cat}/test/crack/000.png")
        m = np.zeros((16, 20), np.uint8)
        m[4:8, 5:9] = 255
        os.makedirs(f"{root}/{cat}/ground_truth/crack", exist_ok=True)
        Image.fromarray(m).save(f"{root}/{cat}/ground_truth/crack/000{mask_stem}.png")


def test_train_split_multiclass(tmp_path):
    make_tree(tmp_path)
    ds = MVTecAD(str(tmp_path), split="train", image_size=8)
    assert ds.class_names == ["a_cat", "b_cat"]
    assert len(ds) == 6                                  # the .txt is skipped
    x = ds.images()
    assert x.shape == (6, 3, 8, 8) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    assert list(ds.class_ids) == [0, 0, 0, 1, 1, 1]
    seen = np.concatenate([c for _, c in ds.batches(4, np.random.default_rng(0))])
    assert sorted(seen) == sorted(ds.class_ids)


def test_test_split_masks(tmp_path):
    make_tree(tmp_path)
    ds = MVTecAD(str(tmp_path), categories="b_cat", split="test", image_size=8,
                 class_names=["a_cat", "b_cat"])
    assert list(ds.labels) == [1, 0]                     # defects sorted: crack, good
    assert list(ds.class_ids) == [1, 1]
    m = ds.masks()
    assert m.shape == (2, 8, 8) and m[0].any() and not m[1].any()


def test_missing_mask_is_a_clear_error(tmp_path):
    make_tree(tmp_path, mask_stem="_other")
    with pytest.raises(ValueError, match="no ground-truth mask"):
        MVTecAD(str(tmp_path), split="test", image_size=8)


def test_bad_arguments(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        MVTecAD(str(tmp_path), categories=["zzz"])
    with pytest.raises(FileNotFoundError):
        MVTecAD(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="split"):
        MVTecAD(str(tmp_path), split="val")
    with pytest.raises(ValueError, match="not among"):
        MVTecAD(str(tmp_path), categories=["a_cat"], class_names=["b_cat"])


def test_unreadable_image(tmp_path):
    make_tree(tmp_path)
    with open(f"{tmp_path}/a_cat/train/good/003.png", "wb") as f:
        f.write(b"not a png")
    ds = MVTecAD(str(tmp_path), split="train", image_size=8)
    with pytest.raises(ValueError, match="cannot read image"):
        ds.images()


def test_demo_build_layout_and_determinism(tmp_path):
    pytest.importorskip("skimage")
    a = demo.build(str(tmp_path / "a"), image_size=32, n_train=3, n_test_good=2,
                   n_test_defect=1, classes=("brick", "sky"))
    b = demo.build(str(tmp_path / "b"), image_size=32, n_train=3, n_test_good=2,
                   n_test_defect=1, classes=("brick", "sky"))
    tr = MVTecAD(a, split="train", image_size=32)
    te = MVTecAD(a, split="test", image_size=32)
    assert len(tr) == 6 and len(te) == 2 * (2 + len(demo.DEFECTS))
    assert te.masks()[te.labels == 1].reshape(int(te.labels.sum()), -1).any(axis=1).all()
    np.testing.assert_array_equal(te.images(), MVTecAD(b, split="test", image_size=32).images())
