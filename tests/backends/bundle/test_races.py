"""Two saves of one prefix on an object store (create-only commit), interleaved step by step.

The store is the local disk declared like an object store (no atomic rename,
create-only writes). Save A is interrupted at a chosen file operation while
save B runs its overwrite (delete everything at the prefix, write, commit).
Whatever the interleaving, no visible index may pair A's index with B's data:
A must refuse (or retract) its commit, and B's checkpoint must read back intact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import FileSink, LocalFiles
from trackpoint.errors import ConcurrentModificationError
from trackpoint.storage import (
    ANY_VERSION,
    Capabilities,
    CheckpointOptions,
    ShardResult,
    ShardSpec,
    WriteItem,
    _AnyVersion,
)

Action = Callable[[], None]
#: The local disk declared like an object store (as in conftest.py).
OBJECT_STORE_CAPS = Capabilities(atomic_rename=False, conditional_create=True)


class _NotifyingSink(FileSink):
    """A real local sink that runs an action once its file is published."""

    def __init__(self, inner: FileSink, action: Action) -> None:
        self._inner = inner
        self._action = action

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(data)

    def close(self) -> None:
        self._inner.close()
        self._action()

    def abort(self) -> None:
        self._inner.abort()


class HookedFiles(LocalFiles):
    """LocalFiles in object-store mode that runs an action at a chosen file operation (once).

    ``before_write[path]`` runs just before ``path`` is written (by a sink or a
    versioned write); ``after_close[path]`` runs once a sink has published it.
    """

    def __init__(self) -> None:
        super().__init__(capabilities=OBJECT_STORE_CAPS)
        self.before_write: dict[str, Action] = {}
        self.after_close: dict[str, Action] = {}

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        before = self.before_write.pop(path, None)
        if before is not None:
            before()
        sink = super().open_sink(path, create_only=create_only)
        after = self.after_close.pop(path, None)
        return sink if after is None else _NotifyingSink(sink, after)

    def write_versioned(self, path: str, data: bytes, *, if_version: str | _AnyVersion | None = ANY_VERSION) -> str:
        before = self.before_write.pop(path, None)
        if before is not None:
            before()
        return super().write_versioned(path, data, if_version=if_version)


class PausingBackend(BundleBackend):
    """A bundle backend that runs an action when ``commit`` is called, before committing."""

    before_commit: Action | None = None

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = False) -> None:
        action, self.before_commit = self.before_commit, None
        if action is not None:
            action()
        super().commit(prefix, shards, overwrite=overwrite)


def _items(value: float, n: int = 2) -> list[WriteItem]:
    # Every save writes the same shapes, so data sizes alone cannot tell two saves apart.
    return [WriteItem(f"t{i}", np.full(1000, value + i, np.float32)) for i in range(n)]


def _write(backend: BundleBackend, prefix: str, save_id: str, value: float, shards: int) -> list[ShardResult]:
    items = _items(value, 2)
    groups = [items] if shards == 1 else [[it] for it in items]
    return [backend.write_shard(prefix, ShardSpec(i, shards, save_id), g) for i, g in enumerate(groups)]


def _b_overwrite(prefix: str, value: float, shards: int) -> tuple[BundleBackend, list[ShardResult]]:
    """Save B, in its own backend instance (as another process), up to its commit."""
    b = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))
    b.delete(prefix)  # what save(overwrite=True) does before writing
    return b, _write(b, prefix, "b", value, shards)


def _assert_one_save(backend: BundleBackend, prefix: str, allowed: set[float]) -> None:
    """A checkpoint visible at ``prefix`` reads back whole (CRCs pass) and all from one save."""
    if not backend.exists(prefix):
        return
    with backend.open_reader(prefix) as r:
        starts = {float(r.read(k)[0]) - i for i, k in enumerate(sorted(r.keys()))}
    assert len(starts) == 1 and starts <= allowed, f"mixed checkpoint at {prefix}: {starts}"


def _assert_b_intact(prefix: str) -> None:
    reader_backend = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))
    with reader_backend.open_reader(prefix) as r:
        assert r.keys() == ["t0", "t1"]
        np.testing.assert_array_equal(r.read("t0"), np.full(1000, 2.0, np.float32))
        np.testing.assert_array_equal(r.read("t1"), np.full(1000, 3.0, np.float32))


@pytest.mark.parametrize("shards", [1, 2])
def test_overwrite_after_data_was_written_refuses_the_first_commit(prefix: str, shards: int) -> None:
    a = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))
    results_a = _write(a, prefix, "a", 0.0, shards)
    b, results_b = _b_overwrite(prefix, 2.0, shards)
    with pytest.raises(
        ConcurrentModificationError, match=r"another save replaced the objects of .*ckpt-1.*not committed"
    ):
        a.commit(prefix, results_a, overwrite=True)
    assert not a.exists(prefix)
    b.commit(prefix, results_b, overwrite=True)
    _assert_b_intact(prefix)


@pytest.mark.parametrize("shards", [1, 2])
def test_takeover_between_the_check_and_the_index_write_is_retracted(prefix: str, shards: int) -> None:
    files = HookedFiles()
    a = BundleBackend(files)
    results_a = _write(a, prefix, "a", 0.0, shards)
    b_state: list[tuple[BundleBackend, list[ShardResult]]] = []
    # A has checked its markers and data; B deletes everything and writes its
    # data before A's index lands, so A's index would describe B's data.
    files.before_write[prefix + ".index"] = lambda: b_state.append(_b_overwrite(prefix, 2.0, shards))
    with pytest.raises(ConcurrentModificationError, match=r"removed after the index was written.*not committed"):
        a.commit(prefix, results_a, overwrite=True)
    assert b_state, "the takeover did not run"
    assert not a.exists(prefix), "the retracted index is still visible"
    b, results_b = b_state[0]
    b.commit(prefix, results_b, overwrite=True)
    _assert_b_intact(prefix)


def test_takeover_before_the_piece_index_is_published_fails_the_shard(prefix: str) -> None:
    files = HookedFiles()
    a = BundleBackend(files)
    data = f"{prefix}.data-00000-of-00001"
    b_state: list[tuple[BundleBackend, list[ShardResult]]] = []
    # B's delete lands between A's data write and the piece table replacing A's marker.
    files.after_close[data] = lambda: b_state.append(_b_overwrite(prefix, 2.0, 1))
    with pytest.raises(ConcurrentModificationError, match=r"while this save was writing shard 0.*retry"):
        a.write_shard(prefix, ShardSpec(0, 1, "a"), _items(0.0))
    a.abort(prefix, "a")
    b, results_b = b_state[0]
    b.commit(prefix, results_b, overwrite=True)
    _assert_b_intact(prefix)


def test_takeover_during_the_index_write_restores_the_replaced_checkpoint(prefix: str) -> None:
    BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS)).save(prefix, _items(5.0))
    files = HookedFiles()
    a = BundleBackend(files)
    results_a = _write(a, prefix, "a", 0.0, 1)
    b = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))
    # B's begin runs just before A's index replaces the committed one: it revokes A's markers
    # and deletes A's data objects (the committed index does not name them).
    files.before_write[prefix + ".index"] = lambda: b.begin(prefix, "b", overwrite=True)
    with pytest.raises(ConcurrentModificationError, match=r"removed after the index was written.*not committed"):
        a.commit(prefix, results_a, overwrite=True)
    # A put the replaced index back, and its data objects were never touched.
    with a.open_reader(prefix) as r:
        assert [float(r.read(k)[0]) for k in r.keys()] == [5.0, 6.0]
    results_b = _write(b, prefix, "b", 2.0, 1)
    b.commit(prefix, results_b, overwrite=True)
    _assert_b_intact(prefix)


@pytest.mark.parametrize("aborter", ["same instance", "other process"])
def test_abort_after_a_takeover_deletes_no_data(prefix: str, aborter: str) -> None:
    a = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))
    _write(a, prefix, "a", 0.0, 1)
    b, results_b = _b_overwrite(prefix, 2.0, 1)
    # A "process" that never wrote anything only sees what is listed.
    (a if aborter == "same instance" else BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))).abort(prefix, "a")
    b.commit(prefix, results_b, overwrite=True)
    _assert_b_intact(prefix)


@pytest.mark.parametrize("aborter", ["same instance", "other process"])
def test_abort_of_a_save_that_lost_the_data_race_keeps_the_winner(prefix: str, aborter: str) -> None:
    b, results_b = _b_overwrite(prefix, 2.0, 1)
    a = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))
    # A's marker is written after B's delete, so it survives; its data write collides with B's.
    with pytest.raises(ConcurrentModificationError, match=r"uncommitted save exist at .*ckpt-1"):
        a.write_shard(prefix, ShardSpec(0, 1, "a"), _items(0.0))
    (a if aborter == "same instance" else BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS))).abort(prefix, "a")
    assert not list(Path(prefix).parent.glob("*.a.index")), "the loser's marker was left behind"
    b.commit(prefix, results_b, overwrite=True)
    _assert_b_intact(prefix)


def test_concurrent_overwriting_saves_never_publish_a_mixture(prefix: str) -> None:
    """Two real ``save(overwrite=True)`` calls: A is held at its commit while B saves completely."""
    a = PausingBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS), options=CheckpointOptions(num_writers=1))
    b = BundleBackend(LocalFiles(capabilities=OBJECT_STORE_CAPS), options=CheckpointOptions(num_writers=1))
    at_commit, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        at_commit.set()
        assert release.wait(30), "the test never released save A"

    def save_a() -> None:
        try:
            a.save(prefix, _items(0.0), overwrite=True)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    a.before_commit = hold
    thread = threading.Thread(target=save_a)
    thread.start()
    try:
        assert at_commit.wait(30), "save A never reached its commit"
        b.save(prefix, _items(2.0), overwrite=True)
        _assert_one_save(b, prefix, {2.0})
    finally:
        release.set()
        thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ConcurrentModificationError), errors
    assert "another save replaced the objects of" in str(errors[0])
    _assert_one_save(b, prefix, {2.0})
    _assert_b_intact(prefix)
    # A's abort removed its own markers and none of B's objects.
    assert sorted(p.name for p in Path(prefix).parent.iterdir()) == [
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
    ]
