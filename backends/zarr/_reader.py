"""Reading a committed Zarr checkpoint: tensors by key, small ones out of their packed arrays."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np

from trackpoint import _paths
from trackpoint.backends.stores import FileLayer
from trackpoint.backends.zarr import _layout
from trackpoint.backends.zarr._chunks import Codec, ContiguousChunks, read_chunks, read_packed
from trackpoint.backends.zarr._options import DEFAULT_PACKED_CHUNK_BYTES
from trackpoint.errors import (
    CheckpointKeyError,
    DataLossError,
    DTypeMismatchError,
    InvalidCheckpointError,
    ShapeMismatchError,
    StorageError,
)
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointReader, TensorInfo, TensorSlice

__all__ = ["ZarrReader"]

# Reads of packed tensors are merged into runs of at most this many bytes.
_MAX_RUN: Final = 16 << 20
_BY_OFFSET: Final = itemgetter(0, 1)
# Packed arrays up to this size are read whole and kept by the reader, within a total.
_PACKED_CACHE_ARRAY: Final = 8 << 20
_PACKED_CACHE_TOTAL: Final = 64 << 20
#: Tensors with arrays of their own that ``read_many`` reads at once. One at a
#: time, the disk idled while each chunk's CRC was checked and each next chunk
#: object was opened: a cold 1 GiB restore took about twice the bundle's.
_READERS: Final = 4


_LITTLE: Final = sys.byteorder == "little"


def _plain_bytes(out: np.ndarray[Any, Any]) -> memoryview | None:
    """The bytes of ``out`` to copy packed bytes into, or ``None`` when a plain copy cannot fill it.

    A plain copy fills an array that is C-contiguous, writeable and of a dtype the buffer protocol
    describes (ml_dtypes types are not), once its dtype and shape were checked against the entry. Packed
    bytes are little-endian: callers on big-endian hosts do not ask.
    """
    try:
        view = memoryview(out).cast("B")  # type: ignore[arg-type]  # ndarray exports the buffer protocol
    except (TypeError, ValueError):
        return None
    return None if view.readonly else view


def _separator(meta: Mapping[str, Any]) -> str | None:
    """The chunk key separator of an array's metadata; ``None``: a key encoding only zarr reads."""
    encoding = meta.get("chunk_key_encoding", {})
    config = encoding.get("configuration", {}) if isinstance(encoding, Mapping) else None
    if not isinstance(config, Mapping) or encoding.get("name", "default") != "default":
        return None
    # Zarr's default encoding separates with "/" unless it says otherwise.
    separator = config.get("separator", "/")
    return separator if separator in _layout.CHUNK_SEPARATORS else None


# Not frozen: a frozen dataclass's __init__ costs 2.4 us against 0.5 us, for each of 10^5 entries.
@dataclass(slots=True)
class _Entry:
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    array: str | None = None
    packed: str | None = None
    offset: int = 0
    nbytes: int = 0
    #: For a tensor saved as slices: each slice and the entry storing it.
    slices: tuple[tuple[TensorSlice, _Entry], ...] = ()


