"""Two parties taking turns one store operation at a time, for tests of races between a commit and a cleanup.

The parties run in threads on stores (:class:`Interleaving`) that let them take
turns one file operation at a time, by a plan (:class:`Turns`);
:func:`interleavings` runs every plan up to a number of turn changes against
fresh cases (:class:`RaceCase`), such as :class:`Race`: one save's commit and one cleanup. Used by the
bundle and Zarr cleanup race tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from trackpoint.backends.stores import FileLayer, FileSink, FileSource, LocalFiles, UnfinishedUpload
from trackpoint.errors import CheckpointError, ConcurrentModificationError, DataLossError
from trackpoint.storage import (
    ANY_VERSION,
    CheckpointOptions,
    ShardResult,
    ShardSpec,
    StorageBackend,
    VersionCondition,
    VersionedBytes,
    WriteItem,
)

COMMIT, CLEANUP = "commit", "cleanup"
#: The values of the checkpoint a race's save replaces and of the one it saves.
OLD, NEW = 1.0, 5.0
FIRST = [pytest.param(COMMIT, id="commit-first"), pytest.param(CLEANUP, id="cleanup-first")]


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

    def find(self, directory: str) -> list[str]:
        self._step()
        return self.inner.find(directory)

    def rmtree(self, directory: str) -> None:
        # Not one step: a removal that the other party's operations interleave with, one directory's files
        # at a time on a local disk, one listing and one batch deletion on an object store.
        if not isinstance(self.inner, LocalFiles):
            found = self.find(directory)
            if found:
                self.delete(found)
            return
        for here, dirs, names in os.walk(directory, topdown=False):
            self.delete([os.path.join(here, name) for name in names])
            for name in dirs:
                self.remove_dir(os.path.join(here, name))
        self.remove_dir(directory)


def take_turns(
    plan: Sequence[tuple[str, int | None]], stores: Sequence[Interleaving], work: dict[str, Callable[[], None]]
) -> tuple[list[bool], list[BaseException]]:
    """Run each party's ``work`` in a thread on ``stores``, taking turns by ``plan``.

    Returns :attr:`Turns.reached` and what the parties raised.
    """
    turns = Turns(plan)
    failures: list[BaseException] = []

    def party(name: str, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - returned to the caller
            failures.append(exc)
        finally:
            turns.finish(name)

    for store in stores:
        store.turns = turns
    threads = [threading.Thread(target=party, args=item) for item in work.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for store in stores:
        store.turns = None
    return turns.reached, failures


class RaceCase(Protocol):
    """One commit and one cleanup, each on its own :class:`Interleaving` store."""

    #: The error the commit raised, ``None`` if it succeeded.
    commit_error: CheckpointError | None

    def run(self, plan: Sequence[tuple[str, int | None]]) -> list[bool]:
        """Commit and clean up, taking turns by ``plan`` (see :class:`Turns`); return ``Turns.reached``."""

    def check(self) -> None:
        """Assert the invariant after a run."""

    def close(self) -> None:
        """Release the case's stores."""


class Race:
    """One save of ``prefix`` up to its commit, and one ``cleanup(directory, min_age=0)``, each on its own store.

    The invariant (:meth:`check`): the new checkpoint reads back whole if the commit succeeded; else it failed
    with one of the two errors the docs name for a save whose staging a cleanup removed, and the prefix holds
    what it held (the checkpoint saved before, read back whole, or nothing).

    Parameters
    ----------
    make
        A fresh store (on the same storage at each call).
    directory
        The directory the race runs in; the prefix is ``<directory>/ckpt``.
    backend
        The format over a store.
    items
        What a save of ``value`` writes.
    reads_whole
        Asserts that a prefix reads back as a save of ``value`` wrote it.
    committed
        Whether the prefix holds a checkpoint (saved with :data:`OLD`) before the race.
    shards
        How many shards the save writes (with more than one, one item each).
    writes_in_race
        Whether the save writes its shards inside the race too (by default, before it: only the commit races).
    """

    def __init__(
        self,
        make: Callable[[], FileLayer],
        directory: str,
        *,
        backend: Callable[[FileLayer], StorageBackend],
        items: Callable[[float], list[WriteItem]],
        reads_whole: Callable[[StorageBackend, str, float], None],
        committed: bool,
        shards: int,
        writes_in_race: bool = False,
    ) -> None:
        self.directory = directory
        self.prefix = f"{directory}/ckpt"
        self._items = items
        self._reads_whole = reads_whole
        self._num_shards = shards
        self._writes_in_race = writes_in_race
        self.plain = backend(make())
        if committed:
            self.plain.save(self.prefix, items(OLD), CheckpointOptions(num_writers=shards))
        self.stores = {COMMIT: Interleaving(make(), COMMIT), CLEANUP: Interleaving(make(), CLEANUP)}
        self.writer = backend(self.stores[COMMIT])
        self.cleaner = backend(self.stores[CLEANUP])
        self.shards: list[ShardResult] = [] if writes_in_race else self._write()
        self.committed = committed
        self.commit_error: CheckpointError | None = None
        self.failures: list[BaseException] = []

    def _write(self) -> list[ShardResult]:
        """Begin the save and write its shards."""
        self.writer.begin(self.prefix, "s", overwrite=True)
        items = self._items(NEW)
        n = self._num_shards
        groups = [items] if n == 1 else [[it] for it in items]
        return [self.writer.write_shard(self.prefix, ShardSpec(i, n, "s"), g) for i, g in enumerate(groups)]

    def _commit(self) -> None:
        try:
            shards = self._write() if self._writes_in_race else self.shards
            self.writer.commit(self.prefix, shards, overwrite=True)
        except CheckpointError as exc:
            self.commit_error = exc
            self.writer.abort(self.prefix, "s")

    def _cleanup(self) -> None:
        self.cleaner.cleanup(self.directory, min_age=0)

    def run(self, plan: Sequence[tuple[str, int | None]]) -> list[bool]:
        """Commit and clean up, taking turns by ``plan`` (see :class:`Turns`); return ``Turns.reached``."""
        reached, self.failures = take_turns(
            plan, list(self.stores.values()), {COMMIT: self._commit, CLEANUP: self._cleanup}
        )
        return reached

    def check(self) -> None:
        """The invariant: the new checkpoint whole if the commit succeeded, else what was there before."""
        assert not self.failures, self.failures
        # The two errors the docs name for a save whose staging a cleanup removed.
        assert self.commit_error is None or isinstance(self.commit_error, (ConcurrentModificationError, DataLossError))
        if self.commit_error is None:
            self._reads_whole(self.plain, self.prefix, NEW)
        elif self.committed:
            self._reads_whole(self.plain, self.prefix, OLD)
        else:
            assert not self.plain.exists(self.prefix), f"a failed commit left a checkpoint: {self.commit_error!r}"

    def close(self) -> None:
        for backend in (self.plain, self.writer, self.cleaner):
            backend.close()


def interleavings(new_case: Callable[[str], RaceCase], first: str, *, switches: int) -> int:
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


@contextlib.contextmanager
def scratch_directory(tmp_path: Path) -> Iterator[Path]:
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
