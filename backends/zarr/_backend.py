"""The Zarr v3 storage backend: one checkpoint is one consolidated Zarr group.

Layout of the checkpoint ``P`` (see ``docs/backends/zarr.md``)::

    P.zarr/                    the Zarr v3 group; its zarr.json is the commit point
      zarr.json                group metadata: attributes["trackpoint"] (tensor
                               table, base64 object graph) + consolidated metadata
      <data>/                  "" on local disk, "v-<save_id>" on object stores
        <encode_key(key)>/     one array per large tensor (attribute trackpoint_key)
        _packed-<shard>/       small numeric tensors, concatenated as bytes

Importing this module imports zarr; :mod:`trackpoint.backends.zarr` imports it
only when a Zarr backend is created.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import ml_dtypes
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import VariableLengthBytes

from trackpoint import _paths
from trackpoint.backends.zarr._keys import encode_key
from trackpoint.backends.zarr._options import ZarrOptions
from trackpoint.backends.zarr._stores import FsspecLocation, LocalLocation, Location
from trackpoint.errors import (
    CheckpointError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    DataLossError,
    DTypeMismatchError,
    InvalidCheckpointError,
    ShapeMismatchError,
    StorageError,
    StoragePermissionError,
    UnknownBackendError,
    UnsupportedDTypeError,
)
from trackpoint.storage import (
    ANY_VERSION,
    OBJECT_GRAPH_KEY,
    Capabilities,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    TensorInfo,
    VersionCondition,
    VersionedBytes,
    WriteItem,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ZarrBackend", "ZarrReader"]

#: Value of ``attributes["trackpoint"]["format"]`` in a checkpoint's root group.
FORMAT_NAME: Final = "trackpoint-zarr"
#: Layout version written; readers reject newer ones.
FORMAT_VERSION: Final = 1

_SUFFIX: Final = ".zarr"
_TMP: Final = ".tmp-"
_OWNER: Final = ".trackpoint-owner"
_STRING: Final = "bytes"
# Reads of packed tensors are merged into runs of at most this many bytes.
_MAX_RUN: Final = 16 << 20
# Packed arrays up to this size are read whole and kept by the reader, within a total.
_PACKED_CACHE_ARRAY: Final = 8 << 20
_PACKED_CACHE_TOTAL: Final = 64 << 20
# A half-created local temporary group (see _claim_local) is this young at most.
_OWNERLESS_GRACE: Final = 60.0

# ml_dtypes types have no Zarr v3 data type in zarr-python 3.1: they are stored
# as the unsigned integer of the same width, with their name in an attribute.
_ML_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    name: np.dtype(getattr(ml_dtypes, name))
    for name in (
        "bfloat16",
        "float8_e5m2",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e4m3b11fnuz",
        "float8_e5m2fnuz",
    )
    if hasattr(ml_dtypes, name)
}
_NUMERIC_KINDS: Final = {"b": 1, "i": 8, "u": 8, "f": 8, "c": 16}


@contextlib.contextmanager
def _quiet_vlen() -> Iterator[None]:
    # zarr-python warns on every use of variable_length_bytes that the type is
    # not in the Zarr v3 spec yet; docs/backends/zarr.md says so once. The
    # filter is narrow, so catch_warnings' lack of thread safety can at worst
    # leave this one warning silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The data type \(VariableLengthBytes\(\)\)")
        yield


# Saves with a write_shard or commit call running in this process; cleanup()
# never removes those, whatever their age.
_ACTIVE_LOCK = threading.Lock()
_ACTIVE: dict[str, int] = {}


@contextlib.contextmanager
def _active(save_id: str) -> Iterator[None]:
    with _ACTIVE_LOCK:
        _ACTIVE[save_id] = _ACTIVE.get(save_id, 0) + 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[save_id] -= 1
            if not _ACTIVE[save_id]:
                del _ACTIVE[save_id]


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Eight hex digits naming this host inside a claim directory's name."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _claimer_died(init_tag: str) -> bool:
    """Whether the ``<host>-<pid>-<random>`` tag of a claim names a dead process of this host."""
    parts = init_tag.split("-")
    if len(parts) != 3 or parts[0] != _host_tag() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _is_active(save_id: str) -> bool:
    with _ACTIVE_LOCK:
        return save_id in _ACTIVE


# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------


def _dtype_name(dtype: np.dtype[Any], key: str) -> str:
    """The name recorded in the tensor table for ``dtype`` (``"bytes"`` for strings)."""
    name = _known_dtype_name(dtype)
    if name is None:
        raise UnsupportedDTypeError(
            f"zarr: tensor {key!r} has dtype {dtype}, which a checkpoint cannot hold; use bool, (u)int8-64, "
            "float16/32/64, complex64/128, bfloat16 or bytes"
        )
    return name


@functools.lru_cache(maxsize=64)
def _known_dtype_name(dtype: np.dtype[Any]) -> str | None:
    # Cached: a checkpoint of 20,000 tensors asks for a handful of dtypes.
    if dtype.kind == "O":
        return _STRING
    for name, dt in _ML_DTYPES.items():
        if dtype == dt:
            return name
    limit = _NUMERIC_KINDS.get(dtype.kind)
    if limit is None or dtype.itemsize > limit or dtype.fields is not None:
        return None
    return dtype.newbyteorder("=").name


def _dtype_of(name: str, where: str) -> np.dtype[Any]:
    if name == _STRING:
        return np.dtype(object)
    if name in _ML_DTYPES:
        return _ML_DTYPES[name]
    try:
        dt = np.dtype(name)
    except TypeError as exc:
        raise InvalidCheckpointError(f"zarr: {where} records unknown dtype {name!r}") from exc
    if dt.kind not in _NUMERIC_KINDS:
        raise InvalidCheckpointError(f"zarr: {where} records unsupported dtype {name!r}")
    return dt


@functools.lru_cache(maxsize=64)
def _storage_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The little-endian dtype the array is stored with (ml_dtypes types as unsigned ints)."""
    if any(dtype == dt for dt in _ML_DTYPES.values()):
        return np.dtype(f"<u{dtype.itemsize}")
    return dtype.newbyteorder("<")


