"""Anomaly maps and image scores from a reconstruction (DESIGN.md §1.7).

The paper's Eq. 5, after DDAD, with the C kernels of csrc/score/:

    F(d1, d2, w) = (w * max(d2) / max(d1)) * d1 + d2

- feature level: a backbone's layers (default torchvision `layer1..3` of
  WideResNet-101-2) on x1 and x1_hat; per layer i, d1_i = Euclidean and
  d2_i = cosine distance (1 - cos) per position, both upsampled bilinearly
  (PyTorch `align_corners=False`) to the image size;
  S_f = sum_i F(d1_i, d2_i, w_i);
- pixel level: S_p = ||x1 - x1_hat||^2 over channels;
- S = F(S_p, S_f, lam), then a Gaussian filter (sigma 4, truncate 4,
  scipy's "reflect" border);
- image score: 8 rounds of 8x8 stride-1 average pooling without padding
  (each round shrinks the map by 7: 256 -> 200), then the max (DiAD).

The maxima in F: DDAD takes them over the test batch, so one image's score
depends on its batch mates (`ratios=None`, kept for paper-faithful
comparisons). timenet's default workflow estimates each ratio max(d2)/max(d1)
once on normal training images (`estimate_ratios`), stores it with the model
(`Ratios.to_dict`), and passes it at test time: scores are then per image.

Feature extractors: anything with `.features(x, layers) -> {layer: (N, C,
h, w)}` (e.g. `timenet.models.backbones.create(...)`), a backbone name or
"auto" (WideResNet-101-2 with the torchvision weights from
$TIMENET_WEIGHTS), or None / "pixel" for pixel-only scoring (S = S_p).
Without the pretrained file (as on CI), `resolve_extractor` falls back to
`fallback` ("pixel" by default; "random" = the same backbone with random
weights; "error" raises) and announces it once per process, through
`warnings.warn(ScoringFallbackWarning)`: a fallback is never silent.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._loader import _core
from .autograd import Tensor, _DeviceArray, _cat_rows, _cuda_kernels, _to_device

__all__ = ["anomaly_map", "image_score", "estimate_ratios", "Ratios", "resolve_extractor",
           "ScoringFallbackWarning", "DEFAULT_LAYERS", "DEFAULT_BACKBONE"]

DEFAULT_BACKBONE = "wide_resnet101_2"
DEFAULT_LAYERS = ("layer1", "layer2", "layer3")


class ScoringFallbackWarning(UserWarning):
    """The pretrained feature extractor is unavailable; a fallback is used."""


@dataclass
class Ratios:
    """The stored ratios max(d2)/max(d1) of each F term, from normal images.

    layers: layer name -> max(cosine map) / max(Euclidean map) (S_f's terms);
    pixel: max(S_f) / max(S_p) (the lam term), None for pixel-only scoring.
    """
    layers: dict = field(default_factory=dict)
    pixel: float = None

    def to_dict(self):
        """Plain floats, for JSON / safetensors metadata next to the model."""
        return {"layers": {k: float(v) for k, v in self.layers.items()},
                "pixel": None if self.pixel is None else float(self.pixel)}

    @classmethod
    def from_dict(cls, d):
        return cls({str(k): float(v) for k, v in d.get("layers", {}).items()},
                   None if d.get("pixel") is None else float(d["pixel"]))


# -- extractor choice -------------------------------------------------------

_announced = set()
_cache = {}


def _announce(msg):
    if msg in _announced:
        return
    _announced.add(msg)
    # One channel only: a logger line as well printed the message twice on a
    # console with no logging configured (logging's last-resort handler).
    warnings.warn(msg, ScoringFallbackWarning, stacklevel=3)


def resolve_extractor(extractor="auto", fallback="pixel", device="cpu"):
    """The feature extractor to score with, or None for pixel-only scoring.

    extractor: an object with `.features(x, layers)` (returned as is), None
    or "pixel" (None), a backbone name (`timenet.models.backbones.ARCHS`) or
    "auto" (= DEFAULT_BACKBONE), loaded with weights="auto" (cached per
    process). When that file is missing: `fallback` "pixel" -> None, "random"
    -> the same backbone with random weights, "error" -> FileNotFoundError,
    or an extractor object; the fallback is announced once. device: where
    a backbone made here runs (one cached copy per device; objects passed in
    are returned as they are).
    """
    if extractor is None or (isinstance(extractor, str) and extractor == "pixel"):
        return None
    if hasattr(extractor, "features"):
        return extractor
    if not isinstance(extractor, str):
        raise TypeError("extractor must be None, 'pixel', 'auto', a backbone name or an object "
                        f"with .features(x, layers), got {type(extractor).__name__}")
    from .models import backbones
    name = DEFAULT_BACKBONE if extractor == "auto" else extractor
    if name not in backbones.ARCHS:
        raise ValueError(f"unknown extractor {extractor!r}: use 'auto', 'pixel', None or one of "
                         f"{', '.join(backbones.ARCHS)}")
    key = (name, "auto", device)
    if key not in _cache:
        try:
            _cache[key] = backbones.create(name, weights="auto").to(device)
        except FileNotFoundError as e:
            if isinstance(fallback, str) and fallback == "error":
                raise
            if fallback is None or (isinstance(fallback, str) and fallback == "pixel"):
                _announce(f"scoring: {e}; falling back to pixel-only scoring (S = S_p)")
                return None
            if isinstance(fallback, str) and fallback == "random":
                _announce(f"scoring: {e}; falling back to {name} with RANDOM weights")
                rkey = (name, "random", device)
                if rkey not in _cache:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # announced above
                        _cache[rkey] = backbones.create(name, weights=None).to(device)
                return _cache[rkey]
            if hasattr(fallback, "features"):
                _announce(f"scoring: {e}; falling back to the given extractor {fallback!r}")
                return fallback
            raise ValueError(f"fallback must be 'pixel', 'random', 'error' or an extractor, "
                             f"got {fallback!r}") from e
    return _cache[key]


# -- the map ----------------------------------------------------------------

def _images(x, name):
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or min(x.shape) == 0:
        raise ValueError(f"anomaly_map: {name} must be (N, C, H, W) images, got shape {x.shape}")
    return x


def _layer_weights(weights, layers):
    if np.isscalar(weights):
        return {layer: float(weights) for layer in layers}
    if isinstance(weights, dict):
        missing = [layer for layer in layers if layer not in weights]
        if missing:
            raise ValueError(f"weights has no entry for layer {missing[0]!r}")
        return {layer: float(weights[layer]) for layer in layers}
    weights = list(weights)
    if len(weights) != len(layers):
        raise ValueError(f"weights must be a number or one per layer ({len(layers)}), "
                         f"got {len(weights)}")
    return {layer: float(w) for layer, w in zip(layers, weights)}


def _ops(a):
    """The score kernels where `a` lives: `_core`'s for a numpy array, their
    CUDA versions (same names and arguments) for a DeviceArray."""
    return _cuda_kernels if type(a) is _DeviceArray else _core


def _host(a):
    return a.numpy() if type(a) is _DeviceArray else a


def _halves(f, n):
    """f[:n], f[n:] of a (2n, ...) array, on its device."""
    if type(f) is _DeviceArray:
        t = Tensor(f)
        return t[:n].data, t[n:].data
    return f[:n], f[n:]


def _feature_distances(x1, x1_hat, extractor, layers, batch_size):
    """Per layer (d1 Euclidean, d2 cosine), each (N, h, w), at feature
    resolution, on the extractor's device (a backbone moved to a GPU keeps
    its features there)."""
    N = x1.shape[0]
    out = {layer: ([], []) for layer in layers}
    for i in range(0, N, batch_size):
        both = np.concatenate([x1[i:i + batch_size], x1_hat[i:i + batch_size]])
        feats = extractor.features(both, layers)
        n = both.shape[0] // 2
        for layer in layers:
            if layer not in feats:
                raise ValueError(f"anomaly_map: the extractor returned no {layer!r} features "
                                 f"(got {sorted(map(str, feats))})")
            a, b = _halves(feats[layer], n)
            k = _ops(a)
            out[layer][0].append(k.l2_distance(a, b))
            out[layer][1].append(k.cosine_distance(a, b))
    return {layer: (_cat_rows(d1), _cat_rows(d2)) for layer, (d1, d2) in out.items()}


def _feature_map(dists, lw, ratios, H, W, align_corners):
    """S_f (N, H, W) from low-resolution distances; the ratios it used."""
    s_f, used = None, {}
    for layer, (d1, d2) in dists.items():
        k = _ops(d1)
        u1 = k.upsample_bilinear(d1, H, W, align_corners)
        u2 = k.upsample_bilinear(d2, H, W, align_corners)
        r = None if ratios is None else ratios[layer]
        term, used[layer] = k.combine_maps(u1, u2, lw[layer], r)
        if s_f is None:
            s_f = term
        elif type(s_f) is _DeviceArray:
            s_f = _core.cuda_binary(0, s_f, term)
        else:
            np.add(s_f, term, out=s_f)
    return s_f, used


def _check_ratios(ratios, layers, pixel_only):
    if ratios is None:
        return None
    if isinstance(ratios, dict):
        ratios = Ratios.from_dict(ratios)
    if not isinstance(ratios, Ratios):
        raise TypeError(f"ratios must be a Ratios, its to_dict(), or None, got {type(ratios)}")
    if not pixel_only:
        missing = [layer for layer in layers if layer not in ratios.layers]
        if missing or ratios.pixel is None:
            raise ValueError(f"ratios were estimated for layers {sorted(ratios.layers)} "
                             f"(pixel ratio {ratios.pixel}), not for {list(layers)}: "
                             "re-run estimate_ratios with the same extractor and layers")
    return ratios


def anomaly_map(x1, x1_hat, extractor, layers=DEFAULT_LAYERS, weights=7, lam=7, sigma=4,
                ratios=None, batch_size=8, align_corners=False, border="reflect",
                return_parts=False):
    """Anomaly maps (N, H, W) float32 of images x1 and their reconstructions
    x1_hat, both (N, C, H, W) in [-1, 1] (see the module docs).

    extractor: see `resolve_extractor` (None / "pixel": pixel-only, S = S_p).
    weights: w_i, one number for all layers, a sequence or a dict per layer.
    lam: the weight of the pixel term. sigma: the Gaussian filter (0: none).
    ratios: a `Ratios` from `estimate_ratios` (stored-ratio mode), or None:
    each max(d2)/max(d1) over this batch (DDAD's per-batch mode).
    batch_size: images per backbone call (x1 and x1_hat go together).
    align_corners: of the bilinear upsampling (False: PyTorch's default
    half-pixel rule). border: the Gaussian's, scipy's names ("reflect":
    scipy's default; "mirror" is torch/kornia's "reflect").
    return_parts: also return {"S_p", "S_f", "ratios"} (before the filter).
    """
    x1, x1_hat = _images(x1, "x1"), _images(x1_hat, "x1_hat")
    if x1.shape != x1_hat.shape:
        raise ValueError(f"anomaly_map: x1 and x1_hat must have the same shape, got "
                         f"{x1.shape} and {x1_hat.shape}")
    extractor = resolve_extractor(extractor)
    layers = tuple(layers)
    ratios = _check_ratios(ratios, layers, extractor is None)
    N, _, H, W = x1.shape
    s_p = _core.l2_distance(x1, x1_hat, squared=True)
    if extractor is None:
        s, s_f, used = s_p, None, Ratios()
    else:
        lw = _layer_weights(weights, layers)
        dists = _feature_distances(x1, x1_hat, extractor, layers, max(1, int(batch_size)))
        s_f, used_layers = _feature_map(dists, lw, None if ratios is None else ratios.layers,
                                        H, W, align_corners)
        if type(s_f) is _DeviceArray:   # the rest runs where the features are
            s_p = _to_device(s_p, f"cuda:{s_f.device}")
        s, r_pix = _ops(s_f).combine_maps(s_p, s_f, float(lam),
                                          None if ratios is None else ratios.pixel)
        used = Ratios(used_layers, r_pix)
    out = _ops(s).gaussian_filter(s, float(sigma), 4.0, border) if sigma else s
    if return_parts:
        return _host(out), {"S_p": _host(s_p), "S_f": None if s_f is None else _host(s_f),
                            "ratios": used}
    return _host(out)


def image_score(maps, kernel=8, rounds=8):
    """Image scores (N,) of anomaly maps (N, H, W): `rounds` rounds of
    kernel x kernel stride-1 average pooling without padding, then the max
    (DiAD). Needs H, W > rounds*(kernel-1) (57 for the defaults)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    return _core.image_score(maps, int(kernel), int(rounds))


def estimate_ratios(x1, x1_hat=None, extractor="auto", layers=DEFAULT_LAYERS, weights=7,
                    batch_size=8, align_corners=False):
    """The ratios max(d2)/max(d1) of every F term over normal images.

    x1, x1_hat: (N, C, H, W) arrays of normal training images and their
    reconstructions, or x1 an iterable of (x1, x1_hat) batches (x1_hat None).
    The maxima are over all images (upsampled maps, as at test time). The
    pixel ratio needs S_f, which needs the layer ratios: the low-resolution
    distance maps are kept (about 43 KB per 256^2 image for WRN layers 1-3)
    and S_f is rebuilt from them after the first pass.
    Returns `Ratios` (empty for pixel-only scoring).
    """
    extractor = resolve_extractor(extractor)
    if extractor is None:
        return Ratios()
    layers = tuple(layers)
    lw = _layer_weights(weights, layers)
    if x1_hat is not None:
        x1a, x1b = _images(x1, "x1"), _images(x1_hat, "x1_hat")
        if x1a.shape != x1b.shape:
            raise ValueError(f"estimate_ratios: x1 and x1_hat must have the same shape, got "
                             f"{x1a.shape} and {x1b.shape}")
        step = max(1, int(batch_size))
        batches = ((x1a[i:i + step], x1b[i:i + step]) for i in range(0, x1a.shape[0], step))
    else:
        batches = x1
    m1 = {layer: 0.0 for layer in layers}
    m2 = {layer: 0.0 for layer in layers}
    mp, cache, size = 0.0, [], None
    for a, b in batches:
        a, b = _images(a, "x1"), _images(b, "x1_hat")
        if a.shape != b.shape:
            raise ValueError(f"estimate_ratios: a batch of x1 {a.shape} and x1_hat {b.shape}")
        if size is None:
            size = a.shape[2:]
        elif a.shape[2:] != size:
            raise ValueError(f"estimate_ratios: images of different sizes {size} and {a.shape[2:]}")
        H, W = size
        mp = max(mp, float(_core.l2_distance(a, b, squared=True).max()))
        # A one-off pass (the training images' maxima): distances back to the host.
        dists = {layer: (_host(d1), _host(d2)) for layer, (d1, d2) in
                 _feature_distances(a, b, extractor, layers, max(1, int(batch_size))).items()}
        for layer, (d1, d2) in dists.items():
            m1[layer] = max(m1[layer], float(_core.upsample_bilinear(d1, H, W, align_corners).max()))
            m2[layer] = max(m2[layer], float(_core.upsample_bilinear(d2, H, W, align_corners).max()))
        cache.append(dists)
    if not cache:
        raise ValueError("estimate_ratios: no images given")
    r_layers = {layer: (m2[layer] / m1[layer] if m1[layer] > 0 else 0.0) for layer in layers}
    msf = 0.0
    for dists in cache:
        s_f, _ = _feature_map(dists, lw, r_layers, H, W, align_corners)
        msf = max(msf, float(s_f.max()))
    return Ratios(r_layers, msf / mp if mp > 0 else 0.0)
