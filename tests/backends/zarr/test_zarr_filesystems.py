"""Zarr on S3/GCS uses the stores the bundle backends use, on filesystems built in one place.

gcsfs exports, by default, an experimental subclass that asks a gRPC API for
every bucket's layout and does not remember a failed answer; against
fake-gcs-server (no gRPC) each operation then waits 60 s. The ``gcs`` bundle
backend never used it, while ``zarr+gs://`` did, unless the tests set
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, which they no longer do.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.stores import gcs, s3
from trackpoint.backends.stores._fsspec import filesystem
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions


def _zarr_files(url: str, storage_options: dict[str, Any]) -> Any:
    backend = open_backend(url, CheckpointOptions(storage_options=storage_options))
    return backend.files  # type: ignore[attr-defined]


@pytest.mark.gcs
def test_zarr_on_gcs_uses_the_json_api_client_and_does_not_stall(
    gcs_bucket: str, gcs_storage_options: dict[str, Any]
) -> None:
    from gcsfs.core import GCSFileSystem

    url = "zarr+gs://" + gcs_bucket.removeprefix("gs://") + "/run/ckpt"
    opts = tp.CheckpointOptions(storage_options=gcs_storage_options)
    model = tp.AutoTrackable()
    model.w = tp.Variable(np.arange(12.0).reshape(3, 4))
    model.b = tp.Variable(np.ones(3, np.float32))
    ckpt = tp.Checkpoint(model=model)
    started = time.monotonic()
    path = ckpt.write(url, options=opts)
    model.w.assign(np.zeros((3, 4)))
    ckpt.read(path, options=opts).assert_consumed()
    elapsed = time.monotonic() - started
    assert np.array_equal(model.w.numpy(), np.arange(12.0).reshape(3, 4))
    # One bucket-layout probe alone waits out a 60 s retry budget on the emulator.
    assert elapsed < 30, f"save and restore took {elapsed:.0f} s"

    assert type(_zarr_files(url, gcs_storage_options).fs) is GCSFileSystem


@pytest.mark.gcs
def test_zarr_and_gcs_backends_share_one_filesystem(gcs_bucket: str, gcs_storage_options: dict[str, Any]) -> None:
    files = _zarr_files("zarr+gs://" + gcs_bucket.removeprefix("gs://") + "/ckpt", gcs_storage_options)
    bundle_layer = gcs.create_files(CheckpointOptions(storage_options=gcs_storage_options))
    # The very store class of the gcs bundle backend, on the same filesystem.
    assert type(files) is type(bundle_layer)
    assert files.fs is bundle_layer.fs


@pytest.mark.s3
def test_zarr_and_s3_backends_build_their_filesystems_alike(s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    files = _zarr_files("zarr+s3://" + s3_bucket.removeprefix("s3://") + "/ckpt", s3_storage_options)
    bundle_layer = s3.create_files(CheckpointOptions(storage_options=s3_storage_options))
    # The very store class of the s3 bundle backend, on the same filesystem: one retry policy
    # (botocore makes one attempt, the store retries), one set of timeouts.
    assert type(files) is type(bundle_layer)
    assert files.fs is bundle_layer.fs
    assert files.fs.endpoint_url == s3_storage_options["endpoint_url"]


def test_filesystem_refuses_an_unknown_store_kind() -> None:
    with pytest.raises(tp.errors.BackendError, match=r"no fsspec filesystem for store kind 'azure'.*expected one of"):
        filesystem("azure", {})


@pytest.mark.gcs
def test_filesystem_is_shared_per_options(gcs_storage_options: dict[str, Any]) -> None:
    first = filesystem("gcs", gcs_storage_options)
    assert filesystem("gcs", dict(gcs_storage_options)) is first
    assert filesystem("gcs", {**gcs_storage_options, "project": "other-" + uuid.uuid4().hex[:6]}) is not first
