"""Writing bundle data: one shard's data file, its index entries, and the manifest codec.

A shard is streamed into one data file from the arrays' own buffers (small
tensors gathered, large ones written and checksummed in cache-sized chunks).
What the shard produced travels to ``commit`` as a :class:`ShardResult` whose
payload is the shard's index entries as they appear in the merged index, so
merging reads no data back (TensorFlow's ``MergeV2Checkpoints`` does the same).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import numpy as np

from trackpoint import _gc
from trackpoint._varint import ONE_BYTE, decode_varint, encode_varint
from trackpoint.backends.bundle._codec import (
    byte_view,
    decode_entry,
    encode_entry,
    encode_header,
    encode_sliced_entry,
    encode_strings,
)
from trackpoint.backends.bundle._crc import crc32c, extend, mask
from trackpoint.backends.bundle._dtypes import DT_STRING, tf_from_dtype
from trackpoint.backends.bundle._ordered_code import decode_slice_key, encode_slice_key
from trackpoint.backends.bundle._sstable import build_table
from trackpoint.backends.stores import FileLayer, FileSink
from trackpoint.errors import ConcurrentModificationError, InvalidCheckpointError, TrackableError
from trackpoint.storage import ShardResult, ShardSpec, TensorSlice, WriteItem, shard_progress
from trackpoint.storage import check_coverage as _check_coverage

#: Tensors below this size are gathered and handed to the sink together, about
#: ``_BATCH`` bytes at a time, so a shard of many small tensors costs few write calls.
_SMALL: Final = 64 * 1024
_BATCH: Final = 1024 * 1024
#: Large tensors are checksummed and written in chunks that are still cache-warm.
_CHUNK: Final = 4 * 1024 * 1024
#: Shard manifests of 0.1 (no data file count) and of 0.2 (the count the shard's file name uses).
_PAYLOAD_MAGIC_V1: Final = b"TPBUNDLE1\n"
_PAYLOAD_MAGIC: Final = b"TPBUNDLE2\n"


class Row(NamedTuple):
    """Where one tensor (or one slice of a tensor) landed in its shard's data file."""

    key: bytes
    dtype: int
    shape: tuple[int, ...]
    offset: int
    size: int
    crc: int
    #: For a slice: the tensor's own key (``key`` is then the slice key) and the slice.
    full: bytes = b""
    part: TensorSlice | None = None


def slice_extents(part: TensorSlice) -> list[tuple[int, int]]:
    """The ``(start, length)`` extents TensorFlow records for a slice given as ``SaveSliceInfo.spec``.

    Every dimension is explicit, even a whole one: TensorFlow parses the
    ``offset,length`` pairs of a spec as they are, and the slice key and the
    entry's ``slices`` carry them so.
    """
    return list(zip(part.offset, part.shape, strict=True))


def extents_slice(full_shape: tuple[int, ...], extents: Sequence[tuple[int, int]]) -> TensorSlice:
    """The :class:`TensorSlice` of stored extents (length -1 is the whole dimension)."""
    offset = tuple(0 if n < 0 else s for s, n in extents)
    shape = tuple(d if n < 0 else n for (_, n), d in zip(extents, full_shape, strict=True))
    return TensorSlice(full_shape, offset, shape)


class WrittenShard(NamedTuple):
    """A written shard: its one-shard index (the piece table, ``None`` if not built) and its manifest for ``commit``."""

    piece_table: bytes | None
    result: ShardResult


