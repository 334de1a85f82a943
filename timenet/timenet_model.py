"""TimeNet: the frozen class-conditional denoiser v and the timestep-perceptive
network (TPN), with the paper's one-step reconstruction (§2.2, DESIGN.md §1.5):

    x_t    = t x1 + (1 - t) x0,  x0 ~ N(0, I)
    T, f   = TPN(x_t, c)                          # timestep map, features
    x1_hat = x_t + (1 - T) * v(x_t, t, c, inject=f)

    model = TimeNetModel(denoiser, TPN.for_denoiser(denoiser))
    x1_hat, T = model.reconstruct(x1, c, t=0.83, rng=rng)
    x1_hat, T = model.reconstruct(x1, c, t=0.83, x0=x0, use_tpn=False)  # plain Eq. 3

`use_tpn=False` is the plain one-step reconstruction (Eq. 3) of the same
noised input (same x0), with T = t. At the TPN's initialisation (zero
adapters, T head == t_init) both agree: see timenet.models.tpn.
"""
import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .models.tpn import TPN, TPNConfig

__all__ = ["TimeNetModel", "DEFAULT_T"]

DEFAULT_T = 0.83  # the paper's initial diffusion timestep


def _array(x):
    return np.ascontiguousarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float32)


def _per_sample(values, N, dtype, what):
    a = np.asarray(values.numpy() if isinstance(values, Tensor) else values).reshape(-1)
    if a.size == 1:
        a = np.full(N, a[0])
    if a.shape != (N,):
        raise ValueError(f"TimeNetModel: {what} must be a scalar or ({N},), got {a.shape}")
    return a.astype(dtype)


class TimeNetModel(nn.Module):
    """The denoiser (`.denoiser`, a UNet) and the TPN (`.tpn`); state dict
    names are `denoiser.*` and `tpn.*`. tpn None builds
    `TPN.for_denoiser(denoiser, t_init)`: pass the t the TPN will be trained
    and used at, so that the model starts as the plain one-step at that t."""

    def __init__(self, denoiser, tpn=None, t_init=DEFAULT_T):
        super().__init__()
        self.denoiser = denoiser
        self.tpn = TPN.for_denoiser(denoiser, t_init=t_init) if tpn is None else tpn
        want = {k for k in denoiser.feature_shapes()}
        for key in self.tpn.routes:
            if key not in want:
                raise ValueError(f"TimeNetModel: the TPN targets {key!r}, which the denoiser "
                                 f"does not have (its feature points: {sorted(map(str, want))})")

    def forward(self, x_t, t, c=None, use_tpn=True):
        """Differentiable one-step reconstruction of a noised batch.
        x_t (N, 3, S, S), t scalar or (N,), c (N,) -> (x1_hat, T) Tensors;
        T is (N, 1, S, S) (use_tpn) or (N, 1, 1, 1) filled with t."""
        dev = self.denoiser.device     # host inputs move there; a Tensor must be there
        x_t = x_t if isinstance(x_t, Tensor) else Tensor(_array(x_t), device=dev)
        N = x_t.shape[0]
        tt = _per_sample(t, N, np.float32, "t")
        if use_tpn:
            T, inject = self.tpn(x_t, c)
            v = self.denoiser(x_t, tt, c, inject=inject)
        else:
            T = Tensor(tt.reshape(N, 1, 1, 1), device=x_t.device)
            v = self.denoiser(x_t, tt, c)
        return x_t + (1.0 - T) * v, T

    def noise(self, x1, t, rng=None, x0=None):
        """(x_t, x0): x_t = t x1 + (1 - t) x0 with x0 ~ N(0, I) drawn from rng
        (default np.random.default_rng(0)) unless given."""
        x1 = _array(x1)
        N = x1.shape[0]
        if x0 is None:
            rng = np.random.default_rng(0) if rng is None else rng
            x0 = rng.standard_normal(x1.shape, dtype=np.float32)
        else:
            x0 = _array(x0)
            if x0.shape != x1.shape:
                raise ValueError(f"TimeNetModel: x0 {x0.shape} and x1 {x1.shape} differ")
        tb = _per_sample(t, N, np.float32, "t").reshape(N, 1, 1, 1)
        return tb * x1 + (1.0 - tb) * x0, x0

    def reconstruct(self, x1, c=None, t=DEFAULT_T, rng=None, use_tpn=True, x0=None,
                    batch_size=None):
        """One-step reconstruction of images x1 (N, 3, S, S) in [-1, 1].

        x0 (the noise) is drawn from rng (default np.random.default_rng(0))
        unless given. Returns (x1_hat (N, 3, S, S), T (N, 1, S, S)) float32
        arrays; with use_tpn=False, x1_hat is Eq. 3 on the same x_t and T is
        filled with t. batch_size: run in chunks of this many images."""
        x1 = _array(x1)
        N = x1.shape[0]
        x_t, _ = self.noise(x1, t, rng, x0)
        tt = _per_sample(t, N, np.float32, "t")
        cc = None if c is None else _per_sample(c, N, np.int64, "c")
        bs = N if not batch_size else int(batch_size)
        dev = self.denoiser.device
        outs, Ts = [], []
        with no_grad():
            for lo in range(0, N, bs):
                sl = slice(lo, lo + bs)
                xh, T = self.forward(Tensor(x_t[sl], device=dev), tt[sl],
                                     None if cc is None else cc[sl], use_tpn=use_tpn)
                outs.append(_array(xh))
                T = _array(T)
                Ts.append(np.broadcast_to(T, (T.shape[0], 1) + x1.shape[2:]).copy()
                          if T.shape[2:] != x1.shape[2:] else T)
        cat = (lambda a: a[0]) if len(outs) == 1 else np.concatenate
        return cat(outs), cat(Ts)

    # -- checkpoints ------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, denoiser_path, tpn_path=None):
        """The model from a denoiser checkpoint (timenet.checkpoint, e.g. the
        Reflow stage's last.safetensors) and a TPN checkpoint (train_tpn's);
        tpn_path None gives a freshly initialised TPN."""
        from . import checkpoint as ckpt
        denoiser, _ = ckpt.load_model(denoiser_path)
        if tpn_path is None:
            return cls(denoiser)
        return cls(denoiser, load_tpn(tpn_path))


def load_tpn(path):
    """A TPN from its checkpoint (the sidecar's config + weights)."""
    from . import checkpoint as ckpt
    ck = ckpt.load_checkpoint(path)
    if ck.sidecar.get("model") != "TPN" or not ck.config:
        raise ValueError(f"{ckpt.paths(path)[1]}: not a TPN checkpoint "
                         f"(model {ck.sidecar.get('model')!r})")
    tpn = TPN(TPNConfig.from_dict(ck.config))
    tpn.load_state_dict(ck.state)
    return tpn
