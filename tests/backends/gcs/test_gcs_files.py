"""GCSFiles specifics: the gcs:// alias, escaped keys, resumable streams, deletes, chunk sizes.

What S3 and GCS share is in tests/backends/objectstore/test_objectstore_files.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from trackpoint.backends.stores.gcs import GCSFiles
from uploads import SINK_FROM, upload_peak

pytestmark = [pytest.mark.gcs, pytest.mark.timeout(60)]

MiB = 1 << 20


def test_gcs_scheme_alias(files: GCSFiles, gcs_bucket: str) -> None:
    bucket = gcs_bucket[len("gs://") :]
    files.put(f"gcs://{bucket}/alias", b"same object")
    assert files.read(f"gs://{bucket}/alias") == b"same object"


def test_keys_needing_escapes(files: GCSFiles, gcs_bucket: str) -> None:
    path = f"{gcs_bucket}/dir with space/ckpt+1%?#.index"
    files.put(path, b"escaped")
    assert files.read(path) == b"escaped"
    assert files.listdir(f"{gcs_bucket}/dir with space") == ["ckpt+1%?#.index"]


@pytest.mark.parametrize("size", [3 * MiB + 12345, 4 * MiB])  # short last chunk / exact multiple
def test_streamed_resumable_upload_is_exact(make_files: Any, gcs_bucket: str, gcs_raw: Any, size: int) -> None:
    files = make_files(part_size=MiB)
    data = os.urandom(size)
    with files.open_sink(f"{gcs_bucket}/big.data", create_only=True) as sink:
        for i in range(0, len(data), 700_001):  # writes straddle chunk boundaries
            sink.write(memoryview(data)[i : i + 700_001])
    assert gcs_raw.info(f"{gcs_bucket[5:]}/big.data")["size"] == len(data)
    assert gcs_raw.cat(f"{gcs_bucket[5:]}/big.data") == data


def test_nothing_visible_before_close_and_after_abort(make_files: Any, gcs_bucket: str) -> None:
    files = make_files(part_size=MiB)
    sink = files.open_sink(f"{gcs_bucket}/pending", create_only=True)
    sink.write(os.urandom(3 * MiB))
    assert files.size(f"{gcs_bucket}/pending") is None
    sink.abort()
    sink.abort()
    assert files.size(f"{gcs_bucket}/pending") is None


def test_delete_many_and_ignore_missing(files: GCSFiles, gcs_bucket: str) -> None:
    paths = [f"{gcs_bucket}/d/{i:03d}" for i in range(40)]
    for p in paths:
        files.put(p, b"x")
    assert len(files.listdir(f"{gcs_bucket}/d")) == 40
    files.delete([*paths, f"{gcs_bucket}/d/never-existed"])
    assert files.listdir(f"{gcs_bucket}/d") == []


def test_part_size_must_fit_resumable_chunks(make_files: Any) -> None:
    from trackpoint.errors import BackendError

    with pytest.raises(BackendError, match=r"part_size'\] must be at least 262144 bytes and a multiple of 262144"):
        make_files(part_size=MiB + 1)


def test_chunks_default_to_32_mib_and_options_override(make_files: Any) -> None:
    # Chunks go one at a time, so the default is larger than S3's 16 MiB
    # parts (same memory per writer, half the sequential requests).
    assert make_files().transfer.part_size == 32 * MiB
    assert make_files(part_size=8 * MiB).transfer.part_size == 8 * MiB


@pytest.mark.parametrize("size", [5 * MiB + 123, 8 * MiB])  # one request / resumable chunks of 4 MiB
def test_large_bodies_are_sent_without_copies(make_files: Any, gcs_bucket: str, gcs_raw: Any, size: int) -> None:
    files = make_files(part_size=8 * MiB if size < SINK_FROM else 4 * MiB)
    data = os.urandom(size)
    peak = upload_peak(files, gcs_bucket, data)
    # A sink holds its part (4 MiB) once; a single put sends the caller's
    # bytes. Neither joins the body with the metadata nor leaves a copy of
    # a whole chunk in the socket's send buffer: slices of 1 MiB go out.
    assert peak < (4 * MiB if size < SINK_FROM else 8 * MiB + 2 * MiB), peak / MiB
    assert gcs_raw.cat(f"{gcs_bucket[5:]}/big") == data
