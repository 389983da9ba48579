"""CRC-32C (Castagnoli) and the masking LevelDB/TensorFlow apply to stored checksums."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from trackpoint._crc32c import crc32c as _crc

__all__ = ["crc32c", "crc32c_each", "extend", "mask", "unmask", "unmask_each"]

# Masking exists because a CRC of bytes that themselves embed CRCs is
# degenerate; LevelDB rotates and offsets every stored checksum.
_MASK_DELTA: Final = 0xA282EAD8
_U32: Final = 0xFFFFFFFF


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` (unmasked)."""
    return int(_crc(data))


def crc32c_each(buffers: Sequence[bytes | bytearray | memoryview]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """CRC-32C of each buffer (unmasked), as an array: one C call per buffer and no Python objects per result."""
    return np.fromiter(map(_crc, buffers), np.uint32, len(buffers))


def extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Continue ``crc`` as if ``data`` had been appended to the bytes it covers."""
    return int(_crc(data, crc))


def mask(crc: int) -> int:
    """The masked form of ``crc`` as stored in bundle files."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Invert :func:`mask`."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def unmask_each(masked: np.ndarray[Any, np.dtype[np.uint32]]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """:func:`unmask` of every element (uint32 arithmetic wraps as the masking's ``& 0xFFFFFFFF`` does)."""
    rot = masked.astype(np.uint32) - np.uint32(_MASK_DELTA)
    return (rot >> np.uint32(17)) | (rot << np.uint32(15))