class ZarrReader(CheckpointReader):
    """Reads one committed Zarr checkpoint; opens only the arrays that are read."""

    def __init__(
        self,
        prefix: str,
        files: FileLayer,
        data_root: str,
        table: Mapping[str, Any],
        graph: bytes | None,
        metadata: Mapping[str, Any],
        *,
        identity: Callable[[], object] | None = None,
        opened: object = None,
    ) -> None:
        self.prefix = prefix
        # On a store whose overwrite swaps the group in place: the committed root's identity now
        # (``identity()``) and when this reader read it (``opened``); see _unchanged.
        self._identity = identity
        self._opened = opened
        self._metadata = metadata
        self._files = files
        self._data_root = data_root
        self._graph = graph
        self._arrays: dict[str, Any] = {}
        self._packed_cache: dict[str, np.ndarray[Any, Any]] = {}
        # Stored sizes of uncompressed chunk objects, asked of the store together (see _chunk_sizes_of): on
        # an object store each is a round trip, and a checkpoint is never changed under its reader.
        self._chunk_sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        # One numpy dtype per dtype name: 20,000 tensors name a handful.
        self._dtypes: dict[str, np.dtype[Any]] = {}
        parse = self._parse_entry
        self._entries: dict[str, _Entry] = {key: parse(key, raw) for key, raw in table.items()}
        self._keys = sorted([*self._entries, *([OBJECT_GRAPH_KEY] if graph is not None else [])])

    def _parse_entry(self, key: str, raw: Any) -> _Entry:
        try:
            name = raw["dtype"]
            dtype = self._dtypes.get(name) if type(name) is str else None
            if dtype is None:
                dtype = self._dtypes[str(name)] = _layout.dtype_of(str(name), f"tensor {key!r} of {self.prefix!r}")
            shape = tuple(map(int, raw["shape"]))
            if "slices" in raw:
                slices = []
                for piece in raw["slices"]:
                    sub = self._parse_entry(key, piece)
                    if sub.dtype != dtype:
                        raise ValueError(f"a slice has dtype {sub.dtype}, the tensor {dtype}")
                    slices.append((TensorSlice(shape, tuple(int(d) for d in piece["slice_offset"]), sub.shape), sub))
                return _Entry(dtype, shape, slices=tuple(slices))
            if "array" in raw:
                return _Entry(dtype, shape, str(raw["array"]))
            packed = raw.get("packed")
            # Positional: keyword arguments cost a tenth of the parse, for each of 10^5 entries.
            packed = None if packed is None else str(packed)
            return _Entry(dtype, shape, None, packed, int(raw["offset"]), int(raw["nbytes"]))
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
            import zarr
            from zarr.core.array import AsyncArray
            from zarr.storage import StorePath

            from trackpoint.backends.zarr._store_adapter import store

            meta = self._metadata.get(name)
            if meta is None:
                raise DataLossError(f"zarr: checkpoint {self.prefix!r} lists array {name!r} but has no metadata for it")
            path = StorePath(store(self._files, _paths.join(self._data_root, name), read_only=True))
            with _layout.quiet_vlen():
                arr = zarr.Array(AsyncArray(metadata=meta, store_path=path))
            with self._lock:
                self._arrays[name] = arr
        return arr

    def _check_out(self, key: str, e: _Entry, out: np.ndarray[Any, Any]) -> None:
        if out.dtype != e.dtype:
            raise DTypeMismatchError(f"zarr: cannot read {key!r} ({e.dtype}) into an array of dtype {out.dtype}")
        if out.shape != e.shape:
            raise ShapeMismatchError(f"zarr: cannot read {key!r} {e.shape} into an array of shape {out.shape}")
        if not out.flags.writeable:
            # As the bundle reader says it (the contract asks for a writeable destination); numpy's own
            # complaint would come only after earlier tensors were read.
            raise ShapeMismatchError(f"zarr: the destination for {key!r} must be writeable")

    def _meta(self, name: str) -> Mapping[str, Any]:
        meta = self._metadata.get(name)
        if not isinstance(meta, Mapping):
            raise DataLossError(f"zarr: checkpoint {self.prefix!r} lists array {name!r} but has no metadata for it")
        return meta

    def _plan(self, name: str) -> tuple[ContiguousChunks, Codec] | None:
        """How to read the numeric array ``name`` chunk by chunk; ``None``: only zarr knows its layout."""
        meta = self._meta(name)
        try:
            chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
            itemsize = np.dtype(meta["data_type"]).itemsize
        except (KeyError, TypeError):
            return None
        separator = _separator(meta)
        if separator is None:
            return None
        grid = ContiguousChunks.of(meta.get("shape", ()), chunks, itemsize, separator)
        codec = Codec.from_metadata(meta.get("codecs", []))
        return None if grid is None or codec is None else (grid, codec)

    def _fill(self, name: str, view: np.ndarray[Any, Any]) -> None:
        """Read the whole numeric array ``name`` into ``view`` (C-contiguous, its storage dtype)."""
        plan = self._plan(name)
        if plan is None:
            from zarr.core.buffer import default_buffer_prototype

            self._array(name).get_basic_selection(
                Ellipsis, out=default_buffer_prototype().nd_buffer.from_numpy_array(view)
            )
            return
        read_chunks(self._files, _paths.join(self._data_root, name), view, *plan, sizes_of=self._chunk_sizes_of)
        if sys.byteorder == "big":
            view.byteswap(inplace=True)  # the chunks hold little-endian values

    def _packed_bytes(
        self, name: str, start: int, stop: int, scratch: np.ndarray[Any, Any] | None = None
    ) -> np.ndarray[Any, Any]:
        """Bytes ``[start, stop)`` of the packed array ``name``, maybe a view into ``scratch`` (see ``read_packed``)."""
        meta = self._meta(name)
        try:
            (sharding,) = meta["codecs"]
            shard = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
            inner = int(sharding["configuration"]["chunk_shape"][0])
            codec = Codec.from_metadata(sharding["configuration"]["codecs"])
            separator = _separator(meta)
            known = sharding["name"] == "sharding_indexed" and shard % inner == 0
        except (KeyError, TypeError, ValueError, IndexError):
            codec, separator, known = None, None, False
        if (
            codec is None
            or separator is None
            or not known
            or sharding["configuration"].get("index_location", "end") != "end"
        ):
            return np.asarray(self._array(name)[start:stop])
        directory = _paths.join(self._data_root, name)
        return read_packed(self._files, directory, start, stop, shard, inner, codec, separator, scratch)

    def _unchanged(self) -> None:
        """Raise if this reader's checkpoint was replaced at its path since it was opened.

        Called after every read, so values read from a replaced checkpoint (old metadata over the new
        checkpoint's chunks, whose checksums match) are never returned. On object stores the data lives
        in a group of its own version and needs no check: a replaced one's chunks are gone.
        """
        if self._identity is not None and self._identity() != self._opened:
            raise DataLossError(
                f"zarr: the checkpoint at {self.prefix!r} was replaced while this reader had it open, so what it "
                "read may be the new checkpoint's; open the checkpoint again"
            )

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            graph = np.empty((), dtype=object)
            graph[()] = self._graph
            return graph
        value = self._read_tensor(key, out)
        self._unchanged()
        return value

    def _read_tensor(self, key: str, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        """:meth:`read` of a stored tensor without the check of ``_unchanged``, which read_many makes once."""
        e = self._entry(key)
        if e.slices:
            return self._read_part(key, e, TensorSlice.full(e.shape), out)
        return self._read_entry(key, e, out)

    def read_slice(
        self,
        key: str,
        offset: Sequence[int],
        shape: Sequence[int],
        out: np.ndarray[Any, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        """Read part of a tensor (see :meth:`CheckpointReader.read_slice`).

        Only the stored slices that overlap the part are read; of a numeric
        array chunked along its first dimension (as trackpoint writes large
        arrays) only the chunks holding the part's rows.
        """
        if key == OBJECT_GRAPH_KEY and self._graph is not None:
            return super().read_slice(key, offset, shape, out)
        e = self._entry(key)
        part = TensorSlice(e.shape, tuple(offset), tuple(shape))
        value = self._read_part(key, e, part, out)
        self._unchanged()
        return value

    def _read_part(
        self, key: str, e: _Entry, part: TensorSlice, out: np.ndarray[Any, Any] | None
    ) -> np.ndarray[Any, Any]:
        pieces = e.slices or ((TensorSlice.full(e.shape), e),)
        overlaps = [(inter, where, sub) for where, sub in pieces if (inter := where.intersect(part)) is not None]
        covered = sum(inter.size for inter, _, _ in overlaps)
        if covered < part.size:
            raise DataLossError(
                f"zarr: the slices of {key!r} in {self.prefix!r} hold {covered} of the {part.size} elements of "
                f"{part.spec!r}; the tensor is incomplete"
            )
        if e.dtype.kind == "O":
            out = None
        if out is not None:
            if out.dtype != e.dtype:
                raise DTypeMismatchError(f"zarr: cannot read {key!r} ({e.dtype}) into an array of dtype {out.dtype}")
            if out.shape != part.shape:
                raise ShapeMismatchError(
                    f"zarr: cannot read a part of {key!r} of shape {part.shape} into an array of shape {out.shape}"
                )
        dest = out if out is not None else np.empty(part.shape, dtype=e.dtype)
        for inter, where, sub in overlaps:
            local = inter.within(where)
            with _layout.reading(self.prefix, key):
                rows = self._rows(key, sub, local[0]) if local and sub.array is not None else None
            if rows is not None:
                start, values = rows
                dest[inter.within(part)] = values[(slice(local[0].start - start, local[0].stop - start), *local[1:])]
            else:
                dest[inter.within(part)] = self._read_entry(key, sub, None)[local]
        return dest

    def _rows(self, key: str, e: _Entry, rows: slice) -> tuple[int, np.ndarray[Any, Any]] | None:
        """The chunks of ``e``'s array holding ``rows`` (first dimension): ``(first row read, values)``.

        ``None`` when the array is not chunked along its first dimension
        alone (only zarr knows its layout, strings, scalars): read it whole.
        """
        if e.array is None or e.dtype.kind == "O" or not e.shape:
            return None
        plan = self._plan(e.array)
        if plan is None or plan[0].axis != 0 or tuple(plan[0].shape) != e.shape:
            return None
        grid, codec = plan
        step = grid.chunks[0]
        first, last = rows.start // step, -(-rows.stop // step)
        if first == 0 and last * step >= e.shape[0]:
            return None  # every chunk: the plain read is as cheap
        start, stop = first * step, min(last * step, e.shape[0])
        base = grid.runs()[first][1]
        runs = [(k, off - base, n, stored) for k, off, n, stored in grid.runs()[first:last]]
        values = np.empty((stop - start, *e.shape[1:]), dtype=e.dtype)
        view = values.view(_layout.storage_dtype(e.dtype).newbyteorder("="))
        read_chunks(
            self._files, _paths.join(self._data_root, e.array), view, grid, codec, runs, sizes_of=self._chunk_sizes_of
        )
        if sys.byteorder == "big":
            view.byteswap(inplace=True)
        return start, values

    def _read_entry(self, key: str, e: _Entry, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        """Read the tensor (or slice) stored as ``e``."""
        if e.dtype.kind == "O":
            out = None
        if out is not None:
            self._check_out(key, e, out)
        with _layout.reading(self.prefix, key):
            if e.array is None:
                return self._read_packed(key, e, out)
            if e.dtype.kind == "O":
                return _layout.as_bytes_array(np.asarray(self._array(e.array)[...]), key)
            shape = tuple(int(d) for d in self._meta(e.array).get("shape", ()))
            if shape != e.shape:
                raise DataLossError(
                    f"zarr: array of {key!r} in {self.prefix!r} has shape {shape}, the tensor table says {e.shape}"
                )
            dest = out if out is not None and out.flags.c_contiguous and out.flags.writeable else None
            dest_arr = np.empty(e.shape, dtype=e.dtype) if dest is None else dest
            if dest_arr.size:
                self._fill(e.array, dest_arr.view(_layout.storage_dtype(e.dtype).newbyteorder("=")))
            if out is not None and dest is None:
                np.copyto(out, dest_arr)
                return out
            return dest_arr

    def _read_packed(self, key: str, e: _Entry, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if e.nbytes == 0 or e.packed is None:
            raw = np.empty(0, dtype=np.uint8)
        else:
            whole = self._small_packed(e.packed)
            if whole is not None:
                raw = whole[e.offset : e.offset + e.nbytes]
            else:
                raw = self._packed_bytes(e.packed, e.offset, e.offset + e.nbytes)
        return self._copy_packed(key, e, out, np.ascontiguousarray(raw).data)

    def _copy_packed(
        self, key: str, e: _Entry, out: np.ndarray[Any, Any] | None, raw: memoryview
    ) -> np.ndarray[Any, Any]:
        """The tensor stored as the packed bytes ``raw``: copied into ``out`` (checked against ``e``) or a new array."""
        if len(raw) != e.nbytes:
            raise DataLossError(f"zarr: packed bytes of {key!r} in {self.prefix!r} are truncated")
        if out is not None and _LITTLE:
            target = _plain_bytes(out)
            if target is not None and len(target) == e.nbytes:
                target[:] = raw  # a memcpy: half the cost of numpy's view, reshape and assign
                return out
        value = np.frombuffer(raw, dtype=_layout.little_endian(e.dtype)).reshape(e.shape)
        if out is not None:
            out[...] = value  # out has e's dtype and shape (checked): a plain copy, cheaper than np.copyto
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
            cached = self._packed_bytes(name, 0, size)
            with self._lock:
                if sum(a.size for a in self._packed_cache.values()) + cached.size > _PACKED_CACHE_TOTAL:
                    self._packed_cache.clear()
                self._packed_cache[name] = cached
        return cached

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        # Small tensors share packed arrays: read each run of neighbours once.
        results: list[np.ndarray[Any, Any] | None] = [None] * len(requests)
        by_packed: dict[str, list[tuple[int, int, _Entry]]] = {}  # per packed array: (offset, request, entry)
        own: list[tuple[int, int]] = []  # (bytes, request) of numeric tensors with their own array
        entries = self._entries
        for i, (key, out) in enumerate(requests):
            if key != OBJECT_GRAPH_KEY or self._graph is None:
                # Inline for the common case (a known key, an open reader): this runs once per tensor.
                e = entries.get(key)
                if e is None or self._closed:
                    e = self._entry(key)  # raises
                if e.array is None and e.packed is not None and e.nbytes:
                    if out is not None and not (
                        (out.dtype is e.dtype or out.dtype == e.dtype) and out.shape == e.shape and out.flags.writeable
                    ):
                        self._check_out(key, e, out)  # raises
                    by_packed.setdefault(e.packed, []).append((e.offset, i, e))
                    continue
                if e.array is not None and not e.slices and e.dtype.kind != "O":
                    own.append((e.dtype.itemsize * math.prod(e.shape), i))
                    continue
            results[i] = self.read(key, out)
        if len(own) > 1:
            self._ask_chunk_sizes([entries[requests[i][0]].array for _, i in own])
            # Largest first, so the last tensors to finish are small ones.
            own.sort(key=lambda t: -t[0])
            with ThreadPoolExecutor(min(_READERS, len(own)), thread_name_prefix="trackpoint-zarr-read") as pool:
                futures = [(i, pool.submit(self._read_tensor, *requests[i])) for _, i in own]
                try:
                    # Meanwhile this thread reads the packed tensors: after the pool, they were a serial tail.
                    self._read_packed_runs(requests, by_packed, results)
                    for i, f in futures:
                        results[i] = f.result()
                except BaseException:
                    # Reads not started are dropped; leaving the pool waits for the running ones,
                    # so none lands in an array after the error is raised.
                    for _, f in futures:
                        f.cancel()
                    raise
        else:
            for _, i in own:
                results[i] = self._read_tensor(*requests[i])
            self._read_packed_runs(requests, by_packed, results)
        self._unchanged()
        return [r for r in results if r is not None]

    def _chunk_sizes_of(self, paths: list[str]) -> list[int | None]:
        """The sizes of chunk objects; those not known yet asked of the store in one call."""
        known = self._chunk_sizes
        unknown = [p for p in paths if p not in known]
        if unknown:
            known.update((p, n) for p, n in zip(unknown, self._files.sizes(unknown), strict=True) if n is not None)
        return [known.get(p) for p in paths]

    def _ask_chunk_sizes(self, names: Sequence[str | None]) -> None:
        """Learn the sizes of the uncompressed chunk objects of arrays ``names`` in one call, before reading them."""
        paths = []
        for name in names:
            plan = None if name is None else self._plan(name)
            if name is not None and plan is not None and plan[1].compressor is None:
                directory = _paths.join(self._data_root, name)
                paths += [_paths.join(directory, run[0]) for run in plan[0].runs()]
        self._chunk_sizes_of(paths)

    def _read_packed_runs(
        self,
        requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]],
        by_packed: dict[str, list[tuple[int, int, _Entry]]],
        results: list[np.ndarray[Any, Any] | None],
    ) -> None:
        """Read the packed requests of :meth:`read_many`, ``(offset, request, entry)`` by packed array."""
        # One buffer for every run: a new one per run cost a page fault per 4 KiB read (35,000 for 166 MB).
        # Sized for a run and the two inner chunks it may start and end in, at the default chunk size.
        scratch = np.empty(_MAX_RUN + 2 * DEFAULT_PACKED_CHUNK_BYTES, dtype=np.uint8) if by_packed else None
        for packed, members in by_packed.items():
            members.sort(key=_BY_OFFSET)
            count = len(members)
            offsets = np.fromiter(map(itemgetter(0), members), np.int64, count)
            # Where each member's bytes end, or an earlier one's if that ends later: sorted, to cut runs.
            ends = np.maximum.accumulate(offsets + np.fromiter((m[2].nbytes for m in members), np.int64, count))
            a = 0
            while a < count:
                # The members from a that end within _MAX_RUN bytes of its start, and at least a itself.
                start = int(offsets[a])
                b = max(a + 1, int(np.searchsorted(ends, start + _MAX_RUN, side="right")))
                with _layout.reading(self.prefix, requests[members[a][1]][0]):
                    data = self._packed_bytes(packed, start, int(ends[b - 1]), scratch)
                    raw = data.data
                    for offset, i, e in members[a:b]:
                        key, out = requests[i]
                        results[i] = self._copy_packed(key, e, out, raw[offset - start : offset - start + e.nbytes])
                a = b

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._arrays.clear()
            self._packed_cache.clear()
