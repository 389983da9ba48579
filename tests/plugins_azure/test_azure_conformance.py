"""The trackpoint-azure plugin passes the whole conformance kit against Azurite.

The backend is opened through the plugin manager with an ``az://`` URL, as users get it: this also
proves the ``trackpoint.backends`` entry point of the installed ``trackpoint-azure`` distribution.
The backdoor is the Azure SDK, used directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
from azure.storage.blob import BlobServiceClient

from azurite import Azurite
from trackpoint.plugins import open_backend
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import CheckpointOptions, StorageBackend

pytestmark = [pytest.mark.azure, pytest.mark.timeout(120)]


class TestAzure(BackendConformance):
    """Bundle format over AzureStore on Azurite."""

    # Azurite keeps every blob in memory: scale the heavy tests down as for S3 and GCS
    # (still above the 1 MiB part size used here and the bundle's 8 MiB write buffer).
    huge_tensor_bytes: ClassVar[int] = 9 * 2**20 + 3
    many_tensors_count: ClassVar[int] = 200
    # AzureStore lists 5,000 blobs per page, more than Azurite writes in minutes; the kit's 120 checkpoints
    # would still take 7 s here, and 25 take one.
    many_objects_count: ClassVar[int] = 25
    # No known_gaps: the whole kit passes, a failed overwrite keeping the old checkpoint included.

    @pytest.fixture(autouse=True)
    def _bind_raw(self, azurite: Azurite, azurite_container: str) -> Iterator[None]:
        self._service = BlobServiceClient.from_connection_string(azurite.connection_string)
        self._container = self._service.get_container_client(azurite_container)
        yield
        self._service.close()

    @pytest.fixture
    def backend(self, azurite: Azurite) -> Iterator[StorageBackend]:
        opts = CheckpointOptions(
            storage_options={"connection_string": azurite.connection_string},
            backend_options={"part_size": 2**20},  # several staged blocks per data file
        )
        b = open_backend("az://placeholder/x", opts)
        assert b.name == "azure"
        yield b
        b.close()

    @pytest.fixture
    def base_url(self, azurite_container: str) -> str:
        return f"az://{azurite_container}/ckpts"

    def _name(self, path: str) -> str:
        prefix = f"az://{self._container.container_name}/"
        assert path.startswith(prefix), path
        return path[len(prefix) :]

    def raw_list(self, directory: str) -> list[str]:
        start = self._name(directory).rstrip("/") + "/"
        return sorted(f"az://{self._container.container_name}/{b.name}" for b in self._container.list_blobs(start))

    def raw_read(self, path: str) -> bytes:
        data: bytes = self._container.download_blob(self._name(path)).readall()
        return data

    def raw_write(self, path: str, data: bytes) -> None:
        self._container.upload_blob(self._name(path), data, overwrite=True)

    def raw_delete(self, path: str) -> None:
        self._container.delete_blob(self._name(path))

    def missing_location(self, base_url: str) -> str | None:
        # A container that does not exist: reads, lists and saves there must raise CheckpointNotFoundError.
        return f"az://trackpoint-absent-{uuid.uuid4().hex[:16]}/ckpts"
