"""``storage_options`` are checked against the store that takes them, or said to go unused; never dropped unsaid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.stores._fsspec import filesystem


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("s3", {"endpont_url": "http://127.0.0.1:1"}, r"'endpont_url' \(did you mean 'endpoint_url'\?\)"),
        ("gcs", {"tokn": "anon"}, r"'tokn' \(did you mean 'token'\?\) are not options of GCSFileSystem"),
        ("s3", {"nonsense": 1}, r"'nonsense' are not options of S3FileSystem; it takes anon, "),
    ],
)
def test_a_misspelt_option_is_refused_before_any_request(kind: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(tp.InvalidArgumentError, match=message):
        filesystem(kind, options)


def test_the_options_the_file_systems_take_are_accepted() -> None:
    # Options of s3fs's own constructor, of botocore's session (passed on by s3fs) and of fsspec's listing cache.
    filesystem("s3", {"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s", "profile": None})
    filesystem("s3", {"anon": True, "client_kwargs": {"region_name": "us-east-1"}, "listings_expiry_time": 1})
    filesystem("gcs", {"token": "anon", "endpoint_url": "http://127.0.0.1:1", "project": "p"})


def test_options_for_a_local_path_are_said_to_go_unused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = tp.Checkpoint(w=np.ones(2))
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        path = ckpt.write(str(tmp_path / "c"), options=tp.CheckpointOptions(storage_options={"key": "k"}))
    assert tp.list_variables(path)
    assert "storage_options ['key'] were given for" in caplog.text
    assert "they are not used for this path" in caplog.text
