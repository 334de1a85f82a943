"""The whole pipeline and the CLI on a tiny dataset: fit / evaluate / save /
load round trip, train -> eval -> predict from the command line, errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import timenet
from timenet.cli import main
from timenet.data import MVTecAD
from timenet.pipeline import TimeNet

FAST = dict(preset="tiny", flow_steps=8, reflow_steps=2, reflow_pairs=4, tpn_steps=2,
            batch_size=4, perceptual="ssim")


def make_dataset(root, size=32, n_train=6, classes=("cat_a", "cat_b")):
    rng = np.random.default_rng(0)
    for k, cat in enumerate(classes):
        base = np.zeros((size, size, 3), np.uint8) + np.array([60 + 120 * k, 90, 200 - 120 * k],
                                                               np.uint8)
        def noisy():
            return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
        for i in range(n_train):
            p = f"{root}/{cat}/train/good/{i:03d}.png"
            os.makedirs(os.path.dirname(p), exist_ok=True)
            Image.fromarray(noisy()).save(p)
        for i in range(2):
            p = f"{root}/{cat}/test/good/{i:03d}.png"
            os.makedirs(os.path.dirname(p), exist_ok=True)
            Image.fromarray(noisy()).save(p)
        for i in range(2):
            img, mask = noisy(), np.zeros((size, size), np.uint8)
            y, x = 4 + 8 * i, 6 + 5 * i
            img[y:y + 8, x:x + 8] = 255 - img[y:y + 8, x:x + 8]
            mask[y:y + 8, x:x + 8] = 255
            for sub, arr, name in (("test/spot", img, f"{i:03d}.png"),
                                   ("ground_truth/spot", mask, f"{i:03d}_mask.png")):
                p = f"{root}/{cat}/{sub}/{name}"
                os.makedirs(os.path.dirname(p), exist_ok=True)
                Image.fromarray(arr).save(p)
    return str(root)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    timenet.set_num_threads(1)   # bit-reproducible reductions for the round trips
    root = make_dataset(tmp_path_factory.mktemp("data"))
    run = str(tmp_path_factory.mktemp("run"))
    tn = TimeNet(**FAST).fit(MVTecAD(root, split="train", image_size=32), out_dir=run,
                             progress=False)
    yield root, run, tn
    timenet.set_num_threads(timenet._default_threads())


def test_fit_evaluate_save_load_round_trip(fitted):
    root, run, tn = fitted
    assert tn.class_names == ["cat_a", "cat_b"]
    test = MVTecAD(root, split="test", image_size=32, class_names=tn.class_names)
    res = tn.evaluate(test)
    assert set(res["classes"]) == {"cat_a", "cat_b"}
    for vals in list(res["classes"].values()) + [res["mean"]]:
        for k in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max"):
            assert 0.0 <= vals[k] <= 1.0
    again = TimeNet.load(run)
    assert again.class_names == tn.class_names
    assert again.config.to_dict() == tn.config.to_dict()
    x = test.images()[:3]
    a, b = tn.predict(x, "cat_a"), again.predict(x, "cat_a")
    for k in ("reconstruction", "map", "score", "T"):
        np.testing.assert_array_equal(a[k], b[k])


def test_predict_is_reproducible_and_checks_input(fitted):
    _, _, tn = fitted
    x = np.zeros((2, 3, 32, 32), np.float32)
    p1, p2 = tn.predict(x, ["cat_a", "cat_b"]), tn.predict(x, [0, 1], batch_size=1)
    np.testing.assert_allclose(p1["map"], p2["map"], rtol=1e-5, atol=1e-6)
    assert p1["map"].shape == (2, 32, 32) and p1["score"].shape == (2,)
    assert p1["T"].shape == (2, 1, 32, 32) and (p1["T"] > 0).all() and (p1["T"] < 1).all()
    with pytest.raises(ValueError, match="unknown class"):
        tn.predict(x, "zebra")
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        tn.predict(np.zeros((2, 3, 16, 16)), "cat_a")
    with pytest.raises(ValueError, match="classes are needed"):
        tn.predict(x)


def test_fit_resume_is_a_no_op_when_done(fitted):
    root, run, tn = fitted
    again = TimeNet(**FAST).fit(MVTecAD(root, split="train", image_size=32), out_dir=run,
                                resume=True, progress=False)
    for (n, p), (_, q) in zip(tn.model.named_parameters(), again.model.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_cli_train_eval_predict(tmp_path, capsys):
    root = make_dataset(tmp_path / "data")
    run = str(tmp_path / "run")
    args = ["--preset", "tiny", "--flow-steps", "6", "--reflow-steps", "2", "--reflow-pairs",
            "2", "--tpn-steps", "2", "--batch-size", "4", "--threads", "1"]
    assert main(["train", "--data", root, "--out", run] + args) == 0
    assert os.path.exists(os.path.join(run, "timenet.json"))
    out = str(tmp_path / "results")
    assert main(["eval", "--run", run, "--data", root, "--out", out, "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "I-AUROC" in table and "cat_b" in table and "mean" in table
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert set(m) >= {"classes", "mean"} and set(m["classes"]) == {"cat_a", "cat_b"}
    assert set(m["mean"]) == {"image_auroc", "pixel_auroc", "aupro", "image_f1_max",
                              "pixel_f1_max"}
    assert open(os.path.join(out, "metrics.csv")).readline().startswith("class,image_auroc")
    assert os.path.exists(os.path.join(out, "report.html"))
    assert os.path.exists(os.path.join(out, "panels", "cat_a.png"))
    img = f"{root}/cat_b/test/spot/000.png"
    pred = str(tmp_path / "pred")
    assert main(["predict", "--run", run, img, "--category", "cat_b", "--out", pred]) == 0
    line = json.loads(open(os.path.join(pred, "scores.jsonl")).readline())
    assert line["category"] == "cat_b" and np.isfinite(line["score"])
    panel = Image.open(os.path.join(pred, "000.png"))
    assert panel.width > 3 * 32          # input | reconstruction | overlay | contour


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "/no/such/dir", "--out", "x"], "does not exist"),
    (["eval", "--run", "/no/such/run", "--data", "/tmp"], "cannot load the run"),
    (["predict", "--run", "/no/such/run", "a.png", "--out", "x"], "cannot load the run"),
])
def test_cli_errors_are_one_sentence_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("device, needle", [
    ("gpu", "unknown device"),
    pytest.param("cuda", "CUDA is not available", marks=pytest.mark.skipif(
        timenet.cuda.is_available(), reason="a GPU is present")),
])
def test_cli_bad_device_is_a_clear_error(device, needle, capsys):
    assert main(["eval", "--run", "/no/such/run", "--data", "/tmp", "--device", device]) == 2
    err = capsys.readouterr().err
    assert needle in err and f"--device {device}" in err and "Traceback" not in err


def test_cli_autocast_on_the_cpu_is_a_clear_error(tmp_path, capsys):
    root = make_dataset(tmp_path / "data")
    assert main(["train", "--data", root, "--out", str(tmp_path / "r"), "--device", "cpu",
                 "--autocast"]) == 2
    err = capsys.readouterr().err
    assert "--autocast needs a GPU" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="autocast=True needs a GPU"):
        TimeNet(autocast=True, **FAST).fit(MVTecAD(root, split="train", image_size=32))


def test_cli_rejects_a_run_from_another_version(tmp_path, capsys):
    (tmp_path / "timenet.json").write_text(json.dumps({"format": "something-else"}))
    assert main(["eval", "--run", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "not a timenet run" in capsys.readouterr().err


def test_cli_empty_class_is_a_clear_error(tmp_path, capsys):
    os.makedirs(tmp_path / "empty" / "train" / "good")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no train images" in capsys.readouterr().err


def test_use_extractor_re_estimates_ratios(fitted):
    from timenet.models import backbones
    root, _, tn = fitted
    train = MVTecAD(root, split="train", image_size=32)
    ext = backbones.create("resnet18")          # random weights: the shape is what matters
    tn.use_extractor(ext, ("layer1", "layer2"), train_data=train)
    try:
        assert set(tn.ratios.layers) == {"layer1", "layer2"} and tn.ratios.pixel > 0
        out = tn.predict(np.zeros((1, 3, 32, 32), np.float32), "cat_a")
        assert np.isfinite(out["map"]).all()
    finally:
        tn.use_extractor("pixel", train_data=train)
    assert tn.ratios.layers == {}


def test_evaluate_a_folder_without_masks(fitted, tmp_path):
    from timenet.cli import write_eval
    from timenet.data import Folder
    root, _, tn = fitted
    ds = Folder(f"{root}/cat_a/test/good", abnormal_dir=f"{root}/cat_a/test/spot",
                image_size=32, category="cat_a", class_names=tn.class_names)
    res = write_eval(tn, ds, str(tmp_path), pictures=2)
    r = res["classes"]["cat_a"]
    assert r["image_auroc"] is not None and r["pixel_auroc"] is None and r["aupro"] is None
    assert os.path.exists(tmp_path / "panels" / "cat_a.png")
    assert os.path.exists(tmp_path / "report.html")
