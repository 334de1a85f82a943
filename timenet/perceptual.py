"""Perceptual distances for training the TPN (paper §2.2: loss = pixel MSE +
LPIPS), differentiable through the Tensor tape.

    perc = Perceptual()                 # "auto": LPIPS when the weights exist,
    d = perc(x1_hat, x1)                # else the SSIM fallback (warned once)
    loss = F.mse_loss(x1_hat, x1) + d   # a scalar Tensor

LPIPS (Zhang et al. 2018, the `lpips` package, net="vgg", version 0.1):
    inputs in [-1, 1] -> ScalingLayer (x - shift) / scale -> VGG-16 `features`
    at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 -> per layer, unit-normalise
    each position's channel vector (f / (||f|| + 1e-10)), squared difference,
    the layer's non-negative 1x1 "lin" weights (C -> 1, no bias), spatial
    mean; sum over the five layers; mean over the batch.
  The backbone in timenet.models.backbones is inference-only (no tape), so
  `LPIPS` runs its own VGG-16 path from F.conv2d / F.relu / F.max_pool2d
  with the same torchvision weights, frozen (the weights record no gradient;
  the tape still flows to the input). The target's features are computed
  without a tape.
  Weights, nothing downloaded: torchvision's `vgg16-397923af.pth` (found as
  backbones.find_weights("vgg16") does: $TIMENET_WEIGHTS, torch's hub
  cache) and the lpips package's `weights/v0.1/vgg.pth` (keys
  `lin{k}.model.1.weight`, (1, C_k, 1, 1)), found in $TIMENET_WEIGHTS (as
  `vgg.pth`, `lpips_vgg.pth` or `lpips-vgg.pth`), torch's hub cache, or an
  installed lpips package's folder; both read by timenet.io.load_checkpoint.

Fallback without those files (announced once with warnings.warn): a
weight-free multi-scale SSIM distance, `SSIMLoss`:
    per scale j (the image, then 2x2 average-pooled, while the side is at
    least the window): SSIM_j = mean of the SSIM map (Gaussian window 11,
    sigma 1.5, valid positions, data range 2 for [-1, 1] images, per
    channel); distance = sum_j w_j (1 - SSIM_j) / sum_j w_j with the MS-SSIM
    weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) of the scales used.
  The arithmetic weighting replaces MS-SSIM's product of powers, which is
  undefined for the negative contrast terms early training produces.
"""
import glob
import importlib.util
import os
import warnings

import numpy as np

from .autograd import Tensor, _tensor, no_grad, record
from .nn import functional as F

__all__ = ["Perceptual", "LPIPS", "SSIMLoss", "find_lpips_weights", "LPIPS_LAYERS",
           "lpips_random_lin"]

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_LPIPS_IDX = (3, 8, 15, 22, 29)         # their indices in vgg16.features
_LPIPS_CH = (64, 128, 256, 512, 512)
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M")
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LIN_FILES = ("vgg.pth", "lpips_vgg.pth", "lpips-vgg.pth")
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_warned = False


# -- weight files -------------------------------------------------------------------

def find_lpips_weights():
    """Path of the lpips package's vgg.pth (see the module docstring) or None."""
    from .models.backbones import _search_dirs
    for d in _search_dirs():
        for f in LIN_FILES:
            p = os.path.join(d, f)
            if os.path.isfile(p):
                return p
    spec = importlib.util.find_spec("lpips")  # locates the package without importing torch
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            hits = sorted(glob.glob(os.path.join(glob.escape(loc), "weights", "v0.1", "vgg.pth")))
            if hits:
                return hits[0]
    return None


def _lin_weights(state):
    """The five lin weights (C_k,) from an lpips state dict."""
    out = []
    for k, C in enumerate(_LPIPS_CH):
        for key in (f"lin{k}.model.1.weight", f"lin{k}.weight", f"net.lin{k}.model.1.weight"):
            if key in state:
                w = np.asarray(state[key], np.float32)
                break
        else:
            raise ValueError(f"LPIPS: lin weights lack lin{k}.model.1.weight "
                             f"(keys: {sorted(state)[:8]})")
        if w.size != C:
            raise ValueError(f"LPIPS: lin{k} weight has {w.size} entries, expected {C}")
        out.append(w.reshape(C))
    return out


def lpips_random_lin(seed=0):
    """An lpips-format lin state dict with random non-negative weights (tests)."""
    rng = np.random.default_rng(seed)
    return {f"lin{k}.model.1.weight": rng.uniform(0, 0.2, (1, C, 1, 1)).astype(np.float32)
            for k, C in enumerate(_LPIPS_CH)}


# -- the LPIPS head as one taped op ----------------------------------------------------

def _unit(f, eps):
    n = np.sqrt(np.sum(f * f, axis=1, keepdims=True))
    return f / (n + eps), n


