"""Rectified Flow: the loss, the samplers (Euler, one-step, adaptive RK45),
training with exact resume, and Reflow (DESIGN.md §1.1-1.4).

Convention: t = 0 is noise, t = 1 is data; x_t = t x1 + (1 - t) x0 with
x0 ~ N(0, I); the network v(x_t, t, c) predicts the velocity x1 - x0.

    loss = rf_loss(model, x1, c, rng)                   # Eq. 4, one batch
    x1_hat = one_step(model, x_t, t, c)                 # Eq. 3
    x, nfe = sample(model, x0, c, "rk45")               # or "euler", steps=N
    losses = train_flow(model, (x, c), steps=1000, batch_size=16, ckpt_dir="run")
    result = train_reflow(model, classes, steps=1000, batch_size=16)   # Algorithm 1

RK45 is the Dormand-Prince 5(4) pair as scipy.integrate.RK45 implements it
(FSAL, error norm RMS(err / (atol + rtol max(|y|, |y_new|))), safety 0.9,
step factors in [0.2, 10], scipy's initial step), with one difference: each
sample of a batch has its own step size and time, so a batch gives what
solving each sample alone would (the model is called on the samples still
running, each at its own t; the only coupling left is the float rounding of
a batched forward). Its stage sums and error norm are fused
C kernels (`_core.ode_combine`, `_core.ode_error_norm`, csrc/ode/ode.c).
For a model on a GPU the state stays there (`y0` a DeviceArray): the same
kernels run on the device (`_core.cuda_ode_*`), and only the per-sample
error norms (B doubles a step) come back to the host's step control.

Training data protocol: `data` is an object with
`sample_batch(rng, batch_size) -> (x1, c)` or `(x1, c, x0)`, drawing every
random choice from `rng` (the training generator, whose state checkpoints
save, so a resumed run repeats the uninterrupted one exactly); x1 is
(N, C, H, W) float32 in [-1, 1], c (N,) int class ids, and x0 (Reflow) the
noise paired with x1. A tuple `(x, c)` of arrays is wrapped as
`ArrayData(x, c)`, which samples with replacement.
"""
import os

import numpy as np

from ._loader import _core
from .autograd import Tensor, _DeviceArray, _cat_rows, _strides, _to_device, no_grad
from .nn import functional as F
from .training import fit_loop

__all__ = ["T_EPS", "rf_loss", "velocity", "one_step", "sample", "solve_rk45",
           "reflow_pairs", "train_flow", "train_reflow", "ArrayData"]

T_EPS = 1e-3  # t ~ U[eps, 1] in training; sampling starts at t = eps

# Dormand-Prince 5(4) (scipy.integrate.RK45's tableau).
DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
DP_A = ((),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
DP_E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
ERROR_EXPONENT = -1.0 / 5.0  # -1 / (error estimator order 4 + 1)


def _array(x):
    """A float32 host array of x (an array, or a Tensor on any device)."""
    return np.ascontiguousarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float32)


def _device(model):
    """Where model's parameters live: its inputs are moved there. The noise,
    t and the ODE's step control stay on the host, so a run draws the same
    numbers on every device."""
    return getattr(model, "device", "cpu")


def _times(t, N):
    t = np.asarray(t.numpy() if isinstance(t, Tensor) else t, np.float32).reshape(-1)
    if t.size == 1:
        t = np.full(N, t[0], np.float32)
    if t.shape != (N,):
        raise ValueError(f"t must be a scalar or (N,) = ({N},), got {t.shape}")
    return t


