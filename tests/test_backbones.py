"""Backbones against a float64 numpy reference with unfolded BatchNorm."""
import warnings

import numpy as np
import pytest

from timenet.models import backbones as B


def _conv(x, w, b=None, stride=1, pad=0):
    """float64 reference convolution, x (N, C, H, W), w (K, C, R, S)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    K, C, R, S = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (R, S), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.einsum("ncpqrs,kcrs->nkpq", win, w, optimize=True)
    return y if b is None else y + b[None, :, None, None]


def _bn(x, sd, p, eps=1e-5):
    g, beta = sd[p + ".weight"], sd[p + ".bias"]
    m, v = sd[p + ".running_mean"], sd[p + ".running_var"]
    r = lambda a: a[None, :, None, None]  # noqa: E731
    return (x - r(m)) / np.sqrt(r(v) + eps) * r(g) + r(beta)


def _maxpool(x, k, s, p):
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return win.max(axis=(-1, -2))


def _relu(x):
    return np.maximum(x, 0)


def ref_resnet18(sd, x):
    """torchvision resnet18, eval mode, float64; returns stem..layer4."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    mean, std = np.array(B.IMAGENET_MEAN), np.array(B.IMAGENET_STD)
    x = ((x.astype(np.float64) + 1) / 2 - mean[None, :, None, None]) / std[None, :, None, None]
    out = {}
    x = _relu(_bn(_conv(x, sd["conv1.weight"], stride=2, pad=3), sd, "bn1"))
    out["stem"] = x
    x = _maxpool(x, 3, 2, 1)
    for li in range(1, 5):
        for bi in range(2):
            p = f"layer{li}.{bi}"
            stride = 2 if (li > 1 and bi == 0) else 1
            y = _relu(_bn(_conv(x, sd[p + ".conv1.weight"], stride=stride, pad=1), sd, p + ".bn1"))
            y = _bn(_conv(y, sd[p + ".conv2.weight"], pad=1), sd, p + ".bn2")
            if p + ".downsample.0.weight" in sd:
                x = _bn(_conv(x, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1")
            x = _relu(y + x)
        out[f"layer{li}"] = x
    return out


def _nontrivial_bn(sd, seed=1):
    """BatchNorm with statistics far from identity (what pretrained nets have)."""
    rng = np.random.default_rng(seed)
    sd = dict(sd)
    for k, v in sd.items():
        if k.endswith("running_mean"):
            sd[k] = rng.normal(0, 0.3, v.shape).astype(np.float32)
        elif k.endswith("running_var"):
            sd[k] = rng.uniform(0.3, 2.0, v.shape).astype(np.float32)
        elif k.endswith("bias") and "bn" in k or k.endswith("downsample.1.bias"):
            sd[k] = rng.normal(0, 0.2, v.shape).astype(np.float32)
        elif (k.endswith("weight") and v.ndim == 1):
            sd[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    return sd


def _close(got, ref, tol=2e-4):
    err = np.abs(got - ref).max() / (np.abs(ref).max() + 1e-30)
    assert err < tol, err


def test_resnet18_matches_float64_reference():
    sd = _nontrivial_bn(B.random_state_dict("resnet18", seed=3))
    net = B.create("resnet18", weights=sd)
    assert net.pretrained
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    layers = ("stem", "layer1", "layer2", "layer3", "layer4")
    got = net.features(x, layers=layers, batch_size=2)  # 2 chunks
    ref = ref_resnet18(sd, x)
    shapes = {"stem": (3, 64, 16, 16), "layer1": (3, 64, 8, 8), "layer2": (3, 128, 4, 4),
              "layer3": (3, 256, 2, 2), "layer4": (3, 512, 1, 1)}
    for layer in layers:
        assert got[layer].shape == shapes[layer] and got[layer].dtype == np.float32
        _close(got[layer], ref[layer])
    # stopping early gives the same values
    only = net.features(x, layers=("layer1",))
    assert list(only) == ["layer1"]
    # (not bit-equal: the conv engine may block its GEMMs by batch size)
    np.testing.assert_allclose(only["layer1"], got["layer1"], rtol=1e-5,
                               atol=1e-6 * np.abs(got["layer1"]).max())


def test_bottleneck_block_folding_equals_conv_bn():
    """One bottleneck block (with strided downsample), folded vs unfolded."""
    sd = _nontrivial_bn(B.random_state_dict("resnet50", seed=5))
    net = B.Backbone("resnet50", sd, "test")
    blk = dict(net._stages)["layer2"][0]
    x = np.abs(np.random.default_rng(2).standard_normal((2, 256, 8, 8)))
    p = "layer2.0"
    sd64 = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    y = _relu(_bn(_conv(x, sd64[p + ".conv1.weight"]), sd64, p + ".bn1"))
    y = _relu(_bn(_conv(y, sd64[p + ".conv2.weight"], stride=2, pad=1), sd64, p + ".bn2"))
    assert y.shape == (2, 128, 4, 4)
    y = _bn(_conv(y, sd64[p + ".conv3.weight"]), sd64, p + ".bn3")
    idn = _bn(_conv(x, sd64[p + ".downsample.0.weight"], stride=2), sd64, p + ".downsample.1")
    ref = _relu(y + idn)
    x32 = x.astype(np.float32)
    g = net._conv(blk["conv1"], x32, True)
    g = net._conv(blk["conv2"], g, True)
    g = net._conv(blk["conv3"], g, False) + net._conv(blk["downsample"], x32, False)
    assert blk["conv2"].w.shape == (128, 128, 3, 3)
    # the wide variants double the bottleneck width only
    assert B.expected_shapes("wide_resnet50_2")["layer2.0.conv2.weight"] == (256, 256, 3, 3)
    assert B.expected_shapes("wide_resnet50_2")["layer2.0.conv3.weight"] == (512, 256, 1, 1)
    _close(np.maximum(g, 0), ref)


@pytest.mark.parametrize("arch,shapes", [
    ("resnet34", {"layer1": (1, 64, 8, 8), "layer3": (1, 256, 2, 2)}),
    ("resnet50", {"stem": (1, 64, 16, 16), "layer1": (1, 256, 8, 8), "layer2": (1, 512, 4, 4),
                  "layer3": (1, 1024, 2, 2), "layer4": (1, 2048, 1, 1)}),
])
def test_bigger_resnets_shapes(arch, shapes):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        net = B.create(arch)
    assert not net.pretrained and "RANDOM" in repr(net)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    got = net.features(x, layers=tuple(shapes))
    for k, s in shapes.items():
        assert got[k].shape == s and np.all(np.isfinite(got[k]))


# torchvision's parameter counts (fc / classifier included, BN buffers not)
@pytest.mark.parametrize("arch,count", [
    ("resnet18", 11689512), ("resnet34", 21797672), ("resnet50", 25557032),
    ("wide_resnet50_2", 68883240), ("wide_resnet101_2", 126886696), ("vgg16", 138357544)])
def test_topology_matches_torchvision(arch, count):
    shapes = B.expected_shapes(arch)
    n = sum(int(np.prod(s)) for k, s in shapes.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n == count


def test_wide_resnet101_2_flops_and_keys():
    shapes = B.expected_shapes("wide_resnet101_2")
    assert shapes["layer3.22.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert "layer3.23.conv1.weight" not in shapes


def ref_vgg16(sd, x, upto):
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    mean, std = np.array(B.IMAGENET_MEAN), np.array(B.IMAGENET_STD)
    x = ((x.astype(np.float64) + 1) / 2 - mean[None, :, None, None]) / std[None, :, None, None]
    out, idx = {}, 0
    for v in B._VGG16_CFG:
        if v == "M":
            x = _maxpool(x, 2, 2, 0)
            out[idx] = x
            idx += 1
        else:
            x = _conv(x, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"], pad=1)
            out[idx] = x
            x = _relu(x)
            out[idx + 1] = x
            idx += 2
        if idx > upto:
            break
    return out


def test_vgg16_matches_reference_and_names():
    rng = np.random.default_rng(4)
    sd = B.random_state_dict("vgg16", seed=1)
    sd = {k: (rng.normal(0, 0.1, v.shape).astype(np.float32) if k.endswith("bias") else v)
          for k, v in sd.items()}
    sd["classifier.6.bias"] = np.zeros(1000, np.float32)  # ignored, allowed
    net = B.create("vgg16", weights=sd)
    x = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    got = net.features(x, layers=("relu1_2", "relu2_2", "relu3_3", 14, "features.9", "conv3_3"))
    ref = ref_vgg16(sd, x, 15)
    _close(got["relu1_2"], ref[3])
    _close(got["relu2_2"], ref[8])
    _close(got["relu3_3"], ref[15])
    _close(got["conv3_3"], ref[14])
    _close(got[14], ref[14])
    assert np.any(got[14] < 0)  # the conv output, before the in-place relu
    _close(got["features.9"], ref[9])
    assert got["relu3_3"].shape == (2, 256, 4, 4)


def test_lpips_normalisation():
    sd = B.random_state_dict("vgg16")
    a = B.create("vgg16", weights=sd, normalize="lpips")
    b = B.create("vgg16", weights=sd, normalize=None)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    xs = (x - np.array(B.LPIPS_SHIFT, np.float32)[None, :, None, None]) / \
        np.array(B.LPIPS_SCALE, np.float32)[None, :, None, None]
    np.testing.assert_allclose(a.features(x, ["conv1_1"])["conv1_1"],
                               b.features(xs, ["conv1_1"])["conv1_1"], rtol=1e-5, atol=1e-5)


def test_bad_weights_and_inputs(tmp_path):
    sd = B.random_state_dict("resnet18")
    bad = dict(sd)
    del bad["layer2.0.bn1.running_var"]
    with pytest.raises(B.BackboneWeightsError, match="missing key 'layer2.0.bn1.running_var'"):
        B.create("resnet18", weights=bad)
    bad = dict(sd, **{"layer9.0.conv1.weight": np.zeros(3)})
    with pytest.raises(B.BackboneWeightsError, match="unexpected key 'layer9.0.conv1.weight'"):
        B.create("resnet18", weights=bad)
    bad = dict(sd, **{"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1), np.float32)})
    with pytest.raises(B.BackboneWeightsError,
                       match=r"'layer1.0.conv2.weight' has shape \(64, 64, 1, 1\), expected \(64, 64, 3, 3\)"):
        B.create("resnet18", weights=bad)
    with pytest.raises(B.BackboneWeightsError, match="missing key"):
        B.create("resnet50", weights=sd)  # another architecture's checkpoint
    # DataParallel's "module." prefix and torchvision's fc are accepted
    net = B.create("resnet18", weights={"module." + k: v for k, v in
                                        dict(sd, **{"fc.weight": np.zeros((1000, 512)),
                                                    "fc.bias": np.zeros(1000)}).items()})
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\)"):
        net.features(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        net.features(np.full((1, 3, 32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="no layer 'layer7'"):
        net.features(np.zeros((1, 3, 32, 32), np.float32), layers=("layer7",))
    with pytest.raises(ValueError, match="unknown backbone"):
        B.create("resnet1000")


def test_weights_auto_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMENET_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth.*TIMENET_WEIGHTS"):
        B.create("resnet18", weights="auto")
    sd = B.random_state_dict("resnet18", seed=7)
    from test_io import write_torch_zip
    write_torch_zip(tmp_path / "resnet18-f37072fd.pth", sd)
    assert B.find_weights("resnet18") == str(tmp_path / "resnet18-f37072fd.pth")
    net = B.create("resnet18", weights="auto")
    ref = B.create("resnet18", weights=sd)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(net.features(x)["layer3"], ref.features(x)["layer3"], rtol=1e-6,
                               atol=1e-6)
    assert "resnet18-f37072fd.pth" in repr(net)
