"""Dataset loaders (MVTecAD, VisA, Folder) on small trees the tests make."""
import os

import numpy as np
import pytest
from PIL import Image

from timenet.data import Folder, MVTecAD, VisA, demo, load_mask


def _img(path, mode="RGB", size=(20, 16)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(len(path)).integers(0, 255, size[::-1] + ((len(mode),) if mode != "L" else ()),
                                                    dtype=np.uint8)
    Image.fromarray(arr.squeeze(), mode=mode).save(path)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def make_tree(root, mask_stem="_mask"):
    for cat in ("b_cat", "a_cat"):
        _img(f"{root}/{cat}/train/good/000.png")
        _img(f"{root}/{cat}/train/good/001.png", mode="L")      # grey -> RGB
        _img(f"{root}/{cat}/train/good/002.png", mode="RGBA")   # alpha dropped
        _write(f"{root}/{cat}/train/good/notes.txt", "not an image")
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


# ---------------------------------------------------------------- VisA

def _mask(path, values, size=(20, 16)):
    """A mask with one region per value (VisA stores region ids 1, 2, ...)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    m = np.zeros(size[::-1], np.uint8)
    for k, v in enumerate(values):
        m[2 + 5 * k:5 + 5 * k, 3:7] = v
    Image.fromarray(m).save(path)


def make_visa(root, extra_rows=()):
    rows = ["object,split,label,image,mask"]
    for cat in ("pcb1", "candle"):
        for i in range(2):
            p = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            _img(f"{root}/{p}")
            rows.append(f"{cat},train,normal,{p},")
        p = f"{cat}/Data/Images/Normal/0100.JPG"
        _img(f"{root}/{p}", mode="L")
        rows.append(f"{cat},test,normal,{p},")
        for i, vals in enumerate([(1,), (1, 2)]):
            p = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            mp = f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            _img(f"{root}/{p}")
            _mask(f"{root}/{mp}", vals)
            rows.append(f"{cat},test,anomaly,{p},{mp}")
    rows += list(extra_rows)
    os.makedirs(f"{root}/split_csv", exist_ok=True)
    with open(f"{root}/split_csv/1cls.csv", "w") as f:
        f.write("\n".join(rows) + "\n")


def test_visa_train_and_test(tmp_path):
    make_visa(tmp_path)
    tr = VisA(str(tmp_path), split="train", image_size=8)
    assert tr.class_names == ["candle", "pcb1"] and tr.categories == ["candle", "pcb1"]
    assert len(tr) == 4 and list(tr.labels) == [0, 0, 0, 0]
    assert list(tr.class_ids) == [0, 0, 1, 1]
    assert tr.images().shape == (4, 3, 8, 8) and tr.has_masks
    assert not tr.masks().any()
    assert sorted(np.concatenate([c for _, c in tr.batches(3, np.random.default_rng(0))])) == [0, 0, 1, 1]

    te = VisA(str(tmp_path), categories="pcb1", split="test", image_size=20,
              class_names=["candle", "pcb1"])
    assert list(te.labels) == [0, 1, 1] and list(te.class_ids) == [1, 1, 1]
    assert [s.defect for s in te.samples] == ["good", "anomaly", "anomaly"]
    assert te.samples[0].mask_path is None and te.samples[1].category == "pcb1"
    m = te.masks()
    assert m.shape == (3, 20, 20) and m.dtype == bool
    assert not m[0].any()
    # region ids 1 and 2 are both anomalous (> 0), not only 255
    assert m[1].sum() < m[2].sum()
    native = VisA(str(tmp_path), categories=["pcb1"], split="test", image_size=16).masks()
    assert native[1].sum() == 3 * 4 and native[2].sum() == 2 * 3 * 4
    assert "VisA(" in repr(te) and "3 images" in repr(te)


def test_visa_split_csv_argument(tmp_path):
    make_visa(tmp_path)
    os.rename(f"{tmp_path}/split_csv/1cls.csv", f"{tmp_path}/split_csv/mine.csv")
    with pytest.raises(FileNotFoundError, match="1cls.csv"):
        VisA(str(tmp_path))
    assert len(VisA(str(tmp_path), split_csv="split_csv/mine.csv", image_size=8)) == 4
    assert len(VisA(str(tmp_path), split_csv=f"{tmp_path}/split_csv/mine.csv", image_size=8)) == 4
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        VisA(str(tmp_path), split_csv="nope.csv")


def test_visa_missing_files_are_named(tmp_path):
    make_visa(tmp_path)
    os.remove(f"{tmp_path}/candle/Data/Masks/Anomaly/001.png")
    VisA(str(tmp_path), split="train", image_size=8)               # train rows unaffected
    VisA(str(tmp_path), categories="pcb1", split="test", image_size=8)
    with pytest.raises(FileNotFoundError, match="candle/Data/Masks/Anomaly/001.png"):
        VisA(str(tmp_path), split="test", image_size=8)
    os.remove(f"{tmp_path}/pcb1/Data/Images/Normal/0001.JPG")
    with pytest.raises(FileNotFoundError, match="pcb1/Data/Images/Normal/0001.JPG"):
        VisA(str(tmp_path), split="train", image_size=8)


def test_visa_bad_rows_and_arguments(tmp_path):
    make_visa(tmp_path, extra_rows=["pcb1,test,anomaly,pcb1/Data/Images/Normal/0000.JPG,"])
    with pytest.raises(ValueError, match="no mask path"):
        VisA(str(tmp_path), split="test")
    make_visa(tmp_path, extra_rows=["pcb1,test,broken,pcb1/Data/Images/Normal/0000.JPG,"])
    with pytest.raises(ValueError, match="label must be"):
        VisA(str(tmp_path), split="test")
    make_visa(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        VisA(str(tmp_path), categories=["zzz"])
    with pytest.raises(ValueError, match="not among"):
        VisA(str(tmp_path), categories="pcb1", class_names=["candle"])
    with pytest.raises(ValueError, match="split"):
        VisA(str(tmp_path), split="val")
    with pytest.raises(FileNotFoundError):
        VisA(str(tmp_path / "nope"))
    with open(f"{tmp_path}/split_csv/1cls.csv", "w") as f:
        f.write("object,split,image\npcb1,train,x.JPG\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        VisA(str(tmp_path))


# -------------------------------------------------------------- Folder

def make_folder(root, mask_names=("a.png", "b_mask.png")):
    _img(f"{root}/good/n0.png")
    _img(f"{root}/good/n1.jpg", mode="L")
    _img(f"{root}/good/n2.png", mode="RGBA")
    _write(f"{root}/good/readme.txt", "not an image")
    os.makedirs(f"{root}/good/sub.png")                            # a folder, skipped
    _img(f"{root}/bad/a.png")
    _img(f"{root}/bad/b.jpg")
    _write(f"{root}/bad/.DS_Store", "x")
    for k, name in enumerate(mask_names):
        _mask(f"{root}/masks/{name}", [255] * (k + 1))


def test_folder_with_masks(tmp_path):
    make_folder(tmp_path)
    ds = Folder(f"{tmp_path}/good", f"{tmp_path}/bad", f"{tmp_path}/masks", image_size=8,
                category="screw")
    assert ds.split == "test" and ds.class_names == ["screw"] and ds.has_masks
    assert list(ds.labels) == [0, 0, 0, 1, 1] and list(ds.class_ids) == [0] * 5
    assert [s.defect for s in ds.samples] == ["good"] * 3 + ["anomaly"] * 2
    assert [os.path.basename(s.mask_path) for s in ds.samples[3:]] == ["a.png", "b_mask.png"]
    x = ds.images()
    assert x.shape == (5, 3, 8, 8) and x.dtype == np.float32 and -1 <= x.min() <= x.max() <= 1
    m = ds.masks()
    assert m.shape == (5, 8, 8) and not m[:3].any() and m[3].any() and m[4].sum() > m[3].sum()
    assert "2 abnormal" in repr(ds)
    # matches a multi-class model's ids
    ds2 = Folder(f"{tmp_path}/good", f"{tmp_path}/bad", f"{tmp_path}/masks", image_size=8,
                 category="screw", class_names=["bottle", "screw"])
    assert list(ds2.class_ids) == [1] * 5


def test_folder_train_and_without_masks(tmp_path):
    make_folder(tmp_path)
    tr = Folder(f"{tmp_path}/good", image_size=8)
    assert tr.split == "train" and len(tr) == 3 and tr.categories == ["folder"]
    assert tr.has_masks and not tr.masks().any()
    assert sum(len(xb) for xb, _ in tr.batches(2)) == 3
    te = Folder(f"{tmp_path}/good", f"{tmp_path}/bad", image_size=8)
    assert list(te.labels) == [0, 0, 0, 1, 1] and not te.has_masks
    assert te.images().shape == (5, 3, 8, 8)
    with pytest.raises(ValueError, match="mask_dir"):
        te.masks()


def test_folder_mismatched_stems_and_bad_arguments(tmp_path):
    make_folder(tmp_path, mask_names=("a.png", "c_mask.png"))
    with pytest.raises(ValueError, match=r"no mask for the abnormal image .*b\.jpg"):
        Folder(f"{tmp_path}/good", f"{tmp_path}/bad", f"{tmp_path}/masks")
    with pytest.raises(FileNotFoundError, match="normal_dir"):
        Folder(f"{tmp_path}/nope")
    with pytest.raises(FileNotFoundError, match="mask_dir"):
        Folder(f"{tmp_path}/good", f"{tmp_path}/bad", f"{tmp_path}/nope")
    with pytest.raises(ValueError, match="normal images only"):
        Folder(f"{tmp_path}/good", f"{tmp_path}/bad", split="train")
    with pytest.raises(ValueError, match="without abnormal_dir"):
        Folder(f"{tmp_path}/good", mask_dir=f"{tmp_path}/masks")
    with pytest.raises(ValueError, match="must not be abnormal_dir"):
        Folder(f"{tmp_path}/good", f"{tmp_path}/bad", f"{tmp_path}/bad")
    with pytest.raises(ValueError, match="not among"):
        Folder(f"{tmp_path}/good", category="screw", class_names=["bottle"])
    os.makedirs(f"{tmp_path}/empty")
    with pytest.raises(ValueError, match="no images"):
        Folder(f"{tmp_path}/empty")


def test_load_mask_modes(tmp_path):
    a = np.zeros((4, 4), np.uint8)
    a[1, 2] = 1
    Image.fromarray(a).save(tmp_path / "l.png")
    Image.fromarray(a.astype(np.uint16) * 300).save(tmp_path / "i16.png")
    p = Image.fromarray(a, mode="L").convert("P")
    p.putpalette([0, 0, 0, 0, 0, 1] + [0] * 762)                 # index 1 -> (0, 0, 1): luminance 0
    p.save(tmp_path / "p.png")
    for f in ("l.png", "i16.png", "p.png"):
        m = load_mask(str(tmp_path / f), 4)
        assert m.dtype == bool and m.sum() == 1 and m[1, 2], f
