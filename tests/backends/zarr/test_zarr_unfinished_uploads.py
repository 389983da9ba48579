"""Unfinished uploads that killed Zarr saves leave are leftovers: listed by ``ls --all``, aborted by ``cleanup``.

An incomplete S3 multipart upload is invisible to object listings but stored
(and billed) until aborted. A Zarr save streams each chunk as one object of
its array's directory, ``P.zarr/v-<save_id>/<array>/c.<i>``; the uploads of an
abandoned save are listed with it, count for its age (their newest part), and
are aborted with it, also those of a save that completed no object at all.
All against the moto server, as the store really is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import numpy as np
import pytest

from faultproxy import FaultProxy, Rule, kill_when_fired
from servers import ObjectStore, object_store
from trackpoint._units import human_bytes
from trackpoint.backends.stores import UnfinishedUpload
from trackpoint.backends.stores.s3 import S3Files
from trackpoint.backends.zarr import ZarrBackend
from trackpoint.cli import main
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, WriteItem

pytestmark = [pytest.mark.s3, pytest.mark.timeout(90)]


@pytest.fixture
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """S3 on moto, with a fresh bucket (for the ``proxy`` fixture)."""
    return object_store(request, "s3")


def _start_upload(raw: Any, bucket: str, key: str) -> str:
    """Start a multipart upload of ``key`` and send one part of it, as a killed save leaves it; return its id."""
    upload_id: str = raw.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    raw.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    return upload_id


def _pending(raw: Any, bucket: str) -> set[tuple[str, str]]:
    uploads = raw.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    return {(u["Key"], u["UploadId"]) for u in uploads}


def _cli(capsys: pytest.CaptureFixture[str], storage_options: dict[str, Any], *args: str) -> Any:
    so = [arg for k, v in storage_options.items() for arg in ("--storage-option", f"{k}={v}")]
    code = main([*args, *so, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


_KILLED_WRITER = textwrap.dedent(
    """
    import json, sys, numpy as np
    from trackpoint.plugins import open_backend
    from trackpoint.storage import CheckpointOptions, WriteItem
    storage_options, prefix = json.loads(sys.argv[1]), sys.argv[2]
    # 5 MiB parts: the 12 MiB chunk below goes as a multipart upload.
    opts = CheckpointOptions(backend="zarr", storage_options=storage_options, backend_options={"part_size": 5 << 20})
    items = [WriteItem("w", np.arange(3 << 20, dtype=np.float32))]  # one array of one 12 MiB chunk
    open_backend(prefix, opts).save(prefix, items, CheckpointOptions(num_writers=1))
    """
)


def test_upload_of_a_killed_save_is_a_leftover_that_cleanup_aborts(
    store: ObjectStore, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    root, run = store.root, f"{store.bucket}/run"
    # CompleteMultipartUpload hangs, so the writer is killed with every part of its chunk sent.
    complete = proxy.add(Rule("POST", r"ckpt-1\.zarr/.*uploadId=", action="stall", delay=60))
    storage_options = json.dumps({**store.storage_options, "endpoint_url": proxy.url})
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, storage_options, f"{run}/ckpt-1"], env={**os.environ, **store.child_env}
    )
    try:
        deadline = time.monotonic() + 60
        # Killed once its chunk's upload hangs and the array's zarr.json, written beside it meanwhile, is stored:
        # uploads are found in the directories holding a save's objects.
        while not (complete.fired and store.raw.glob(f"{root}/run/ckpt-1.zarr/v-*/w/zarr.json")):
            assert proc.poll() is None, "the writer exited before completing its upload"
            assert time.monotonic() < deadline, "the writer never reached the completion of its upload"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    [(key, upload_id)] = _pending(store.raw, root)
    data = key.split("/")[2]
    assert re.fullmatch(r"run/ckpt-1\.zarr/v-[0-9a-f]+/w/c\.0", key), key

    # `trackpoint ls --all` on the plain s3:// URL asks every format stored there, the zarr one too.
    listed = _cli(capsys, store.storage_options, "ls", "--all", run)["leftovers"]
    assert len(listed) == 2, listed
    assert listed[0] == f"{run}/ckpt-1.zarr/{data}"
    assert listed[1].startswith(f"{run}/ckpt-1.zarr/{data}/w/c.0 (unfinished upload, id {upload_id}, 12.0 MiB in parts")

    # Seconds old: it may be a save still running, so the default age guard keeps it.
    assert _cli(capsys, store.storage_options, "cleanup", run)["removed"] == []
    assert _pending(store.raw, root) == {(key, upload_id)}
    removed = _cli(capsys, store.storage_options, "cleanup", run, "--min-age", "0")["removed"]
    assert removed == listed
    assert _pending(store.raw, root) == set()
    assert store.raw.find(f"{root}/run") == []
    assert _cli(capsys, store.storage_options, "ls", "--all", run)["leftovers"] == []


def test_a_save_whose_upload_still_receives_parts_is_kept(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any
) -> None:
    root, run = s3_bucket.removeprefix("s3://"), f"{s3_bucket}/run"
    backend = open_backend(run, CheckpointOptions(backend="zarr", storage_options=s3_storage_options))
    backend.save(f"{run}/ckpt-1", [WriteItem("w", np.arange(4.0))])
    # An abandoned save of ckpt-2 whose only finished object is old, and whose chunk upload got a part just now.
    data = f"v-{uuid.uuid4().hex}"
    s3_raw.pipe_file(f"{root}/run/ckpt-2.zarr/{data}/w/zarr.json", b"{}")
    time.sleep(3.1)  # older than the guard below even if the store's times are whole seconds
    upload = _start_upload(s3_raw, root, f"run/ckpt-2.zarr/{data}/w/c.0")
    # Not this directory's: another store prefix, and a directory of no Zarr group.
    others = {
        (key, _start_upload(s3_raw, root, key))
        for key in (f"other/ckpt-2.zarr/{data}/w/c.0", f"run/notes/{data}/w/c.0", "run/notes.bin")
    }

    # The object is old enough for this guard, the upload's newest part is not: a save sending parts is alive.
    assert backend.cleanup(run, min_age=2) == []
    listed = backend.leftovers(run)
    assert [p.split(" ", 1)[0] for p in listed] == [f"{run}/ckpt-2.zarr/{data}", f"{run}/ckpt-2.zarr/{data}/w/c.0"]
    assert f"(unfinished upload, id {upload}, 1.0 KiB in parts, started " in listed[1]
    assert backend.cleanup(run, min_age=0) == listed
    assert _pending(s3_raw, root) == others
    assert backend.leftovers(run) == []
    with backend.open_reader(f"{run}/ckpt-1") as reader:  # the committed checkpoint is untouched
        np.testing.assert_array_equal(reader.read("w"), np.arange(4.0))
    backend.close()


def _parts(raw: Any, bucket: str) -> dict[tuple[str, str], int]:
    """The bucket's unfinished uploads, ``(key, upload id)``, with the bytes in their parts."""
    found = {}
    for key, upload_id in _pending(raw, bucket):
        parts = raw.call_s3("list_parts", Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])
        found[key, upload_id] = sum(int(part["Size"]) for part in parts)
    return found


