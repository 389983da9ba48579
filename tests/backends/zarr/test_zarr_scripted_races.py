"""Races of a Zarr save with a cleanup or another save, scripted to exact points the cleanup race test cannot reach.

``test_zarr_cleanup_race.py`` writes the shards before the race starts, and
races one save with one cleanup. These tests place a step of one party at an
exact point of the other: a save that starts between the cleanup's listings,
two overwrites whose commits cross, a crash between the two renames of a local
overwrite, and shard writes that a cleanup interrupts.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_zarr_cleanup_race import (  # the fixture is used by name
    OBJECT_STORE_CAPS,
    STATES,
    STRATEGIES,
    _backend,
    _items,
    _reads_whole,
    elsewhere,  # noqa: F401
)

from interleave import COMMIT, Interleaving, Race, interleavings, scratch_directory
from trackpoint.backends.stores import FileLayer, FileSink, LocalFiles
from trackpoint.backends.zarr import ZarrBackend, ZarrOptions, _commit
from trackpoint.errors import CheckpointError, ConcurrentModificationError, DataLossError
from trackpoint.plugins import open_backend
from trackpoint.storage import Capabilities, CheckpointOptions, ShardSpec, WriteItem

#: The local disk declared like an object store: the create strategy.

#: Stops a party before an operation: ``(operation name, path)`` to whether to stop.
Stop = Callable[[str, str], bool]


class Script:
    """Two parties taking turns by a script of ``(party, stop)``: the party runs until ``stop`` says so.

    ``stop`` is asked before each of the party's operations (``None``: run to
    the end). A party that finishes hands the turn on. Unlike
    :class:`interleave.Turns`, which counts operations, this places a turn
    change at a named operation, whatever the code before it does.
    """

    def __init__(self, script: Sequence[tuple[str, Stop | None]]) -> None:
        self._script = list(script)
        self._i = 0
        self._cond = threading.Condition()
        self._done: set[str] = set()

    def _current(self) -> str | None:
        while self._i < len(self._script) and self._script[self._i][0] in self._done:
            self._i += 1
        return self._script[self._i][0] if self._i < len(self._script) else None

    def step(self, party: str, operation: str, path: str) -> None:
        with self._cond:
            while True:
                if not self._cond.wait_for(lambda: self._current() in (party, None), timeout=30):
                    raise TimeoutError(f"{party} never got its turn for {operation} {path}")
                stop = self._script[self._i][1] if self._current() is not None else None
                if stop is None or not stop(operation, path):
                    return
                self._i += 1
                self._cond.notify_all()

    def finish(self, party: str) -> None:
        with self._cond:
            self._done.add(party)
            self._cond.notify_all()


class Scripted(Interleaving):
    """A store whose operations wait for their turn in a :class:`Script`, by operation name and path."""

    script: Script | None = None

    def _step(self) -> None:
        if self.script is not None:
            # The Interleaving method that called: its name is the operation, its path argument the path.
            caller = sys._getframe(1)
            args = caller.f_locals
            path = args.get("path", args.get("directory", args.get("paths", "")))
            self.script.step(self.party, caller.f_code.co_name, str(path))

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        self._step()
        return _ScriptedSink(self, path, self.inner.open_sink(path, create_only=create_only))


class _ScriptedSink(FileSink):
    """A sink whose close (the completion of an S3 multipart upload) is an operation of its own."""

    def __init__(self, store: Scripted, path: str, inner: FileSink) -> None:
        self._store, self._path, self._inner = store, path, inner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(data)

    def write_many(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        self._inner.write_many(buffers)

    def close(self) -> None:
        if self._store.script is not None:
            self._store.script.step(self._store.party, "sink_close", self._path)
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()


def _run(script: Script, stores: Sequence[Scripted], work: dict[str, Callable[[], None]]) -> None:
    for store in stores:
        store.script = script

    def party(name: str, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            script.finish(name)

    threads = [threading.Thread(target=party, args=item) for item in work.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for store in stores:
        store.script = None


def _listing(operation: str, path: str) -> bool:
    return operation in ("find", "unfinished_uploads")


@pytest.mark.s3
@pytest.mark.usefixtures("elsewhere")
def test_s3_a_save_that_starts_between_the_cleanup_listings_is_never_committed_without_its_data(
    s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    options = CheckpointOptions(
        backend="zarr", storage_options=s3_storage_options, backend_options={"part_size": 5 << 20}
    )
    directory = f"{s3_bucket}/between-listings"
    prefix = f"{directory}/ckpt"

    def files() -> FileLayer:
        backend = open_backend(prefix, options)
        assert isinstance(backend, ZarrBackend)
        return backend.files

    plain = ZarrBackend(files(), ZarrOptions())
    writer_files, cleaner_files = Scripted(files(), "save"), Scripted(files(), "cleanup")
    writer, cleaner = ZarrBackend(writer_files, ZarrOptions()), ZarrBackend(cleaner_files, ZarrOptions())
    # One chunk of 12 MiB: a multipart upload of 5 MiB parts, unfinished while the save writes it.
    big = np.arange(3 << 20, dtype=np.float32)
    outcome: dict[str, Any] = {}
    root_reads: list[str] = []
    listings: list[str] = []

    def second_listing(operation: str, path: str) -> bool:
        if _listing(operation, path):
            listings.append(operation)
        return len(listings) == 2

    def after_the_root_is_read_again(operation: str, path: str) -> bool:
        if root_reads:
            return True
        if operation == "read" and path.endswith("ckpt.zarr/zarr.json"):
            root_reads.append(path)
        return False

    script = Script(
        [
            ("cleanup", second_listing),  # the cleanup's first listing (objects or unfinished uploads)
            ("save", lambda op, path: op == "sink_close"),  # its marker is in, its upload has parts
            ("cleanup", lambda op, path: op == "abort_uploads"),  # the other listing; the root read, the ages
            ("save", lambda op, path: op == "write_shard returned"),  # the upload completes
            ("cleanup", after_the_root_is_read_again),  # markers deleted (if any listed), the root read again
            ("save", None),  # the commit
            ("cleanup", None),  # the removal
        ]
    )

    def save() -> None:
        try:
            writer.begin(prefix, "s", overwrite=False)
            shard = writer.write_shard(prefix, ShardSpec(0, 1, "s"), [WriteItem("w", big)])
            script.step("save", "write_shard returned", "")
            writer.commit(prefix, [shard])
        except CheckpointError as exc:
            outcome["commit"] = exc
            writer.abort(prefix, "s")

    def clean() -> None:
        outcome["cleanup"] = cleaner.cleanup(directory, min_age=0)

    _run(script, [writer_files, cleaner_files], {"save": save, "cleanup": clean})
    assert "cleanup" in outcome, outcome
    if "commit" in outcome:
        assert isinstance(outcome["commit"], (ConcurrentModificationError, DataLossError)), outcome
        assert not plain.exists(prefix)
    else:
        # Committed: it reads back whole.
        with plain.open_reader(prefix) as r:
            np.testing.assert_array_equal(r.read("w"), big)
    for backend in (plain, writer, cleaner):
        backend.close()


def _weights(value: float) -> list[WriteItem]:
    return [WriteItem("w", np.full(3000, value, np.float32))]


class _Hooked(Interleaving):
    """A store that runs ``after_read`` once the root is read with its version, ``after_write`` once it is written."""

    def __init__(self, inner: FileLayer, after_read: Callable[[], None], after_write: Callable[[], None]) -> None:
        super().__init__(inner, "hooked")
        self._after_read: Callable[[], None] | None = after_read
        self._after_write: Callable[[], None] | None = after_write

    def _root(self, path: str, hook: str) -> None:
        run = getattr(self, hook)
        if path.endswith("ckpt.zarr/zarr.json") and run is not None:
            setattr(self, hook, None)
            run()

    def read_versioned(self, path: str) -> Any:
        found = super().read_versioned(path)
        self._root(path, "_after_read")
        return found

    def put(self, path: str, data: bytes | bytearray | memoryview, *, create_only: bool = False) -> None:
        super().put(path, data, create_only=create_only)
        self._root(path, "_after_write")

    def write_versioned(self, path: str, data: bytes, *, if_version: Any = None) -> str:
        version = super().write_versioned(path, data, if_version=if_version)
        self._root(path, "_after_write")
        return version


def test_an_overwrite_whose_commit_crosses_another_never_puts_back_a_root_whose_data_went(tmp_path: Path) -> None:
    options = ZarrOptions(chunk_bytes=4096, pack_bytes=1024)
    prefix = str(tmp_path / "ckpt")
    plain = ZarrBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS), options)
    plain.save(prefix, _weights(0.0))
    other = ZarrBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS), options)
    other_shard = other.write_shard(prefix, ShardSpec(0, 1, "other"), _weights(2.0))

    def the_other_overwrite_commits() -> None:
        # Between this save's read of the root it replaces and its write: the other save replaces that root
        # and deletes its data.
        other.commit(prefix, [other_shard], overwrite=True)

    def a_cleanup_takes_the_markers() -> None:
        # After this save's root write, before its check of the markers: its commit fails and retracts.
        for marker in (tmp_path / "ckpt.zarr/v-s").glob(".trackpoint-shard-*"):
            marker.unlink()

    files = _Hooked(
        LocalFiles(capabilities=OBJECT_STORE_CAPS), the_other_overwrite_commits, a_cleanup_takes_the_markers
    )
    backend = ZarrBackend(files, options)
    shard = backend.write_shard(prefix, ShardSpec(0, 1, "s"), _weights(1.0))
    with pytest.raises(CheckpointError) as failed:
        backend.commit(prefix, [shard], overwrite=True)
    backend.abort(prefix, "s")
    # The other save's commit stands.
    with plain.open_reader(prefix) as reader:
        np.testing.assert_array_equal(reader.read("w"), np.full(3000, 2.0, np.float32))
    # Refused at its write, which replaces only the root it read.
    assert failed.match(r"another save committed .*ckpt.* while this save was committing; .* retry it")
    assert isinstance(failed.value, ConcurrentModificationError)


class _Killed(BaseException):
    """A process killed at that point: no handler of the commit runs."""


@pytest.mark.usefixtures("elsewhere")
def test_a_crash_between_the_renames_of_an_overwrite_leaves_the_replaced_checkpoint_for_cleanup_to_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ZarrBackend(LocalFiles(), ZarrOptions(chunk_bytes=4096, pack_bytes=1024))
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, _weights(1.0))
    shard = backend.write_shard(prefix, ShardSpec(0, 1, "s"), _weights(2.0))
    rename = LocalFiles.rename

    def killed_before_the_second_rename(self: LocalFiles, src: str, dst: str) -> None:
        if src.endswith(".tmp-s"):
            raise _Killed
        rename(self, src, dst)

    monkeypatch.setattr(LocalFiles, "rename", killed_before_the_second_rename)
    with pytest.raises(_Killed):
        backend.commit(prefix, [shard])
    monkeypatch.setattr(LocalFiles, "rename", rename)
    aside = str(tmp_path / "ckpt.zarr.tmp-s-replaced")
    assert backend.list_checkpoints(str(tmp_path)) == []
    # The prefix's last checkpoint, shown with what cleanup would act on.
    assert backend.leftovers(str(tmp_path)) == [str(tmp_path / "ckpt.zarr.tmp-s"), aside]
    # While the save that renamed it aside may still be running (its group is young), it stays where it is.
    assert backend.cleanup(str(tmp_path), min_age=3600) == []
    assert Path(aside).is_dir()
    # Then cleanup renames it back (and removes the dead save's group).
    assert backend.cleanup(str(tmp_path), min_age=0) == [str(tmp_path / "ckpt.zarr.tmp-s"), aside]
    assert backend.list_checkpoints(str(tmp_path)) == [prefix]
    with backend.open_reader(prefix) as reader:
        np.testing.assert_array_equal(reader.read("w"), np.full(3000, 1.0, np.float32))
    assert backend.leftovers(str(tmp_path)) == []


class _WritingRace(Race):
    """As :class:`interleave.Race`, but the save writes its shards inside the race too."""

    def check(self) -> None:
        super().check()
        if self.commit_error is not None:
            # Whether the shards or the commit met the cleanup: the save is named, and what to do.
            message = str(self.commit_error)
            assert "save s for" in message and "this save was not committed, retry it" in message, message
            assert "min_age" in message, message


@pytest.mark.usefixtures("elsewhere")
@STRATEGIES
@pytest.mark.parametrize("committed", STATES)
def test_local_shard_writes_that_a_cleanup_interrupts_fail_saying_so(
    tmp_path: Path, caps: Capabilities | None, exchange: bool, committed: bool
) -> None:
    with scratch_directory(tmp_path) as scratch:

        def new_case(name: str) -> _WritingRace:
            return _WritingRace(
                lambda: LocalFiles(capabilities=caps),
                str(scratch / name),
                backend=lambda files: _backend(files, exchange=exchange),
                items=_items,
                reads_whole=_reads_whole,
                committed=committed,
                shards=2,
                writes_in_race=True,
            )

        # The save first: a cleanup that starts first finds nothing and is over in one listing.
        assert interleavings(new_case, COMMIT, switches=2) > 5


@pytest.mark.parametrize("store", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_commit_of_many_shards_lists_their_markers_and_fails_if_a_cleanup_took_one(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if store == "local":
        directory = str(tmp_path)
        make: Callable[[], FileLayer] = lambda: LocalFiles(capabilities=OBJECT_STORE_CAPS)  # noqa: E731
    else:
        directory = f"{request.getfixturevalue('s3_bucket')}/many-shards"
        options = CheckpointOptions(backend="zarr", storage_options=request.getfixturevalue("s3_storage_options"))

        def make() -> FileLayer:
            backend = open_backend(directory, options)
            assert isinstance(backend, ZarrBackend)
            return backend.files

    prefix = f"{directory}/ckpt"
    plain = ZarrBackend(make(), ZarrOptions())
    shards = 13  # more than _commit._STATS_PER_LISTING: the markers are listed, not asked one by one
    assert shards > _commit._STATS_PER_LISTING
    plain.save(prefix, _weights(0.0))

    def a_cleanup_takes_a_marker() -> None:
        plain.files.delete([f"{prefix}.zarr/v-s/.trackpoint-shard-00007"])

    backend = ZarrBackend(_Hooked(make(), lambda: None, a_cleanup_takes_a_marker), ZarrOptions())
    results = [
        backend.write_shard(prefix, ShardSpec(i, shards, "s"), [WriteItem(f"t{i}", np.full(10, i, np.float32))])
        for i in range(shards)
    ]
    with pytest.raises(DataLossError, match=r"staged arrays of save s .*shard-00007' is gone.*retry it"):
        backend.commit(prefix, results, overwrite=True)
    # The replaced root is back; then a commit whose markers are all there goes through.
    with plain.open_reader(prefix) as reader:
        np.testing.assert_array_equal(reader.read("w"), np.full(3000, 0.0, np.float32))
    again = [
        plain.write_shard(prefix, ShardSpec(i, shards, "t"), [WriteItem(f"t{i}", np.full(10, i, np.float32))])
        for i in range(shards)
    ]
    plain.commit(prefix, again, overwrite=True)
    with plain.open_reader(prefix) as reader:
        assert sorted(reader.keys()) == sorted(f"t{i}" for i in range(shards))
    for b in (plain, backend):
        b.close()
