"""The timestep-perceptive network: shapes and routes, identity at
initialisation, gradients, the perceptual losses (LPIPS path and the SSIM
fallback), train_tpn (frozen denoiser, exact resume), and on a tiny
two-class dataset: TPN training lowers the reconstruction error inside
synthetic anomalies without raising it outside."""
import os
import warnings

import numpy as np
import pytest

import timenet
from timenet import perceptual as P
from timenet.anomaly import Synthesizer
from timenet.autograd import Tensor
from timenet.flow import one_step, train_flow
from timenet.models import UNet
from timenet.models import backbones
from timenet.models.tpn import TPN, t_head_bias
from timenet.nn import functional as F
from timenet.timenet_model import TimeNetModel, load_tpn
from timenet.tpn_train import params_digest, train_tpn


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test machine's 2 cores are shared; one thread is the fast setting there.
    prev = timenet.get_num_threads()
    timenet.set_num_threads(1)
    yield
    timenet.set_num_threads(prev)


def _tiny(seed=0, **kw):
    timenet.manual_seed(seed)
    return UNet.from_preset("tiny", num_classes=2, **kw)


def _patterns(n, rng):
    """Two classes of 32x32 images: vertical colour stripes (period 8) and a
    product of sines (period 12), each with a random phase."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    x = np.zeros((n, 3, 32, 32), np.float32)
    c = np.arange(n) % 2
    for i in range(n):
        ph = rng.uniform(0, 2 * np.pi)
        if c[i] == 0:
            s = np.sin(2 * np.pi * xx / 8 + ph)
            x[i] = np.stack([0.6 * s + 0.2, 0.3 * s - 0.3, -0.5 + 0 * s])
        else:
            s = np.sin(2 * np.pi * xx / 12 + ph) * np.sin(2 * np.pi * yy / 12 + ph)
            x[i] = np.stack([-0.4 + 0 * s, 0.2 * s, 0.7 * s + 0.1])
    return x, c


# -- structure --------------------------------------------------------------------

def test_tpn_shapes_routes_and_names():
    den = _tiny()
    tpn = TPN.for_denoiser(den)
    assert not tpn.unet.config.time_conditional and tpn.unet.config.out_channels == 1
    names = list(tpn.state_dict())
    assert not any(n.startswith("unet.temb") for n in names)
    for n in ("unet.class_emb.weight", "unet.conv_out.bias", "adapters.res32.norm.weight",
              "adapters.res32.conv.weight", "adapters.res8.conv.bias", "adapters.mid.conv.weight"):
        assert n in names
    assert tpn.routes == {32: 32, 16: 16, 8: 8, "mid": "mid"}
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    T, inject = tpn(x, np.array([0, 1, 1]))
    assert T.shape == (3, 1, 32, 32)
    assert set(inject) == set(den.feature_shapes())
    for k, (C, H, W) in den.feature_shapes().items():
        assert inject[k].shape == (3, C, H, W)
        assert not inject[k].data.any()          # zero adapters
    assert np.all(T.data == np.float32(0.83))    # the T head's bias


def test_tpn_of_another_shape_pools_to_the_denoiser():
    den = _tiny()
    tpn = TPN.for_denoiser(den, init="random", channel_mult=(1, 2), base_channels=8,
                           norm_groups=4, attn_resolutions=())
    assert tpn.routes == {32: 32, 16: 16, 8: 16, "mid": "mid"}
    for k in tpn.routes:  # make the adapters non-zero to see the pooling
        a = getattr(tpn.adapters, f"res{k}" if k != "mid" else "mid")
        a.conv.weight.data[...] = 0.1
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    _, inject = tpn(x, np.array([0, 1]))
    for k, (C, H, W) in den.feature_shapes().items():
        assert inject[k].shape == (2, C, H, W)
    _, feats = tpn.unet(Tensor(x), None, np.array([0, 1]), return_features=True)
    a = tpn.adapters.res8
    want = F.adaptive_avg_pool2d(a.conv(F.silu(a.norm(feats[16]))), 8)
    np.testing.assert_allclose(inject[8].data, want.data, rtol=1e-6)
    TimeNetModel(den, tpn).reconstruct(x, np.array([0, 1]))  # runs end to end


def test_t_head_bias_is_exact():
    from timenet._loader import _core
    for t in (0.5, 0.7, 0.8, 0.83, 0.9):
        b = t_head_bias(t)
        assert _core.sigmoid_forward(np.array([b], np.float32))[0] == np.float32(t)


def test_init_reproduces_the_plain_one_step_exactly():
    den = _tiny()
    model = TimeNetModel(den, TPN.for_denoiser(den))
    x = np.random.default_rng(1).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    c = np.array([0, 1, 0, 1])
    a, T = model.reconstruct(x, c, t=0.83, rng=np.random.default_rng(2))
    b, T0 = model.reconstruct(x, c, t=0.83, rng=np.random.default_rng(2), use_tpn=False)
    x0 = np.random.default_rng(2).standard_normal(x.shape, dtype=np.float32)
    t32 = np.float32(0.83)
    x_t = t32 * x + (np.float32(1) - t32) * x0
    ref = one_step(den, x_t, 0.83, c)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, ref)
    assert T.shape == T0.shape == (4, 1, 32, 32)
    assert np.all(T == np.float32(0.83)) and np.all(T0 == np.float32(0.83))
    # the same noise by x0; batching does not change the result
    a2, _ = model.reconstruct(x, c, t=0.83, x0=x0, batch_size=3)
    np.testing.assert_array_equal(a2, a)
    # at another t, t_init makes the fresh model the plain one-step there too
    m8 = TimeNetModel(den, t_init=0.8)
    a8, T8 = m8.reconstruct(x, c, t=0.8, x0=x0)
    np.testing.assert_array_equal(a8, m8.reconstruct(x, c, t=0.8, x0=x0, use_tpn=False)[0])
    assert np.all(T8 == np.float32(0.8))
    # the features are wired: non-zero adapters change v, a biased T head changes T
    model.tpn.adapters.res16.conv.bias.data[...] = 0.05
    a3, _ = model.reconstruct(x, c, t=0.83, x0=x0)
    assert np.abs(a3 - a).max() > 1e-4


def test_gradients_reach_the_tpn_and_not_the_frozen_denoiser():
    den = _tiny()
    model = TimeNetModel(den, TPN.for_denoiser(den))
    den.requires_grad_(False)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    xh, T = model(Tensor(x), 0.83, np.array([0, 1]))
    F.mse_loss(xh, Tensor(np.zeros_like(x))).backward()
    assert all(p.grad is None for p in den.parameters())
    g = model.tpn.adapters.res32.conv.weight.grad
    assert g is not None and np.abs(g.data).max() > 0
    assert np.abs(model.tpn.unet.conv_out.weight.grad.data).max() > 0


def test_input_checks():
    den = _tiny()
    with pytest.raises(ValueError, match="t_init"):
        TPN.for_denoiser(den, t_init=1.0)
    with pytest.raises(ValueError, match="init must be"):
        TPN.for_denoiser(den, init="zeros")
    other = UNet.from_preset("tiny", num_classes=2, channel_mult=(1, 2))
    with pytest.raises(ValueError, match="does not have"):
        TimeNetModel(other, TPN.for_denoiser(den))


# -- perceptual losses ---------------------------------------------------------------

def test_lpips_vgg_path_matches_the_backbone_and_differentiates():
    vgg = backbones.random_state_dict("vgg16", 0)
    lp = P.LPIPS(vgg, P.lpips_random_lin(0))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    y = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = backbones.create("vgg16", weights=vgg, normalize="lpips").features(
            x, layers=P.LPIPS_LAYERS)
    for name, f in zip(P.LPIPS_LAYERS, lp.features(x)):
        np.testing.assert_allclose(f.data, ref[name], rtol=1e-4, atol=1e-5 * np.abs(ref[name]).max())
    assert lp(x, x).item() == 0.0
    xt = Tensor(x, requires_grad=True)
    d = lp(xt, y)
    d.backward()
    assert d.item() > 0 and np.abs(xt.grad.data).max() > 0
    # the reference formula, in float64, from the backbone's features
    fy = backbones.create("vgg16", weights=vgg, normalize="lpips").features(y, P.LPIPS_LAYERS)
    want = 0.0
    for name, w in zip(P.LPIPS_LAYERS, P._lin_weights(P.lpips_random_lin(0))):
        a, b = ref[name].astype(np.float64), fy[name].astype(np.float64)
        a = a / (np.sqrt((a * a).sum(1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b * b).sum(1, keepdims=True)) + 1e-10)
        want += ((a - b) ** 2 * w.reshape(1, -1, 1, 1)).sum(1).mean(axis=(1, 2))
    np.testing.assert_allclose(d.item(), want.mean(), rtol=1e-4)


def test_lpips_layer_distance_finite_differences():
    rng = np.random.default_rng(0)
    fx = rng.standard_normal((2, 5, 3, 3))
    fy = rng.standard_normal((2, 5, 3, 3)).astype(np.float32)
    w = rng.uniform(0, 1, 5)
    fx[0, :, 0, 0] = 0  # a zero vector: the normalisation's guard
    t = Tensor(fx.astype(np.float32), requires_grad=True)
    P.lpips_layer_distance(t, fy, w).sum().backward()

    def f(a):
        return P.lpips_layer_distance(Tensor(a), fy, w).data.astype(np.float64).sum()
    num = np.zeros_like(fx)
    for i in np.ndindex(fx.shape):
        if fx[i[0], :, i[2], i[3]].any():
            a, b = fx.copy(), fx.copy()
            a[i] += 1e-3
            b[i] -= 1e-3
            num[i] = (f(a.astype(np.float32)) - f(b.astype(np.float32))) / 2e-3
    mask = np.broadcast_to(np.abs(fx).sum(1, keepdims=True) > 0, fx.shape)
    np.testing.assert_allclose(t.grad.data[mask], num[mask], atol=3e-3 * np.abs(num).max())


def test_ssim_fallback_values_and_gradient():
    s = P.SSIMLoss()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    assert abs(s(x, x).item()) < 1e-6
    assert 0 < s(x, y).item() < s(x, -y).item()
    xt = Tensor(x, requires_grad=True)
    s(xt, y).backward()
    for i in [(0, 0, 5, 5), (1, 2, 20, 11), (0, 1, 16, 30)]:
        a, b = x.copy(), x.copy()
        a[i] += 1e-2
        b[i] -= 1e-2
        num = (s(a, y).item() - s(b, y).item()) / 2e-2
        assert abs(xt.grad.data[i] - num) <= 0.05 * abs(num) + 2e-6, (i, xt.grad.data[i], num)
    with pytest.raises(ValueError, match="smaller than the window"):
        s(np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 3, 8, 8), np.float32))


def test_perceptual_auto_finds_files_or_warns_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMENET_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(P, "_warned", False)
    monkeypatch.setattr(P.importlib.util, "find_spec", lambda name: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b = P.Perceptual(), P.Perceptual()
    assert a.kind == b.kind == "ssim"
    assert sum("falls back" in str(w.message) for w in caught) == 1
    with pytest.raises(FileNotFoundError):
        P.Perceptual("lpips")
    assert P.Perceptual("none")(np.zeros((1, 3, 4, 4), np.float32), np.ones((1, 3, 4, 4),
                                                                             np.float32)).item() == 0
    # torchvision's file name and the lpips file (any format timenet.io reads)
    np.savez(tmp_path / "vgg16.npz", **backbones.random_state_dict("vgg16", 1))
    with open(tmp_path / "vgg.pth", "wb") as f:
        np.savez(f, **P.lpips_random_lin(1))
    assert P.find_lpips_weights() == str(tmp_path / "vgg.pth")
    assert P.Perceptual().kind == "lpips"


# -- training ---------------------------------------------------------------------------

def test_train_tpn_freezes_the_denoiser_and_resumes_exactly(tmp_path):
    x, c = _patterns(16, np.random.default_rng(0))
    den = _tiny(seed=1)
    before = {k: v.copy() for k, v in den.state_dict().items()}
    flags = [p.requires_grad for p in den.parameters()]
    kw = dict(steps=4, batch_size=2, lr=1e-3, perceptual="ssim", warmup=1, progress=False,
              seed=3, synthesizer=Synthesizer(), ckpt_every=2)
    timenet.manual_seed(5)
    m1 = TimeNetModel(den, TPN.for_denoiser(den))
    tpn0 = {k: v.copy() for k, v in m1.tpn.state_dict().items()}
    full = train_tpn(m1, (x, c), ckpt_dir=str(tmp_path / "a"), **kw)
    assert len(full) == 4 and all(np.isfinite(full))
    after = den.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)     # bit-identical
    assert [p.requires_grad for p in den.parameters()] == flags          # restored
    assert any(not np.array_equal(tpn0[k], v) for k, v in m1.tpn.state_dict().items())

    m2 = TimeNetModel(den, TPN.for_denoiser(den))
    m2.tpn.load_state_dict(tpn0)
    first = train_tpn(m2, (x, c), ckpt_dir=str(tmp_path / "b"), **dict(kw, steps=2))
    m3 = TimeNetModel(den, TPN.for_denoiser(den))   # a fresh process would start like this
    rest = train_tpn(m3, (x, c), ckpt_dir=str(tmp_path / "b"), resume=True, **kw)
    assert first == full[:2] and rest == full
    s1, s3 = m1.tpn.state_dict(), m3.tpn.state_dict()
    assert all(np.array_equal(s1[k], s3[k]) for k in s1)

    tpn = load_tpn(str(tmp_path / "a" / "last.safetensors"))
    assert all(np.array_equal(s1[k], v) for k, v in tpn.state_dict().items())
    assert tpn.routes == m1.tpn.routes
    other = _tiny(seed=2)
    with pytest.raises(ValueError, match="trained with denoiser"):
        train_tpn(TimeNetModel(other, TPN.for_denoiser(other)), (x, c),
                  ckpt_dir=str(tmp_path / "b"), resume=True, **kw)


@pytest.fixture(scope="module")
def trained_denoiser():
    x, c = _patterns(64, np.random.default_rng(0))
    den = _tiny(seed=0)
    losses = train_flow(den, (x, c), steps=100, batch_size=8, lr=1e-3, warmup=20,
                        progress=False)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    return den, x, c


def test_tpn_training_repairs_anomaly_regions(trained_denoiser):
    den, x, c = trained_denoiser
    model = TimeNetModel(den, TPN.for_denoiser(den))
    # held-out normal images with synthetic anomalies (every image anomalous)
    hx, hc = _patterns(32, np.random.default_rng(99))
    hrng = np.random.default_rng(5)
    haug, hmask = Synthesizer(clean_fraction=0.0, ensure_nonempty=True)(hx, hrng)
    hx0 = hrng.standard_normal(hx.shape, dtype=np.float32)

    def errors(use_tpn):
        r, _ = model.reconstruct(haug, hc, t=0.83, x0=hx0, use_tpn=use_tpn)
        e = ((r - hx) ** 2).mean(axis=1)
        return float(e[hmask].mean()), float(e[~hmask].mean())

    plain_in, plain_out = errors(False)
    assert errors(True) == (plain_in, plain_out)   # identical at initialisation
    losses = train_tpn(model, (x, c), steps=60, batch_size=8, lr=1e-3, warmup=10,
                       perceptual="ssim", synthesizer=Synthesizer(), seed=0, progress=False)
    tpn_in, tpn_out = errors(True)
    print(f"\nin-region MSE plain {plain_in:.5f} -> TPN {tpn_in:.5f}; "
          f"outside plain {plain_out:.5f} -> TPN {tpn_out:.5f}; "
          f"loss {np.mean(losses[:5]):.4f} -> {np.mean(losses[-5:]):.4f}")
    assert tpn_in < 0.9 * plain_in
    assert tpn_out <= 1.02 * plain_out