# -- the loss -----------------------------------------------------------------
def rf_loss(model, x1, c, rng, x0=None, t_eps=T_EPS):
    """The Rectified Flow loss (Eq. 4) on one batch, a scalar Tensor.

    x0 ~ N(0, I) (unless given: Reflow pairs), t ~ U[t_eps, 1] per sample,
    x_t = t x1 + (1 - t) x0, loss = mean over C*H*W, then batch, of
    (v(x_t, t, c) - (x1 - x0))^2. Draws x0 first, then t, from `rng`.
    """
    x1 = _array(x1)
    N = x1.shape[0]
    if x0 is None:
        x0 = rng.standard_normal(x1.shape, dtype=np.float32)
    else:
        x0 = _array(x0)
        if x0.shape != x1.shape:
            raise ValueError(f"rf_loss: x0 {x0.shape} and x1 {x1.shape} differ in shape")
    t = rng.uniform(t_eps, 1.0, size=N).astype(np.float32)
    tb = t.reshape(N, 1, 1, 1)
    xt = tb * x1 + (1.0 - tb) * x0
    dev = _device(model)
    v = model(Tensor(xt, device=dev), t, c)
    return F.mse_loss(v, Tensor(x1 - x0, device=dev))


# -- samplers -----------------------------------------------------------------
def velocity(model, x, t, c):
    """v(x, t, c) as a float32 array, without recording a tape."""
    x = _array(x)
    with no_grad():
        return _array(model(Tensor(x, device=_device(model)), _times(t, x.shape[0]), c))


def one_step(model, x_t, t, c):
    """One-step reconstruction (Eq. 3): x1_hat = x_t + (1 - t) v(x_t, t, c)."""
    x_t = _array(x_t)
    N = x_t.shape[0]
    t = _times(t, N)
    v = velocity(model, x_t, t, c)
    return x_t + (1.0 - t).reshape((N,) + (1,) * (x_t.ndim - 1)) * v


# -- the ODE state on either device -------------------------------------------
def _combine(y, ks, coeffs, h):
    """y + h[b] * sum_j coeffs[j] ks[j] per row b, where y lives (C / CUDA kernel)."""
    f = _core.cuda_ode_combine if type(y) is _DeviceArray else _core.ode_combine
    return f(y, ks, coeffs, h)


def _error_norm(ks, coeffs, h, y, y_new, rtol, atol):
    """scipy's RMS error norm per row, a host float64 (B,) array."""
    f = _core.cuda_ode_error_norm if type(y) is _DeviceArray else _core.ode_error_norm
    return f(ks, coeffs, h, y, y_new, rtol, atol)


def _rms(ks, coeffs, h, y, rtol, atol):
    """Per-sample RMS of (h * sum c_j k_j) / (atol + rtol |y|) (C kernel)."""
    return _error_norm(ks, coeffs, h, y, y, rtol, atol)


def _rows(a, idx):
    """a[idx] (rows of a (B, ...) state, idx sorted ints), numpy or on the GPU."""
    if type(a) is not _DeviceArray:
        return a[idx]
    if len(idx) == a.shape[0]:
        return a
    shape = (1,) + tuple(a.shape[1:])
    D, st = a.size // a.shape[0], _strides(shape)
    return _cat_rows([_core.cuda_strided_copy(a, shape, st, int(i) * D) for i in idx])


def _set_rows(a, idx, b):
    """a with rows idx replaced by the rows of b (in place for numpy; a new
    array on the GPU, built from row copies, so it is exact)."""
    if type(a) is not _DeviceArray:
        a[idx] = b
        return a
    shape = (1,) + tuple(a.shape[1:])
    D, st = a.size // a.shape[0], _strides(shape)
    src = {int(i): j for j, i in enumerate(idx)}
    return _cat_rows([_core.cuda_strided_copy(b, shape, st, src[r] * D) if r in src else
                      _core.cuda_strided_copy(a, shape, st, r * D) for r in range(a.shape[0])])


