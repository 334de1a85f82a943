"""The class-conditional DDPM U-Net: TimeNet's velocity network v(x_t, t, c).

The block structure is the DDPM reference model (Ho et al.'s
`diffusion_utils_2.model`, as ported in pytorch_diffusion's `Model`), with
PyTorch-style parameter names:

    temb.dense.0, temb.dense.1      Linear(base, 4 base), Linear(4 base, 4 base)
    class_emb                       Embedding(num_classes, 4 base), ADDED to the time embedding
    conv_in                         Conv3x3(in_channels, base)
    down.{i}.block.{j}              ResnetBlock (level i, j < num_res_blocks)
    down.{i}.attn.{j}               AttnBlock, at levels whose resolution is in attn_resolutions
    down.{i}.downsample.conv        Conv3x3 stride 2 (every level but the last)
    mid.block_1, mid.attn_1, mid.block_2
    up.{i}.block.{j}                ResnetBlock on concat(h, skip) (j <= num_res_blocks)
    up.{i}.attn.{j}
    up.{i}.upsample.conv            nearest x2, then Conv3x3 (every level but 0)
    norm_out, conv_out              GroupNorm-SiLU-Conv3x3 to out_channels

ResnetBlock (names norm1, conv1, temb_proj, norm2, conv2, nin_shortcut):
    h = conv1(silu(norm1(x))) + temb_proj(silu(emb))[:, :, None, None]
    h = conv2(silu(norm2(h)))            (dropout: none, see UNetConfig)
    return nin_shortcut(x) + h           (1x1 conv only when channels change)
AttnBlock (names norm, attn.qkv, attn.proj): x + attn(norm(x)), single-head
softmax(q k^T / sqrt(C)) v over the H*W positions. nn.Attention computes q, k
and v with one 1x1 conv of 3C outputs (`attn.qkv`), where the reference has
three (q, k, v): the same parameters, stacked in that order.

Time: emb = dense.1(silu(dense.0(sinusoidal(999 t, base)))) with
t in [0, 1] (0 noise, 1 data), plus class_emb(c).

Two departures from the reference, both documented where they matter:
- Downsampling: the reference pads (0, 1, 0, 1) and convolves 3x3 with stride
  2, padding 0; our conv2d pads symmetrically, so timenet uses padding 1,
  stride 2. The output size is the same (H/2 for even H); the sampling grid
  is shifted by one pixel, so reference weights would not transfer
  bit-for-bit through the downsampling convs.
- Dropout: the engine has no dropout op, so only dropout = 0 is accepted
  (the paper's denoiser trains without it too).

Presets (`UNet.from_preset(name, num_classes)`; counts for 15 classes):

    name    image  base  channel_mult        res blocks  attn at   params
    paper   256    64    (1, 1, 2, 2, 4, 4)  2           16, 8     29,769,475
    small   64     32    (1, 2, 2, 2)        2           16         2,247,683
    tiny    32     16    (1, 2, 2)           1           8            281,715

(GroupNorm groups: 32 for paper, 8 for small and tiny. `paper` reproduces
the paper's 29.8 M; each class adds 4*base parameters to the class table.)
`small` and `tiny` are for CPU experiments and tests: a 2-core CPU trains
them in minutes.

Features and injection (for the TPN's ControlNet-like residuals):
`forward(x, t, c, inject=None, return_features=False)`. Every point named
below is an activation that `inject[name]` (a Tensor or array of exactly
that activation's shape) is added to right after it is computed, before
anything reads it; in the encoder the injected sum is therefore what both
the next block and the decoder's skip connection see.

    "conv_in"                 output of conv_in                     (N, base, S, S)
    "down.{i}.{j}"            level i, res block j (after its attn) (N, C_i, S/2^i, S/2^i)
    "down.{i}.downsample"     level i's downsampling conv           (N, C_i, S/2^(i+1), ...)
    "mid"                     output of mid.block_2                 (N, C_last, lowest res)
    "up.{i}.{j}"              up level i, block j (after its attn)  (N, C_i, S/2^i, S/2^i)
    "up.{i}.upsample"         up level i's upsampling conv          (N, C_i, S/2^(i-1), ...)
    r (an int resolution)     alias of "down.{i}.{num_res_blocks-1}" for the
                              level i with resolution r: the encoder's output there

`UNet.injection_shapes()` lists every point with its (C, H, W). With
`return_features=True` forward returns `(v, features)`, features a dict
{resolution r: encoder output at r (the point `r` above, after its
injection), "mid": the mid block's output}, i.e. what a ControlNet-like
branch taps; the plain forward computes exactly the same v either way.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Tuple

import numpy as np

from .. import nn
from ..autograd import Tensor, _tensor
from ..nn import functional as F

__all__ = ["UNetConfig", "UNet", "PRESETS", "ResnetBlock", "AttnBlock"]


@dataclass
class UNetConfig:
    """Architecture of a UNet (see the module docstring for the blocks).

    image_size: S, the input's height and width (must be divisible by
        2^(len(channel_mult) - 1)); attention levels are found from it.
    in_channels / out_channels: image channels in and out (out defaults to in).
    base_channels: channels of level 0; level i has base * channel_mult[i].
    num_res_blocks: res blocks per encoder level (the decoder has one more).
    attn_resolutions: resolutions (pixels) at which AttnBlocks follow every
        res block; the mid block always has one.
    num_classes: size of the learned class embedding (0: unconditional).
    dropout: must be 0 (the engine has no dropout op).
    norm_groups: GroupNorm groups (32 in DDPM); must divide every width.
    num_heads: attention heads (1 in DDPM).
    time_conditional: False drops the time embedding (the TPN's U-Net has
        no time input); the class embedding alone then conditions the blocks.
    """
    image_size: int = 256
    in_channels: int = 3
    base_channels: int = 64
    channel_mult: Tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: Tuple[int, ...] = (16, 8)
    num_classes: int = 0
    dropout: float = 0.0
    norm_groups: int = 32
    out_channels: Optional[int] = None
    num_heads: int = 1
    time_conditional: bool = True

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.dropout != 0:
            raise ValueError(f"UNetConfig: dropout must be 0 (the engine has no dropout op), "
                             f"got {self.dropout}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"UNetConfig: channel_mult must be positive ints, got "
                             f"{self.channel_mult}")
        down = 2 ** (len(self.channel_mult) - 1)
        if self.image_size < down or self.image_size % down:
            raise ValueError(f"UNetConfig: image_size {self.image_size} must be divisible by "
                             f"2^(levels - 1) = {down}")
        for m in set(self.channel_mult):
            if (self.base_channels * m) % self.norm_groups:
                raise ValueError(f"UNetConfig: norm_groups {self.norm_groups} must divide every "
                                 f"width, not {self.base_channels * m}")
        if self.base_channels % self.norm_groups:
            raise ValueError(f"UNetConfig: norm_groups {self.norm_groups} must divide "
                             f"base_channels {self.base_channels}")
        if self.num_res_blocks < 1 or self.num_classes < 0:
            raise ValueError("UNetConfig: num_res_blocks must be >= 1 and num_classes >= 0")
        if self.time_conditional and self.base_channels < 4:
            raise ValueError("UNetConfig: base_channels must be >= 4 (sinusoidal embedding)")

    @property
    def temb_channels(self):
        return 4 * self.base_channels

    def resolutions(self):
        """Resolution of each level: S, S/2, ..."""
        return [self.image_size // 2 ** i for i in range(len(self.channel_mult))]

    def to_dict(self):
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"UNetConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


PRESETS = {
    "paper": dict(image_size=256, base_channels=64, channel_mult=(1, 1, 2, 2, 4, 4),
                  num_res_blocks=2, attn_resolutions=(16, 8), norm_groups=32),
    "small": dict(image_size=64, base_channels=32, channel_mult=(1, 2, 2, 2),
                  num_res_blocks=2, attn_resolutions=(16,), norm_groups=8),
    "tiny": dict(image_size=32, base_channels=16, channel_mult=(1, 2, 2),
                 num_res_blocks=1, attn_resolutions=(8,), norm_groups=8),
}


def _silu_emb(emb):
    return None if emb is None else F.silu(emb)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3, + projected embedding, GroupNorm-SiLU-Conv3x3,
    plus the (1x1-projected when channels change) input."""

    def __init__(self, in_channels, out_channels, temb_channels, groups):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if temb_channels:
            self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x, act_emb=None):
        """x (N, C_in, H, W); act_emb (N, temb) = silu(embedding) or None."""
        h = self.conv1(self.norm1.forward_silu(x))
        if act_emb is not None:
            e = self.temb_proj(act_emb)
            h = F.broadcast_add(h, e.reshape(e.shape[0], e.shape[1], 1, 1))
        h = self.conv2(self.norm2.forward_silu(h))
        skip = self.nin_shortcut(x) if self.in_channels != self.out_channels else x
        return skip + h


