"""The shipped conformance kit, run against the local bundle backend with both commit strategies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import Capabilities, StorageBackend


class _LocalBackdoor(BackendConformance):
    """Raw access to the local files under the backend."""

    def raw_list(self, directory: str) -> list[str]:
        out: list[str] = []
        for root, _dirs, files in os.walk(directory):
            out.extend(os.path.join(root, f) for f in files)
        return sorted(out)

    def raw_read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def raw_write(self, path: str, data: bytes) -> None:
        Path(path).write_bytes(data)

    def raw_delete(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    @pytest.fixture
    def base_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "ckpts")


class TestBundleRename(_LocalBackdoor):
    """Local disk: commit by rename (TensorFlow's layout)."""

    @pytest.fixture
    def backend(self) -> BundleBackend:
        return BundleBackend(LocalFiles())

    def reopen(self, backend: StorageBackend) -> StorageBackend:
        return BundleBackend(LocalFiles())


class TestBundleCreateOnly(_LocalBackdoor):
    """Local disk declared as an object store: commit by one create-only index write."""

    @pytest.fixture
    def backend(self) -> BundleBackend:
        return BundleBackend(LocalFiles(capabilities=Capabilities(atomic_rename=False, conditional_create=True)))

    def reopen(self, backend: StorageBackend) -> StorageBackend:
        return BundleBackend(LocalFiles(capabilities=Capabilities(atomic_rename=False, conditional_create=True)))
