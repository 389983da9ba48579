"""Index-entry and tensor-payload encoding of TensorBundle (spec sections 3-4).

Entries are hand-encoded: it is several times faster than building protobuf
messages for checkpoints with tens of thousands of tensors, and the bytes are
checked against the generated ``tensor_bundle_pb2`` serialization by the
tests. Decoding takes an index's entries together: the fields of entries laid
out as TensorFlow writes them are read with numpy, their dtype and shape by
protobuf once per distinct byte string (a model has few distinct shapes);
anything else (slices, unknown fields written by newer TensorFlow versions,
anything malformed) goes through ``tensor_bundle_pb2``, which also produces
the errors. Reading fields off parsed ``upb`` messages costs several times
more than parsing them, and a Python loop over each entry's fields half a
second per 200,000 entries, which is what made opening large indexes slow.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from google.protobuf.message import DecodeError

from trackpoint._varint import ONE_BYTE, decode_varint, encode_varint
from trackpoint.backends.bundle._crc import crc32c, extend, mask, unmask
from trackpoint.backends.bundle.proto import tensor_bundle_pb2 as _pb2
from trackpoint.errors import DataLossError, InvalidCheckpointError, UnsupportedDTypeError

__all__ = [
    "Entry",
    "EntryColumns",
    "Header",
    "byte_view",
    "decode_entries",
    "decode_entry",
    "decode_header",
    "decode_strings",
    "encode_entry",
    "encode_header",
    "encode_sliced_entry",
    "encode_strings",
    "is_header",
]

# Generated protobuf modules carry no type information.
pb: Any = _pb2
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_HOST_BIG_ENDIAN: Final = sys.byteorder == "big"


class Header(NamedTuple):
    """The decoded header entry (key ``""``).

    A named tuple, not a dataclass: this module is imported by a process's first
    checkpoint, and defining a frozen dataclass costs about 1 ms.
    """

    num_shards: int
    big_endian: bool


class Entry(NamedTuple):
    """A decoded ``BundleEntryProto`` (a named tuple: an index may hold 10^5 of them).

    ``slices`` is non-empty only for the full entry of a partitioned tensor;
    each slice is a list of ``(start, length)`` per dimension, length -1
    meaning the whole dimension.
    """

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: tuple[tuple[tuple[int, int], ...], ...] = ()


def encode_header(num_shards: int) -> bytes:
    """Header bytes as TensorFlow writes them: ``{num_shards, version {producer: 1}}``, little-endian."""
    msg = pb.BundleHeaderProto(num_shards=num_shards, version=pb.VersionDef(producer=1))
    return bytes(msg.SerializeToString())


def decode_header(value: bytes, where: str) -> Header:
    """Parse and version-check the header entry."""
    msg = pb.BundleHeaderProto()
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        raise DataLossError(f"{where}: the bundle header is not a valid BundleHeaderProto") from exc
    v = msg.version
    # The rule of TensorFlow's CheckVersions for bundle version 1.
    if v.producer < 0 or v.min_consumer > 1 or 1 in v.bad_consumers:
        raise InvalidCheckpointError(
            f"{where}: bundle version (producer {v.producer}, min_consumer {v.min_consumer}) is too new for "
            "this reader; read it with a newer trackpoint or TensorFlow"
        )
    if msg.num_shards < 0:
        raise DataLossError(f"{where}: the bundle header claims {msg.num_shards} shards")
    return Header(num_shards=msg.num_shards, big_endian=msg.endianness == pb.BundleHeaderProto.BIG)


def is_header(value: bytes) -> bool:
    """Whether ``value`` parses as a bundle header as writers write it, with its version.

    Evidence, not a check: it tells an index cut short, which still begins with its header, from a file
    that is no index at all (:func:`~trackpoint.backends.bundle._sstable.read_table`). TensorFlow and
    trackpoint always set the version, so an empty value (a file of zeros begins like an entry holding
    one) is no header.
    """
    msg = pb.BundleHeaderProto()
    try:
        msg.ParseFromString(value)
    except DecodeError:
        return False
    return bool(msg.HasField("version"))


def encode_entry(dtype: int, shape: Sequence[int], shard_id: int, offset: int, size: int, crc: int) -> bytes:
    """A ``BundleEntryProto`` for a plain (unsliced) tensor, byte-identical to protobuf's serialization."""
    shape = tuple(shape)
    head = _HEADS.get((dtype, shape))
    if head is None:
        head = _entry_head(dtype, shape)
        if len(_HEADS) < _HEADS_MAX:
            _HEADS[(dtype, shape)] = head
    return b"".join(
        (
            head,
            b"\x18" + encode_varint(shard_id) if shard_id else b"",
            b"\x20" + encode_varint(offset) if offset else b"",
            b"\x28" + (ONE_BYTE[size] if size < 0x80 else encode_varint(size)) if size else b"",
            b"\x35" + _U32.pack(crc) if crc else b"",
        )
    )


