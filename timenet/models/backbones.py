"""Pretrained feature extractors for anomaly scoring (DESIGN.md §1.7).

torchvision's ResNet / Wide ResNet / VGG-16 topologies with torchvision's
parameter names, inference only, over the C kernels directly (no tape):

    from timenet.models import backbones
    net = backbones.create("wide_resnet101_2", weights="auto")   # the paper's
    feats = net.features(x, layers=("layer1", "layer2", "layer3"))
    # x (N, 3, H, W) float32 in [-1, 1]  ->  {"layer1": (N, 256, H/4, W/4), ...}

- BatchNorm (eval mode: running statistics) is folded into the preceding
  convolution when the weights are loaded: w' = w * g / sqrt(var + eps),
  b' = beta - mean * g / sqrt(var + eps), eps = 1e-5 (torchvision's).
- Inputs in [-1, 1] are mapped to [0, 1] and normalised with the ImageNet
  mean / std the torchvision weights were trained with (`normalize=
  "imagenet"`); `"lpips"` applies LPIPS's ScalingLayer instead, None nothing.
- Stages of a ResNet: `stem` (conv1 + bn1 + relu, stride 2, before the max
  pool), `layer1` .. `layer4` (strides 4, 8, 16, 32). Only the stages up to
  the deepest one asked for are computed.
- VGG-16 (`features` only): `relu1_1` .. `relu5_3`, `pool1` .. `pool5`, or
  torchvision's module index in `features` (an int, or "features.<i>").
- Nothing is downloaded. `weights` is a file (see `timenet.io`), a state
  dict, "auto" (the standard torchvision file in $TIMENET_WEIGHTS or torch's
  hub cache, see docs/weights.md), or None: random torchvision-style
  initialisation, for tests and benchmarks, announced with a warning.
"""
import glob
import os
import warnings

import numpy as np

from .._loader import _core
from ..autograd import _DeviceArray, _canonical_device, _cat_rows, _to_device
from ..io import load_checkpoint

__all__ = ["create", "Backbone", "ARCHS", "WEIGHT_FILES", "random_state_dict",
           "find_weights", "expected_shapes", "BackboneWeightsError"]

BN_EPS = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS's ScalingLayer, applied to [-1, 1] inputs directly.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# name -> (block, blocks per stage, width per group multiplier)
_RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), 1),
    "resnet34": ("basic", (3, 4, 6, 3), 1),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 2),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 2),
}
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M")
ARCHS = tuple(_RESNETS) + ("vgg16",)

# The torchvision files (IMAGENET1K_V1 first: what `pretrained=True` gave,
# and what DDAD / the paper used), under https://download.pytorch.org/models/
WEIGHT_FILES = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "wide_resnet50_2": ("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"),
    "wide_resnet101_2": ("wide_resnet101_2-32ee1156.pth", "wide_resnet101_2-d733dc28.pth"),
    "vgg16": ("vgg16-397923af.pth",),
}
WEIGHTS_URL = "https://download.pytorch.org/models/"


class BackboneWeightsError(ValueError):
    """A state dict that does not fit the architecture (missing/extra keys, shapes)."""


# -- topology ---------------------------------------------------------------

class _Conv:
    """One convolution (+ folded BatchNorm) of the graph."""
    __slots__ = ("name", "bn", "K", "C", "R", "stride", "pad", "bias", "w", "b")

    def __init__(self, name, bn, K, C, R, stride, pad, bias=False):
        self.name, self.bn, self.K, self.C, self.R = name, bn, K, C, R
        self.stride, self.pad, self.bias = stride, pad, bias
        self.w = self.b = None

    def out_size(self, H):
        return (H + 2 * self.pad - self.R) // self.stride + 1