def _settled(raw: Any, bucket: str) -> dict[tuple[str, str], int]:
    """:func:`_parts` once a killed writer's requests still on their way to the store have landed."""
    before = _parts(raw, bucket)
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)
        now = _parts(raw, bucket)
        if now == before:
            return now
        assert time.monotonic() < deadline, "the unfinished uploads kept changing after the writer was killed"
        before = now


_KILLED_LARGE_WRITER = textwrap.dedent(
    """
    import json, sys, numpy as np
    from trackpoint.plugins import open_backend
    from trackpoint.storage import CheckpointOptions, WriteItem
    storage_options, prefix = json.loads(sys.argv[1]), sys.argv[2]
    opts = CheckpointOptions(backend="zarr", storage_options=storage_options, backend_options={"part_size": 5 << 20})
    # 192 MiB: twelve chunks of 16 MiB, each a multipart upload of 5 MiB parts.
    items = [WriteItem("w", np.arange(48 << 20, dtype=np.float32))]
    open_backend(prefix, opts).save(prefix, items)
    """
)


def test_a_save_killed_before_it_completed_any_object_leaves_uploads_that_cleanup_aborts(
    store: ObjectStore, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    root, run = store.root, f"{store.bucket}/run"
    # Nothing of the save's data becomes visible: every CompleteMultipartUpload of a chunk and every
    # single-request upload but the shard's marker (the array's zarr.json) hangs, and the writer is killed
    # while it streams its chunks.
    complete = proxy.add(Rule("POST", r"ckpt-1\.zarr/.*uploadId=", action="stall", delay=60, times=1000))
    proxy.add(
        Rule("PUT", r"ckpt-1\.zarr/(?!.*uploadId=)(?!.*\.trackpoint-shard-)", action="stall", delay=60, times=1000)
    )
    storage_options = json.dumps({**store.storage_options, "endpoint_url": proxy.url})
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_LARGE_WRITER, storage_options, f"{run}/ckpt-1"],
        env={**os.environ, **store.child_env},
    )
    kill_when_fired(proc, complete, "completing a chunk's upload")
    uploads = _settled(store.raw, root)
    # No data object: nothing but the shard's marker (written before any data) and the uploads tells of the save.
    [marker] = store.raw.find(f"{root}/run")
    assert re.fullmatch(r".*/run/ckpt-1\.zarr/v-[0-9a-f]+/\.trackpoint-shard-00000", marker), marker
    keys = sorted(key for key, _ in uploads)
    assert len(keys) >= 1 and all(re.fullmatch(r"run/ckpt-1\.zarr/v-[0-9a-f]+/w/c\.\d+", key) for key in keys)
    [data] = {key.split("/")[2] for key in keys}

    listed = _cli(capsys, store.storage_options, "ls", "--all", run)["leftovers"]
    assert listed[:1] == [f"{run}/ckpt-1.zarr/{data}"], listed  # the save's group, then its uploads
    assert len(listed) == 1 + len(uploads), listed
    for (key, upload_id), size in uploads.items():
        line = f"{store.bucket}/{key} (unfinished upload, id {upload_id}, {human_bytes(size)} in parts"
        assert any(entry.startswith(line) for entry in listed[1:]), (line, listed)

    # Their newest parts are seconds old: it may be a save still running, so the default age guard keeps it.
    assert _cli(capsys, store.storage_options, "cleanup", run)["removed"] == []
    assert set(_pending(store.raw, root)) == set(uploads)
    removed = _cli(capsys, store.storage_options, "cleanup", run, "--min-age", "0")["removed"]
    assert removed == listed
    assert _pending(store.raw, root) == set()
    assert _cli(capsys, store.storage_options, "ls", "--all", run)["leftovers"] == []


