"""AdamW (PyTorch semantics) with linear warm-up and constant or cosine decay.

The update itself is one fused C kernel: one call for all the CPU
parameters (`_core.adamw_step_multi`, whose threads share the arrays'
chunks; the same bits as `_core.adamw_step` per parameter), and
`_core.cuda_adamw_step` for each parameter on a GPU (its moments follow it
there).
"""
import math

import numpy as np

from ._loader import _core
from .autograd import _DeviceArray, _device_of, _host_copy, _to_device, _zeros_like


class AdamW:
    """torch.optim.AdamW with a learning-rate schedule built in.

    lr(step) = base_lr * min(1, step / warmup_steps) for the warm-up, then
    constant, or cosine from base_lr down to min_lr at total_steps.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 warmup_steps=0, schedule="constant", total_steps=None, min_lr=0.0):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("AdamW: got an empty parameter list")
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"AdamW: schedule must be 'constant' or 'cosine', got {schedule!r}")
        if schedule == "cosine" and not total_steps:
            raise ValueError("AdamW: the cosine schedule needs total_steps")
        if lr < 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError(f"AdamW: invalid lr {lr} or betas {betas}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.warmup_steps, self.schedule = int(warmup_steps), schedule
        self.total_steps, self.min_lr = total_steps, min_lr
        self.step_count = 0
        self.m = [_zeros_like(p.data) for p in self.params]
        self.v = [_zeros_like(p.data) for p in self.params]

    def lr_at(self, step):
        """Learning rate for update number `step` (1-based)."""
        if self.warmup_steps and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        span = max(1, self.total_steps - self.warmup_steps)
        frac = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * frac))

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.step_count += 1
        lr = self.lr_at(self.step_count)
        b1, b2 = self.betas
        host = []  # indices of the CPU parameters: one fused call for all of them
        for i, (p, m, v) in enumerate(zip(self.params, self.m, self.v)):
            if p.grad is None:
                continue
            if type(p.data) is _DeviceArray:
                if _device_of(m) != p.device:  # the model moved after the optimizer was made
                    self.m[i] = m = _to_device(m, p.device)
                    self.v[i] = v = _to_device(v, p.device)
                _core.cuda_adamw_step(p.data, p.grad.data, m, v, lr, b1, b2, self.eps,
                                      self.weight_decay, self.step_count)
                continue
            if type(m) is _DeviceArray:
                self.m[i] = self.m[i].numpy()
                self.v[i] = self.v[i].numpy()
            host.append(i)
        if host:
            _core.adamw_step_multi([self.params[i].data for i in host],
                                   [self.params[i].grad.data for i in host],
                                   [self.m[i] for i in host], [self.v[i] for i in host],
                                   lr, b1, b2, self.eps, self.weight_decay, self.step_count)
        return lr

    def state_dict(self):
        """Everything needed to resume exactly: moments, step, settings."""
        return {
            "step": self.step_count,
            "m": [_host_copy(a) for a in self.m],
            "v": [_host_copy(a) for a in self.v],
            "hyper": {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                      "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
                      "schedule": self.schedule, "total_steps": self.total_steps,
                      "min_lr": self.min_lr},
        }

    def load_state_dict(self, state):
        if len(state["m"]) != len(self.params):
            raise ValueError(f"AdamW.load_state_dict: state has {len(state['m'])} parameters, "
                             f"the optimizer {len(self.params)}")
        for i, (p, m, v) in enumerate(zip(self.params, state["m"], state["v"])):
            if m.shape != p.shape or v.shape != p.shape:
                raise ValueError(f"AdamW.load_state_dict: parameter {i} has shape {p.shape}, "
                                 f"state {m.shape}")
        self.m = [np.array(a, np.float32) for a in state["m"]]
        self.v = [np.array(a, np.float32) for a in state["v"]]
        self.step_count = int(state["step"])
        h = state.get("hyper", {})
        self.lr = h.get("lr", self.lr)
        self.betas = tuple(h.get("betas", self.betas))
        self.eps = h.get("eps", self.eps)
        self.weight_decay = h.get("weight_decay", self.weight_decay)
        self.warmup_steps = h.get("warmup_steps", self.warmup_steps)
        self.schedule = h.get("schedule", self.schedule)
        self.total_steps = h.get("total_steps", self.total_steps)
        self.min_lr = h.get("min_lr", self.min_lr)
