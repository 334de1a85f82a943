"""The class-conditional U-Net: structure, parameter counts, shapes,
injection points, and a finite-difference check of the whole network."""
import numpy as np
import pytest

import timenet
from timenet.autograd import Tensor
from timenet.models import UNet, UNetConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than OpenMP fork/join on a busy box."""
    prev = timenet.get_num_threads()
    timenet.set_num_threads(1)
    yield
    timenet.set_num_threads(prev)


def test_paper_preset_has_29_8M_parameters():
    # The paper (and DESIGN.md) measure 29.8 M for the DDPM U-Net, 64 ch,
    # mult (1,1,2,2,4,4), 2 blocks, attention at 16 and 8, 15 MVTec classes.
    n = UNet.from_preset("paper", num_classes=15).num_parameters()
    assert abs(n - 29.8e6) <= 0.01 * 29.8e6, n
    assert n == 29_769_475
    assert n - UNet.from_preset("paper").num_parameters() == 15 * 256  # class table


@pytest.mark.parametrize("name,want", [("small", 2_247_683), ("tiny", 281_715)])
def test_small_presets_parameter_counts(name, want):
    m = UNet.from_preset(name, num_classes=15)
    assert m.num_parameters() == want
    assert m.preset == name


def test_parameter_names_follow_the_ddpm_reference():
    names = list(UNet.from_preset("tiny", num_classes=2).state_dict())
    for n in ["temb.dense.0.weight", "temb.dense.1.bias", "class_emb.weight", "conv_in.weight",
              "down.0.block.0.norm1.weight", "down.0.block.0.conv1.weight",
              "down.0.block.0.temb_proj.weight", "down.0.block.0.conv2.bias",
              "down.1.block.0.nin_shortcut.weight", "down.0.downsample.conv.weight",
              "down.2.attn.0.norm.weight", "down.2.attn.0.attn.qkv.weight",
              "mid.block_1.conv1.weight", "mid.attn_1.attn.proj.weight", "mid.block_2.norm2.bias",
              "up.2.block.1.nin_shortcut.weight", "up.1.upsample.conv.weight",
              "up.2.attn.1.attn.qkv.bias", "norm_out.weight", "conv_out.bias"]:
        assert n in names, n
    assert not any(n.startswith("down.2.downsample") or n.startswith("up.0.upsample")
                   for n in names)


def test_config_validation():
    with pytest.raises(ValueError, match="dropout must be 0"):
        UNetConfig(dropout=0.1)
    with pytest.raises(ValueError, match="divisible by 2"):
        UNetConfig(image_size=20, channel_mult=(1, 2, 2, 2), norm_groups=8, base_channels=16)
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(base_channels=24, norm_groups=32)
    with pytest.raises(ValueError, match="unknown preset"):
        UNet.from_preset("huge")
    cfg = UNet.from_preset("small", 3).config
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


@pytest.fixture(scope="module")
def tiny():
    timenet.manual_seed(1)
    return UNet.from_preset("tiny", num_classes=3, image_size=16)


def test_tiny_forward_shapes_and_features(tiny):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    v = tiny(x, np.array([0.1, 0.9]), np.array([0, 2]))
    assert v.shape == (2, 3, 16, 16) and v.dtype == np.float32
    assert np.all(np.isfinite(v.data))
    v2, feats = tiny(x, np.array([0.1, 0.9]), np.array([0, 2]), return_features=True)
    np.testing.assert_array_equal(v.data, v2.data)
    assert {k: f.shape for k, f in feats.items()} == {
        16: (2, 16, 16, 16), 8: (2, 32, 8, 8), 4: (2, 32, 4, 4), "mid": (2, 32, 4, 4)}
    assert {k: (2,) + s for k, s in tiny.feature_shapes().items()} == \
        {k: f.shape for k, f in feats.items()}
    # scalar t and c broadcast over the batch
    a = tiny(x, 0.5, 1).data
    b = tiny(x, np.array([0.5, 0.5]), np.array([1, 1])).data
    np.testing.assert_array_equal(a, b)
    # the class and the time both change the output
    assert np.abs(tiny(x, 0.5, 0).data - a).max() > 1e-4
    assert np.abs(tiny(x, 0.2, 1).data - a).max() > 1e-4


def test_injection_points(tiny):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    base = tiny(x, 0.5, [0, 1]).data
    shapes = tiny.injection_shapes()
    assert list(shapes)[:3] == ["conv_in", "down.0.0", "down.0.downsample"]
    assert shapes["mid"] == (32, 4, 4) and shapes["up.0.1"] == (16, 16, 16)
    zero = {k: np.zeros((2,) + s, np.float32) for k, s in shapes.items()}
    np.testing.assert_array_equal(tiny(x, 0.5, [0, 1], inject=zero).data, base)
    # an injection at the encoder's 8x8 output (by resolution or by name) shows
    # in the returned features and changes v; the two spellings agree
    d = rng.standard_normal((2, 32, 8, 8)).astype(np.float32)
    v_r, f_r = tiny(x, 0.5, [0, 1], inject={8: d}, return_features=True)
    v_n = tiny(x, 0.5, [0, 1], inject={"down.1.0": Tensor(d)})
    np.testing.assert_array_equal(v_r.data, v_n.data)
    assert np.abs(v_r.data - base).max() > 1e-4
    _, f0 = tiny(x, 0.5, [0, 1], return_features=True)
    np.testing.assert_allclose(f_r[8].data, f0[8].data + d, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(f_r[16].data, f0[16].data)  # upstream untouched
    with pytest.raises(ValueError, match="unknown point 'down.9.0'"):
        tiny(x, 0.5, [0, 1], inject={"down.9.0": d})
    with pytest.raises(ValueError, match=r"must have shape \(2, 32, 4, 4\)"):
        tiny(x, 0.5, [0, 1], inject={"mid": d})
    with pytest.raises(ValueError, match="resolution 32"):
        tiny(x, 0.5, [0, 1], inject={32: d})


def test_bad_inputs(tiny):
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        tiny(x, 0.5, [0, 3])
    with pytest.raises(ValueError, match="class ids c are required"):
        tiny(x, 0.5)
    with pytest.raises(ValueError, match=r"t must be a scalar or \(N,\)"):
        tiny(x, [0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match=r"x must be \(N, 3, S, S\)"):
        tiny(np.zeros((2, 1, 16, 16), np.float32), 0.5, [0, 1])


def test_time_free_variant_for_the_tpn():
    m = UNet(UNetConfig(image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                        attn_resolutions=(8,), num_classes=2, norm_groups=4,
                        time_conditional=False, out_channels=1))
    assert not any(n.startswith("temb.") for n in m.state_dict())
    v = m(np.zeros((2, 3, 16, 16), np.float32), None, [0, 1])
    assert v.shape == (2, 1, 16, 16)


def test_whole_network_gradients_match_finite_differences(tiny):
    """Directional float32 FD of sum(g * v) for a few parameters of the tiny
    U-Net (every layer type lies on their paths) and the input x."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    t, c = np.array([0.3, 0.8]), np.array([1, 2])
    g = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    params = dict(tiny.named_parameters())
    names = ["class_emb.weight", "temb.dense.0.weight", "conv_in.weight",
             "down.1.block.0.nin_shortcut.weight", "down.1.attn.0.attn.qkv.weight",
             "mid.block_1.norm1.weight", "up.0.block.1.conv2.weight", "conv_out.bias"]

    tiny.zero_grad()
    xt = Tensor(x, requires_grad=True)
    v = tiny(xt, t, c)
    (v * Tensor(g)).sum().backward()

    def loss():
        with timenet.no_grad():
            return float(np.sum(g.astype(np.float64) * tiny(x, t, c).data))

    for name in names:
        p = params[name]
        u = rng.standard_normal(p.shape).astype(np.float32)
        u /= np.linalg.norm(u)
        eps = 1e-2 * max(1.0, float(np.abs(p.data).max()))
        orig = p.data.copy()
        p.data = orig + eps * u
        lp = loss()
        p.data = orig - eps * u
        lm = loss()
        p.data = orig
        fd = (lp - lm) / (2 * eps)
        an = float(np.sum(p.grad.data.astype(np.float64) * u))
        assert abs(fd - an) <= 1e-2 * (abs(fd) + abs(an)) + 1e-3, (name, an, fd)
    u = rng.standard_normal(x.shape).astype(np.float32)
    u /= np.linalg.norm(u)
    with timenet.no_grad():
        fd = (np.sum(g * tiny(x + 1e-2 * u, t, c).data, dtype=np.float64)
              - np.sum(g * tiny(x - 1e-2 * u, t, c).data, dtype=np.float64)) / 2e-2
    an = float(np.sum(xt.grad.data.astype(np.float64) * u))
    assert abs(fd - an) <= 1e-2 * (abs(fd) + abs(an)) + 1e-3, ("x", an, fd)
