"""The shipped conformance kit against the ``s3`` backend on a local moto server."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from trackpoint.plugins import open_backend
from trackpoint.plugins.testing import BackendConformance
from trackpoint.storage import CheckpointOptions, StorageBackend

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]


class TestS3(BackendConformance):
    """Bundle format over S3Files; the backdoor is an independent s3fs client."""

    # moto keeps every upload in memory and works at ~50 MiB/s here: scale down.
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
    def _bind_raw(self, s3_raw: Any) -> None:
        self._raw = s3_raw

    @pytest.fixture
    def backend(self, s3_storage_options: dict[str, Any]) -> StorageBackend:
        opts = CheckpointOptions(storage_options=s3_storage_options, backend_options={"part_size": 5 * 2**20})
        return open_backend("s3://placeholder/x", opts)

    @pytest.fixture
    def base_url(self, s3_bucket: str) -> str:
        return f"{s3_bucket}/ckpts"

    def raw_list(self, directory: str) -> list[str]:
        root = directory.removeprefix("s3://")
        if not self._raw.exists(root):
            return []
        return sorted("s3://" + p for p in self._raw.find(root))

    def raw_read(self, path: str) -> bytes:
        data: bytes = self._raw.cat_file(path.removeprefix("s3://"))
        return data

    def raw_write(self, path: str, data: bytes) -> None:
        self._raw.pipe_file(path.removeprefix("s3://"), data)

    def raw_delete(self, path: str) -> None:
        self._raw.rm_file(path.removeprefix("s3://"))