#: The dtype and shape fields of entries by dtype and shape; bounded, as a model has few of these, and an
#: index of 10^5 entries then encodes each of them once.
_HEADS: dict[tuple[int, tuple[int, ...]], bytes] = {}
_HEADS_MAX: Final = 4096


def _entry_head(dtype: int, shape: tuple[int, ...]) -> bytes:
    """The ``dtype`` and ``shape`` fields of an entry (fields 1 and 2, written first)."""
    parts: list[bytes] = []
    for d in shape:
        if d:
            dim = encode_varint(d)
            parts += (b"\x12", encode_varint(len(dim) + 1), b"\x08", dim)
        else:
            parts.append(b"\x12\x00")
    dims = b"".join(parts)
    # TensorFlow always sets the shape submessage, so even a scalar has "12 00".
    shape_field = b"\x12" + encode_varint(len(dims)) + dims
    return b"\x08" + encode_varint(dtype) + shape_field if dtype else shape_field


def encode_sliced_entry(
    dtype: int, shape: Sequence[int], slices: Sequence[Sequence[tuple[int, int]]], shard_id: int = 0
) -> bytes:
    """The full-tensor entry of a partitioned tensor: dtype, shape and its slices, no data of its own.

    Each slice is ``(start, length)`` per dimension, length -1 meaning the
    whole dimension (stored as an empty extent, as TensorFlow does).
    ``shard_id`` is the first data file holding a slice: TensorFlow's merge
    sets it on every entry, this one included, though it names no data.
    """
    msg = pb.BundleEntryProto(dtype=dtype, shard_id=shard_id)
    msg.shape.SetInParent()
    for d in shape:
        msg.shape.dim.add(size=d)
    for extents in slices:
        proto = msg.slices.add()
        for start, length in extents:
            extent = proto.extent.add()
            if length >= 0:
                extent.start = start
                extent.length = length
    return bytes(msg.SerializeToString(deterministic=True))


#: Field tags of ``BundleEntryProto`` (field number << 3 | wire type).
_TAG_DTYPE, _TAG_SHAPE, _TAG_SHARD, _TAG_OFFSET, _TAG_SIZE, _TAG_CRC = 0x08, 0x12, 0x18, 0x20, 0x28, 0x35
#: A varint of more bytes than this is left to protobuf (9 bytes hold 63 bits: every non-negative int64).
_MAX_VARINT: Final = 9


class EntryColumns(NamedTuple):
    """Many decoded entries, one array per field (see :func:`decode_entries`).

    ``kind[i]`` indexes ``kinds``, the distinct ``(dtype, shape)`` pairs. Entry
    ``i`` has slices exactly when ``slices`` has the key ``i``.
    """

    kinds: list[tuple[int, tuple[int, ...]]]
    kind: np.ndarray[Any, np.dtype[np.int32]]
    shard_id: np.ndarray[Any, np.dtype[np.int64]]
    offset: np.ndarray[Any, np.dtype[np.int64]]
    size: np.ndarray[Any, np.dtype[np.int64]]
    crc32c: np.ndarray[Any, np.dtype[np.uint32]]
    slices: dict[int, tuple[tuple[tuple[int, int], ...], ...]]
    #: How many entries protobuf parsed one by one (not laid out as TensorFlow writes an unsliced tensor).
    irregular: int