class _ListsPerDirectory(S3Files):
    """An S3 store whose ``upload_list`` is written as before ``recursive`` existed: one directory per call."""

    asked: list[str]

    async def upload_list(self, bucket: str, prefix: str) -> list[Any]:  # type: ignore[override]
        self.asked.append(prefix)
        stats = await super().upload_list(bucket, prefix)
        # What S3 answers with its delimiter; moto ignores the delimiter and returns deeper keys too.
        return [stat for stat in stats if "/" not in stat.key[len(prefix) :]]


def test_a_store_listing_uploads_one_directory_at_a_time_still_works(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any
) -> None:
    root, run = s3_bucket.removeprefix("s3://"), f"{s3_bucket}/run"
    made = S3Files.from_options(CheckpointOptions(storage_options=s3_storage_options))
    files = _ListsPerDirectory(made.fs, made.transfer)
    files.asked = []
    data = f"v-{uuid.uuid4().hex}"
    s3_raw.pipe_file(f"{root}/run/ckpt-2.zarr/{data}/w/zarr.json", b"{}")
    beside = _start_upload(s3_raw, root, f"run/ckpt-2.zarr/{data}/w/c.0")  # beside an object of the save
    alone = _start_upload(s3_raw, root, f"run/ckpt-2.zarr/{data}/u/c.0")  # in a directory holding no object
    direct = _start_upload(s3_raw, root, "run/notes.bin")

    # Called as it was written, without `recursive`: once per directory that holds an object.
    found = files.unfinished_uploads(run, recursive=True)
    assert [(u.path, u.upload_id) for u in found] == [
        (f"{run}/ckpt-2.zarr/{data}/w/c.0", beside),
        (f"{run}/notes.bin", direct),
    ]
    assert sorted(files.asked) == ["run/", f"run/ckpt-2.zarr/{data}/w/"]
    assert [u.upload_id for u in files.unfinished_uploads(run)] == [direct]

    backend = ZarrBackend(files)
    listed = backend.leftovers(run)
    assert [p.split(" ", 1)[0] for p in listed] == [f"{run}/ckpt-2.zarr/{data}", f"{run}/ckpt-2.zarr/{data}/w/c.0"]
    assert backend.cleanup(run, min_age=0) == listed
    # The upload in the directory without objects was not found, as documented: the lifecycle rule gets it.
    assert _pending(s3_raw, root) == {(f"run/ckpt-2.zarr/{data}/u/c.0", alone), ("run/notes.bin", direct)}
    backend.close()


class _OverridesListing(S3Files):
    """A store overriding ``FileLayer.unfinished_uploads`` as written before ``recursive`` existed."""

    def unfinished_uploads(self, directory: str) -> list[UnfinishedUpload]:  # type: ignore[override]
        return [u for u in super().unfinished_uploads(directory) if not u.path.endswith(".bin")]


def test_an_override_of_unfinished_uploads_without_recursive_is_called_per_directory(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any
) -> None:
    root, run = s3_bucket.removeprefix("s3://"), f"{s3_bucket}/run"
    made = S3Files.from_options(CheckpointOptions(storage_options=s3_storage_options))
    files = _OverridesListing(made.fs, made.transfer)
    data = f"v-{uuid.uuid4().hex}"
    s3_raw.pipe_file(f"{root}/run/ckpt-2.zarr/{data}/w/zarr.json", b"{}")
    beside = _start_upload(s3_raw, root, f"run/ckpt-2.zarr/{data}/w/c.0")
    _start_upload(s3_raw, root, f"run/ckpt-2.zarr/{data}/u/c.0")  # in a directory holding no object: missed
    _start_upload(s3_raw, root, "run/notes.bin")  # left out by the override
    direct = _start_upload(s3_raw, root, "run/ckpt-3.zarr.part")

    found = files.unfinished_uploads(run, recursive=True)
    assert [(u.path, u.upload_id) for u in found] == [
        (f"{run}/ckpt-2.zarr/{data}/w/c.0", beside),
        (f"{run}/ckpt-3.zarr.part", direct),
    ]
    assert [u.upload_id for u in files.unfinished_uploads(run)] == [direct]
    assert _OverridesListing.unfinished_uploads.__qualname__ == "_OverridesListing.unfinished_uploads"
    files.close()
