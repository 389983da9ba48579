"""Create-only multipart uploads on S3 are refused by the server (moto answers 412 at completion); plain puts overwrite.

The create-only and compare-and-swap cases common to S3 and GCS are in
tests/backends/objectstore/test_objectstore_conditional.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from trackpoint.backends.stores.s3 import S3Files
from trackpoint.errors import CheckpointExistsError

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]

MiB = 1 << 20


def test_create_only_multipart_refuses_existing(make_files: Any, s3_bucket: str) -> None:
    files = make_files(part_size=5 * MiB)
    files.put(f"{s3_bucket}/big", b"small original", create_only=True)
    with pytest.raises(CheckpointExistsError, match="already exists"):
        files.put(f"{s3_bucket}/big", os.urandom(11 * MiB), create_only=True)  # refused at CompleteMultipartUpload
    assert files.read(f"{s3_bucket}/big") == b"small original"


def test_plain_put_overwrites(files: S3Files, s3_bucket: str) -> None:
    files.put(f"{s3_bucket}/x", b"1")
    files.put(f"{s3_bucket}/x", b"2")
    assert files.read(f"{s3_bucket}/x") == b"2"
