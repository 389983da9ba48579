"""Reversible mapping between checkpoint keys and Zarr array names.

Every tensor key becomes exactly one node name directly inside the data group:
the UTF-8 bytes of the key are kept when they are ASCII letters, digits, ``-``,
``_`` or ``.``, and written as ``%XX`` (upper-case hex) otherwise, so ``/``
becomes ``%2F``. Two positions get extra escapes so that the name is always a
valid Zarr v3 node name that no reader can misread as a path:

* a leading ``.`` is escaped (``"."`` and ``".."`` can never appear), and
* a leading ``_`` is escaped (Zarr reserves ``__``; trackpoint's own arrays,
  such as the packed small tensors, use names starting with ``_``).

Because the result never contains ``/``, it can never address anything but one
child of the data group, whatever the key holds (``..``, absolute paths,
empty segments, NUL bytes). Flat names rather than one group per ``/``
segment also mean a key may be both a tensor and a prefix of other keys
(``"a"`` and ``"a/b"``), which a hierarchy of groups could not store.
"""

from __future__ import annotations

import re
from typing import Final

from trackpoint.errors import CheckpointKeyError, InvalidCheckpointError

__all__ = ["decode_key", "encode_key"]

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
#: ``str.translate`` table: every byte outside ``_SAFE`` (as a latin-1 character) to ``%XX``.
_ESCAPES: Final = {b: f"%{b:02X}" for b in range(256) if b not in _SAFE}
_ENCODED: Final = re.compile(r"(?:[A-Za-z0-9\-_.]|%[0-9A-F]{2})+")


def encode_key(key: str) -> str:
    """The Zarr array name that stores the tensor ``key``.

    Raises
    ------
    CheckpointKeyError
        ``key`` is empty (no format trackpoint writes can store an empty key).
    """
    if not key:
        raise CheckpointKeyError("zarr: the empty string cannot be a tensor key; give the tensor a name")
    # Each UTF-8 byte as one latin-1 character, then one C-level pass over them:
    # a save of 200,000 small tensors encodes as many keys.
    name = key.encode("utf-8", errors="surrogatepass").decode("latin-1").translate(_ESCAPES)
    return name if name[0] not in "._" else f"%{ord(name[0]):02X}{name[1:]}"


def decode_key(name: str) -> str:
    """The checkpoint key stored under the array name ``name`` (inverse of :func:`encode_key`).

    Raises
    ------
    InvalidCheckpointError
        ``name`` is not something :func:`encode_key` produces.
    """
    if not _ENCODED.fullmatch(name) or name[0] in "._":
        raise InvalidCheckpointError(f"zarr: {name!r} is not an encoded tensor key")
    out = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "%":
            out.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(name[i]))
            i += 1
    key = bytes(out).decode("utf-8", errors="surrogatepass")
    if encode_key(key) != name:
        # e.g. "%41" for "A": decodable, but not the canonical spelling.
        raise InvalidCheckpointError(f"zarr: {name!r} is not the canonical encoding of {key!r}")
    return key
