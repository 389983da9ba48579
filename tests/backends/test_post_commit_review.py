"""What a commit does at and after its commit point: a rename made durable or undone, housekeeping that finishes.

On a local disk the commit's rename is the commit point only once its directory is synced: a failed sync
takes the rename back and fails the save (nothing of it visible, the replaced checkpoint as it was). On S3
(moto behind the fault proxy) a store that is slow but answers lets the housekeeping finish (nothing left
behind, no warning), and a failed housekeeping step warns on the public ``trackpoint`` logger.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from faultproxy import FaultProxy, Rule
from servers import ObjectStore, object_store
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.stores.local import exchange_directories
from trackpoint.backends.zarr import ZarrBackend
from trackpoint.errors import CheckpointError, CheckpointNotFoundError, StorageError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, ShardSpec, StorageBackend, WriteItem

pytestmark = [pytest.mark.timeout(120)]


class _FailingSyncAfterCommit(LocalFiles):
    """Local files whose sync of a directory fails once, right after ``commit_point`` got new bytes there."""

    def __init__(self) -> None:
        super().__init__()
        self.commit_point = ""
        self.before: bytes | None = None
        self.failed = False

    def _now(self) -> bytes | None:
        try:
            return self.read(self.commit_point)
        except CheckpointError:
            return None

    def sync_dir(self, directory: str) -> None:
        if self.commit_point and not self.failed and self._now() not in (None, self.before):
            self.failed = True
            raise StorageError(f"local: fsync directory {directory!r} failed: [Errno 5] Input/output error (test)")
        super().sync_dir(directory)


def _save(backend: StorageBackend, prefix: str, value: float) -> None:
    """One shard saved and committed over whatever ``prefix`` holds, aborted if it fails (as a save does)."""
    save_id = uuid.uuid4().hex
    try:
        shard = backend.write_shard(prefix, ShardSpec(0, 1, save_id), [WriteItem("v", np.full(4, value))])
        backend.commit(prefix, [shard], overwrite=True)
    except CheckpointError:
        backend.abort(prefix, save_id)
        raise


def _value(backend: StorageBackend, prefix: str) -> float:
    with backend.open_reader(prefix) as reader:
        return float(reader.read("v")[0])


@pytest.mark.parametrize("fmt", ["bundle", "zarr"])
@pytest.mark.parametrize("replacing", [False, True], ids=["new", "overwrite"])
def test_a_failed_directory_sync_after_the_commit_rename_undoes_it(tmp_path: Path, fmt: str, replacing: bool) -> None:
    files = _FailingSyncAfterCommit()
    backend: StorageBackend = BundleBackend(files) if fmt == "bundle" else ZarrBackend(files)
    prefix = str(tmp_path / "ckpt-1")
    if replacing:
        _save(backend, prefix, 1.0)
    files.commit_point = f"{prefix}.index" if fmt == "bundle" else f"{prefix}.zarr/zarr.json"
    files.before = files._now()

    with pytest.raises(StorageError, match=r"syncing the directory .* the rename was undone and this save was not"):
        _save(backend, prefix, 2.0)

    assert files.failed, "the test needs the sync after the commit's rename to fail"
    # A failed save is never visible; the checkpoint it would have replaced is as it was.
    assert backend.exists(prefix) is replacing
    assert backend.list_checkpoints(str(tmp_path)) == ([prefix] if replacing else [])
    if replacing:
        assert _value(backend, prefix) == 1.0
    assert backend.leftovers(str(tmp_path)) == []
    # Saving again (the store recovered) commits.
    _save(backend, prefix, 3.0)
    assert _value(backend, prefix) == 3.0


def test_a_failed_undo_of_an_atomic_exchange_says_what_failed(tmp_path: Path) -> None:
    # The commit's exchange of the new group with the committed one is taken back by exchanging them again. If
    # that fails (here: another process removed the committed group in between), the save's error says why, and
    # does not blame a cleanup for removing the save's staged arrays (which sit at the temporary name, intact).
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if not exchange_directories(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("this system has no atomic exchange of directories")
    files = _FailingSyncAfterCommit()
    prefix = str(tmp_path / "ckpt-1")
    group = f"{prefix}.zarr"
    calls: list[tuple[str, str]] = []

    def exchange(a: str, b: str) -> bool:
        calls.append((a, b))
        if len(calls) == 2:  # the undo
            shutil.rmtree(group)
            raise CheckpointNotFoundError(f"local: exchanging {a!r} with {b!r}: no such directory (test)")
        return exchange_directories(a, b)

    backend = ZarrBackend(files, exchange=exchange)
    _save(backend, prefix, 1.0)
    files.commit_point = f"{group}/zarr.json"
    files.before = files._now()

    with pytest.raises(StorageError, match=r"the rename was undone and this save was not") as failed:
        _save(backend, prefix, 2.0)

    assert len(calls) == 2, "the test needs the commit's exchange and its undo"
    notes = "\n".join(getattr(failed.value, "__notes__", []))
    assert "undoing this save's write" in notes
    assert "CheckpointNotFoundError" in notes and "no such directory (test)" in notes
    assert "staged arrays" not in notes


@pytest.fixture
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """S3 on moto, with a fresh bucket."""
    return object_store(request, "s3")


def _opts(store: ObjectStore, proxy: FaultProxy, fmt: str, **backend_options: float) -> CheckpointOptions:
    so = {**store.storage_options, "endpoint_url": proxy.url}
    return CheckpointOptions(storage_options=so, backend=fmt, backend_options=backend_options)


def _write(prefix: str, opts: CheckpointOptions, value: float) -> None:
    import trackpoint as tp

    tp.Checkpoint(v=tp.Variable(np.full((64, 32), value, np.float32))).write(prefix, opts)


@pytest.mark.parametrize("fmt", ["bundle", "zarr"])
def test_a_slow_store_that_answers_leaves_nothing_after_an_overwrite(
    store: ObjectStore, proxy: FaultProxy, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each delete takes 1.2 s, and all of them together longer than the clean-up budget (request_timeout, 2 s):
    # the housekeeping of a committed save has the usual retries and timeouts, not that budget.
    opts = _opts(store, proxy, fmt, request_timeout=2)
    prefix = f"{store.bucket}/run/ckpt"
    _write(prefix, opts, 0.0)
    deletes = proxy.add(Rule("POST", r"\?delete", action="delay", delay=1.2, times=1000))
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        _write(prefix, opts, 1.0)
    proxy.clear()

    assert deletes.fired >= 1, "the test needs the commit's deletes to be slow"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert open_backend(prefix, opts).leftovers(f"{store.bucket}/run") == []


def test_a_failed_housekeeping_step_warns_on_the_trackpoint_logger(
    store: ObjectStore, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    opts = _opts(store, proxy, "zarr", retries=1, retry_base_delay=0.01, retry_max_delay=0.02)
    prefix = f"{store.bucket}/run/ckpt"
    _write(prefix, opts, 0.0)
    proxy.add(Rule("POST", r"\?delete", action="status", status=503, times=1000))
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        _write(prefix, opts, 1.0)  # committed: returns
    proxy.clear()

    warnings = [r for r in caplog.records if "is committed and its save succeeded" in r.getMessage()]
    assert warnings, "the failed deletes after the commit must be a warning"
    # The documented, public name (docs/observability.md), not the private module's.
    assert {r.name for r in warnings} == {"trackpoint"}
