"""The namespace: overwriting, deleting and listing checkpoints, and small versioned files."""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from trackpoint.errors import CheckpointNotFoundError, ConcurrentModificationError
from trackpoint.plugins.testing._base import BackendTestBase
from trackpoint.plugins.testing._file_layer import CREATE_ONLY_ADVICE
from trackpoint.storage import ANY_VERSION, MUST_NOT_EXIST, StorageBackend

__all__ = ["Listing", "OverwriteAndDelete", "SmallFiles"]


def _create_only_taken(path: str, spelled: str) -> str:
    """The failure of a create-only ``write_file`` (``if_version`` spelled ``spelled``) that replaced ``path``."""
    return (
        f"write_file({path!r}, if_version={spelled}) over an existing file returned instead of raising "
        f"ConcurrentModificationError: {CREATE_ONLY_ADVICE}"
    )


class OverwriteAndDelete(BackendTestBase):
    """``overwrite=True`` replaces a checkpoint whole; ``delete`` leaves nothing of it."""

    def test_overwrite_replaces_whole_checkpoint(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "run", "ckpt")
        self.save(backend, prefix, {f"old{i}": np.full(100, i) for i in range(5)}, max_shard_bytes=900)
        new = {"new": np.arange(4, dtype=np.uint16)}
        self.save(backend, prefix, new, overwrite=True)
        self.assert_contents(backend, prefix, new)
        # No object of the replaced checkpoint may linger: the raw layout must
        # look exactly like a fresh save of the new contents elsewhere.
        fresh = self.url(backend, base_url, "fresh", "ckpt")
        self.save(backend, fresh, new)
        run, other = self.url(backend, base_url, "run"), self.url(backend, base_url, "fresh")
        assert len(self.raw_list(run)) == len(self.raw_list(other)), (
            f"after overwrite {self.raw_list(run)} vs fresh {self.raw_list(other)}"
        )

    def test_delete_removes_every_object(self, backend: StorageBackend, base_url: str) -> None:
        keep = self.url(backend, base_url, "keep")
        gone = self.url(backend, base_url, "gone")
        self.save(backend, keep, {"k": np.ones(3)})
        only_keep = sorted(self.raw_list(base_url))
        # many_objects_count tensors in a few shards: more objects than one page of a listing holds on a
        # store that keeps a tensor per object, so a delete that lists only the first page leaves some.
        gone_tensors = {f"g{i:04d}": np.full(2, i, np.int64) for i in range(self.many_objects_count)}
        self.save(backend, gone, gone_tensors, max_shard_bytes=16 * self.many_objects_count // 4, num_writers=3)
        backend.delete(gone)
        assert not backend.exists(gone), f"{gone!r} still exists after delete"
        with pytest.raises(CheckpointNotFoundError):
            backend.open_reader(gone)
        left = sorted(set(self.raw_list(base_url)) - set(only_keep))
        assert not left, (
            f"delete must remove every object of the checkpoint; {len(left)} remain, e.g. {left[:3]} "
            "(does a listing return only its first page?)"
        )
        self.assert_contents(backend, keep, {"k": np.ones(3)})

    def test_delete_is_idempotent(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        backend.delete(prefix)  # never existed
        self.save(backend, prefix, {"a": np.zeros(1)})
        backend.delete(prefix)
        backend.delete(prefix)
        self.assert_absent(backend, prefix)
        self.assert_nothing_left(base_url, "delete")

    def test_save_again_after_delete(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        self.save(backend, prefix, {"a": np.zeros(1)})
        backend.delete(prefix)
        self.save(backend, prefix, {"b": np.ones(2)}, overwrite=False)
        self.assert_contents(backend, prefix, {"b": np.ones(2)})


class Listing(BackendTestBase):
    """``list_checkpoints`` is sorted, shallow and shows committed checkpoints only."""

    def test_modified_is_the_commit_time_or_unknown(self, backend: StorageBackend, base_url: str) -> None:
        # Optional (the default is None, "cannot tell"); when given it must be the commit time, since
        # get_checkpoint_mtimes and Saver.recover_last_checkpoints rely on it, and None for nothing.
        prefix = self.url(backend, base_url, "ckpt")
        assert backend.modified(prefix) is None
        before = time.time()
        self.save(backend, prefix, {"x": np.zeros(1)})
        stamp = backend.modified(prefix)
        if stamp is None:
            return
        # Stores keep whole seconds, and an emulator's clock may be a little off this machine's.
        assert before - 120 <= stamp <= time.time() + 120, f"modified({prefix!r}) = {stamp}, saved at {before}"
        backend.delete(prefix)
        assert backend.modified(prefix) is None

    def test_lists_committed_direct_children_sorted(self, backend: StorageBackend, base_url: str) -> None:
        self.require(backend, "listing_consistent")
        names = ["ckpt-10", "ckpt-2", "ckpt-1", "b"]
        for name in names:
            self.save(backend, self.url(backend, base_url, name), {"x": np.zeros(1)})
        self.save(backend, self.url(backend, base_url, "sub", "deeper"), {"x": np.zeros(1)})
        self.write_shards(backend, self.url(backend, base_url, "uncommitted"), [{"x": np.zeros(1)}])
        backend.write_file(self.url(backend, base_url, "checkpoint"), b"state")
        expected = sorted(self.url(backend, base_url, n) for n in names)
        self.assert_listed(backend, base_url, expected)
        assert backend.list_checkpoints(self.url(backend, base_url, "sub")) == [
            self.url(backend, base_url, "sub", "deeper")
        ]

    def test_lists_more_checkpoints_than_a_page(self, backend: StorageBackend, base_url: str) -> None:
        # A listing that returns only its first page (of the store, or of a client that pages) misses
        # checkpoints, and latest_checkpoint and CheckpointManager with them.
        self.require(backend, "listing_consistent")
        n = self.many_objects_count
        prefixes = [self.url(backend, base_url, f"ckpt-{i}") for i in range(n)]

        def save(prefix: str) -> None:
            self.save(backend, prefix, {"x": np.zeros(1)}, num_writers=1)

        if backend.capabilities.parallel_writes:
            # Saves of different checkpoints at once: only to keep the test short on a remote store.
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(save, prefixes))
        else:
            for prefix in prefixes:
                save(prefix)
        listed = backend.list_checkpoints(base_url)
        missing = sorted(set(prefixes) - set(listed))
        assert not missing, (
            f"list_checkpoints({base_url!r}) lists {len(listed)} of the {n} checkpoints saved there; missing "
            f"{len(missing)}, e.g. {missing[:3]} (does it read only the first page of a listing?)"
        )
        assert listed == sorted(prefixes), f"list_checkpoints({base_url!r}) is not sorted or lists others"

    def test_empty_and_missing_directories(self, backend: StorageBackend, base_url: str) -> None:
        self.assert_listed(backend, base_url, [])
        assert backend.list_checkpoints(self.url(backend, base_url, "does-not-exist")) == []

    def test_deleted_checkpoint_is_not_listed(self, backend: StorageBackend, base_url: str) -> None:
        self.require(backend, "listing_consistent")
        a, b = self.url(backend, base_url, "a"), self.url(backend, base_url, "b")
        self.save(backend, a, {"x": np.zeros(1)})
        self.save(backend, b, {"x": np.zeros(1)})
        backend.delete(a)
        self.assert_listed(backend, base_url, [b])


class SmallFiles(BackendTestBase):
    """``read_file``/``write_file``: atomic replacement under version preconditions."""

    def test_missing_file(self, backend: StorageBackend, base_url: str) -> None:
        path = self.url(backend, base_url, "checkpoint")
        assert backend.read_file(path) is None
        backend.delete_file(path)  # missing is fine

    def test_create_only(self, backend: StorageBackend, base_url: str) -> None:
        path = self.url(backend, base_url, "checkpoint")
        version = backend.write_file(path, b"first", if_version=MUST_NOT_EXIST)
        with pytest.raises(ConcurrentModificationError):
            backend.write_file(path, b"second", if_version=MUST_NOT_EXIST)
            pytest.fail(_create_only_taken(path, "MUST_NOT_EXIST"))
        got = backend.read_file(path)
        assert got is not None and got.data == b"first" and got.version == version

    def test_create_only_spelled_none(self, backend: StorageBackend, base_url: str) -> None:
        # 0.1's spelling of MUST_NOT_EXIST. Deprecated for callers, but trackpoint's own state-file
        # updates still pass it this release (so that 0.1 backends keep working): accept it, for
        # example through trackpoint.storage.version_condition.
        path = self.url(backend, base_url, "checkpoint")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            backend.write_file(path, b"first", if_version=None)
            with pytest.raises(ConcurrentModificationError):
                backend.write_file(path, b"second", if_version=None)
                pytest.fail(_create_only_taken(path, "None"))
        got = backend.read_file(path)
        assert got is not None and got.data == b"first"

    def test_compare_and_swap(self, backend: StorageBackend, base_url: str) -> None:
        path = self.url(backend, base_url, "checkpoint")
        v1 = backend.write_file(path, b"one")
        v2 = backend.write_file(path, b"two", if_version=v1)
        assert v2 != v1
        with pytest.raises(ConcurrentModificationError):
            backend.write_file(path, b"stale", if_version=v1)
        got = backend.read_file(path)
        assert got is not None and (got.data, got.version) == (b"two", v2)

    def test_version_of_missing_file_fails(self, backend: StorageBackend, base_url: str) -> None:
        path = self.url(backend, base_url, "checkpoint")
        v = backend.write_file(path, b"x")
        backend.delete_file(path)
        with pytest.raises(ConcurrentModificationError):
            backend.write_file(path, b"y", if_version=v)
        assert backend.read_file(path) is None

    def test_any_version_and_binary_contents(self, backend: StorageBackend, base_url: str) -> None:
        path = self.url(backend, base_url, "checkpoint")
        backend.write_file(path, b"old", if_version=MUST_NOT_EXIST)
        data = bytes(range(256)) * 3
        v = backend.write_file(path, data, if_version=ANY_VERSION)
        got = backend.read_file(path)
        assert got is not None and (got.data, got.version) == (data, v)
        backend.write_file(path, b"")
        got = backend.read_file(path)
        assert got is not None and got.data == b""
        backend.delete_file(path)
        assert backend.read_file(path) is None
