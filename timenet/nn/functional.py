"""Differentiable ops over the C kernels, with PyTorch's names and signatures
where the op is the same, so any op can be checked against PyTorch.

Each function runs the `_core` forward, and records a backward closure over
exactly what the C backward needs (docs/engine-api.md).

Devices: `_kernels(op, name=tensor, ...)` returns `_core` when the tensors
are on the CPU and the CUDA kernels (`_core.cuda_<op>`, the same arguments
on DeviceArrays) when they are on one GPU, so each op below is written once;
tensors on different devices raise a RuntimeError naming both.
"""
import numpy as np

from .._loader import _core
from .. import cuda as _cuda
from ..autograd import (Tensor, record, _tensor, add, mul,  # noqa: F401  (re-exported)
                        _DeviceArray, _kernels, _S_MUL)

__all__ = [
    "conv2d", "linear", "group_norm", "group_norm_silu", "silu", "sigmoid", "relu", "interpolate",
    "avg_pool2d", "adaptive_avg_pool2d", "max_pool2d", "embedding", "cat",
    "mse_loss", "multi_head_attention", "timestep_embedding", "add", "mul",
    "broadcast_add", "broadcast_mul",
]


def _data(t):
    return None if t is None else t.data


def _pair(v, what):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"{what}: only square values are supported, got {v}")
        v = v[0]
    return int(v)