def _to_storage(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``array`` as C-ordered little-endian values of its storage dtype (bit patterns kept)."""
    storage = _storage_dtype(array.dtype)
    native = np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C")
    return native.view(storage.newbyteorder("=")).astype(storage, copy=False)


def _as_bytes_array(array: np.ndarray[Any, Any], key: str) -> np.ndarray[Any, Any]:
    out = np.empty(array.shape, dtype=object)
    for idx, x in np.ndenumerate(array):
        if isinstance(x, str):
            x = x.encode("utf-8")
        if not isinstance(x, (bytes, bytearray, memoryview, np.bytes_)):
            raise UnsupportedDTypeError(
                f"zarr: string tensor {key!r} holds a {type(x).__name__} at {idx}; only bytes or str are allowed"
            )
        out[idx] = bytes(x)
    return out


def _chunk_shape(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
    """Row-major chunking: whole trailing dimensions, leading ones cut so a chunk stays within ``chunk_bytes``.

    The cut axis is split into equal parts rather than into maximal ones: Zarr
    stores edge chunks at full size, so 17 rows in chunks of 16 would write
    32 rows, while two chunks of 9 write 18.
    """
    chunks = [max(1, d) for d in shape]
    for i in range(len(shape)):
        inner = itemsize
        for d in chunks[i + 1 :]:
            inner *= d
        if inner <= chunk_bytes:
            most = max(1, chunk_bytes // inner)
            parts = -(-chunks[i] // most)
            chunks[i] = -(-chunks[i] // parts)
            return tuple(chunks)
        chunks[i] = 1
    return tuple(chunks)


def _codecs(opts: ZarrOptions) -> list[Any]:
    from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, GzipCodec, ZstdCodec

    out: list[Any] = []
    level = opts.compression_level
    if opts.compressor == "zstd":
        out.append(ZstdCodec(level=3 if level is None else level))
    elif opts.compressor == "blosc":
        out.append(BloscCodec(cname="lz4", clevel=5 if level is None else level, shuffle=BloscShuffle.shuffle))
    elif opts.compressor == "gzip":
        out.append(GzipCodec(level=6 if level is None else level))
    if opts.checksum:
        # Last, so it covers the compressed bytes as stored.
        out.append(Crc32cCodec())
    return out


def _metadata_dict(array: Any) -> dict[str, Any]:
    buf = array.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"]
    meta: dict[str, Any] = json.loads(buf.to_bytes())
    return meta


# ---------------------------------------------------------------------------
# error translation
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _reading(prefix: str, key: str) -> Iterator[None]:
    try:
        yield
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        # The tensor table lists it, so a missing piece means a damaged checkpoint.
        raise DataLossError(
            f"zarr: tensor {key!r} of checkpoint {prefix!r} is corrupted or incomplete (missing: {exc}); "
            "restore from another checkpoint"
        ) from exc
    except PermissionError as exc:
        raise StoragePermissionError(f"zarr: permission denied reading {key!r} of {prefix!r}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"zarr: failed to read {key!r} of {prefix!r}: {exc}") from exc
    except Exception as exc:
        # zarr reports checksum mismatches, undecodable chunks and missing
        # metadata as ValueError/RuntimeError/its own errors: the bytes are bad.
        raise DataLossError(
            f"zarr: tensor {key!r} of checkpoint {prefix!r} is corrupted or incomplete "
            f"({type(exc).__name__}: {exc}); restore from another checkpoint"
        ) from exc


@contextlib.contextmanager
def _writing(prefix: str, key: str) -> Iterator[None]:
    try:
        yield
    except CheckpointError:
        raise
    except PermissionError as exc:
        raise StoragePermissionError(f"zarr: permission denied writing {key!r} of {prefix!r}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"zarr: failed to write {key!r} of {prefix!r}: {exc}") from exc
    except Exception as exc:
        raise StorageError(f"zarr: failed to write tensor {key!r} of {prefix!r} ({type(exc).__name__}: {exc})") from exc


class _Packer:
    """Streams small tensors into one packed ``uint8`` array, one shard object at a time.

    The total size is known up front, so the array is created first and each
    shard-aligned window is written as soon as it is full: memory holds one
    shard, not the whole packed array, and no shard is ever rewritten.

    Each window is a fresh array that is handed to zarr whole and never
    touched again. zarr may still hold views of a value after the assignment
    returns (a codec worker thread releases its work item only after the
    result was delivered), so a reused or resized buffer could be changed
    under it, or, for a ``bytearray``, fail to resize with ``BufferError``.
    Every packed byte is copied once, into its window, as before.
    """

    def __init__(self, backend: ZarrBackend, path: str, total: int, opts: ZarrOptions) -> None:
        inner = max(1, min(opts.packed_chunk_bytes, total))
        # A shard (one object) holds whole inner chunks, at most chunk_bytes,
        # and no more than the array needs: the shard index has one entry per
        # inner chunk, so an oversized shard costs time and bytes for nothing.
        self._shard = inner * min(max(1, opts.chunk_bytes // inner), -(-total // inner))
        self._backend = backend
        self._path = path
        self._total = total
        self._arr, self._meta = backend._new_array(
            path,
            (total,),
            chunks=(inner,),
            shards=(self._shard,),
            dtype="uint8",
            fill_value=0,
            compressors=_codecs(opts),
            attributes={"trackpoint_packed": True},
        )
        self._window: np.ndarray[Any, np.dtype[np.uint8]] | None = None
        self._filled = 0  # bytes of the current window in use
        self._flushed = 0  # bytes written to zarr (whole windows)

    def add(self, stored: np.ndarray[Any, Any]) -> int:
        """Append the bytes of ``stored``; return their offset in the packed array."""
        offset = self._flushed + self._filled
        # A flat uint8 view of the (C-contiguous) values: copied straight into the window.
        src = stored.reshape(-1).view(np.uint8)
        if offset + src.size > self._total:
            raise StorageError(
                f"zarr: packed array {self._path!r} was sized for {self._total} bytes, got more; "
                "the tensors changed while they were being saved"
            )
        pos = 0
        while pos < src.size:
            if self._window is None:
                # The last window holds exactly the remainder: no byte beyond the array.
                self._window = np.empty(min(self._shard, self._total - self._flushed), dtype=np.uint8)
                self._filled = 0
            take = min(self._window.size - self._filled, src.size - pos)
            self._window[self._filled : self._filled + take] = src[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == self._window.size:
                self._write_window()
        return offset

    def _write_window(self) -> None:
        window, self._window = self._window, None
        assert window is not None
        self._arr[self._flushed : self._flushed + window.size] = window
        self._flushed += window.size
        self._filled = 0

    def close(self) -> dict[str, Any]:
        """Check that every announced byte was written; write the metadata and return it."""
        if self._flushed != self._total:
            raise StorageError(
                f"zarr: packed array {self._path!r} got {self._flushed + self._filled} of {self._total} bytes"
            )
        return self._backend._finish_array(self._path, self._meta)


# ---------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    array: str | None = None
    packed: str | None = None
    offset: int = 0
    nbytes: int = 0


class ZarrReader(CheckpointReader):
    """Reads one committed Zarr checkpoint; opens only the arrays that are read."""

    def __init__(
        self,
        prefix: str,
        location: Location,
        data_root: str,
        table: Mapping[str, Any],
        graph: bytes | None,
        metadata: Mapping[str, Any],
    ) -> None:
        self.prefix = prefix
        self._metadata = metadata
        self._location = location
        self._data_root = data_root
        self._graph = graph
        self._arrays: dict[str, Any] = {}
        self._packed_cache: dict[str, np.ndarray[Any, Any]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._entries: dict[str, _Entry] = {}
        for key, raw in table.items():
            self._entries[key] = self._parse_entry(key, raw)
        self._keys = sorted([*self._entries, *([OBJECT_GRAPH_KEY] if graph is not None else [])])

    def _parse_entry(self, key: str, raw: Any) -> _Entry:
        try:
            dtype = _dtype_of(str(raw["dtype"]), f"tensor {key!r} of {self.prefix!r}")
            shape = tuple(int(d) for d in raw["shape"])
            if "array" in raw:
                return _Entry(dtype, shape, array=str(raw["array"]))
            nbytes = int(raw["nbytes"])
            packed = raw.get("packed")
            return _Entry(
                dtype, shape, packed=None if packed is None else str(packed), offset=int(raw["offset"]), nbytes=nbytes
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidCheckpointError(
                f"zarr: the tensor table of {self.prefix!r} has a malformed entry for {key!r}: {exc}"
            ) from exc

    # docstring inherited
    def keys(self) -> list[str]:
        return list(self._keys)

    def _entry(self, key: str) -> _Entry:
        if self._closed:
            raise StorageError(f"zarr: the reader of {self.prefix!r} is closed; open a new one")
        try:
            return self._entries[key]
        except KeyError:
            raise CheckpointKeyError(f"zarr: checkpoint {self.prefix!r} has no tensor {key!r}") from None

    def info(self, key: str) -> TensorInfo:
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            return TensorInfo(np.dtype(object), ())
        e = self._entry(key)
        return TensorInfo(e.dtype, e.shape)

    def _array(self, name: str) -> Any:
        with self._lock:
            arr = self._arrays.get(name)
        if arr is None:
            from zarr.core.array import AsyncArray
            from zarr.storage import StorePath

            meta = self._metadata.get(name)
            if meta is None:
                raise DataLossError(f"zarr: checkpoint {self.prefix!r} lists array {name!r} but has no metadata for it")
            store = self._location.zarr_store(_paths.join(self._data_root, name), read_only=True, strict=True)
            with _quiet_vlen():
                arr = zarr.Array(AsyncArray(metadata=meta, store_path=StorePath(store)))
            with self._lock:
                self._arrays[name] = arr
        return arr

    def _check_out(self, key: str, e: _Entry, out: np.ndarray[Any, Any]) -> None:
        if out.dtype != e.dtype:
            raise DTypeMismatchError(f"zarr: cannot read {key!r} ({e.dtype}) into an array of dtype {out.dtype}")
        if out.shape != e.shape:
            raise ShapeMismatchError(f"zarr: cannot read {key!r} {e.shape} into an array of shape {out.shape}")

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            graph = np.empty((), dtype=object)
            graph[()] = self._graph
            return graph
        e = self._entry(key)
        if e.dtype.kind == "O":
            out = None
        if out is not None:
            self._check_out(key, e, out)
        with _reading(self.prefix, key):
            if e.array is None:
                return self._read_packed(key, e, out, None)
            arr = self._array(e.array)
            if e.dtype.kind == "O":
                return _as_bytes_array(np.asarray(arr[...]), key)
            if tuple(arr.shape) != e.shape:
                raise DataLossError(
                    f"zarr: array of {key!r} in {self.prefix!r} has shape {tuple(arr.shape)}, "
                    f"the tensor table says {e.shape}"
                )
            dest = out if out is not None and out.flags.c_contiguous and out.flags.writeable else None
            if dest is None:
                dest_arr = np.empty(e.shape, dtype=e.dtype)
            else:
                dest_arr = dest
            if dest_arr.size:
                view = dest_arr.view(_storage_dtype(e.dtype).newbyteorder("="))
                arr.get_basic_selection(Ellipsis, out=default_buffer_prototype().nd_buffer.from_numpy_array(view))
            if out is not None and dest is None:
                np.copyto(out, dest_arr)
                return out
            return dest_arr

    def _read_packed(
        self, key: str, e: _Entry, out: np.ndarray[Any, Any] | None, run: tuple[int, np.ndarray[Any, Any]] | None
    ) -> np.ndarray[Any, Any]:
        if e.nbytes == 0 or e.packed is None:
            raw = np.empty(0, dtype=np.uint8)
        else:
            if run is None:
                whole = self._small_packed(e.packed)
                run = None if whole is None else (0, whole)
            if run is not None:
                start, data = run
                raw = data[e.offset - start : e.offset - start + e.nbytes]
            else:
                raw = np.asarray(self._array(e.packed)[e.offset : e.offset + e.nbytes])
        if raw.size != e.nbytes:
            raise DataLossError(f"zarr: packed bytes of {key!r} in {self.prefix!r} are truncated")
        value = raw.view(_storage_dtype(e.dtype)).view(e.dtype.newbyteorder("<")).reshape(e.shape)
        if out is not None:
            np.copyto(out, value)
            return out
        return value.astype(e.dtype, copy=True)

    def _small_packed(self, name: str) -> np.ndarray[Any, Any] | None:
        """All bytes of the packed array ``name`` if it is small, read once per reader.

        Restores read small tensors one by one; without this, each would cost a
        shard-index and a chunk request, which dominates on object stores.
        """
        try:
            size = int(self._metadata[name]["shape"][0])
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        if size > _PACKED_CACHE_ARRAY:
            return None
        with self._lock:
            cached = self._packed_cache.get(name)
        if cached is None:
            cached = np.asarray(self._array(name)[...])
            with self._lock:
                if sum(a.size for a in self._packed_cache.values()) + cached.size > _PACKED_CACHE_TOTAL:
                    self._packed_cache.clear()
                self._packed_cache[name] = cached
        return cached

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        # Small tensors share packed arrays: read each run of neighbours once.
        results: list[np.ndarray[Any, Any] | None] = [None] * len(requests)
        by_packed: dict[str, list[int]] = {}
        for i, (key, out) in enumerate(requests):
            if key != OBJECT_GRAPH_KEY or self._graph is None:
                e = self._entry(key)
                if e.array is None and e.packed is not None and e.nbytes:
                    if out is not None:
                        self._check_out(key, e, out)
                    by_packed.setdefault(e.packed, []).append(i)
                    continue
            results[i] = self.read(key, out)
        for packed, idxs in by_packed.items():
            idxs.sort(key=lambda i: self._entries[requests[i][0]].offset)
            run: list[int] = []
            for i in [*idxs, -1]:
                if i >= 0:
                    e = self._entries[requests[i][0]]
                    if not run or e.offset + e.nbytes - self._entries[requests[run[0]][0]].offset <= _MAX_RUN:
                        run.append(i)
                        continue
                first = self._entries[requests[run[0]][0]]
                end = max(self._entries[requests[j][0]].offset + self._entries[requests[j][0]].nbytes for j in run)
                with _reading(self.prefix, requests[run[0]][0]):
                    data = np.asarray(self._array(packed)[first.offset : end])
                    for j in run:
                        key, out = requests[j]
                        results[j] = self._read_packed(key, self._entries[key], out, (first.offset, data))
                run = [i]
        return [r for r in results if r is not None]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._arrays.clear()
            self._packed_cache.clear()


# ---------------------------------------------------------------------------
# backend
# ---------------------------------------------------------------------------


class ZarrBackend(StorageBackend):
    """Checkpoints as consolidated Zarr v3 groups on local disk, S3 or GCS.

    Parameters
    ----------
    location
        The store (:class:`LocalLocation` or :class:`FsspecLocation`).
    options
        Tuning from ``CheckpointOptions.backend_options``; a save may pass
        other ``backend_options`` to :meth:`save`.
    """

    name = "zarr"

    def __init__(self, location: Location, options: ZarrOptions | None = None) -> None:
        self._location = location
        self._options = options or ZarrOptions()
        local = isinstance(location, LocalLocation)
        self.capabilities = Capabilities(
            atomic_rename=local, conditional_create=True, ranged_reads=True, parallel_writes=True
        )

    @property
    def options(self) -> ZarrOptions:
        """The backend's default tuning."""
        return self._options

    # -------------------------------------------------------------- helpers
    def _group(self, prefix: str) -> str:
        return self._location.resolve(prefix) + _SUFFIX

    @property
    def _local(self) -> bool:
        return isinstance(self._location, LocalLocation)

    def _staging(self, prefix: str, save_id: str) -> tuple[str, str]:
        """(root the save writes its arrays under, data path recorded in the root group)."""
        group = self._group(prefix)
        if self._local:
            return f"{group}{_TMP}{save_id}", ""
        return group, f"v-{save_id}"

    def _read_root(self, prefix: str, group: str) -> dict[str, Any] | None:
        """The ``trackpoint`` attributes of the committed root group, ``None`` if nothing is committed."""
        doc = self._read_root_document(prefix, group)
        return None if doc is None else doc[0]

    def _read_root_document(self, prefix: str, group: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(``trackpoint`` attributes, consolidated array metadata) of the root group, verified."""
        raw = self._location.read_bytes(_paths.join(group, "zarr.json"))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            attrs = doc["attributes"]["trackpoint"]
            metadata = doc["consolidated_metadata"]["metadata"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCheckpointError(
                f"zarr: {group!r} is not a trackpoint Zarr checkpoint (no attributes['trackpoint'] and "
                "consolidated metadata in its zarr.json)"
            ) from exc
        if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME or not isinstance(metadata, dict):
            raise InvalidCheckpointError(f"zarr: {group!r} is a Zarr group but not a trackpoint checkpoint")
        if not isinstance(attrs.get("version"), int) or attrs["version"] > FORMAT_VERSION:
            raise InvalidCheckpointError(
                f"zarr: {group!r} uses layout version {attrs.get('version')!r}, not one this trackpoint "
                f"reads (up to {FORMAT_VERSION}); upgrade trackpoint"
            )
        if attrs.get("checksum") != _root_checksum(attrs, metadata):
            raise DataLossError(
                f"zarr: the root zarr.json of {group!r} fails its checksum (the tensor table or array "
                "metadata was altered); restore from another checkpoint"
            )
        return attrs, metadata

    # -------------------------------------------------------------- writing
    def save(
        self,
        prefix: str,
        items: Sequence[WriteItem],
        options: CheckpointOptions | None = None,
        *,
        overwrite: bool = True,
    ) -> None:
        # Per-save backend_options override the backend's defaults for this save only.
        if options is not None and options.backend_options:
            clone = ZarrBackend(self._location, ZarrOptions.from_mapping(options.backend_options))
            clone.name = self.name
            StorageBackend.save(clone, prefix, items, options, overwrite=overwrite)
            return
        super().save(prefix, items, options, overwrite=overwrite)

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        opts = self._options
        root, data = self._staging(prefix, spec.save_id)
        data_root = _paths.join(root, data) if data else root
        with _active(spec.save_id):
            if self._local:
                self._claim_local(root)
            tensors: dict[str, dict[str, Any]] = {}
            arrays: dict[str, dict[str, Any]] = {}
            graph: str | None = None
            packed_name = f"_packed-{spec.shard_id:05d}"
            nbytes = 0

            def packable(array: np.ndarray[Any, Any]) -> bool:
                return array.dtype.kind != "O" and array.nbytes <= opts.pack_bytes

            total = sum(a.nbytes for a in (np.asarray(it.array) for it in items) if packable(a))
            packer = _Packer(self, _paths.join(data_root, packed_name), total, opts) if total else None
            for item in items:
                if item.key in tensors or (item.key == OBJECT_GRAPH_KEY and graph is not None):
                    raise InvalidCheckpointError(f"zarr: tensor {item.key!r} appears twice in one save of {prefix!r}")
                array = np.asarray(item.array)
                nbytes += item.nbytes
                dname = _dtype_name(array.dtype, item.key)
                if item.key == OBJECT_GRAPH_KEY and dname == _STRING and array.ndim == 0:
                    graph = base64.b64encode(bytes(_as_bytes_array(array, item.key)[()])).decode("ascii")
                    continue
                entry: dict[str, Any] = {"dtype": dname, "shape": list(array.shape)}
                if packable(array):
                    offset = 0
                    if packer is not None:
                        with _writing(prefix, item.key):
                            offset = packer.add(_to_storage(array))
                    entry.update(packed=packed_name if array.nbytes else None, offset=offset, nbytes=array.nbytes)
                else:
                    name = encode_key(item.key)
                    with _writing(prefix, item.key):
                        meta = self._write_array(data_root, name, item.key, array, dname, opts)
                    arrays[name] = meta
                    entry["array"] = name
                tensors[item.key] = entry
            if packer is not None:
                with _writing(prefix, f"{packed_name} (packed small tensors)"):
                    arrays[packed_name] = packer.close()
            payload = {"tensors": tensors, "arrays": arrays, "graph": graph}
            keys = (*tensors, *([OBJECT_GRAPH_KEY] if graph is not None else []))
            return ShardResult(spec, keys, nbytes, json.dumps(payload, separators=(",", ":")).encode())

    def _claim_local(self, root: str) -> None:
        """Create the save's temporary group with its owner record in one step.

        The directory appears by rename, owner file inside, so :meth:`cleanup`
        never sees a temporary group without an owner unless it is garbage.
        """
        loc = self._location
        assert isinstance(loc, LocalLocation)
        if loc.exists(root):
            return
        # The claimer's host and pid are in the name as well as in the record:
        # a writer killed before its record is whole still leaves a name that
        # says who made it, so cleanup need not wait out a grace period.
        init = f"{root}-init-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        loc.write_bytes(_paths.join(init, _OWNER), record, durable=False)
        try:
            loc.rename(init, root)
        except CheckpointError:
            loc.rmtree(init)  # another shard of this save created it first
            if not loc.exists(root):
                raise

    def _write_array(
        self, data_root: str, name: str, key: str, array: np.ndarray[Any, Any], dname: str, opts: ZarrOptions
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {"trackpoint_key": key}
        path = _paths.join(data_root, name)
        if dname == _STRING:
            values = _as_bytes_array(array, key)
            # Chunk by the mean element length, the best guess at bytes per element.
            mean = max(1, sum(len(x) for x in values.flat) // max(1, values.size))
            with _quiet_vlen():
                return self._create_array(
                    path,
                    values,
                    chunks=_chunk_shape(values.shape, mean, opts.chunk_bytes),
                    dtype=VariableLengthBytes(),
                    compressors=_codecs(opts),
                    attributes=attrs,
                )
        storage = _storage_dtype(array.dtype)
        if storage.newbyteorder("=") != array.dtype.newbyteorder("="):
            attrs["trackpoint_dtype"] = dname
        stored = _to_storage(array)
        return self._create_array(
            path,
            stored,
            chunks=_chunk_shape(array.shape, storage.itemsize, opts.chunk_bytes),
            dtype=storage,
            fill_value=0,
            compressors=_codecs(opts),
            attributes=attrs,
        )

    def _new_array(self, path: str, shape: tuple[int, ...], **spec: Any) -> tuple[Any, dict[str, Any]]:
        """A new, empty array at ``path`` and its metadata document (``zarr.json`` not yet written).

        zarr's ``create_array`` first looks for (or deletes) an existing node:
        a listing and several requests per array on an object store. The save
        owns a fresh directory, so the metadata is derived in memory instead,
        and only the chunks and one ``zarr.json`` are written.
        """
        from zarr.core.array import AsyncArray
        from zarr.storage import MemoryStore, StorePath

        template = zarr.create_array(store=MemoryStore(), shape=shape, zarr_format=3, **spec)
        meta = _metadata_dict(template)
        store = self._location.zarr_store(path, read_only=False)
        metadata: Any = template.metadata  # always v3 here; zarr types it as the v2/v3 union
        # Bit-exact: without write_empty_chunks a chunk of -0.0 would be dropped
        # as "equal to the fill value 0" and read back as +0.0.
        arr = zarr.Array(
            AsyncArray(metadata=metadata, store_path=StorePath(store), config={"write_empty_chunks": True})
        )
        return arr, meta

    def _finish_array(self, path: str, meta: dict[str, Any]) -> dict[str, Any]:
        self._location.write_bytes(_paths.join(path, "zarr.json"), json.dumps(meta, indent=2).encode())
        return meta

    def _create_array(self, path: str, values: np.ndarray[Any, Any], **spec: Any) -> dict[str, Any]:
        """Write ``values`` as a new array at ``path``; return its metadata document."""
        arr, meta = self._new_array(path, values.shape, **spec)
        if values.size:
            arr[...] = values
        return self._finish_array(path, meta)

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = False) -> None:
        if not shards:
            raise InvalidCheckpointError(f"zarr: commit of {prefix!r} got no shards; write at least one")
        save_id = shards[0].spec.save_id
        with _active(save_id):
            doc = self._root_document(prefix, shards, save_id)
            group = self._group(prefix)
            root, data = self._staging(prefix, save_id)
            if self._local:
                self._commit_local(prefix, group, root, doc, save_id, overwrite)
            else:
                self._commit_object_store(prefix, group, data, doc, overwrite)

    def _root_document(self, prefix: str, shards: Sequence[ShardResult], save_id: str) -> bytes:
        tensors: dict[str, Any] = {}
        arrays: dict[str, Any] = {}
        graph: str | None = None
        expected = shards[0].spec.num_shards
        ids = sorted(r.spec.shard_id for r in shards)
        if ids != list(range(expected)) or any(r.spec.num_shards != expected for r in shards):
            # A manifest lost on its way to the committing process would
            # otherwise commit a checkpoint silently missing its tensors.
            raise InvalidCheckpointError(
                f"zarr: commit of {prefix!r} needs the manifests of shards 0..{expected - 1} exactly once, "
                f"got shard ids {ids}; gather every write_shard result before committing"
            )
        for r in shards:
            if r.spec.save_id != save_id:
                raise InvalidCheckpointError(
                    f"zarr: commit of {prefix!r} mixes shards of saves {save_id} and {r.spec.save_id}"
                )
            try:
                piece = json.loads(r.payload)
                if not (isinstance(piece["tensors"], dict) and isinstance(piece["arrays"], dict)):
                    raise TypeError("tensors and arrays must be objects")
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidCheckpointError(
                    f"zarr: manifest of shard {r.spec.shard_id} for {prefix!r} is not a zarr backend manifest "
                    f"({exc}); pass the ShardResult that write_shard returned"
                ) from exc
            dup = tensors.keys() & piece["tensors"].keys()
            if dup or (graph is not None and piece.get("graph") is not None):
                name = sorted(dup)[0] if dup else OBJECT_GRAPH_KEY
                raise InvalidCheckpointError(f"zarr: tensor {name!r} appears in two shards of {prefix!r}")
            tensors.update(piece["tensors"])
            arrays.update(piece["arrays"])
            graph = graph if piece.get("graph") is None else piece.get("graph")
        _, data = self._staging(prefix, save_id)
        metadata: dict[str, Any] = {}
        if data:
            metadata[data] = _group_metadata({})
        for name, meta in arrays.items():
            metadata[f"{data}/{name}" if data else name] = meta
        attrs: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "save_id": save_id,
            "data": data,
            "object_graph": graph,
            "tensors": tensors,
        }
        attrs["checksum"] = _root_checksum(attrs, metadata)
        doc = _group_metadata({"trackpoint": attrs})
        doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": metadata}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _commit_local(self, prefix: str, group: str, staging: str, doc: bytes, save_id: str, overwrite: bool) -> None:
        loc = self._location
        assert isinstance(loc, LocalLocation)
        if not loc.exists(staging):
            raise CheckpointNotFoundError(
                f"zarr/local: the shards of save {save_id} for {prefix!r} are gone ({staging!r}); save again"
            )
        loc.write_bytes(_paths.join(staging, "zarr.json"), doc)
        loc.fsync_tree(staging)
        parent = os.path.dirname(group)
        if overwrite and loc.exists(group) and loc.exchange(staging, group):
            # Atomic swap: readers see the old checkpoint or the new one, never
            # neither. The old one now sits at the temporary name, ownerless.
            loc.fsync_dir(parent)
            loc.delete_file(_paths.join(group, _OWNER))
            loc.rmtree(staging)
            return
        aside: str | None = None
        if overwrite and loc.exists(group):
            # No atomic exchange on this file system: a crash between these two
            # renames leaves nothing visible at the prefix (documented).
            aside = f"{group}{_TMP}{save_id}-replaced"
            loc.rename(group, aside)
        try:
            loc.rename(staging, group)
        except BaseException:
            if aside is not None:
                with contextlib.suppress(CheckpointError):
                    loc.rename(aside, group)
            raise
        loc.fsync_dir(parent)
        # The owner record stays until the rename so that a concurrent cleanup
        # never takes a committing save for an abandoned one.
        loc.delete_file(_paths.join(group, _OWNER))
        if aside is not None:
            loc.rmtree(aside)

    def _commit_object_store(self, prefix: str, group: str, data: str, doc: bytes, overwrite: bool) -> None:
        loc = self._location
        loc.write_bytes(_paths.join(group, f"{data}/zarr.json"), json.dumps(_group_metadata({})).encode())
        root_json = _paths.join(group, "zarr.json")
        if not overwrite:
            # The commit point: create-only, so a concurrent committer cannot be clobbered.
            try:
                loc.write_bytes(root_json, doc, create_only=True)
            except CheckpointError as exc:
                if isinstance(exc, FileExistsError):
                    raise type(exc)(
                        f"zarr/{loc.kind}: a checkpoint is already committed at {prefix!r}; "
                        "pass overwrite=True or choose another prefix"
                    ) from exc
                raise
            return
        old: dict[str, Any] | None
        try:
            old = self._read_root(prefix, group)
        except InvalidCheckpointError:
            old = None
        loc.write_bytes(root_json, doc)
        if old is not None and old.get("data") and old.get("data") != data:
            loc.rmtree(_paths.join(group, str(old["data"])))

    def abort(self, prefix: str, save_id: str) -> None:
        try:
            root, data = self._staging(prefix, save_id)
            if self._local:
                self._location.rmtree(root)
                return
            with contextlib.suppress(CheckpointError):
                current = self._read_root(prefix, root)
                if current is not None and current.get("data") == data:
                    return  # committed after all: it is no longer ours to remove
            self._location.rmtree(_paths.join(root, data))
        except CheckpointError:
            pass  # best effort by contract; cleanup() gets the rest

    # -------------------------------------------------------------- reading
    def open_reader(self, prefix: str) -> CheckpointReader:
        group = self._group(prefix)
        found = self._read_root_document(prefix, group)
        if found is None:
            raise CheckpointNotFoundError(f"zarr: no checkpoint is committed at {prefix!r} (no {group}/zarr.json)")
        attrs, metadata = found
        data = str(attrs.get("data") or "")
        graph_b64 = attrs.get("object_graph")
        try:
            graph = None if graph_b64 is None else base64.b64decode(graph_b64, validate=True)
        except ValueError as exc:
            raise DataLossError(f"zarr: the object graph in {group}/zarr.json is not valid base64") from exc
        table = attrs.get("tensors")
        if not isinstance(table, dict):
            raise InvalidCheckpointError(f"zarr: {group}/zarr.json has no tensor table")
        # Array metadata comes from the (checksummed) consolidated copy: no
        # per-array zarr.json read, and a damaged one cannot mislead a restore.
        arrays = {name[len(data) + 1 :] if data else name: meta for name, meta in metadata.items()}
        return ZarrReader(prefix, self._location, _paths.join(group, data) if data else group, table, graph, arrays)

    # ------------------------------------------------------------ namespace
    def exists(self, prefix: str) -> bool:
        return self._location.exists(_paths.join(self._group(prefix), "zarr.json"))

    def delete(self, prefix: str) -> None:
        group = self._group(prefix)
        if self._local:
            # Renaming away is the atomic "uncommit"; cleanup() finishes an interrupted rmtree.
            loc = self._location
            assert isinstance(loc, LocalLocation)
            aside = f"{group}{_TMP}del-{uuid.uuid4().hex}"
            try:
                loc.rename(group, aside)
            except CheckpointNotFoundError:
                return
            loc.rmtree(aside)
            return
        self._location.delete_file(_paths.join(group, "zarr.json"))
        self._location.rmtree(group)

    def list_checkpoints(self, directory: str) -> list[str]:
        base = self._location.resolve(directory)
        found = []
        for name in self._location.listdir(base):
            if name.endswith(_SUFFIX) and len(name) > len(_SUFFIX):
                if self._location.exists(_paths.join(_paths.join(base, name), "zarr.json")):
                    found.append(self.join(directory, name[: -len(_SUFFIX)]))
        return sorted(found)

    def cleanup(self, directory: str, *, min_age: float | None = None) -> list[str]:
        # docstring inherited; min_age=None keeps the backend option cleanup_min_age.
        if min_age is None:
            min_age = self._options.cleanup_min_age
        removed: list[str] = []
        now = time.time()
        for path, name in self._candidates(directory):
            if self._local:
                old = self._local_leftover(path, name, now, min_age)
            else:
                mtime = self._location.newest_mtime(path)
                old = mtime is None or now - mtime >= min_age
            if old:
                self._location.rmtree(path)
                removed.append(path)
        return sorted(removed)

    def leftovers(self, directory: str) -> list[str]:
        # docstring inherited: the candidates of cleanup, except this process's running saves.
        return sorted(
            path
            for path, name in self._candidates(directory)
            if not (self._local and _is_active(name.split(_TMP, 1)[1].split("-init-", 1)[0]))
        )

    def _candidates(self, directory: str) -> list[tuple[str, str]]:
        """``(path, name)`` of what may be a leftover: local save directories, unused remote data versions."""
        base = self._location.resolve(directory)
        found: list[tuple[str, str]] = []
        for name in self._location.listdir(base):
            path = _paths.join(base, name)
            if self._local:
                if _TMP in name and name.split(_TMP, 1)[0].endswith(_SUFFIX):
                    found.append((path, name))
                continue
            if not name.endswith(_SUFFIX):
                continue
            with contextlib.suppress(InvalidCheckpointError):
                attrs = self._read_root(path, path)
                current = None if attrs is None else attrs.get("data")
                for child in self._location.listdir(path):
                    if child.startswith("v-") and child != current and not _is_active(child[2:]):
                        found.append((_paths.join(path, child), child))
        return found

    def _local_leftover(self, path: str, name: str, now: float, min_age: float) -> bool:
        save_id = name.split(_TMP, 1)[1]
        mtime = self._location.newest_mtime(path) or now
        initializing = "-init-" in save_id
        if _is_active(save_id.split("-init-", 1)[0]):
            return False
        if initializing and _claimer_died(save_id.split("-init-", 1)[1]):
            return True
        raw = self._location.read_bytes(_paths.join(path, _OWNER))
        if raw is None:
            # Every save directory is born with its owner record (see
            # _claim_local); without one it is a replaced or deleted checkpoint,
            # or a claim in its first microseconds.
            return not initializing or now - mtime >= _OWNERLESS_GRACE
        try:
            owner = json.loads(raw)
            host, pid = str(owner["host"]), int(owner["pid"])
        except (ValueError, KeyError, TypeError):
            return now - mtime >= min_age
        if host == socket.gethostname() and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True  # the writer died
            except PermissionError:
                pass  # alive, another user's
        return now - mtime >= min_age

    # ---------------------------------------------------------- small files
    def read_file(self, path: str) -> VersionedBytes | None:
        return self._location.read_versioned(self._location.resolve(path))

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        return self._location.write_versioned(self._location.resolve(path), bytes(data), if_version)

    def delete_file(self, path: str) -> None:
        self._location.delete_file(self._location.resolve(path))

    def dirname(self, path: str) -> str:
        return _paths.dirname(path)

    def close(self) -> None:
        self._location.close()

    def __repr__(self) -> str:
        return f"<ZarrBackend on {self._location.kind}>"


def _root_checksum(attrs: Mapping[str, Any], metadata: Mapping[str, Any]) -> int:
    """CRC32C over a canonical JSON form of the tensor table and the array metadata the reader uses."""
    import crc32c

    body = {"attributes": {k: v for k, v in attrs.items() if k != "checksum"}, "metadata": metadata}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return int(crc32c.crc32c(canonical))


def _group_metadata(attributes: dict[str, Any]) -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes}


def make_location(url: str, storage_options: Mapping[str, Any]) -> Location:
    """The :class:`Location` for a user URL (``zarr+s3://``, ``gs://``, a local path, ...)."""
    s = _paths.scheme(url)
    if s in ("", "file", "zarr", "zarr+file"):
        return LocalLocation()
    if s in ("s3", "zarr+s3"):
        return FsspecLocation("s3", storage_options)
    if s in ("gs", "gcs", "zarr+gs", "zarr+gcs"):
        return FsspecLocation("gcs", storage_options)
    raise UnknownBackendError(
        f"zarr: cannot store checkpoints at {url!r}; use a local path or a zarr+file://, s3://, zarr+s3://, "
        "gs:// or zarr+gs:// URL"
    )