def _resnet_graph(arch):
    """(stages, extra): stages is a list of (stage name, [block]), a block a
    dict of _Conv; extra lists (key, shape) of parameters features ignore (fc)."""
    kind, counts, mult = _RESNETS[arch]
    stem = {"conv": _Conv("conv1", "bn1", 64, 3, 7, 2, 3)}
    stages = [("stem", [stem])]
    expansion = 1 if kind == "basic" else 4
    inplanes = 64
    for si, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
        blocks = []
        for bi in range(n):
            stride = 2 if (si > 0 and bi == 0) else 1
            p = f"layer{si + 1}.{bi}"
            if kind == "basic":
                blk = {"conv1": _Conv(f"{p}.conv1", f"{p}.bn1", planes, inplanes, 3, stride, 1),
                       "conv2": _Conv(f"{p}.conv2", f"{p}.bn2", planes, planes, 3, 1, 1)}
            else:
                width = planes * mult
                blk = {"conv1": _Conv(f"{p}.conv1", f"{p}.bn1", width, inplanes, 1, 1, 0),
                       "conv2": _Conv(f"{p}.conv2", f"{p}.bn2", width, width, 3, stride, 1),
                       "conv3": _Conv(f"{p}.conv3", f"{p}.bn3", planes * 4, width, 1, 1, 0)}
            if stride != 1 or inplanes != planes * expansion:
                blk["downsample"] = _Conv(f"{p}.downsample.0", f"{p}.downsample.1",
                                          planes * expansion, inplanes, 1, stride, 0)
            inplanes = planes * expansion
            blocks.append(blk)
        stages.append((f"layer{si + 1}", blocks))
    extra = [("fc.weight", (1000, inplanes)), ("fc.bias", (1000,))]
    return stages, extra


def _vgg16_graph():
    """A list of (index, kind, _Conv or None, output name) for vgg16.features."""
    mods, idx, c, blk, i_in_blk = [], 0, 3, 1, 1
    for v in _VGG16_CFG:
        if v == "M":
            mods.append((idx, "pool", None, f"pool{blk}"))
            idx, blk, i_in_blk = idx + 1, blk + 1, 1
        else:
            conv = _Conv(f"features.{idx}", None, v, c, 3, 1, 1, bias=True)
            mods.append((idx, "conv", conv, f"conv{blk}_{i_in_blk}"))
            mods.append((idx + 1, "relu", None, f"relu{blk}_{i_in_blk}"))
            idx, c, i_in_blk = idx + 2, v, i_in_blk + 1
    extra = [("classifier.0.weight", (4096, 512 * 7 * 7)), ("classifier.0.bias", (4096,)),
             ("classifier.3.weight", (4096, 4096)), ("classifier.3.bias", (4096,)),
             ("classifier.6.weight", (1000, 4096)), ("classifier.6.bias", (1000,))]
    return mods, extra


def _convs(arch):
    if arch == "vgg16":
        mods, extra = _vgg16_graph()
        return [m[2] for m in mods if m[1] == "conv"], extra
    stages, extra = _resnet_graph(arch)
    return [c for _, blocks in stages for blk in blocks for c in blk.values()], extra


def expected_shapes(arch, include_unused=True):
    """name -> shape of every entry of a torchvision state dict of `arch`
    (BatchNorm buffers included; `fc.*` / `classifier.*` with include_unused)."""
    arch = _check_arch(arch)
    convs, extra = _convs(arch)
    out = {}
    for c in convs:
        out[f"{c.name}.weight"] = (c.K, c.C, c.R, c.R)
        if c.bias:
            out[f"{c.name}.bias"] = (c.K,)
        if c.bn:
            for s in ("weight", "bias", "running_mean", "running_var"):
                out[f"{c.bn}.{s}"] = (c.K,)
            out[f"{c.bn}.num_batches_tracked"] = ()
    if include_unused:
        out.update(extra)
    return out


def _check_arch(arch):
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


# -- weights ----------------------------------------------------------------

