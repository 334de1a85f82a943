"""Tensors and the tape.

A `Tensor` is a float32 array plus what reverse-mode differentiation needs:
`requires_grad`, `.grad`, and the node that made it. Every differentiable op
records one `_Node` holding its inputs and a closure over what its backward
needs (the C kernel's saved tensors). `Tensor.backward()` walks the nodes in
reverse topological order and then drops every closure, so saved
activations are freed as soon as the gradients exist (the tape is used
once, as in PyTorch).

Devices. On the CPU `.data` is a numpy array; on a GPU it is a
`timenet._core.DeviceArray` (C-contiguous device memory, see timenet.cuda),
and so are the gradients the tape carries. `Tensor(a, device="cuda")`,
`t.to(device)` (differentiable), `t.cpu()` and `Module.to(device)` move
data. Every op runs where its inputs live (`_kernels` picks the CPU or the
CUDA kernels); inputs on different devices are an error that names both.
The CPU path is the numpy code below, unchanged; the CUDA path of the
Tensor arithmetic (broadcasting add/mul, slicing, permute, sum) is a small
set of strided kernels (`_core.cuda_binary`, `cuda_strided_copy`, ...).
"""
import contextlib
import threading

import numpy as np

from ._loader import _core
from . import cuda as _cuda

_state = threading.local()
_DeviceArray = _core.DeviceArray


def is_grad_enabled() -> bool:
    return getattr(_state, "grad", True)


@contextlib.contextmanager
def no_grad():
    """Context in which ops record nothing (inference, optimizer updates)."""
    prev = is_grad_enabled()
    _state.grad = False
    try:
        yield
    finally:
        _state.grad = prev


@contextlib.contextmanager
def enable_grad():
    prev = is_grad_enabled()
    _state.grad = True
    try:
        yield
    finally:
        _state.grad = prev


def _contig(a, dtype=None):
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return np.asarray(a, dtype=dtype, order="C")


def _as_array(data):
    if isinstance(data, Tensor):
        return data.data
    if type(data) is _DeviceArray:
        return data
    a = np.asarray(data)
    if a.dtype.kind in "fc" or a.dtype == bool:
        a = a.astype(np.float32, copy=False)
    return _contig(a)


class _Node:
    __slots__ = ("backward", "inputs")

    def __init__(self, backward, inputs):
        self.backward = backward   # g (array) -> tuple of arrays/None, one per input
        self.inputs = inputs       # tuple of Tensor (or None for non-tensor args)


