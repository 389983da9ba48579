"""GCSFiles reads and writes bytes exactly: single requests, resumable streams, ranges, listings, deletes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from faultproxy import FaultProxy

from trackpoint.backends.gcs import GCSFiles
from trackpoint.errors import CheckpointNotFoundError, DataLossError

pytestmark = [pytest.mark.gcs, pytest.mark.timeout(60)]

MiB = 1 << 20


def test_small_put_roundtrips_and_lists(files: GCSFiles, gcs_bucket: str, gcs_raw: Any) -> None:
    files.put(f"{gcs_bucket}/run/a.bin", b"hello world")
    files.put(f"{gcs_bucket}/run/sub/b.bin", b"nested")
    assert files.read(f"{gcs_bucket}/run/a.bin") == b"hello world"
    assert files.size(f"{gcs_bucket}/run/a.bin") == 11
    assert files.size(f"{gcs_bucket}/run/missing") is None
    assert files.listdir(f"{gcs_bucket}/run") == ["a.bin"]
    assert files.listdir(f"{gcs_bucket}/nothing-here") == []
    assert gcs_raw.cat(f"{gcs_bucket[5:]}/run/a.bin") == b"hello world"


def test_gcs_scheme_alias(files: GCSFiles, gcs_bucket: str) -> None:
    bucket = gcs_bucket[len("gs://") :]
    files.put(f"gcs://{bucket}/alias", b"same object")
    assert files.read(f"gs://{bucket}/alias") == b"same object"


def test_keys_needing_escapes(files: GCSFiles, gcs_bucket: str) -> None:
    path = f"{gcs_bucket}/dir with space/ckpt+1%?#.index"
    files.put(path, b"escaped")
    assert files.read(path) == b"escaped"
    assert files.listdir(f"{gcs_bucket}/dir with space") == ["ckpt+1%?#.index"]


def test_empty_file(files: GCSFiles, gcs_bucket: str) -> None:
    with files.open_sink(f"{gcs_bucket}/empty", create_only=True):
        pass
    assert files.size(f"{gcs_bucket}/empty") == 0
    assert files.read(f"{gcs_bucket}/empty") == b""


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


def test_parallel_split_ranged_reads(make_files: Any, gcs_bucket: str) -> None:
    files = make_files(read_part_size=MiB)
    data = os.urandom(5 * MiB + 3)
    files.put(f"{gcs_bucket}/r", data)
    whole = bytearray(len(data))
    files.read_into(f"{gcs_bucket}/r", 0, memoryview(whole))
    assert whole == data
    a, b, c = bytearray(10), bytearray(2 * MiB), bytearray(1)
    files.read_ranges(f"{gcs_bucket}/r", [(7, memoryview(a)), (MiB - 5, memoryview(b)), (len(data) - 1, memoryview(c))])
    assert (bytes(a), bytes(b), bytes(c)) == (data[7:17], data[MiB - 5 : 3 * MiB - 5], data[-1:])


def test_read_into_typed_memoryview(files: GCSFiles, gcs_bucket: str) -> None:
    arr = np.arange(1000, dtype=np.float64)
    files.put(f"{gcs_bucket}/f64", arr.tobytes())
    out = np.empty(500, dtype=np.float64)
    files.read_into(f"{gcs_bucket}/f64", 400 * 8, memoryview(out.data))
    np.testing.assert_array_equal(out, arr[400:900])


def test_short_object_is_data_loss(files: GCSFiles, gcs_bucket: str) -> None:
    files.put(f"{gcs_bucket}/short", b"12345")
    with pytest.raises(DataLossError, match=r"gcs: 'gs://tp-[0-9a-f]+/short' ends early: wanted bytes 3-12, got 2"):
        files.read_into(f"{gcs_bucket}/short", 3, memoryview(bytearray(10)))
    with pytest.raises(DataLossError, match=r"shorter than expected"):
        files.read_into(f"{gcs_bucket}/short", 50, memoryview(bytearray(1)))


def test_missing_object_and_bucket(files: GCSFiles, gcs_bucket: str) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"gcs: .*'gs://tp-[0-9a-f]+/nope' .*does not exist"):
        files.read(f"{gcs_bucket}/nope")
    with pytest.raises(CheckpointNotFoundError, match=r"gs://no-such-bucket-tp/x"):
        files.put("gs://no-such-bucket-tp/x", b"1")


def test_delete_many_and_ignore_missing(files: GCSFiles, gcs_bucket: str) -> None:
    paths = [f"{gcs_bucket}/d/{i:03d}" for i in range(40)]
    for p in paths:
        files.put(p, b"x")
    assert len(files.listdir(f"{gcs_bucket}/d")) == 40
    files.delete([*paths, f"{gcs_bucket}/d/never-existed"])
    assert files.listdir(f"{gcs_bucket}/d") == []


def test_listing_pages_and_sees_other_writers(
    proxied: GCSFiles, proxy: FaultProxy, gcs_bucket: str, gcs_raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trackpoint.backends.gcs as gcs_module

    monkeypatch.setattr(gcs_module, "_LIST_PAGE", 10)  # same paging loop as 1,000-item pages, fewer objects
    assert proxied.listdir(f"{gcs_bucket}/shared") == []
    gcs_raw.pipe({f"{gcs_bucket[5:]}/shared/o{i:02d}": b"1" for i in range(25)})  # written by another client
    proxy.clear()
    assert proxied.listdir(f"{gcs_bucket}/shared") == [f"o{i:02d}" for i in range(25)]
    assert proxy.count("GET", r"/o\?") == 3


def test_part_size_must_fit_resumable_chunks(make_files: Any) -> None:
    from trackpoint.errors import BackendError

    with pytest.raises(BackendError, match=r"part_size'\] must be at least 262144 bytes and a multiple of 262144"):
        make_files(part_size=MiB + 1)


def test_modified_comes_from_object_metadata(files: GCSFiles, gcs_bucket: str) -> None:
    import time

    files.put(f"{gcs_bucket}/m/obj", b"1")
    stamp = files.modified(f"{gcs_bucket}/m/obj")
    assert stamp is not None and abs(stamp - time.time()) < 120
    assert files.modified(f"{gcs_bucket}/m/missing") is None
    assert files.modified(f"{gcs_bucket}/m") is None  # no object, no time: never "old"
