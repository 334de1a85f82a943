"""Gradient utilities."""
from ..autograd import _kernels


def clip_grad_norm_(parameters, max_norm):
    """Scale all gradients so their global L2 norm is at most max_norm.
    Returns the norm before clipping (as torch.nn.utils.clip_grad_norm_).
    Gradients on a GPU are summed there (one host round trip for the norm)."""
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    k = _kernels("clip_grad_norm_", **{f"grads[{i}]": g for i, g in enumerate(grads)})
    total = k.grad_norm(grads)
    if total > max_norm:
        k.scale_(grads, float(max_norm) / (total + 1e-6))
    return total
