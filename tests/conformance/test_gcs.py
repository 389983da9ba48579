"""The shipped conformance kit against the ``gcs`` backend on a local fake-gcs-server."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from trackpoint.plugins import open_backend
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import CheckpointOptions, StorageBackend

pytestmark = [pytest.mark.gcs, pytest.mark.timeout(120)]


class TestGCS(BackendConformance):
    """Bundle format over GCSFiles; the backdoor is an independent gcsfs client."""

    # keep the emulator fast and its memory small: scale down.
    # Still above the backend's upload part size (set below) and the bundle's 8 MiB write buffer.
    huge_tensor_bytes: ClassVar[int] = 9 * 2**20 + 3
    many_tensors_count: ClassVar[int] = 200
    # Same create-only commit as TestBundleCreateOnly (tests/conformance/test_bundle.py).
    known_gaps: ClassVar[dict[str, str]] = {
        "test_failed_save_keeps_existing_checkpoint": (
            "overwrite=True deletes the old checkpoint (index first) before writing, so a failed "
            "overwrite leaves no checkpoint at that prefix"
        ),
        "test_commit_onto_existing_without_overwrite": (
            "write_shard onto a committed prefix already fails with CheckpointExistsError, because the "
            "data object names collide; commit is never reached"
        ),
    }

    @pytest.fixture(autouse=True)
    def _bind_raw(self, gcs_raw: Any) -> None:
        self._raw = gcs_raw

    @pytest.fixture
    def backend(self, gcs_storage_options: dict[str, Any]) -> StorageBackend:
        opts = CheckpointOptions(storage_options=gcs_storage_options, backend_options={"part_size": 4 * 2**20})
        return open_backend("gs://placeholder/x", opts)

    @pytest.fixture
    def base_url(self, gcs_bucket: str) -> str:
        return f"{gcs_bucket}/ckpts"

    def raw_list(self, directory: str) -> list[str]:
        root = directory.removeprefix("gs://")
        if not self._raw.exists(root):
            return []
        return sorted("gs://" + p for p in self._raw.find(root))

    def raw_read(self, path: str) -> bytes:
        data: bytes = self._raw.cat_file(path.removeprefix("gs://"))
        return data

    def raw_write(self, path: str, data: bytes) -> None:
        self._raw.pipe_file(path.removeprefix("gs://"), data)

    def raw_delete(self, path: str) -> None:
        self._raw.rm_file(path.removeprefix("gs://"))
