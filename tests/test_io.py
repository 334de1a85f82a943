"""timenet.io.load_checkpoint: PyTorch (zip and legacy), safetensors, npz.

Torch is not needed: `write_torch_zip` / `write_torch_legacy` write the byte
streams torch.save writes, naming the same globals (`torch._utils.
_rebuild_tensor_v2`, `torch.FloatStorage`, `collections.OrderedDict`)
through stand-in modules registered in sys.modules only while pickling.
"""
import collections
import contextlib
import io
import json
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from timenet.io import CheckpointError, load_checkpoint

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


@contextlib.contextmanager
def _fake_torch():
    """Modules `torch` and `torch._utils` with the names torch's pickles use."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):  # never called: only its name is pickled
        raise AssertionError

    def _rebuild_parameter(*a):
        raise AssertionError
    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__, fn.__qualname__ = "torch._utils", fn.__name__
    utils._rebuild_tensor_v2, utils._rebuild_parameter = _rebuild_tensor_v2, _rebuild_parameter
    for name in set(_STORAGE_NAMES.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch, utils
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
    """Pickles as torch.Tensor does: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, utils, storage, offset, size, stride, param=False):
        self.utils, self.storage, self.offset = utils, storage, offset
        self.size, self.stride, self.param = tuple(size), tuple(stride), param

    def __reduce_ex__(self, proto):
        t = (self.utils._rebuild_tensor_v2,
             (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))
        if self.param:
            return (self.utils._rebuild_parameter, (_Reduced(t), False, collections.OrderedDict()))
        return t


class _Reduced:
    def __init__(self, t):
        self.t = t

    def __reduce_ex__(self, proto):
        return self.t