def decode_entry(value: bytes, where: str) -> Entry:
    """Parse one entry, rejecting negative or unknown-rank shapes and negative offsets/sizes."""
    return _decode_entry_proto(value, where)


def decode_entries(values: Sequence[bytes], where: Callable[[int], str]) -> EntryColumns:
    """Decode many entries at once, as :func:`decode_entry` would decode each.

    Entries laid out as TensorFlow writes an unsliced tensor (dtype and shape,
    then any of shard, offset, size and CRC, each once and in field order) are
    decoded together with numpy; their dtype and shape fields are parsed by
    protobuf once per distinct byte string (a model has few). Anything else
    (slices, unknown fields written by newer TensorFlow versions, repeated or
    reordered fields, long or truncated varints, anything malformed) is parsed
    by protobuf alone, which also produces the errors. ``where(i)`` names entry
    ``i`` in those errors; it is called only to raise.

    Reading fields off parsed ``upb`` messages costs several times more than
    parsing them, and a Python loop over the fields of 200,000 entries costs
    half a second; this costs a few microseconds per entry.
    """
    n = len(values)
    lengths = np.fromiter(map(len, values), np.int64, n)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # Padding, so that reads running past the last entry stay inside the buffer (such entries are irregular).
    buf = np.frombuffer(b"".join(values) + bytes(_MAX_VARINT + 4), np.uint8)
    pos = starts.copy()
    regular = np.ones(n, bool)

    def varint_field(tag: int, required: bool = False) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The field ``tag`` of every regular entry at ``pos`` (0 where absent); moves ``pos`` past it."""
        nonlocal pos
        present = regular & (pos < ends) & (buf[np.minimum(pos, len(buf) - 1)] == tag)
        if required:
            regular[~present] = False
        value = np.zeros(n, np.uint64)
        at = np.flatnonzero(present)
        p = pos[at] + 1
        live = np.ones(len(at), bool)
        got = np.zeros(len(at), np.uint64)
        for k in range(_MAX_VARINT):
            b = buf[p].astype(np.uint64)
            got |= np.where(live, (b & 0x7F) << np.uint64(7 * k), np.uint64(0))
            p += live
            live &= b >= 0x80
            if not live.any():
                break
        regular[at[live]] = False  # longer than _MAX_VARINT bytes
        value[at] = got
        pos[at] = p
        return value.astype(np.int64)  # below 2**63: at most 63 bits were read

    varint_field(_TAG_DTYPE)
    shape_len = varint_field(_TAG_SHAPE, required=True)
    pos += np.where(regular, shape_len, 0)
    head_ends = (pos - starts).tolist()
    shard_id = varint_field(_TAG_SHARD)
    regular &= shard_id < 1 << 31  # an int32 field: protobuf reads larger values as negative numbers
    offset = varint_field(_TAG_OFFSET)
    size = varint_field(_TAG_SIZE)
    has_crc = regular & (pos < ends) & (buf[np.minimum(pos, len(buf) - 1)] == _TAG_CRC)
    at = pos[has_crc] + 1
    crc = np.zeros(n, np.uint32)
    crc[has_crc] = buf[at] | buf[at + 1].astype(np.uint32) << 8 | buf[at + 2].astype(np.uint32) << 16
    crc[has_crc] |= buf[at + 3].astype(np.uint32) << 24
    pos[has_crc] += 5
    regular &= pos == ends

    # The dtype and shape fields of each regular entry, parsed once per distinct byte string.
    kinds: dict[tuple[int, tuple[int, ...]], int] = {}
    kind = np.zeros(n, np.int32)
    rows = np.flatnonzero(regular)
    heads = [values[i][: head_ends[i]] for i in rows.tolist()]
    # Each distinct head with its first entry (dict() keeps the last of equal keys: fed in reverse).
    first = dict(zip(reversed(heads), range(len(heads) - 1, -1, -1), strict=True))
    by_head: dict[bytes, int] = {}
    for head, j in sorted(first.items(), key=lambda item: item[1]):
        pair = _plain_head(head)
        if pair is None:
            e = _decode_entry_proto(head, where(int(rows[j])))
            pair = (e.dtype, e.shape)
        by_head[head] = kinds.setdefault(pair, len(kinds))
    kind[rows] = np.fromiter(map(by_head.__getitem__, heads), np.int32, len(heads))
    # Everything else through protobuf, one by one (partitioned tensors' entries and the unusual).
    slices: dict[int, tuple[tuple[tuple[int, int], ...], ...]] = {}
    irregular = np.flatnonzero(~regular).tolist()
    for i in irregular:
        e = _decode_entry_proto(values[i], where(i))
        kind[i] = kinds.setdefault((e.dtype, e.shape), len(kinds))
        shard_id[i], offset[i], size[i], crc[i] = e.shard_id, e.offset, e.size, e.crc32c
        if e.slices:
            slices[i] = e.slices
    return EntryColumns(list(kinds), kind, shard_id, offset, size, crc, slices, len(irregular))


def _plain_head(head: bytes) -> tuple[int, tuple[int, ...]] | None:
    """The dtype and shape of an entry's head as TensorFlow writes it; ``None`` for any other layout.

    ``head`` is an optional one-byte dtype field, then the shape: dimensions of one-byte length, each
    empty or one size below 2**63. Anything else (named or negative dimensions, an unknown rank,
    long fields, repeated or unknown ones) is left to protobuf, which parses it, or says why it cannot.
    Protobuf costs about as much per head as the rest of an entry's decoding, and a checkpoint of
    10^4-10^5 small tensors can hold thousands of distinct shapes.
    """
    n = len(head)
    dtype = 0
    pos = 0
    if n >= 2 and head[0] == _TAG_DTYPE and head[1] < 0x80:
        dtype = head[1]
        pos = 2
    if n < pos + 2 or head[pos] != _TAG_SHAPE or head[pos + 1] >= 0x80 or head[pos + 1] != n - pos - 2:
        return None
    pos += 2
    dims: list[int] = []
    while pos < n:
        if n < pos + 2 or head[pos] != _TAG_SHAPE or head[pos + 1] >= 0x80:
            return None
        end = pos + 2 + head[pos + 1]
        if end > n:
            return None
        pos += 2
        if pos == end:
            dims.append(0)
            continue
        if head[pos] != _TAG_DTYPE:  # 0x08 is also the tag of a dimension's size
            return None
        try:
            value, pos = decode_varint(head, pos + 1, "")
        except DataLossError:
            return None  # truncated or too long: protobuf says which
        if pos != end or value >= 1 << 63:  # >= 2**63: a negative size, which protobuf refuses
            return None
        dims.append(value)
    return dtype, tuple(dims)


def _decode_entry_proto(value: bytes, where: str) -> Entry:
    msg = pb.BundleEntryProto()
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        raise DataLossError(f"{where}: entry is not a valid BundleEntryProto") from exc
    if msg.shape.unknown_rank:
        raise DataLossError(f"{where}: entry has a shape of unknown rank")
    shape = tuple(d.size for d in msg.shape.dim)
    if any(d < 0 for d in shape):
        raise DataLossError(f"{where}: entry has negative dimensions {shape}")
    if msg.offset < 0 or msg.size < 0 or msg.shard_id < 0:
        raise DataLossError(
            f"{where}: entry has negative shard_id/offset/size ({msg.shard_id}, {msg.offset}, {msg.size})"
        )
    slices = tuple(tuple((e.start, e.length if e.HasField("length") else -1) for e in s.extent) for s in msg.slices)
    return Entry(msg.dtype, shape, msg.shard_id, msg.offset, msg.size, msg.crc32c, slices)


def byte_view(a: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of a C-contiguous array, without copying (any dtype, ml_dtypes included)."""
    try:
        # A fifth of the cost of going through numpy views, which matters once per tensor of 10^5.
        return memoryview(a).cast("B")  # type: ignore[arg-type]  # ndarray exports the buffer protocol
    except (TypeError, ValueError):
        # Types the buffer protocol cannot describe (ml_dtypes) and empty arrays.
        return a.reshape(-1).view(np.uint8).data


