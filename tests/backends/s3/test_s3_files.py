"""S3Files specifics: multipart streams, missing buckets, batched deletes, coalesced ranges.

What S3 and GCS share is in tests/backends/objectstore/test_objectstore_files.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from faultproxy import FaultProxy
from trackpoint.backends.stores.s3 import S3Files
from trackpoint.errors import CheckpointNotFoundError
from uploads import SINK_FROM, upload_peak

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]

MiB = 1 << 20


def test_streamed_multipart_upload_is_exact(make_files: Any, s3_bucket: str, s3_raw: Any) -> None:
    files = make_files(part_size=5 * MiB, max_inflight_parts=2)
    data = os.urandom(17 * MiB + 12345)  # 4 parts, the last one short
    with files.open_sink(f"{s3_bucket}/big.data", create_only=True) as sink:
        for i in range(0, len(data), 3 * MiB + 7):  # writes straddle part boundaries
            sink.write(memoryview(data)[i : i + 3 * MiB + 7])
    info = s3_raw.info(f"{s3_bucket[5:]}/big.data")
    assert info["size"] == len(data)
    assert info["ETag"].endswith('-4"'), "expected a 4-part multipart upload"
    assert s3_raw.cat(f"{s3_bucket[5:]}/big.data") == data


def test_exact_part_multiple_completes_without_empty_part(make_files: Any, s3_bucket: str, s3_raw: Any) -> None:
    files = make_files(part_size=5 * MiB)
    data = os.urandom(15 * MiB)  # 10 MiB would go in one request (a part and the smallest part)
    files.put(f"{s3_bucket}/three-parts", data)
    assert s3_raw.info(f"{s3_bucket[5:]}/three-parts")["ETag"].endswith('-3"')
    assert files.read(f"{s3_bucket}/three-parts") == data


def test_nothing_visible_before_close_and_after_abort(make_files: Any, s3_bucket: str, s3_raw: Any) -> None:
    files = make_files(part_size=5 * MiB)
    sink = files.open_sink(f"{s3_bucket}/pending", create_only=True)
    sink.write(os.urandom(11 * MiB))  # two parts already uploading
    assert files.size(f"{s3_bucket}/pending") is None
    sink.abort()
    sink.abort()  # idempotent
    assert files.size(f"{s3_bucket}/pending") is None
    uploads = s3_raw.call_s3("list_multipart_uploads", Bucket=s3_bucket[5:])
    assert not uploads.get("Uploads"), "abort must not leave an unfinished multipart upload behind"


def test_missing_bucket_listing_is_not_found(files: S3Files) -> None:
    # Missing objects and a put into a missing bucket: tests/backends/objectstore/test_objectstore_files.py.
    # A missing bucket is a configuration error, not an empty directory.
    with pytest.raises(CheckpointNotFoundError, match=r"listing 's3://no-such-bucket-tp/dir/'.*NoSuchBucket"):
        files.listdir("s3://no-such-bucket-tp/dir")


def test_delete_batches_and_ignores_missing(
    files: S3Files, s3_bucket: str, s3_raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trackpoint.backends.stores.s3 as s3_module

    # S3 takes 1,000 keys per DeleteObjects; a smaller batch exercises the same loop quickly.
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 10)
    paths = [f"{s3_bucket}/d/{i:04d}" for i in range(25)]
    s3_raw.pipe({p[len("s3://") :]: b"x" for p in paths})
    assert len(files.listdir(f"{s3_bucket}/d")) == 25
    files.delete([*paths, f"{s3_bucket}/d/never-existed"])
    assert files.listdir(f"{s3_bucket}/d") == []


def test_nearby_small_ranges_share_one_request(make_files: Any, proxy: FaultProxy, s3_bucket: str) -> None:
    files = make_files(endpoint_url=proxy.url, coalesce_gap=100, read_part_size=MiB)
    data = os.urandom(4 * MiB)
    files.put(f"{s3_bucket}/c", data)
    proxy.clear()
    near = [(i * 64, memoryview(bytearray(40))) for i in range(500)]  # 24-byte gaps: one request
    far = [(2 * MiB + i * 1000, memoryview(bytearray(10))) for i in range(3)]  # 990-byte gaps: three
    files.read_ranges(f"{s3_bucket}/c", near + far)
    assert proxy.count("GET") == 4
    assert all(bytes(v) == data[o : o + v.nbytes] for o, v in near + far)


@pytest.mark.parametrize("size", [5 * MiB + 123, 12 * MiB])  # one request / a multipart upload of 6 MiB parts
def test_bodies_are_sent_without_copies(make_files: Any, s3_bucket: str, s3_raw: Any, size: int) -> None:
    files = make_files(part_size=8 * MiB if size < SINK_FROM else 6 * MiB, max_inflight_parts=1)
    data = os.urandom(size)
    peak = upload_peak(files, s3_bucket, data)
    # A single put sends the caller's bytes; a sink holds two parts of 6 MiB (one in flight, one filling),
    # and before its first part also the smallest part S3 takes (5 MiB), so that an object a little over
    # one part goes in one request. The HTTP client reads a body in chunks of up to 1 MiB; a body copied
    # whole (aiohttp's payload for botocore's BytesIO did that: 5.5 MiB and 18.6 MiB here) adds a part's size.
    assert peak < (3 * MiB if size < SINK_FROM else 12 * MiB + 5 * MiB + 3 * MiB), peak / MiB
    assert s3_raw.cat(f"{s3_bucket[5:]}/big") == data
