"""The table-driven op harness (after ggml's test-backend-ops).

Each op family contributes a module `tests/cases_<family>.py` that defines

    CASES: list[Case]   one row per (op, shape, setting)
    BAD:   list[Bad]    calls that must raise a clear exception

and `tests/test_ops.py` runs every row through the same checks:

1. forward of the C op (float32) against the float64 numpy reference;
2. backward of the C op against the reference's hand-written gradients;
3. the reference's gradients against central finite differences of the
   reference forward (float64: this is what makes the reference the oracle);
4. the C backward against central finite differences of the C forward
   (float32, a directional derivative along a random direction).

A row's callables take a dict of named inputs: `fwd(x)` -> output array,
`bwd(gy, x)` -> dict of input gradients (only the differentiable inputs).
`x` holds float32 arrays for the C op and float64 arrays for the reference;
`params` (ints, flags) are closed over by the lambdas.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class Case:
    name: str
    inputs: dict                       # name -> float64 array (the reference's inputs)
    fwd: Callable                      # C op: dict of float32 -> float32 array
    ref: Callable                      # reference: dict of float64 -> float64 array
    bwd: Optional[Callable] = None     # C backward: (gy, dict) -> dict name -> grad
    ref_bwd: Optional[Callable] = None # reference backward, same signature, float64
    atol: float = 1e-5                 # forward tolerance: |c - ref| <= atol + rtol*|ref|
    rtol: float = 1e-4
    gatol: float = 1e-4                # backward vs reference gradients
    grtol: float = 1e-3
    fd: bool = True                    # run the finite-difference checks
    fd_eps: float = 1e-2               # float32 FD step (relative to input scale 1)
    fd_tol: float = 2e-2               # relative error allowed on the float32 directional FD
    no_grad: tuple = ()                # inputs that are not differentiable (ids, indices)


@dataclass
class Bad:
    name: str
    call: Callable                     # must raise
    exc: type                          # expected exception type
    match: str = ""                    # regex the message must contain


def f32(d):
    return {k: (np.ascontiguousarray(v, dtype=np.float32) if v.dtype.kind == "f" else v)
            for k, v in d.items()}


def directional_fd(fwd, x, gy, name, u, eps):
    """d/de sum(gy * fwd(x + e*u)) at e = 0 by central differences."""
    def loss(e):
        xe = dict(x)
        xe[name] = (x[name] + e * u).astype(x[name].dtype)
        return float(np.sum(gy.astype(np.float64) * fwd(xe).astype(np.float64)))
    return (loss(eps) - loss(-eps)) / (2 * eps)


# Shared random inputs, so rows stay short.
def randn(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale
