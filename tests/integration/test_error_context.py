"""Stores translate failures through the one table of trackpoint.errors, so errors carry their URL and key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from trackpoint import plugins
from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError, StoragePermissionError
from trackpoint.storage import CheckpointOptions


def test_local_store_errors_carry_the_path(tmp_path: Path) -> None:
    backend = plugins.open_backend(str(tmp_path / "ckpt"))
    missing = str(tmp_path / "nothing.index")
    with pytest.raises(CheckpointNotFoundError, match="local: cannot open") as info:
        backend.files.read_into(missing, 0, memoryview(bytearray(1)))  # type: ignore[attr-defined]
    assert info.value.url == missing
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_local_permission_errors_keep_their_advice(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.write_bytes(b"x")
    locked.chmod(0)
    backend = plugins.open_backend(str(tmp_path / "ckpt"))
    with pytest.raises(StoragePermissionError, match=r"check file permissions") as info:
        backend.files.read_into(str(locked), 0, memoryview(bytearray(1)))  # type: ignore[attr-defined]
    assert info.value.url == str(locked)


def test_object_store_errors_carry_url_and_key(s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    options = CheckpointOptions(storage_options=s3_storage_options)
    backend = plugins.open_backend(f"{s3_bucket}/run/ckpt", options)
    try:
        files = backend.files  # type: ignore[attr-defined]
        url = f"{s3_bucket}/run/ckpt-1.index"
        with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
            files.read_into(url, 0, memoryview(bytearray(4)))
        assert (info.value.url, info.value.key) == (url, "run/ckpt-1.index")
        files.put(url, b"first", create_only=True)
        # A failed create-only write is "exists", by the table's precondition rule.
        with pytest.raises(CheckpointExistsError, match="already exists") as exists:
            files.put(url, b"second", create_only=True)
        assert exists.value.url == url
    finally:
        backend.close()
