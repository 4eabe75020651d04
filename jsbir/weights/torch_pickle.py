"""A reader of PyTorch weights files that needs no torch and runs none of the file's code.

:func:`read_torch_state_dict` reads both PyTorch file formats with a ``pickle.Unpickler`` whose ``find_class`` admits
only the globals a state dict needs (``collections.OrderedDict``, the tensor and parameter rebuild functions, and the
``torch.*Storage`` types, which become numpy dtypes). Any other global, such as the ``posix.system`` or
``builtins.eval`` of a malicious file, stops the load with :class:`UnsafePickleError` before anything runs, because
``pickle`` resolves a global before it can call it. Tensors are rebuilt as numpy copies after checking that their
shape, stride and offset stay inside their storage.

- Legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``, and torch < 1.6): five pickles in a row
  (magic number, protocol version, system info, the object, the list of storage keys), then each storage's bytes as
  an 8-byte little-endian element count followed by the elements.
- Zip format (torch >= 1.6): ``<name>/data.pkl`` holds the object and ``<name>/data/<key>`` each storage's bytes.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A weights file names a global that a state dict never needs; it was refused before anything ran."""


class DamagedWeightsError(pickle.UnpicklingError):
    """A weights file that cannot be read as a PyTorch state dict; the message names the file."""


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for a ``torch.<X>Storage`` class: only its element dtype matters here."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat typed buffer; in the legacy format its bytes arrive after the object pickle, so it starts empty."""

    __slots__ = ("dtype", "size", "data")

    def __init__(self, dtype: np.dtype, size: int):
        self.dtype, self.size, self.data = dtype, size, None


class _Tensor:
    """A strided view of a storage, materialised once every storage has its bytes."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a tensor in a state dict carries no extra state")


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Replaces ``torch._utils._rebuild_tensor(_v2)``; the extra arguments (requires_grad, hooks) do not matter."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor must be built from a storage, got {type(storage).__name__}")
    return _Tensor(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    """Replaces ``torch._utils._rebuild_parameter(_with_state)``: a parameter is its tensor."""
    if not isinstance(data, _Tensor):
        raise pickle.UnpicklingError(f"a parameter must wrap a tensor, got {type(data).__name__}")
    return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles the objects of a PyTorch weights file and nothing else.

    Args:
      file: binary file positioned at a pickle.
      source: the file's name, for error messages.
      storages: where storages met through persistent ids are kept, by key (None: persistent ids are refused).
      zip_file, zip_prefix: in the zip format, where a storage's bytes are read from (``<prefix>data/<key>``).
    """

    def __init__(self, file, source: str, storages: dict | None = None, zip_file=None, zip_prefix: str = ""):
        super().__init__(file)
        self._source, self._storages = source, storages
        self._zip, self._prefix = zip_file, zip_prefix

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol 2 writes __builtin__.eval) read as their Python 3 names, as pickle maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in _SAFE_GLOBALS:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global {module}.{name}; a weights file needs only "
                "collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and torch.*Storage "
                "types. The file may be malicious, or it holds more than a state dict (a whole pickled model?): "
                "save model.state_dict() instead."
            )
        return _SAFE_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None or not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"{self._source}: unexpected persistent id {pid!r}")
        storage_type, key, size = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self._source}: storage {key} has no storage type")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(storage_type.dtype, size)
            if self._zip is not None:
                try:
                    raw = self._zip.read(f"{self._prefix}data/{key}")
                except KeyError:
                    raise pickle.UnpicklingError(f"{self._source}: storage {key} has no data/{key} entry") from None
                storage.data = np.frombuffer(raw, storage.dtype, count=len(raw) // storage.dtype.itemsize)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # a legacy storage view: (view_key, offset, view_size) into the root storage
            _, view_offset, view_size = view
            return _StorageView(storage, int(view_offset), int(view_size))
        return storage


class _StorageView(_Storage):
    """A slice of a legacy root storage (torch < 0.4 files)."""

    __slots__ = ("root", "offset")

    def __init__(self, root: _Storage, offset: int, size: int):
        super().__init__(root.dtype, size)
        self.root, self.offset = root, offset


def _restricted_load(file, source: str, **kwargs) -> Any:
    return RestrictedUnpickler(file, source, **kwargs).load()


def _materialise(tensor: _Tensor, source: str, name: str) -> np.ndarray:
    storage, offset = tensor.storage, tensor.offset
    if isinstance(storage, _StorageView):
        offset += storage.offset
        storage = storage.root
    data = storage.data
    if data is None:
        raise pickle.UnpicklingError(f"{source}: tensor {name!r} refers to a storage whose bytes are missing")
    shape, stride = tensor.shape, tensor.stride
    if len(shape) != len(stride) or any(s < 0 for s in (*shape, *stride)):
        raise pickle.UnpicklingError(f"{source}: tensor {name!r} has shape {tensor.shape}, stride {tensor.stride}")
    numel = math.prod(shape)  # Python ints: no overflow from a crafted shape
    last = offset + sum((s - 1) * st for s, st in zip(tensor.shape, tensor.stride, strict=True))
    if numel and (offset < 0 or last >= data.size):
        raise pickle.UnpicklingError(
            f"{source}: tensor {name!r} (shape {tensor.shape}, stride {tensor.stride}, offset {offset}) reaches "
            f"beyond its storage of {data.size} elements"
        )
    if not numel:
        return np.zeros(tensor.shape, data.dtype)
    strides = tuple(st * data.itemsize for st in tensor.stride)
    view = np.lib.stride_tricks.as_strided(data[offset:], tensor.shape, strides, writeable=False)
    return np.array(view)


def _flatten(obj: Any, source: str, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, _Tensor):
        out[prefix] = _materialise(obj, source, prefix)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, source, f"{prefix}.{key}" if prefix else str(key), out)