class Tensor:
    """A float32 array with gradients.

    >>> x = Tensor(np.ones((2, 3)), requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad.numpy()
    """

    __array_priority__ = 100  # numpy scalars defer to Tensor's operators

    def __init__(self, data, requires_grad=False, device=None):
        self.data = _as_array(data)
        if device is not None:
            self.data = _to_device(self.data, device)
        if requires_grad and self.data.dtype != np.float32:
            raise TypeError(f"only float tensors can require grad, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None

    # -- basic attributes -------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    device = property(lambda self: _device_of(self.data))
    is_cuda = property(lambda self: type(self.data) is _DeviceArray)
    is_leaf = property(lambda self: self._node is None)

    def numpy(self):
        """The data as a numpy array (shared, not copied, on the CPU; a host
        copy of a CUDA tensor, which waits for its queued work)."""
        if type(self.data) is _DeviceArray:
            return self.data.numpy()
        return self.data

    def item(self):
        if type(self.data) is _DeviceArray:
            return self.data.numpy().item()
        return self.data.item()

    def to(self, device):
        """This tensor on `device` ('cpu', 'cuda', 'cuda:N'): itself when it
        is there already, else a copy that gradients flow back through."""
        target = _canonical_device(device)
        src = self.device
        if target == src:
            return self
        return record(_to_device(self.data, target), (self,),
                      lambda g: (_to_device(g, src),))

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def detach(self):
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be set on leaf tensors")
        self.requires_grad = bool(flag)
        return self

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        g = ", requires_grad=True" if self.requires_grad else ""
        if type(self.data) is _DeviceArray:
            return f"Tensor(shape={self.shape}, dtype={self.dtype}, device='{self.device}'{g})"
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{g})\n{self.data!r}"

    # -- differentiation --------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad must be given for a non-scalar output {self.shape}")
            grad = _ones_like(self.data)
        grad = _as_array(grad)
        if _device_of(grad) != self.device:
            raise RuntimeError(f"backward: grad is on {_device_of(grad)}, the tensor on "
                               f"{self.device}")
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad shape {grad.shape} != tensor shape {self.shape}")

        order, seen, stack = [], set(), [(self, False)]
        while stack:  # iterative DFS: deep nets would overflow Python's recursion
            t, done = stack.pop()
            if done:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            if t._node is not None:
                for p in t._node.inputs:
                    if p is not None and p.requires_grad and id(p) not in seen:
                        stack.append((p, False))

        grads = {id(self): grad}
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            node = t._node
            on_device = type(g) is _DeviceArray
            if node is None:  # a leaf
                if not on_device:
                    g = _contig(g, np.float32)
                if t.grad is None:
                    t.grad = Tensor(g.copy() if g is grad else g)
                elif on_device:
                    t.grad.data = _dev_binary(_ADD, t.grad.data, g)
                else:
                    t.grad.data = t.grad.data + g
                continue
            if node.backward is None:
                raise RuntimeError("backward through a graph a second time: its saved "
                                   "tensors were freed after the first backward")
            in_grads = node.backward(g if on_device else _contig(g, np.float32))
            for p, pg in zip(node.inputs, in_grads):
                if p is None or pg is None or not p.requires_grad:
                    continue
                if (type(pg) is _DeviceArray) != (type(p.data) is _DeviceArray):
                    raise RuntimeError(f"backward: the gradient of a tensor on {p.device} "
                                       f"came back on {_device_of(pg)}")
                if id(p) in grads:
                    prev = grads[id(p)]
                    grads[id(p)] = (_dev_binary(_ADD, prev, pg) if type(prev) is _DeviceArray
                                    else prev + pg)
                else:
                    grads[id(p)] = pg
            node.backward = None  # free the saved tensors
            node.inputs = ()

    # -- operators (numpy for the cheap elementwise work) ------------------
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        if type(self.data) is _DeviceArray and _is_number(other):
            return add(self, -float(other))
        return add(self, neg(_tensor(other)))

    def __rsub__(self, other):
        return add(neg(self), other)

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, Tensor):
            return mul(self, reciprocal(other))
        return mul(self, 1.0 / float(other))

    def __neg__(self):
        return neg(self)

    def __getitem__(self, index):
        return getitem(self, index)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    view = reshape

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return permute(self, axes)

    def transpose(self, a, b):
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return permute(self, tuple(axes))

    def flatten(self, start_dim=0):
        return reshape(self, self.shape[:start_dim] + (-1,))

    def sum(self, axis=None, keepdims=False):
        return reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        n = self.data.size if axis is None else np.prod(
            [self.shape[a] for a in np.atleast_1d(axis)])
        return reduce_sum(self, axis, keepdims) * (1.0 / float(n))


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


# -- devices --------------------------------------------------------------------

def _device_of(a):
    """'cpu' for a numpy array, 'cuda:N' for a DeviceArray."""
    return f"cuda:{a.device}" if type(a) is _DeviceArray else "cpu"


def _canonical_device(device):
    """'cpu' or 'cuda:N' (checked to exist: RuntimeError otherwise)."""
    kind, idx = _cuda.parse_device(device)
    return "cpu" if kind == "cpu" else f"cuda:{_cuda._require(idx)}"


def _to_device(a, device):
    """The array a (numpy or DeviceArray) on `device`; a itself when it is
    there. Host integer arrays keep int32 / become int64 on the device."""
    target = _canonical_device(device)
    if target == _device_of(a):
        return a
    if target == "cpu":
        return a.numpy()
    idx = int(target[5:])
    host = a.numpy() if type(a) is _DeviceArray else np.asarray(a)
    return _DeviceArray.from_numpy(host, idx)


def _host_copy(a):
    """A numpy copy of a numpy array or a DeviceArray."""
    return a.numpy() if type(a) is _DeviceArray else a.copy()


def _cat_rows(chunks):
    """Concatenate (n_i, ...) arrays along dim 0 on their device (numpy or
    DeviceArrays): on a GPU each chunk is one (1, n_i * rest) row of the
    channel-concat kernel."""
    if len(chunks) == 1:
        return chunks[0]
    if type(chunks[0]) is not _DeviceArray:
        return np.concatenate(chunks)
    rest = chunks[0].shape[1:]
    flat = _core.cuda_concat_forward([c.reshape(1, c.size) for c in chunks])
    return flat.reshape((sum(c.shape[0] for c in chunks),) + rest)