def lpips_layer_distance(fx, fy, w, eps=1e-10):
    """Per image: mean over positions of sum_c w_c (fx/|fx| - fy/|fy|)_c^2.
    fx Tensor (N, C, H, W) (differentiable), fy array (N, C, H, W), w (C,).
    Returns a Tensor (N,) on fx's device. The head is numpy: on a GPU the
    features make a host round trip (the engine has no sqrt kernel yet)."""
    fx = _tensor(fx)
    dev = fx.device
    x = np.ascontiguousarray(fx.numpy(), np.float32)
    if not isinstance(fy, np.ndarray) and hasattr(fy, "numpy"):
        fy = fy.numpy()                    # a Tensor or a DeviceArray
    fy = np.asarray(fy, np.float32)
    ax, nx = _unit(x, eps)
    ay, _ = _unit(fy, eps)
    d = ax - ay
    wb = np.asarray(w, np.float32).reshape(1, -1, 1, 1)
    HW = x.shape[2] * x.shape[3]
    out = np.sum(wb * d * d, axis=(1, 2, 3), dtype=np.float32) / np.float32(HW)

    def backward(g):
        g = g.numpy() if not isinstance(g, np.ndarray) else g
        u = (np.float32(2.0 / HW) * g.reshape(-1, 1, 1, 1)) * wb * d      # dL/d(ax)
        ne = nx + eps
        dot = np.sum(u * x, axis=1, keepdims=True)
        safe = np.where(nx > 0, nx, 1.0)
        dx = u / ne - x * np.where(nx > 0, dot / (safe * ne * ne), 0.0)
        return (Tensor(dx.astype(np.float32), device=dev).data,)
    return record(Tensor(out.astype(np.float32), device=dev).data, (fx,), backward)


class LPIPS:
    """LPIPS-VGG distance, differentiable in its first argument.

    vgg_weights: path / state dict of torchvision's vgg16 ("auto": find it);
    lin_weights: path / state dict of lpips's vgg.pth ("auto": find it).
    `lpips(x, y)` with x, y (N, 3, H, W) in [-1, 1] -> scalar Tensor (the
    batch mean); `lpips.distance(x, y)` -> (N,) Tensor."""

    def __init__(self, vgg_weights="auto", lin_weights="auto"):
        from .io import load_checkpoint
        from .models.backbones import _missing_weights_message, find_weights
        if isinstance(vgg_weights, str) and vgg_weights == "auto":
            vgg_weights = find_weights("vgg16")
            if vgg_weights is None:
                raise FileNotFoundError(_missing_weights_message("vgg16"))
        if isinstance(lin_weights, str) and lin_weights == "auto":
            lin_weights = find_lpips_weights()
            if lin_weights is None:
                raise FileNotFoundError(
                    "no LPIPS lin weights: put the lpips package's weights/v0.1/vgg.pth in a "
                    "directory named by $TIMENET_WEIGHTS (or pass lin_weights=<path>)")
        vgg = vgg_weights if isinstance(vgg_weights, dict) else load_checkpoint(vgg_weights)
        lin = lin_weights if isinstance(lin_weights, dict) else load_checkpoint(lin_weights)
        self.lin = _lin_weights(lin)
        self.convs = []   # (weight Tensor, bias Tensor), frozen
        idx, c = 0, 3
        self.plan = []
        for v in _VGG16_CFG:
            if v == "M":
                self.plan.append(("pool", idx))
                idx += 1
                continue
            wk, bk = f"features.{idx}.weight", f"features.{idx}.bias"
            if wk not in vgg or bk not in vgg:
                raise ValueError(f"LPIPS: vgg16 weights lack {wk} / {bk}")
            w = np.asarray(vgg[wk], np.float32)
            if w.shape != (v, c, 3, 3):
                raise ValueError(f"LPIPS: {wk} has shape {w.shape}, expected {(v, c, 3, 3)}")
            self.plan.append(("conv", idx, w, np.asarray(vgg[bk], np.float32)))
            self.plan.append(("relu", idx + 1))
            idx, c = idx + 2, v
        self.shift = np.asarray(LPIPS_SHIFT, np.float32).reshape(1, 3, 1, 1)
        self.inv_scale = (1.0 / np.asarray(LPIPS_SCALE, np.float32)).reshape(1, 3, 1, 1)
        self.kind = "lpips"
        self._on = _PerDevice()

    def features(self, x):
        """The five LPIPS layers of x (Tensor or array, [-1, 1]) -> list of Tensors,
        on x's device."""
        x = _tensor(x)
        shift, inv_scale = self._on(x.device, self.shift, self.inv_scale)
        h = (x - shift) * inv_scale
        out, last = [], _LPIPS_IDX[-1]
        for step in self.plan:
            kind, idx = step[0], step[1]
            if idx > last:
                break
            if kind == "conv":
                w, b = self._on(h.device, step[2], step[3])
                h = F.conv2d(h, w, b, 1, 1)
            elif kind == "relu":
                h = F.relu(h)
            else:
                h = F.max_pool2d(h, 2, 2)
            if idx in _LPIPS_IDX:
                out.append(h)
        return out

    def distance(self, x, y):
        with no_grad():
            fy = [f.data for f in self.features(_tensor(y).detach())]
        fx = self.features(x)
        total = None
        for a, b, w in zip(fx, fy, self.lin):
            d = lpips_layer_distance(a, b, w)
            total = d if total is None else total + d
        return total

    def __call__(self, x, y):
        return self.distance(x, y).mean()


