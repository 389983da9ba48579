"""Multi-shard saves and the commit protocol: nothing is visible until commit, and commit is one step."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
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


#: More raw writes than any commit of these tests makes before its commit point.
_MAX_COMMIT_WRITES = 100


class _CompetitorBefore:
    """``before_each`` that puts another writer's checkpoint in place before the ``n``-th raw write of a commit.

    Only writes announced in the committing thread count: the backdoors are called from there, where they
    cannot block the thread a store's client calls run in (its event loop). Once the commit under test is
    visible, its commit point has been written, and a writer that commits create-only would lose: then
    nothing is put in place.
    """

    def __init__(self, n: int, visible: Callable[[], bool], place: Callable[[], None]) -> None:
        self.n = n
        self.seen = 0
        self.thread = threading.get_ident()
        self._visible = visible
        self._place = place
        #: The write the competitor was put in place before; ``None`` while it was not.
        self.placed: str | None = None
        #: Whether the commit was visible at the ``n``-th write already.
        self.too_late = False

    def __call__(self, what: str) -> None:
        if threading.get_ident() != self.thread or self.placed is not None or self.too_late:
            return
        self.seen += 1
        if self.seen < self.n:
            return
        if self._visible():
            self.too_late = True
            return
        self._place()
        self.placed = f"raw write {self.seen} ({what})"


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

    def test_commit_write_refuses_a_checkpoint_committed_after_the_check(
        self, backend: StorageBackend, base_url: str
    ) -> None:
        # A commit that checks for an existing checkpoint and then writes its commit point unconditionally
        # passes test_commit_onto_existing_without_overwrite (the other checkpoint is there before the
        # check) and clobbers one committed in between. So the other checkpoint is put in place before the
        # commit's first raw write, then before its second, ... (through the backdoors, between the
        # backend's own steps), until the commit point is written: each time, only the commit write's own
        # precondition (create-only, or an atomic rename that refuses an existing target) can refuse.
        self.require(backend, "conditional_create")
        prefix = self.url(backend, base_url, "ckpt")
        theirs = {"w": np.arange(3, dtype=np.int8)}
        # Their checkpoint in one shard, ours in three: two saves running at once name their objects apart.
        self.save(backend, prefix, theirs, overwrite=False, num_writers=1)
        competitor = {path: self.raw_read(path) for path in self.entries_of(backend, prefix)}

        def remove() -> None:
            for path in competitor:
                self.raw_delete(path)

        def place() -> None:
            for path, data in competitor.items():
                self.raw_write(path, data)

        remove()
        if backend.exists(prefix):
            pytest.skip(
                f"removing the raw objects of {prefix!r} (raw_delete) leaves it committed: the backdoors cannot "
                "take a checkpoint away and put it back (its commit is no raw object)"
            )
        place()
        if not backend.exists(prefix):
            pytest.skip(f"putting the raw objects of {prefix!r} back (raw_write) does not make it committed again")
        self.assert_contents(backend, prefix, theirs)
        remove()
        # Each run starts from this store: what a refused commit leaves (its abort is best effort) must not
        # change what the next one writes.
        start = set(self.raw_list(base_url))
        for n in range(1, _MAX_COMMIT_WRITES + 1):
            results = self.write_shards(backend, prefix, _groups(), overwrite=False)
            save_id = results[0].spec.save_id
            competing = _CompetitorBefore(n, lambda: backend.exists(prefix), place)
            interception = self._intercepting(backend, competing, "this test needs")
            try:
                with interception:
                    backend.commit(prefix, results, overwrite=False)
            except CheckpointExistsError:
                refused = True
            else:
                refused = False
            if competing.placed is None:
                # The commit point was written (or the commit ended) before the n-th write: the sweep is over.
                if n == 1 and not competing.too_late and not refused:
                    pytest.skip(
                        f"{type(self).__name__}.intercept_raw_writes announced no raw write of the commit in the "
                        "committing thread: this test puts the other checkpoint in place from there"
                    )
                if refused:
                    backend.abort(prefix, save_id)
                else:
                    backend.delete(prefix)
                return
            assert refused, (
                f"another writer's checkpoint was committed at {prefix!r} before {competing.placed} of "
                "commit(overwrite=False), and the commit raised nothing: its commit write must refuse an existing "
                "commit point itself (a create-only write: If-None-Match: *, ifGenerationMatch=0; a rename or "
                "link that refuses an existing target), since the other writer can commit after any check made "
                "before it"
            )
            self.assert_contents(backend, prefix, theirs)
            backend.abort(prefix, save_id)
            self.assert_contents(backend, prefix, theirs)
            changed = [path for path, data in competitor.items() if self.raw_read(path) != data]
            assert not changed, (
                f"the refused commit of {prefix!r} (the other checkpoint put in place before {competing.placed}) "
                f"changed the other checkpoint's objects {changed}"
            )
            for path in sorted(set(self.raw_list(base_url)) - start):
                self.raw_delete(path)
        pytest.fail(f"the commit still made raw writes after {_MAX_COMMIT_WRITES} runs, each one write later")

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
