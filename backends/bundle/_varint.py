"""LEB128 varints and little-endian fixed-width integers (protobuf/LevelDB wire primitives)."""

from __future__ import annotations

from typing import Final

from trackpoint.errors import DataLossError

__all__ = ["decode_varint", "encode_varint"]


# Index building encodes several varints per tensor; most are below 2**14.
_SMALL: Final = tuple(bytes((i,)) for i in range(0x80)) + tuple(
    bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(0x80, 0x4000)
)


def encode_varint(value: int) -> bytes:
    """LEB128 encoding of a non-negative ``value`` (7 bits per byte, low group first)."""
    if value < 0x4000:
        return _SMALL[value]
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
