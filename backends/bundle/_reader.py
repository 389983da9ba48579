"""Reading a committed bundle: the parsed index, range checks, and slice assembly.

The index is read and parsed once; every entry is checked before anything
large is allocated. Data is read straight into the destination arrays, with
adjacent ranges of one data file coalesced and data files read in parallel
where the store offers ranged reads.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Final, NamedTuple, cast

import numpy as np

from trackpoint import _gc
from trackpoint.backends.bundle._codec import Entry, decode_entry, decode_header, decode_plain_entry, decode_strings
from trackpoint.backends.bundle._crc import crc32c, extend, unmask
from trackpoint.backends.bundle._dtypes import DT_STRING, READABLE, dtype_from_tf
from trackpoint.backends.bundle._names import data_filename, index_name
from trackpoint.backends.bundle._ordered_code import encode_slice_key
from trackpoint.backends.bundle._sstable import read_table
from trackpoint.backends.bundle._writer import byte_view
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import (
    CheckpointError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    DataLossError,
    DTypeMismatchError,
    InvalidCheckpointError,
    ShapeMismatchError,
    StorageError,
)
from trackpoint.storage import CheckpointReader, TensorInfo, TensorSlice

#: A header claiming more shards than this is treated as corrupt.
_MAX_SHARDS: Final = 1 << 24


class _Stored(NamedTuple):
    """One readable entry: decoded proto plus its numpy dtype (a named tuple: cheap to build 10^5 of).

    ``problem``: why no numpy array can hold the tensor (``None`` if one can); listed, ``info``/``read`` fail.
    """

    entry: Entry
    dtype: np.dtype[Any]
    swap: bool
    name: bytes
    problem: str | None = None
    #: What :meth:`BundleReader.info` returns; ``None`` when the tensor cannot be read (``problem``, or a
    #: type numpy cannot hold). Shared by the entries of one dtype and shape.
    info: TensorInfo | None = None


class _Kind(NamedTuple):
    """What the entries of one stored dtype and shape have in common (a model has few of these)."""

    dtype: np.dtype[Any]
    swap: bool
    #: Bytes an unsliced entry must record: exact for numbers, a lower bound for strings, -1: not checked.
    nbytes: int
    problem: str | None
    info: TensorInfo | None


#: numpy's limits on an array (``NPY_MAXDIMS`` and ``NPY_MAX_INTP`` bytes).
_MAX_RANK: Final = 64
_MAX_ARRAY_BYTES: Final = sys.maxsize


def _unholdable(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str | None:
    """Why numpy cannot create an array of ``shape`` and ``dtype``, or ``None`` when it can.

    The size checks of an entry compare element counts with byte counts, so a
    zero dimension makes any other dimensions pass them (``[0, 2**40, 2**40]``
    holds no element). numpy still multiplies the non-zero dimensions and the
    item size and refuses the shape, with a plain ValueError at allocation.
    """
    if len(shape) > _MAX_RANK:
        return f"has {len(shape)} dimensions; numpy arrays hold at most {_MAX_RANK}"
    nbytes = dtype.itemsize
    for d in shape:
        if d:
            nbytes *= d
    if nbytes > _MAX_ARRAY_BYTES:
        return f"has shape {shape} of {dtype}, which no numpy array can hold (over 2**63 bytes addressed)"
    return None


#: Runs shorter than this are not read one by one: the overlapping rows are read whole instead.
_MIN_RUN: Final = 4096
#: Nor are more runs than this per piece.
_MAX_RUNS: Final = 4096


def _runs(shape: tuple[int, ...], local: tuple[slice, ...], itemsize: int) -> tuple[np.ndarray[Any, Any], int] | None:
    """Byte offsets (in the piece) and length of the contiguous runs holding ``local`` of a C-order piece.

    ``None`` when the runs are too short or too many to read one by one.
    """
    rank = len(shape)
    # The first dimension from which on the part covers the piece whole (after a partial one).
    j = rank - 1
    while j > 0 and local[j].start == 0 and local[j].stop == shape[j]:
        j -= 1
    strides = [itemsize * math.prod(shape[d + 1 :]) for d in range(rank)]
    run_bytes = (local[j].stop - local[j].start) * strides[j] if rank else itemsize
    count = math.prod(sl.stop - sl.start for sl in local[:j])
    if count > 1 and (run_bytes < _MIN_RUN or count > _MAX_RUNS):
        return None
    offsets = np.zeros((), dtype=np.int64)
    for d in range(j):
        axis = np.arange(local[d].start, local[d].stop, dtype=np.int64) * strides[d]
        offsets = np.add.outer(offsets, axis)
    base = local[j].start * strides[j] if rank else 0
    return (offsets.reshape(-1) + base), int(run_bytes)


def _finish_part(
    swap: bool, buf: np.ndarray[Any, Any], target: np.ndarray[Any, Any], index: tuple[slice, ...] | None
) -> None:
    """Bring a partly read piece into native byte order and into place."""
    if swap:
        buf.reshape(-1).view(f"u{buf.dtype.itemsize}").byteswap(inplace=True)
    if index is not None:
        target[...] = buf[index]
    elif buf is not target:
        target[...] = buf


def header_count(index_bytes: bytes, where: str) -> int | None:
    """The data file count in an index's header, ``None`` if the index cannot be parsed."""
    try:
        table = read_table(index_bytes, where)
        if not table or table[0][0] != b"":
            return None
        return decode_header(table[0][1], where).num_shards
    except CheckpointError:
        return None


