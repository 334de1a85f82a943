"""The timestep-perceptive network (TPN, paper §2.2, DESIGN.md §1.5).

A U-Net of the denoiser's shape WITHOUT time input (`UNetConfig(
time_conditional=False)`: no time MLP; the class embedding alone feeds the
res blocks' embedding projections), run on the noised image x_t and the
class c. It gives

- T(x_t, c): the per-pixel timestep map (N, 1, S, S), in (0, 1): the U-Net's
  output head (norm_out -> SiLU -> conv_out, one channel) through a sigmoid;
- the timestep-perceptive features, one per injection target of the frozen
  denoiser, each `adapter = GroupNorm -> SiLU -> Conv1x1` (the paper's
  "feature adaptive module"; the 1x1 conv zero-initialised, as ControlNet's
  zero convolutions), then adaptive average pooling to the denoiser's
  resolution (an identity when the two U-Nets have the same shape).

Where the features come from and where they land (`TPN.routes`): for each
key k of the denoiser's `feature_shapes()` (every encoder resolution r, and
"mid"), the TPN's own feature of the same key (the output of its encoder
level r after the level's last res block / attention, i.e. UNet point
"down.{i}.{num_res_blocks-1}"; "mid": the output of mid.block_2) is adapted
and passed as `inject[k]` to the denoiser, whose UNet adds it to ITS
activation at the same point: the encoder output at resolution r (so both
the next encoder level and the decoder's skip connection at r see it) and
the mid block's output (what the decoder starts from). When the TPN's
configuration differs from the denoiser's, each denoiser resolution r takes
the TPN feature with the smallest resolution >= r (pooled down to r).

Initialisation: the adapters' last convs are zero (weights and bias), so
the injected features are exactly 0 and the denoiser's velocity is
bit-identical to the plain one. T is not zero-init-identity by itself: the
head's conv_out has zero weights and bias logit(t_init) (the float32 next to it whose
sigmoid is exactly float32(t_init): `t_head_bias`), so T == t_init bit for
bit everywhere at initialisation,
and `TimeNetModel.reconstruct` then equals the plain one-step
reconstruction at t = t_init (default 0.83, the paper's). T is learned for
the t the TPN is trained at; the map does not see t.

`TPN.for_denoiser(denoiser, t_init=0.83, init="denoiser")` builds the TPN of
the denoiser's shape; init="denoiser" copies every denoiser parameter of
matching name and shape (ControlNet's trainable copy) except the output
head; init="random" keeps the fresh initialisation.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .. import nn
from .._loader import _core
from ..autograd import _tensor
from ..nn import functional as F
from .unet import UNet, UNetConfig

__all__ = ["TPN", "TPNConfig", "Adapter", "feature_key", "key_name", "t_head_bias"]


def key_name(key):
    """Feature key (int resolution or "mid") -> its sub-module / JSON name."""
    return "mid" if key == "mid" else f"res{int(key)}"


def feature_key(name):
    """Inverse of key_name."""
    return "mid" if name == "mid" else int(str(name)[3:])


@dataclass
class TPNConfig:
    """unet: the TPN's UNetConfig as a dict (time_conditional False,
    out_channels 1); targets: denoiser feature name (key_name) -> (C, H, W);
    t_init: the T head's initial value; adapter_groups: GroupNorm groups of
    the adapters (default: the U-Net's norm_groups)."""
    unet: dict
    targets: dict
    t_init: float = 0.83
    adapter_groups: int = 0
    init: str = "random"

    def to_dict(self):
        return {"unet": dict(self.unet), "t_init": float(self.t_init),
                "targets": {k: list(v) for k, v in self.targets.items()},
                "adapter_groups": int(self.adapter_groups), "init": self.init}

    @classmethod
    def from_dict(cls, d):
        return cls(unet=dict(d["unet"]), targets={k: tuple(v) for k, v in d["targets"].items()},
                   t_init=float(d.get("t_init", 0.83)),
                   adapter_groups=int(d.get("adapter_groups", 0)),
                   init=d.get("init", "random"))


def t_head_bias(t):
    """The float32 b nearest logit(t) with sigmoid(b) == float32(t) exactly
    under the engine's sigmoid (so T == t bit for bit at initialisation);
    logit(t) itself when no float32 within 64 ulps hits t exactly."""
    target = np.float32(t)
    b0 = np.float32(math.log(float(t) / (1.0 - float(t))))
    cands = [b0]
    up = down = b0
    for _ in range(64):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        cands += [up, down]
    vals = _core.sigmoid_forward(np.asarray(cands, np.float32))
    hit = np.nonzero(vals == target)[0]
    return np.float32(cands[hit[0]]) if hit.size else b0


class Adapter(nn.Module):
    """GroupNorm -> SiLU -> Conv1x1 (zero-initialised), then adaptive average
    pooling to `out_hw` when the sizes differ."""

    def __init__(self, in_channels, out_channels, groups, out_hw):
        super().__init__()
        g = math.gcd(int(groups), int(in_channels))
        self.norm = nn.GroupNorm(g, in_channels, eps=1e-6)
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.conv.weight.data[...] = 0.0
        self.conv.bias.data[...] = 0.0
        self.out_hw = tuple(int(s) for s in out_hw)

    def forward(self, f):
        h = self.conv(self.norm.forward_silu(f))
        if tuple(h.shape[2:]) != self.out_hw:
            h = F.adaptive_avg_pool2d(h, self.out_hw)
        return h


class TPN(nn.Module):
    """`tpn(x_t, c)` -> (T (N, 1, S, S) in (0, 1), inject {key: (N, C, H, W)}).

    Parameters are `unet.*` (the time-free U-Net; `unet.conv_out` is the T
    head) and `adapters.<res{r}|mid>.{norm,conv}.*`.
    """

    def __init__(self, config: TPNConfig):
        super().__init__()
        ucfg = UNetConfig.from_dict(dict(config.unet))
        if ucfg.time_conditional or ucfg.out_channels != 1:
            raise ValueError("TPN: the U-Net must have time_conditional=False and "
                             "out_channels=1")
        if not 0.0 < config.t_init < 1.0:
            raise ValueError(f"TPN: t_init must lie in (0, 1), got {config.t_init}")
        object.__setattr__(self, "config", config)
        self.unet = UNet(ucfg)
        # The T head: sigmoid(conv_out(.)) == t_init at initialisation.
        self.unet.conv_out.weight.data[...] = 0.0
        self.unet.conv_out.bias.data[...] = t_head_bias(config.t_init)
        src_shapes = self.unet.feature_shapes()
        src_res = sorted(k for k in src_shapes if k != "mid")
        groups = config.adapter_groups or ucfg.norm_groups
        self.adapters = nn.Module()
        routes = {}
        for name, (C, H, W) in config.targets.items():
            key = feature_key(name)
            if key == "mid":
                src = "mid"
            else:
                bigger = [r for r in src_res if r >= key]
                if not bigger:
                    raise ValueError(f"TPN: no TPN feature at resolution >= {key} "
                                     f"(TPN resolutions {src_res})")
                src = bigger[0]
            routes[key] = src
            setattr(self.adapters, name, Adapter(src_shapes[src][0], C, groups, (H, W)))
        object.__setattr__(self, "routes", routes)  # denoiser key -> TPN feature key

    @classmethod
    def for_denoiser(cls, denoiser, t_init=0.83, init="denoiser", **unet_overrides):
        """A TPN of `denoiser`'s shape (its UNetConfig with time_conditional=False,
        out_channels=1, and any overrides), targeting all its feature points."""
        if init not in ("denoiser", "random"):
            raise ValueError(f"TPN.for_denoiser: init must be 'denoiser' or 'random', got {init!r}")
        ud = denoiser.config.to_dict()
        ud.update(time_conditional=False, out_channels=1)
        ud.update(unet_overrides)
        targets = {key_name(k): tuple(v) for k, v in denoiser.feature_shapes().items()}
        tpn = cls(TPNConfig(unet=ud, targets=targets, t_init=t_init, init=init))
        if init == "denoiser":
            tpn.copy_from(denoiser)
        return tpn

    def copy_from(self, denoiser):
        """Copy the denoiser's parameters of matching name and shape into the
        TPN's U-Net (not the T head). Returns the copied names."""
        src = denoiser.state_dict()
        copied = []
        for name, p in self.unet.named_parameters():
            if name.startswith("conv_out.") or name not in src:
                continue
            if src[name].shape == p.shape:
                p.data = np.array(src[name], np.float32)
                copied.append(name)
        return copied

    def extra_repr(self):
        return f"t_init={self.config.t_init}, routes={self.routes}"

    def forward(self, x_t, c=None):
        """x_t (N, 3, S, S), c (N,) ids -> (T (N, 1, S, S), {denoiser key: feature})."""
        x_t = _tensor(x_t)
        logits, feats = self.unet(x_t, None, c, return_features=True)
        T = F.sigmoid(logits)
        inject = {}
        for key, src in self.routes.items():
            inject[key] = getattr(self.adapters, key_name(key))(feats[src])
        return T, inject
