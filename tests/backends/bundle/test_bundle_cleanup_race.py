"""One save's commit and one ``cleanup(directory, min_age=0)`` interleaved at every file operation.

``cleanup`` cannot tell a running save from a crashed one, so ``min_age=0`` may
remove a running save's pieces. What it must never do is remove the data of a
checkpoint that is (or becomes) committed: whatever the interleaving, either
the commit fails with a trackpoint error and nothing new is visible (the
replaced checkpoint, if any, still reads back whole), or the commit succeeds
and the new checkpoint reads back whole.

The interleavings are enumerated, not hoped for: the two parties run in
threads on stores (:class:`Interleaving`) that let them take turns one file
operation at a time, by a plan (:class:`Turns`). On the local disk every plan
with up to three turn changes runs (both strategies, one and two shards, onto
a new prefix and over a committed one); on S3 (moto) every plan with one,
which keeps the round trips few. Plans with more changes are covered by the
argument in ``BundleBackend._remove_group``, not by enumeration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import FileLayer, FileSink, FileSource, LocalFiles, UnfinishedUpload
from trackpoint.errors import CheckpointError, ConcurrentModificationError, DataLossError
from trackpoint.plugins import open_backend
from trackpoint.storage import (
    ANY_VERSION,
    Capabilities,
    CheckpointOptions,
    ShardResult,
    ShardSpec,
    VersionCondition,
    VersionedBytes,
    WriteItem,
)

#: The local disk declared like an object store (as in conftest.py).
OBJECT_STORE_CAPS = Capabilities(atomic_rename=False, conditional_create=True)
OLD, NEW = 1.0, 5.0
COMMIT, CLEANUP = "commit", "cleanup"


class Turns:
    """Lets two parties take turns, one file operation at a time, by a plan.

    The plan is a list of ``(party, operations)``: that party performs that
    many operations (``None``: all it has left) and then waits while the next
    entry's party goes on. A party that finishes early hands the turn on.
    ``reached[i]`` tells whether entry ``i``'s party performed all of its
    operations, so a caller knows when a longer plan is pointless.
    """

    def __init__(self, plan: Sequence[tuple[str, int | None]]) -> None:
        self._plan = list(plan)
        self._cond = threading.Condition()
        self._done: set[str] = set()
        self._i = 0
        self._left = self._plan[0][1]
        self.reached = [False] * len(self._plan)

    def _current(self) -> str | None:
        return self._plan[self._i][0] if self._i < len(self._plan) else None

    def _advance(self) -> None:
        self._i += 1
        while self._i < len(self._plan) and self._plan[self._i][0] in self._done:
            self._i += 1
        self._left = self._plan[self._i][1] if self._i < len(self._plan) else None
        self._cond.notify_all()

    def step(self, party: str) -> None:
        """Called by ``party`` before each of its operations: returns when it may perform it."""
        with self._cond:
            while True:
                if not self._cond.wait_for(lambda: self._current() in (party, None), timeout=30):
                    raise TimeoutError(f"{party} never got its turn")
                if self._current() is None:
                    return
                if self._left == 0:
                    self.reached[self._i] = True
                    self._advance()
                    continue
                if self._left is not None:
                    self._left -= 1
                return

    def finish(self, party: str) -> None:
        """``party`` has no operation left."""
        with self._cond:
            self._done.add(party)
            if self._current() == party:
                self._advance()


class Interleaving(FileLayer):
    """``inner``, whose every operation on the store first waits for ``party``'s turn when ``turns`` is set."""

    def __init__(self, inner: FileLayer, party: str) -> None:
        self.inner = inner
        self.party = party
        self.capabilities = inner.capabilities
        self.store_name = inner.store_name
        self.read_chunk_bytes = inner.read_chunk_bytes
        self.min_bytes_per_writer = inner.min_bytes_per_writer
        self.turns: Turns | None = None

    def _step(self) -> None:
        if self.turns is not None:
            self.turns.step(self.party)

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        self._step()
        return self.inner.open_sink(path, create_only=create_only)

    def put(self, path: str, data: bytes | bytearray | memoryview, *, create_only: bool = False) -> None:
        self._step()
        self.inner.put(path, data, create_only=create_only)

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        self._step()
        self.inner.read_into(path, offset, out)

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        self._step()
        self.inner.read_ranges(path, ranges)

    def open_source(self, path: str) -> FileSource:
        self._step()
        return self.inner.open_source(path)

    def read(self, path: str) -> bytes:
        self._step()
        return self.inner.read(path)

    def size(self, path: str) -> int | None:
        self._step()
        return self.inner.size(path)

    def sizes(self, paths: Sequence[str]) -> list[int | None]:
        self._step()
        return self.inner.sizes(paths)

    def exists(self, path: str) -> bool:
        self._step()
        return self.inner.exists(path)

    def modified(self, path: str) -> float | None:
        self._step()
        return self.inner.modified(path)

    def listdir(self, directory: str) -> list[str]:
        self._step()
        return self.inner.listdir(directory)

    def delete(self, paths: Sequence[str]) -> None:
        self._step()
        self.inner.delete(paths)

    def read_versioned(self, path: str) -> VersionedBytes | None:
        self._step()
        return self.inner.read_versioned(path)

    def write_versioned(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        self._step()
        return self.inner.write_versioned(path, data, if_version=if_version)

    def rename(self, src: str, dst: str) -> None:
        self._step()
        self.inner.rename(src, dst)

    def rename_new(self, src: str, dst: str) -> None:
        self._step()
        self.inner.rename_new(src, dst)

    def makedirs(self, directory: str) -> None:
        self._step()
        self.inner.makedirs(directory)

    def remove_dir(self, directory: str) -> None:
        self._step()
        self.inner.remove_dir(directory)

    def sync_dir(self, directory: str) -> None:
        self._step()
        self.inner.sync_dir(directory)

    def unfinished_uploads(self, directory: str, *, recursive: bool = False) -> list[UnfinishedUpload]:
        self._step()
        return self.inner.unfinished_uploads(directory, recursive=recursive)

    def abort_uploads(self, uploads: Sequence[UnfinishedUpload]) -> None:
        self._step()
        self.inner.abort_uploads(uploads)

    def cleaning_up(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.cleaning_up()

    def join(self, directory: str, name: str) -> str:
        return self.inner.join(directory, name)

    def dirname(self, path: str) -> str:
        return self.inner.dirname(path)

    def close(self) -> None:
        self.inner.close()


def _items(value: float) -> list[WriteItem]:
    return [WriteItem(f"t{i}", np.full(300, value + i, np.float32)) for i in range(2)]


def _reads_whole(backend: BundleBackend, prefix: str, value: float) -> None:
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["t0", "t1"]
        for i, key in enumerate(r.keys()):
            np.testing.assert_array_equal(r.read(key), np.full(300, value + i, np.float32))


class Case:
    """One save of ``prefix`` up to its commit, and one cleanup of its directory, each on its own store."""

    def __init__(self, make: Callable[[], FileLayer], directory: str, *, committed: bool, shards: int) -> None:
        self.directory = directory
        self.prefix = f"{directory}/ckpt"
        self.plain = BundleBackend(make())
        if committed:
            self.plain.save(self.prefix, _items(OLD), CheckpointOptions(num_writers=shards))
        self.stores = {COMMIT: Interleaving(make(), COMMIT), CLEANUP: Interleaving(make(), CLEANUP)}
        self.writer = BundleBackend(self.stores[COMMIT])
        self.cleaner = BundleBackend(self.stores[CLEANUP])
        self.writer.begin(self.prefix, "s", overwrite=True)
        items = _items(NEW)
        groups = [items] if shards == 1 else [[it] for it in items]
        self.shards: list[ShardResult] = [
            self.writer.write_shard(self.prefix, ShardSpec(i, shards, "s"), g) for i, g in enumerate(groups)
        ]
        self.committed = committed
        self.commit_error: CheckpointError | None = None
        self.failures: list[BaseException] = []

    def _commit(self) -> None:
        try:
            self.writer.commit(self.prefix, self.shards, overwrite=True)
        except CheckpointError as exc:
            self.commit_error = exc
            self.writer.abort(self.prefix, "s")

    def _cleanup(self) -> None:
        self.cleaner.cleanup(self.directory, min_age=0)

    def run(self, plan: Sequence[tuple[str, int | None]]) -> list[bool]:
        """Commit and clean up, taking turns by ``plan`` (see :class:`Turns`); return ``Turns.reached``."""
        turns = Turns(plan)

        def party(name: str, work: Callable[[], None]) -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by check()
                self.failures.append(exc)
            finally:
                turns.finish(name)

        for store in self.stores.values():
            store.turns = turns
        threads = [
            threading.Thread(target=party, args=(COMMIT, self._commit)),
            threading.Thread(target=party, args=(CLEANUP, self._cleanup)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for store in self.stores.values():
            store.turns = None
        return turns.reached

    def check(self) -> None:
        """The invariant: the new checkpoint whole if the commit succeeded, else what was there before."""
        assert not self.failures, self.failures
        # The two errors the docs name for a save whose pieces a cleanup removed.
        assert self.commit_error is None or isinstance(self.commit_error, (ConcurrentModificationError, DataLossError))
        if self.commit_error is None:
            _reads_whole(self.plain, self.prefix, NEW)
        elif self.committed:
            _reads_whole(self.plain, self.prefix, OLD)
        else:
            assert not self.plain.exists(self.prefix), f"a failed commit left an index: {self.commit_error!r}"

    def close(self) -> None:
        for backend in (self.plain, self.writer, self.cleaner):
            backend.close()


def _interleavings(new_case: Callable[[str], Case], first: str, *, switches: int) -> int:
    """Run every plan that ``first`` starts with at most ``switches`` turn changes; return how many ran.

    A plan gives each of the first ``switches`` turns a number of operations (at least one), the
    parties alternating, and then lets each party finish. The counts are enumerated like an
    odometer: the last turn's count grows until its party finishes within it (that run is the
    plan with one change fewer), then the count before it grows, and so on.
    """
    parties = [(first, CLEANUP if first == COMMIT else COMMIT)[i % 2] for i in range(switches + 2)]
    counts = [1] * switches
    runs = 0
    while True:
        case = new_case("-".join(map(str, counts)))
        plan: list[tuple[str, int | None]] = [*zip(parties, counts, strict=False)]
        plan += [(parties[-2], None), (parties[-1], None)]
        try:
            reached = case.run(plan)
            runs += 1
            try:
                case.check()
            except BaseException as exc:
                raise AssertionError(f"plan {plan}: commit error {case.commit_error!r}") from exc
        finally:
            case.close()
        # Turns after one whose party finished inside it change nothing: grow the last turn before that.
        done = reached.index(False) if False in reached[:switches] else switches
        if done == 0:
            return runs
        grow = done - 1
        counts[grow] += 1
        counts[grow + 1 :] = [1] * (switches - grow - 1)


FIRST = [pytest.param(COMMIT, id="commit-first"), pytest.param(CLEANUP, id="cleanup-first")]
STATES = [pytest.param(False, id="new-prefix"), pytest.param(True, id="overwrite")]


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs where the machine has one, else ``tmp_path``.

    Every interleaving is a fresh save, and on tmpfs its fsyncs cost nothing; renames,
    exclusive creates and listings behave as on a disk.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="trackpoint-race-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["rename", "create"])
def local_store(request: pytest.FixtureRequest) -> Callable[[], FileLayer]:
    caps = None if request.param == "rename" else OBJECT_STORE_CAPS
    return lambda: LocalFiles(capabilities=caps)


@pytest.mark.parametrize("first", FIRST)
@pytest.mark.parametrize("committed", STATES)
@pytest.mark.parametrize("shards", [1, 2])
def test_local_commit_and_cleanup_never_publish_missing_data(
    local_store: Callable[[], FileLayer], scratch: Path, first: str, committed: bool, shards: int
) -> None:
    def new_case(name: str) -> Case:
        return Case(local_store, str(scratch / name), committed=committed, shards=shards)

    assert _interleavings(new_case, first, switches=3) > 10


@pytest.mark.s3
@pytest.mark.parametrize("first", FIRST)
@pytest.mark.parametrize("committed", STATES)
def test_s3_commit_and_cleanup_never_publish_missing_data(
    s3_bucket: str, s3_storage_options: dict[str, Any], first: str, committed: bool
) -> None:
    options = CheckpointOptions(storage_options=s3_storage_options)

    def make() -> FileLayer:
        backend = open_backend(f"{s3_bucket}/race/ckpt", options)
        assert isinstance(backend, BundleBackend)
        return backend.files

    def new_case(name: str) -> Case:
        return Case(make, f"{s3_bucket}/race/{name}", committed=committed, shards=2)

    # One turn change per run keeps the number of S3 round trips small; the local tests take every two.
    assert _interleavings(new_case, first, switches=1) > 3


def test_turns_follow_the_plan() -> None:
    turns = Turns([("a", 1), ("b", 2), ("a", None), ("b", None)])
    order: list[str] = []

    def party(name: str, n: int) -> None:
        for _ in range(n):
            turns.step(name)
            order.append(name)
        turns.finish(name)

    threads = [threading.Thread(target=party, args=("a", 3)), threading.Thread(target=party, args=("b", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert turns.reached[:2] == [True, True]


def test_a_committed_prefix_with_piece_indexes_keeps_its_stray_data_until_a_later_cleanup(tmp_path: Path) -> None:
    files = LocalFiles(capabilities=OBJECT_STORE_CAPS)
    backend = BundleBackend(files)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, _items(OLD), CheckpointOptions(num_writers=1))
    # An overwrite that wrote its shard and stopped: its piece index and a data object of another count.
    backend.write_shard(prefix, ShardSpec(0, 1, "s"), _items(NEW))
    stray = f"{prefix}.data-00000-of-00002"
    assert files.exists(stray)
    removed = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS)).cleanup(str(tmp_path), min_age=0)
    # Its save may be committing, and would put the replaced index back if its commit failed.
    assert [Path(p).name for p in removed] == ["ckpt.part-00000-of-00002.s.piece"]
    assert files.exists(stray)
    removed = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS)).cleanup(str(tmp_path), min_age=0)
    assert removed == [stray]
    _reads_whole(backend, prefix, OLD)
