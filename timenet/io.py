"""Checkpoint files as dicts of numpy arrays, without PyTorch.

`load_checkpoint(path)` reads

- PyTorch `.pth` / `.pt` files as `torch.save` writes them (torchvision's
  pretrained weights): the zip format (torch >= 1.6: `<top>/data.pkl` plus one
  raw record `<top>/data/<key>` per storage; the top folder name varies) and
  the legacy format (a run of pickles: magic number, protocol version, system
  info, the object, the storage keys, then each storage's raw bytes);
- `.safetensors` (the header is parsed here, so bfloat16 works too);
- `.npz` (numpy, `allow_pickle=False`).

The format is recognised from the file's first bytes, not its name.

PyTorch pickles are read by a restricted unpickler: the only globals it
resolves are the tensor rebuild functions (`torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter`), the storage types (`torch.FloatStorage`,
...) and `collections.OrderedDict`. Any other global (`os.system`,
`builtins.eval`, ...) raises `pickle.UnpicklingError` naming it: loading a
checkpoint never runs code from the file.
"""
import collections
import json
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["load_checkpoint", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, unknown format, ...)."""


# torch storage type name -> numpy dtype ("bfloat16" is converted to float32).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def load_checkpoint(path):
    """Read a checkpoint file into a dict name -> numpy array.

    `path`: a `.pth`/`.pt` (zip or legacy PyTorch format), `.safetensors` or
    `.npz` file. A PyTorch file holding `{"state_dict": {...}}` or
    `{"model": {...}}` gives the inner dict. Raises FileNotFoundError for a
    missing file, `CheckpointError` (a ValueError) for an unreadable one and
    `pickle.UnpicklingError` for a pickle naming a global outside the
    allowed set; every message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist (or is not a file)")
    with open(path, "rb") as f:
        head = f.read(16)
    try:
        if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                    obj = _load_torch_zip(z, path)
                elif names and all(n.endswith(".npy") for n in names):
                    obj = None
                else:
                    raise CheckpointError(
                        f"checkpoint {path!r}: a zip file that is neither a PyTorch checkpoint "
                        f"(no data.pkl) nor an .npz archive; entries: {names[:5]}")
            if obj is None:
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            return _state_dict(obj, path)
        if head[:1] == b"\x80":
            return _state_dict(_load_torch_legacy(path), path)
        if len(head) >= 9 and head[8:9] == b"{":
            return _load_safetensors(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"checkpoint {path!r} is a damaged or truncated zip file: {e}") from e
    except (EOFError, struct.error) as e:
        raise CheckpointError(f"checkpoint {path!r} is truncated ({e or 'unexpected end of file'})") from e
    except pickle.UnpicklingError as e:
        if path in str(e):
            raise
        raise pickle.UnpicklingError(f"checkpoint {path!r}: {e}") from e
    except CheckpointError:
        raise
    except MemoryError as e:
        raise CheckpointError(f"checkpoint {path!r}: out of memory while reading it (a damaged "
                              "length field, or a file too large for this machine)") from e
    except (NotImplementedError, RuntimeError, zlib.error) as e:  # zip features, encryption
        raise CheckpointError(f"checkpoint {path!r}: unsupported or damaged zip file: {e}") from e
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OSError) as e:
        # A damaged or hand-made file: whatever broke, say which file.
        raise CheckpointError(f"checkpoint {path!r} could not be read: "
                              f"{type(e).__name__}: {e}") from e
    raise CheckpointError(
        f"checkpoint {path!r} has an unknown format (first bytes {head[:8]!r}); expected a "
        "PyTorch .pth (zip or legacy pickle), .safetensors or .npz file")


# -- PyTorch pickles ------------------------------------------------------

class _StorageType:
    """Stands for torch.<X>Storage in the pickle: knows its numpy dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A storage's elements as a flat numpy array."""

    def __init__(self, array):
        self.array = array


