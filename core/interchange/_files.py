"""Reading and writing the flat tensor files: safetensors and numpy's ``.npz``.

Both are a mapping from names to arrays plus (for trackpoint's own exports) a small metadata record.
Readers are lazy: opening a file reads its table of contents only, and each tensor is read when asked
for, straight into the caller's buffer where possible, so importing a large file holds one shard in
memory, not the file.

safetensors files are *read* here from the format's definition (an 8-byte little-endian header length,
a JSON header with each tensor's dtype, shape and byte range, then the data), which needs no extra
package and covers ``BF16`` and ``F8_*``, which ``safetensors.numpy`` cannot return as numpy arrays.
They are *written* by the ``safetensors`` package itself (the ``safetensors`` extra), imported on first
use, so every file trackpoint produces is one the reference implementation made.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any, Final

import ml_dtypes
import numpy as np

from trackpoint import _paths, dtypes
from trackpoint.errors import (
    BackendUnavailableError,
    CheckpointNotFoundError,
    DataLossError,
    InvalidCheckpointError,
    StorageError,
    StoragePermissionError,
    UnsupportedDTypeError,
)
from trackpoint.storage import TensorInfo

__all__ = ["SAFETENSORS_DTYPES", "FlatFile", "NpzFile", "SafetensorsFile", "write_npz", "write_safetensors"]

#: safetensors dtype names and the numpy dtypes trackpoint reads them as (and writes them from).
SAFETENSORS_DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}

# The dtype names the safetensors package's serializer takes, by numpy dtype.
_WRITE_NAMES: Final = {
    np.dtype(np.bool_): "bool",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint64): "uint64",
    np.dtype(np.int64): "int64",
    np.dtype(np.float16): "float16",
    np.dtype(ml_dtypes.bfloat16): "bfloat16",
    np.dtype(np.float32): "float32",
    np.dtype(np.float64): "float64",
    np.dtype(np.complex64): "complex64",
    np.dtype(ml_dtypes.float8_e4m3fn): "float8_e4m3fn",
    np.dtype(ml_dtypes.float8_e5m2): "float8_e5m2",
}

# A header larger than this is not a safetensors file (the package itself refuses 100 MB).
_MAX_HEADER: Final = 100_000_000

#: The ``.npz`` member holding trackpoint's metadata (a uint8 array of UTF-8 JSON).
NPZ_METADATA: Final = "__trackpoint_metadata__"
#: Metadata entry naming the ml_dtypes type (``bfloat16``...) of arrays ``.npy`` stores as raw bytes.
NPZ_DTYPES: Final = "trackpoint.ml_dtypes"


#: What to do about a damaged ``.npz`` member or metadata entry, in messages.
_NPZ_AGAIN: Final = (
    "the file is damaged or was changed by another program: use an intact copy (or export it again from its checkpoint)"
)


def _ml_dtype(name: str) -> np.dtype[Any] | None:
    """The numpy dtype of the ml_dtypes type ``name`` (``bfloat16``), ``None`` when ml_dtypes has no such type.

    Only the types themselves: ``getattr(ml_dtypes, name)`` would also find its functions and modules
    (``finfo``, ``__class__``), which a crafted file could name.
    """
    found = getattr(ml_dtypes, name, None) if not name.startswith("_") else None
    if not isinstance(found, type):
        return None
    try:
        dtype = np.dtype(found)
    except TypeError:
        return None
    return dtype if dtype.type is found and dtypes.is_ml_dtype(dtype) else None


class FlatFile(ABC):
    """A flat tensor file opened for reading: names, metadata, and lazy tensor reads."""

    path: str

    @abstractmethod
    def names(self) -> list[str]:
        """Tensor names in file order (trackpoint's metadata entry excluded)."""

    @abstractmethod
    def info(self, name: str) -> TensorInfo:
        """Dtype and shape of ``name``."""

    @abstractmethod
    def read(self, name: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """The tensor ``name``, read into ``out`` when given."""

    @abstractmethod
    def metadata(self) -> dict[str, str]:
        """The file's string metadata (safetensors ``__metadata__``; trackpoint's record in an ``.npz``)."""

    @abstractmethod
    def close(self) -> None:
        """Release the file."""


def _is_int(value: object) -> bool:
    """Whether ``value`` (parsed from JSON) is an integer: not a float, nor a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    """What a JSON value is, for a message: ``a list``, ``a string``, ..."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


def _short(value: object, width: int = 80) -> str:
    """A JSON value as the file holds it (or an exception's message), cut to ``width`` characters.

    Cut because a file's bytes can be any size, and a message is one line.
    """
    text = " ".join(str(value).split()) if isinstance(value, BaseException) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _open(path: str) -> io.BufferedReader:
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError(f"no file {path!r}: give the path of an existing file to import") from exc
    except OSError as exc:
        raise StorageError(f"cannot open {path!r}: {exc}") from exc


class SafetensorsFile(FlatFile):
    """A safetensors file, read from its header (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = _open(path)
        try:
            self._entries, self._meta, self._base = self._parse()
        except BaseException:
            self._f.close()
            raise

    def _bad(self, what: str) -> DataLossError:
        return DataLossError(
            f"{self.path!r} is not a valid safetensors file: {what}; the file is damaged or is no safetensors file: "
            "use an intact copy (or export it again from its checkpoint)"
        )

    def _parse(self) -> tuple[dict[str, tuple[TensorInfo, int, int]], dict[str, str], int]:
        size = os.fstat(self._f.fileno()).st_size
        head = self._f.read(8)
        if len(head) < 8:
            raise self._bad(f"it has {size} bytes, fewer than the 8 of the header length")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise self._bad(f"its header length {n} does not fit in the file ({size} bytes)")
        try:
            header = json.loads(self._f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser's stack (a crafted header of "[[[[...").
            raise self._bad(f"its header is not JSON ({_short(exc)})") from exc
        if not isinstance(header, dict):
            raise self._bad("its header is not a JSON object")
        meta = header.pop("__metadata__", None)
        if meta is None:
            meta = {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise self._bad("__metadata__ is not a JSON object of strings")
        base = 8 + n
        entries: dict[str, tuple[TensorInfo, int, int]] = {}
        for name, spec in header.items():
            entries[name] = self._tensor(name, spec, size - base, base)
        return dict(sorted(entries.items(), key=lambda kv: kv[1][1])), dict(meta), base

    def _tensor(self, name: str, spec: object, data_bytes: int, base: int) -> tuple[TensorInfo, int, int]:
        """``(info, file offset, nbytes)`` of the tensor ``name`` from its header entry ``spec``.

        Every field is checked for its type and range before it is used: the header is read from a
        file, which may be damaged or made to crash a reader (``"data_offsets": ["a", 8]``).

        Raises
        ------
        DataLossError
            ``spec`` is not ``{"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin, end]}`` with
            ``0 <= begin <= end <= data_bytes`` and ``end - begin`` the bytes of that dtype and shape.
        UnsupportedDTypeError
            The dtype is a safetensors name trackpoint does not store.
        """
        if not isinstance(spec, dict):
            raise self._bad(f"tensor {name!r} has no dtype, shape and data_offsets (its entry is {_kind(spec)})")
        missing = [field for field in ("dtype", "shape", "data_offsets") if field not in spec]
        if missing:
            raise self._bad(f"tensor {name!r} has no {' and no '.join(missing)}")
        code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if not isinstance(code, str):
            raise self._bad(f"tensor {name!r} has dtype {_short(code)}, which is {_kind(code)}, not a string")
        # bool is an int in Python, never in the format: a shape of [true] is damage, not [1].
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise self._bad(f"tensor {name!r} has shape {_short(shape)}, not a list of integers >= 0")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise self._bad(f"tensor {name!r} has data_offsets {_short(offsets)}, not a list of two integers")
        dtype = SAFETENSORS_DTYPES.get(code)
        if dtype is None:
            raise UnsupportedDTypeError(
                f"tensor {name!r} in {self.path!r} has safetensors dtype {code!r}, which trackpoint does not "
                f"store (it reads {', '.join(SAFETENSORS_DTYPES)}); leave it out with an exclude pattern"
            )
        begin, end = offsets
        nbytes = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end <= data_bytes:
            raise self._bad(f"tensor {name!r} has byte range [{begin}, {end}), outside the {data_bytes} data bytes")
        if end - begin != nbytes:
            raise self._bad(
                f"tensor {name!r} has byte range [{begin}, {end}) of {end - begin} bytes, but {code} "
                f"{_short(shape)} takes {nbytes} bytes"
            )
        return TensorInfo(dtype, tuple(shape)), base + begin, nbytes

    def names(self) -> list[str]:
        # docstring inherited
        return list(self._entries)

    def _entry(self, name: str) -> tuple[TensorInfo, int, int]:
        try:
            return self._entries[name]
        except KeyError:
            raise InvalidCheckpointError(f"{self.path!r} has no tensor {name!r}") from None

    def info(self, name: str) -> TensorInfo:
        # docstring inherited
        return self._entry(name)[0]

    def read(self, name: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        info, offset, nbytes = self._entry(name)
        if out is None or out.dtype != info.dtype or out.shape != info.shape or not out.flags.c_contiguous:
            out = np.empty(info.shape, info.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8).data) if nbytes else memoryview(b"")
        self._f.seek(offset)
        got = self._f.readinto(view) if nbytes else 0
        if got != nbytes:
            raise self._bad(f"tensor {name!r} is truncated ({got} of {nbytes} bytes)")
        if info.dtype.byteorder == ">" or (info.dtype.byteorder == "=" and np.little_endian is False):
            out.byteswap(inplace=True)  # the format is little-endian
        return out

    def metadata(self) -> dict[str, str]:
        # docstring inherited
        return dict(self._meta)

    def close(self) -> None:
        # docstring inherited
        self._f.close()


class NpzFile(FlatFile):
    """A numpy ``.npz`` archive (``numpy.savez``), read member by member, never unpickling."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = _open(path)
        try:
            self._zip = zipfile.ZipFile(self._f)
            self._infos = self._scan()
            self._typed: dict[str, np.dtype[Any]] = {}
            self._meta: dict[str, str] | None = None
            self._typed = self._ml_dtypes()
        except zipfile.BadZipFile as exc:
            self._f.close()
            raise DataLossError(f"{path!r} is not a valid .npz file (not a zip archive: {exc})") from exc
        except BaseException:
            self._f.close()
            raise

    def _scan(self) -> dict[str, TensorInfo]:
        infos: dict[str, TensorInfo] = {}
        for member in self._zip.namelist():
            if not member.endswith(".npy"):
                continue
            with self._zip.open(member) as fh:
                shape, dtype = self._header(fh, member)
            infos[member[: -len(".npy")]] = TensorInfo(dtype, shape)
        return infos

    def _header(self, fh: IO[bytes], member: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # numpy's public API reads version 3 headers only with the array
                fh.seek(0)
                array = np.lib.format.read_array(fh, allow_pickle=False)
                shape, dtype = array.shape, array.dtype
        except ValueError as exc:
            raise DataLossError(f"{self.path!r}: member {member!r} is not a .npy array ({exc})") from exc
        if dtype.kind in ("S", "U"):
            return tuple(shape), np.dtype(object)  # read back as trackpoint strings (bytes)
        if dtype.hasobject:
            raise UnsupportedDTypeError(
                f"{self.path!r}: array {member[:-4]!r} holds Python objects, which are read only by unpickling; "
                "trackpoint never unpickles. Save strings as bytes (dtype 'S') or leave it out"
            )
        return tuple(shape), dtype

    def _ml_dtypes(self) -> dict[str, np.dtype[Any]]:
        """The ml_dtypes type of each array the metadata names in :data:`NPZ_DTYPES`, its info updated to it.

        Raises
        ------
        DataLossError
            The entry is not a JSON object mapping array names to names of ml_dtypes types.
        """
        # .npy records ml_dtypes types (bfloat16, float8) as raw void bytes ('V2'); trackpoint's
        # export names them in its metadata so they read back as what they were.
        raw = self.metadata().get(NPZ_DTYPES)
        if not raw:
            return {}
        where = f"{self.path!r}: the metadata entry {NPZ_DTYPES!r} of {NPZ_METADATA!r}"
        try:
            named = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise DataLossError(f"{where} is not JSON ({_short(exc)}); {_NPZ_AGAIN}") from exc
        if not isinstance(named, dict) or not all(isinstance(v, str) for v in named.values()):
            raise DataLossError(
                f"{where} is {_short(named)}, not a JSON object of array names and ml_dtypes type names "
                f"('bfloat16'); {_NPZ_AGAIN}"
            )
        typed: dict[str, np.dtype[Any]] = {}
        for name, dtype_name in named.items():
            dtype = _ml_dtype(dtype_name)
            if dtype is None:
                raise DataLossError(
                    f"{where} names {dtype_name!r} as the type of array {name!r}, which is no type of the "
                    f"installed ml_dtypes {ml_dtypes.__version__} (if a newer ml_dtypes has it, upgrade); {_NPZ_AGAIN}"
                )
            info = self._infos.get(name)
            # An array the entry names but the file lacks, or of another size, is left as it is stored: another
            # program may have rewritten the file and copied the metadata along.
            if info is not None and dtype.itemsize == info.dtype.itemsize:
                typed[name] = dtype
                self._infos[name] = TensorInfo(dtype, info.shape)
        return typed

    def names(self) -> list[str]:
        # docstring inherited
        return [n for n in self._infos if n != NPZ_METADATA]

    def info(self, name: str) -> TensorInfo:
        # docstring inherited
        try:
            return self._infos[name]
        except KeyError:
            raise InvalidCheckpointError(f"{self.path!r} has no array {name!r}") from None

    def read(self, name: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        self.info(name)
        try:
            with self._zip.open(name + ".npy") as fh:
                array = np.lib.format.read_array(fh, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataLossError(f"{self.path!r}: array {name!r} cannot be read ({exc})") from exc
        if array.dtype.kind in ("S", "U"):
            # Fixed-width bytes become trackpoint strings (trailing NULs are numpy's padding), text UTF-8.
            strings = np.empty(array.shape, dtype=object)
            flat = array.reshape(-1).tolist()
            strings.reshape(-1)[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
            return strings
        array = _c_order(array)
        if name in self._typed:
            array = array.view(self._typed[name])
        if array.dtype.byteorder not in ("=", "|"):
            array = array.astype(array.dtype.newbyteorder("="))
        if out is not None and out.shape == array.shape and out.dtype == array.dtype:
            out[...] = array
            return out
        return array

    def metadata(self) -> dict[str, str]:
        # docstring inherited
        if self._meta is None:
            self._meta = self._read_metadata()
        return dict(self._meta)

    def _read_metadata(self) -> dict[str, str]:
        """The :data:`NPZ_METADATA` member: a uint8 array of the UTF-8 JSON of an object of strings.

        Raises
        ------
        DataLossError
            The member is not that.
        """
        info = self._infos.get(NPZ_METADATA)
        if info is None:
            return {}
        where = f"{self.path!r}: the metadata member {NPZ_METADATA!r}"
        if info.dtype != np.uint8 or len(info.shape) != 1:
            raise DataLossError(
                f"{where} is an array of dtype {info.dtype} and shape {list(info.shape)}, not the uint8 vector of "
                f"UTF-8 JSON trackpoint writes; {_NPZ_AGAIN}"
            )
        raw = bytes(self.read(NPZ_METADATA).tobytes())
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DataLossError(f"{where} is not UTF-8 JSON ({_short(exc)}); {_NPZ_AGAIN}") from exc
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise DataLossError(f"{where} is {_short(meta)}, not a JSON object of strings; {_NPZ_AGAIN}")
        return meta

    def close(self) -> None:
        # docstring inherited
        self._zip.close()
        self._f.close()


def open_file(path: str, fmt: str) -> FlatFile:
    """Open the flat file ``path`` of format ``fmt`` (``"safetensors"`` or ``"npz"``)."""
    return SafetensorsFile(path) if fmt == "safetensors" else NpzFile(path)


Tensors = Iterable[tuple[str, np.ndarray[Any, Any]]]


def _mode_for(path: str) -> int:
    """The permission bits for a file written at ``path``: those of the file there, else what ``umask`` allows."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask without changing it; os.umask can only be read by setting it, which races with
    # other threads creating files, so it is the fallback.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: str, write: Callable[[str], None], overwrite: bool) -> None:
    """Run ``write(temp)`` on a temporary file beside ``path``, then move it into place."""
    from trackpoint.errors import CheckpointExistsError

    if not overwrite and os.path.exists(path):
        raise CheckpointExistsError(f"{path!r} exists; pass overwrite=True (--overwrite) to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    # The directories made here, deepest first: removed again (if still empty) when the export fails.
    created = _paths.missing_directories(directory)
    try:
        # As a checkpoint's save makes its directory, so does an export to a file.
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StorageError(
            f"cannot write {path!r}: a file is in the way of its directory {directory!r}; choose another location"
        ) from exc
    except PermissionError as exc:
        raise StoragePermissionError(f"cannot write {path!r}: cannot create its directory ({exc})") from exc
    done = False
    try:
        write(temp)
        # The safetensors package creates its file private (0600); an export gets the mode any new file gets,
        # or keeps the mode of the file it replaces.
        os.chmod(temp, _mode_for(path))
        with open(temp, "rb+") as fh:
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            # A link fails when another writer created the file meanwhile; replace would clobber it.
            try:
                os.link(temp, path)
            except FileExistsError as exc:
                raise CheckpointExistsError(f"{path!r} was created meanwhile by another writer") from exc
        done = True
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError(f"cannot write {path!r}: its directory does not exist ({exc})") from exc
    except PermissionError as exc:
        raise StoragePermissionError(f"cannot write {path!r}: {exc}") from exc
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
        if not done:
            _paths.remove_empty(created)


def _c_order(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Not np.ascontiguousarray, which turns a 0-d scalar into a 1-element vector.
    return array if array.flags.c_contiguous else array.copy(order="C")


def _little(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if array.dtype.kind == "O":
        raise UnsupportedDTypeError(
            f"tensor {name!r} holds strings, which safetensors cannot store; leave it out with an exclude pattern "
            "(--exclude) or export to .npz"
        )
    if array.dtype not in _WRITE_NAMES:
        raise UnsupportedDTypeError(
            f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store (it stores "
            f"{', '.join(sorted(str(d) for d in _WRITE_NAMES))}); leave it out with an exclude pattern or export "
            "to .npz"
        )
    out = _c_order(array)
    return out.astype(out.dtype.newbyteorder("<")) if out.dtype.byteorder == ">" else out


def write_safetensors(path: str, tensors: Tensors, metadata: Mapping[str, str], *, overwrite: bool) -> None:
    """Write ``tensors`` and ``metadata`` as a safetensors file with the ``safetensors`` package.

    Every tensor is held in memory until the file is written: the package serializes from a complete
    mapping.

    Raises
    ------
    BackendUnavailableError
        The ``safetensors`` package is not installed (``pip install 'trackpoint[safetensors]'``).
    UnsupportedDTypeError
        A tensor has a dtype safetensors has no name for (strings, complex128, ...).
    """
    try:
        import safetensors
    except ImportError as exc:
        raise BackendUnavailableError(
            "writing safetensors files needs the safetensors package: pip install 'trackpoint[safetensors]'"
        ) from exc
    arrays = {name: _little(name, array) for name, array in tensors}
    specs = {
        name: safetensors.TensorSpec(
            dtype=_WRITE_NAMES[a.dtype], shape=tuple(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes
        )
        for name, a in arrays.items()
    }

    def write(temp: str) -> None:
        # `arrays` stays referenced while the package reads through the raw pointers.
        try:
            safetensors.serialize_file(specs, temp, metadata=dict(metadata))
        except Exception as exc:
            if isinstance(exc, OSError):
                raise
            # The package reports its I/O failures as its own SafetensorError, not as OSError.
            raise StorageError(f"cannot write {path!r}: {exc}") from exc

    _atomic(path, write, overwrite)
    del arrays


def _npy(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if array.dtype.kind != "O":
        return array
    values = list(array.reshape(-1))
    if values and any(v.endswith(b"\0") for v in values):
        raise UnsupportedDTypeError(
            f"string tensor {name!r} has a value ending in a NUL byte, which .npz's fixed-width bytes would drop; "
            "leave it out with an exclude pattern"
        )
    width = max((len(v) for v in values), default=0)
    return np.array(values, dtype=f"S{max(width, 1)}").reshape(array.shape)


def write_npz(
    path: str, tensors: Tensors, metadata: Mapping[str, str], *, overwrite: bool, compress: bool = False
) -> None:
    """Write ``tensors`` (and ``metadata`` as :data:`NPZ_METADATA`) as an ``.npz`` that ``numpy.load`` reads.

    Tensors are streamed into the archive one at a time. String tensors become fixed-width bytes
    arrays (dtype ``S``), readable without unpickling. ``.npy`` has no name for ml_dtypes types
    (bfloat16, float8): they are stored as raw bytes (``V2``...) and named in the metadata, so an
    import reads them back as they were.
    """

    def write(temp: str) -> None:
        mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        typed: dict[str, str] = {}
        with zipfile.ZipFile(temp, "w", compression=mode, allowZip64=True) as zf:
            for name, array in tensors:
                if dtypes.is_ml_dtype(array.dtype):
                    # By the type's module, not kind "V": float8_e5m2 has kind "f" and the descriptor "<f1",
                    # which numpy.load refuses. Stored as raw bytes and named in the metadata like the others.
                    typed[name] = array.dtype.name
                    array = array.view(f"V{array.dtype.itemsize}")
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, _npy(name, array), allow_pickle=False)
            meta = {**metadata, **({NPZ_DTYPES: json.dumps(typed, sort_keys=True)} if typed else {})}
            if meta:
                raw = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)
                with zf.open(NPZ_METADATA + ".npy", "w") as fh:
                    np.lib.format.write_array(fh, raw, allow_pickle=False)

    _atomic(path, write, overwrite)
