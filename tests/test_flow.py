"""Rectified Flow: the loss and samplers by definition, RK45 against closed
forms and scipy, training on a tiny two-class dataset (the loss falls, the
class matters, Reflow straightens), checkpoints, exact resume."""
import json
import os

import numpy as np
import pytest

import timenet
from timenet import checkpoint as ckpt
from timenet import flow
from timenet.autograd import Tensor
from timenet.models import UNet

S = 16  # image size of the synthetic data


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: these tensors are tiny (OpenMP fork/join would dominate on
    a shared 2-core machine), and conv2d's weight gradient is bit-for-bit
    reproducible only for a fixed assignment of work to threads (exact
    resume compares weights bit for bit)."""
    prev = timenet.get_num_threads()
    timenet.set_num_threads(1)
    yield
    timenet.set_num_threads(prev)


def two_class_images(n, rng):
    """Class 0: a red-to-blue horizontal ramp; class 1: green vertical
    stripes over a dark-blue ramp. Amplitude varies per image."""
    yy, xx = np.mgrid[0:S, 0:S] / (S - 1)
    x = np.empty((n, 3, S, S), np.float32)
    c = np.arange(n) % 2
    for i in range(n):
        a = rng.uniform(0.7, 1.0)
        if c[i] == 0:
            x[i] = [a * (2 * xx - 1), -0.5 + 0 * xx, -a * (2 * xx - 1)]
        else:
            x[i] = [-0.8 + 0 * xx, a * np.cos(4 * np.pi * yy), a * (2 * yy - 1)]
    return x, c


class ConstantVelocity:
    """A stand-in model: v = a everywhere; records what it was called with."""

    def __init__(self, a):
        self.a, self.calls = np.float32(a), []

    def __call__(self, x, t, c):
        self.calls.append((x.data.copy(), np.array(t), None if c is None else np.array(c)))
        return Tensor(np.full(x.shape, self.a, np.float32))


# -- definitions --------------------------------------------------------------
def test_rf_loss_is_eq4():
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    m = ConstantVelocity(0.25)
    loss = flow.rf_loss(m, x1, [0, 1, 0], np.random.default_rng(5))
    r = np.random.default_rng(5)  # the same draws: x0 first, then t
    x0 = r.standard_normal(x1.shape, dtype=np.float32)
    t = r.uniform(1e-3, 1.0, size=3).astype(np.float32)
    xt, tt, cc = m.calls[0]
    np.testing.assert_allclose(xt, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tt, t)
    np.testing.assert_array_equal(cc, [0, 1, 0])
    want = np.mean((0.25 - (x1.astype(np.float64) - x0)) ** 2)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    # given x0 (Reflow pairs) is used as is
    m2 = ConstantVelocity(0.0)
    flow.rf_loss(m2, x1, 0, np.random.default_rng(1), x0=np.zeros_like(x1))
    t2 = m2.calls[0][1]
    np.testing.assert_allclose(m2.calls[0][0], t2[:, None, None, None] * x1, rtol=1e-6)


def test_one_step_euler_and_rk45_by_definition():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    m = ConstantVelocity(0.5)
    np.testing.assert_allclose(flow.one_step(m, x, np.array([0.2, 0.9]), [0, 1]),
                               x + np.array([0.8, 0.1])[:, None, None, None] * 0.5, rtol=1e-6)
    z, nfe = flow.sample(m, x, [0, 1], "euler", steps=4)
    np.testing.assert_allclose(z, x + 0.5, rtol=1e-6)  # z += v / N lands on x0 + v
    assert nfe == 4
    np.testing.assert_allclose([c[1][0] for c in m.calls[-4:]],
                               [1e-3 + i * (1 - 1e-3) / 4 for i in range(4)], rtol=1e-6)
    z, nfe = flow.sample(m, x, [0, 1], "rk45")
    np.testing.assert_allclose(z, x + 0.5 * (1 - 1e-3), rtol=1e-5, atol=1e-6)
    assert nfe < 30
    z, nfe = flow.sample(m, x, [0, 1], "euler", steps=2, batch_size=1)
    assert nfe == 4 and z.shape == x.shape
    with pytest.raises(ValueError, match="method must be"):
        flow.sample(m, x, [0, 1], "heun")


# -- RK45 ---------------------------------------------------------------------
def test_rk45_closed_form_and_scipy_step_counts():
    from scipy.integrate import solve_ivp
    y0 = np.array([[1.0, 2.0, -0.5], [0.3, 0.1, 4.0]], np.float32)
    rate = np.array([0.5, 3.0])  # per-sample stiffness: different step sequences

    def f(t, y, idx):
        return -rate[idx][:, None] * y

    y, info = flow.solve_rk45(f, y0, 0.0, 2.0, rtol=1e-5, atol=1e-5)
    exact = y0 * np.exp(-2.0 * rate)[:, None]
    assert np.abs(y - exact).max() < 1e-4
    for b in range(2):  # each sample takes exactly scipy's steps
        r = solve_ivp(lambda t, yy: -rate[b] * yy, (0, 2), y0[b].astype(np.float64),
                      method="RK45", rtol=1e-5, atol=1e-5)
        assert info["nfev_per_sample"][b] == r.nfev
        assert info["steps"][b] == len(r.t) - 1
        np.testing.assert_allclose(y[b], r.y[:, -1], rtol=1e-5, atol=1e-6)
    assert info["nfev_per_sample"][0] < info["nfev_per_sample"][1]
    assert info["nfev"] == info["nfev_per_sample"].max()

    # linear time-varying: y' = cos(t) y, y = y0 exp(sin t)
    y, info = flow.solve_rk45(lambda t, y, idx: np.cos(t)[:, None] * y, y0, 0.0, 3.0)
    assert np.abs(y - y0 * np.exp(np.sin(3.0))).max() < 5e-5
    assert 20 < info["nfev"] < 120


def test_rk45_errors():
    y0 = np.ones((1, 2), np.float32)
    with pytest.raises(RuntimeError, match="not finite"):
        flow.solve_rk45(lambda t, y, idx: np.where(t[:, None] > 0.5, np.nan, 1.0) + 0 * y,
                        y0, 0.0, 1.0)
    with pytest.raises(ValueError, match="t1 > t0"):
        flow.solve_rk45(lambda t, y, idx: y, y0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="more than 3 steps"):
        flow.solve_rk45(lambda t, y, idx: np.cos(10 * t)[:, None] + 0 * y, y0, 0.0, 5.0,
                        max_steps=3)


# -- training on a tiny two-class dataset -------------------------------------
@pytest.fixture(scope="module")
def trained():
    x, c = two_class_images(64, np.random.default_rng(0))
    timenet.manual_seed(0)
    model = UNet.from_preset("tiny", num_classes=2, image_size=S)
    losses = flow.train_flow(model, (x, c), steps=150, batch_size=16, lr=1e-3, warmup=10,
                             progress=False, seed=0)
    return model, x, c, losses


def _dist_to_class_means(s, x, c):
    return np.stack([((s - x[c == k].mean(0)) ** 2).mean(axis=(1, 2, 3)) for k in (0, 1)], 1)


def test_flow_loss_falls_and_the_class_matters(trained):
    model, x, c, losses = trained
    assert len(losses) == 150 and np.all(np.isfinite(losses))
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:10])
    z = np.random.default_rng(1).standard_normal((6, 3, S, S)).astype(np.float32)
    want = np.array([0, 1, 0, 1, 0, 1])
    s, nfe = flow.sample(model, z, want, "euler", steps=10)
    d = _dist_to_class_means(s, x, c)
    assert np.all(d.argmin(1) == want), d
    # the same noise under the other class goes to the other class
    s2, _ = flow.sample(model, z, 1 - want, "euler", steps=10)
    assert np.all(_dist_to_class_means(s2, x, c).argmin(1) == 1 - want)


def test_reflow_shrinks_the_one_step_gap(trained):
    model0, x, c, _ = trained
    model = UNet(model0.config)
    model.load_state_dict(model0.state_dict())
    z = np.random.default_rng(2).standard_normal((8, 3, S, S)).astype(np.float32)
    cz = np.arange(8) % 2

    def gap(m):
        ode, nfe = flow.sample(m, z, cz, "rk45", rtol=1e-4, atol=1e-4)
        one, _ = flow.sample(m, z, cz, "euler", steps=1)
        return float(np.mean((ode - one) ** 2)), nfe

    before, nfe_before = gap(model)
    res = flow.train_reflow(model, np.arange(48) % 2, steps=100, batch_size=16, lr=5e-4,
                            warmup=10, rtol=1e-4, atol=1e-4, progress=False, seed=3)
    after, nfe_after = gap(model)
    x0, x1, pc = res["pairs"]
    assert x0.shape == x1.shape == (48, 3, S, S) and np.all(pc == np.arange(48) % 2)
    assert res["nfe"][0] > 12 and len(res["losses"][0]) == 100
    assert after < 0.7 * before, (before, after)
    # the pairs are RK45 solutions of the pre-Reflow model (to the solver's
    # accuracy: a batch of 2 rounds differently from one of 48, and the
    # adaptive steps follow the rounding)
    x1_again, _ = flow.sample(model0, x0[:2], pc[:2], "rk45", rtol=1e-4, atol=1e-4)
    assert np.abs(x1_again - x1[:2]).max() < 2e-2


# -- checkpoints and resume ---------------------------------------------------
def _small_model(seed):
    timenet.manual_seed(seed)
    return UNet.from_preset("tiny", num_classes=2, image_size=8, base_channels=8,
                            norm_groups=4)


def test_checkpoint_round_trip_is_exact(tmp_path):
    model = _small_model(0)
    x, c = two_class_images(8, np.random.default_rng(0))
    x = x[:, :, ::2, ::2].copy()
    from timenet.optim import AdamW
    opt = AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = flow.rf_loss(model, x, c, np.random.default_rng(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "run" / "m.safetensors"
    ckpt.save_checkpoint(path, model, stage="flow", step=2, classes=["ramp", "stripes"],
                         optimizer=opt, train_state={"rng": {"a": 1}}, losses=[1.0, 0.5])
    assert sorted(os.listdir(tmp_path / "run")) == ["m.json", "m.optim.safetensors",
                                                    "m.safetensors"]
    side = json.loads((tmp_path / "run" / "m.json").read_text())
    assert side["preset"] == "tiny" and side["stage"] == "flow" and side["step"] == 2
    assert side["classes"] == ["ramp", "stripes"] and side["config"]["base_channels"] == 8

    other = _small_model(1)
    opt2 = AdamW(other.parameters(), lr=1e-3)
    ck = ckpt.load_checkpoint(path, other, opt2)
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)
    for a, b in zip(opt.m + opt.v, opt2.m + opt2.v):
        np.testing.assert_array_equal(a, b)
    assert opt2.step_count == 2 and ck.losses == [1.0, 0.5] and ck.train_state == {"rng": {"a": 1}}
    built, _ = ckpt.load_model(path)
    with timenet.no_grad():
        np.testing.assert_array_equal(built(x, 0.5, c).data, model(x, 0.5, c).data)
    # safetensors readers see PyTorch-style names
    from safetensors.numpy import load_file
    assert "down.0.block.0.conv1.weight" in load_file(str(path))


def test_checkpoint_bad_files_raise_value_error_naming_the_file(tmp_path):
    model = _small_model(0)
    path = str(tmp_path / "m.safetensors")
    ckpt.save_checkpoint(path, model, step=3)
    data = open(path, "rb").read()
    with open(path, "wb") as f:  # truncated
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="m.safetensors.*truncated or foreign"):
        ckpt.load_checkpoint(path)
    with open(path, "wb") as f:  # not safetensors at all
        f.write(b"PK\x03\x04 this is a zip, not weights")
    with pytest.raises(ValueError, match="m.safetensors"):
        ckpt.load_checkpoint(path)
    from safetensors.numpy import save_file  # safetensors, but not ours
    save_file({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(ValueError, match="m.safetensors: not a timenet checkpoint"):
        ckpt.load_checkpoint(path)
    ckpt.save_checkpoint(path, model, step=3)
    side = json.loads(open(tmp_path / "m.json").read())
    side["step"] = 4  # a sidecar from another save
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="m.json.*does not match"):
        ckpt.load_checkpoint(path)
    os.unlink(tmp_path / "m.json")
    with pytest.raises(ValueError, match="m.json: checkpoint sidecar"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ValueError, match="nothing.safetensors: weights file not found"):
        ckpt.load_checkpoint(tmp_path / "nothing.safetensors")


def test_resumed_training_matches_the_uninterrupted_run(tmp_path):
    x, c = two_class_images(16, np.random.default_rng(4))
    x = x[:, :, ::2, ::2].copy()
    kw = dict(steps=6, batch_size=4, lr=1e-3, warmup=2, seed=7, progress=False, ckpt_every=2)

    straight = _small_model(0)
    want = flow.train_flow(straight, (x, c), ckpt_dir=str(tmp_path / "a"), **kw)

    class Interrupt(Exception):
        pass

    def stop_at_5(step, loss):
        if step == 5:
            raise Interrupt

    first = _small_model(0)
    with pytest.raises(Interrupt):
        flow.train_flow(first, (x, c), ckpt_dir=str(tmp_path / "b"), callback=stop_at_5, **kw)
    assert ckpt.load_checkpoint(tmp_path / "b" / "last.safetensors").step == 4

    resumed = _small_model(9)  # other initial weights: all must come from the checkpoint
    got = flow.train_flow(resumed, (x, c), ckpt_dir=str(tmp_path / "b"), resume=True, **kw)
    assert got == want
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"trained with batch_size 4 \(now 8\)"):
        flow.train_flow(_small_model(0), (x, c), ckpt_dir=str(tmp_path / "b"), resume=True,
                        **dict(kw, batch_size=8))
