"""Fixtures for the bundle backend tests: one backend per commit strategy on a local disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.storage import Capabilities, CheckpointOptions

#: LocalFiles declared like an object store: no atomic rename, create-only writes.
OBJECT_STORE_CAPS = Capabilities(atomic_rename=False, conditional_create=True)


@pytest.fixture(params=["rename", "create"])
def backend(request: pytest.FixtureRequest) -> BundleBackend:
    """A bundle backend using the rename (local) or the create-only (object store) commit."""
    caps = None if request.param == "rename" else OBJECT_STORE_CAPS
    # One writer by default so file listings are predictable; tests of sharding pass options.
    return BundleBackend(LocalFiles(capabilities=caps), options=CheckpointOptions(num_writers=1))


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    """A checkpoint prefix in a fresh directory."""
    return str(tmp_path / "ckpt-1")
