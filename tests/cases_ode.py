"""Op-table rows for the ODE step kernels (csrc/ode/ode.c): forward only
(nothing differentiates through a solver step)."""
import numpy as np

from optable import Bad, Case, randn
from timenet._loader import _core

DP_A5 = [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]
DP_E = [-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40]

_rng = np.random.default_rng(11)


def _hb(h, B, ndim):
    """h (a float or B floats) shaped to broadcast over (B, ...)."""
    h = np.broadcast_to(np.asarray(h, np.float64).reshape(-1), (B,))
    return h.reshape((B,) + (1,) * (ndim - 1))
CASES, BAD = [], []


def _combine_ref(coeffs, h):
    def ref(x):
        B = x["y"].shape[0]
        s = sum(c * x[f"k{j}"] for j, c in enumerate(coeffs))
        return x["y"] + _hb(h, B, x["y"].ndim) * s
    return ref


def _combine_fwd(coeffs, h):
    return lambda x: _core.ode_combine(x["y"], [x[f"k{j}"] for j in range(len(coeffs))],
                                       coeffs, h)


def _norm_ref(coeffs, h, rtol, atol):
    def ref(x):
        B = x["y"].shape[0]
        hb = _hb(h, B, x["y"].ndim)
        err = hb * sum(c * x[f"k{j}"] for j, c in enumerate(coeffs))
        sc = atol + rtol * np.maximum(np.abs(x["y"]), np.abs(x["y_new"]))
        return np.sqrt(np.mean((err / sc).reshape(B, -1) ** 2, axis=1))
    return ref


def _norm_fwd(coeffs, h, rtol, atol):
    # The kernel returns float64; the table compares float32 outputs.
    return lambda x: _core.ode_error_norm([x[f"k{j}"] for j in range(len(coeffs))], coeffs, h,
                                          x["y"], x["y_new"], rtol, atol).astype(np.float32)


for name, shape, coeffs in [("ode_combine_dp5", (3, 2, 5, 5), DP_A5),
                            ("ode_combine_1", (4, 7), [1.0]),
                            ("ode_combine_big", (2, 3, 64, 64), DP_A5[:3])]:
    for hname, h in [("scalar_h", 0.037), ("per_sample_h", list(_rng.uniform(0.01, 0.5, shape[0])))]:
        inputs = {"y": randn(_rng, *shape)}
        inputs.update({f"k{j}": randn(_rng, *shape) for j in range(len(coeffs))})
        CASES.append(Case(f"{name}_{hname}", inputs, fwd=_combine_fwd(coeffs, h),
                          ref=_combine_ref(coeffs, h), atol=1e-6, rtol=1e-6, fd=False))

for name, shape, rtol, atol in [("ode_error_norm_dp", (3, 3, 6, 6), 1e-5, 1e-5),
                                ("ode_error_norm_loose", (2, 50), 1e-3, 1e-6),
                                ("ode_error_norm_big", (2, 3, 64, 64), 1e-4, 1e-4)]:
    h = list(_rng.uniform(0.01, 0.2, shape[0]))
    inputs = {"y": randn(_rng, *shape), "y_new": randn(_rng, *shape)}
    inputs.update({f"k{j}": randn(_rng, *shape) for j in range(len(DP_E))})
    CASES.append(Case(name, inputs, fwd=_norm_fwd(DP_E, h, rtol, atol),
                      ref=_norm_ref(DP_E, h, rtol, atol), atol=0, rtol=1e-5, fd=False))

_y = np.zeros((2, 3), np.float32)
BAD += [
    Bad("ode_combine_k_shape", lambda: _core.ode_combine(_y, [np.zeros((2, 4), np.float32)],
                                                         [1.0], 0.1),
        ValueError, r"ode_combine: ks\[0\] must be \(2, 3\) float32"),
    Bad("ode_combine_k_dtype", lambda: _core.ode_combine(_y, [np.zeros((2, 3))], [1.0], 0.1),
        TypeError, r"ks\[0\] must be .* float32, got \(2, 3\) float64"),
    Bad("ode_combine_coeff_count", lambda: _core.ode_combine(_y, [_y, _y], [1.0], 0.1),
        ValueError, "coeffs must have 2 values"),
    Bad("ode_combine_h_count", lambda: _core.ode_combine(_y, [_y], [1.0], [0.1, 0.2, 0.3]),
        ValueError, r"h must have 2 values \(one per sample\)"),
    Bad("ode_combine_no_stages", lambda: _core.ode_combine(_y, [], [], 0.1),
        ValueError, "ks must hold 1 to 16 arrays"),
    Bad("ode_combine_ks_not_list", lambda: _core.ode_combine(_y, _y, [1.0], 0.1),
        TypeError, "ks must be a list"),
    Bad("ode_combine_out_overlaps_k", lambda: _core.ode_combine(_y, [_y.copy()], [1.0], 0.1,
                                                                out=_y[:, :]),
        ValueError, "must be writeable|overlap"),
    Bad("ode_error_norm_tol", lambda: _core.ode_error_norm([_y], [1.0], 0.1, _y, _y, 0.0, 0.0),
        ValueError, "rtol and atol must be >= 0 and not both 0"),
    Bad("ode_error_norm_y_new_shape",
        lambda: _core.ode_error_norm([_y], [1.0], 0.1, _y, np.zeros((3, 2), np.float32),
                                     1e-5, 1e-5),
        ValueError, r"y_new must be \(2, 3\) float32"),
]
