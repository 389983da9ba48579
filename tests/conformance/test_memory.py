"""The memory backend passes the whole conformance kit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from trackpoint.backends import memory
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import StorageBackend


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
