"""Deprecated: the object-store layer is public as :class:`trackpoint.backends.stores.ObjectStore`.

``FsspecFiles`` keeps 0.1 subclasses working for one release: it takes
``(fs, transfer)`` and maps the 0.1 private primitives (``_classify``,
``_a_stat``, ``_a_get_into``, ``_a_get_versioned``, ``_a_put``, ``_a_list``,
``_a_delete``, ``_a_upload_*``) onto the public client calls. New code
subclasses ``ObjectStore`` and implements ``classify`` and ``object_*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trackpoint.backends._deprecated import warn_moved
from trackpoint.backends.stores._base import FileLayer
from trackpoint.backends.stores._fsspec import FILESYSTEM_KINDS, filesystem
from trackpoint.backends.stores.objectstore import (
    WRITE_ID_METADATA_KEY,
    Condition,
    ErrorKind,
    HTTPStatusError,
    ObjectStat,
    ObjectStore,
    TransferOptions,
)
from trackpoint.storage import VersionedBytes

__all__ = [
    "FILESYSTEM_KINDS",
    "WRITE_ID_METADATA_KEY",
    "Condition",
    "ErrorKind",
    "FsspecFiles",
    "HTTPStatusError",
    "ObjectStat",
    "TransferOptions",
    "filesystem",
]

warn_moved("trackpoint.backends.fsspec_files", "trackpoint.backends.stores (ObjectStore and its value types)")


class FsspecFiles(ObjectStore):
    """Deprecated 0.1 base: an :class:`ObjectStore` on an fsspec filesystem's loop, with the 0.1 method names."""

    def __init__(self, fs: Any, transfer: TransferOptions) -> None:
        super().__init__(transfer, loop=fs.loop)
        self.fs = fs

    def _classify(self, exc: BaseException) -> ErrorKind:
        raise NotImplementedError(f"{type(self).__name__} must implement _classify (0.1) or classify")

    def classify(self, exc: BaseException) -> ErrorKind:
        return self._classify(exc)

    def read(self, path: str) -> bytes:
        # 0.1 subclasses need not define _a_get_versioned: without it, read by size and range as 0.1 did.
        if not hasattr(self, "_a_get_versioned"):
            return FileLayer.read(self, path)
        return super().read(path)

    async def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        return await self._a_stat(bucket, key)  # type: ignore[no-any-return,attr-defined]

    async def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        await self._a_get_into(bucket, key, start, out)  # type: ignore[attr-defined]

    async def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        return await self._a_get_versioned(bucket, key)  # type: ignore[no-any-return,attr-defined]

    async def object_put(self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        return await self._a_put(bucket, key, data, condition, write_id)  # type: ignore[no-any-return,attr-defined]

    async def object_list(self, bucket: str, prefix: str) -> list[str]:
        return await self._a_list(bucket, prefix)  # type: ignore[no-any-return,attr-defined]

    async def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        await self._a_delete(bucket, keys)  # type: ignore[attr-defined]

    async def upload_begin(self, bucket: str, key: str, condition: Condition, write_id: str) -> Any:
        return await self._a_upload_begin(bucket, key, condition, write_id)  # type: ignore[attr-defined]

    async def upload_part(self, state: Any, number: int, offset: int, data: memoryview, total: int | None) -> Any:
        return await self._a_upload_part(state, number, offset, data, total)  # type: ignore[attr-defined]

    async def upload_finish(self, state: Any, parts: list[Any], total: int) -> str:
        return await self._a_upload_finish(state, parts, total)  # type: ignore[no-any-return,attr-defined]

    async def upload_abort(self, state: Any) -> None:
        await self._a_upload_abort(state)  # type: ignore[attr-defined]
