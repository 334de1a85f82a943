"""timenet: one-step diffusion anomaly detection (TimeNet) on a C/CUDA core.

The compute core is `timenet._core` (plain C, OpenMP, OpenBLAS); everything
here is thin orchestration over it.
"""
import os as _os

from ._loader import _core
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad
from . import nn, optim
from .nn.init import manual_seed
from .timenet_model import TimeNetModel
from .pipeline import TimeNet, TimeNetConfig

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled", "nn", "optim",
           "manual_seed", "set_num_threads", "get_num_threads", "TimeNet", "TimeNetConfig",
           "TimeNetModel"]


def set_num_threads(n: int) -> None:
    """Threads for the C kernels and GEMM (default: the cores available)."""
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the C kernels use."""
    return _core.get_num_threads()


def _default_threads() -> int:
    try:
        return len(_os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return _os.cpu_count() or 1


set_num_threads(int(_os.environ.get("TIMENET_NUM_THREADS", _default_threads())))
