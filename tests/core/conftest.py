"""Fixtures for the core tests: a clean in-memory store per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trackpoint.backends import memory


@pytest.fixture(autouse=True)
def _clean_memory_store() -> Iterator[None]:
    memory.clear()
    yield
    memory.clear()
