"""Load timenet._core and the OpenBLAS it links to.

The extension names `libscipy_openblas.so` as a needed library. The
scipy-openblas32 wheel installs it under its own package folder, which is
on no loader path, so it is loaded here first (RTLD_GLOBAL): the dynamic
loader then matches the extension's dependency by soname.
"""
import ctypes
import os

import scipy_openblas32

# OpenMP threads that spin at barriers (libgomp's default) lose their time
# slice whenever another process holds a core: on a busy 2-core machine a
# tiny-preset training step measured 3.7x slower on 2 threads than with
# passive waiting (23.6 vs 87.6 images/s). Our parallel regions are long
# (whole ops), so a sleeping thread's wake-up is cheap next to them. libgomp
# reads this once, when _core loads it; set OMP_WAIT_POLICY to override.
# On a machine of one's own, GOMP_SPINCOUNT=10000 (spin ~0.1 ms before
# sleeping) trained the tiny preset 19 % faster here, but 28 % slower with
# one other busy process; 1000: +6 % alone, -5 % next to another training.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def _keep_freed_memory():
    """Have glibc's malloc keep freed memory for reuse instead of handing it
    back to the kernel: a training step frees and reallocates the same
    activations, gradients and kernel workspaces every step, and by default
    arrays of more than a few MB come from fresh mmaps and the heap top is
    trimmed, so every step page-faults them in again. On the 2-core VM that
    cost ~10 us a fault, 480 faults in one small conv backward (1.5 ms
    becoming 6.5): the tiny preset's flow training ran at 88 images/s, 121
    with this. Allocations up to 32 MB (glibc's largest mmap threshold)
    come from the heap, and up to 1 GB of free heap top is kept (peak RSS of
    the small presets' training unchanged: the freed memory is what the
    next step allocates). MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
    in the environment win (glibc reads them at start-up). Returns the
    settings made, {} off glibc."""
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h
    done = {}
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, 32 << 20),
                              ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, 1 << 30)):
        if env not in os.environ and mallopt(param, value) == 1:
            done[env] = value
    return done


malloc_settings = _keep_freed_memory()

_blas = ctypes.CDLL(
    os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so"),
    mode=ctypes.RTLD_GLOBAL,
)

try:
    from . import _core  # noqa: E402
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "timenet._core is not built. Run `make build` (or `pip install -e .`) in the "
        f"source tree. Cause: {e}"
    ) from e
