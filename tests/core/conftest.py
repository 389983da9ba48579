"""Fixtures for the core tests: a clean in-memory store per test, a record of garbage collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from trackpoint.backends import memory


@pytest.fixture(autouse=True)
def _clean_memory_store() -> Iterator[None]:
    memory.clear()
    yield
    memory.clear()


@pytest.fixture
def eager_full_collections() -> Iterator[list[int]]:
    """Thresholds that make CPython consider a full collection after every young one; yields the
    generations of the collections started meanwhile (clear it to start a new window)."""
    saved = gc.get_threshold()
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.collect()
    gc.set_threshold(10, 1, 1)
    gc.callbacks.append(record)
    try:
        yield started
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*saved)


@pytest.fixture
def bundle_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often bundle readers are asked for one tensor (``read``) and for several (``read_many``)."""
    from trackpoint.backends.bundle._reader import BundleReader

    calls = {"read": 0, "read_many": 0}
    read, read_many = BundleReader.read, BundleReader.read_many

    def counted_read(self: BundleReader, key: str, out: Any = None) -> Any:
        calls["read"] += 1
        return read(self, key, out)

    def counted_read_many(self: BundleReader, requests: Any) -> Any:
        calls["read_many"] += 1
        return read_many(self, requests)

    monkeypatch.setattr(BundleReader, "read", counted_read)
    monkeypatch.setattr(BundleReader, "read_many", counted_read_many)
    return calls
