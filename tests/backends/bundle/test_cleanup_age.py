"""cleanup(directory, min_age=600) removes only leftovers old enough to be a crashed save's.

A save still running in another process looks exactly like a crashed one, so
leftovers are grouped per checkpoint prefix and a group goes only when its
newest piece is at least ``min_age`` seconds old. Ages are set with
``os.utime``; nothing here waits for time to pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.storage import Capabilities, CheckpointOptions, ShardResult, ShardSpec, WriteItem

HOUR = 3600.0


def _items(value: float) -> list[WriteItem]:
    return [WriteItem("t0", np.full(100, value, np.float32)), WriteItem("t1", np.full(50, value, np.float32))]


def _start(backend: BundleBackend, prefix: str, save_id: str, value: float, shards: int = 2) -> list[ShardResult]:
    """Write every shard of a save and stop before its commit (a crashed or a running save)."""
    items = _items(value)
    groups = [items] if shards == 1 else [[it] for it in items]
    return [backend.write_shard(prefix, ShardSpec(i, shards, save_id), g) for i, g in enumerate(groups)]


def _pieces(directory: Path, stem: str) -> list[Path]:
    """Every file and directory of ``stem`` (a prefix's base name), ``_temp`` contents included."""
    return sorted(p for p in directory.rglob("*") if p.name.startswith(stem) or p.parent.name.startswith(stem))


def _age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    # Children first: touching a file does not change its directory's time, but keep the order obvious.
    for p in sorted(paths, key=lambda q: len(q.parts), reverse=True):
        os.utime(p, (then, then))


def _other(backend: BundleBackend) -> BundleBackend:
    """Another backend instance on the same store, as a second process would have."""
    return BundleBackend(LocalFiles(capabilities=backend.capabilities), options=backend.options)


def _reads(backend: BundleBackend, prefix: str, value: float) -> None:
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["t0", "t1"]
        np.testing.assert_array_equal(r.read("t0"), np.full(100, value, np.float32))
        np.testing.assert_array_equal(r.read("t1"), np.full(50, value, np.float32))


def test_young_leftovers_survive_the_default_cleanup(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    _start(backend, prefix, "crashed", 1.0)
    before = _pieces(tmp_path, "ckpt-1")
    assert before
    assert _other(backend).cleanup(str(tmp_path)) == []
    assert _pieces(tmp_path, "ckpt-1") == before


def test_old_leftovers_are_removed(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    _start(backend, prefix, "crashed", 1.0)
    pieces = _pieces(tmp_path, "ckpt-1")
    _age(pieces, HOUR)
    removed = _other(backend).cleanup(str(tmp_path))
    assert sorted(map(Path, removed)) == pieces
    assert list(tmp_path.iterdir()) == []


def test_min_age_zero_removes_young_leftovers(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    _start(backend, prefix, "crashed", 1.0)
    pieces = _pieces(tmp_path, "ckpt-1")
    removed = _other(backend).cleanup(str(tmp_path), min_age=0)
    assert sorted(map(Path, removed)) == pieces
    assert list(tmp_path.iterdir()) == []


def test_min_age_is_a_threshold(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    _start(backend, prefix, "crashed", 1.0)
    _age(_pieces(tmp_path, "ckpt-1"), 120)
    assert backend.cleanup(str(tmp_path), min_age=300) == []
    assert backend.cleanup(str(tmp_path)) == []
    assert backend.cleanup(str(tmp_path), min_age=60)
    assert list(tmp_path.iterdir()) == []


def test_one_young_piece_keeps_its_whole_group(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    _start(backend, prefix, "crashed", 1.0)
    pieces = _pieces(tmp_path, "ckpt-1")
    _age(pieces, HOUR)
    # A save of the same prefix that is still writing: its newest piece is fresh.
    files = [p for p in pieces if p.is_file()]
    os.utime(files[-1])
    assert backend.cleanup(str(tmp_path)) == []
    assert _pieces(tmp_path, "ckpt-1") == pieces


def test_groups_are_judged_per_prefix(backend: BundleBackend, tmp_path: Path) -> None:
    old, young = str(tmp_path / "old"), str(tmp_path / "young")
    _start(backend, old, "crashed", 1.0)
    _start(backend, young, "running", 2.0)
    old_pieces, young_pieces = _pieces(tmp_path, "old"), _pieces(tmp_path, "young")
    _age(old_pieces, HOUR)
    removed = backend.cleanup(str(tmp_path))
    assert sorted(map(Path, removed)) == old_pieces
    assert _pieces(tmp_path, "young") == young_pieces


def test_committed_checkpoints_are_kept_at_any_age(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    committed = _pieces(tmp_path, "ckpt-1")
    _age(committed, HOUR)
    assert backend.cleanup(str(tmp_path), min_age=0) == []
    assert _pieces(tmp_path, "ckpt-1") == committed
    _reads(backend, prefix, 1.0)


@pytest.mark.parametrize("shards", [1, 2])
def test_a_running_save_survives_another_instances_cleanup_and_commits(
    backend: BundleBackend, tmp_path: Path, prefix: str, shards: int
) -> None:
    results = _start(backend, prefix, "running", 3.0, shards)
    # A second manager starting up in the same directory, while the save is in flight.
    assert _other(backend).cleanup(str(tmp_path)) == []
    backend.commit(prefix, results, overwrite=False)
    _reads(backend, prefix, 3.0)
    _reads(_other(backend), prefix, 3.0)


def test_next_save_of_the_prefix_keeps_another_saves_young_temp_pieces(tmp_path: Path, prefix: str) -> None:
    backend = BundleBackend(LocalFiles(), options=CheckpointOptions(num_writers=1))
    running = _start(backend, prefix, "running", 4.0)
    _start(backend, prefix, "crashed", 5.0)
    temp = tmp_path / "ckpt-1_temp"
    _age([p for p in temp.iterdir() if p.name.startswith("part-crashed-")], HOUR)
    _other(backend).save(prefix, _items(6.0))
    _reads(backend, prefix, 6.0)
    left = sorted(p.name for p in temp.iterdir())
    assert left and all(name.startswith("part-running-") for name in left)
    # The save that was still running commits over it afterwards, intact.
    backend.commit(prefix, running, overwrite=True)
    _reads(backend, prefix, 4.0)
    assert not temp.exists()


class _AgelessFiles(LocalFiles):
    """A store that cannot tell modification times (FileLayer's default)."""

    def modified(self, path: str) -> float | None:
        return None


@pytest.mark.parametrize("caps", [None, Capabilities(atomic_rename=False, conditional_create=True)])
def test_unknown_ages_count_as_young(tmp_path: Path, prefix: str, caps: Capabilities | None) -> None:
    backend = BundleBackend(_AgelessFiles(capabilities=caps))
    _start(backend, prefix, "crashed", 1.0)
    pieces = _pieces(tmp_path, "ckpt-1")
    _age(pieces, HOUR)
    assert backend.cleanup(str(tmp_path)) == []
    assert sorted(map(Path, backend.cleanup(str(tmp_path), min_age=0))) == pieces


def test_local_modified_reports_files_and_directories(tmp_path: Path) -> None:
    files = LocalFiles()
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.utime(f, (1_000_000.0, 1_000_000.0))
    os.utime(tmp_path, (2_000_000.0, 2_000_000.0))
    assert files.modified(str(f)) == 1_000_000.0
    assert files.modified("file://" + str(tmp_path)) == 2_000_000.0
    assert files.modified(str(tmp_path / "missing")) is None


def _object_store_files(kind: str, request: pytest.FixtureRequest) -> tuple[Any, str]:
    fast = {"retries": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.05, "request_timeout": 10.0}
    if kind == "s3":
        from trackpoint.backends.stores.s3 import create_files as s3_files

        opts = CheckpointOptions(storage_options=request.getfixturevalue("s3_storage_options"), backend_options=fast)
        return s3_files(opts), request.getfixturevalue("s3_bucket")
    from trackpoint.backends.stores.gcs import create_files as gcs_files

    opts = CheckpointOptions(storage_options=request.getfixturevalue("gcs_storage_options"), backend_options=fast)
    return gcs_files(opts), request.getfixturevalue("gcs_bucket")


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_object_store_modified_times_protect_running_saves(kind: str, request: pytest.FixtureRequest) -> None:
    files, bucket = _object_store_files(kind, request)
    try:
        directory = f"{bucket}/run"
        files.put(f"{directory}/probe", b"x")
        stamp = files.modified(f"{directory}/probe")
        # The emulators share this machine's clock; the bound only rejects a misparsed time.
        assert stamp is not None and abs(stamp - time.time()) < HOUR
        assert files.modified(f"{directory}/missing") is None
        backend = BundleBackend(files)
        prefix = f"{directory}/ckpt-1"
        results = _start(backend, prefix, "running", 7.0)
        assert BundleBackend(files).cleanup(directory) == []
        backend.commit(prefix, results)
        _reads(backend, prefix, 7.0)
        _start(backend, f"{directory}/ckpt-2", "crashed", 8.0)
        removed = backend.cleanup(directory, min_age=0)
        assert sorted(p.rsplit("/", 1)[1] for p in removed) == [
            "ckpt-2.data-00000-of-00002",
            "ckpt-2.data-00001-of-00002",
            "ckpt-2.part-00000-of-00002.crashed.piece",
            "ckpt-2.part-00001-of-00002.crashed.piece",
        ]
    finally:
        files.close()


@pytest.mark.parametrize("kind", [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)])
def test_crashed_sharded_save_leaves_no_index_named_object(kind: str, request: pytest.FixtureRequest) -> None:
    # Tools that take every *.index for a TensorFlow bundle (TensorFlow's readers among them) must
    # find only committed checkpoints. Pieces are <prefix>.part-...<id>.piece; 0.1 named them .index,
    # and such leftovers must still be recognised (never listed, removed by cleanup).
    files, bucket = _object_store_files(kind, request)
    try:
        directory = f"{bucket}/run"
        backend = BundleBackend(files, options=CheckpointOptions(num_writers=1))
        backend.save(f"{directory}/ckpt-1", _items(1.0))
        _start(backend, f"{directory}/ckpt-2", "crashed", 2.0)  # written, never committed
        old = f"{directory}/ckpt-3.part-00000-of-00001.from01.index"  # a 0.1 leftover: piece table + data
        files.put(f"{directory}/ckpt-3.data-00000-of-00001", b"\0" * 8)
        files.put(old, b"")
        names = files.listdir(directory)
        assert [n for n in names if n.endswith(".index")] == ["ckpt-1.index", "ckpt-3.part-00000-of-00001.from01.index"]
        assert sorted(n for n in names if n.startswith("ckpt-2")) == [
            "ckpt-2.data-00000-of-00002",
            "ckpt-2.data-00001-of-00002",
            "ckpt-2.part-00000-of-00002.crashed.piece",
            "ckpt-2.part-00001-of-00002.crashed.piece",
        ]
        assert backend.list_checkpoints(directory) == [f"{directory}/ckpt-1"]
        # Young leftovers may be a save still running elsewhere: kept.
        assert backend.cleanup(directory) == []
        time.sleep(1.5)
        removed = backend.cleanup(directory, min_age=1.0)
        assert sorted(p.rsplit("/", 1)[1] for p in removed) == [
            "ckpt-2.data-00000-of-00002",
            "ckpt-2.data-00001-of-00002",
            "ckpt-2.part-00000-of-00002.crashed.piece",
            "ckpt-2.part-00001-of-00002.crashed.piece",
            "ckpt-3.data-00000-of-00001",
            "ckpt-3.part-00000-of-00001.from01.index",
        ]
        assert files.listdir(directory) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
        _reads(backend, f"{directory}/ckpt-1", 1.0)
    finally:
        files.close()


def test_leftovers_lists_every_leftover_whatever_its_age(backend: BundleBackend, tmp_path: Path, prefix: str) -> None:
    _start(backend, prefix, "crashed", 1.0)
    pieces = _pieces(tmp_path, "ckpt-1")
    listed = _other(backend).leftovers(str(tmp_path))
    # Young leftovers are listed (for `trackpoint ls --all`) but kept by the default cleanup.
    assert sorted(map(Path, listed)) == pieces
    assert _other(backend).cleanup(str(tmp_path)) == []
    assert sorted(_other(backend).cleanup(str(tmp_path), min_age=0)) == sorted(listed)
    assert _other(backend).leftovers(str(tmp_path)) == []
