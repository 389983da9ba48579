"""The LevelDB-style sorted table TensorFlow uses for ``.index`` files.

Writer and reader follow TensorFlow's ``table_builder.cc``/``block.cc`` (spec
sections 2.1-2.6): 256 KiB data blocks with a restart every 16 entries, an
index block with a restart at every entry, an empty metaindex block, blocks
stored uncompressed with a masked CRC-32C trailer, and a 48-byte footer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from trackpoint._varint import decode_varint, encode_varint
from trackpoint.backends.bundle._codec import is_header
from trackpoint.backends.bundle._crc import crc32c, mask, unmask
from trackpoint.errors import CheckpointError, DataLossError, InvalidCheckpointError, TrackableError

__all__ = [
    "BLOCK_SIZE",
    "FOOTER_SIZE",
    "TableBuilder",
    "build_table",
    "first_entry",
    "leading_entry",
    "read_table",
    "short_successor",
    "shortest_separator",
]

#: TensorFlow's table block size (LevelDB's default would be 4 KiB).
BLOCK_SIZE: Final = 256 * 1024
#: Footer: two block handles padded to 40 bytes, then the 8-byte magic.
FOOTER_SIZE: Final = 48
_MAGIC: Final = 0xDB4775248B80FB57
_MAGIC_BYTES: Final = struct.pack("<II", _MAGIC & 0xFFFFFFFF, _MAGIC >> 32)
_TRAILER: Final = 5
_NO_COMPRESSION: Final = 0
_SNAPPY: Final = 1
_U32 = struct.Struct("<I")


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key ``k`` with ``start <= k < limit`` (LevelDB's bytewise comparator rule)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i >= n:
        # One is a prefix of the other: no shorter separator exists.
        return start
    b = start[i]
    if b < 0xFF and b + 1 < limit[i]:
        return start[:i] + bytes((b + 1,))
    return start


def short_successor(key: bytes) -> bytes:
    """A short key ``>= key``: increment the first byte that is not 0xff and cut after it."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes((b + 1,))
    return key


class _BlockBuilder:
    """Prefix-compressed entries followed by the restart array."""

    __slots__ = ("_buf", "_counter", "_interval", "_last", "_restarts")

    def __init__(self, restart_interval: int) -> None:
        self._interval = restart_interval
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last = b""

    @property
    def empty(self) -> bool:
        return not self._buf

    def estimate(self) -> int:
        return len(self._buf) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._counter < self._interval:
            last = self._last
            n = min(len(last), len(key))
            if n:
                # Length of the common prefix in a few C-level operations: the
                # highest differing bit of the XOR marks the first differing byte.
                diff = int.from_bytes(last[:n], "big") ^ int.from_bytes(key[:n], "big")
                shared = n - (diff.bit_length() + 7) // 8
        else:
            self._restarts.append(len(self._buf))
            self._counter = 0
        non_shared = len(key) - shared
        vlen = len(value)
        buf = self._buf
        if (shared | non_shared | vlen) < 0x80:
            buf += bytes((shared, non_shared, vlen))  # nearly every entry: three one-byte varints
        else:
            buf += encode_varint(shared) + encode_varint(non_shared) + encode_varint(vlen)
        buf += key[shared:] if shared else key
        buf += value
        self._last = key
        self._counter += 1

    def finish(self) -> bytes:
        out = bytes(self._buf) + b"".join(_U32.pack(r) for r in self._restarts) + _U32.pack(len(self._restarts))
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last = b""
        return out


