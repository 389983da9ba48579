"""One save's commit and one ``cleanup(directory, min_age=0)`` interleaved at every file operation.

``cleanup`` cannot tell a running save from a crashed one, so ``min_age=0`` may
remove a running save's pieces. What it must never do is remove the data of a
checkpoint that is (or becomes) committed: whatever the interleaving, either
the commit fails with a trackpoint error and nothing new is visible (the
replaced checkpoint, if any, still reads back whole), or the commit succeeds
and the new checkpoint reads back whole.

The interleavings are enumerated, not hoped for: the two parties run in
threads on stores (:class:`interleave.Interleaving`) that let them take turns
one file operation at a time, by a plan (:class:`interleave.Turns`). On the
local disk every plan with up to three turn changes runs (both strategies, one and two shards, onto
a new prefix and over a committed one); on S3 (moto) every plan with one,
which keeps the round trips few. Plans with more changes are covered by the
argument in ``BundleBackend._remove_group``, not by enumeration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interleave import FIRST, NEW, OLD, Race, Turns, interleavings, scratch_directory
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import FileLayer, LocalFiles
from trackpoint.plugins import open_backend
from trackpoint.storage import Capabilities, CheckpointOptions, ShardSpec, StorageBackend, WriteItem

#: The local disk declared like an object store (as in conftest.py).
OBJECT_STORE_CAPS = Capabilities(atomic_rename=False, conditional_create=True)


def _items(value: float) -> list[WriteItem]:
    return [WriteItem(f"t{i}", np.full(300, value + i, np.float32)) for i in range(2)]


def _reads_whole(backend: StorageBackend, prefix: str, value: float) -> None:
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["t0", "t1"]
        for i, key in enumerate(r.keys()):
            np.testing.assert_array_equal(r.read(key), np.full(300, value + i, np.float32))


def _race(make: Callable[[], FileLayer], directory: str, *, committed: bool, shards: int) -> Race:
    """One bundle save of ``<directory>/ckpt`` and one cleanup of ``directory`` (see :class:`interleave.Race`)."""
    return Race(
        make,
        directory,
        backend=BundleBackend,
        items=_items,
        reads_whole=_reads_whole,
        committed=committed,
        shards=shards,
    )


STATES = [pytest.param(False, id="new-prefix"), pytest.param(True, id="overwrite")]


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    with scratch_directory(tmp_path) as directory:
        yield directory


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
    def new_case(name: str) -> Race:
        return _race(local_store, str(scratch / name), committed=committed, shards=shards)

    assert interleavings(new_case, first, switches=3) > 10


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

    def new_case(name: str) -> Race:
        return _race(make, f"{s3_bucket}/race/{name}", committed=committed, shards=2)

    # One turn change per run keeps the number of S3 round trips small; the local tests take every two.
    assert interleavings(new_case, first, switches=1) > 3


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
