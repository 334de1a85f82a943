"""The whole TimeNet pipeline behind one object.

    tn = TimeNet(preset="small")
    tn.fit(MVTecAD(root, split="train", image_size=64), out_dir="runs/a")
    out = tn.predict(images, classes)      # reconstructions, maps, scores, T
    results = tn.evaluate(MVTecAD(root, split="test", image_size=64,
                                  class_names=tn.class_names))
    tn.save("runs/a"); tn = TimeNet.load("runs/a")
    tn = TimeNet(preset="paper", device="cuda")   # every stage on a GPU

fit() runs the method's three stages (DESIGN.md §1): class-conditional
Rectified Flow, one Reflow round, the timestep-perceptive network, and then
estimates the scoring ratios on normal training images. Each stage
checkpoints under out_dir/stages/<stage>, so `fit(..., resume=True)` picks
up where an interrupted run stopped.
"""
import json
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import checkpoint as ckpt
from . import flow, scoring
from .evaluation import evaluate_maps
from .models import UNet
from .models.unet import PRESETS
from .nn.init import manual_seed

FORMAT = "timenet-run"

# Per-preset defaults of the training schedule. `small` trains all stages on
# 5 classes x 80 images in at most 30 minutes on a 2-core CPU (`timenet
# train --preset small`: 26.8 min measured, part of it on a shared machine;
# a 1500/300/80/400 schedule took 37.6 min); `paper` is the paper's scale
# and wants a GPU. ode_tol: RK45's rtol = atol for the Reflow pairs (1e-5 in
# the paper; 1e-3 cuts the CPU presets' model calls about 10x).
SCHEDULES = {
    "tiny":  dict(flow_steps=600, reflow_steps=200, reflow_pairs=64, tpn_steps=200,
                  batch_size=16, ode_tol=1e-3),
    "small": dict(flow_steps=1000, reflow_steps=150, reflow_pairs=64, tpn_steps=200,
                  batch_size=8, ode_tol=1e-3),
    "paper": dict(flow_steps=200000, reflow_steps=50000, reflow_pairs=10000,
                  tpn_steps=50000, batch_size=16, ode_tol=1e-5),
}


@dataclass
class TimeNetConfig:
    """Everything a run needs, saved with the model.

    preset: the U-Net preset ("tiny", "small", "paper"); image_size 0 means
    the preset's. Schedule fields left None take SCHEDULES[preset].
    t: the diffusion timestep of the one-step reconstruction (0.83).
    extractor: the scoring backbone ("auto": WideResNet-101-2 with the
    torchvision weights from $TIMENET_WEIGHTS; "pixel": pixel-only);
    fallback: what scoring uses when those weights are missing ("pixel",
    "random"). weights / lam / sigma: Eq. 5's w_i, lambda and the Gaussian
    (sigma None: 4 at 256 px, scaled with the image size).
    autocast: bf16 autocast for the training steps on a GPU (conv, linear
    and attention in bf16 with fp32 accumulation and fp32 master weights;
    the Reflow pairs' RK45 and inference stay float32).
    """
    preset: str = "small"
    image_size: int = 0
    t: float = 0.83
    flow_steps: int = None
    reflow_steps: int = None
    reflow_pairs: int = None
    reflow_rounds: int = 1
    tpn_steps: int = None
    batch_size: int = None
    lr: float = 2e-4
    tpn_lr: float = 1e-4
    ode_tol: float = None
    perceptual: str = "auto"
    texture_dir: str = None
    extractor: str = "auto"
    fallback: str = "pixel"
    layers: tuple = scoring.DEFAULT_LAYERS
    weights: float = 7.0
    lam: float = 7.0
    sigma: float = None
    seed: int = 0
    autocast: bool = False

    def __post_init__(self):
        if self.preset not in SCHEDULES:
            raise ValueError(f"TimeNet: unknown preset {self.preset!r}; choose from "
                             f"{sorted(SCHEDULES)}")
        for k, v in SCHEDULES[self.preset].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if not 0.0 < self.t < 1.0:
            raise ValueError(f"TimeNet: t must lie in (0, 1), got {self.t}")
        self.layers = tuple(self.layers)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _train_arrays(data):
    """(x, c, class_names) from an MVTecAD-like dataset or a tuple."""
    if hasattr(data, "images") and hasattr(data, "class_ids"):
        return data.images(), data.class_ids, list(data.class_names)
    if isinstance(data, (tuple, list)) and len(data) == 3:
        x, c, names = data
        return np.asarray(x, np.float32), np.asarray(c, np.int64), list(names)
    raise TypeError("fit: data must be a dataset (timenet.data.MVTecAD) or (x, c, class_names)")