def _little_endian(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Bundles written here are little-endian; only foreign-order arrays are converted.
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _key_bytes(key: object) -> bytes:
    if not isinstance(key, str) or not key:
        raise TrackableError(f"bundle: tensor keys must be non-empty strings, got {key!r}")
    out = key.encode("utf-8", "surrogateescape")
    if out[0] == 0:
        # Keys starting with a NUL byte are reserved for slices of partitioned tensors.
        raise TrackableError(f"bundle: tensor key {key!r} starts with a NUL character")
    return out


class _SmallWrites:
    """Small tensors' bytes, gathered as views and written together, about ``_BATCH`` bytes at a time.

    A vectored write takes the views without a copy, so the arrays are read
    until the write: each item is reported (to ``report``) only once its bytes
    were handed to the sink.
    """

    __slots__ = ("_items", "_nbytes", "_report", "_sink", "_views")

    def __init__(self, sink: FileSink, report: Callable[..., None] | None) -> None:
        self._sink = sink
        self._report = report
        self._views: list[bytes | memoryview] = []
        self._nbytes = 0
        self._items: list[WriteItem] = []

    def add(self, data: bytes | memoryview, item: WriteItem) -> None:
        """Gather ``data``, the bytes of ``item``; write the batch once it is large enough."""
        self._views.append(data)
        self._nbytes += len(data)
        if self._report is not None:
            self._items.append(item)
        if self._nbytes >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Write what is gathered, then report its items."""
        if not self._views:
            return
        self._sink.write_many(self._views)
        self._views.clear()
        self._nbytes = 0
        if self._report is not None:
            for it in self._items:
                self._report(it.nbytes, it)  # done with it.array: an async save may release the value
            self._items.clear()


def write_data(files: FileLayer, path: str, items: Sequence[WriteItem], *, create_only: bool) -> list[Row]:
    """Stream ``items`` into the data file ``path``; return one :class:`Row` per tensor, in write order.

    Nothing is visible at ``path`` unless every tensor was written: the sink is
    aborted on any error. Errors of the sink's ``close`` (among them
    :class:`~trackpoint.errors.CheckpointExistsError` of a create-only write)
    propagate unchanged; the caller knows what a conflict means.
    """
    rows: list[Row] = []
    # Observers of the save (trackpoint.observe) see its bytes per tensor; None when nobody watches.
    report = shard_progress()
    sink = files.open_sink(path, create_only=create_only)
    try:
        small = _SmallWrites(sink, report)
        offset = 0
        for it in items:
            key = _key_bytes(it.key)
            full = b""
            part = it.slice
            if part is not None and (part.is_full or 0 in part.full_shape):
                # TensorFlow writes a slice that is the whole tensor as a plain entry.
                part = None
            if part is not None:
                if not part.size:
                    continue  # an empty slice holds nothing; the other slices cover the tensor
                full, key = key, encode_slice_key(key, slice_extents(part))
            arr = np.asarray(it.array)
            if arr.dtype.kind == "O":
                data, crc = encode_strings(arr, it.key)
                rows.append(Row(key, DT_STRING, arr.shape, offset, len(data), crc, full, part))
                small.add(data, it)
                offset += len(data)
            else:
                dt = tf_from_dtype(arr.dtype, it.key)
                arr = _little_endian(arr)
                view = byte_view(arr)
                size = len(view)
                if size < _SMALL:
                    crc = crc32c(view)
                    small.add(view, it)
                else:
                    small.flush()
                    crc = 0
                    for start in range(0, size, _CHUNK):
                        chunk = view[start : start + _CHUNK]
                        crc = extend(crc, chunk)
                        sink.write(chunk)
                    if report is not None:
                        report(it.nbytes, it)  # done with it.array: an async save may release the value
                rows.append(Row(key, dt, arr.shape, offset, size, mask(crc), full, part))
                offset += size
        small.flush()
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return rows


@_gc.paused()
def describe_shard(spec: ShardSpec, rows: list[Row], file_count: int, *, piece: bool) -> WrittenShard:
    """The piece table and manifest of a shard whose data file holds ``rows``.

    The piece table (built only with ``piece``, else ``None``) makes the
    shard a valid one-shard bundle of its own; the manifest carries the same
    entries with the shard's real ``shard_id``, as the merged index will hold
    them, and ``file_count``, the ``-of-`` count of the shard's data file name.
    """
    nbytes = max((r.offset + r.size for r in rows), default=0)
    rows = sorted(rows, key=lambda r: r.key)
    for a, b in itertools.pairwise(rows):
        if a.key == b.key:
            what = _name(a.full) + f" slice {a.part.spec!r}" if a.part is not None else _name(a.key)
            raise TrackableError(f"bundle: tensor {what} is saved twice")
    # The full-tensor entries of sliced tensors: dtype, full shape and the slices this shard holds.
    sliced: dict[bytes, list[Row]] = {}
    for r in rows:
        if r.part is not None:
            sliced.setdefault(r.full, []).append(r)
    plain = {r.key for r in rows if r.part is None} if sliced else set()
    for name, group in sliced.items():
        if name in plain:
            raise TrackableError(f"bundle: tensor {_name(name)} is saved both whole and as slices")
        if spec.num_shards == 1:
            # The shard is the whole save: its slices must tile the tensor.
            parts = [r.part for r in group if r.part is not None]
            _check_coverage(name.decode("utf-8", "replace"), parts[0].full_shape, parts, "bundle")

    def entries(shard_id: int) -> list[tuple[bytes, bytes]]:
        out = [(r.key, encode_entry(r.dtype, r.shape, shard_id, r.offset, r.size, r.crc)) for r in rows]
        if sliced:
            fulls = [(name, _full_entry(name, group, shard_id)) for name, group in sliced.items()]
            out = sorted(out + fulls)
        return out

    merged_entries = entries(spec.shard_id)
    piece_table = None
    if piece:
        # Shard 0's entries are the same bytes in the piece and in the merged index.
        piece_entries = merged_entries if spec.shard_id == 0 else entries(0)
        piece_table = build_table([(b"", encode_header(1)), *piece_entries])
    keys = tuple(k.decode("utf-8", "surrogateescape") for k, _ in merged_entries if k[:1] != b"\x00")
    return WrittenShard(piece_table, ShardResult(spec, keys, nbytes, encode_payload(merged_entries, file_count)))


def _name(key: bytes) -> str:
    return repr(key.decode("utf-8", "replace"))


def _full_entry(name: bytes, group: Sequence[Row], shard_id: int) -> bytes:
    dtypes = {r.dtype for r in group}
    shapes = {r.part.full_shape for r in group if r.part is not None}
    if len(dtypes) != 1 or len(shapes) != 1:
        raise TrackableError(f"bundle: the slices of tensor {_name(name)} differ in dtype or full shape")
    parts = sorted((r.part for r in group if r.part is not None), key=lambda p: p.offset)
    return encode_sliced_entry(dtypes.pop(), shapes.pop(), [slice_extents(p) for p in parts], shard_id)


def encode_payload(entries: Sequence[tuple[bytes, bytes]], file_count: int) -> bytes:
    """A shard manifest: a magic line, the data file count, then the index entries, length-prefixed."""
    out = bytearray(_PAYLOAD_MAGIC)
    out += encode_varint(file_count)
    for k, v in entries:
        # Keys and entries are nearly always shorter than 128 bytes: one-byte lengths, looked up.
        n = len(k)
        out += ONE_BYTE[n] if n < 0x80 else encode_varint(n)
        out += k
        n = len(v)
        out += ONE_BYTE[n] if n < 0x80 else encode_varint(n)
        out += v
    return bytes(out)


def decode_payload(payload: bytes, where: str) -> tuple[int | None, list[tuple[bytes, bytes]]]:
    """The data file count (``None`` in a 0.1 manifest) and the index entries of a shard manifest."""
    view = memoryview(payload)
    count: int | None = None
    if payload.startswith(_PAYLOAD_MAGIC):
        count, pos = decode_varint(view, len(_PAYLOAD_MAGIC), where)
    elif payload.startswith(_PAYLOAD_MAGIC_V1):
        pos = len(_PAYLOAD_MAGIC_V1)
    else:
        raise InvalidCheckpointError(f"{where}: shard manifest was not produced by the bundle backend")
    out = []
    while pos < len(payload):
        n, pos = decode_varint(view, pos, where)
        k = payload[pos : pos + n]
        pos += n
        n, pos = decode_varint(view, pos, where)
        v = payload[pos : pos + n]
        pos += n
        if pos > len(payload):
            raise InvalidCheckpointError(f"{where}: shard manifest is truncated")
        out.append((k, v))
    return count, out


def file_count(prefix: str, shards: Sequence[ShardResult]) -> int:
    """The data file count the shards' manifests agree on (0.1 manifests: the shard count).

    Raises
    ------
    ConcurrentModificationError
        The shards chose different counts: the checkpoint at ``prefix`` was
        replaced while they were being written.
    """
    counts = {decode_payload(r.payload, f"bundle: shard {r.spec.shard_id} of {prefix!r}")[0] for r in shards}
    resolved = {len(shards) if c is None else c for c in counts}
    if len(resolved) != 1:
        raise ConcurrentModificationError(
            f"bundle: the checkpoint at {prefix!r} was replaced while this save was writing its shards (they "
            f"name their data files for {sorted(resolved)} files); this save was not committed, retry it"
        )
    return resolved.pop()


def merge_index(prefix: str, shards: Sequence[ShardResult], num_shards: int) -> bytes:
    """The merged index of ``shards`` built from their manifests (no data is read).

    ``num_shards`` is the header's data file count: the number of shards, or
    more when the save names its files for a larger count (the extra files are
    empty) to keep clear of the committed checkpoint's names.
    """
    entries: list[tuple[bytes, bytes]] = []
    for r in shards:
        entries.extend(decode_payload(r.payload, f"bundle: shard {r.spec.shard_id} of {prefix!r}")[1])
    # Stable sort: equal keys (the full entries of a tensor sliced by several shards) stay in shard order.
    entries.sort(key=lambda e: e[0])
    where = f"bundle: commit of {prefix!r}"
    # Slice keys sort first (they start with a NUL byte) and name the tensors that have slices.
    sliced: set[bytes] = set()
    for k, _ in entries:
        if k[:1] != b"\x00":
            break
        sliced.add(decode_slice_key(k, where)[0])
    merged: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(entries):
        key = entries[i][0]
        j = i + 1
        while j < len(entries) and entries[j][0] == key:
            j += 1
        if key in sliced:
            merged.append((key, merge_sliced(key, [v for _, v in entries[i:j]], where)))
        elif j - i > 1:
            if key[:1] == b"\x00":
                name, extents = decode_slice_key(key, where)
                raise TrackableError(
                    f"{where}: the slice {extents} of tensor {_name(name)} was saved by more than one shard; "
                    "each element of a partitioned value must be saved by exactly one writer"
                )
            raise TrackableError(f"bundle: tensor {_name(key)} appears in two shards of {prefix!r}")
        else:
            merged.append(entries[i])
        i = j
    return build_table([(b"", encode_header(num_shards)), *merged])


def merge_sliced(name: bytes, values: Sequence[bytes], where: str) -> bytes:
    """One full-tensor entry from the entries several shards wrote for the tensor ``name``.

    The slices are ordered by offset (so the index does not depend on which
    shard finished first) and must tile the tensor.
    """
    decoded = [decode_entry(v, f"{where}: entry {_name(name)}") for v in values]
    if any(not e.slices for e in decoded):
        raise TrackableError(f"{where}: tensor {_name(name)} was saved both whole and as slices")
    first = decoded[0]
    for e in decoded[1:]:
        if e.dtype != first.dtype or e.shape != first.shape:
            raise TrackableError(
                f"{where}: the slices of tensor {_name(name)} disagree: dtype {first.dtype} shape {first.shape} "
                f"in one shard, dtype {e.dtype} shape {e.shape} in another"
            )
    parts = [extents_slice(first.shape, ext) for e in decoded for ext in e.slices]
    _check_coverage(name.decode("utf-8", "replace"), first.shape, parts, where)
    if len(decoded) == 1:
        return values[0]
    parts.sort(key=lambda p: p.offset)
    # The shards are merged in shard order, so the first entry names the first shard holding a slice.
    return encode_sliced_entry(first.dtype, first.shape, [slice_extents(p) for p in parts], first.shard_id)
