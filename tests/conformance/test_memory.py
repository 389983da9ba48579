"""The memory backend passes the whole conformance kit."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from trackpoint.backends import memory
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import StorageBackend

K = TypeVar("K")
V = TypeVar("V")


class _Intercepted(dict[K, V]):
    """One of the store's tables that announces each entry it is about to set or remove."""

    def __init__(self, contents: dict[K, V], before_each: Callable[[str], None], table: str) -> None:
        super().__init__(contents)
        self._before_each = before_each
        self._table = table

    def __setitem__(self, key: K, value: V) -> None:
        self._before_each(f"{self._table}[{key!r}]")
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        self._before_each(f"{self._table}[{key!r}]")
        super().__delitem__(key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:  # removing what is not there changes nothing
            self._before_each(f"{self._table}[{key!r}]")
        return super().pop(key, *default)


def _entries() -> dict[str, tuple[dict[str, bytes], str]]:
    """Every record of the store by raw path: ``prefix/key`` (committed), ``prefix.pending-<save>-<shard>/key``."""
    out: dict[str, tuple[dict[str, bytes], str]] = {}
    for prefix, ckpt in memory._STORE.committed.items():
        for key in ckpt.records:
            out[f"{prefix}/{key}"] = (ckpt.records, key)
    for (prefix, save_id, shard), records in memory._STORE.pending.items():
        for key in records:
            out[f"{prefix}.pending-{save_id}-{shard}/{key}"] = (records, key)
    return out


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        yield memory.MemoryBackend()
        memory.clear()  # huge tensors must not pile up across tests

    @pytest.fixture
    def base_url(self) -> str:
        return f"memory://conformance-{uuid.uuid4().hex}"

    def reopen(self, backend: StorageBackend) -> StorageBackend:
        return memory.MemoryBackend()  # every instance works on the process's one store

    def raw_list(self, directory: str) -> list[str]:
        d = memory._norm(directory) + "/"
        with memory._STORE.lock:
            paths = list(_entries()) + list(memory._STORE.files)
        return sorted(p for p in paths if p.startswith(d))

    def raw_read(self, path: str) -> bytes:
        with memory._STORE.lock:
            if path in memory._STORE.files:
                return memory._STORE.files[path][0]
            records, key = _entries()[path]
            return records[key]

    def raw_write(self, path: str, data: bytes) -> None:
        with memory._STORE.lock:
            if path in memory._STORE.files:
                memory._STORE.counter += 1
                memory._STORE.files[path] = (data, memory._STORE.counter)
                return
            entry = _entries().get(path)
            if entry is None:  # re-create a deleted record of a committed checkpoint
                prefix = next(p for p in memory._STORE.committed if path.startswith(p + "/"))
                entry = (memory._STORE.committed[prefix].records, path[len(prefix) + 1 :])
            records, key = entry
            records[key] = data

    def raw_delete(self, path: str) -> None:
        with memory._STORE.lock:
            if memory._STORE.files.pop(path, None) is None:
                records, key = _entries()[path]
                del records[key]

    @contextlib.contextmanager
    def intercept_raw_writes(self, backend: StorageBackend, before_each: Callable[[str], None]) -> Iterator[None]:
        # The store's raw writes are the entries its three tables gain and lose: a checkpoint committed or
        # removed (committed), a shard staged or dropped (pending), a small file written or deleted (files).
        store = memory._STORE
        tables = ("committed", "pending", "files")
        with store.lock:
            originals = {name: getattr(store, name) for name in tables}
            for name, table in originals.items():
                setattr(store, name, _Intercepted(table, before_each, name))
        try:
            yield
        finally:
            with store.lock:
                for name, table in originals.items():
                    table.clear()
                    table.update(getattr(store, name))
                    setattr(store, name, table)
