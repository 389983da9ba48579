"""Writing bundle data: one shard's data file, its index entries, and the manifest codec.

A shard is streamed into one data file from the arrays' own buffers (small
tensors gathered, large ones written and checksummed in cache-sized chunks).
What the shard produced travels to ``commit`` as a :class:`ShardResult` whose
payload is the shard's index entries as they appear in the merged index, so
merging reads no data back (TensorFlow's ``MergeV2Checkpoints`` does the same).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import numpy as np

from trackpoint.backends.bundle._codec import encode_entry, encode_header, encode_strings
from trackpoint.backends.bundle._crc import crc32c, extend, mask
from trackpoint.backends.bundle._dtypes import DT_STRING, tf_from_dtype
from trackpoint.backends.bundle._sstable import build_table
from trackpoint.backends.bundle._varint import decode_varint, encode_varint
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import ConcurrentModificationError, InvalidCheckpointError, TrackableError
from trackpoint.storage import ShardResult, ShardSpec, WriteItem, shard_progress

#: Tensors below this size are gathered into one buffer so a shard of many
#: small tensors costs few write calls.
_SMALL: Final = 64 * 1024
_BATCH: Final = 1024 * 1024
#: Large tensors are checksummed and written in chunks that are still cache-warm.
_CHUNK: Final = 4 * 1024 * 1024
#: Shard manifests of 0.1 (no data file count) and of 0.2 (the count the shard's file name uses).
_PAYLOAD_MAGIC_V1: Final = b"TPBUNDLE1\n"
_PAYLOAD_MAGIC: Final = b"TPBUNDLE2\n"


class Row(NamedTuple):
    """Where one tensor landed in its shard's data file."""

    key: bytes
    dtype: int
    shape: tuple[int, ...]
    offset: int
    size: int
    crc: int


class WrittenShard(NamedTuple):
    """A written shard: its one-shard index (the piece table) and its manifest for ``commit``."""

    piece_table: bytes
    result: ShardResult


def byte_view(a: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of a C-contiguous array, without copying (any dtype, ml_dtypes included)."""
    return a.reshape(-1).view(np.uint8).data


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
        batch = bytearray()
        offset = 0
        for it in items:
            key = _key_bytes(it.key)
            arr = np.asarray(it.array)
            if arr.dtype.kind == "O":
                data, crc = encode_strings(arr, it.key)
                rows.append(Row(key, DT_STRING, arr.shape, offset, len(data), crc))
                batch += data
                offset += len(data)
            else:
                dt = tf_from_dtype(arr.dtype, it.key)
                arr = _little_endian(arr)
                view = byte_view(arr)
                size = len(view)
                if size < _SMALL:
                    crc = crc32c(view)
                    batch += view
                else:
                    if batch:
                        sink.write(batch)
                        batch = bytearray()
                    crc = 0
                    for start in range(0, size, _CHUNK):
                        chunk = view[start : start + _CHUNK]
                        crc = extend(crc, chunk)
                        sink.write(chunk)
                rows.append(Row(key, dt, arr.shape, offset, size, mask(crc)))
                offset += size
            if report is not None:
                report(it.nbytes)
            if len(batch) >= _BATCH:
                sink.write(batch)
                batch = bytearray()
        if batch:
            sink.write(batch)
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return rows


def describe_shard(spec: ShardSpec, rows: list[Row], file_count: int) -> WrittenShard:
    """The piece table and manifest of a shard whose data file holds ``rows``.

    The piece table makes the shard a valid one-shard bundle of its own; the
    manifest carries the same entries with the shard's real ``shard_id``, as
    the merged index will hold them, and ``file_count``, the ``-of-`` count
    of the shard's data file name.
    """
    nbytes = rows[-1].offset + rows[-1].size if rows else 0
    rows = sorted(rows, key=lambda r: r.key)
    for a, b in itertools.pairwise(rows):
        if a.key == b.key:
            raise TrackableError(f"bundle: tensor key {a.key.decode('utf-8', 'replace')!r} is saved twice")
    piece_entries = [(r.key, encode_entry(r.dtype, r.shape, 0, r.offset, r.size, r.crc)) for r in rows]
    piece_table = build_table([(b"", encode_header(1)), *piece_entries])
    # Shard 0's entries are the same bytes in the piece and in the merged index.
    merged_entries = (
        piece_entries
        if spec.shard_id == 0
        else [(r.key, encode_entry(r.dtype, r.shape, spec.shard_id, r.offset, r.size, r.crc)) for r in rows]
    )
    keys = tuple(r.key.decode("utf-8", "surrogateescape") for r in rows)
    return WrittenShard(piece_table, ShardResult(spec, keys, nbytes, encode_payload(merged_entries, file_count)))


def encode_payload(entries: Sequence[tuple[bytes, bytes]], file_count: int) -> bytes:
    """A shard manifest: a magic line, the data file count, then the index entries, length-prefixed."""
    out = bytearray(_PAYLOAD_MAGIC)
    out += encode_varint(file_count)
    for k, v in entries:
        out += encode_varint(len(k))
        out += k
        out += encode_varint(len(v))
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
    entries.sort(key=lambda e: e[0])
    for a, b in itertools.pairwise(entries):
        if a[0] == b[0]:
            raise TrackableError(
                f"bundle: tensor {a[0].decode('utf-8', 'replace')!r} appears in two shards of {prefix!r}"
            )
    return build_table([(b"", encode_header(num_shards)), *entries])
