"""Fixtures for the Zarr backend tests: one backend per store (local disk, moto S3, fake-gcs-server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, StorageBackend


@dataclass
class Where:
    """A backend and a fresh directory URL on its store, plus the options that reach it."""

    backend: StorageBackend
    directory: str
    options: CheckpointOptions
    kind: str
    raw: Any  # an fsspec filesystem on the same store that bypasses trackpoint

    def prefix(self, name: str = "ckpt") -> str:
        return self.backend.join(self.directory, name)

    def raw_path(self, url: str) -> str:
        """``url`` as a path for :attr:`raw`."""
        return url.split("://", 1)[1] if "://" in url else url


def make_where(kind: str, request: pytest.FixtureRequest, tmp_path: Path, **backend_options: Any) -> Where:
    if kind == "local":
        import fsspec

        directory = str(tmp_path)
        storage: dict[str, Any] = {}
        raw = fsspec.filesystem("file")
    elif kind == "s3":
        directory = request.getfixturevalue("s3_bucket") + "/run-" + uuid.uuid4().hex[:6]
        storage = request.getfixturevalue("s3_storage_options")
        raw = request.getfixturevalue("s3_raw")
    else:
        directory = request.getfixturevalue("gcs_bucket") + "/run-" + uuid.uuid4().hex[:6]
        storage = request.getfixturevalue("gcs_storage_options")
        raw = request.getfixturevalue("gcs_raw")
    opts = CheckpointOptions(backend="zarr", storage_options=storage, backend_options=backend_options)
    return Where(open_backend(directory, opts), directory, opts, kind, raw)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    """The Zarr backend on each store."""
    w = make_where(request.param, request, tmp_path)
    yield w
    w.backend.close()


@pytest.fixture
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """The Zarr backend on local disk only."""
    return make_where("local", request, tmp_path)
