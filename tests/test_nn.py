"""Modules over the engine: registration, state, init, whole-network gradients,
training, memory."""
import math

import numpy as np
import pytest

import timenet
import timenet.nn.functional as F
from timenet import Tensor, nn
from timenet.nn.utils import clip_grad_norm_


class Net(nn.Module):
    """conv - GroupNorm - SiLU - attention - conv: the U-Net's building blocks."""

    def __init__(self, c=8):
        super().__init__()
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        self.norm = nn.GroupNorm(4, c)
        self.act = nn.SiLU()
        self.attn = nn.Attention(c, num_heads=2)
        self.down = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.conv_out = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        h = self.act(self.norm(self.conv_in(x)))
        h = h + self.attn(h)
        h = F.interpolate(self.down(h), scale_factor=2)
        return self.conv_out(h)


def test_names_follow_pytorch_state_dict():
    timenet.manual_seed(0)
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == ["conv_in.weight", "conv_in.bias", "norm.weight", "norm.bias"]
    assert "attn.qkv.weight" in names and "attn.proj.bias" in names
    sd = net.state_dict()
    assert list(sd) == names
    assert sd["conv_in.weight"].shape == (8, 3, 3, 3)
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SiLU(), nn.Conv2d(4, 2, 1, bias=False))
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight"]
    ml = nn.ModuleList([nn.Linear(2, 3), nn.Linear(3, 1)])
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_state_dict_round_trip_and_errors():
    timenet.manual_seed(1)
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 8, 8)))
    with timenet.no_grad():
        np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    sd = a.state_dict()
    sd["norm.weight"] = np.ones(5, np.float32)
    with pytest.raises(ValueError, match="norm.weight has shape"):
        b.load_state_dict(sd)
    sd = a.state_dict()
    del sd["conv_out.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match="conv_out.bias.*extra"):
        b.load_state_dict(sd)
    missing, unexpected = b.load_state_dict(sd, strict=False)
    assert missing == ["conv_out.bias"] and unexpected == ["extra"]


def test_init_matches_pytorch_defaults():
    timenet.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)
    bound = 1 / math.sqrt(64 * 9)      # kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), ..)
    w = conv.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert np.abs(conv.bias.numpy()).max() <= bound
    gn = nn.GroupNorm(32, 64)
    assert (gn.weight.numpy() == 1).all() and (gn.bias.numpy() == 0).all()
    emb = nn.Embedding(10, 1000)
    assert abs(emb.weight.numpy().std() - 1) < 0.02


def test_train_eval_and_requires_grad():
    net = Net()
    assert net.training and net.attn.training
    net.eval()
    assert not net.training and not net.norm.training
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    out = net(Tensor(np.zeros((1, 3, 4, 4))))
    assert not out.requires_grad


def test_whole_network_gradients_match_finite_differences():
    timenet.manual_seed(3)
    net = Net()
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)))
    target = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)

    def loss_value():
        with timenet.no_grad():
            return float(F.mse_loss(net(x), target).item())
    F.mse_loss(net(x), target).backward()
    for name, p in net.named_parameters():
        u = rng.standard_normal(p.shape).astype(np.float32)
        analytic = float(np.sum(p.grad.numpy().astype(np.float64) * u))
        base = p.data.copy()
        eps = 1e-2
        p.data = base + eps * u
        lp = loss_value()
        p.data = base - eps * u
        lm = loss_value()
        p.data = base
        fd = (lp - lm) / (2 * eps)
        assert abs(fd - analytic) <= 3e-2 * (abs(fd) + 1e-3), f"{name}: {analytic} vs {fd}"


def test_small_network_trains_to_expected_loss():
    """A few hundred AdamW steps toward a teacher of the same shape (so the target
    is reachable): the loss must fall by 100x."""
    timenet.manual_seed(0)
    net = Net()
    timenet.manual_seed(5)
    teacher = Net()
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((4, 3, 8, 8)))
    with timenet.no_grad():
        target = teacher(x).numpy()
    opt = timenet.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0, warmup_steps=10,
                              schedule="cosine", total_steps=300)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = F.mse_loss(net(x), target)
        loss.backward()
        clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])


def test_optimizer_state_resumes_exactly():
    def run(split):
        timenet.manual_seed(0)
        net = nn.Linear(4, 2)
        x = Tensor(np.ones((3, 4)))
        opt = timenet.optim.AdamW(net.parameters(), lr=1e-2, warmup_steps=3)
        for i in range(6):
            if i == split:
                state, params = opt.state_dict(), net.state_dict()
                net = nn.Linear(4, 2)
                net.load_state_dict(params)
                opt = timenet.optim.AdamW(net.parameters(), lr=1e-2, warmup_steps=3)
                opt.load_state_dict(state)
            opt.zero_grad()
            (net(x) * net(x)).sum().backward()
            opt.step()
        return net.weight.numpy().copy()
    np.testing.assert_array_equal(run(None), run(3))


def test_cosine_and_warmup_schedule():
    p = [nn.Parameter(np.zeros(1))]
    opt = timenet.optim.AdamW(p, lr=1.0, warmup_steps=10, schedule="cosine", total_steps=110,
                              min_lr=0.1)
    assert opt.lr_at(5) == pytest.approx(0.5)
    assert opt.lr_at(10) == pytest.approx(1.0)
    assert opt.lr_at(60) == pytest.approx(0.55)
    assert opt.lr_at(110) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps"):
        timenet.optim.AdamW(p, schedule="cosine")


def test_bad_layer_inputs_are_clear_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="conv2d"):
        conv(Tensor(np.zeros((1, 5, 8, 8))))          # channel mismatch
    with pytest.raises(ValueError, match="conv2d"):
        conv(Tensor(np.zeros((5, 8, 8))))             # wrong ndim
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 8)
    with pytest.raises(ValueError, match="group_norm"):
        F.group_norm(Tensor(np.zeros((1, 6, 2, 2))), 4)
    with pytest.raises(ValueError, match="embedding"):
        nn.Embedding(3, 2)(np.array([0, 3]))
    with pytest.raises(ValueError, match="only 'nearest'"):
        F.interpolate(Tensor(np.zeros((1, 1, 2, 2))), scale_factor=2, mode="bilinear")


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


def test_rss_is_flat_over_many_forward_backward_calls():
    timenet.manual_seed(0)
    net = Net()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 16, 16)))

    def step():
        net.zero_grad()
        F.mse_loss(net(x), np.zeros((2, 3, 16, 16), np.float32)).backward()
    for _ in range(30):
        step()
    before = _rss_kb()
    for _ in range(300):
        step()
    grown = _rss_kb() - before
    assert grown < 8 * 1024, f"RSS grew by {grown} kB over 300 forward/backward calls"
