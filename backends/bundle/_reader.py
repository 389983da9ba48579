"""Reading a committed bundle: range checks, slice assembly, and reads of many tensors at once.

The index is read and parsed once (:mod:`._index`); every entry is checked
before anything large is allocated. Data is read straight into the destination
arrays, with adjacent ranges of one data file coalesced and data files read in
parallel where the store offers ranged reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, Final, NamedTuple, NoReturn, cast

import numpy as np

from trackpoint import _gc
from trackpoint.backends.bundle._codec import Entry, byte_view, decode_strings
from trackpoint.backends.bundle._crc import crc32c, crc32c_each, extend, unmask, unmask_each
from trackpoint.backends.bundle._dtypes import DT_STRING, READABLE, dtype_from_tf
from trackpoint.backends.bundle._index import BundleIndex, Kind
from trackpoint.backends.bundle._names import data_filename, index_name
from trackpoint.backends.bundle._ordered_code import encode_slice_key
from trackpoint.backends.bundle._parts import byte_runs, finish_part
from trackpoint.backends.bundle._replacement import OpenedIndex
from trackpoint.backends.stores import FileLayer, FileSource
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


class _Stored(NamedTuple):
    """One entry as the reads of single tensors use it: built when asked for, from a row of the index."""

    entry: Entry
    kind: Kind
    #: The key as stored (slices of a partitioned tensor are found by it).
    name: bytes

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.kind.dtype

    @property
    def swap(self) -> bool:
        return self.kind.swap


#: A tensor larger than the store's read size is read in calls of this many times it. Measured on cold
#: restores from a virtio disk (docs/performance.md, bundle backend): with LocalFiles' 4 MiB, 16 MiB calls
#: for large tensors took 0.95x the time of 4 MiB ones on 1 GiB, while groups of small tensors were
#: quickest in calls of 4 MiB (8 MiB: 1.16x, 16 MiB: 1.5x on 20,000 tensors of 1-16 KiB).
_LARGE_CALLS: Final = 4
_SIZES_AT_ONCE: Final = 16  # up to this many data files, the first size asked asks all (one round trip)


class _Batch(NamedTuple):
    """The requests of one :meth:`BundleReader.read_many`, located: per request, where its bytes are."""

    requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]
    #: The destination arrays (already checked), and their entries' data file, offset, size, unmasked
    #: CRC-32C and whether the bytes must be swapped after reading.
    results: list[np.ndarray[Any, Any]]
    shard_id: np.ndarray[Any, Any]
    offset: np.ndarray[Any, Any]
    size: np.ndarray[Any, Any]
    expected: np.ndarray[Any, Any]
    swap: np.ndarray[Any, Any]


class BundleReader(CheckpointReader):
    """A parsed ``.index`` and lazy access to the data files."""

    @_gc.paused()
    def __init__(self, files: FileLayer, prefix: str, index_bytes: bytes) -> None:
        self.prefix = prefix
        self._files = files
        self._where = index_name(prefix)
        self._closed = False
        self._index = BundleIndex(index_bytes, self._where)
        self._opened = OpenedIndex(files, self._where, index_bytes)
        self._num_shards = self._index.num_shards
        self._rows = self._index.rows
        self._kinds = self._index.kinds
        self._kind = self._index.kind
        #: Each row's kind, for lookups one key at a time (indexing the array makes a numpy integer).
        self._row_kinds: list[Kind] = [self._kinds[k] for k in self._kind.tolist()]
        self._keys = sorted(self._rows)
        self._sizes: dict[int, int] = {}
        self._paths: dict[int, str] = {}
        self._size_lock = threading.Lock()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"bundle: reader of {self.prefix!r} is closed")

    def keys(self) -> list[str]:
        # docstring inherited
        return list(self._keys)

    def _row(self, key: str) -> int:
        self._check_open()
        row = self._rows.get(key)
        if row is None:
            raise self._unknown(key)
        return row

    def _get(self, key: str) -> _Stored:
        return self._stored(self._row(key), key.encode("utf-8", "surrogateescape"))

    def _stored(self, row: int, name: bytes) -> _Stored:
        return _Stored(self._index.entry(row), self._row_kinds[row], name)

    def _unknown(self, key: str) -> CheckpointKeyError:
        return CheckpointKeyError(f"bundle: checkpoint {self.prefix!r} has no tensor {key!r}")

    def info(self, key: str) -> TensorInfo:
        # docstring inherited
        # Asked once per tensor of a restore (10^5 times): the common case without a call of its own.
        row = self._rows.get(key)
        if row is None or self._closed:
            row = self._row(key)  # raises
        kind = self._row_kinds[row]
        info = kind.info
        if info is None:
            self._readable(key, kind)
        assert info is not None  # _readable raised otherwise
        return info

    def _readable(self, key: str, kind: Kind) -> None:
        if kind.tf_dtype not in READABLE:
            dtype_from_tf(kind.tf_dtype, False, f"{self._where}: tensor {key!r}")
        if kind.problem is not None:
            raise InvalidCheckpointError(f"{self._where}: tensor {key!r} {kind.problem}")

    def _data_path(self, shard_id: int) -> str:
        path = self._paths.get(shard_id)
        if path is None:
            path = self._paths[shard_id] = data_filename(self.prefix, shard_id, self._num_shards)
        return path

    def _check_range(self, key: str, e: Entry) -> str:
        """The data file of ``e``, after checking the entry lies inside it (before any allocation)."""
        size = self._shard_size(e.shard_id)
        if size is None or e.offset + e.size > size:
            raise self._range_error(key, e.shard_id, e.offset, e.size, size)
        return self._data_path(e.shard_id)

    def _shard_size(self, shard_id: int) -> int | None:
        """The size of data file ``shard_id`` (``None``: missing), asked of the store once; of a few, all at once."""
        size = self._sizes.get(shard_id)
        if size is not None:
            return size
        n = self._num_shards  # a restore reads the object graph, then every data file
        ids = list(range(n)) if shard_id < n <= _SIZES_AT_ONCE else [shard_id]
        return self._shard_sizes(ids)[ids.index(shard_id)]

    def _shard_sizes(self, shard_ids: list[int]) -> list[int | None]:
        """The sizes of data files, asked of the store once each; those not known yet asked together."""
        sizes = self._sizes  # only ever added to, and dict reads are atomic: the lock guards the fill alone
        unknown = [sid for sid in shard_ids if sid not in sizes]
        if unknown:
            found = self._files.sizes([self._data_path(sid) for sid in unknown])
            with self._size_lock:
                sizes.update((sid, n) for sid, n in zip(unknown, found, strict=True) if n is not None)
        return [sizes.get(sid) for sid in shard_ids]

    def _range_error(self, key: str, shard_id: int, offset: int, nbytes: int, size: int | None) -> DataLossError:
        path = self._data_path(shard_id)
        if size is None:
            return DataLossError(f"bundle: data file {path!r} of {self.prefix!r} is missing (needed by {key!r})")
        return DataLossError(
            f"bundle: tensor {key!r} at offset {offset} (+{nbytes} bytes) lies beyond the end of "
            f"{path!r} ({size} bytes): the file is truncated"
        )

    def _prepare(self, key: str, kind: Kind, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if out is None:
            return np.empty(kind.shape, dtype=kind.dtype)
        if out.dtype != kind.dtype:
            raise DTypeMismatchError(f"bundle: cannot read {key!r} ({kind.dtype}) into an array of dtype {out.dtype}")
        if tuple(out.shape) != kind.shape:
            raise ShapeMismatchError(
                f"bundle: cannot read {key!r} of shape {kind.shape} into an array of shape {out.shape}"
            )
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ShapeMismatchError(f"bundle: the destination for {key!r} must be C-contiguous and writeable")
        return out

    def _raise_if_replaced(self, exc: DataLossError, what: str) -> None:
        """Raise the error saying the checkpoint was replaced, if it was: a read of ``what`` failed with ``exc``."""
        replaced = self._opened.replaced_error(self.prefix, what)
        if replaced is not None:
            raise replaced from exc

    def _crc_error(self, key: str, shard_id: int, offset: int, size: int) -> DataLossError:
        return DataLossError(
            f"bundle: CRC-32C mismatch for tensor {key!r} in {self._data_path(shard_id)!r} at offset "
            f"{offset} ({size} bytes): the data is corrupted"
        )

    def _verify(
        self, key: str, s: _Stored, view: memoryview, out: np.ndarray[Any, Any], crc: int | None = None
    ) -> None:
        """Check the tensor's CRC-32C (``crc``, when the caller computed it piece by piece) and fix byte order."""
        e = s.entry
        if (crc32c(view) if crc is None else crc) != unmask(e.crc32c):
            raise self._crc_error(key, e.shard_id, e.offset, e.size)
        if s.swap:
            out.reshape(-1).view(f"u{s.dtype.itemsize}").byteswap(inplace=True)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        # docstring inherited
        try:
            return self._read(key, out)
        except DataLossError as exc:
            self._raise_if_replaced(exc, f"tensor {key!r}")
            raise

    def _read(self, key: str, out: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        s = self._get(key)
        self._readable(key, s.kind)
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
        dest = self._prepare(key, s.kind, out)
        view = byte_view(dest)
        if len(view):
            self._fill(path, [(e.offset, view)])
        self._verify(key, s, view, dest)
        return dest

    @contextmanager
    def _source(self, path: str) -> Iterator[FileSource]:
        """The data file ``path`` open for reading; its absence (at open or at a read) is damage."""
        try:
            with closing(self._files.open_source(path)) as source:
                yield source
        except CheckpointNotFoundError as exc:
            # The index names this file, so its absence is damage, not a missing checkpoint.
            raise DataLossError(f"bundle: data file {path!r} of {self.prefix!r} is missing") from exc

    def _fill(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        with self._source(path) as source:
            source.read_ranges(ranges)

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
            name = encode_slice_key(s.name, list(extents))
            row = self._index.pieces.get(name)
            if row is None:
                raise DataLossError(f"{self._where}: slice {extents} of {key!r} has no entry")
            piece = self._stored(row, name)
            self._readable(key, piece.kind)
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
        self._readable(key, s.kind)
        part = TensorSlice(s.entry.shape, tuple(offset), tuple(shape))
        try:
            # The pieces' data files are looked up here: one missing may be one the checkpoint lost when replaced.
            pieces = self._pieces(key, s) if s.entry.slices else [(TensorSlice.full(s.entry.shape), s)]
            return self._read_part(key, s, part, pieces, out)
        except DataLossError as exc:
            self._raise_if_replaced(exc, f"tensor {key!r}")
            raise

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
            target = dest[inter.within(part)] if dest.ndim else dest[...]  # dest[()] of 0-d is a copy
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
            runs = byte_runs(where.shape, local, s.dtype.itemsize)
            if runs is not None:
                starts, run_bytes = runs
                buf = target if target.flags.c_contiguous else np.empty(inter.shape, dtype=s.dtype)
                view = byte_view(buf)
                path_ranges.extend(
                    (e.offset + int(b), view[i * run_bytes : (i + 1) * run_bytes]) for i, b in enumerate(starts)
                )
                finish.append(partial(finish_part, piece.swap, buf, target, None))
            else:
                # Short runs: the rows of the piece that overlap, whole, then cut.
                rows = local[0] if local else slice(0, 1)
                row_bytes = e.size // where.shape[0] if where.shape and where.shape[0] else e.size
                buf = np.empty((rows.stop - rows.start, *where.shape[1:]), dtype=s.dtype)
                view = byte_view(buf)
                path_ranges.append((e.offset + rows.start * row_bytes, view))
                finish.append(partial(finish_part, piece.swap, buf, target, (slice(None), *local[1:])))
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
        """Read several tensors, checked and located together; each data file in order of offset.

        A store with a read size (:attr:`FileLayer.read_chunk_bytes`) is asked for
        about that many bytes per call (adjacent ranges, which it coalesces; a
        larger tensor in calls of four times it), and the tensors of each call
        are checked against their CRC-32C as soon as it returns; other stores
        get all of a file's ranges in one call. Data files are read in parallel
        where the store reads ranges.
        """
        try:
            return self._read_many(requests)
        except DataLossError as exc:
            self._raise_if_replaced(exc, "the tensors asked for")
            raise

    def _read_many(self, requests: Sequence[tuple[str, np.ndarray[Any, Any] | None]]) -> list[np.ndarray[Any, Any]]:
        self._check_open()
        if not requests:
            return []
        ix = self._index
        kinds = self._kinds
        if not len(ix.kind):
            raise self._unknown(requests[0][0])
        with _gc.paused():  # bookkeeping only, no I/O (see trackpoint._gc)
            rows = np.fromiter(map(self._rows.get, map(itemgetter(0), requests), repeat(-1)), np.int64, len(requests))
            kind = self._kind[rows]
            # Read one by one afterwards: the slices of partitioned tensors, strings and the unreadable.
            direct = ix.direct[kind] & ~ix.sliced[rows]
            shard_id = ix.shard_id[rows]
            offset = ix.offset[rows]
            size = ix.size[rows]
            # By data file, then offset.
            at = np.flatnonzero(direct)
            at = at[np.lexsort((offset[at], shard_id[at]))]
            starts = np.flatnonzero(np.diff(shard_id[at])) + 1  # where the next data file's requests start
            groups = np.split(at, starts) if len(at) else []
            # The data files' sizes, asked of the store once each; a missing file has -1 bytes.
            shards = shard_id[at[np.r_[0, starts]]] if len(at) else shard_id[:0]
            sizes = self._shard_sizes(shards.tolist())
            ends = np.array([-1 if n is None else n for n in sizes] or [-1], np.int64)
            ends = ends[np.searchsorted(shards, shard_id).clip(max=len(ends) - 1)]
            unknown = rows < 0
            bad = unknown | (ix.unreadable[kind]) | (direct & (offset > ends - size))
            results: list[np.ndarray[Any, Any] | None] = []
            for (key, out), k, is_direct, is_bad in zip(
                requests, kind.tolist(), direct.tolist(), bad.tolist(), strict=True
            ):
                if is_bad:
                    raise self._request_error(key, shard_id[len(results)], offset[len(results)], size[len(results)])
                if not is_direct:
                    results.append(None)
                    continue
                kd = kinds[k]
                # Checked before anything is read or allocated, so an implausible entry never allocates.
                if out is None:
                    out = np.empty(kd.shape, dtype=kd.dtype)
                elif not ((out.dtype is kd.dtype or out.dtype == kd.dtype) and out.shape == kd.shape):
                    self._prepare(key, kd, out)  # raises the mismatch
                else:
                    flags = out.flags
                    if not (flags.c_contiguous and flags.writeable):
                        self._prepare(key, kd, out)
                results.append(out)
            expected = unmask_each(ix.crc32c[rows])
            swap = ix.swap[kind]
        for i in np.flatnonzero(~direct).tolist():
            results[i] = self._read(requests[i][0], requests[i][1])
        batch = _Batch(requests, cast("list[np.ndarray[Any, Any]]", results), shard_id, offset, size, expected, swap)

        if len(groups) > 1 and self._files.capabilities.ranged_reads:
            with ThreadPoolExecutor(max_workers=min(8, len(groups)), thread_name_prefix="trackpoint-read") as ex:
                for f in [ex.submit(self._read_file, batch, g) for g in groups]:
                    f.result()
        else:
            for g in groups:
                self._read_file(batch, g)
        return batch.results  # every position is filled by now

    def _request_error(self, key: str, shard_id: int, offset: int, size: int) -> CheckpointError:
        """Why the request for ``key`` cannot be read, found unreadable by :meth:`read_many`."""
        row = self._rows.get(key)
        if row is None:
            return self._unknown(key)
        self._readable(key, self._row_kinds[row])  # raises if the tensor is unreadable
        return self._range_error(key, int(shard_id), int(offset), int(size), self._shard_size(int(shard_id)))

    def _read_file(self, batch: _Batch, group: np.ndarray[Any, Any]) -> None:
        """Read and check the requests at ``group`` of ``batch``: one data file, by offset."""
        sizes = batch.size[group]
        chunk = self._files.read_chunk_bytes
        # Calls of about ``chunk`` bytes: consecutive tensors while they fit; a larger tensor alone,
        # in calls of _LARGE_CALLS times that.
        bounds = np.cumsum(sizes)
        start = 0
        # All calls through one open file: the store keeps its readahead going from one call to the next.
        with self._source(self._data_path(int(batch.shard_id[group[0]]))) as source:
            while start < len(group):
                if chunk is None:
                    stop = len(group)
                elif sizes[start] > chunk:
                    self._read_large(batch, int(group[start]), source, chunk * _LARGE_CALLS)
                    start += 1
                    continue
                else:
                    stop = int(np.searchsorted(bounds, bounds[start] - sizes[start] + chunk, side="right"))
                self._read_together(batch, group[start:stop], source)
                start = stop

    def _read_together(self, batch: _Batch, at: np.ndarray[Any, Any], source: FileSource) -> None:
        """Read the tensors at positions ``at`` (of one data file) with one call, then check them."""
        results = batch.results
        views = [byte_view(results[i]) for i in at.tolist()]
        ranges = list(zip(batch.offset[at].tolist(), views, strict=True))
        if not batch.size[at].all():
            ranges = [r for r in ranges if len(r[1])]
        if ranges:
            source.read_ranges(ranges)
        wrong = np.flatnonzero(crc32c_each(views) != batch.expected[at])
        if len(wrong):
            self._raise_crc(batch, int(at[wrong[0]]))
        for i in at[batch.swap[at]].tolist():
            out = results[i]
            out.reshape(-1).view(f"u{out.dtype.itemsize}").byteswap(inplace=True)

    def _read_large(self, batch: _Batch, i: int, source: FileSource, chunk: int) -> None:
        """Read a tensor in calls of ``chunk`` bytes, extending its CRC-32C as they return.

        Checked after a whole file was read, the checksums were a serial tail after the I/O (about a quarter
        of a cold 1 GiB restore); checked as they arrive, they overlap the kernel's readahead.
        """
        out = batch.results[i]
        view = byte_view(out)
        offset = int(batch.offset[i])
        crc = 0
        for start in range(0, len(view), chunk):
            piece = view[start : start + chunk]
            source.read_ranges([(offset + start, piece)])
            crc = extend(crc, piece)
        if crc != batch.expected[i]:
            self._raise_crc(batch, i)
        if batch.swap[i]:
            out.reshape(-1).view(f"u{out.dtype.itemsize}").byteswap(inplace=True)

    def _raise_crc(self, batch: _Batch, i: int) -> NoReturn:
        raise self._crc_error(batch.requests[i][0], int(batch.shard_id[i]), int(batch.offset[i]), int(batch.size[i]))

    def close(self) -> None:
        # docstring inherited
        self._closed = True