class TableBuilder:
    """Builds a table in memory from keys added in strictly increasing bytewise order."""

    def __init__(self, *, block_size: int = BLOCK_SIZE, restart_interval: int = 16) -> None:
        self._block_size = block_size
        self._out = bytearray()
        self._data = _BlockBuilder(restart_interval)
        self._index = _BlockBuilder(1)
        self._pending: bytes | None = None
        self._last_key = b""
        self._num = 0

    def add(self, key: bytes, value: bytes) -> None:
        """Append one entry; keys must be strictly increasing."""
        if self._num and key <= self._last_key:
            raise TrackableError(f"bundle index keys must be unique and sorted: {key!r} follows {self._last_key!r}")
        # TensorFlow-only rule: an entry that alone could fill two blocks starts a new block.
        if self._num and len(key) + len(value) >= 2 * self._block_size:
            self._flush()
        if self._pending is not None:
            self._index.add(shortest_separator(self._last_key, key), self._pending)
            self._pending = None
        data = self._data
        data.add(key, value)
        self._last_key = key
        self._num += 1
        # data.estimate(), without a call per entry
        if len(data._buf) + 4 * len(data._restarts) + 4 >= self._block_size:
            self._flush()

    def _write_block(self, contents: bytes) -> bytes:
        handle = encode_varint(len(self._out)) + encode_varint(len(contents))
        trailer_type = bytes((_NO_COMPRESSION,))
        crc = mask(crc32c(contents + trailer_type))
        self._out += contents
        self._out += trailer_type
        self._out += _U32.pack(crc)
        return handle

    def _flush(self) -> None:
        if self._data.empty:
            return
        self._pending = self._write_block(self._data.finish())

    def finish(self) -> bytes:
        """Write the remaining blocks and the footer; return the whole file."""
        self._flush()
        meta_handle = self._write_block(_BlockBuilder(16).finish())
        if self._pending is not None:
            self._index.add(short_successor(self._last_key), self._pending)
            self._pending = None
        index_handle = self._write_block(self._index.finish())
        footer = meta_handle + index_handle
        self._out += footer + bytes(40 - len(footer)) + _MAGIC_BYTES
        return bytes(self._out)


