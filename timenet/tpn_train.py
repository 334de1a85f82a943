"""Training the timestep-perceptive network (paper Algorithm 2, DESIGN.md §1.5).

    model = TimeNetModel(denoiser, TPN.for_denoiser(denoiser))
    losses = train_tpn(model, (x, c), steps=2000, batch_size=8, ckpt_dir="run/tpn")

Each step: a batch of normal images x1 and class ids c from `data` (the
flow module's protocol: `sample_batch(rng, n)`, or a tuple (x, c)); the
synthesizer (DRAEM-style, timenet.anomaly) makes x_aug from x1 (about half
stay clean); x0 ~ N(0, I); x_t = t x_aug + (1 - t) x0; the model's one-step
reconstruction x1_hat = x_t + (1 - T) v(x_t, t, c, inject = TPN features);
loss = MSE(x1_hat, x1) + perceptual_weight * perceptual(x1_hat, x1) against
the CLEAN image. Only the TPN's parameters are optimised; the denoiser is
frozen (requires_grad False, restored afterwards) and its parameters are
checked bit-identical at the end (RuntimeError otherwise).

One generator, np.random.default_rng(seed), draws the batches, the
synthetic anomalies and the noise, in that order per step; checkpoints
(timenet.checkpoint, stage "tpn", the TPN's weights only) save it with the
AdamW state and the losses, so resume=True repeats the uninterrupted run's
losses and weights exactly (as flow.train_flow). A checkpoint also records
a digest of the denoiser's parameters (the "denoiser" entry of its train
state), and resuming against another denoiser raises ValueError.
"""
import hashlib

import numpy as np

from .autograd import Tensor
from .flow import _as_data
from .nn import functional as F
from .training import fit_loop

__all__ = ["train_tpn", "params_digest", "tpn_loss"]


def params_digest(module):
    """A hex digest of every parameter's name, shape and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(str(p.data.shape).encode())
        h.update(np.ascontiguousarray(p.numpy()).tobytes())   # host bytes on any device
    return h.hexdigest()


def tpn_loss(model, x1, c, rng, t, synthesizer, perceptual, perceptual_weight=1.0):
    """One batch of Algorithm 2: returns (loss Tensor, mse float, perceptual float).
    Draws the synthetic anomalies, then x0, from rng."""
    x1 = np.ascontiguousarray(x1, np.float32)
    x_aug, _ = synthesizer(x1, rng)
    x0 = rng.standard_normal(x1.shape, dtype=np.float32)
    x_t = np.float32(t) * x_aug + np.float32(1.0 - t) * x0
    dev = model.denoiser.device
    x1_hat, _ = model(Tensor(x_t, device=dev), t, c, use_tpn=True)
    target = Tensor(x1, device=dev)
    mse = F.mse_loss(x1_hat, target)
    if perceptual is None or perceptual_weight == 0:
        return mse, float(mse.item()), 0.0
    perc = perceptual(x1_hat, target)
    return mse + perc * float(perceptual_weight), float(mse.item()), float(perc.item())


def train_tpn(model, data, steps, batch_size, lr=1e-4, t=0.83, synthesizer=None,
              perceptual="auto", perceptual_weight=1.0, warmup=None, grad_clip=1.0,
              ckpt_dir=None, ckpt_every=1000, resume=False, seed=0, classes=None,
              weight_decay=0.0, progress=True, callback=None, stage="tpn", autocast=False):
    """Train `model.tpn` (a TimeNetModel) by Algorithm 2; returns the per-step losses.

    data: normal training images (flow's sample_batch protocol or (x, c)).
    t: the diffusion timestep of the noised input (0.83, the paper's).
    synthesizer: a timenet.anomaly.Synthesizer (default: procedural
        textures, the images' size).
    perceptual: a callable (x1_hat Tensor, x1 Tensor) -> scalar Tensor, a
        kind for timenet.perceptual.Perceptual ("auto", "lpips", "ssim",
        "none"), or None (pixel MSE only).
    Adam(W): lr, betas (0.9, 0.999), weight_decay, warm-up over `warmup`
    steps (default min(1000, steps // 10)), then constant; gradients clipped
    to global norm grad_clip. ckpt_dir / ckpt_every / resume / callback as
    flow.train_flow; classes: names stored in the checkpoint. autocast:
    bf16 autocast for the steps (a model on a GPU).
    """
    from .anomaly import Synthesizer
    from .perceptual import Perceptual
    data = _as_data(data)
    if not 0.0 < float(t) < 1.0:
        raise ValueError(f"train_tpn: t must lie in (0, 1), got {t}")
    t = float(t)
    if synthesizer is None:
        synthesizer = Synthesizer()
    if isinstance(perceptual, str):
        perceptual = Perceptual(perceptual)
    if warmup is None:
        warmup = min(1000, int(steps) // 10)
    denoiser, tpn = model.denoiser, model.tpn
    tpn_ids = {id(p) for p in tpn.parameters()}
    if any(id(p) in tpn_ids for p in denoiser.parameters()):
        raise ValueError("train_tpn: the TPN shares parameters with the denoiser")
    flags = [p.requires_grad for p in denoiser.parameters()]
    denoiser.requires_grad_(False)
    digest = params_digest(denoiser)

    def step_loss(rng):
        x1, c = data.sample_batch(rng, int(batch_size))[:2]
        loss, mse, perc = tpn_loss(model, x1, c, rng, t, synthesizer, perceptual,
                                   perceptual_weight)
        return loss, {"mse": mse, "perc": perc}
    kind = getattr(perceptual, "kind", None if perceptual is None else type(perceptual).__name__)
    try:
        losses = fit_loop(tpn, step_loss, steps, batch_size, lr=lr, warmup=warmup,
                          grad_clip=grad_clip, weight_decay=weight_decay, ckpt_dir=ckpt_dir,
                          ckpt_every=ckpt_every, resume=resume, seed=seed, stage=stage,
                          classes=classes, progress=progress, callback=callback,
                          identity={"t": t, "denoiser": digest},
                          info={"lr": lr, "perceptual": kind,
                                "perceptual_weight": perceptual_weight},
                          who="train_tpn", autocast=autocast)
    finally:
        for p, f in zip(denoiser.parameters(), flags):
            p.requires_grad = f
    if params_digest(denoiser) != digest:
        raise RuntimeError("train_tpn: the denoiser's parameters changed during TPN training")
    return losses
