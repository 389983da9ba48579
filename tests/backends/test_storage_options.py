"""``storage_options`` are checked against the store that takes them, or said to go unused; never dropped unsaid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.stores._fsspec import filesystem
from trackpoint.plugins import open_backend


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("s3", {"endpont_url": "http://127.0.0.1:1"}, r"'endpont_url' \(did you mean 'endpoint_url'\?\)"),
        ("gcs", {"tokn": "anon"}, r"gcs: unknown storage_options 'tokn' \(did you mean 'token'\?\); the gcs store"),
        ("s3", {"nonsense": 1}, r"s3: unknown storage_options 'nonsense'; the s3 store takes anon, "),
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


def test_the_built_in_stores_check_names_only_and_pass_every_value_on_unchanged() -> None:
    from trackpoint.backends.stores.gcs import GCSOptions
    from trackpoint.backends.stores.s3 import S3Options

    # Nothing declared, so nothing that would look checked or hidden and is not: every name (credentials too) is
    # a keyword of the file system, passed through, and shown by name only.
    s3 = S3Options.from_storage_options({"key": "AKIA-KEY", "secret": "SECRET", "endpoint_url": "http://127.0.0.1:1"})
    assert repr(s3) == "S3Options(key=..., secret=..., endpoint_url=...)"
    assert {"key", "secret", "token", "endpoint_url", "profile", "listings_expiry_time"} <= set(
        S3Options.passthrough_names()
    )
    gcs = GCSOptions.from_storage_options({"token": "ya29.SECRET", "project": "p"})
    assert repr(gcs) == "GCSOptions(token=..., project=...)"
    assert "token" in GCSOptions.passthrough_names()
    # The file system gets the values as given.
    fs = filesystem("s3", {"key": "AKIA-KEY", "secret": "SECRET", "endpoint_url": "http://127.0.0.1:1"})
    assert (fs.key, fs.secret, fs.endpoint_url) == ("AKIA-KEY", "SECRET", "http://127.0.0.1:1")


def test_options_for_a_local_path_are_said_to_go_unused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = tp.Checkpoint(w=np.ones(2))
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        path = ckpt.write(str(tmp_path / "c"), options=tp.CheckpointOptions(storage_options={"key": "k"}))
    assert tp.list_variables(path)
    assert "storage_options ['key'] were given for" in caplog.text
    assert "they are not used for this path" in caplog.text
    # A command opens one location several times (list, read, verify): said once.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        for name in ("c", "d"):
            ckpt.write(str(tmp_path / name), options=tp.CheckpointOptions(storage_options={"key": "k"}))
            tp.list_variables(str(tmp_path / name), tp.CheckpointOptions(storage_options={"key": "k"}))
    assert caplog.text.count("storage_options ['key'] were given for") == 0


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("s3://b/c", {"backend_options": {"retrys": 3}}, r"s3: unknown backend option\(s\) retrys"),
        ("zarr+file:///tmp/tp-options/c", {"backend_options": {"compresor": "zstd"}}, "unknown backend option"),
        ("zarr+file:///tmp/tp-options/c", {"backend_options": {"chunk_bytes": 0}}, "chunk_bytes must be a positive"),
        ("s3://b/c", {"backend_options": {"part_size": 1 << 20}}, r"backend_options\['part_size'\] must be at least"),
        ("s3://b/c", {"backend_options": {"retries": -1}}, r"backend_options\['retries'\] must be a non-negative"),
        ("s3://b/c", {"storage_options": {"endpont_url": "http://127.0.0.1:1"}}, "did you mean 'endpoint_url'"),
    ],
)
def test_every_refused_backend_or_storage_option_is_an_invalid_argument(
    url: str, options: dict[str, dict[str, object]], message: str
) -> None:
    # One class for a wrong option, whichever layer checks it: handlers written for api.md's InvalidArgumentError
    # (a ValueError) and those for BackendError (a LookupError) both catch it.
    with pytest.raises(tp.BackendOptionError, match=message) as refused:
        open_backend(url, tp.CheckpointOptions(**options))  # type: ignore[arg-type]
    assert isinstance(refused.value, tp.InvalidArgumentError) and isinstance(refused.value, ValueError)
    assert isinstance(refused.value, tp.BackendError) and isinstance(refused.value, LookupError)


@pytest.mark.parametrize("url", ["{tmp}/c", "memory://tp-options/c"])
def test_backend_options_for_a_store_that_takes_none_are_said_to_go_unused(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One options object often serves a bucket and local copies alike: not refused, but never dropped unsaid.
    url = url.format(tmp=tmp_path)
    options = tp.CheckpointOptions(backend_options={"retrys": 3})
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        tp.Checkpoint(w=np.ones(2)).write(url, options=options)
        assert tp.list_variables(url, options)
    assert caplog.text.count(f"backend_options ['retrys'] were given for {url!r}") == 1
    assert "they are not used for this path" in caplog.text