def build_table(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A whole table file from sorted ``(key, value)`` pairs."""
    builder = TableBuilder()
    for k, v in entries:
        builder.add(k, v)
    return builder.finish()


def _decode_handle(buf: bytes, pos: int, where: str) -> tuple[int, int, int]:
    offset, pos = decode_varint(buf, pos, where)
    size, pos = decode_varint(buf, pos, where)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, limit: int, where: str) -> bytes:
    if offset + size + _TRAILER > limit:
        raise DataLossError(f"{where}: block at {offset} (+{size} bytes) extends past the end of the table")
    contents = data[offset : offset + size]
    block_type = data[offset + size]
    (stored,) = _U32.unpack_from(data, offset + size + 1)
    actual = crc32c(data[offset : offset + size + 1])
    if unmask(stored) != actual:
        raise DataLossError(f"{where}: block at offset {offset} fails its CRC-32C check (corrupted index)")
    if block_type == _SNAPPY:
        raise InvalidCheckpointError(
            f"{where}: block at offset {offset} is Snappy-compressed (a TensorFlow <= 1.1 bundle); "
            "Snappy blocks are unsupported, re-save the checkpoint with a newer TensorFlow"
        )
    if block_type != _NO_COMPRESSION:
        raise DataLossError(f"{where}: block at offset {offset} has unknown compression type {block_type}")
    return contents


def _block_entries(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """Decode a block's entries, validating the restart array like TensorFlow's ``Block``."""
    n = len(block)
    if n < 4:
        raise DataLossError(f"{where}: block of {n} bytes is too short for its restart count")
    (num_restarts,) = _U32.unpack_from(block, n - 4)
    max_restarts = (n - 4) // 4
    if num_restarts > max_restarts:
        raise DataLossError(f"{where}: block claims {num_restarts} restarts but holds {n} bytes")
    data_end = n - 4 - 4 * num_restarts
    restarts = set()
    for i in range(num_restarts):
        (r,) = _U32.unpack_from(block, data_end + 4 * i)
        if r > data_end:
            raise DataLossError(f"{where}: restart offset {r} lies outside the block's {data_end} entry bytes")
        restarts.add(r)
    out: list[tuple[bytes, bytes]] = []
    view = memoryview(block)
    pos = 0
    key = b""
    while pos < data_end:
        start = pos
        # Three varints per entry, nearly always one byte each: read those inline (a call each would be
        # most of the cost of an index of 10^5 entries).
        shared, non_shared, vlen = block[pos : pos + 3] if pos + 3 <= data_end else (0x80, 0x80, 0x80)
        if (shared | non_shared | vlen) < 0x80:
            pos += 3
        else:
            shared, pos = decode_varint(view, pos, where)
            non_shared, pos = decode_varint(view, pos, where)
            vlen, pos = decode_varint(view, pos, where)
        if start in restarts and shared:
            raise DataLossError(f"{where}: entry at restart point {start} shares {shared} key bytes")
        if shared > len(key) or pos + non_shared + vlen > data_end:
            raise DataLossError(f"{where}: corrupted block entry at byte {start}")
        previous = key
        key = key[:shared] + block[pos : pos + non_shared]
        if key <= previous and out:
            # Readers find keys by bisection and take the slices' keys (a NUL byte first) to come first.
            raise DataLossError(f"{where}: the key of the entry at byte {start} does not follow the previous one")
        pos += non_shared
        out.append((key, block[pos : pos + vlen]))
        pos += vlen
    return out


def leading_entry(data: bytes) -> tuple[bytes, bytes] | None:
    """The first entry of a table's first block, read from the file's start alone; ``None`` if it holds none.

    A table's first block starts at byte 0, with an entry that shares no key bytes. Read without the
    footer (which locates the blocks), the start tells a table cut short, whose footer is gone, from a
    file that is no table: ``None`` when the start is not such an entry, complete.
    """
    try:
        shared, pos = decode_varint(data, 0, "")
        non_shared, pos = decode_varint(data, pos, "")
        vlen, pos = decode_varint(data, pos, "")
    except DataLossError:
        return None
    key_end = pos + non_shared
    if shared or key_end + vlen > len(data):
        return None
    return data[pos:key_end], data[key_end : key_end + vlen]


def _without_magic(data: bytes, where: str) -> CheckpointError:
    """Why ``data`` (at least a footer long) does not end with the table magic number: cut short, or no index.

    Every bundle index begins with its header, the entry of the empty key (first in key order), and its
    footer ends with the magic number. A file beginning so whose end lacks the magic is an index cut short
    (a copy or a write interrupted, a full disk): damage, as a shorter one is. Any other file is foreign.
    """
    first = leading_entry(data)
    if first is not None and first[0] == b"" and is_header(first[1]):
        return DataLossError(
            f"{where} is truncated: its {len(data)} bytes begin with a bundle header but end without the table "
            f"footer ({FOOTER_SIZE} bytes, ending in the magic number) of every complete index; the file was cut "
            "short (an interrupted copy or write, a full disk) or damaged at its end: restore it from a complete "
            "copy, or use an older checkpoint"
        )
    return InvalidCheckpointError(
        f"{where} is not a TensorFlow bundle index (missing the table magic number at its end, and not beginning "
        "with a bundle header as an index cut short would); check that the path names a checkpoint prefix"
    )


def _index_handles(data: bytes, where: str) -> tuple[list[tuple[int, int]], int]:
    """The ``(offset, size)`` of every data block, in key order, and where the blocks must end (the footer)."""
    n = len(data)
    if n < FOOTER_SIZE:
        # Shorter than any table's footer: a committed index cut short (an empty file, a copy interrupted),
        # as TensorFlow's "file is too short to be an sstable".
        raise DataLossError(
            f"{where} is truncated: {n} bytes, shorter than the {FOOTER_SIZE}-byte footer of any bundle index"
        )
    if data[n - 8 :] != _MAGIC_BYTES:
        raise _without_magic(data, where)
    limit = n - FOOTER_SIZE
    footer = data[limit:]
    _, _, pos = _decode_handle(footer, 0, where)
    index_offset, index_size, _ = _decode_handle(footer, pos, where)
    index = _block_entries(_read_block(data, index_offset, index_size, limit, where), where)
    handles = []
    for _sep, handle in index:
        offset, size, _ = _decode_handle(handle, 0, where)
        handles.append((offset, size))
    return handles, limit


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """All ``(key, value)`` entries of a table file, in key order.

    ``where`` names the file in error messages. Raises
    :class:`~trackpoint.errors.InvalidCheckpointError` when ``data`` is not a
    table (no magic number at its end, and no bundle header at its start) and
    :class:`~trackpoint.errors.DataLossError` when it is a damaged one, or one
    cut short (shorter than a footer, or beginning with a bundle header but
    lacking the footer).
    """
    handles, limit = _index_handles(data, where)
    entries: list[tuple[bytes, bytes]] = []
    for offset, size in handles:
        block_entries = _block_entries(_read_block(data, offset, size, limit, where), where)
        if entries and block_entries and block_entries[0][0] <= entries[-1][0]:
            raise DataLossError(f"{where}: table keys are out of order across blocks")
        entries.extend(block_entries)
    return entries


def first_entry(data: bytes, where: str) -> tuple[bytes, bytes] | None:
    """The first ``(key, value)`` entry of a table file (``None`` if it is empty); reads one data block.

    Raises as :func:`read_table` does for what it reads: the footer, the index block and the first block.
    """
    handles, limit = _index_handles(data, where)
    for offset, size in handles:
        block_entries = _block_entries(_read_block(data, offset, size, limit, where), where)
        if block_entries:
            return block_entries[0]
    return None
