"""timenet.cuda: the CUDA devices, their memory, and the build's CUDA support.

    import timenet
    timenet.cuda.is_available()          # False without a GPU, a driver, or a CUDA build
    x = timenet.Tensor(a, device="cuda") # a DeviceArray behind x.data
    model.to("cuda"); y = model(x); y.cpu().numpy()
    timenet.cuda.synchronize(); timenet.cuda.memory_stats()

Devices are "cpu", "cuda" (the current device, cuda:0 unless
`set_device` chose another) and "cuda:N". Work on a device runs on its one
stream, in issue order; `.numpy()` / `.cpu()` / `.item()` wait for it, so
explicit `synchronize()` is only needed for timing. Memory comes from a
caching allocator (freed arrays keep their blocks for reuse); `empty_cache()`
returns the cached blocks to the driver.

Nothing here touches the GPU at import: `is_available()` asks the driver
once, on first use, and is False (never an error) on a machine without one.
The functions that need a device raise a RuntimeError saying why there is
none (a CPU-only build, no driver, no GPU, an index out of range).

Mixed precision: `with timenet.cuda.autocast(): loss = ...`, then `loss.backward()`
runs the GEMM-heavy CUDA ops in bfloat16 with float32 accumulation; every
array stays float32, so the parameters are their own fp32 master weights.
"""
import contextlib
import re

from ._loader import _core

__all__ = ["DeviceArray", "is_built", "is_available", "device_count", "unavailable_reason",
           "synchronize", "memory_stats", "memory_allocated", "max_memory_allocated",
           "memory_reserved", "reset_peak_memory_stats", "empty_cache", "mem_get_info",
           "get_device_name", "get_device_capability", "current_device", "set_device",
           "set_allow_tf32", "allow_tf32", "set_cudnn_benchmark", "cudnn_benchmark",
           "autocast", "set_autocast", "autocast_enabled", "parse_device"]

DeviceArray = _core.DeviceArray
_current = 0


def is_built() -> bool:
    """True when timenet._core was compiled with the CUDA backend."""
    return bool(_core.has_cuda)


def device_count() -> int:
    """CUDA devices usable by timenet (0 without a CUDA build, driver or GPU)."""
    return int(_core.cuda_device_count()) if is_built() else 0


def is_available() -> bool:
    """True when timenet can run on a GPU here. Never raises."""
    return device_count() > 0


def unavailable_reason() -> str:
    """Why `is_available()` is False ('' when it is True)."""
    if not is_built():
        return _core.cuda_unavailable_reason()
    return _core.cuda_unavailable_reason() if device_count() == 0 else ""


def _require(index=None) -> int:
    """The device index to use; RuntimeError when there is no such device."""
    if not is_built():
        raise RuntimeError(f"CUDA is not available: {_core.cuda_unavailable_reason()}")
    n = device_count()
    if n == 0:
        raise RuntimeError(f"CUDA is not available: {_core.cuda_unavailable_reason()}")
    i = _current if index is None else int(index)
    if not 0 <= i < n:
        raise RuntimeError(f"CUDA device cuda:{i} does not exist: this machine has {n} "
                           f"CUDA device{'s' if n != 1 else ''}")
    return i


_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def parse_device(device):
    """'cpu' -> ('cpu', None); 'cuda' / 'cuda:N' / an int N -> ('cuda', N)
    (N the current device for plain 'cuda'). Checks nothing about the
    machine: `_require` does."""
    if device is None:
        return "cpu", None
    if isinstance(device, int) and not isinstance(device, bool):
        return "cuda", device
    m = _DEVICE_RE.match(str(device).strip())
    if not m:
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    kind, idx = m.group(1), m.group(2)
    if kind == "cpu":
        if idx not in (None, "0"):
            raise ValueError(f"unknown device {device!r}: the CPU is 'cpu'")
        return "cpu", None
    return "cuda", (_current if idx is None else int(idx))


def device_name(kind, index):
    """The canonical string: 'cpu' or 'cuda:N'."""
    return "cpu" if kind == "cpu" else f"cuda:{index}"


def current_device() -> int:
    """The index plain 'cuda' means."""
    return _current


def set_device(device) -> None:
    """Make 'cuda:N' (or N) what plain 'cuda' means."""
    global _current
    kind, idx = parse_device(device)
    if kind != "cuda":
        raise ValueError(f"set_device: expected a CUDA device, got {device!r}")
    _current = _require(idx)


