"""TensorFlow's OrderedCode encoding of slice keys (spec section 5).

A slice of tensor ``name`` is stored under
``NumIncreasing(0) String(name) NumIncreasing(rank) (Signed(start) Signed(length))*``;
a whole dimension is ``start 0, length -1``.
"""

from __future__ import annotations

import re
from typing import Final

from trackpoint.errors import DataLossError

__all__ = ["decode_slice_key", "encode_slice_key"]

# First-byte headers of SignedNumIncreasing for encodings of 2..10 bytes.
_HEADERS: Final = {
    2: b"\xc0\x00",
    3: b"\xe0\x00",
    4: b"\xf0\x00",
    5: b"\xf8\x00",
    6: b"\xfc\x00",
    7: b"\xfe\x00",
    8: b"\xff\x00",
    9: b"\xff\x80",
    10: b"\xff\xc0",
}
# Name bytes 0x00 and 0xff are escaped so the 00 01 terminator stays unambiguous.
_SPECIAL: Final = re.compile(rb"[\x00\xff]")
# Largest bit length of |v| that fits each encoding length (7 payload bits per byte minus header).
_BITS_FOR_LEN: Final = ((13, 2), (20, 3), (27, 4), (34, 5), (41, 6), (48, 7), (55, 8), (62, 9), (63, 10))


def _num_increasing(v: int) -> bytes:
    payload = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes((len(payload),)) + payload


def _signed_num_increasing(v: int) -> bytes:
    x = ~v if v < 0 else v
    if x < 64:
        return bytes((0x80 ^ (v & 0xFF),))
    bits = x.bit_length()
    length = next(n for limit, n in _BITS_FOR_LEN if bits <= limit)
    raw = bytearray((v & ((1 << 80) - 1)).to_bytes(10, "big")[10 - length :])
    header = _HEADERS[length]
    raw[0] ^= header[0]
    raw[1] ^= header[1]
    return bytes(raw)


def encode_slice_key(name: bytes, extents: list[tuple[int, int]]) -> bytes:
    """The key of the slice ``extents`` (``(start, length)`` per dim, length -1 = whole) of ``name``."""
    out = bytearray(_num_increasing(0))
    out += _SPECIAL.sub(lambda m: b"\x00\xff" if m.group() == b"\x00" else b"\xff\x00", name)
    out += b"\x00\x01"
    out += _num_increasing(len(extents))
    for start, length in extents:
        out += _signed_num_increasing(start)
        out += _signed_num_increasing(length)
    return bytes(out)


def _read_num_increasing(key: bytes, pos: int, where: str) -> tuple[int, int]:
    if pos >= len(key):
        raise DataLossError(f"{where}: truncated slice key {key!r}")
    n = key[pos]
    if n > 8 or pos + 1 + n > len(key):
        raise DataLossError(f"{where}: malformed number in slice key {key!r}")
    return int.from_bytes(key[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def _read_signed(key: bytes, pos: int, where: str) -> tuple[int, int]:
    if pos >= len(key):
        raise DataLossError(f"{where}: truncated slice key {key!r}")
    first = key[pos]
    if 0x40 <= first < 0xC0:
        v = first ^ 0x80
        return (v - 0x100 if v >= 0x80 else v), pos + 1
    # The count of leading bits equal to the sign gives the encoding length.
    negative = first < 0x80
    word = int.from_bytes(key[pos : pos + 2].ljust(2, b"\x00"), "big")
    if negative:
        word ^= 0xFFFF
    ones = 0
    while ones < 16 and word & (0x8000 >> ones):
        ones += 1
    length = ones
    if not 2 <= length <= 10 or pos + length > len(key):
        raise DataLossError(f"{where}: malformed signed number in slice key {key!r}")
    # XOR-ing the header back restores the sign-extended two's complement bytes.
    raw = bytearray(key[pos : pos + length])
    header = _HEADERS[length]
    raw[0] ^= header[0]
    raw[1] ^= header[1]
    return int.from_bytes(bytes(raw), "big", signed=True), pos + length


def decode_slice_key(key: bytes, where: str) -> tuple[bytes, list[tuple[int, int]]]:
    """Inverse of :func:`encode_slice_key`; raises :class:`DataLossError` on malformed keys."""
    lead, pos = _read_num_increasing(key, 0, where)
    if lead != 0:
        raise DataLossError(f"{where}: slice key {key!r} does not start with NumIncreasing(0)")
    name = bytearray()
    while True:
        if pos + 1 >= len(key):
            raise DataLossError(f"{where}: unterminated tensor name in slice key {key!r}")
        c, d = key[pos], key[pos + 1]
        if c == 0x00 and d == 0x01:
            pos += 2
            break
        if c == 0x00 and d == 0xFF:
            name.append(0)
            pos += 2
        elif c == 0xFF and d == 0x00:
            name.append(0xFF)
            pos += 2
        elif c in (0x00, 0xFF):
            raise DataLossError(f"{where}: bad escape in slice key {key!r}")
        else:
            name.append(c)
            pos += 1
    rank, pos = _read_num_increasing(key, pos, where)
    if rank == 0:
        raise DataLossError(f"{where}: slice key {key!r} has rank 0")
    extents = []
    for _ in range(rank):
        start, pos = _read_signed(key, pos, where)
        length, pos = _read_signed(key, pos, where)
        extents.append((start, length))
    if pos != len(key):
        raise DataLossError(f"{where}: trailing bytes in slice key {key!r}")
    return bytes(name), extents
