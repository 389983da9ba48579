"""Unfinished multipart uploads that killed saves leave are leftovers: listed by ``ls --all``, aborted by ``cleanup``.

An incomplete multipart upload is invisible to object listings but stored
(and billed) until aborted. The bundle backend on S3 lists those of its
objects' names directly in the checkpoint directory with its leftovers, judged
by their newest part's time (moto reports every upload as started in 2010, so
the parts' times are what keeps a young upload), and aborts the old ones.
A recursive listing (formats whose files sit in subdirectories) asks once for
every depth below the directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from faultproxy import FaultProxy, Rule, kill_when_fired
from trackpoint.backends.stores.s3 import S3Files
from trackpoint.cli import main
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, WriteItem

pytestmark = [pytest.mark.s3, pytest.mark.timeout(90)]

MiB = 1 << 20


def _start_upload(raw: Any, bucket: str, key: str, part_bytes: int = MiB) -> str:
    """Start a multipart upload of ``key`` and send one part of it, as a killed save leaves it; return its id."""
    upload_id: str = raw.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    raw.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * part_bytes)
    return upload_id


def _pending(raw: Any, bucket: str) -> set[tuple[str, str]]:
    uploads = raw.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    return {(u["Key"], u["UploadId"]) for u in uploads}


def _cli(capsys: pytest.CaptureFixture[str], storage_options: dict[str, Any], *args: str) -> str:
    so = [arg for k, v in storage_options.items() for arg in ("--storage-option", f"{k}={v}")]
    code = main([*args, *so])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_ls_all_lists_unfinished_uploads_and_cleanup_aborts_only_old_ones(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = s3_bucket.removeprefix("s3://")
    options = CheckpointOptions(storage_options=s3_storage_options)
    backend = open_backend(f"{s3_bucket}/run/ckpt-1", options)
    backend.save(f"{s3_bucket}/run/ckpt-1", [WriteItem("w", np.arange(4.0))])
    leftover = _start_upload(s3_raw, root, "run/ckpt-3.data-00000-of-00001")
    # Not the bundle's: another object's upload, one in a subdirectory, one outside the directory.
    others = {
        ("run/notes.bin", _start_upload(s3_raw, root, "run/notes.bin")),
        ("run/sub/ckpt-1.data-00000-of-00001", _start_upload(s3_raw, root, "run/sub/ckpt-1.data-00000-of-00001")),
        ("other/ckpt-1.data-00000-of-00001", _start_upload(s3_raw, root, "other/ckpt-1.data-00000-of-00001")),
    }

    listed = json.loads(_cli(capsys, s3_storage_options, "ls", "--all", f"{s3_bucket}/run", "--json"))
    [entry] = listed["leftovers"]
    assert re.fullmatch(
        rf"{s3_bucket}/run/ckpt-3\.data-00000-of-00001 \(unfinished upload, id {re.escape(leftover)}, 1\.0 MiB in "
        r"parts, started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, last part \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
        entry,
    ), entry
    text = _cli(capsys, s3_storage_options, "ls", "--all", f"{s3_bucket}/run")
    assert "no leftovers of crashed saves" not in text
    assert f"  {entry}" in text.splitlines()

    # Its last part is seconds old: it may belong to a save still running, so an age guard keeps it.
    kept = json.loads(_cli(capsys, s3_storage_options, "cleanup", f"{s3_bucket}/run", "--min-age", "3600", "--json"))
    assert kept["removed"] == []
    assert ("run/ckpt-3.data-00000-of-00001", leftover) in _pending(s3_raw, root)

    removed = json.loads(_cli(capsys, s3_storage_options, "cleanup", f"{s3_bucket}/run", "--min-age", "0", "--json"))
    assert removed["removed"] == [entry]
    assert _pending(s3_raw, root) == others
    assert json.loads(_cli(capsys, s3_storage_options, "ls", "--all", f"{s3_bucket}/run", "--json"))["leftovers"] == []
    # The committed checkpoint is untouched.
    with backend.open_reader(f"{s3_bucket}/run/ckpt-1") as reader:
        np.testing.assert_array_equal(reader.read("w"), np.arange(4.0))


_KILLED_WRITER = textwrap.dedent(
    """
    import json, sys, numpy as np
    from trackpoint.plugins import open_backend
    from trackpoint.storage import CheckpointOptions, WriteItem
    storage_options, prefix = json.loads(sys.argv[1]), sys.argv[2]
    opts = CheckpointOptions(storage_options=storage_options, backend_options={"part_size": 5 * 2**20})
    items = [WriteItem("w", np.arange(3 * 2**20, dtype=np.float32))]  # 12 MiB: a multipart upload
    open_backend(prefix, opts).save(prefix, items, CheckpointOptions(num_writers=1))
    """
)


def test_upload_of_a_killed_save_is_a_leftover_that_cleanup_aborts(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any, proxy: FaultProxy
) -> None:
    root = s3_bucket.removeprefix("s3://")
    prefix = f"{s3_bucket}/run/ckpt-1"
    # CompleteMultipartUpload hangs, so the writer is killed with every part of its upload sent.
    complete = proxy.add(Rule("POST", r"ckpt-1\.data-.*uploadId=", action="stall", delay=60))
    storage_options = json.dumps({**s3_storage_options, "endpoint_url": proxy.url})
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, storage_options, prefix], env=env)
    kill_when_fired(proc, complete, "completing its upload")
    [(key, upload_id)] = _pending(s3_raw, root)
    assert key == "run/ckpt-1.data-00000-of-00001"

    backend = open_backend(prefix, CheckpointOptions(storage_options=s3_storage_options))
    found = backend.leftovers(f"{s3_bucket}/run")
    upload = f"{s3_bucket}/run/ckpt-1.data-00000-of-00001 (unfinished upload, id {upload_id}, 12.0 MiB in parts"
    assert any(p.startswith(upload) for p in found), found
    assert backend.cleanup(f"{s3_bucket}/run") == []  # seconds old: could be a running save
    removed = backend.cleanup(f"{s3_bucket}/run", min_age=0)
    assert sorted(removed) == sorted(found)
    assert _pending(s3_raw, root) == set()
    assert s3_raw.find(f"{root}/run") == []


def test_credentials_that_may_not_list_uploads_still_clean_up_objects(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    root = s3_bucket.removeprefix("s3://")
    _start_upload(s3_raw, root, "run/ckpt-3.data-00000-of-00001")
    s3_raw.pipe_file(f"{root}/run/ckpt-3.data-00000-of-00001", b"orphan")
    denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    rule = proxy.add(Rule("GET", r"\?uploads", status=403, body=denied, times=100))
    options = CheckpointOptions(storage_options={**s3_storage_options, "endpoint_url": proxy.url})
    backend = open_backend(f"{s3_bucket}/run/ckpt-3", options)
    with caplog.at_level(logging.WARNING, logger="trackpoint.backends.stores.objectstore"):
        assert backend.leftovers(f"{s3_bucket}/run") == [f"{s3_bucket}/run/ckpt-3.data-00000-of-00001"]
        assert backend.cleanup(f"{s3_bucket}/run", min_age=0) == [f"{s3_bucket}/run/ckpt-3.data-00000-of-00001"]
    assert rule.fired
    assert "s3:ListBucketMultipartUploads" in caplog.text and "AbortIncompleteMultipartUpload" in caplog.text


def test_a_recursive_listing_finds_uploads_at_any_depth_in_one_request_without_a_delimiter(
    s3_bucket: str, s3_storage_options: dict[str, Any], s3_raw: Any, proxy: FaultProxy
) -> None:
    root, run = s3_bucket.removeprefix("s3://"), f"{s3_bucket}/run"
    keys = ["run/a.bin", "run/ckpt-1.zarr/v-1/u/c.0", "run/ckpt-1.zarr/v-1/w/c.0"]  # no object beside any of them
    ids = {key: _start_upload(s3_raw, root, key, part_bytes=1024) for key in keys}
    outside = ("other/b.bin", _start_upload(s3_raw, root, "other/b.bin"))
    files = S3Files.from_options(CheckpointOptions(storage_options={**s3_storage_options, "endpoint_url": proxy.url}))
    try:
        found = files.unfinished_uploads(run, recursive=True)
        assert [(u.path, u.upload_id, u.size) for u in found] == [(f"{s3_bucket}/{k}", ids[k], 1024) for k in keys]
        # Asked once, for every depth: moto ignores a delimiter, S3 would answer with CommonPrefixes alone.
        [recursive] = [seen.target for seen in proxy.requests if seen.method == "GET" and "uploads" in seen.target]
        assert "prefix=run%2F" in recursive and "delimiter" not in recursive.lower(), recursive

        proxy.clear()
        assert [(u.path, u.upload_id) for u in files.unfinished_uploads(run)] == [(f"{run}/a.bin", ids["run/a.bin"])]
        [direct] = [seen.target for seen in proxy.requests if seen.method == "GET" and "uploads" in seen.target]
        assert "delimiter=%2F" in direct, direct

        files.abort_uploads(found)
        assert _pending(s3_raw, root) == {outside}
    finally:
        files.close()