def encode_strings(array: np.ndarray[Any, Any], key: str) -> tuple[bytes, int]:
    """The stored bytes of a string tensor and its masked entry CRC (spec section 4.2).

    Elements must be ``bytes`` (or ``str``, stored as UTF-8).
    """
    elems: list[bytes] = []
    for x in array.flat:
        if isinstance(x, str):
            x = x.encode("utf-8")
        elif isinstance(x, (bytearray, memoryview)):
            x = bytes(x)
        elif not isinstance(x, bytes):
            raise UnsupportedDTypeError(
                f"bundle: tensor {key!r} is an object array holding {type(x).__name__}; "
                "only bytes and str elements can be saved"
            )
        elems.append(x)
    # The length checksum covers fixed-width lengths in host order, not the varints.
    order = ">" if _HOST_BIG_ENDIAN else "<"
    fixed = b"".join(
        struct.pack(order + "I", len(b)) if len(b) <= 0xFFFFFFFF else struct.pack(order + "Q", len(b)) for b in elems
    )
    len_crc = crc32c(fixed)
    masked = struct.pack(order + "I", mask(len_crc))
    crc = extend(len_crc, masked)
    body = b"".join(elems)
    crc = extend(crc, body)
    data = b"".join(encode_varint(len(b)) for b in elems) + masked + body
    return data, mask(crc)