def _read_legacy(f, source: str) -> Any:
    magic = _restricted_load(f, source)
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError(f"{source}: not a PyTorch file (bad magic number)")
    protocol = _restricted_load(f, source)
    if protocol != 1001:
        raise pickle.UnpicklingError(f"{source}: unsupported legacy PyTorch protocol version {protocol}")
    sys_info = _restricted_load(f, source)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}
    obj = _restricted_load(f, source, storages=storages)
    keys = _restricted_load(f, source)
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise pickle.UnpicklingError(f"{source}: storage key {key!r} was never referenced")
        (count,) = struct.unpack("<q", f.read(8))
        dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
        raw = f.read(count * dtype.itemsize)
        if count < 0 or len(raw) != count * dtype.itemsize:
            raise pickle.UnpicklingError(f"{source}: storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype).astype(storage.dtype)
    return obj


def _read_zip(path: str, source: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{source}: a PyTorch zip file holds one <name>/data.pkl, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in zf.namelist() and zf.read(f"{prefix}byteorder").strip() != b"little":
            raise pickle.UnpicklingError(f"{source}: big-endian PyTorch zip files are not supported")
        with zf.open(pickles[0]) as f:
            return _restricted_load(io.BytesIO(f.read()), source, storages={}, zip_file=zf, zip_prefix=prefix)


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch weights file (legacy or zip format) without torch and without running its code.

    Nested mappings (a checkpoint ``{"state_dict": {...}, ...}``) are flattened with dots; values that are not
    tensors (epoch counters, strings) are left out.

    Args:
      path: a ``.pth`` / ``.pt`` file written by ``torch.save(state_dict)``.

    Returns:
      Tensor name -> numpy array (a copy, C-contiguous), in file order.

    Raises:
      UnsafePickleError: the file names a global a state dict does not need (the message names it).
      DamagedWeightsError: the file is truncated, corrupt or not a PyTorch file (the message names it).
    """
    source = os.fspath(path)
    try:
        if zipfile.is_zipfile(source):
            obj = _read_zip(source, source)
        else:
            with open(source, "rb") as f:
                obj = _read_legacy(f, source)
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as e:  # fmt: skip
        raise DamagedWeightsError(
            f"{source} is damaged or not a PyTorch state dict (a .pth / .pt written by torch.save): "
            f"{type(e).__name__}: {e}"
        ) from e
    out: dict[str, np.ndarray] = {}
    _flatten(obj, source, "", out)
    return out