def resolve_device(device):
    """'cpu', 'cuda:N' for device 'cpu' / 'cuda' / 'cuda:N' / N, or "auto":
    the current GPU when timenet.cuda.is_available(), else the CPU.
    RuntimeError (saying why) when a GPU is asked for and there is none."""
    from . import cuda
    from .autograd import _canonical_device
    if isinstance(device, str) and device == "auto":
        device = "cuda" if cuda.is_available() else "cpu"
    return _canonical_device(device)


class TimeNet:
    """One model for all classes: fit, predict, evaluate, save, load.

    device: where training, reconstruction and feature scoring run ("cpu",
    "cuda", "cuda:N", "auto"); it is a property of this object, not of the
    saved run (`TimeNet.load(run_dir, device=...)`). Data, noise and the
    metrics stay on the host, so a seed draws the same numbers everywhere.
    """

    def __init__(self, config=None, device="cpu", **overrides):
        if config is None:
            config = TimeNetConfig(**overrides)
        elif overrides:
            config = TimeNetConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        self.device = resolve_device(device)
        self.model = None          # TimeNetModel once fitted or loaded
        self.class_names = []
        self.ratios = scoring.Ratios()
        self._extractor_obj = None  # set by use_extractor

    def to(self, device):
        """Move the model (and a given extractor) to `device`; returns self."""
        self.device = resolve_device(device)
        if self.model is not None:
            self.model.to(self.device)
        if self._extractor_obj is not None and hasattr(self._extractor_obj, "to"):
            self._extractor_obj.to(self.device)
        return self

    # -- sizes and scoring settings -------------------------------------------------
    @property
    def image_size(self):
        if self.model is not None:
            return self.model.denoiser.config.image_size
        return self.config.image_size or PRESETS[self.config.preset]["image_size"]

    @property
    def sigma(self):
        s = self.config.sigma
        return 4.0 * self.image_size / 256.0 if s is None else float(s)

    def _extractor(self):
        if self._extractor_obj is not None:
            return self._extractor_obj
        return scoring.resolve_extractor(self.config.extractor, fallback=self.config.fallback,
                                         device=self.device)

    def use_extractor(self, extractor, layers=None, train_data=None):
        """Score with `extractor` (an object with .features(x, layers), a
        backbone name, or "pixel") from now on, re-estimating the stored
        ratios on `train_data` (normal images) when given."""
        if isinstance(extractor, str):
            self.config.extractor = extractor
            self._extractor_obj = None
        else:
            if hasattr(extractor, "to"):
                extractor.to(self.device)
            self._extractor_obj = extractor
        if layers is not None:
            self.config.layers = tuple(layers)
        if train_data is not None:
            x, c, _ = _train_arrays(train_data)
            self._fit_ratios(x, c)
        return self

    def score_pooling(self):
        """(kernel, rounds) of the image score: the paper's 8 rounds of 8x8 at
        256 px, the kernel scaled with the image (2 at 64 px and below), so the
        pooled window covers the same fraction of the image at every size.
        (Keeping 8x8 at 64 px averages over 57 of 64 pixels, which dilutes
        small defects: on the demo's small run, I-AUROC 77.1 vs 93.5.)"""
        kernel = max(2, round(8 * self.image_size / 256))
        rounds = 8
        while rounds > 1 and rounds * (kernel - 1) >= self.image_size:
            rounds -= 1
        return kernel, rounds

    # -- training --------------------------------------------------------------------
    def fit(self, data, out_dir=None, resume=False, progress=True):
        """Flow -> Reflow -> TPN -> ratios on normal training images.

        data: timenet.data.MVTecAD (split="train") or (x, c, class_names).
        out_dir: where stage checkpoints go (needed for resume); the finished
        model is saved there too. Returns self.
        """
        from .anomaly import Synthesizer
        from .timenet_model import TimeNetModel
        from .tpn_train import train_tpn
        cfg = self.config
        x, c, names = _train_arrays(data)
        S = x.shape[-1]
        if cfg.image_size and cfg.image_size != S:
            raise ValueError(f"fit: images are {S} px, the config asks for {cfg.image_size}")
        if cfg.autocast and self.device == "cpu":
            raise ValueError("fit: autocast=True needs a GPU (device='cuda'); the model is on "
                             "the CPU")
        self.class_names = names
        stages = None if out_dir is None else os.path.join(out_dir, "stages")

        def sub(name):
            return None if stages is None else os.path.join(stages, name)

        manual_seed(cfg.seed)   # the initial weights too: one config, one model
        denoiser = UNet.from_preset(cfg.preset, num_classes=len(names), image_size=S)
        denoiser.to(self.device)
        bs = cfg.batch_size
        flow.train_flow(denoiser, (x, c), cfg.flow_steps, bs, lr=cfg.lr, ckpt_dir=sub("flow"),
                        resume=resume, seed=cfg.seed, classes=names, progress=progress,
                        stage="flow", autocast=cfg.autocast)
        if cfg.reflow_rounds and cfg.reflow_steps:
            pair_classes = np.arange(cfg.reflow_pairs) % len(names)
            flow.train_reflow(denoiser, pair_classes, cfg.reflow_steps, bs,
                              rounds=cfg.reflow_rounds, seed=cfg.seed, rtol=cfg.ode_tol,
                              atol=cfg.ode_tol, pair_batch_size=max(bs, 16),
                              ckpt_dir=stages, resume=resume, lr=cfg.lr, class_names=names,
                              progress=progress, autocast=cfg.autocast)
        model = TimeNetModel(denoiser, t_init=cfg.t)   # T == t at init: plain one-step
        model.to(self.device)                           # the new TPN joins the denoiser
        if cfg.tpn_steps:
            synth = Synthesizer(texture_dir=cfg.texture_dir, seed=cfg.seed)
            train_tpn(model, (x, c), cfg.tpn_steps, bs, lr=cfg.tpn_lr, t=cfg.t,
                      synthesizer=synth, perceptual=cfg.perceptual, ckpt_dir=sub("tpn"),
                      resume=resume, seed=cfg.seed, classes=names, progress=progress,
                      autocast=cfg.autocast)
        self.model = model
        self._fit_ratios(x, c)
        if out_dir is not None:
            self.save(out_dir)
        return self

    def _fit_ratios(self, x, c, max_images=64):
        """Eq. 5's ratios max(d2)/max(d1), once, on normal training images."""
        ext = self._extractor()
        if ext is None:
            self.ratios = scoring.Ratios()
            return
        sel = np.random.default_rng(self.config.seed).permutation(len(x))[:max_images]
        xh, _ = self.model.reconstruct(x[sel], c[sel], t=self.config.t,
                                       rng=np.random.default_rng(self.config.seed + 1),
                                       batch_size=16)
        self.ratios = scoring.estimate_ratios(x[sel], xh, ext, self.config.layers,
                                              self.config.weights)

    # -- inference -------------------------------------------------------------------
    def _class_ids(self, classes, n):
        if classes is None:
            if len(self.class_names) != 1:
                raise ValueError(f"predict: classes are needed (the model knows "
                                 f"{self.class_names})")
            return np.zeros(n, np.int64)
        if isinstance(classes, (str, int, np.integer)):
            classes = [classes] * n
        ids = []
        for k in classes:
            if isinstance(k, str):
                if k not in self.class_names:
                    raise ValueError(f"predict: unknown class {k!r}; the model knows "
                                     f"{self.class_names}")
                ids.append(self.class_names.index(k))
            else:
                if not 0 <= int(k) < len(self.class_names):
                    raise ValueError(f"predict: class id {k} out of range for "
                                     f"{len(self.class_names)} classes")
                ids.append(int(k))
        if len(ids) != n:
            raise ValueError(f"predict: {len(ids)} classes for {n} images")
        return np.asarray(ids, np.int64)

    def predict(self, images, classes=None, seed=None, use_tpn=True, batch_size=16,
                progress=None):
        """images (N, 3, S, S) in [-1, 1]; classes: names or ids (one or N).

        Returns {"reconstruction" (N, 3, S, S), "map" (N, S, S), "score" (N,),
        "T" (N, 1, S, S)}. Image i's noise is drawn from (seed, i), seed
        defaulting to the config's, so predictions are reproducible. Works in
        chunks of batch_size images (a progress bar when there are several;
        progress=False hides it). With stored ratios (or pixel-only scoring)
        an image's result does not depend on the others in the call.
        """
        from tqdm.auto import tqdm
        if self.model is None:
            raise RuntimeError("predict: the model is not fitted (call fit or TimeNet.load)")
        x = np.ascontiguousarray(images, np.float32)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (self.image_size,) * 2:
            raise ValueError(f"predict: images must be (N, 3, {self.image_size}, "
                             f"{self.image_size}), got {x.shape}")
        c = self._class_ids(classes, len(x))
        seed = self.config.seed if seed is None else seed
        ext = self._extractor()
        kernel, rounds = self.score_pooling()
        bs = max(1, int(batch_size))
        starts = range(0, len(x), bs)
        show = len(starts) > 1 if progress is None else progress
        parts = []
        for lo in tqdm(starts, desc="predict", unit="batch", disable=not show):
            xb, idx = x[lo:lo + bs], range(lo, min(lo + bs, len(x)))
            # Image i's noise comes from (seed, i): reproducible, whatever batch_size.
            x0 = np.stack([np.random.default_rng([seed, i]).standard_normal(
                x.shape[1:], dtype=np.float32) for i in idx])
            xh, T = self.model.reconstruct(xb, c[lo:lo + bs], t=self.config.t, x0=x0,
                                           use_tpn=use_tpn)
            maps = scoring.anomaly_map(xb, xh, ext, self.config.layers, self.config.weights,
                                       self.config.lam, self.sigma,
                                       ratios=self.ratios if ext is not None else None)
            parts.append((xh, maps, scoring.image_score(maps, kernel=kernel, rounds=rounds), T))
        xh, maps, scores, T = (np.concatenate(a) for a in zip(*parts))
        return {"reconstruction": xh, "map": maps, "score": scores, "T": T}

    def evaluate(self, test_data, use_tpn=True, return_predictions=False):
        """Per-class I-AUROC, P-AUROC, AUPRO, image/pixel F1-max and their mean.

        test_data: timenet.data.MVTecAD(split="test", class_names=self.class_names).
        """
        x, c = test_data.images(), test_data.class_ids
        if list(test_data.class_names) != list(self.class_names):
            raise ValueError(f"evaluate: the test set's class ids {test_data.class_names} differ "
                             f"from the model's {self.class_names}; pass "
                             "class_names=model.class_names to the dataset")
        pred = self.predict(x, c, use_tpn=use_tpn)
        masks = test_data.masks() if getattr(test_data, "has_masks", True) else None
        res = evaluate_maps(pred["map"], pred["score"], test_data.labels, masks, c,
                            self.class_names)
        return (res, pred) if return_predictions else res

    # -- persistence -----------------------------------------------------------------
    def save(self, out_dir):
        """out_dir/timenet.json + denoiser.* + tpn.* (timenet.checkpoint files)."""
        if self.model is None:
            raise RuntimeError("save: nothing to save (the model is not fitted)")
        os.makedirs(out_dir, exist_ok=True)
        ckpt.save_checkpoint(os.path.join(out_dir, "denoiser.safetensors"), self.model.denoiser,
                             stage="final", classes=self.class_names)
        ckpt.save_checkpoint(os.path.join(out_dir, "tpn.safetensors"), self.model.tpn,
                             stage="final", classes=self.class_names)
        meta = {"format": FORMAT, "version": 1, "config": self.config.to_dict(),
                "class_names": self.class_names, "ratios": self.ratios.to_dict()}
        tmp = os.path.join(out_dir, f".timenet.json.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp, os.path.join(out_dir, "timenet.json"))
        return out_dir

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The TimeNet that `save` (or `timenet train --out`) wrote to run_dir,
        on `device`."""
        from .timenet_model import TimeNetModel, load_tpn
        path = os.path.join(run_dir, "timenet.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"TimeNet.load: no trained model in {run_dir} "
                                    "(timenet.json is missing; did training finish?)")
        with open(path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a timenet run description")
        tn = cls(TimeNetConfig.from_dict(meta["config"]), device=device)
        denoiser, _ = ckpt.load_model(os.path.join(run_dir, "denoiser.safetensors"))
        tn.model = TimeNetModel(denoiser, load_tpn(os.path.join(run_dir, "tpn.safetensors")))
        tn.model.to(tn.device)
        tn.class_names = list(meta["class_names"])
        tn.ratios = scoring.Ratios.from_dict(meta.get("ratios") or {})
        return tn

    def __repr__(self):
        state = "fitted" if self.model is not None else "not fitted"
        dev = "" if self.device == "cpu" else f", device={self.device!r}"
        return (f"TimeNet(preset={self.config.preset!r}, image_size={self.image_size}, "
                f"classes={self.class_names}{dev}, {state})")