def _as_forward(k, backward):
    """`backward` run under the bf16 autocast state its forward ran in
    (timenet.cuda.autocast): the CUDA GEMM ops read the flag when called, so
    this makes `loss.backward()` outside the block take the forward's
    precision, as in PyTorch. A no-op for CPU kernels."""
    if k is _core:
        return backward
    on = _core.cuda_get_autocast()

    def run(g):
        prev = _core.cuda_get_autocast()
        if prev == on:
            return backward(g)
        _core.cuda_set_autocast(on)
        try:
            return backward(g)
        finally:
            _core.cuda_set_autocast(prev)
    return run


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """2-D convolution, zero padding. input (N, C, H, W), weight (K, C, R, S)."""
    stride, padding = _pair(stride, "conv2d stride"), _pair(padding, "conv2d padding")
    x, w = input, weight
    k = _kernels("conv2d", input=x, weight=w, bias=bias)
    y = k.conv2d_forward(x.data, w.data, _data(bias), stride, padding)

    def backward(g):
        if k is _core:  # a frozen weight (the TPN stage's denoiser) skips dW
            return k.conv2d_backward(g, x.data, w.data, stride, padding, x.requires_grad,
                                     bias is not None and bias.requires_grad,
                                     w.requires_grad)
        dx, dw, db = k.conv2d_backward(g, x.data, w.data, stride, padding,
                                       x.requires_grad, bias is not None)
        return dx, dw, db
    return record(y, (x, w, bias), _as_forward(k, backward))


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias. input (N, I), weight (O, I)."""
    x, w = input, weight
    k = _kernels("linear", input=x, weight=w, bias=bias)
    lead = x.shape[:-1]
    x2 = x.data.reshape(-1, x.shape[-1])
    y = k.linear_forward(x2, w.data, _data(bias))

    def backward(g):
        dx, dw, db = k.linear_backward(g.reshape(-1, g.shape[-1]), x2, w.data,
                                       bias is not None)
        return dx.reshape(x.shape), dw, db
    return record(y.reshape(lead + (w.shape[0],)), (x, w, bias), _as_forward(k, backward))


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    x = input
    k = _kernels("group_norm", input=x, weight=weight, bias=bias)
    y, mean, rstd = k.group_norm_forward(x.data, int(num_groups), _data(weight),
                                         _data(bias), float(eps))

    def backward(g):
        return k.group_norm_backward(g, x.data, mean, rstd, int(num_groups),
                                     _data(weight))
    return record(y, (x, weight, bias), backward)


def group_norm_silu(input, num_groups, weight=None, bias=None, eps=1e-5):
    """silu(group_norm(input, ...)): on the CPU one fused kernel (the same bits
    as the two ops; the normalised map is not stored, the backward rebuilds
    it), on a GPU the two ops."""
    x = input
    k = _kernels("group_norm_silu", input=x, weight=weight, bias=bias)
    if k is not _core:
        return silu(group_norm(x, num_groups, weight, bias, eps))
    G = int(num_groups)
    y, mean, rstd = _core.group_norm_silu_forward(x.data, G, _data(weight), _data(bias),
                                                  float(eps))

    def backward(g):
        return _core.group_norm_silu_backward(g, x.data, mean, rstd, G, _data(weight),
                                              _data(bias))
    return record(y, (x, weight, bias), backward)


def silu(input):
    x = input
    k = _kernels("silu", input=x)
    return record(k.silu_forward(x.data), (x,),
                  lambda g: (k.silu_backward(g, x.data),))


def sigmoid(input):
    k = _kernels("sigmoid", input=input)
    y = k.sigmoid_forward(input.data)
    return record(y, (input,), lambda g: (k.sigmoid_backward(g, y),))


def relu(input):
    x = input
    k = _kernels("relu", input=x)
    return record(k.relu_forward(x.data), (x,),
                  lambda g: (k.relu_backward(g, x.data),))


def interpolate(input, size=None, scale_factor=None, mode="nearest"):
    """Nearest-neighbour upsampling by an integer factor (the U-Net's)."""
    if mode != "nearest":
        raise ValueError(f"interpolate: mode {mode!r} is not supported (only 'nearest')")
    if size is not None:
        H, W = input.shape[-2:]
        size = (size, size) if np.isscalar(size) else tuple(size)
        if size[0] % H or size[1] % W or size[0] // H != size[1] // W:
            raise ValueError(f"interpolate: size {size} is not an integer multiple of {(H, W)}")
        scale_factor = size[0] // H
    s = _pair(scale_factor, "interpolate scale_factor")
    k = _kernels("interpolate", input=input)
    return record(k.upsample_nearest_forward(input.data, s), (input,),
                  lambda g: (k.upsample_nearest_backward(g, s),))


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    k = _pair(kernel_size, "avg_pool2d kernel_size")
    s = k if stride is None else _pair(stride, "avg_pool2d stride")
    p = _pair(padding, "avg_pool2d padding")
    shape = input.shape
    ops = _kernels("avg_pool2d", input=input)
    return record(ops.avg_pool2d_forward(input.data, k, s, p), (input,),
                  lambda g: (ops.avg_pool2d_backward(g, shape, k, s, p),))


def adaptive_avg_pool2d(input, output_size):
    oh, ow = (output_size, output_size) if np.isscalar(output_size) else output_size
    shape = input.shape
    ops = _kernels("adaptive_avg_pool2d", input=input)
    return record(ops.adaptive_avg_pool2d_forward(input.data, int(oh), int(ow)), (input,),
                  lambda g: (ops.adaptive_avg_pool2d_backward(g, shape),))


def max_pool2d(input, kernel_size, stride=None, padding=0):
    k = _pair(kernel_size, "max_pool2d kernel_size")
    s = k if stride is None else _pair(stride, "max_pool2d stride")
    p = _pair(padding, "max_pool2d padding")
    shape = input.shape
    ops = _kernels("max_pool2d", input=input)
    y, argmax = ops.max_pool2d_forward(input.data, k, s, p)
    return record(y, (input,), lambda g: (ops.max_pool2d_backward(g, argmax, shape),))


def embedding(input, weight):
    """Rows of weight (V, D) picked by integer ids (N,). With the table on a
    GPU the ids may be host integers (copied over) or an int64 CUDA tensor."""
    k = _kernels("embedding", weight=weight)
    src = input.data if isinstance(input, Tensor) else input
    if type(src) is _DeviceArray:
        _kernels("embedding", input=input, weight=weight)  # same device
        if src.dtype != np.int64:
            raise TypeError(f"embedding: CUDA ids must be int64, got {src.dtype}")
        ids = src
    else:
        ids = np.ascontiguousarray(_tensor(input).data, dtype=np.int64)
    lead = tuple(ids.shape)
    flat = ids.reshape(-1)
    V = weight.shape[0]
    y = k.embedding_forward(weight.data, flat)
    return record(y.reshape(lead + (weight.shape[1],)), (weight,),
                  lambda g: (k.embedding_backward(g.reshape(flat.size, -1), flat, V),))


def cat(tensors, dim=1):
    """Concatenate on the channel axis (dim=1), as the U-Net's skips do."""
    tensors = [_tensor(t) for t in tensors]
    if dim != 1:
        raise ValueError(f"cat: only dim=1 (channels) is supported, got {dim}")
    sizes = [t.shape[1] for t in tensors]
    k = _kernels("cat", **{f"tensors[{i}]": t for i, t in enumerate(tensors)})
    y = k.concat_forward([t.data for t in tensors])
    return record(y, tuple(tensors), lambda g: tuple(k.concat_backward(g, sizes)))


def broadcast_add(a, b):
    """a (N, C, H, W) + b with each dim equal to a's or 1 (C kernel)."""
    bs = b.shape
    k = _kernels("broadcast_add", a=a, b=b)
    return record(k.add_forward(a.data, b.data), (a, b),
                  lambda g: k.add_backward(g, bs))


def broadcast_mul(a, b):
    """a (N, C, H, W) * b with each dim equal to a's or 1 (C kernel)."""
    k = _kernels("broadcast_mul", a=a, b=b)
    return record(k.mul_forward(a.data, b.data), (a, b),
                  lambda g: k.mul_backward(g, a.data, b.data))


def mse_loss(input, target, reduction="mean"):
    """mean((input - target)^2) over all elements."""
    if reduction != "mean":
        raise ValueError(f"mse_loss: reduction {reduction!r} is not supported (only 'mean')")
    x, y = input, _tensor(target)
    k = _kernels("mse_loss", input=x, target=y)
    if k is not _core:
        # The loss stays on the device (a 0-d DeviceArray), and so does g.
        def dev_backward(g):
            dx = k.mse_backward(x.data, y.data, g)
            return dx, (_core.cuda_scalar(_S_MUL, dx, -1.0) if y.requires_grad else None)
        return record(k.mse_forward(x.data, y.data), (x, y), dev_backward)
    loss = _core.mse_forward(x.data, y.data)

    def backward(g):
        dx = _core.mse_backward(x.data, y.data, float(g))
        return dx, (-dx if y.requires_grad else None)
    return record(np.asarray(loss, np.float32), (x, y), backward)


def multi_head_attention(q, k, v, num_heads=1):
    """softmax(q k^T / sqrt(d)) v per head. q, k, v (N, L, C), C = heads * d."""
    ops = _kernels("multi_head_attention", q=q, k=k, v=v)
    out, probs = ops.attention_forward(q.data, k.data, v.data, int(num_heads))

    def backward(g):
        return ops.attention_backward(g, q.data, k.data, v.data, probs, int(num_heads))
    return record(out, (q, k, v), _as_forward(ops, backward))


def timestep_embedding(t, dim, max_period=10000.0, device=None):
    """Sinusoidal embedding of timesteps t (N,) -> (N, dim); not differentiable.
    On `device` (default: where t is; the CPU for host values)."""
    src = t.data if isinstance(t, Tensor) else t
    if type(src) is _DeviceArray:
        if device is not None and _cuda.parse_device(device) != ("cuda", src.device):
            raise RuntimeError(f"timestep_embedding: t is on cuda:{src.device}, device is "
                               f"{device!r}")
        return Tensor(_core.cuda_timestep_embedding(src.reshape(-1), int(dim),
                                                    float(max_period)))
    t = np.ascontiguousarray(_tensor(t).data, dtype=np.float32).reshape(-1)
    if device is not None and _cuda.parse_device(device)[0] == "cuda":
        idx = _cuda._require(_cuda.parse_device(device)[1])
        return Tensor(_core.cuda_timestep_embedding(t, int(dim), float(max_period), idx))
    return Tensor(_core.timestep_embedding(t, int(dim), float(max_period)))
