"""LEB128 varints, the integer encoding of protobuf messages and LevelDB tables.

Shared by the object-graph encoder (``trackpoint._graph_wire``) and the bundle format
(``trackpoint.backends.bundle``), which imports it from here because dependencies point inward. Values
below 128 (most lengths, node ids of small graphs, dtype codes) are looked up in a 128-entry table;
importing this module builds nothing larger.
"""

from __future__ import annotations

from typing import Final

from trackpoint.errors import DataLossError

__all__ = ["ONE_BYTE", "decode_varint", "encode_varint"]

#: The encodings of 0-127, one byte each: looked up rather than built, also by callers that inline the
#: common case (``ONE_BYTE[n] if n < 0x80 else encode_varint(n)``).
ONE_BYTE: Final = tuple(bytes((i,)) for i in range(0x80))


def encode_varint(value: int) -> bytes:
    """LEB128 encoding of a non-negative ``value`` (7 bits per byte, low group first)."""
    if value < 0x80:
        return ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 0x10000000:
        # Offsets into data files of up to 256 MiB (every entry of a typical shard); larger ones take the loop.
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, ((value >> 14) & 0x7F) | 0x80, value >> 21))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int]:
    """Decode a varint at ``buf[pos]``; return ``(value, next_pos)``.

    ``where`` names the file/structure for the error message when the varint
    is truncated or longer than 64 bits.
    """
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise DataLossError(f"{where}: truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DataLossError(f"{where}: varint longer than 10 bytes at byte {pos}")
