"""URL-aware path helpers."""

from __future__ import annotations

import os

import pytest

from trackpoint import _paths


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("s3://bucket/run/ckpt-1", "s3://bucket/run"),
        ("s3://bucket/ckpt-1", "s3://bucket"),
        ("gs://b/a/b/c", "gs://b/a/b"),
        ("zarr+s3://b/x/y", "zarr+s3://b/x"),
        ("memory://x/ckpt", "memory://x"),
        (os.path.join("run", "ckpt-3"), "run"),
        ("/abs/dir/ckpt", "/abs/dir"),
    ],
)
def test_dirname(path: str, expected: str) -> None:
    assert _paths.dirname(path) == expected


def test_join_and_relpath_round_trip() -> None:
    assert _paths.join("s3://b/run", "ckpt-2") == "s3://b/run/ckpt-2"
    assert _paths.join("s3://b", "ckpt") == "s3://b/ckpt"
    assert _paths.join("/d", "ckpt") == os.path.join("/d", "ckpt")
    assert _paths.join("s3://b/run", "gs://other/x") == "gs://other/x"
    assert _paths.relpath("s3://b/run/ckpt-2", "s3://b/run") == "ckpt-2"
    assert _paths.relpath("/d/run/ckpt-2", "/d/run") == "ckpt-2"
    # Different stores cannot be made relative: the absolute URL is kept.
    assert _paths.relpath("gs://b/run/ckpt", "s3://b/run") == "gs://b/run/ckpt"


def test_schemes() -> None:
    assert _paths.split_scheme("S3://B/k") == ("s3", "B/k")
    assert _paths.scheme("relative/path") == ""
    assert not _paths.is_url("file:///tmp/x")
    assert _paths.is_url("gs://b/x")
    assert _paths.strip_file_scheme("file:///tmp/x") == "/tmp/x"
