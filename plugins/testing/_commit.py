"""Multi-shard saves and the commit protocol: nothing is visible until commit, and commit is one step."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from trackpoint.errors import CheckpointError, CheckpointExistsError, CheckpointNotFoundError
from trackpoint.plugins.testing._base import Array, BackendTestBase
from trackpoint.storage import ShardResult, ShardSpec, StorageBackend, WriteItem

__all__ = ["CommitVisibility", "ShardingAndMerge"]


def _groups() -> list[dict[str, Array]]:
    return [
        {"a": np.arange(10, dtype=np.int32), "b": np.ones((2, 2), np.float64)},
        {"c": np.array([b"x", b"yz"], dtype=object)},
        {"d": np.zeros(0, np.uint8), "e": np.full(3, 7, np.int64)},
    ]


def _merged(groups: list[dict[str, Array]]) -> dict[str, Array]:
    return {k: v for g in groups for k, v in g.items()}


class ShardingAndMerge(BackendTestBase):
    """Shards written separately are committed as one checkpoint."""

    def test_write_shards_then_commit(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        groups = _groups()
        results = self.write_shards(backend, prefix, groups)
        assert [r.spec.shard_id for r in results] == [0, 1, 2]
        assert [set(r.keys) for r in results] == [set(g) for g in groups], (
            "ShardResult.keys must name each shard's keys"
        )
        backend.commit(prefix, results)
        self.assert_contents(backend, prefix, _merged(groups))
        self.assert_listed(backend, base_url, [prefix])

    def test_manifests_are_plain_data(self, backend: StorageBackend, base_url: str) -> None:
        # Manifests may travel between processes: rebuilding them from their
        # plain fields must commit the same checkpoint.
        prefix = self.url(backend, base_url, "ckpt")
        groups = _groups()
        results = self.write_shards(backend, prefix, groups)
        rebuilt = [
            ShardResult(
                ShardSpec(r.spec.shard_id, r.spec.num_shards, str(r.spec.save_id)),
                tuple(str(k) for k in r.keys),
                int(r.nbytes),
                bytes(r.payload),
            )
            for r in results
        ]
        backend.commit(prefix, rebuilt)
        self.assert_contents(backend, prefix, _merged(groups))

    def test_shards_written_concurrently(self, backend: StorageBackend, base_url: str) -> None:
        self.require(backend, "parallel_writes")
        prefix = self.url(backend, base_url, "ckpt")
        groups = [{f"s{i}_{j}": np.full(64, i * 100 + j, np.int32) for j in range(20)} for i in range(6)]
        save_id = uuid.uuid4().hex
        backend.begin(prefix, save_id)

        def write(i: int) -> ShardResult:
            items = [WriteItem(k, v) for k, v in groups[i].items()]
            return backend.write_shard(prefix, ShardSpec(i, len(groups), save_id), items)

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(write, range(len(groups))))
        backend.commit(prefix, results)
        self.assert_contents(backend, prefix, _merged(groups))

    @pytest.mark.parametrize(("max_shard_bytes", "num_writers"), [(None, 1), (None, 4), (100, 1), (100, 3)])
    def test_save_is_independent_of_shard_count(
        self, backend: StorageBackend, base_url: str, max_shard_bytes: int | None, num_writers: int
    ) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        tensors = {f"t{i:02d}": np.arange(i * 5, dtype=np.float32) for i in range(16)}
        tensors["s"] = np.array([b"a", b"bb"], dtype=object)
        self.save(backend, prefix, tensors, max_shard_bytes=max_shard_bytes, num_writers=num_writers)
        self.assert_contents(backend, prefix, tensors)
        self.assert_listed(backend, base_url, [prefix])

    def test_incomplete_shard_set_is_rejected(self, backend: StorageBackend, base_url: str) -> None:
        # A manifest lost on its way to the committing process must not
        # produce a checkpoint that silently lacks that shard's tensors.
        prefix = self.url(backend, base_url, "ckpt")
        results = self.write_shards(backend, prefix, _groups())
        with pytest.raises(CheckpointError):
            backend.commit(prefix, [results[0], results[2]])
        self.assert_absent(backend, prefix)
        backend.abort(prefix, results[0].spec.save_id)
        self.assert_listed(backend, base_url, [])

    def test_duplicate_key_across_shards_is_rejected(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        groups = [{"a": np.zeros(2), "dup": np.zeros(1)}, {"dup": np.ones(1)}]
        results = self.write_shards(backend, prefix, groups)
        with pytest.raises(CheckpointError, match="dup"):
            backend.commit(prefix, results)
        backend.abort(prefix, results[0].spec.save_id)
        self.assert_absent(backend, prefix)
        self.assert_listed(backend, base_url, [])


class CommitVisibility(BackendTestBase):
    """Uncommitted work is invisible, and failures never damage what is committed."""

    def test_uncommitted_shards_are_invisible(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        results = self.write_shards(backend, prefix, _groups())
        self.assert_absent(backend, prefix)
        self.assert_listed(backend, base_url, [])
        with pytest.raises(CheckpointNotFoundError):
            backend.open_reader(prefix)
        backend.commit(prefix, results)
        assert backend.exists(prefix), f"{prefix!r} should be committed"

    def test_abort_leaves_nothing(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        # One shard of many_objects_count tensors: more objects than one page of a listing holds on a store
        # that keeps a tensor per object, so an abort that lists only the first page leaves some.
        many = {f"m{i:04d}": np.full(2, i, np.int16) for i in range(self.many_objects_count)}
        results = self.write_shards(backend, prefix, [*_groups(), many])
        backend.abort(prefix, results[0].spec.save_id)
        left = self.raw_list(base_url)
        assert left == [], (
            f"abort must remove every object the save wrote; {len(left)} remain, e.g. {left[:3]} "
            "(does a listing return only its first page?)"
        )
        backend.abort(prefix, results[0].spec.save_id)  # idempotent, missing pieces are fine
        assert not backend.exists(prefix), f"{prefix!r} exists after abort"
        self.assert_listed(backend, base_url, [])
        assert self.raw_list(base_url) == [], "a second abort must leave nothing either"

    def test_failed_save_keeps_existing_checkpoint(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        old = {"w": np.arange(6, dtype=np.float32)}
        self.save(backend, prefix, old)
        before = sorted(self.raw_list(base_url))
        bad = np.array([b"ok", 3], dtype=object)  # an int in a string tensor cannot be stored
        new = {f"t{i}": np.zeros(50) for i in range(8)} | {"bad": bad}
        with pytest.raises(CheckpointError):
            self.save(backend, prefix, new, overwrite=True, max_shard_bytes=400, num_writers=2)
        self.assert_contents(backend, prefix, old)
        assert sorted(self.raw_list(base_url)) == before, "a failed save must leave no objects behind"

    def test_begin_onto_existing_without_overwrite(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        old = {"w": np.arange(3, dtype=np.int8)}
        self.save(backend, prefix, old)
        before = sorted(self.raw_list(base_url))
        with pytest.raises(CheckpointExistsError, match="overwrite=True"):
            backend.begin(prefix, uuid.uuid4().hex, overwrite=False)
        self.assert_contents(backend, prefix, old)
        assert sorted(self.raw_list(base_url)) == before, "a refused begin must change nothing"

    def test_commit_onto_existing_without_overwrite(self, backend: StorageBackend, base_url: str) -> None:
        # begin(overwrite=False) found the prefix free; another writer commits it while this save
        # writes. The commit must refuse and leave the other checkpoint as it is.
        prefix = self.url(backend, base_url, "ckpt")
        results = self.write_shards(backend, prefix, _groups(), overwrite=False)
        ours = set(self.raw_list(base_url))
        theirs = {"w": np.arange(3, dtype=np.int8)}
        self.save(backend, prefix, theirs, overwrite=False, num_writers=1)
        with_theirs = set(self.raw_list(base_url))
        with pytest.raises(CheckpointExistsError):
            backend.commit(prefix, results, overwrite=False)
        self.assert_contents(backend, prefix, theirs)
        backend.abort(prefix, results[0].spec.save_id)
        self.assert_contents(backend, prefix, theirs)
        assert set(self.raw_list(base_url)) == with_theirs - ours, "abort must remove exactly this save's objects"

    def test_protocol_overwrites_existing(self, backend: StorageBackend, base_url: str) -> None:
        # What convert(..., overwrite=True) and a multi-process save do: begin, write, commit.
        prefix = self.url(backend, base_url, "ckpt")
        self.save(backend, prefix, {"w": np.arange(3, dtype=np.int8), "gone": np.ones(2)})
        groups = _groups()
        results = self.write_shards(backend, prefix, groups, overwrite=True)
        backend.commit(prefix, results, overwrite=True)
        self.assert_contents(backend, prefix, _merged(groups))
        self.assert_listed(backend, base_url, [prefix])
        self.save(backend, prefix, {"x": np.zeros(1)})  # and once more, through save()
        self.assert_contents(backend, prefix, {"x": np.zeros(1)})

    def test_begin_then_abort_leaves_nothing(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        save_id = uuid.uuid4().hex
        backend.begin(prefix, save_id, overwrite=False)
        backend.abort(prefix, save_id)
        self.assert_absent(backend, prefix)
        self.assert_nothing_left(base_url, "begin followed by abort")

    def test_save_without_overwrite_keeps_existing(self, backend: StorageBackend, base_url: str) -> None:
        prefix = self.url(backend, base_url, "ckpt")
        old = {"w": np.arange(3, dtype=np.int8)}
        self.save(backend, prefix, old)
        with pytest.raises(CheckpointExistsError):
            self.save(backend, prefix, {"w": np.zeros(3, np.int8)}, overwrite=False)
        self.assert_contents(backend, prefix, old)
