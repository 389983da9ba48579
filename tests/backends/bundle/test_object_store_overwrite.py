"""Overwrites on S3 and GCS (moto, fake-gcs-server) keep the old checkpoint until the new index replaces it.

The conformance kit's failed-overwrite test covers the same ground; these tests also
check the objects an overwrite leaves behind on the emulators.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trackpoint.errors import CheckpointError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, StorageBackend, WriteItem

STORES = [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)]


def _items(value: float, n: int = 3) -> list[WriteItem]:
    return [WriteItem(f"t{i}", np.full(100, value + i, np.float32)) for i in range(n)]


def _backend(kind: str, request: pytest.FixtureRequest) -> tuple[StorageBackend, str, Any]:
    bucket = request.getfixturevalue(f"{kind}_bucket")
    options = CheckpointOptions(storage_options=request.getfixturevalue(f"{kind}_storage_options"))
    return open_backend(f"{bucket}/run/ckpt", options), f"{bucket}/run", request.getfixturevalue(f"{kind}_raw")


def _objects(raw: Any, directory: str) -> dict[str, bytes]:
    root = directory.split("://", 1)[1]
    return {p.rsplit("/", 1)[1]: raw.cat_file(p) for p in raw.find(root)}


def _values(backend: StorageBackend, prefix: str) -> list[float]:
    with backend.open_reader(prefix) as r:
        return [float(r.read(k)[0]) for k in r.keys()]


@pytest.mark.parametrize("kind", STORES)
def test_a_failed_overwrite_leaves_the_old_checkpoint_byte_for_byte(kind: str, request: pytest.FixtureRequest) -> None:
    backend, directory, raw = _backend(kind, request)
    prefix = f"{directory}/ckpt"
    backend.save(prefix, _items(1.0))
    before = _objects(raw, directory)
    bad = [*_items(5.0), WriteItem("bad", np.array([b"ok", 3], dtype=object))]
    with pytest.raises(CheckpointError):
        backend.save(prefix, bad, CheckpointOptions(max_shard_bytes=400, num_writers=2), overwrite=True)
    assert _objects(raw, directory) == before
    assert _values(backend, prefix) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("kind", STORES)
def test_an_overwrite_replaces_the_index_and_then_removes_the_old_data(
    kind: str, request: pytest.FixtureRequest
) -> None:
    backend, directory, raw = _backend(kind, request)
    prefix = f"{directory}/ckpt"
    backend.save(prefix, _items(1.0), CheckpointOptions(num_writers=1))
    backend.save(prefix, _items(4.0), CheckpointOptions(num_writers=1), overwrite=True)
    objects = _objects(raw, directory)
    # The same shard count as the committed checkpoint: one more, empty, data object.
    assert sorted(objects) == ["ckpt.data-00000-of-00002", "ckpt.data-00001-of-00002", "ckpt.index"]
    assert objects["ckpt.data-00001-of-00002"] == b""
    assert _values(backend, prefix) == [4.0, 5.0, 6.0]
    assert backend.list_checkpoints(directory) == [prefix]
