"""A save past its commit point succeeds, whatever its housekeeping meets; one failing before it leaves nothing.

On S3 (moto, behind the fault proxy): the deletes a commit makes after its commit point (the bundle's piece
indexes and the data of the checkpoint it replaced, Zarr's shard markers) fail, and the save still returns
its path, its checkpoint restores and is the manager's, and a warning names what was left, which
``cleanup`` then removes. Deletes and checks before the commit point that fail still fail the save, with
nothing of it visible.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from faultproxy import FaultProxy, Rule
from servers import ObjectStore
from trackpoint.errors import TransientStorageError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, StorageBackend

pytestmark = [pytest.mark.timeout(120)]

#: S3's batch delete (DeleteObjects): every delete the bundle and Zarr make on S3.
_BATCH_DELETE = r"\?delete"
#: The public logger the housekeeping warnings go to (docs/observability.md).
_LOGGER = "trackpoint"


def _opts(store: ObjectStore, proxy: FaultProxy, **extra: Any) -> CheckpointOptions:
    so = {**store.storage_options, "endpoint_url": proxy.url}
    return CheckpointOptions(
        storage_options=so, backend_options={"retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02}, **extra
    )


def _manager(url: str, opts: CheckpointOptions, value: float) -> tuple[tp.Variable, tp.CheckpointManager]:
    v = tp.Variable(np.full((64, 32), value, np.float32))
    return v, tp.CheckpointManager(tp.Checkpoint(v=v), url, max_to_keep=5, options=opts)


def _restored(path: str, opts: CheckpointOptions) -> Any:
    v = tp.Variable(np.zeros((64, 32), np.float32))
    tp.Checkpoint(v=v).restore(path, options=opts).expect_partial()  # Checkpoint.write saves no save_counter
    return v.numpy()


def _backend(url: str, opts: CheckpointOptions) -> StorageBackend:
    return open_backend(url, opts)


def test_failed_piece_deletes_after_the_commit_do_not_fail_a_managers_save(
    store: ObjectStore, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{store.bucket}/run"
    opts = _opts(store, proxy, max_shard_bytes=4096)  # two shards: two piece indexes
    v, manager = _manager(url, opts, 1.0)
    manager.save(checkpoint_number=1)
    v.assign(np.full((64, 32), 2.0, np.float32))
    deletes = proxy.add(Rule("POST", _BATCH_DELETE, action="status", status=503, times=1000))
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        saved = manager.save(checkpoint_number=2)
    assert deletes.fired, "the test needs the commit's deletes to fail"
    proxy.clear()

    assert saved == f"{url}/ckpt-2"
    assert manager.checkpoints == [f"{url}/ckpt-1", saved]
    assert manager.latest_checkpoint == saved
    assert tp.latest_checkpoint(url, opts) == saved
    np.testing.assert_array_equal(_restored(saved, opts), np.full((64, 32), 2.0, np.float32))

    backend = _backend(url, opts)
    pieces = [p for p in backend.leftovers(url) if p.endswith(".piece")]
    assert len(pieces) > 1 and all(p.startswith(f"{saved}.part-") for p in pieces)
    warning = caplog.text
    assert f"bundle: the checkpoint '{saved}' is committed and its save succeeded" in warning
    assert "deleting the save's piece indexes failed afterwards (TransientStorageError" in warning
    assert all(repr(p) in warning for p in pieces)
    assert f"cleanup('{url}') (or `trackpoint cleanup {url}`) removes them" in warning

    assert sorted(backend.cleanup(url, min_age=0)) == sorted(pieces)
    assert backend.leftovers(url) == []
    assert not [p for p in store.raw.ls(f"{store.root}/run") if p.endswith(".piece")]
    np.testing.assert_array_equal(_restored(saved, opts), np.full((64, 32), 2.0, np.float32))


def test_failed_deletes_of_an_overwrite_leave_the_new_checkpoint_committed(
    store: ObjectStore, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"{store.bucket}/run/ckpt"
    opts = _opts(store, proxy)
    v = tp.Variable(np.full((64, 32), 1.0, np.float32))
    tp.Checkpoint(v=v).write(prefix, opts)
    v.assign(np.full((64, 32), 3.0, np.float32))
    proxy.add(Rule("POST", _BATCH_DELETE, action="status", status=503, times=1000))
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        assert tp.Checkpoint(v=v).write(prefix, opts) == prefix
    proxy.clear()

    np.testing.assert_array_equal(_restored(prefix, opts), np.full((64, 32), 3.0, np.float32))
    assert "deleting the save's piece indexes failed afterwards" in caplog.text
    assert re.search(
        rf"deleting the data objects of the checkpoint it replaced failed afterwards .*; left behind: "
        rf"'{re.escape(prefix)}\.data-\*-of-\d{{5}}'; cleanup\('{store.bucket}/run'\)",
        caplog.text,
    )
    backend = _backend(prefix, opts)
    assert [p for p in backend.leftovers(f"{store.bucket}/run") if p.startswith(f"{prefix}.data-")]
    # The first cleanup takes the piece indexes; the replaced data go with the next one (a committed prefix
    # that still has piece indexes keeps its other data for one cleanup, see BundleBackend.cleanup).
    backend.cleanup(f"{store.bucket}/run", min_age=0)
    backend.cleanup(f"{store.bucket}/run", min_age=0)
    assert backend.leftovers(f"{store.bucket}/run") == []
    np.testing.assert_array_equal(_restored(prefix, opts), np.full((64, 32), 3.0, np.float32))


def test_failed_marker_deletes_after_a_zarr_commit_do_not_fail_the_save(
    store: ObjectStore, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{store.bucket}/zrun"
    opts = _opts(store, proxy, backend="zarr")
    v, manager = _manager(url, opts, 1.0)
    manager.save(checkpoint_number=1)
    v.assign(np.full((64, 32), 4.0, np.float32))
    proxy.add(Rule("POST", _BATCH_DELETE, action="status", status=503, times=1000))
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        saved = manager.save(checkpoint_number=2)
    proxy.clear()

    assert manager.checkpoints == [f"{url}/ckpt-1", saved]
    assert tp.latest_checkpoint(url, opts) == saved
    np.testing.assert_array_equal(_restored(saved, opts), np.full((64, 32), 4.0, np.float32))
    assert f"zarr: the checkpoint '{saved}' is committed and its save succeeded" in caplog.text
    assert "deleting its shard markers failed afterwards" in caplog.text
    assert "they go with the checkpoint when it is deleted" in caplog.text
    manager.delete(2)
    assert not [p for p in store.raw.find(f"{store.root}/zrun") if "ckpt-2" in p]


def test_a_failed_delete_before_the_commit_point_fails_the_save_with_nothing_visible(
    store: ObjectStore, proxy: FaultProxy
) -> None:
    url = f"{store.bucket}/run"
    opts = _opts(store, proxy)
    _, manager = _manager(url, opts, 1.0)
    manager.save(checkpoint_number=1)
    # A crashed save's piece index of ckpt-2: the next save of ckpt-2 deletes it in begin, before it writes.
    store.raw.pipe_file(f"{store.root}/run/ckpt-2.part-00000-of-00001.{'0' * 32}.piece", b"")
    proxy.add(Rule("POST", _BATCH_DELETE, action="status", status=503, times=1000))
    with pytest.raises(TransientStorageError, match=r"s3: deleting '.*/run/ckpt-2\.part-00000-of-00001\..*\.piece'"):
        manager.save(checkpoint_number=2)
    proxy.clear()
    assert manager.checkpoints == [f"{url}/ckpt-1"]
    assert tp.latest_checkpoint(url, opts) == f"{url}/ckpt-1"
    assert not _backend(url, opts).exists(f"{url}/ckpt-2")
    assert not store.raw.exists(f"{store.root}/run/ckpt-2.index")


@pytest.mark.parametrize(
    ("fmt", "marker", "commit_point"),
    [
        ("bundle", r"ckpt-2\.part-00000-of-.*\.piece", "ckpt-2.index"),
        ("zarr", r"ckpt-2\.zarr/.*/\.trackpoint-shard-00000", "ckpt-2.zarr/zarr.json"),
    ],
    ids=["bundle", "zarr"],
)
def test_a_failed_check_after_the_commit_write_takes_the_commit_back(
    store: ObjectStore, proxy: FaultProxy, fmt: str, marker: str, commit_point: str
) -> None:
    url = f"{store.bucket}/run"
    opts = _opts(store, proxy, backend=fmt)
    _, manager = _manager(url, opts, 1.0)
    manager.save(checkpoint_number=1)
    # The commit asks for each shard's marker twice: before its commit write and after it. The second fails.
    check = proxy.add(Rule("HEAD", marker, action="status", status=503, nth=2, times=1000))
    with pytest.raises(TransientStorageError):
        manager.save(checkpoint_number=2)
    proxy.clear()
    assert check.fired
    assert manager.checkpoints == [f"{url}/ckpt-1"]
    assert tp.latest_checkpoint(url, opts) == f"{url}/ckpt-1"
    assert not store.raw.exists(f"{store.root}/run/{commit_point}")


def test_a_failed_retention_delete_after_a_committed_save_does_not_fail_it(
    store: ObjectStore, proxy: FaultProxy
) -> None:
    url = f"{store.bucket}/run"
    opts = _opts(store, proxy)
    v = tp.Variable(np.full((64, 32), 1.0, np.float32))
    manager = tp.CheckpointManager(tp.Checkpoint(v=v), url, max_to_keep=1, options=opts)
    manager.save(checkpoint_number=1)
    v.assign(np.full((64, 32), 5.0, np.float32))
    proxy.add(Rule("POST", _BATCH_DELETE, action="status", status=503, times=1000))
    saved = manager.save(checkpoint_number=2)
    proxy.clear()
    assert saved == f"{url}/ckpt-2"
    assert tp.latest_checkpoint(url, opts) == saved
    # ckpt-1 stays listed, oldest first, for the next save to retire again.
    assert manager.checkpoints == [f"{url}/ckpt-1", saved]
    manager.save(checkpoint_number=3)
    assert manager.checkpoints == [f"{url}/ckpt-3"]
    assert _backend(url, opts).list_checkpoints(url) == [f"{url}/ckpt-3"]
