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
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

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