def solve_rk45(f, y0, t0, t1, rtol=1e-5, atol=1e-5, max_steps=100000, first_step=None):
    """Integrate dy/dt = f(t, y) from t0 to t1 > t0 with adaptive Dormand-Prince.

    f(t, y, idx) -> dy/dt: t (n,) float64 times, y (n, ...) float32 states of
    the samples `idx` (int indices into the batch) still being integrated;
    returns an array of y's shape. y0: (B, ...) float32, B independent
    problems, each with its own step size (scipy.integrate.RK45's control,
    see the module docstring). Returns (y(t1), info) with info = {"nfev":
    batched calls of f, "nfev_per_sample": (B,), "steps": accepted steps (B,),
    "rejected": (B,)}.
    y0 may also be a float32 DeviceArray (the state then stays on its GPU,
    f gets and returns DeviceArrays; y(t1) is one).
    """
    if not t1 > t0:
        raise ValueError(f"solve_rk45: need t1 > t0, got t0={t0}, t1={t1}")
    on_gpu = type(y0) is _DeviceArray
    y = y0.copy() if on_gpu else np.array(_array(y0), copy=True)
    if y.ndim < 1 or y.size == 0:
        raise ValueError(f"solve_rk45: y0 must be a non-empty (B, ...) array, got {y.shape}")
    B = y.shape[0]
    info = {"nfev": 0, "nfev_per_sample": np.zeros(B, np.int64),
            "steps": np.zeros(B, np.int64), "rejected": np.zeros(B, np.int64)}

    def call(t, ys, idx):
        out = f(t, ys, idx)
        if isinstance(out, Tensor):
            out = out.data
        if on_gpu and type(out) is not _DeviceArray:
            out = _to_device(np.ascontiguousarray(out, np.float32), f"cuda:{y.device}")
        elif not on_gpu:
            out = _array(out)
        if tuple(out.shape) != tuple(ys.shape):
            raise ValueError(f"solve_rk45: f returned shape {out.shape} for y {ys.shape}")
        info["nfev"] += 1
        info["nfev_per_sample"][idx] += 1
        return out

    everyone = np.arange(B)
    t = np.full(B, float(t0))
    fy = call(t.copy(), y, everyone)
    interval = float(t1) - float(t0)
    if first_step is not None:
        h_abs = np.full(B, min(float(first_step), interval))
    else:  # scipy's select_initial_step (Hairer, Norsett & Wanner II.4), per sample
        d0 = _rms([y], [1.0], 1.0, y, rtol, atol)
        d1 = _rms([fy], [1.0], 1.0, y, rtol, atol)
        h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300))
        h0 = np.minimum(h0, interval)
        y1 = _combine(y, [fy], [1.0], h0)
        f1 = call(t + h0, y1, everyone)
        d2 = _rms([f1, fy], [1.0, -1.0], 1.0 / h0, y, rtol, atol)
        with np.errstate(divide="ignore"):
            h1 = np.where((d1 <= 1e-15) & (d2 <= 1e-15), np.maximum(1e-6, h0 * 1e-3),
                          (0.01 / np.maximum(d1, d2)) ** (1.0 / 5.0))
        h_abs = np.minimum(np.minimum(100 * h0, h1), interval)
    retrying = np.zeros(B, bool)  # this sample's current step was rejected before

    while True:
        act = np.nonzero(t < t1)[0]
        if act.size == 0:
            break
        if info["steps"][act].max() + info["rejected"][act].max() >= max_steps:
            raise RuntimeError(f"solve_rk45: more than {max_steps} steps (t = "
                               f"{t[act].min():.6g}); the ODE is too stiff for RK45")
        ta = t[act]
        min_step = 10 * np.abs(np.nextafter(ta, np.inf) - ta)
        ha = h_abs[act]
        if np.any(retrying[act] & (ha < min_step)):
            raise RuntimeError(f"solve_rk45: step size fell below {min_step.min():.3g} at t = "
                               f"{ta[retrying[act] & (ha < min_step)].min():.6g}")
        ha = np.where(retrying[act], ha, np.maximum(ha, min_step))
        t_new = np.where(ta + ha >= t1, float(t1), ta + ha)
        h = t_new - ta
        ya = _rows(y, act) if act.size < B else y
        K = [_rows(fy, act) if act.size < B else fy]
        for s in range(1, 6):
            ys = _combine(ya, K, DP_A[s], h)
            K.append(call(ta + DP_C[s] * h, ys, act))
        y_new = _combine(ya, K, DP_B, h)
        f_new = call(t_new, y_new, act)
        K.append(f_new)
        err = _error_norm(K, DP_E, h, ya, y_new, rtol, atol)
        if not np.all(np.isfinite(err)):
            raise RuntimeError(f"solve_rk45: the derivative is not finite near t = "
                               f"{ta[~np.isfinite(err)].min():.6g}")
        ok = err < 1.0
        with np.errstate(divide="ignore"):
            grow = np.where(err == 0, MAX_FACTOR,
                            np.minimum(MAX_FACTOR, SAFETY * err ** ERROR_EXPONENT))
            shrink = np.maximum(MIN_FACTOR, SAFETY * err ** ERROR_EXPONENT)
        grow = np.where(retrying[act], np.minimum(1.0, grow), grow)
        h_abs[act] = h * np.where(ok, grow, shrink)
        done, again = act[ok], act[~ok]
        if done.size:
            keep = np.nonzero(ok)[0]
            y = _set_rows(y, done, _rows(y_new, keep) if keep.size < act.size else y_new)
            fy = _set_rows(fy, done, _rows(f_new, keep) if keep.size < act.size else f_new)
        t[done] = t_new[ok]
        retrying[done] = False
        retrying[again] = True
        info["steps"][done] += 1
        info["rejected"][again] += 1
    return y, info