def _tensors(utils, state, views=None):
    """state: name -> array, as contiguous tensors on their own storage;
    views: name -> (storage_name, offset, size, stride) sharing a storage."""
    storages, out = {}, collections.OrderedDict()
    for i, (name, a) in enumerate(state.items()):
        a = np.asarray(a)
        st = storages[name] = _Storage(str(i), a)
        strides = tuple(s // a.itemsize for s in np.array(a, order="C").strides)
        out[name] = _Tensor(utils, st, 0, a.shape, strides, param=name.endswith("weight"))
    for name, (src, off, size, stride) in (views or {}).items():
        out[name] = _Tensor(utils, storages[src], off, size, stride)
    return out, storages


def write_torch_zip(path, state, views=None, top="archive", extra=None, wrap=None):
    """A torch.save zip file of an OrderedDict state dict (arrays); `extra`
    entries go into the dict, `wrap` nests it: {wrap: state, "epoch": 3}."""
    with _fake_torch() as (torch, utils):
        obj, storages = _tensors(utils, state, views)
        if extra:
            obj.update(extra)
        if wrap:
            obj = {wrap: obj, "epoch": 3}
        buf = io.BytesIO()

        class P(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _Storage):
                    cls = getattr(torch, _STORAGE_NAMES[o.array.dtype])
                    return ("storage", cls, o.key, "cpu", o.array.size)
                return None
        P(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{top}/data.pkl", buf.getvalue())
        z.writestr(f"{top}/byteorder", "little")
        for st in storages.values():
            z.writestr(f"{top}/data/{st.key}", st.array.astype(st.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{top}/version", "3\n")


def write_torch_legacy(path, state):
    """A torch.save(..., _use_new_zipfile_serialization=False) file."""
    with _fake_torch() as (torch, utils):
        obj, storages = _tensors(utils, state)
        f = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)

        class P(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _Storage):
                    cls = getattr(torch, _STORAGE_NAMES[o.array.dtype])
                    return ("storage", cls, o.key, "cpu", o.array.size, None)
                return None
        P(f, protocol=2).dump(obj)
        keys = [st.key for st in storages.values()]
        pickle.dump(keys, f, protocol=2)
        for st in storages.values():
            f.write(struct.pack("<q", st.array.size))
            f.write(st.array.tobytes())
    with open(path, "wb") as out:
        out.write(f.getvalue())


def _state():
    rng = np.random.default_rng(0)
    return collections.OrderedDict([
        ("conv1.weight", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        ("bn1.running_var", rng.random(4).astype(np.float64)),
        ("bn1.num_batches_tracked", np.array(7, np.int64)),
        ("half", rng.standard_normal((2, 5)).astype(np.float16)),
        ("mask", np.array([[True, False, True]])),
        ("bytes", np.arange(6, dtype=np.uint8).reshape(2, 3)),
    ])


def _check_same(got, want, ordered=True):
    assert (list(got) if ordered else sorted(got)) == (list(want) if ordered else sorted(want))
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("top", ["archive", "wide_resnet101_2-32ee1156"])
def test_torch_zip_roundtrip(tmp_path, top):
    p = tmp_path / "m.pth"
    write_torch_zip(p, _state(), top=top)
    _check_same(load_checkpoint(p), _state())


def test_torch_zip_offsets_and_strides(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    views = {"transposed": ("base", 0, (6, 4), (1, 6)),        # base.T
             "offset_slice": ("base", 7, (2, 3), (6, 1)),      # base[1:3, 1:4]
             "scalar": ("base", 5, (), ())}
    p = tmp_path / "v.pth"
    write_torch_zip(p, {"base": base}, views=views)
    sd = load_checkpoint(p)
    np.testing.assert_array_equal(sd["transposed"], base.T)
    assert sd["transposed"].flags.c_contiguous
    np.testing.assert_array_equal(sd["offset_slice"], base[1:3, 1:4])
    assert sd["scalar"].shape == () and sd["scalar"] == 5


def test_torch_zip_view_past_storage_is_refused(tmp_path):
    p = tmp_path / "bad.pth"
    write_torch_zip(p, {"base": np.zeros(6, np.float32)},
                    views={"big": ("base", 2, (3, 3), (3, 1))})
    with pytest.raises(pickle.UnpicklingError, match="reaches element"):
        load_checkpoint(p)


def test_torch_legacy_roundtrip(tmp_path):
    p = tmp_path / "old.pth"
    write_torch_legacy(p, _state())
    _check_same(load_checkpoint(p), _state())


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_nested_state_dict_unwrapped(tmp_path, wrap):
    p = tmp_path / "n.pth"
    write_torch_zip(p, {"w": np.ones(3, np.float32)}, wrap=wrap)
    sd = load_checkpoint(p)
    assert list(sd) == ["w"] and sd["w"].dtype == np.float32


def test_not_a_state_dict(tmp_path):
    p = tmp_path / "x.pth"
    write_torch_zip(p, {"w": np.ones(3, np.float32)}, extra={"epoch": 3})
    with pytest.raises(CheckpointError, match="not a flat state dict.*epoch"):
        load_checkpoint(p)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_other_globals_refused(tmp_path, fmt):
    payload = pickle.dumps({"w": _Evil()}, protocol=2)
    p = tmp_path / "evil.pth"
    if fmt == "zip":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data.pkl", payload)
    else:
        f = io.BytesIO()
        for h in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(h, f, protocol=2)
        f.write(payload)
        p.write_bytes(f.getvalue())
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load global '(posix|os)\.system'"):
        load_checkpoint(p)
    # builtins are refused too (eval, getattr, ...)
    with zipfile.ZipFile(tmp_path / "b.pth", "w") as z:
        z.writestr("a/data.pkl", b"\x80\x02cbuiltins\neval\nq\x00.")
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_checkpoint(tmp_path / "b.pth")


def test_safetensors_and_npz(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16),
             "c": np.array([1, -2], np.int64)}
    st.save_file(state, str(tmp_path / "m.safetensors"))
    _check_same(load_checkpoint(tmp_path / "m.safetensors"), state, ordered=False)
    np.savez(tmp_path / "m.npz", **state)
    _check_same(load_checkpoint(tmp_path / "m.npz"), state)


def test_safetensors_bfloat16(tmp_path):
    vals = np.array([1.5, -2.0, 3.140625], np.float32)
    raw = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw)
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "b.safetensors")["x"], vals)


def test_missing_truncated_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    p = tmp_path / "m.pth"
    write_torch_zip(p, _state())
    data = p.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_checkpoint(tmp_path / "cut.pth")
    write_torch_legacy(tmp_path / "old.pth", _state())
    data = (tmp_path / "old.pth").read_bytes()
    for n in (len(data) - 3, len(data) // 2, 20):
        (tmp_path / "cut_old.pth").write_bytes(data[:n])
        with pytest.raises((CheckpointError, pickle.UnpicklingError), match="cut_old.pth"):
            load_checkpoint(tmp_path / "cut_old.pth")
    (tmp_path / "junk.bin").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.bin.*unknown format"):
        load_checkpoint(tmp_path / "junk.bin")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth"):
        load_checkpoint(tmp_path / "empty.pth")
    st = tmp_path / "cut.safetensors"
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    st.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_checkpoint(st)


def test_damaged_files_never_crash(tmp_path):
    """Truncations and byte flips of valid files raise exceptions naming the file."""
    r = np.random.default_rng(0)
    write_torch_zip(tmp_path / "z.pth", _state())
    write_torch_legacy(tmp_path / "l.pth", _state())
    for src in ("z.pth", "l.pth"):
        data = (tmp_path / src).read_bytes()
        for i in range(25):
            b = bytearray(data)
            if i % 2:
                b = b[: int(r.integers(1, len(b)))]
            else:
                for j in r.integers(0, len(b), 4):
                    b[j] = int(r.integers(0, 256))
            p = tmp_path / f"bad{i}_{src}"
            p.write_bytes(bytes(b))
            try:
                load_checkpoint(p)  # a flip in padding may leave the file readable
            except (CheckpointError, pickle.UnpicklingError) as e:
                assert p.name in str(e)


def test_expanded_tensor_blowup_refused(tmp_path):
    p = tmp_path / "exp.pth"
    write_torch_zip(p, {"base": np.zeros(4, np.float32)},
                    views={"huge": ("base", 0, (1 << 20, 1 << 20), (0, 0))})
    with pytest.raises(pickle.UnpicklingError, match="more than its storage"):
        load_checkpoint(p)