def random_state_dict(arch, seed=0):
    """A torchvision-format state dict with torchvision's initialisation:
    conv weights kaiming-normal (fan_out, relu), BatchNorm identity (weight
    1, bias 0, running mean 0, var 1), biases 0. For tests and benchmarks."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(arch, include_unused=False).items():
        if name.endswith("num_batches_tracked"):
            out[name] = np.zeros((), np.int64)
        elif len(shape) == 4:
            std = np.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))
        elif name.endswith(("weight", "running_var")):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = np.zeros(shape, np.float32)
    return out


def _search_dirs():
    dirs = []
    env = os.environ.get("TIMENET_WEIGHTS")
    if env:
        dirs += [d for d in env.split(os.pathsep) if d]
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    dirs.append(os.path.join(torch_home, "hub", "checkpoints"))
    return dirs


def find_weights(arch):
    """The path of `arch`'s torchvision weight file, searched in
    $TIMENET_WEIGHTS (a directory, or several joined by os.pathsep) and then
    torch's hub cache ($TORCH_HOME/hub/checkpoints); None when absent.
    The standard file names come first, then `<arch>-*.pth`,
    `<arch>.pth`, `<arch>.safetensors`."""
    arch = _check_arch(arch)
    for d in _search_dirs():
        for fname in WEIGHT_FILES[arch]:
            p = os.path.join(d, fname)
            if os.path.isfile(p):
                return p
        for pat in (f"{arch}-*.pth", f"{arch}.pth", f"{arch}.safetensors", f"{arch}.npz"):
            hits = sorted(glob.glob(os.path.join(glob.escape(d), pat)))
            if hits:
                return hits[0]
    return None


def _missing_weights_message(arch):
    return (f"no pretrained weights for {arch!r}: put torchvision's {WEIGHT_FILES[arch][0]} "
            f"({WEIGHTS_URL}{WEIGHT_FILES[arch][0]}) in a directory named by $TIMENET_WEIGHTS, "
            f"or pass weights=<path>; searched {_search_dirs()} (see docs/weights.md)")


def _fold(arch, state, convs, extra, where):
    """Check `state` against the architecture, then fold BatchNorm into each conv."""
    want = expected_shapes(arch, include_unused=False)
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    ignorable = {k for k, _ in extra}
    missing = [k for k in want if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in want and k not in ignorable]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                                          if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected key {unexpected[0]!r}" + (
                f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        raise BackboneWeightsError(
            f"{arch} weights from {where} do not match torchvision's {arch}: "
            + "; ".join(parts) + " (is this a checkpoint of another architecture?)")
    for k, shape in list(want.items()) + [(k, s) for k, s in extra if k in state]:
        if k in state and tuple(np.shape(state[k])) != tuple(shape):
            raise BackboneWeightsError(
                f"{arch} weights from {where}: {k!r} has shape {tuple(np.shape(state[k]))}, "
                f"expected {tuple(shape)}")
    for c in convs:
        w = np.asarray(state[f"{c.name}.weight"], np.float64)
        b = (np.asarray(state[f"{c.name}.bias"], np.float64) if c.bias
             else np.zeros(c.K, np.float64))
        if c.bn:
            g = np.asarray(state[f"{c.bn}.weight"], np.float64)
            beta = np.asarray(state[f"{c.bn}.bias"], np.float64)
            mean = np.asarray(state[f"{c.bn}.running_mean"], np.float64)
            var = np.asarray(state[f"{c.bn}.running_var"], np.float64)
            if np.any(var < 0):
                raise BackboneWeightsError(f"{arch} weights from {where}: "
                                           f"{c.bn}.running_var has negative entries")
            scale = g / np.sqrt(var + BN_EPS)
            w = w * scale[:, None, None, None]
            b = (b - mean) * scale + beta
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise BackboneWeightsError(f"{arch} weights from {where}: {c.name} has NaN/inf")
        c.w = np.ascontiguousarray(w, np.float32)
        c.b = np.ascontiguousarray(b, np.float32)


# -- the extractor ----------------------------------------------------------

class Backbone:
    """A torchvision backbone with folded BatchNorm; see the module docs."""

    def __init__(self, arch, state, where, normalize="imagenet", pretrained=True):
        self.arch = _check_arch(arch)
        if normalize == "imagenet":
            mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
            shift, scale = 2 * mean - 1, 2 * std  # (x+1)/2 - mean) / std
        elif normalize == "lpips":
            shift, scale = np.array(LPIPS_SHIFT), np.array(LPIPS_SCALE)
        elif normalize is None:
            shift, scale = np.zeros(3), np.ones(3)
        else:
            raise ValueError(f"normalize must be 'imagenet', 'lpips' or None, got {normalize!r}")
        self.normalize = normalize
        self._shift = shift.astype(np.float32).reshape(1, 3, 1, 1)
        self._inv_scale = (1 / scale).astype(np.float32).reshape(1, 3, 1, 1)
        self.pretrained = bool(pretrained)
        self.source = where
        if arch == "vgg16":
            self._mods, extra = _vgg16_graph()
            convs = [m[2] for m in self._mods if m[1] == "conv"]
            names = {}
            for idx, _kind, _c, nm in self._mods:
                names[nm] = idx
            self._names = names
            self.layer_names = tuple(names)
            self.default_layers = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
        else:
            self._stages, extra = _resnet_graph(arch)
            convs = [c for _, blocks in self._stages for blk in blocks for c in blk.values()]
            self.layer_names = tuple(s for s, _ in self._stages)
            self.default_layers = ("layer1", "layer2", "layer3")
        _fold(arch, state, convs, extra, where)
        self._conv_list = convs
        self.device = "cpu"

    def __repr__(self):
        w = f"weights from {self.source}" if self.pretrained else "RANDOM weights"
        return f"Backbone({self.arch}, {w}, normalize={self.normalize!r})"

    # -- helpers
    def _layer_key(self, layer):
        """A requested layer as the internal key (vgg: module index)."""
        if self.arch == "vgg16":
            if isinstance(layer, (int, np.integer)):
                if not 0 <= layer <= 30:
                    raise ValueError(f"vgg16 has features.0 .. features.30, got index {layer}")
                return int(layer)
            if isinstance(layer, str) and layer.startswith("features."):
                return self._layer_key(int(layer.split(".", 1)[1]))
            if layer in self._names:
                return self._names[layer]
        elif layer in self.layer_names:
            return self.layer_names.index(layer)
        raise ValueError(f"{self.arch} has no layer {layer!r}; choose from "
                         f"{', '.join(map(str, self.layer_names))}"
                         + (" or a features index" if self.arch == "vgg16" else ""))

    def _prepare(self, x):
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape) == 0:
            raise ValueError(f"{self.arch}.features: x must be (N, 3, H, W) in [-1, 1], "
                             f"got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{self.arch}.features: x must be a float array in [-1, 1], "
                            f"got {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{self.arch}.features: x contains NaN or inf")
        return x

    def to(self, device):
        """Run on `device` ('cpu', 'cuda', 'cuda:N'): the folded weights move
        there, and `features` returns arrays on it (DeviceArrays on a GPU).
        Returns self."""
        target = _canonical_device(device)
        for c in self._conv_list:
            c.w, c.b = _to_device(c.w, target), _to_device(c.b, target)
        self.device = target
        return self

    # The graph's three ops on either device: the CPU ones work in place.
    @staticmethod
    def _conv(c, x, relu):
        if type(x) is _DeviceArray:
            y = _core.cuda_conv2d_forward(x, c.w, c.b, c.stride, c.pad)
            return _core.cuda_relu_forward(y) if relu else y
        y = _core.conv2d_forward(x, c.w, c.b, c.stride, c.pad)
        if relu:
            np.maximum(y, 0, out=y)
        return y

    @staticmethod
    def _add_relu(y, idn):
        if type(y) is _DeviceArray:
            return _core.cuda_relu_forward(_core.cuda_binary(0, y, idn))
        y += idn
        return np.maximum(y, 0, out=y)

    @staticmethod
    def _relu(x, keep):
        """relu(x); x itself is overwritten unless `keep` (a requested layer)."""
        if type(x) is _DeviceArray:
            return _core.cuda_relu_forward(x)
        return np.maximum(x, 0) if keep else np.maximum(x, 0, out=x)

    @staticmethod
    def _max_pool(x, k, stride, pad):
        pool = _core.cuda_max_pool2d_forward if type(x) is _DeviceArray else _core.max_pool2d_forward
        return pool(x, k, stride, pad)[0]

    def _forward_resnet(self, x, keys):
        out, last = {}, max(keys)
        for si, (stage, blocks) in enumerate(self._stages):
            if si > last:
                break
            for blk in blocks:
                if stage == "stem":
                    x = self._conv(blk["conv"], x, relu=True)
                    continue
                y = self._conv(blk["conv1"], x, relu=True)
                if "conv3" in blk:
                    y = self._conv(blk["conv2"], y, relu=True)
                    y = self._conv(blk["conv3"], y, relu=False)
                else:
                    y = self._conv(blk["conv2"], y, relu=False)
                idn = self._conv(blk["downsample"], x, relu=False) if "downsample" in blk else x
                x = self._add_relu(y, idn)
            if si in keys:
                out[si] = x
            if stage == "stem":
                x = self._max_pool(x, 3, 2, 1)
        return out

    def _forward_vgg(self, x, keys):
        out, last = {}, max(keys)
        for idx, kind, conv, _name in self._mods:
            if idx > last:
                break
            if kind == "conv":
                x = self._conv(conv, x, relu=False)
            elif kind == "relu":
                x = self._relu(x, keep=(idx - 1) in keys)
            else:
                x = self._max_pool(x, 2, 2, 0)
            if idx in keys:
                out[idx] = x
        return out

    # -- API
    def features(self, x, layers=None, batch_size=8):
        """Features of x (N, 3, H, W) host images in [-1, 1] at `layers`
        (default `default_layers`): dict layer -> (N, C_l, H_l, W_l) float32,
        numpy on the CPU, DeviceArrays where `to` put the backbone. Runs in
        chunks of `batch_size` images; records nothing for autograd."""
        layers = tuple(self.default_layers if layers is None else
                       ((layers,) if isinstance(layers, (str, int)) else layers))
        if not layers:
            raise ValueError(f"{self.arch}.features: layers is empty")
        keys = {layer: self._layer_key(layer) for layer in layers}
        x = self._prepare(x)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        wanted = set(keys.values())
        chunks = {layer: [] for layer in layers}
        for i in range(0, x.shape[0], batch_size):
            xi = np.ascontiguousarray((x[i:i + batch_size] - self._shift) * self._inv_scale,
                                      np.float32)
            if self.device != "cpu":
                xi = _to_device(xi, self.device)
            got = (self._forward_vgg if self.arch == "vgg16" else self._forward_resnet)(xi, wanted)
            for layer in layers:
                chunks[layer].append(got[keys[layer]])
        return {layer: _cat_rows(c) for layer, c in chunks.items()}

    __call__ = features

    def flops(self, H, W, layers=None):
        """Multiply-add FLOPs (2 per MAC) of the convolutions `features` runs
        for one (3, H, W) image up to the deepest of `layers`."""
        layers = self.default_layers if layers is None else layers
        last = max(self._layer_key(layer) for layer in layers)
        total = 0
        if self.arch == "vgg16":
            h, w = H, W
            for idx, kind, c, _ in self._mods:
                if idx > last:
                    break
                if kind == "conv":
                    total += 2 * c.K * c.C * c.R * c.R * h * w
                elif kind == "pool":
                    h, w = h // 2, w // 2
            return total
        h, w = H, W
        for si, (stage, blocks) in enumerate(self._stages):
            if si > last:
                break
            for blk in blocks:
                hin, win = h, w
                for name, c in blk.items():
                    src_h, src_w = (hin, win) if name in ("conv", "conv1", "downsample") else (h, w)
                    P, Q = c.out_size(src_h), c.out_size(src_w)
                    total += 2 * c.K * c.C * c.R * c.R * P * Q
                    if name != "downsample":
                        h, w = P, Q
            if stage == "stem":
                h, w = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
        return total

    def num_parameters(self):
        return sum(c.w.size + c.b.size for c in self._conv_list)


def create(name, weights=None, normalize="imagenet", seed=0):
    """A `Backbone` of architecture `name` (one of ARCHS).

    weights: a checkpoint path (any format `timenet.io.load_checkpoint`
    reads), a state dict (name -> array, torchvision names), "auto" (the
    standard torchvision file from $TIMENET_WEIGHTS / torch's hub cache;
    FileNotFoundError saying where to put it when absent), or None (random
    torchvision-style initialisation from `seed`; warns, since such
    features are not the pretrained ones the method assumes).
    """
    name = _check_arch(name)
    if isinstance(weights, str) and weights == "auto":
        path = find_weights(name)
        if path is None:
            raise FileNotFoundError(_missing_weights_message(name))
        weights = path
    if weights is None:
        warnings.warn(f"backbone {name}: RANDOM weights (seed {seed}), not pretrained "
                      "features; see docs/weights.md", stacklevel=2)
        return Backbone(name, random_state_dict(name, seed), f"random init (seed {seed})",
                        normalize, pretrained=False)
    if isinstance(weights, dict):
        return Backbone(name, weights, "the given state dict", normalize)
    path = os.fspath(weights)
    return Backbone(name, load_checkpoint(path), repr(path), normalize)