def _frombuffer(buf, dtype, count, where):
    """count elements of dtype (or "bfloat16") from little-endian bytes."""
    if dtype == "bfloat16":
        raw = np.frombuffer(buf, dtype="<u2", count=count) if count else np.zeros(0, "<u2")
        return (raw.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(dtype).newbyteorder("<")
    if len(buf) < count * dt.itemsize:
        raise CheckpointError(f"{where}: storage has {len(buf)} bytes, needs "
                              f"{count * dt.itemsize} ({count} x {dt})")
    return np.frombuffer(buf, dtype=dt, count=count).astype(dt.newbyteorder("="), copy=False)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v2: expected a storage, got {type(storage)}")
    flat = storage.array
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    off = int(storage_offset)
    if len(size) != len(stride) or off < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(
            f"tensor with invalid geometry: size {size}, stride {stride}, offset {off}")
    if any(s == 0 for s in size):
        return np.zeros(size, flat.dtype)
    # The last element a strided view reaches must lie inside the storage:
    # as_strided does no bounds check of its own.
    last = off + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size}, stride {stride}, offset {off} reaches element {last} of a "
            f"storage of {flat.size} elements")
    count = int(np.prod(size, dtype=np.int64))
    if count > max(flat.size, 1 << 28):  # stride-0 expansion: refuse memory blow-ups
        raise pickle.UnpicklingError(
            f"tensor of size {size} has {count} elements, more than its storage "
            f"({flat.size}) and than the 2**28 an expanded tensor may have")
    view = np.lib.stride_tricks.as_strided(
        flat[off:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False)
    return np.array(view, order="C")


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


class _Bounded:
    """A file seen through read/readline only, never past `size` bytes.

    Without readinto, the C unpickler cannot be made to pre-allocate a
    buffer of whatever size a damaged length field claims before reading."""

    def __init__(self, f, size):
        self.f, self.left = f, size

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        b = self.f.read(n)
        self.left -= len(b)
        return b

    def readline(self, limit=-1):
        b = self.f.readline(self.left if limit is None or limit < 0 else min(limit, self.left))
        self.left -= len(b)
        return b


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a tensor state dict needs (module docs)."""

    def __init__(self, file, persistent_load, where, rebuild=None):
        super().__init__(file)
        self._persistent_load = persistent_load
        self._where = where
        self._rebuild = rebuild or _rebuild_tensor_v2

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(
            f"checkpoint {self._where!r}: refused to load global '{module}.{name}' (only "
            "tensor rebuild functions, torch storage types and collections.OrderedDict are "
            "allowed; this file is not a plain tensor state dict, or it is malicious)")

    def persistent_load(self, pid):
        return self._persistent_load(pid)


def _storage_type(obj, where):
    if isinstance(obj, _StorageType):
        return obj.dtype
    if isinstance(obj, str) and obj in _STORAGE_DTYPES:  # some writers store the name
        return _STORAGE_DTYPES[obj]
    raise pickle.UnpicklingError(f"checkpoint {where!r}: unknown storage type {obj!r}")


def _load_torch_zip(z, where):
    names = z.namelist()
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    pkl.sort(key=lambda n: n.count("/"))
    top = pkl[0][: -len("data.pkl")]  # "" or "<folder>/"
    big = False
    if top + "byteorder" in names:
        big = z.read(top + "byteorder").strip() == b"big"
    cache = {}

    def load(pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"checkpoint {where!r}: unknown persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        key = str(key)
        if key not in cache:
            dtype = _storage_type(stype, where)
            rec = f"{top}data/{key}"
            if rec not in names:
                raise CheckpointError(f"checkpoint {where!r}: storage record {rec!r} is missing")
            buf = z.read(rec)
            if big and dtype != "bfloat16":
                dt = np.dtype(dtype).newbyteorder(">")
                if len(buf) < int(numel) * dt.itemsize:
                    raise CheckpointError(f"checkpoint {where!r}: storage {rec!r} is truncated")
                arr = np.frombuffer(buf, dt, int(numel)).astype(dt.newbyteorder("="))
            else:
                arr = _frombuffer(buf, dtype, int(numel), f"checkpoint {where!r}, {rec!r}")
            cache[key] = _Storage(arr)
        return cache[key]

    with z.open(pkl[0]) as f:
        size = z.getinfo(pkl[0]).file_size
        return _RestrictedUnpickler(_Bounded(f, size), load, where).load()


def _load_torch_legacy(path):
    with open(path, "rb") as raw:
        f = _Bounded(raw, os.fstat(raw.fileno()).st_size)

        def plain():
            return _RestrictedUnpickler(f, _no_pid(path), path).load()
        magic = plain()
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"checkpoint {path!r}: a pickle, but not a PyTorch checkpoint "
                                  f"(magic number {magic!r})")
        proto = plain()
        if proto != _LEGACY_PROTOCOL:
            raise CheckpointError(f"checkpoint {path!r}: unsupported legacy protocol {proto!r}")
        sys_info = plain()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        # Storages are known only after the key list that follows the object:
        # the object is unpickled with placeholders, which are filled below.
        roots = {}   # key -> [dtype, numel, _Storage]
        views = []   # (_Storage placeholder, root key, offset, size)

        def load(pid):
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"checkpoint {path!r}: unknown persistent id {pid!r}")
            _, stype, key, _location, numel = pid[:5]
            view = pid[5] if len(pid) > 5 else None
            dtype = _storage_type(stype, path)
            key = str(key)
            if key not in roots:
                roots[key] = [dtype, int(numel), _Storage(None)]
            if view is not None:
                vkey, offset, vsize = view
                st = _Storage(None)
                views.append((st, key, int(offset), int(vsize)))
                return st
            return roots[key][2]

        # Tensors are rebuilt after the storages are read: unpickle with a
        # deferred rebuild, then resolve.
        deferred = []

        def rebuild_later(storage, *args):
            slot = _Deferred(storage, args)
            deferred.append(slot)
            return slot

        obj = _RestrictedUnpickler(f, load, path, rebuild_later).load()
        keys = plain()
        if not isinstance(keys, list):
            raise CheckpointError(f"checkpoint {path!r}: malformed storage key list")
        order = "<" if little else ">"
        for key in keys:
            key = str(key)
            if key not in roots:
                raise CheckpointError(f"checkpoint {path!r}: unexpected storage key {key!r}")
            dtype, numel, st = roots[key]
            hdr = f.read(8)
            if len(hdr) < 8:
                raise CheckpointError(f"checkpoint {path!r} is truncated (storage {key})")
            n = struct.unpack(order + "q", hdr)[0]
            itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            left = f.left
            if n < 0 or n * itemsize > left:
                raise CheckpointError(f"checkpoint {path!r} is truncated or damaged (storage "
                                      f"{key} claims {n} elements, {left} bytes remain)")
            buf = f.read(n * itemsize)
            if len(buf) < n * itemsize:
                raise CheckpointError(f"checkpoint {path!r} is truncated (storage {key})")
            if little or dtype == "bfloat16":
                st.array = _frombuffer(buf, dtype, n, f"checkpoint {path!r}")
            else:
                st.array = np.frombuffer(buf, np.dtype(dtype).newbyteorder(">"), n).astype(dtype)
        for st, key, offset, vsize in views:
            root = roots[key][2].array
            if root is None or offset + vsize > root.size:
                raise CheckpointError(f"checkpoint {path!r}: storage view outside storage {key}")
            st.array = root[offset:offset + vsize]
        for d in deferred:
            if d.storage.array is None:
                raise CheckpointError(f"checkpoint {path!r}: a tensor's storage was never written")
        return _resolve(obj)


class _Deferred:
    __slots__ = ("storage", "args")

    def __init__(self, storage, args):
        self.storage, self.args = storage, args


def _resolve(obj):
    if isinstance(obj, _Deferred):
        return _rebuild_tensor_v2(obj.storage, *obj.args)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _no_pid(path):
    def load(pid):
        raise pickle.UnpicklingError(f"checkpoint {path!r}: unexpected persistent id {pid!r}")
    return load


def _state_dict(obj, where):
    """The name -> array dict of an unpickled checkpoint object."""
    if isinstance(obj, dict):
        for inner in ("state_dict", "model"):
            if inner in obj and isinstance(obj[inner], dict):
                obj = obj[inner]
                break
        bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
        if not bad:
            return {str(k): v for k, v in obj.items()}
        raise CheckpointError(
            f"checkpoint {where!r}: not a flat state dict of tensors; entries that are not "
            f"tensors: {bad[:5]}")
    raise CheckpointError(
        f"checkpoint {where!r} holds a {type(obj).__name__}, not a state dict of tensors")


# -- safetensors ------------------------------------------------------------

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
              "U8": np.uint8, "BOOL": np.bool_}


def _load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path!r} is truncated (no safetensors header)")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        raise CheckpointError(f"checkpoint {path!r} is truncated (safetensors header of {n} "
                              f"bytes, file of {len(data)})")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path!r}: bad safetensors header ({e})") from e
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path!r}: bad safetensors entry {name!r}: "
                                  f"{info!r}") from e
        count = int(np.prod(shape, dtype=np.int64))
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if not (0 <= start <= end <= len(body)) or end - start != count * itemsize:
            raise CheckpointError(f"checkpoint {path!r}: tensor {name!r} lies outside the file "
                                  f"or has the wrong size (truncated file?)")
        out[name] = _frombuffer(body[start:end], dtype, count, f"checkpoint {path!r}").reshape(shape).copy()
    return out