class _PerDevice:
    """Frozen constants (host arrays) as Tensors on a device, made once per
    (device, array): a loss follows its inputs to whichever device they are on."""

    def __init__(self):
        self.cache = {}

    def __call__(self, device, *arrays):
        out = []
        for a in arrays:
            key = (device, id(a))
            if key not in self.cache:
                self.cache[key] = (Tensor(a, device=device), a)   # a kept: id stays unique
            out.append(self.cache[key][0])
        return out


# -- the weight-free fallback ----------------------------------------------------------

def _gaussian(size, sigma):
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-r * r / (2 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


class SSIMLoss:
    """Multi-scale SSIM distance (see the module docstring); `loss(x, y)` ->
    scalar Tensor, differentiable in x; x, y (N, C, H, W) in [-1, 1]."""

    def __init__(self, window=11, sigma=1.5, data_range=2.0, max_scales=5, weights=None):
        self.window, self.sigma = int(window), float(sigma)
        g = _gaussian(self.window, self.sigma)
        self.gw = g.reshape(1, 1, 1, -1)   # along W
        self.gh = g.reshape(1, 1, -1, 1)   # along H
        self._on = _PerDevice()
        self.c1 = (0.01 * data_range) ** 2
        self.c2 = (0.03 * data_range) ** 2
        self.max_scales = int(max_scales)
        self.weights = tuple(MSSSIM_WEIGHTS if weights is None else weights)
        self.kind = "ssim"

    def _blur(self, a):
        gw, gh = self._on(a.device, self.gw, self.gh)
        return F.conv2d(F.conv2d(a, gw, None, 1, 0), gh, None, 1, 0)

    def ssim(self, x, y):
        """Mean SSIM of one scale: x Tensor, y Tensor (no grad), (M, 1, H, W)."""
        mx, my = self._blur(x), self._blur(y)
        sxx = self._blur(x * x) - mx * mx
        syy = self._blur(y * y) - my * my
        sxy = self._blur(x * y) - mx * my
        num = (mx * my * 2.0 + self.c1) * (sxy * 2.0 + self.c2)
        den = (mx * mx + my * my + self.c1) * (sxx + syy + self.c2)
        return (num / den).mean()

    def __call__(self, x, y):
        x = _tensor(x)
        N, C, H, W = x.shape
        xs = x.reshape(N * C, 1, H, W)
        ys = Tensor(_tensor(y).data.reshape(N * C, 1, H, W))   # a view; no tape
        total, wsum = None, 0.0
        for j in range(min(self.max_scales, len(self.weights))):
            if min(xs.shape[2:]) < self.window:
                break
            term = (1.0 - self.ssim(xs, ys)) * float(self.weights[j])
            total = term if total is None else total + term
            wsum += self.weights[j]
            if min(xs.shape[2:]) // 2 < self.window:
                break
            xs = F.avg_pool2d(xs, 2, 2)
            with no_grad():
                ys = F.avg_pool2d(ys, 2, 2)
        if total is None:
            raise ValueError(f"SSIMLoss: images {H}x{W} are smaller than the window "
                             f"{self.window}")
        return total * (1.0 / wsum)


class Perceptual:
    """The TPN's perceptual term. kind: "auto" (LPIPS when both weight files
    are found, else SSIMLoss with a one-time warning), "lpips" (errors
    without the files), "ssim", or "none" (always 0). `.kind` says which
    is in use; `perc(x, y)` -> scalar Tensor."""

    def __init__(self, kind="auto", vgg_weights="auto", lin_weights="auto"):
        global _warned
        if kind not in ("auto", "lpips", "ssim", "none"):
            raise ValueError(f"Perceptual: kind must be auto, lpips, ssim or none, got {kind!r}")
        self.impl = None
        if kind in ("auto", "lpips"):
            try:
                self.impl = LPIPS(vgg_weights, lin_weights)
            except FileNotFoundError as e:
                if kind == "lpips":
                    raise
                if not _warned:
                    warnings.warn(f"LPIPS weights not found ({e}); the TPN's perceptual loss "
                                  "falls back to a weight-free multi-scale SSIM distance",
                                  stacklevel=2)
                    _warned = True
        if self.impl is None and kind != "none":
            self.impl = SSIMLoss()
        self.kind = "none" if self.impl is None else self.impl.kind

    def __call__(self, x, y):
        if self.impl is None:
            return Tensor(np.zeros((), np.float32), device=_tensor(x).device)
        return self.impl(x, y)

    def __repr__(self):
        return f"Perceptual({self.kind})"