def _classes(c, N):
    if c is None:
        return None
    c = np.asarray(c.numpy() if isinstance(c, Tensor) else c).reshape(-1)
    if c.size == 1:
        c = np.full(N, c[0])
    if c.shape != (N,):
        raise ValueError(f"class ids must be a scalar or (N,) = ({N},), got {c.shape}")
    return c.astype(np.int64)


def _integrate(model, x0, c, method, steps, rtol, atol, t0):
    """One chunk of `sample`: (x1, model calls)."""
    if method == "euler":
        n = int(steps)
        z = x0.copy()
        for i in range(n):
            ti = np.full(len(z), t0 + i * (1.0 - t0) / n, np.float32)
            z += velocity(model, z, ti, c) / n
        return z, n
    dev = _device(model)

    def f(t, y, idx):
        tt, cc = t.astype(np.float32), None if c is None else c[idx]
        if type(y) is not _DeviceArray:
            return velocity(model, y, tt, cc)
        with no_grad():     # the state stays on the model's GPU
            return model(Tensor(y), tt, cc).data
    y0 = x0 if dev == "cpu" else _to_device(np.ascontiguousarray(x0), dev)
    z, info = solve_rk45(f, y0, t0, 1.0, rtol=rtol, atol=atol)
    return (z if dev == "cpu" else z.numpy()), info["nfev"]


