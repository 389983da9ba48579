"""The Zarr backend passes the whole conformance kit on local disk, on S3 (moto) and on GCS (fake-gcs-server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import SMALL_PAGE_OBJECTS
from trackpoint.plugins import open_backend
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import CheckpointOptions, StorageBackend

pytest.importorskip("zarr")


class _ZarrConformance(BackendConformance):
    """Backdoor helpers on an fsspec filesystem that bypasses trackpoint."""

    raw_fs: Any
    scheme: str

    def _strip(self, url: str) -> str:
        return url.split("://", 1)[1] if "://" in url else url

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{path}" if self.scheme else path

    def raw_list(self, directory: str) -> list[str]:
        try:
            found = self.raw_fs.find(self._strip(directory))
        except FileNotFoundError:
            return []
        return sorted(self._url(p) for p in found)

    def raw_read(self, path: str) -> bytes:
        data: bytes = self.raw_fs.cat_file(self._strip(path))
        return data

    def raw_write(self, path: str, data: bytes) -> None:
        self.raw_fs.pipe_file(self._strip(path), data)

    def raw_delete(self, path: str) -> None:
        self.raw_fs.rm_file(self._strip(path))

    def missing_location(self, base_url: str) -> str | None:
        # On an object store, a bucket nobody created (the kit's MissingLocation tests); a local directory
        # that does not exist is an empty one.
        return f"{self.scheme}://trackpoint-absent-{uuid.uuid4().hex[:16]}/ckpts" if self.scheme else None


class TestZarrLocal(_ZarrConformance):
    scheme = ""

    @pytest.fixture
    def base_url(self, tmp_path: Path) -> str:
        import fsspec

        self.raw_fs = fsspec.filesystem("file")
        return str(tmp_path / "store")

    @pytest.fixture
    def backend(self, base_url: str) -> Iterator[StorageBackend]:
        b = open_backend(base_url, CheckpointOptions(backend="zarr"))
        assert b.name == "zarr"
        yield b
        b.close()


@pytest.mark.s3
class TestZarrS3(_ZarrConformance):
    scheme = "s3"
    # moto on 2 shared cores: the kit's 24 MiB tensor costs seconds per test.
    huge_tensor_bytes = 6 * 2**20 + 3
    many_tensors_count = 500
    many_objects_count = SMALL_PAGE_OBJECTS  # with small_pages: several pages of each listing

    @pytest.fixture(autouse=True)
    def _small_pages(self, small_pages: None) -> None:
        pass

    @pytest.fixture
    def base_url(self, s3_bucket: str, s3_raw: Any) -> str:
        self.raw_fs = s3_raw
        return f"{s3_bucket}/run-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def backend(self, base_url: str, s3_storage_options: dict[str, Any]) -> Iterator[StorageBackend]:
        b = open_backend(base_url, CheckpointOptions(backend="zarr", storage_options=s3_storage_options))
        yield b
        b.close()


@pytest.mark.gcs
class TestZarrGCS(_ZarrConformance):
    scheme = "gs"
    huge_tensor_bytes = 6 * 2**20 + 3
    many_tensors_count = 500
    many_objects_count = SMALL_PAGE_OBJECTS  # with small_pages: several pages of each listing

    @pytest.fixture(autouse=True)
    def _small_pages(self, small_pages: None) -> None:
        pass

    @pytest.fixture
    def base_url(self, gcs_bucket: str, gcs_raw: Any) -> str:
        self.raw_fs = gcs_raw
        return f"{gcs_bucket}/run-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def backend(self, base_url: str, gcs_storage_options: dict[str, Any]) -> Iterator[StorageBackend]:
        b = open_backend("zarr+" + base_url, CheckpointOptions(storage_options=gcs_storage_options))
        yield b
        b.close()
