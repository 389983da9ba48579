"""What the object-store layer needs of a store's client calls: write ids that come back.

These tests reach below the :class:`~trackpoint.storage.StorageBackend`, to the
:class:`~trackpoint.backends.stores.ObjectStore` it is built on, because what
they check cannot be seen through a save on a healthy connection: a store
whose ``object_stat`` drops the write id passes every other test, and only
reports a commit that merely timed out as lost to another writer. A backend
not built on an ``ObjectStore`` skips them.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from trackpoint.errors import CheckpointExistsError, ConcurrentModificationError
from trackpoint.plugins.testing._base import BackendTestBase
from trackpoint.storage import MUST_NOT_EXIST, StorageBackend

if TYPE_CHECKING:
    from trackpoint.backends.stores import ObjectStat, ObjectStore

__all__ = ["ObjectStoreWrites"]

_WHY = (
    "object_put and upload_begin must store the write id they are given as user metadata under "
    "trackpoint.backends.stores.WRITE_ID_METADATA_KEY, and object_stat must return it as ObjectStat.write_id; "
    "without it a create-only or compare-and-swap write whose response was lost (a commit that timed out) "
    "is reported as lost to another writer (docs/writing-a-backend.md, 'Why a write id')"
)


def _is_async(store: ObjectStore, call: str) -> bool:
    # The base decides per class whether a client call is awaited; a stand-in must match it.
    return inspect.iscoroutinefunction(getattr(type(store), call))


@contextmanager
def _observed(store: ObjectStore, call: str, after: Callable[[tuple[Any, ...]], None]) -> Iterator[None]:
    """Run ``after(args)`` once each client call ``call`` of ``store`` has returned; it may raise."""
    real = getattr(store, call)
    wrapper: Callable[..., Any]
    if _is_async(store, call):

        async def wrapper(*args: Any) -> Any:
            result = await real(*args)
            after(args)
            return result

    else:

        def wrapper(*args: Any) -> Any:
            result = real(*args)
            after(args)
            return result

    # An instance attribute: the base looks client calls up on the instance, so only this store changes.
    setattr(store, call, wrapper)
    try:
        yield
    finally:
        delattr(store, call)


def _stat(store: ObjectStore, bucket: str, key: str) -> ObjectStat | None:
    """One ``object_stat`` client call, awaited on the store's loop when it is a coroutine function."""
    if _is_async(store, "object_stat"):
        return asyncio.run_coroutine_threadsafe(store.object_stat(bucket, key), store.loop).result()  # type: ignore[arg-type]
    result: ObjectStat | None = store.object_stat(bucket, key)  # type: ignore[assignment]
    return result


class ObjectStoreWrites(BackendTestBase):
    """Write ids: stored by every write, returned by ``object_stat``, and used to recognise one's own retried write."""

    def object_store(self, backend: StorageBackend) -> ObjectStore | None:
        """The :class:`~trackpoint.backends.stores.ObjectStore` under ``backend``, ``None`` if it has none.

        The default finds the store of a format over a file layer (``backend.files``, as
        ``BundleBackend`` keeps it). Override it when your backend keeps its store elsewhere.
        """
        from trackpoint.backends.stores import ObjectStore

        files = getattr(backend, "files", None)
        return files if isinstance(files, ObjectStore) else None

    def _store(self, backend: StorageBackend) -> ObjectStore:
        store = self.object_store(backend)
        if store is None:
            name = backend.name or type(backend).__name__
            pytest.skip(f"backend {name!r} is not built on trackpoint.backends.stores.ObjectStore")
        return store

    def test_writes_store_their_write_id(self, backend: StorageBackend, base_url: str) -> None:
        store = self._store(backend)
        given: list[tuple[str, str, str, str]] = []  # (call, bucket, key, write id)
        lock = threading.Lock()

        def record(call: str) -> Callable[[tuple[Any, ...]], None]:
            def after(args: tuple[Any, ...]) -> None:
                with lock:
                    given.append((call, args[0], args[1], args[-1]))

            return after

        small = self.url(backend, base_url, "write-ids", "small")
        large = self.url(backend, base_url, "write-ids", "large")
        from trackpoint.backends.stores import ObjectStore

        # The four upload calls are optional: without them every object goes in one object_put.
        multipart = type(store).upload_begin is not ObjectStore.upload_begin
        size = 0
        with (
            _observed(store, "object_put", record("object_put")),
            _observed(store, "upload_begin", record("upload_begin")),
        ):
            store.put(small, b"a small object", create_only=True)
            if multipart:
                # Above a part and the bytes held back behind it: the sink starts an upload.
                size = 2 * store.transfer.part_size + max(store.min_part_size, 2**16) + 1
                sink = store.open_sink(large, create_only=True)
                try:
                    chunk = bytes(range(256)) * 4096
                    for start in range(0, size, len(chunk)):
                        sink.write(chunk[: size - start])
                except BaseException:
                    sink.abort()
                    raise
                sink.close()
        calls = {call for call, *_ in given}
        assert "object_put" in calls, f"writing {small!r} made no object_put call"
        if multipart:
            assert "upload_begin" in calls, f"writing {large!r} ({size} bytes) started no upload"
        for call, bucket, key, write_id in given:
            stat = _stat(store, bucket, key)
            assert stat is not None, f"object_stat finds no object at {store.url(bucket, key)!r} after {call}"
            assert stat.write_id == write_id, (
                f"object_stat of {store.url(bucket, key)!r} reports write_id {stat.write_id!r}, but {call} was given "
                f"{write_id!r}: {_WHY}"
            )

    def test_a_write_whose_response_was_lost_is_its_own(self, backend: StorageBackend, base_url: str) -> None:
        """A commit point written create-only, then replaced compare-and-swap, each answer lost once."""
        store = self._store(backend)
        if store.transfer.retries == 0:
            pytest.skip("the store under test retries nothing (TransferOptions.retries=0)")
        path = self.url(backend, base_url, "lost", "ckpt-1.index")
        bucket, key = store.split(path)
        lost: list[str] = []

        def drop_the_answer(args: tuple[Any, ...]) -> None:
            # The request reached the service and wrote the object; its answer never arrives.
            if (args[0], args[1]) == (bucket, key) and len(lost) < 2 and not lost.count(args[-1]):
                lost.append(args[-1])
                raise TimeoutError("the conformance kit dropped the response of this write")

        with _observed(store, "object_put", drop_the_answer):
            try:
                first = store.write_versioned(path, b"first", if_version=MUST_NOT_EXIST)
            except (ConcurrentModificationError, CheckpointExistsError) as exc:
                pytest.fail(f"a create-only write whose response was lost was reported as lost ({exc}): {_WHY}")
            try:
                second = store.write_versioned(path, b"second", if_version=first)
            except (ConcurrentModificationError, CheckpointExistsError) as exc:
                pytest.fail(f"a compare-and-swap write whose response was lost was reported as lost ({exc}): {_WHY}")
        assert len(lost) == 2, f"the kit meant to drop two answers of object_put on {path!r}, dropped {len(lost)}"
        got = store.read_versioned(path)
        assert got is not None and (got.data, got.version) == (b"second", second), (
            f"{path!r} should hold the second write at version {second!r}, holds {got!r}"
        )
