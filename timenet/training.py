"""The one training loop every stage uses (flow, Reflow, TPN).

`fit_loop` owns what the stages share: AdamW with warm-up, gradient
clipping, one seeded generator for every random draw, the tqdm bar (loss
and images/s), checkpoints every `ckpt_every` steps and at the end, and
exact resume: a resumed run restores weights, optimizer moments, the
generator's state and the loss history, so it repeats the uninterrupted
run's losses bit for bit (for a fixed thread count).
"""
import contextlib
import math
import os
import time

import numpy as np

from . import cuda as _cuda
from .nn.utils import clip_grad_norm_
from .optim import AdamW


def ckpt_path(ckpt_dir):
    return os.path.join(ckpt_dir, "last.safetensors")


def fit_loop(module, step_loss, steps, batch_size, *, lr, warmup, grad_clip=1.0,
             weight_decay=0.0, ckpt_dir=None, ckpt_every=1000, resume=False, seed=0,
             stage="train", classes=None, progress=True, callback=None, identity=None,
             info=None, who="train", autocast=False):
    """Train the trainable parameters of `module`; returns the per-step losses.

    step_loss(rng) -> (loss Tensor, {name: float} shown on the bar): draws
    its batch and noise from rng. identity: JSON values a checkpoint must
    match to be resumed (e.g. the timestep, a frozen network's digest);
    batch_size and seed always must. info: more JSON values stored with
    the checkpoint. who: the function name used in messages. autocast:
    each step's forward under timenet.cuda.autocast (bf16 GEMMs, fp32
    master weights; needs the module on a GPU).
    """
    from . import checkpoint as ckpt
    steps, batch_size = int(steps), int(batch_size)
    if steps < 0 or batch_size < 1:
        raise ValueError(f"{who}: need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    identity = dict(identity or {}, batch_size=batch_size, seed=seed)
    if autocast and module.device == "cpu":
        raise ValueError(f"{who}: autocast=True needs the model on a GPU (it is on the CPU)")
    params = [p for p in module.parameters() if p.requires_grad]
    opt = AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay,
                warmup_steps=warmup)
    rng = np.random.default_rng(seed)
    losses, start = [], 0
    if resume:
        if ckpt_dir is None:
            raise ValueError(f"{who}: resume=True needs ckpt_dir")
        path = ckpt_path(ckpt_dir)
        if os.path.exists(path):
            ck = ckpt.load_checkpoint(path, module, opt)
            ts = ck.train_state or {}
            if ck.stage != stage:
                raise ValueError(f"{path}: checkpoint is of stage {ck.stage!r}, not {stage!r}")
            differ = {k: (ts.get(k), v) for k, v in identity.items() if ts.get(k) != v}
            if differ:
                said = ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in differ.items())
                raise ValueError(f"{path}: checkpoint was trained with {said}")
            rng.bit_generator.state = ts["rng"]
            losses, start = list(ck.losses), ck.step
            if len(losses) != start:
                raise ValueError(f"{path}: {len(losses)} losses for step {start}")

    def save(step):
        state = dict(info or {}, **identity, rng=rng.bit_generator.state, steps=steps)
        ckpt.save_checkpoint(ckpt_path(ckpt_dir), module, stage=stage, step=step,
                             classes=classes, optimizer=opt, train_state=state, losses=losses)

    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=start, desc=stage, disable=not progress, dynamic_ncols=True)
    t_start, done_here = time.perf_counter(), 0
    try:
        for step in range(start + 1, steps + 1):
            with _cuda.autocast() if autocast else contextlib.nullcontext():
                loss, shown = step_loss(rng)      # the backward keeps the forward's state
            opt.zero_grad()
            loss.backward()
            if grad_clip:
                clip_grad_norm_(params, grad_clip)
            opt.step()
            value = float(loss.item())
            if not math.isfinite(value):
                raise FloatingPointError(f"{who}: loss is {value} at step {step}")
            losses.append(value)
            done_here += 1
            ips = done_here * batch_size / max(time.perf_counter() - t_start, 1e-9)
            bar.set_postfix(loss=f"{value:.4f}", **{k: f"{v:.4f}" for k, v in shown.items()},
                            img_s=f"{ips:.1f}", refresh=False)
            bar.update(1)
            if ckpt_dir is not None and (step % ckpt_every == 0 or step == steps):
                save(step)
            if callback is not None:
                callback(step, value)
    finally:
        bar.close()
    if ckpt_dir is not None and start >= steps and not os.path.exists(ckpt_path(ckpt_dir)):
        save(start)
    return losses
