"""CRC-32C (Castagnoli) and the masking LevelDB/TensorFlow apply to stored checksums."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType
from typing import Any, Final

import numpy as np

__all__ = ["crc32c", "crc32c_each", "extend", "mask", "unmask", "unmask_each"]

# Masking exists because a CRC of bytes that themselves embed CRCs is
# degenerate; LevelDB rotates and offsets every stored checksum.
_MASK_DELTA: Final = 0xA282EAD8
_U32: Final = 0xFFFFFFFF


def _load_extension() -> ModuleType:
    """The ``crc32c`` package's compiled module, loaded without running the package's ``__init__``.

    That ``__init__`` reads the package's version with ``importlib.metadata`` and imports its command-line
    interface (``argparse``): 30-40 ms on the first checkpoint a process opens, for two functions the
    compiled module has. Any other layout of the package gets a plain import.
    """
    spec = importlib.util.find_spec("crc32c")
    locations = [] if spec is None else list(spec.submodule_search_locations or ())
    for location in locations:
        for suffix in EXTENSION_SUFFIXES:
            path = os.path.join(location, "_crc32c" + suffix)
            if not os.path.isfile(path):
                continue
            extension = importlib.util.spec_from_file_location("crc32c._crc32c", path)
            if extension is None or extension.loader is None:
                continue
            module = importlib.util.module_from_spec(extension)
            extension.loader.exec_module(module)
            if callable(getattr(module, "crc32c", None)):
                return module
    import crc32c

    return crc32c


_crc32c: Final = _load_extension()
_crc: Final[Callable[..., int]] = _crc32c.crc32c


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