def _index(device):
    if device is None:
        return _require()
    kind, idx = parse_device(device)
    if kind != "cuda":
        raise ValueError(f"expected a CUDA device, got {device!r}")
    return _require(idx)


def synchronize(device=None) -> None:
    """Wait until every op queued on the device (default: all devices) has finished."""
    if device is None:
        _require()
        _core.cuda_synchronize(-1)
    else:
        _core.cuda_synchronize(_index(device))


def memory_stats(device=None) -> dict:
    """The caching allocator's counters for a device: allocated_bytes (blocks
    in use), peak_allocated_bytes, requested_bytes, cached_bytes (free blocks
    kept for reuse), reserved_bytes (allocated + cached), peak_reserved_bytes,
    and call counts (num_allocs, num_frees, num_device_allocs,
    num_device_frees, num_ooms)."""
    return dict(_core.cuda_memory_stats(_index(device)))


def memory_allocated(device=None) -> int:
    return memory_stats(device)["allocated_bytes"]


def max_memory_allocated(device=None) -> int:
    return memory_stats(device)["peak_allocated_bytes"]


def memory_reserved(device=None) -> int:
    return memory_stats(device)["reserved_bytes"]


def reset_peak_memory_stats(device=None) -> None:
    _core.cuda_reset_peak_memory_stats(_index(device))


def empty_cache(device=None) -> None:
    """Give the allocator's cached (free) blocks back to the driver."""
    if device is None:
        _require()
        _core.cuda_empty_cache(-1)
    else:
        _core.cuda_empty_cache(_index(device))


def mem_get_info(device=None):
    """(free, total) bytes of device memory, as the driver reports them."""
    return tuple(_core.cuda_mem_get_info(_index(device)))


def get_device_name(device=None) -> str:
    return _core.cuda_get_device_name(_index(device))[0]


def get_device_capability(device=None):
    _, major, minor = _core.cuda_get_device_name(_index(device))
    return major, minor


def set_allow_tf32(flag: bool) -> None:
    """Let float32 GEMMs (cuBLAS) and convolutions (cuDNN) use TF32 tensor
    cores (10-bit mantissa products, float32 sums): several times faster on
    Ampere and later, about 1e-3 relative error. Off by default."""
    _core.cuda_set_allow_tf32(bool(flag))


def allow_tf32() -> bool:
    return bool(_core.cuda_get_allow_tf32())


def set_cudnn_benchmark(flag: bool) -> None:
    """True (default): time cuDNN's convolution algorithms once per shape and
    keep the fastest; False: take cuDNN's heuristic choice (no timing runs)."""
    _core.cuda_set_cudnn_benchmark(bool(flag))


def cudnn_benchmark() -> bool:
    return bool(_core.cuda_get_cudnn_benchmark())


def set_autocast(flag: bool) -> None:
    """Turn bf16 autocast on or off for this thread (prefer the `autocast`
    context manager). On needs a CUDA build: a CPU-only build raises
    RuntimeError (off always works)."""
    _core.cuda_set_autocast(bool(flag))


def autocast_enabled() -> bool:
    """Whether bf16 autocast is on in this thread."""
    return bool(_core.cuda_get_autocast())


@contextlib.contextmanager
def autocast(enabled=True):
    """bf16 mixed precision for the CUDA ops inside the block (this thread).

    While on, conv2d, linear and attention on CUDA tensors, forward and
    backward, compute from bfloat16 copies of their float32 operands (made
    in allocator workspace) with float32 accumulation: bf16 tensor cores,
    about 3 significant digits per product. Their outputs and gradients are
    float32 arrays, so parameters, gradients, optimizer moments and every
    other op (norms, softmax, losses, the optimizer) stay float32: the
    parameters are the fp32 master weights. No loss scaling is needed (bf16
    has float32's exponent range). CPU ops are not affected.

    Nestable (``autocast(False)`` inside turns it off for its block) and
    usable as a decorator; the previous state comes back on exit, also on an
    exception. An op's backward runs in the state its forward ran in (as in
    PyTorch), so ``loss.backward()`` may come after the block. A CPU-only
    build raises RuntimeError for ``enabled=True`` (there is nothing to
    cast); ``enabled=False`` works everywhere.
    """
    prev = autocast_enabled()
    set_autocast(enabled)
    try:
        yield
    finally:
        set_autocast(prev)
