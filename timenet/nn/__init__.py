"""Layers: a small PyTorch-shaped module system over timenet.nn.functional.

Parameter names follow PyTorch's state_dict conventions ("conv.weight",
"blocks.0.norm.bias"), so checkpoints map one to one onto PyTorch models.
"""
import math
from collections import OrderedDict

import numpy as np

from ..autograd import Tensor, _DeviceArray, _canonical_device, _host_copy, _to_device
from . import functional as F
from . import init

__all__ = ["Parameter", "Module", "Conv2d", "Linear", "GroupNorm", "SiLU", "Embedding",
           "Attention", "Sequential", "ModuleList", "Identity", "functional", "init"]


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable."""

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        if type(data) is _DeviceArray:  # a device copy, as np.array copies
            super().__init__(data.copy(), requires_grad=requires_grad)
            return
        super().__init__(np.array(data, dtype=np.float32), requires_grad=requires_grad)


class Module:
    """Base class: attributes that are Parameters, Modules or buffers
    (registered with `register_buffer`) are found by `named_parameters()` and
    `state_dict()` in assignment order."""

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               "before assigning attributes")
        for d in (self._params, self._modules, self._buffers):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Non-trainable state saved in state_dict (e.g. stored score ratios)."""
        self._buffers[name] = None
        object.__setattr__(self, name, np.ascontiguousarray(array, dtype=np.float32))

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal --------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        for mprefix, m in self.named_modules(prefix):
            for name, p in m._params.items():
                yield (f"{mprefix}.{name}" if mprefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # -- devices ----------------------------------------------------------
    def to(self, device):
        """Move every parameter (and its gradient) to `device` ('cpu',
        'cuda', 'cuda:N') in place; returns self. Buffers (numpy state such
        as stored score ratios) stay on the host."""
        target = _canonical_device(device)
        for p in self.parameters():
            p.data = _to_device(p.data, target)
            if p.grad is not None:
                p.grad.data = _to_device(p.grad.data, target)
        return self

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def cpu(self):
        return self.to("cpu")

    @property
    def device(self):
        """Where the parameters are ('cpu' when there are none)."""
        for p in self.parameters():
            return p.device
        return "cpu"

    # -- state ------------------------------------------------------------
    def state_dict(self):
        """OrderedDict name -> numpy array (copies), PyTorch-style names."""
        out = OrderedDict()
        for mprefix, m in self.named_modules():
            for name, p in m._params.items():
                out[f"{mprefix}.{name}" if mprefix else name] = _host_copy(p.data)
            for name in m._buffers:
                out[f"{mprefix}.{name}" if mprefix else name] = getattr(m, name).copy()
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays into this module's parameters and buffers.

        strict: every key must match and no key may be missing or left over.
        Shapes must always match. Returns (missing, unexpected) key lists.
        """
        own = OrderedDict()
        for mprefix, m in self.named_modules():
            for name in list(m._params) + list(m._buffers):
                own[f"{mprefix}.{name}" if mprefix else name] = (m, name)
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing[:8]}"
                           f"{'...' if len(missing) > 8 else ''}, unexpected keys "
                           f"{unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
        for key, (m, name) in own.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            cur = getattr(m, name)
            cur_shape = cur.shape
            if value.shape != cur_shape:
                raise ValueError(f"load_state_dict: {key} has shape {value.shape}, "
                                 f"the model expects {cur_shape}")
            if name in m._params:
                dev = cur.device
                cur.data = np.array(value, dtype=np.float32)
                if dev != "cpu":  # a parameter keeps its device
                    cur.data = _to_device(cur.data, dev)
            else:
                object.__setattr__(m, name, np.array(value, dtype=np.float32))
        return missing, unexpected

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class Identity(Module):
    def forward(self, x):
        return x


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        k = F._pair(kernel_size, "Conv2d kernel_size")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = k, int(stride), int(padding)
        fan_in = in_channels * k * k
        self.weight = Parameter(init.kaiming_uniform((out_channels, in_channels, k, k), fan_in))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in))) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features), in_features))
        self.bias = Parameter(init.uniform((out_features,), 1 / math.sqrt(in_features))) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class GroupNorm(Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels {num_channels} is not divisible by "
                             f"num_groups {num_groups}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = Parameter(np.ones(num_channels)) if affine else None
        self.bias = Parameter(np.zeros(num_channels)) if affine else None

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def forward_silu(self, x):
        """silu(self(x)), fused on the CPU (F.group_norm_silu)."""
        return F.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class SiLU(Module):
    def forward(self, x):
        return F.silu(x)


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim)))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Attention(Module):
    """Self-attention over the H*W positions of a feature map (N, C, H, W):
    q, k, v from one 1x1 convolution, softmax(q k^T / sqrt(d)) v per head,
    then a 1x1 output projection. No norm and no residual: the U-Net's
    attention block adds those around it."""

    def __init__(self, channels, num_heads=1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"Attention: channels {channels} not divisible by heads {num_heads}")
        self.channels, self.num_heads = channels, num_heads
        self.qkv = Conv2d(channels, 3 * channels, 1)
        self.proj = Conv2d(channels, channels, 1)

    def forward(self, x):
        N, C, H, W = x.shape
        qkv = self.qkv(x).reshape(N, 3, C, H * W).permute(1, 0, 3, 2)  # (3, N, L, C)
        h = F.multi_head_attention(qkv[0], qkv[1], qkv[2], self.num_heads)
        return self.proj(h.permute(0, 2, 1).reshape(N, C, H, W))

    def extra_repr(self):
        return f"{self.channels}, num_heads={self.num_heads}"


class Sequential(Module):
    def __init__(self, *mods):
        super().__init__()
        for i, m in enumerate(mods):
            setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    def __init__(self, mods=()):
        super().__init__()
        for m in mods:
            self.append(m)

    def append(self, m):
        setattr(self, str(len(self._modules)), m)
        return self

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]