def _ones_like(a):
    if type(a) is _DeviceArray:
        return _DeviceArray.full(a.shape, 1.0, a.device)
    return np.ones_like(a)


def _zeros_like(a):
    if type(a) is _DeviceArray:
        return _DeviceArray.zeros(a.shape, a.device)
    return np.zeros_like(a)


class _CudaKernels:
    """`_core`'s CUDA ops under the CPU ops' names: `conv2d_forward` is
    `_core.cuda_conv2d_forward` (same arguments, DeviceArrays in and out)."""

    def __getattr__(self, name):
        f = getattr(_core, "cuda_" + name)
        setattr(self, name, f)
        return f


_cuda_kernels = _CudaKernels()


def _kernels(op, **tensors):
    """The kernels for an op whose tensor arguments are `tensors` (name ->
    Tensor or None): `_core` when they are all on the CPU, the CUDA kernels
    when they are all on one GPU; inputs on different devices raise a
    RuntimeError naming both."""
    where, first = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        d = t.data if isinstance(t, Tensor) else t
        dev = d.device if type(d) is _DeviceArray else -1
        if where is None:
            where, first = dev, name
        elif dev != where:
            def show(i):
                return "cpu" if i < 0 else f"cuda:{i}"
            raise RuntimeError(f"{op}: expected all tensors on one device, got {first} on "
                               f"{show(where)} and {name} on {show(dev)}")
    return _core if where is None or where < 0 else _cuda_kernels


def _is_number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, np.bool_)


# Strided CUDA primitives over DeviceArrays (csrc/cuda/elementwise.cu).
_ADD, _SUB, _MUL, _DIV = 0, 1, 2, 3
_S_ADD, _S_MUL, _S_RDIV = 0, 1, 2


def _dev_binary(op, a, b):
    """a op b with numpy broadcasting, DeviceArrays."""
    return _core.cuda_binary(op, a, b)


def _strides(shape):
    st, run = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        st[i] = run
        run *= shape[i]
    return st


def _dev_permute(x, axes):
    st = _strides(x.shape)
    return _core.cuda_strided_copy(x, tuple(x.shape[i] for i in axes),
                                   tuple(st[i] for i in axes), 0)


def _dev_broadcast_to(x, shape):
    """x (same ndim as shape, each dim equal or 1) repeated to shape."""
    st = [0 if n == 1 and m != 1 else s for s, n, m in zip(_strides(x.shape), x.shape, shape)]
    return _core.cuda_strided_copy(x, tuple(shape), tuple(st), 0)


