"""Tensors and the tape.

A `Tensor` is a float32 numpy array (a device array later) plus what
reverse-mode differentiation needs: `requires_grad`, `.grad`, and the node
that made it. Every differentiable op records one `_Node` holding its
inputs and a closure over what its backward needs (the C kernel's saved
tensors). `Tensor.backward()` walks the nodes in reverse topological order
and then drops every closure, so saved activations are freed as soon as
the gradients exist (the tape is used once, as in PyTorch).
"""
import contextlib
import threading

import numpy as np

_state = threading.local()


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

    def __init__(self, data, requires_grad=False):
        self.data = _as_array(data)
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
    device = property(lambda self: "cpu")
    is_leaf = property(lambda self: self._node is None)

    def numpy(self):
        """The data as a numpy array (shared, not copied)."""
        return self.data

    def item(self):
        return self.data.item()

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
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{g})\n{self.data!r}"

    # -- differentiation --------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad must be given for a non-scalar output {self.shape}")
            grad = np.ones_like(self.data)
        grad = _as_array(grad)
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
            if node is None:  # a leaf
                g = _contig(g, np.float32)
                if t.grad is None:
                    t.grad = Tensor(g.copy() if g is grad else g)
                else:
                    t.grad.data = t.grad.data + g
                continue
            if node.backward is None:
                raise RuntimeError("backward through a graph a second time: its saved "
                                   "tensors were freed after the first backward")
            in_grads = node.backward(_contig(g, np.float32))
            for p, pg in zip(node.inputs, in_grads):
                if p is None or pg is None or not p.requires_grad:
                    continue
                if id(p) in grads:
                    grads[id(p)] = grads[id(p)] + pg
                else:
                    grads[id(p)] = pg
            node.backward = None  # free the saved tensors
            node.inputs = ()

    # -- operators (numpy for the cheap elementwise work) ------------------
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
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


def add(a, b):
    a, b = _tensor(a), _tensor(b)
    sa, sb = a.shape, b.shape
    return record(a.data + b.data, (a, b),
                  lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)))


def mul(a, b):
    a, b = _tensor(a), _tensor(b)
    ad, bd = a.data, b.data
    return record(ad * bd, (a, b),
                  lambda g: (_unbroadcast(g * bd, ad.shape) if a.requires_grad else None,
                             _unbroadcast(g * ad, bd.shape) if b.requires_grad else None))


def neg(a):
    return record(-a.data, (a,), lambda g: (-g,))


def reciprocal(a):
    r = 1.0 / a.data
    return record(r, (a,), lambda g: (-g * r * r,))


def reshape(a, shape):
    s = a.shape
    return record(a.data.reshape(shape), (a,), lambda g: (g.reshape(s),))


def permute(a, axes):
    inv = tuple(np.argsort(axes))
    return record(_contig(a.data.transpose(axes)), (a,),
                  lambda g: (_contig(g.transpose(inv)),))


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in items)


def getitem(a, index):
    s = a.shape

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
    out = np.asarray(a.data.sum(axis=axis, keepdims=keepdims, dtype=np.float32))

    def backward(g):
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, s).astype(np.float32),)
    return record(out, (a,), backward)
