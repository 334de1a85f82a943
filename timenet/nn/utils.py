"""Gradient utilities."""
from .._loader import _core


def clip_grad_norm_(parameters, max_norm):
    """Scale all gradients so their global L2 norm is at most max_norm.
    Returns the norm before clipping (as torch.nn.utils.clip_grad_norm_)."""
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = _core.grad_norm(grads)
    if total > max_norm:
        _core.scale_(grads, float(max_norm) / (total + 1e-6))
    return total