def _dev_unbroadcast(g, shape):
    """Sum g over the axes broadcasting added to reach g.shape from shape."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return _core.cuda_sum(g, axes, True).reshape(shape)


def _dev_view(shape, index):
    """(offset, shape, strides) in elements of a[index] for a C-contiguous
    array a of `shape` and a basic index, computed by numpy on a zero-size
    stand-in (as_strided: no memory is read)."""
    items = index if isinstance(index, tuple) else (index,)
    if not _is_basic(index) or any(isinstance(i, (bool, np.bool_)) for i in items):
        raise NotImplementedError(
            f"indexing a CUDA tensor supports basic indices only (ints, slices, None, ...), "
            f"got {index!r}; move it to the CPU for advanced indexing")
    base = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=tuple(shape),
                                           strides=tuple(4 * s for s in _strides(shape)))
    view = base[index]
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 4
    return offset, view.shape, tuple(s // 4 for s in view.strides)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"sum: axis {a} is out of range for {ndim} dims")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def record(out, inputs, backward):
    """Wrap `out` (an array) as a Tensor; record `backward` when needed.

    backward(g) returns one gradient (array or None) per entry of `inputs`.
    """
    t = Tensor(out)
    if is_grad_enabled() and any(p is not None and p.requires_grad for p in inputs):
        t.requires_grad = True
        t._node = _Node(backward, tuple(inputs))
    return t


def _unbroadcast(g, shape):
    """Sum g over the axes numpy broadcast to reach g.shape from shape."""
    if g.shape == shape:
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _on_cuda(a, b):
    return ((isinstance(a, Tensor) and type(a.data) is _DeviceArray) or
            (isinstance(b, Tensor) and type(b.data) is _DeviceArray))


def _cuda_add(a, b):
    if _is_number(b) or _is_number(a):
        t, s = (a, float(b)) if _is_number(b) else (b, float(a))
        return record(_core.cuda_scalar(_S_ADD, t.data, s), (t,), lambda g: (g,))
    a, b = _tensor(a), _tensor(b)
    _kernels("add", a=a, b=b)
    sa, sb = a.shape, b.shape
    return record(_dev_binary(_ADD, a.data, b.data), (a, b),
                  lambda g: (_dev_unbroadcast(g, sa), _dev_unbroadcast(g, sb)))


def _cuda_mul(a, b):
    if _is_number(b) or _is_number(a):
        t, s = (a, float(b)) if _is_number(b) else (b, float(a))
        return record(_core.cuda_scalar(_S_MUL, t.data, s), (t,),
                      lambda g: (_core.cuda_scalar(_S_MUL, g, s),))
    a, b = _tensor(a), _tensor(b)
    _kernels("mul", a=a, b=b)
    ad, bd = a.data, b.data
    return record(_dev_binary(_MUL, ad, bd), (a, b),
                  lambda g: (_dev_unbroadcast(_dev_binary(_MUL, g, bd), ad.shape)
                             if a.requires_grad else None,
                             _dev_unbroadcast(_dev_binary(_MUL, g, ad), bd.shape)
                             if b.requires_grad else None))


def add(a, b):
    if _on_cuda(a, b):
        return _cuda_add(a, b)
    a, b = _tensor(a), _tensor(b)
    sa, sb = a.shape, b.shape
    return record(a.data + b.data, (a, b),
                  lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)))


def mul(a, b):
    if _on_cuda(a, b):
        return _cuda_mul(a, b)
    a, b = _tensor(a), _tensor(b)
    ad, bd = a.data, b.data
    return record(ad * bd, (a, b),
                  lambda g: (_unbroadcast(g * bd, ad.shape) if a.requires_grad else None,
                             _unbroadcast(g * ad, bd.shape) if b.requires_grad else None))


def neg(a):
    if type(a.data) is _DeviceArray:
        return record(_core.cuda_scalar(_S_MUL, a.data, -1.0), (a,),
                      lambda g: (_core.cuda_scalar(_S_MUL, g, -1.0),))
    return record(-a.data, (a,), lambda g: (-g,))


def reciprocal(a):
    if type(a.data) is _DeviceArray:
        r = _core.cuda_scalar(_S_RDIV, a.data, 1.0)
        return record(r, (a,), lambda g: (_core.cuda_scalar(
            _S_MUL, _dev_binary(_MUL, _dev_binary(_MUL, g, r), r), -1.0),))
    r = 1.0 / a.data
    return record(r, (a,), lambda g: (-g * r * r,))


def reshape(a, shape):
    s = a.shape
    return record(a.data.reshape(shape), (a,), lambda g: (g.reshape(s),))


def permute(a, axes):
    inv = tuple(np.argsort(axes))
    if type(a.data) is _DeviceArray:
        axes = tuple(int(i) % a.ndim for i in axes)
        inv = tuple(int(i) for i in np.argsort(axes))
        return record(_dev_permute(a.data, axes), (a,), lambda g: (_dev_permute(g, inv),))
    return record(_contig(a.data.transpose(axes)), (a,),
                  lambda g: (_contig(g.transpose(inv)),))


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in items)


def getitem(a, index):
    s = a.shape
    if type(a.data) is _DeviceArray:
        offset, vshape, vstrides = _dev_view(s, index)
        dev = a.data.device

        def dev_backward(g):
            dx = _DeviceArray.zeros(s, dev)
            _core.cuda_strided_add_(dx, g, vshape, vstrides, offset)
            return (dx,)
        return record(_core.cuda_strided_copy(a.data, vshape, vstrides, offset), (a,),
                      dev_backward)

    def backward(g):
        dx = np.zeros(s, np.float32)
        if _is_basic(index):  # a view: no index repeats, plain assignment is exact
            dx[index] = g
        else:
            np.add.at(dx, index, g)
        return (dx,)
    return record(_contig(a.data[index]), (a,), backward)


def reduce_sum(a, axis=None, keepdims=False):
    s = a.shape
    if type(a.data) is _DeviceArray:
        axes = _axes(axis, a.ndim)
        kept = tuple(1 if i in axes else n for i, n in enumerate(s))

        def dev_backward(g):
            return (_dev_broadcast_to(g.reshape(kept), s),)
        return record(_core.cuda_sum(a.data, axes, bool(keepdims)), (a,), dev_backward)
    out = np.asarray(a.data.sum(axis=axis, keepdims=keepdims, dtype=np.float32))

    def backward(g):
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, s).astype(np.float32),)
    return record(out, (a,), backward)
