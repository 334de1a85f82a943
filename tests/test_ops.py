"""Every engine op against its float64 numpy reference (see optable.py)."""
import glob
import importlib
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from optable import directional_fd, f32  # noqa: E402

CASES, BAD = [], []
for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "cases_*.py"))):
    mod = importlib.import_module(os.path.basename(path)[:-3])
    CASES += getattr(mod, "CASES", [])
    BAD += getattr(mod, "BAD", [])

ids = [c.name for c in CASES]


def _close(got, want, atol, rtol, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got.astype(np.float64) - want)
    bound = atol + rtol * np.abs(want)
    worst = np.argmax(err - bound)
    assert np.all(err <= bound), (
        f"{what}: max excess at {np.unravel_index(worst, err.shape)}: "
        f"got {got.flat[worst]!r}, want {want.flat[worst]!r} (max abs err {err.max():.3g})")


def _gy(case, shape):
    rng = np.random.default_rng(len(case.name))
    return rng.standard_normal(shape)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward(case):
    got = case.fwd(f32(case.inputs))
    want = case.ref(case.inputs)
    assert got.dtype == np.float32, f"{case.name}: output dtype {got.dtype}"
    assert np.all(np.isfinite(got))
    _close(got, want, case.atol, case.rtol, case.name + " forward")


@pytest.mark.parametrize("case", [c for c in CASES if c.bwd], ids=[c.name for c in CASES if c.bwd])
def test_backward_vs_reference(case):
    want_y = case.ref(case.inputs)
    gy = _gy(case, want_y.shape)
    got = case.bwd(gy.astype(np.float32), f32(case.inputs))
    want = case.ref_bwd(gy, case.inputs)
    assert set(got) == set(want), f"{case.name}: grads for {set(got)} vs {set(want)}"
    for k in want:
        _close(got[k], want[k], case.gatol, case.grtol, f"{case.name} d{k}")


@pytest.mark.parametrize("case", [c for c in CASES if c.bwd and c.fd],
                         ids=[c.name for c in CASES if c.bwd and c.fd])
def test_backward_finite_differences(case):
    want_y = case.ref(case.inputs)
    gy = _gy(case, want_y.shape)
    ref_grads = case.ref_bwd(gy, case.inputs)
    x32 = f32(case.inputs)
    c_grads = case.bwd(gy.astype(np.float32), x32)
    rng = np.random.default_rng(7)
    for k in ref_grads:
        if k in case.no_grad:          # ids, indices: nothing to perturb
            continue
        u = rng.standard_normal(case.inputs[k].shape)
        # The reference against float64 FD: tight.
        fd64 = directional_fd(case.ref, case.inputs, gy, k, u, 1e-6)
        an64 = float(np.sum(ref_grads[k] * u))
        assert abs(fd64 - an64) <= 1e-6 * (1 + abs(fd64)), \
            f"{case.name}: reference d{k} disagrees with FD: {an64} vs {fd64}"
        # The C op against float32 FD of itself: loose, per-row tolerance.
        fd32 = directional_fd(case.fwd, x32, gy.astype(np.float32), k,
                              u.astype(np.float32), case.fd_eps)
        an32 = float(np.sum(c_grads[k].astype(np.float64) * u))
        assert abs(fd32 - an32) <= case.fd_tol * (1 + abs(fd32)), \
            f"{case.name}: C d{k} disagrees with float32 FD: {an32} vs {fd32}"


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_input(bad):
    with pytest.raises(bad.exc, match=bad.match):
        bad.call()


def test_table_is_not_empty():
    assert CASES, "no op cases were collected"