def sample(model, x0, c, method="euler", steps=100, rtol=1e-5, atol=1e-5, t0=T_EPS,
           batch_size=None, progress=False, desc="sample"):
    """Integrate the flow from noise x0 (at t = t0) to t = 1 under classes c.

    method "euler": `steps` steps, z += v(z, t_i, c) / steps at t_i = t0 +
      i (1 - t0) / steps (the Rectified Flow reference: the step is 1/N so a
      straight flow lands exactly on x0 + v); steps=1 is one-step generation.
    method "rk45": adaptive Dormand-Prince (rtol, atol), `steps` ignored.
    batch_size: integrate in chunks of this many samples (memory).
    progress: a tqdm bar over the samples (with the model calls so far).
    Returns (x1, nfe): float32 samples of x0's shape and the number of model
    calls (batched forwards, summed over chunks).
    """
    from tqdm.auto import tqdm
    if method not in ("euler", "rk45"):
        raise ValueError(f"sample: method must be 'euler' or 'rk45', got {method!r}")
    if method == "euler" and int(steps) < 1:
        raise ValueError(f"sample: euler needs steps >= 1, got {steps}")
    x0 = _array(x0)
    N = x0.shape[0]
    c = _classes(c, N)
    bs = N if not batch_size else int(batch_size)
    outs, nfe = [], 0
    bar = tqdm(total=N, desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    try:
        for lo in range(0, N, bs):
            z, calls = _integrate(model, x0[lo:lo + bs], None if c is None else c[lo:lo + bs],
                                  method, steps, rtol, atol, t0)
            outs.append(z)
            nfe += calls
            bar.set_postfix(nfe=nfe, refresh=False)
            bar.update(len(z))
    finally:
        bar.close()
    return np.concatenate(outs) if len(outs) > 1 else outs[0], nfe


# -- training -----------------------------------------------------------------
class ArrayData:
    """In-memory training data: x (N, C, H, W) float32 in [-1, 1], c (N,) ids,
    optionally x0 (N, C, H, W) paired noise (Reflow). Batches are drawn with
    replacement from the training rng."""

    def __init__(self, x, c, x0=None):
        self.x = _array(x)
        self.c = np.asarray(c, np.int64).reshape(-1)
        self.x0 = None if x0 is None else _array(x0)
        if self.x.ndim != 4 or len(self.c) != len(self.x):
            raise ValueError(f"ArrayData: x must be (N, C, H, W) and c (N,), got {self.x.shape} "
                             f"and {self.c.shape}")
        if self.x0 is not None and self.x0.shape != self.x.shape:
            raise ValueError(f"ArrayData: x0 {self.x0.shape} must match x {self.x.shape}")

    def __len__(self):
        return len(self.x)

    def sample_batch(self, rng, batch_size):
        idx = rng.integers(0, len(self.x), size=batch_size)
        if self.x0 is None:
            return self.x[idx], self.c[idx]
        return self.x[idx], self.c[idx], self.x0[idx]


def _as_data(data):
    if hasattr(data, "sample_batch"):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return ArrayData(*data)
    raise TypeError("train_flow: data must have sample_batch(rng, n) or be a tuple (x, c)")


def train_flow(model, data, steps, batch_size, lr=2e-4, warmup=None, grad_clip=1.0,
               ckpt_dir=None, ckpt_every=1000, resume=False, seed=0, stage="flow",
               classes=None, weight_decay=0.0, progress=True, callback=None, autocast=False):
    """Train `model` on the Rectified Flow loss; returns the per-step losses.

    data: see the module docstring (sample_batch protocol or (x, c) arrays).
    Adam(W) with lr, betas (0.9, 0.999), weight_decay (0: Adam, the paper's),
    linear warm-up over `warmup` steps (default min(5000, steps // 10)), then
    constant; gradients clipped to global norm `grad_clip` (None: off).
    One generator, np.random.default_rng(seed), draws every batch, noise and
    t. ckpt_dir: write `<ckpt_dir>/last.*` (timenet.checkpoint) every
    `ckpt_every` steps and at the end, with the optimizer, the rng state and
    the losses; resume=True continues from it, giving exactly the losses and
    weights of an uninterrupted run. callback(step, loss) runs after each
    step (1-based). classes: class names stored in the checkpoint.
    autocast: bf16 autocast for the steps (a model on a GPU; timenet.cuda).
    """
    data = _as_data(data)
    if warmup is None:
        warmup = min(5000, int(steps) // 10)

    def step_loss(rng):
        batch = data.sample_batch(rng, int(batch_size))
        x0 = batch[2] if len(batch) > 2 else None
        return rf_loss(model, batch[0], batch[1], rng, x0=x0), {}
    return fit_loop(model, step_loss, steps, batch_size, lr=lr, warmup=warmup,
                    grad_clip=grad_clip, weight_decay=weight_decay, ckpt_dir=ckpt_dir,
                    ckpt_every=ckpt_every, resume=resume, seed=seed, stage=stage,
                    classes=classes, progress=progress, callback=callback, who="train_flow",
                    autocast=autocast)


# -- Reflow -------------------------------------------------------------------
def reflow_pairs(model, x0_or_n, classes, rng, rtol=1e-5, atol=1e-5, t0=T_EPS,
                 batch_size=None, progress=False, desc="reflow pairs"):
    """Reflow couplings (Algorithm 1): x1 = RK45[v](x0 | c) for each x0.

    x0_or_n: noise (n, C, H, W), or n to draw it from `rng` at the model's
    size; classes: (n,) class ids (or one id). Returns (x0, x1, c, nfe).
    """
    if isinstance(x0_or_n, (int, np.integer)):
        cfg = model.config
        x0 = rng.standard_normal((int(x0_or_n), cfg.in_channels, cfg.image_size,
                                  cfg.image_size), dtype=np.float32)
    else:
        x0 = _array(x0_or_n)
    c = _classes(classes, len(x0))
    x1, nfe = sample(model, x0, c, method="rk45", rtol=rtol, atol=atol, t0=t0,
                     batch_size=batch_size, progress=progress, desc=desc)
    return x0, x1, c, nfe


def train_reflow(model, classes, steps, batch_size, rounds=1, seed=0, rtol=1e-5, atol=1e-5,
                 pair_batch_size=None, ckpt_dir=None, class_names=None, **train_kwargs):
    """k rounds of Reflow (Algorithm 1; the paper uses one): draw pairs
    (x0, RK45[v_k](x0 | c)) for the class ids `classes` (one pair each), then
    fine-tune v_{k+1} from v_k on them with train_flow (its keyword
    arguments pass through). With ckpt_dir, round k's pairs are saved as
    `<ckpt_dir>/reflow-k/pairs.npz` and its checkpoints go there; resume=True
    reuses both. class_names: stored in the checkpoints (train_flow's
    `classes`). Returns {"losses": [per round], "nfe": [per round],
    "pairs": the last round's (x0, x1, c)}.
    """
    classes = np.asarray(classes, np.int64).reshape(-1)
    out = {"losses": [], "nfe": [], "pairs": None}
    for k in range(1, int(rounds) + 1):
        rng = np.random.default_rng([seed, k, 0])   # the pairs' noise
        train_seed = int(np.random.default_rng([seed, k, 1]).integers(2**31))
        rdir = None if ckpt_dir is None else os.path.join(ckpt_dir, f"reflow-{k}")
        pair_file = None if rdir is None else os.path.join(rdir, "pairs.npz")
        if pair_file and train_kwargs.get("resume") and os.path.exists(pair_file):
            try:
                with np.load(pair_file) as z:
                    x0, x1, c, nfe = z["x0"], z["x1"], z["c"], int(z["nfe"])
            except Exception as e:
                raise ValueError(f"{pair_file}: unreadable Reflow pairs: {e}") from e
        else:
            x0, x1, c, nfe = reflow_pairs(model, len(classes), classes, rng, rtol=rtol,
                                          atol=atol, batch_size=pair_batch_size,
                                          progress=train_kwargs.get("progress", True),
                                          desc=f"reflow-{k} pairs")
            if pair_file:
                os.makedirs(rdir, exist_ok=True)
                tmp = pair_file + f".tmp{os.getpid()}.npz"
                np.savez(tmp, x0=x0, x1=x1, c=c, nfe=nfe)
                os.replace(tmp, pair_file)
        losses = train_flow(model, ArrayData(x1, c, x0), steps, batch_size,
                            seed=train_seed, stage=f"reflow-{k}",
                            ckpt_dir=rdir, classes=class_names, **train_kwargs)
        out["losses"].append(losses)
        out["nfe"].append(nfe)
        out["pairs"] = (x0, x1, c)
    return out
