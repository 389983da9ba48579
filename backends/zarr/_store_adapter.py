"""A zarr ``Store`` over a :class:`FileLayer`, so zarr reads and writes through trackpoint's stores.

zarr-python drives stores from its own event loop; the file layer is
synchronous (and thread-safe), so every call runs in a worker thread. Reads
are strict: zarr takes a missing chunk for "all fill value", but trackpoint
writes every chunk, so a missing or emptied one is lost data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from trackpoint import _paths
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import CheckpointNotFoundError, DataLossError


class FileLayerStore(Store):
    """The keys below ``root`` of ``files``, as a zarr store.

    Parameters
    ----------
    files
        Where the bytes live.
    root
        Path (in ``files``' terms) that zarr keys are relative to.
    read_only
        Refuse writes and deletes; reads are strict (a missing or empty
        object is :class:`DataLossError`, not "absent").
    """

    supports_writes = True
    supports_deletes = True
    supports_partial_writes = False
    supports_listing = False

    def __init__(self, files: FileLayer, root: str, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.files = files
        self.root = root.rstrip("/")

    def _path(self, key: str) -> str:
        return _paths.join(self.root, key) if key else self.root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileLayerStore) and (other.files, other.root) == (self.files, self.root)

    def __hash__(self) -> int:
        return hash((id(self.files), self.root))

    def __repr__(self) -> str:
        return f"FileLayerStore({self.files.store_name}:{self.root})"

    # ---------------------------------------------------------------- reads
    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        path = self._path(key)
        if byte_range is None:
            try:
                data = self.files.read(path)
            except CheckpointNotFoundError as exc:
                if not self.read_only:
                    return None  # a writer asks whether a shard exists yet
                raise DataLossError(f"zarr: {path!r} is missing") from exc
            if not data:
                # Every stored chunk holds at least its codec output (and a
                # CRC); the sharding codec would read an empty shard as "all
                # fill value", so an emptied object must fail here.
                raise DataLossError(f"zarr: {path!r} is empty")
            return data
        if isinstance(byte_range, RangeByteRequest):
            start, stop = byte_range.start, byte_range.end
        else:
            size = self.files.size(path)
            if size is None:
                raise DataLossError(f"zarr: {path!r} is missing")
            if isinstance(byte_range, OffsetByteRequest):
                start, stop = byte_range.offset, size
            else:
                assert isinstance(byte_range, SuffixByteRequest)
                start, stop = max(0, size - byte_range.suffix), size
        buf = bytearray(max(0, stop - start))
        if buf:
            self.files.read_into(path, start, memoryview(buf))
        return bytes(buf)

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        proto = prototype or default_buffer_prototype()
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else proto.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.files.exists, self._path(key))

    # --------------------------------------------------------------- writes
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        # as_buffer_like: the bytes as they are, no copy for host buffers.
        await asyncio.to_thread(self._put, self._path(key), value.as_buffer_like())

    def _put(self, path: str, data: Any) -> None:
        # A key may nest (a node's zarr.json, or c/0/1 under the "/" key encoding): the directory must exist.
        self.files.makedirs(self.files.dirname(path))
        self.files.put(path, data)

    async def delete(self, key: str) -> None:
        self._check_writable()
        await asyncio.to_thread(self.files.delete, [self._path(key)])

    # -------------------------------------------------------------- listing
    # trackpoint opens arrays from the consolidated metadata and never lists;
    # a file layer cannot list keys at every depth on every store.
    async def list(self) -> AsyncIterator[str]:
        raise NotImplementedError("trackpoint's zarr store adapter does not list keys")
        yield ""  # pragma: no cover - makes this an async generator

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        raise NotImplementedError("trackpoint's zarr store adapter does not list keys")
        yield ""  # pragma: no cover

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        raise NotImplementedError("trackpoint's zarr store adapter does not list keys")
        yield ""  # pragma: no cover


def store(files: FileLayer, root: str, *, read_only: bool) -> Any:
    """A :class:`FileLayerStore` (typed ``Any`` where zarr's signatures want its own store types)."""
    return FileLayerStore(files, root, read_only=read_only)