def decode_strings(
    buf: bytes, shape: tuple[int, ...], stored_crc: int, big_endian: bool, where: str
) -> np.ndarray[Any, Any]:
    """Decode a stored string tensor, verifying the length checksum and the entry CRC."""
    n = 1
    for d in shape:
        n *= d
    out = np.empty(shape, dtype=object)
    flat = out.reshape(-1)
    if not buf:
        # TensorFlow reads an empty record as all-empty strings without checks.
        flat[:] = [b""] * n
        return out
    if len(buf) < n + 4:
        raise DataLossError(f"{where}: {len(buf)} bytes cannot hold {n} strings")
    view = memoryview(buf)
    lengths = []
    pos = 0
    for _ in range(n):
        length, pos = decode_varint(view, pos, where)
        lengths.append(length)
    order = ">" if big_endian else "<"
    fixed = b"".join(
        struct.pack(order + "I", ln) if ln <= 0xFFFFFFFF else struct.pack(order + "Q", ln) for ln in lengths
    )
    if pos + 4 + sum(lengths) != len(buf):
        raise DataLossError(
            f"{where}: string lengths add up to {pos + 4 + sum(lengths)} bytes but the entry holds {len(buf)}"
        )
    (stored_len_crc,) = struct.unpack_from(order + "I", buf, pos)
    len_crc = crc32c(fixed)
    if unmask(stored_len_crc) != len_crc:
        raise DataLossError(f"{where}: string length checksum mismatch (corrupted data)")
    crc = extend(len_crc, buf[pos : pos + 4])
    pos += 4
    crc = extend(crc, view[pos:])
    if crc != unmask(stored_crc):
        raise DataLossError(f"{where}: CRC-32C mismatch in string data (corrupted data)")
    for i, ln in enumerate(lengths):
        flat[i] = bytes(view[pos : pos + ln])
        pos += ln
    return out
