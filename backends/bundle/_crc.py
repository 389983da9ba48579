"""CRC-32C (Castagnoli) and the masking LevelDB/TensorFlow apply to stored checksums."""

from __future__ import annotations

from typing import Final

import crc32c as _crc32c

__all__ = ["crc32c", "extend", "mask", "unmask"]

# Masking exists because a CRC of bytes that themselves embed CRCs is
# degenerate; LevelDB rotates and offsets every stored checksum.
_MASK_DELTA: Final = 0xA282EAD8
_U32: Final = 0xFFFFFFFF


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` (unmasked)."""
    return int(_crc32c.crc32c(data))


def extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Continue ``crc`` as if ``data`` had been appended to the bytes it covers."""
    return int(_crc32c.crc32c(data, crc))


def mask(crc: int) -> int:
    """The masked form of ``crc`` as stored in bundle files."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Invert :func:`mask`."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32
