"""S3Files reads and writes bytes exactly: single requests, multipart streams, ranges, listings, deletes."""

from __future__ import annotations

import os
from typing import Any

import pytest
from faultproxy import FaultProxy

from trackpoint.backends.s3 import S3Files
from trackpoint.errors import CheckpointNotFoundError, DataLossError

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]

MiB = 1 << 20


def test_small_put_roundtrips_and_lists(files: S3Files, s3_bucket: str, s3_raw: Any) -> None:
    files.put(f"{s3_bucket}/run/a.bin", b"hello world")
    files.put(f"{s3_bucket}/run/sub/b.bin", b"nested")
    assert files.read(f"{s3_bucket}/run/a.bin") == b"hello world"
    assert files.size(f"{s3_bucket}/run/a.bin") == 11
    assert files.size(f"{s3_bucket}/run/missing") is None
    assert files.listdir(f"{s3_bucket}/run") == ["a.bin"]  # files only, not sub-prefixes
    assert files.listdir(f"{s3_bucket}/nothing-here") == []
    assert s3_raw.cat(f"{s3_bucket[5:]}/run/a.bin") == b"hello world"


def test_empty_file(files: S3Files, s3_bucket: str) -> None:
    with files.open_sink(f"{s3_bucket}/empty", create_only=True):
        pass
    assert files.size(f"{s3_bucket}/empty") == 0
    assert files.read(f"{s3_bucket}/empty") == b""


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
    data = os.urandom(10 * MiB)
    files.put(f"{s3_bucket}/two-parts", data)
    assert s3_raw.info(f"{s3_bucket[5:]}/two-parts")["ETag"].endswith('-2"')
    assert files.read(f"{s3_bucket}/two-parts") == data


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


def test_parallel_split_ranged_reads(make_files: Any, s3_bucket: str) -> None:
    files = make_files(read_part_size=MiB)
    data = os.urandom(5 * MiB + 3)
    files.put(f"{s3_bucket}/r", data)
    whole = bytearray(len(data))
    files.read_into(f"{s3_bucket}/r", 0, memoryview(whole))  # six parallel range requests
    assert whole == data
    a, b, c = bytearray(10), bytearray(2 * MiB), bytearray(1)
    files.read_ranges(f"{s3_bucket}/r", [(7, memoryview(a)), (MiB - 5, memoryview(b)), (len(data) - 1, memoryview(c))])
    assert (bytes(a), bytes(b), bytes(c)) == (data[7:17], data[MiB - 5 : 3 * MiB - 5], data[-1:])


def test_read_into_typed_memoryview(files: S3Files, s3_bucket: str) -> None:
    import numpy as np

    arr = np.arange(1000, dtype=np.float32)
    files.put(f"{s3_bucket}/f32", arr.tobytes())
    out = np.empty(500, dtype=np.float32)
    files.read_into(f"{s3_bucket}/f32", 400 * 4, memoryview(out.data))
    np.testing.assert_array_equal(out, arr[400:900])


def test_short_object_is_data_loss(files: S3Files, s3_bucket: str) -> None:
    files.put(f"{s3_bucket}/short", b"12345")
    with pytest.raises(DataLossError, match=r"s3: 's3://tp-[0-9a-f]+/short' ends early: wanted bytes 3-12, got 2"):
        files.read_into(f"{s3_bucket}/short", 3, memoryview(bytearray(10)))
    with pytest.raises(DataLossError, match=r"shorter than expected"):
        files.read_into(f"{s3_bucket}/short", 50, memoryview(bytearray(1)))


def test_missing_object_and_bucket(files: S3Files, s3_bucket: str) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"s3: .*'s3://tp-[0-9a-f]+/nope' .*does not exist"):
        files.read(f"{s3_bucket}/nope")
    with pytest.raises(CheckpointNotFoundError, match=r"s3://no-such-bucket-tp/x"):
        files.put("s3://no-such-bucket-tp/x", b"1")
    # A missing bucket is a configuration error, not an empty directory.
    with pytest.raises(CheckpointNotFoundError, match=r"listing 's3://no-such-bucket-tp/dir/'.*NoSuchBucket"):
        files.listdir("s3://no-such-bucket-tp/dir")


def test_delete_batches_and_ignores_missing(
    files: S3Files, s3_bucket: str, s3_raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trackpoint.backends.s3 as s3_module

    # S3 takes 1,000 keys per DeleteObjects; a smaller batch exercises the same loop quickly.
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 10)
    paths = [f"{s3_bucket}/d/{i:04d}" for i in range(25)]
    s3_raw.pipe({p[len("s3://") :]: b"x" for p in paths})
    assert len(files.listdir(f"{s3_bucket}/d")) == 25
    files.delete([*paths, f"{s3_bucket}/d/never-existed"])
    assert files.listdir(f"{s3_bucket}/d") == []


def test_listing_pages_and_sees_other_writers_at_once(
    proxied: S3Files, proxy: FaultProxy, s3_bucket: str, s3_raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trackpoint.backends.s3 as s3_module

    monkeypatch.setattr(s3_module, "_LIST_PAGE", 10)  # same paging loop as 1,000-key pages, fewer objects
    assert proxied.listdir(f"{s3_bucket}/shared") == []
    s3_raw.pipe({f"{s3_bucket[5:]}/shared/o{i:02d}": b"1" for i in range(25)})  # written by another client
    proxy.clear()
    assert proxied.listdir(f"{s3_bucket}/shared") == [f"o{i:02d}" for i in range(25)]
    assert proxy.count("GET", r"list-type=2") == 3
    assert proxied.exists(f"{s3_bucket}/shared/o07")


def test_nearby_small_ranges_share_one_request(
    make_files: Any, proxy: FaultProxy, s3_bucket: str
) -> None:
    files = make_files(endpoint_url=proxy.url, coalesce_gap=100, read_part_size=MiB)
    data = os.urandom(4 * MiB)
    files.put(f"{s3_bucket}/c", data)
    proxy.clear()
    near = [(i * 64, memoryview(bytearray(40))) for i in range(500)]  # 24-byte gaps: one request
    far = [(2 * MiB + i * 1000, memoryview(bytearray(10))) for i in range(3)]  # 990-byte gaps: three
    files.read_ranges(f"{s3_bucket}/c", near + far)
    assert proxy.count("GET") == 4
    assert all(bytes(v) == data[o : o + v.nbytes] for o, v in near + far)


def test_modified_comes_from_object_metadata(files: S3Files, s3_bucket: str) -> None:
    import time

    files.put(f"{s3_bucket}/m/obj", b"1")
    stamp = files.modified(f"{s3_bucket}/m/obj")
    assert stamp is not None and abs(stamp - time.time()) < 120
    assert files.modified(f"{s3_bucket}/m/missing") is None
    assert files.modified(f"{s3_bucket}/m") is None  # no object, no time: never "old"
