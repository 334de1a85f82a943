"""The CUDA backend: the build flag, the runtime and DeviceArray.

Without a GPU (always run): the build reports whether it has CUDA,
`timenet.cuda.is_available()` is False here and every device function
raises a clear RuntimeError. On a GPU (skipped, with the reason, where there
is none): DeviceArray round trips and the caching allocator.
"""
import os

import numpy as np
import pytest

from timenet import _core, cuda

HAVE_GPU = cuda.is_available()
NO_GPU_REASON = f"no CUDA device: {cuda.unavailable_reason()}"
gpu = pytest.mark.skipif(not HAVE_GPU, reason=NO_GPU_REASON)


# ---------------------------------------------------------------------------
# 1. without a GPU

def test_build_flag_is_reported():
    assert _core.has_cuda in (0, 1)
    assert cuda.is_built() == bool(_core.has_cuda)
    # CI on a machine with nvcc sets this to insist the CUDA objects were linked.
    if os.environ.get("TIMENET_EXPECT_CUDA_BUILD") == "1":
        assert cuda.is_built(), "TIMENET_EXPECT_CUDA_BUILD=1 but _core was built without CUDA"
    if not cuda.is_built():
        assert "without CUDA" in cuda.unavailable_reason()
        assert not any(n.startswith("cuda_conv2d") for n in dir(_core))


def test_device_count_never_raises():
    n = cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert cuda.is_available() == (n > 0)
    assert isinstance(cuda.unavailable_reason(), str)


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_no_device_api_raises_clearly():
    assert not cuda.is_available()
    assert cuda.unavailable_reason()
    for f in (cuda.synchronize, cuda.memory_stats, cuda.empty_cache, cuda.mem_get_info,
              cuda.get_device_name, cuda.memory_allocated, cuda.reset_peak_memory_stats):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            f()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cuda.set_device(0)


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_no_device_arrays_raise():
    with pytest.raises(RuntimeError, match="CUDA is not available|no CUDA device"):
        cuda.DeviceArray.from_numpy(np.ones(3, np.float32))
    with pytest.raises(RuntimeError):
        cuda.DeviceArray.zeros((2, 3))


def test_device_strings():
    assert cuda.parse_device("cpu") == ("cpu", None)
    assert cuda.parse_device("cuda:3") == ("cuda", 3)
    assert cuda.parse_device("cuda") == ("cuda", cuda.current_device())
    assert cuda.parse_device(1) == ("cuda", 1)
    for bad in ("gpu", "cuda:x", "cpu:1", "CUDA"):
        with pytest.raises(ValueError, match="unknown device"):
            cuda.parse_device(bad)


def test_device_array_cannot_be_made_directly():
    with pytest.raises(TypeError):
        cuda.DeviceArray()


# ---------------------------------------------------------------------------
# on a GPU

@gpu
def test_device_array_round_trip():
    DA = cuda.DeviceArray
    for a in (np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.arange(5, dtype=np.int64),
              np.arange(6, dtype=np.int32).reshape(3, 2), np.float32(3.5) * np.ones(()),
              np.zeros((0, 3), np.float32)):
        d = DA.from_numpy(a)
        assert d.shape == a.shape and d.dtype == a.dtype and d.nbytes == a.nbytes
        assert d.device == 0 and d.size == a.size
        np.testing.assert_array_equal(d.numpy(), a)
        np.testing.assert_array_equal(d.copy().numpy(), a)
    d = DA.from_numpy(np.arange(6, dtype=np.float64))
    assert d.dtype == np.float32
    v = d.reshape(2, -1)
    assert v.shape == (2, 3) and v.base is d and v.ptr == d.ptr
    np.testing.assert_array_equal(v.numpy(), np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError):
        d.reshape(4, 2)
    with pytest.raises(TypeError, match="implicitly"):
        np.asarray(d)
    np.testing.assert_array_equal(DA.zeros((2, 2)).numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(DA.full((3,), 2.5).numpy(), np.full(3, 2.5))
    cai = d.__cuda_array_interface__
    assert cai["shape"] == (6,) and cai["typestr"] == "<f4" and cai["data"][0] == d.ptr


@gpu
def test_allocator_caches_and_reports():
    cuda.synchronize()
    cuda.empty_cache()
    s0 = cuda.memory_stats()
    a = cuda.DeviceArray.zeros((1000, 1000))
    s1 = cuda.memory_stats()
    assert s1["allocated_bytes"] - s0["allocated_bytes"] >= 4_000_000
    assert s1["peak_allocated_bytes"] >= s1["allocated_bytes"]
    del a
    s2 = cuda.memory_stats()
    assert s2["allocated_bytes"] == s0["allocated_bytes"]
    assert s2["cached_bytes"] >= 4_000_000
    b = cuda.DeviceArray.zeros((1000, 1000))  # the cached block is reused
    assert cuda.memory_stats()["num_device_allocs"] == s2["num_device_allocs"]
    del b
    cuda.empty_cache()
    assert cuda.memory_stats()["cached_bytes"] == 0
    free, total = cuda.mem_get_info()
    assert 0 < free <= total
    assert cuda.get_device_name()


@gpu
def test_out_of_memory_is_a_memory_error_with_the_size():
    with pytest.raises(MemoryError, match=r"tried to allocate .*\(\d+ bytes\)"):
        cuda.DeviceArray.empty((1 << 46,))  # 256 TiB
    a = cuda.DeviceArray.zeros((10,))   # the device still works
    np.testing.assert_array_equal(a.numpy(), np.zeros(10))