class BundleReader(CheckpointReader):
    """A parsed ``.index`` and lazy access to the data files."""

    @_gc.paused()
    def __init__(self, files: FileLayer, prefix: str, index_bytes: bytes) -> None:
        self.prefix = prefix
        self._files = files
        self._where = index_name(prefix)
        self._closed = False
        table = read_table(index_bytes, self._where)
        if not table or table[0][0] != b"":
            raise DataLossError(f"{self._where}: the bundle header entry is missing")
        header = decode_header(table[0][1], self._where)
        if header.num_shards > _MAX_SHARDS or (header.num_shards == 0 and len(table) > 1):
            raise DataLossError(f"{self._where}: the header claims an implausible {header.num_shards} data shards")
        self._num_shards = header.num_shards
        self._entries: dict[str, _Stored] = {}
        self._slices: dict[bytes, _Stored] = {}
        self._sizes: dict[int, int] = {}
        self._paths: dict[int, str] = {}
        self._size_lock = threading.Lock()
        kinds: dict[tuple[int, tuple[int, ...]], _Kind] = {}
        num_shards = self._num_shards
        for key, value in table[1:]:
            # The message context is formatted only when needed: an index may hold 10^5 entries.
            e = decode_plain_entry(value) or decode_entry(value, f"{self._where}: entry {key!r}")
            kind = kinds.get((e.dtype, e.shape))
            if kind is None:
                kind = kinds[(e.dtype, e.shape)] = self._kind(e, header.big_endian, key)
            if not e.slices:
                if e.shard_id >= num_shards:
                    raise DataLossError(
                        f"{self._where}: entry {key!r}: shard_id {e.shard_id} is not below num_shards {num_shards}"
                    )
                if kind.nbytes >= 0 and (e.size < kind.nbytes if e.dtype == DT_STRING else e.size != kind.nbytes):
                    raise self._size_error(key, e, kind)
            stored = _Stored(e, kind.dtype, kind.swap, key, kind.problem, kind.info)
            if key[:1] == b"\x00":
                self._slices[key] = stored
            else:
                self._entries[key.decode("utf-8", "surrogateescape")] = stored
        self._keys = sorted(self._entries)

    def _kind(self, e: Entry, big_endian: bool, key: bytes) -> _Kind:
        """The dtype, size rule and readability of entries of ``e``'s dtype and shape."""
        where = f"{self._where}: entry {key!r}"
        # Unreadable types (resource, variant) stay listed and fail only when read.
        dtype, swap = dtype_from_tf(e.dtype, big_endian, where) if e.dtype in READABLE else (np.dtype(np.uint8), False)
        count = 1
        for d in e.shape:
            count *= d
        if e.dtype == DT_STRING:
            # Every string takes at least one length byte: this bounds the element array allocated
            # before the bytes are checked.
            nbytes = count + 4 if count else -1
        else:
            nbytes = count * dtype.itemsize if e.dtype in READABLE else -1
        # Strings are object arrays: one pointer per element.
        problem = _unholdable(e.shape, np.dtype(object) if e.dtype == DT_STRING else dtype)
        readable = e.dtype in READABLE and problem is None
        return _Kind(dtype, swap, nbytes, problem, TensorInfo(dtype, e.shape) if readable else None)

    def _size_error(self, key: bytes, e: Entry, kind: _Kind) -> DataLossError:
        if e.dtype == DT_STRING:
            return DataLossError(f"{self._where}: entry {key!r}: {e.size} bytes cannot hold {kind.nbytes - 4} strings")
        return DataLossError(
            f"{self._where}: entry {key!r}: shape {e.shape} of {kind.dtype} needs {kind.nbytes} bytes "
            f"but the entry records {e.size}"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"bundle: reader of {self.prefix!r} is closed")

    def keys(self) -> list[str]:
        # docstring inherited
        return list(self._keys)

    def _get(self, key: str) -> _Stored:
        self._check_open()
        try:
            return self._entries[key]
        except KeyError:
            raise self._unknown(key) from None

    def _unknown(self, key: str) -> CheckpointKeyError:
        return CheckpointKeyError(f"bundle: checkpoint {self.prefix!r} has no tensor {key!r}")

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        s = self._get(key)
        if s.info is None:
            self._readable(key, s)
        assert s.info is not None  # _readable raised otherwise
        return s.info

    def _readable(self, key: str, s: _Stored) -> None:
        if s.entry.dtype not in READABLE:
            dtype_from_tf(s.entry.dtype, False, f"{self._where}: tensor {key!r}")
        if s.problem is not None:
            raise InvalidCheckpointError(f"{self._where}: tensor {key!r} {s.problem}")

    def _data_path(self, shard_id: int) -> str:
        path = self._paths.get(shard_id)
        if path is None:
            path = self._paths[shard_id] = data_filename(self.prefix, shard_id, self._num_shards)
        return path

    def _check_range(self, key: str, e: Entry) -> str:
        """The data file of ``e``, after checking the entry lies inside it (before any allocation)."""
        size = self._shard_size(e.shard_id)
        if size is None or e.offset + e.size > size:
            raise self._range_error(key, e, size)
        return self._data_path(e.shard_id)

    def _shard_size(self, shard_id: int) -> int | None:
        """The size of data file ``shard_id`` (``None``: missing), asked of the store once."""
        # Sizes are only ever added, and dict reads are atomic, so the lock guards the fill alone.
        size = self._sizes.get(shard_id)
        if size is None:
            size = self._files.size(self._data_path(shard_id))
            if size is not None:
                with self._size_lock:
                    self._sizes[shard_id] = size
        return size

    def _range_error(self, key: str, e: Entry, size: int | None) -> DataLossError:
        path = self._data_path(e.shard_id)
        if size is None:
            return DataLossError(f"bundle: data file {path!r} of {self.prefix!r} is missing (needed by {key!r})")
        return DataLossError(
            f"bundle: tensor {key!r} at offset {e.offset} (+{e.size} bytes) lies beyond the end of "
            f"{path!r} ({size} bytes): the file is truncated"
        )

    def _prepare(self, key: str, s: _Stored, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if out is None:
            return np.empty(s.entry.shape, dtype=s.dtype)
        if out.dtype != s.dtype:
            raise DTypeMismatchError(f"bundle: cannot read {key!r} ({s.dtype}) into an array of dtype {out.dtype}")
        if tuple(out.shape) != s.entry.shape:
            raise ShapeMismatchError(
                f"bundle: cannot read {key!r} of shape {s.entry.shape} into an array of shape {out.shape}"
            )
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ShapeMismatchError(f"bundle: the destination for {key!r} must be C-contiguous and writeable")
        return out

    def _verify(
        self, key: str, s: _Stored, view: memoryview, out: np.ndarray[Any, Any], crc: int | None = None
    ) -> None:
        """Check the tensor's CRC-32C (``crc``, when the caller computed it piece by piece) and fix byte order."""
        if (crc32c(view) if crc is None else crc) != unmask(s.entry.crc32c):
            raise DataLossError(
                f"bundle: CRC-32C mismatch for tensor {key!r} in {self._data_path(s.entry.shard_id)!r} at offset "
                f"{s.entry.offset} ({s.entry.size} bytes): the data is corrupted"
            )
        if s.swap:
            out.reshape(-1).view(f"u{s.dtype.itemsize}").byteswap(inplace=True)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        s = self._get(key)
        self._readable(key, s)
        if s.entry.slices:
            full = TensorSlice.full(s.entry.shape)
            return self._read_part(key, s, full, self._pieces(key, s), out)
        return self._read_plain(key, s, out)

    def _read_plain(self, key: str, s: _Stored, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        e = s.entry
        path = self._check_range(key, e)
        if e.dtype == DT_STRING:
            buf = bytearray(e.size)
            if e.size:
                self._fill(path, [(e.offset, memoryview(buf))])
            return decode_strings(
                bytes(buf), e.shape, e.crc32c, s.dtype.byteorder == ">", f"bundle: tensor {key!r} in {path!r}"
            )
        dest = self._prepare(key, s, out)
        view = byte_view(dest)
        if len(view):
            self._fill(path, [(e.offset, view)])
        self._verify(key, s, view, dest)
        return dest

    def _fill(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        try:
            self._files.read_ranges(path, ranges)
        except CheckpointNotFoundError as exc:
            # The index names this file, so its absence is damage, not a missing checkpoint.
            raise DataLossError(f"bundle: data file {path!r} of {self.prefix!r} is missing") from exc

    def _pieces(self, key: str, s: _Stored) -> list[tuple[TensorSlice, _Stored]]:
        """The stored slices of a partitioned tensor, each validated (bounds, entry, shape, range in its file).

        Validation comes before anything is allocated, so an index claiming a
        huge partitioned tensor cannot trigger a huge allocation.
        """
        shape = s.entry.shape
        out: list[tuple[TensorSlice, _Stored]] = []
        for extents in s.entry.slices:
            if len(extents) != len(shape):
                raise DataLossError(f"{self._where}: slice {extents} of {key!r} does not match its rank {len(shape)}")
            offset: list[int] = []
            lengths: list[int] = []
            for (start, length), dim in zip(extents, shape, strict=False):
                stop = dim if length < 0 else start + length
                if start < 0 or stop > dim or (length >= 0 and start > stop):
                    raise DataLossError(f"{self._where}: slice {extents} lies outside {key!r} of shape {shape}")
                offset.append(start if length >= 0 else 0)
                lengths.append(stop - offset[-1])
            piece = self._slices.get(encode_slice_key(s.name, list(extents)))
            if piece is None:
                raise DataLossError(f"{self._where}: slice {extents} of {key!r} has no entry")
            self._readable(key, piece)
            want = tuple(lengths)
            if piece.entry.shape != want or piece.entry.dtype != s.entry.dtype:
                raise DataLossError(
                    f"{self._where}: slice {extents} of {key!r} is stored as {piece.entry.shape}, expected {want}"
                )
            self._check_range(key, piece.entry)
            out.append((TensorSlice(shape, tuple(offset), want), piece))
        return out

    def read_slice(
        self,
        key: str,
        offset: Sequence[int],
        shape: Sequence[int],
        out: np.ndarray[Any, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        """Read part of a tensor, fetching only the bytes that overlap it (see :meth:`CheckpointReader.read_slice`).

        Stored pieces (the slices of a partitioned tensor, or the whole tensor)
        that lie entirely inside the part are read whole and checked against
        their CRC-32C. Of a piece that only overlaps the part, only the
        overlapping bytes are read, which its checksum cannot cover: a part cut
        along the first dimension is one byte range per piece; a part that also
        cuts later dimensions reads one range per run of contiguous bytes when
        the runs are long, and otherwise the piece's rows that overlap it. A
        store without ranged reads gets whole pieces.
        """
        s = self._get(key)
        self._readable(key, s)
        part = TensorSlice(s.entry.shape, tuple(offset), tuple(shape))
        pieces = self._pieces(key, s) if s.entry.slices else [(TensorSlice.full(s.entry.shape), s)]
        return self._read_part(key, s, part, pieces, out)

    def _read_part(
        self,
        key: str,
        s: _Stored,
        part: TensorSlice,
        pieces: list[tuple[TensorSlice, _Stored]],
        out: np.ndarray[Any, Any] | None,
    ) -> np.ndarray[Any, Any]:
        """Fill the part ``part`` of tensor ``key`` from the overlapping ``pieces``."""
        overlaps = [(inter, where, piece) for where, piece in pieces if (inter := where.intersect(part)) is not None]
        covered = sum(inter.size for inter, _, _ in overlaps)
        if covered < part.size:
            what = f"its {part.size} elements" if part.is_full else f"the {part.size} elements of {part.spec!r}"
            raise DataLossError(
                f"{self._where}: the slices of {key!r} hold {covered} of {what}; the tensor is incomplete"
            )
        if s.dtype.kind == "O":
            dest = np.empty(part.shape, dtype=object)
            for inter, where, piece in overlaps:
                dest[inter.within(part)] = self._read_plain(key, piece, None)[inter.within(where)]
            return dest
        dest = self._prepare_part(key, s, part.shape, out)
        ranged = self._files.capabilities.ranged_reads
        jobs: dict[int, list[tuple[int, memoryview]]] = {}
        finish: list[Callable[[], None]] = []
        for inter, where, piece in overlaps:
            e = piece.entry
            path_ranges = jobs.setdefault(e.shard_id, [])
            target = dest[inter.within(part)]
            whole = inter == where or not ranged
            if whole:
                direct = inter == where and target.flags.c_contiguous
                buf = target if direct else np.empty(where.shape, dtype=s.dtype)
                view = byte_view(buf)
                if len(view):
                    path_ranges.append((e.offset, view))
                finish.append(partial(self._finish_whole, key, piece, view, buf, target, inter.within(where)))
                continue
            local = inter.within(where)
            runs = _runs(where.shape, local, s.dtype.itemsize)
            if runs is not None:
                starts, run_bytes = runs
                buf = target if target.flags.c_contiguous else np.empty(inter.shape, dtype=s.dtype)
                view = byte_view(buf)
                path_ranges.extend(
                    (e.offset + int(b), view[i * run_bytes : (i + 1) * run_bytes]) for i, b in enumerate(starts)
                )
                finish.append(partial(_finish_part, piece.swap, buf, target, None))
            else:
                # Short runs: the rows of the piece that overlap, whole, then cut.
                rows = local[0] if local else slice(0, 1)
                row_bytes = e.size // where.shape[0] if where.shape and where.shape[0] else e.size
                buf = np.empty((rows.stop - rows.start, *where.shape[1:]), dtype=s.dtype)
                view = byte_view(buf)
                path_ranges.append((e.offset + rows.start * row_bytes, view))
                finish.append(partial(_finish_part, piece.swap, buf, target, (slice(None), *local[1:])))
        self._run_jobs({sid: r for sid, r in jobs.items() if r})
        for step in finish:
            step()
        return dest

    def _finish_whole(
        self,
        key: str,
        piece: _Stored,
        view: memoryview,
        buf: np.ndarray[Any, Any],
        target: np.ndarray[Any, Any],
        index: tuple[slice, ...],
    ) -> None:
        self._verify(key, piece, view, buf)
        if buf is not target:
            target[...] = buf[index]

    def _prepare_part(
        self, key: str, s: _Stored, shape: tuple[int, ...], out: np.ndarray[Any, Any] | None
    ) -> np.ndarray[Any, Any]:
        if out is None:
            return np.empty(shape, dtype=s.dtype)
        if out.dtype != s.dtype:
            raise DTypeMismatchError(f"bundle: cannot read {key!r} ({s.dtype}) into an array of dtype {out.dtype}")
        if tuple(out.shape) != shape:
            raise ShapeMismatchError(
                f"bundle: cannot read a part of {key!r} of shape {shape} into an array of shape {out.shape}"
            )
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ShapeMismatchError(f"bundle: the destination for {key!r} must be C-contiguous and writeable")
        return out

    def _run_jobs(self, jobs: dict[int, list[tuple[int, memoryview]]]) -> None:
        """Fill byte ranges of several data files, files in parallel where the store reads ranges."""

        def run(shard_id: int) -> None:
            self._fill(self._data_path(shard_id), jobs[shard_id])

        if len(jobs) > 1 and self._files.capabilities.ranged_reads:
            with ThreadPoolExecutor(max_workers=min(8, len(jobs)), thread_name_prefix="trackpoint-read") as ex:
                for f in [ex.submit(run, sid) for sid in jobs]:
                    f.result()
        else:
            for sid in jobs:
                run(sid)

    def read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        """Read several tensors: adjacent ranges are read with one vectored call, data files in parallel."""
        self._check_open()
        entries = self._entries
        # The sizes of the data files the tensors lie in, asked of the store once each.
        shard_ids = {s.entry.shard_id for s in map(entries.get, [key for key, _ in requests]) if s is not None}
        sizes = {sid: self._shard_size(sid) for sid in shard_ids}
        results: list[np.ndarray[Any, Any] | None] = []
        # Slices of partitioned tensors and strings, read one by one afterwards: (position, key, out).
        single: list[tuple[int, str, np.ndarray[Any, Any] | None]] = []
        by_shard: dict[int, list[tuple[str, _Stored, np.ndarray[Any, Any], memoryview]]] = {}
        with _gc.paused():  # bookkeeping only, no I/O (see trackpoint._gc)
            for key, out in requests:
                s = entries.get(key)
                if s is None:
                    raise self._unknown(key)
                if s.info is None:
                    self._readable(key, s)  # raises why it cannot be read
                e = s.entry
                if e.slices or e.dtype == DT_STRING:
                    single.append((len(results), key, out))
                    results.append(None)
                    continue
                # Range check before allocating, so an implausible entry never allocates.
                size = sizes[e.shard_id]
                if size is None or e.offset + e.size > size:
                    raise self._range_error(key, e, size)
                if out is None:
                    dest = np.empty(e.shape, dtype=s.dtype)
                elif (out.dtype is s.dtype or out.dtype == s.dtype) and out.shape == e.shape:
                    flags = out.flags
                    dest = out if flags.c_contiguous and flags.writeable else self._prepare(key, s, out)
                else:
                    dest = self._prepare(key, s, out)  # raises the mismatch
                results.append(dest)
                by_shard.setdefault(e.shard_id, []).append((key, s, dest, byte_view(dest)))
        for position, key, out in single:
            results[position] = self.read(key, out)

        chunk = self._files.read_chunk_bytes

        def run(shard_id: int) -> None:
            group = by_shard[shard_id]
            path = self._data_path(shard_id)
            if chunk is None:
                self._fill(path, [(g[1].entry.offset, g[3]) for g in group if len(g[3])])
                for key, s, dest, view in group:
                    self._verify(key, s, view, dest)
            else:
                self._fill_verify(path, group, chunk)

        if len(by_shard) > 1 and self._files.capabilities.ranged_reads:
            with ThreadPoolExecutor(max_workers=min(8, len(by_shard)), thread_name_prefix="trackpoint-read") as ex:
                for f in [ex.submit(run, sid) for sid in by_shard]:
                    f.result()
        else:
            for sid in by_shard:
                run(sid)
        return cast("list[np.ndarray[Any, Any]]", results)  # every position is filled by now

    def _fill_verify(
        self, path: str, group: list[tuple[str, _Stored, np.ndarray[Any, Any], memoryview]], chunk: int
    ) -> None:
        """Read ``group`` from ``path`` in calls of about ``chunk`` bytes, checking each tensor as it completes.

        Checked after a whole file was read, the checksums were a serial tail after the I/O (about a quarter
        of a cold 1 GiB restore); checked as they arrive, they overlap the kernel's readahead.
        """
        ready: list[tuple[str, _Stored, np.ndarray[Any, Any], memoryview]] = []

        def flush() -> None:
            if ready:
                self._fill(path, [(g[1].entry.offset, g[3]) for g in ready if len(g[3])])
            for key, s, dest, view in ready:
                self._verify(key, s, view, dest)
            ready.clear()

        held = 0
        for item in sorted(group, key=lambda g: g[1].entry.offset):
            key, s, dest, view = item
            if len(view) > chunk:
                flush()
                held = crc = 0
                for start in range(0, len(view), chunk):
                    piece = view[start : start + chunk]
                    self._fill(path, [(s.entry.offset + start, piece)])
                    crc = extend(crc, piece)
                self._verify(key, s, view, dest, crc)
                continue
            if held + len(view) > chunk:
                flush()
                held = 0
            ready.append(item)
            held += len(view)
        flush()

    def close(self) -> None:
        # docstring inherited
        self._closed = True