class AttnBlock(nn.Module):
    """x + Attention(GroupNorm(x)) over the H*W positions."""

    def __init__(self, channels, groups, num_heads=1):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.attn = nn.Attention(channels, num_heads)

    def forward(self, x):
        return x + self.attn(self.norm(x))


class Downsample(nn.Module):
    """3x3 conv, stride 2, padding 1 (the reference pads (0, 1, 0, 1), padding 0:
    same output size, grid shifted by one pixel)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block`, `attn` (may be empty) and an optional
    `downsample` / `upsample` (PyTorch names down.{i}.block.{j}, ...)."""


class UNet(nn.Module):
    """Class-conditional DDPM U-Net; `model(x, t, c)` -> velocity (N, C, H, W).

    x: Tensor or array (N, in_channels, S, S); t: (N,) floats in [0, 1] (or a
    scalar for the whole batch); c: (N,) int class ids (or a scalar).
    """

    def __init__(self, config: UNetConfig = None, **kwargs):
        super().__init__()
        if config is None:
            config = UNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("UNet: give a UNetConfig or keyword arguments, not both")
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "preset", None)
        cfg = config
        ch, G, temb_ch = cfg.base_channels, cfg.norm_groups, cfg.temb_channels
        mult = cfg.channel_mult
        L = len(mult)
        cond = cfg.time_conditional or cfg.num_classes > 0
        blk_temb = temb_ch if cond else 0

        if cfg.time_conditional:
            self.temb = nn.Module()
            self.temb.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])
        if cfg.num_classes:
            self.class_emb = nn.Embedding(cfg.num_classes, temb_ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        res = cfg.image_size
        in_mult = (1,) + mult
        self.down = nn.ModuleList()
        block_in = ch
        for i in range(L):
            lvl = _Level()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_mult[i], ch * mult[i]
            for _ in range(cfg.num_res_blocks):
                lvl.block.append(ResnetBlock(block_in, block_out, blk_temb, G))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    lvl.attn.append(AttnBlock(block_in, G, cfg.num_heads))
            if i != L - 1:
                lvl.downsample = Downsample(block_in)
                res //= 2
            self.down.append(lvl)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, blk_temb, G)
        self.mid.attn_1 = AttnBlock(block_in, G, cfg.num_heads)
        self.mid.block_2 = ResnetBlock(block_in, block_in, blk_temb, G)

        ups = []
        for i in reversed(range(L)):
            lvl = _Level()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            block_out, skip_in = ch * mult[i], ch * mult[i]
            for j in range(cfg.num_res_blocks + 1):
                if j == cfg.num_res_blocks:
                    skip_in = ch * in_mult[i]
                lvl.block.append(ResnetBlock(block_in + skip_in, block_out, blk_temb, G))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    lvl.attn.append(AttnBlock(block_in, G, cfg.num_heads))
            if i != 0:
                lvl.upsample = Upsample(block_in)
                res *= 2
            ups.append(lvl)
        self.up = nn.ModuleList(reversed(ups))  # up[i] is level i, as in the reference

        self.norm_out = nn.GroupNorm(G, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg.out_channels, 3, padding=1)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_preset(cls, name, num_classes=0, **overrides):
        """A preset ("paper", "small", "tiny"; see the module docstring) with
        `num_classes` classes; keyword overrides replace config fields."""
        if name not in PRESETS:
            raise ValueError(f"UNet.from_preset: unknown preset {name!r}; choose from "
                             f"{sorted(PRESETS)}")
        kw = dict(PRESETS[name], num_classes=num_classes)
        kw.update(overrides)
        model = cls(UNetConfig(**kw))
        object.__setattr__(model, "preset", name)  # recorded in checkpoints
        return model

    def extra_repr(self):
        return repr(self.config)

    # -- introspection ------------------------------------------------------
    def injection_shapes(self):
        """OrderedDict name -> (C, H, W) of every injection point (docstring)."""
        cfg = self.config
        ch, mult, S = cfg.base_channels, cfg.channel_mult, cfg.image_size
        out = {"conv_in": (ch, S, S)}
        for i, m in enumerate(mult):
            r = S // 2 ** i
            for j in range(cfg.num_res_blocks):
                out[f"down.{i}.{j}"] = (ch * m, r, r)
            if i != len(mult) - 1:
                out[f"down.{i}.downsample"] = (ch * m, r // 2, r // 2)
        r = S // 2 ** (len(mult) - 1)
        out["mid"] = (ch * mult[-1], r, r)
        for i in reversed(range(len(mult))):
            r = S // 2 ** i
            for j in range(cfg.num_res_blocks + 1):
                out[f"up.{i}.{j}"] = (ch * mult[i], r, r)
            if i != 0:
                out[f"up.{i}.upsample"] = (ch * mult[i], 2 * r, 2 * r)
        return out

    def feature_shapes(self):
        """{resolution: (C, H, W), "mid": (C, H, W)} of the returned features."""
        cfg = self.config
        out = {}
        for i, m in enumerate(cfg.channel_mult):
            r = cfg.image_size // 2 ** i
            out[r] = (cfg.base_channels * m, r, r)
        out["mid"] = self.injection_shapes()["mid"]
        return out

    def _resolve_inject(self, inject, N):
        if not inject:
            return {}
        shapes = self.injection_shapes()
        cfg = self.config
        res_alias = {cfg.image_size // 2 ** i: f"down.{i}.{cfg.num_res_blocks - 1}"
                     for i in range(len(cfg.channel_mult))}
        out = {}
        for key, val in inject.items():
            name = key
            if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                if int(key) not in res_alias:
                    raise ValueError(f"UNet inject: resolution {key} is not one of the "
                                     f"encoder's {sorted(res_alias)}")
                name = res_alias[int(key)]
            if name not in shapes:
                raise ValueError(f"UNet inject: unknown point {key!r}; valid points are "
                                 f"resolutions {sorted(res_alias)} and {list(shapes)}")
            val = _tensor(val)
            want = (N,) + shapes[name]
            if tuple(val.shape) != want:
                raise ValueError(f"UNet inject: {key!r} must have shape {want}, got "
                                 f"{tuple(val.shape)}")
            out[name] = val if name not in out else out[name] + val
        return out

    # -- forward ------------------------------------------------------------
    def embedding(self, t, c, N):
        """The conditioning vector (N, 4 base): time MLP + class embedding."""
        cfg = self.config
        emb = None
        if cfg.time_conditional:
            if t is None:
                raise ValueError("UNet: t is required (time_conditional=True)")
            td = np.asarray(t.numpy() if isinstance(t, Tensor) else t, np.float32).reshape(-1)
            if td.size == 1:
                td = np.full(N, td[0], np.float32)
            if td.shape != (N,):
                raise ValueError(f"UNet: t must be a scalar or (N,) = ({N},), got {td.shape}")
            d0, d1 = self.temb.dense
            sin = F.timestep_embedding(np.ascontiguousarray(td * 999.0), cfg.base_channels,
                                       device=d0.weight.device)  # where the model is
            emb = d1(F.silu(d0(sin)))
        if cfg.num_classes:
            if c is None:
                raise ValueError(f"UNet: class ids c are required (num_classes = "
                                 f"{cfg.num_classes})")
            cd = np.asarray(c.numpy() if isinstance(c, Tensor) else c)
            if cd.dtype.kind not in "iu" and not (cd.dtype.kind == "f" and
                                                  np.all(cd == np.round(cd))):
                raise TypeError(f"UNet: c must hold integer class ids, got {cd.dtype}")
            cd = cd.astype(np.int64).reshape(-1)
            if cd.size == 1:
                cd = np.full(N, cd[0], np.int64)
            if cd.shape != (N,):
                raise ValueError(f"UNet: c must be a scalar or (N,) = ({N},), got {cd.shape}")
            if cd.min() < 0 or cd.max() >= cfg.num_classes:
                raise ValueError(f"UNet: class ids must lie in [0, {cfg.num_classes}), got "
                                 f"[{cd.min()}, {cd.max()}]")
            ce = self.class_emb(cd)
            emb = ce if emb is None else emb + ce
        elif c is not None:
            raise ValueError("UNet: got class ids but the model has num_classes = 0")
        return emb

    def forward(self, x, t=None, c=None, inject=None, return_features=False):
        cfg = self.config
        x = _tensor(x)
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2] != x.shape[3] or \
                x.shape[2] % 2 ** (len(cfg.channel_mult) - 1):
            raise ValueError(f"UNet: x must be (N, {cfg.in_channels}, S, S) with S divisible "
                             f"by {2 ** (len(cfg.channel_mult) - 1)}, got {tuple(x.shape)}")
        N = x.shape[0]
        # Only the configured image size has a known map of injection shapes.
        if inject and x.shape[2] != cfg.image_size:
            raise ValueError(f"UNet: inject needs x at the configured size {cfg.image_size}, "
                             f"got {x.shape[2]}")
        inj = self._resolve_inject(inject, N)
        emb = _silu_emb(self.embedding(t, c, N))

        def tap(name, h):
            return h + inj[name] if name in inj else h

        features = {}
        L = len(cfg.channel_mult)
        hs = [tap("conv_in", self.conv_in(x))]
        for i, lvl in enumerate(self.down):
            for j, blk in enumerate(lvl.block):
                h = blk(hs[-1], emb)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                hs.append(tap(f"down.{i}.{j}", h))
            features[x.shape[2] // 2 ** i] = hs[-1]
            if i != L - 1:
                hs.append(tap(f"down.{i}.downsample", lvl.downsample(hs[-1])))

        h = self.mid.block_1(hs[-1], emb)
        h = self.mid.attn_1(h)
        h = tap("mid", self.mid.block_2(h, emb))
        features["mid"] = h

        for i in reversed(range(L)):
            lvl = self.up[i]
            for j, blk in enumerate(lvl.block):
                h = blk(F.cat([h, hs.pop()], dim=1), emb)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                h = tap(f"up.{i}.{j}", h)
            if i != 0:
                h = tap(f"up.{i}.upsample", lvl.upsample(h))

        out = self.conv_out(self.norm_out.forward_silu(h))
        return (out, features) if return_features else out
