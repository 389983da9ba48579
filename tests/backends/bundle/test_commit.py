"""Commit, visibility, overwrite, abort, delete, listing and cleanup for both commit strategies."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import (
    BackendError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
)
from trackpoint.storage import MUST_NOT_EXIST, Capabilities, CheckpointOptions, ShardSpec, WriteItem


def _items(value: float, n: int = 3) -> list[WriteItem]:
    """``n`` tensors of 4000 bytes, ``t{i}`` filled with ``value + i``."""
    return [WriteItem(f"t{i}", np.full(1000, value + i, np.float32)) for i in range(n)]


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_strategy_follows_capabilities() -> None:
    assert "rename" in repr(BundleBackend(LocalFiles()))
    assert "create-only" in repr(BundleBackend(LocalFiles(capabilities=Capabilities(conditional_create=True))))


def test_a_store_without_atomic_commit_is_read_but_never_saved_to(prefix: str) -> None:
    BundleBackend(LocalFiles()).save(prefix, _items(1.0))
    read_only = BundleBackend(LocalFiles(capabilities=Capabilities(ranged_reads=True)))
    assert "read only" in repr(read_only)
    with read_only.open_reader(prefix) as reader:
        assert reader.read("t2").tolist() == [3.0] * 1000
    for attempt in (
        lambda: read_only.save(prefix, _items(2.0)),
        lambda: read_only.begin(prefix, uuid.uuid4().hex),
        lambda: read_only.cleanup(os.path.dirname(prefix), min_age=0),
    ):
        with pytest.raises(BackendError, match="neither atomic rename nor conditional create"):
            attempt()
    with read_only.open_reader(prefix) as reader:  # the failed attempts left the checkpoint as it was
        assert reader.read("t2").tolist() == [3.0] * 1000


def test_nothing_visible_before_commit(backend: BundleBackend, prefix: str) -> None:
    spec = ShardSpec(0, 1, uuid.uuid4().hex)
    result = backend.write_shard(prefix, spec, _items(1.0))
    assert result.keys == ("t0", "t1", "t2") and result.nbytes == 12000
    assert not backend.exists(prefix)
    assert backend.list_checkpoints(backend.dirname(prefix)) == []
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint is committed"):
        backend.open_reader(prefix)
    backend.commit(prefix, [result])
    assert backend.exists(prefix)
    assert backend.list_checkpoints(backend.dirname(prefix)) == [prefix]
    # Only the final files remain: no temp directory, no pieces.
    assert _listing(Path(prefix).parent) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]


def test_multi_shard_merge(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(0.0, 10), CheckpointOptions(max_shard_bytes=4000, num_writers=3))
    names = _listing(Path(prefix).parent)
    assert names == [f"ckpt-1.data-{i:05d}-of-00010" for i in range(10)] + ["ckpt-1.index"]
    with backend.open_reader(prefix) as r:
        assert r.keys() == sorted(f"t{i}" for i in range(10))
        for i in range(10):
            np.testing.assert_array_equal(r.read(f"t{i}"), np.full(1000, i, np.float32))


def test_overwrite_false_refuses_before_writing(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    before = {p.name: p.stat().st_mtime_ns for p in Path(prefix).parent.iterdir()}
    with pytest.raises(CheckpointExistsError, match="already committed at .*ckpt-1"):
        backend.save(prefix, _items(2.0), overwrite=False)
    assert {p.name: p.stat().st_mtime_ns for p in Path(prefix).parent.iterdir()} == before
    with backend.open_reader(prefix) as r:
        assert r.read("t0")[0] == 1.0


def test_commit_refuses_an_existing_checkpoint(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    if backend.capabilities.atomic_rename:
        result = backend.write_shard(prefix, ShardSpec(0, 1, "late"), _items(2.0))
    else:
        # Create-only data names collide with the committed data, so use another shard count.
        result = backend.write_shard(prefix, ShardSpec(0, 2, "late"), _items(2.0))
        result = type(result)(ShardSpec(0, 1, "late"), result.keys, result.nbytes, result.payload)
    with pytest.raises(CheckpointExistsError, match="ckpt-1"):
        backend.commit(prefix, [result], overwrite=False)
    backend.abort(prefix, "late")
    with backend.open_reader(prefix) as r:
        assert r.read("t0")[0] == 1.0


def test_overwrite_replaces_and_removes_old_shards(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0, 6), CheckpointOptions(max_shard_bytes=4000))
    backend.save(prefix, _items(5.0, 2), CheckpointOptions(num_writers=1))
    assert _listing(Path(prefix).parent) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["t0", "t1"]
        assert r.read("t1")[0] == 6.0


def test_abort_removes_only_that_save(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    committed = _listing(Path(prefix).parent)
    other = str(Path(prefix).parent / "ckpt-2")
    backend.write_shard(other, ShardSpec(0, 2, "keep"), _items(2.0))
    backend.write_shard(other, ShardSpec(1, 2, "gone"), _items(3.0))
    backend.abort(other, "gone")
    backend.abort(other, "gone")  # idempotent
    backend.abort(other, "../../x")  # never a path
    left = _listing(Path(prefix).parent)
    assert set(committed) <= set(left)
    assert not any("gone" in n for n in left)
    assert not any(n.startswith("ckpt-2.data-00001") for n in left)
    backend.abort(other, "keep")
    assert _listing(Path(prefix).parent) == committed


def test_failed_save_leaves_nothing(backend: BundleBackend, prefix: str) -> None:
    items = [*_items(1.0), WriteItem("bad", np.array([object()], dtype=object))]
    with pytest.raises(Exception, match="holding object"):
        backend.save(prefix, items, CheckpointOptions(num_writers=1))
    assert _listing(Path(prefix).parent) == []


def test_duplicate_keys_across_shards_are_refused(backend: BundleBackend, prefix: str) -> None:
    items = [WriteItem("same", np.zeros(10)), WriteItem("same", np.ones(10))]
    with pytest.raises(Exception, match="'same'"):
        backend.save(prefix, items, CheckpointOptions(max_shard_bytes=1))
    assert not backend.exists(prefix)


def test_delete_is_idempotent_and_index_goes_first(backend: BundleBackend, prefix: str, tmp_path: Path) -> None:
    backend.save(prefix, _items(1.0, 4), CheckpointOptions(max_shard_bytes=4000))
    keep = str(tmp_path / "ckpt-10")
    backend.save(keep, _items(1.0))
    # Simulate a delete that crashed after removing the index: the rest is invisible.
    os.unlink(prefix + ".index")
    assert not backend.exists(prefix)
    assert backend.list_checkpoints(str(tmp_path)) == [keep]
    backend.delete(prefix)
    backend.delete(prefix)
    assert _listing(tmp_path) == ["ckpt-10.data-00000-of-00001", "ckpt-10.index"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_leftovers_of_a_crashed_save_are_cleared_by_the_next_save(tmp_path: Path, overwrite: bool) -> None:
    backend = BundleBackend(LocalFiles(capabilities=Capabilities(conditional_create=True)))
    prefix = str(tmp_path / "ckpt-1")
    # A crashed save left its piece index and data object (no index). `overwrite` concerns committed
    # checkpoints only: a restarted job saves the number its killed save was writing, create-only or not.
    backend.write_shard(prefix, ShardSpec(0, 1, "crashed"), _items(1.0))
    backend.save(prefix, _items(2.0), CheckpointOptions(num_writers=1), overwrite=overwrite)
    assert _listing(tmp_path) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    with backend.open_reader(prefix) as r:
        assert r.read("t0")[0] == 2.0
    if not overwrite:
        with pytest.raises(CheckpointExistsError, match="already committed"):
            backend.save(prefix, _items(3.0), CheckpointOptions(num_writers=1), overwrite=False)


def test_stale_temp_pieces_are_removed_by_next_save(tmp_path: Path) -> None:
    backend = BundleBackend(LocalFiles(), options=CheckpointOptions(num_writers=1))
    prefix = str(tmp_path / "ckpt-1")
    backend.write_shard(prefix, ShardSpec(0, 1, "crashed"), _items(1.0))
    assert _listing(tmp_path) == ["ckpt-1_temp"]
    # Stale: an hour old (younger pieces of another save may still be written and are kept).
    for piece in (tmp_path / "ckpt-1_temp").iterdir():
        os.utime(piece, (time.time() - 3600, time.time() - 3600))
    backend.save(prefix, _items(2.0))
    assert _listing(tmp_path) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]


def test_cleanup_keeps_committed_checkpoints(backend: BundleBackend, tmp_path: Path) -> None:
    good = str(tmp_path / "good")
    backend.save(good, _items(1.0))
    backend.write_shard(str(tmp_path / "bad"), ShardSpec(0, 1, "x"), _items(1.0))
    removed = backend.cleanup(str(tmp_path), min_age=0)
    assert removed and all("bad" in Path(p).name or "bad" in p for p in removed)
    assert _listing(tmp_path) == ["good.data-00000-of-00001", "good.index"]
    assert backend.list_checkpoints(str(tmp_path)) == [good]


def test_file_urls(backend: BundleBackend, tmp_path: Path) -> None:
    url = "file://" + str(tmp_path / "run" / "ckpt-3")
    backend.save(url, _items(4.0))
    assert backend.exists(url)
    assert backend.list_checkpoints("file://" + str(tmp_path / "run")) == [url]
    with backend.open_reader(url) as r:
        assert r.read("t2")[0] == 6.0


def test_small_files_with_versions(backend: BundleBackend, tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "checkpoint")
    assert backend.read_file(path) is None
    v1 = backend.write_file(path, b"one", if_version=MUST_NOT_EXIST)
    with pytest.raises(ConcurrentModificationError, match="exists already"):
        backend.write_file(path, b"two", if_version=MUST_NOT_EXIST)
    got = backend.read_file(path)
    assert got is not None and got.data == b"one" and got.version == v1
    v2 = backend.write_file(path, b"two", if_version=v1)
    assert v2 != v1
    with pytest.raises(ConcurrentModificationError, match="changed since version"):
        backend.write_file(path, b"three", if_version=v1)
    backend.write_file(path, b"four")
    backend.delete_file(path)
    backend.delete_file(path)
    assert backend.read_file(path) is None


def test_an_overwrite_with_the_same_shard_count_names_its_files_apart(backend: BundleBackend, prefix: str) -> None:
    # TensorFlow derives data file names from the prefix and the shard count, so a save whose
    # count equals the committed checkpoint's names its files for one more shard (an empty one)
    # and never writes over the files the committed index names.
    backend.save(prefix, _items(1.0))
    assert _listing(Path(prefix).parent) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    backend.save(prefix, _items(2.0))
    assert _listing(Path(prefix).parent) == [
        "ckpt-1.data-00000-of-00002",
        "ckpt-1.data-00001-of-00002",
        "ckpt-1.index",
    ]
    assert Path(prefix + ".data-00001-of-00002").stat().st_size == 0
    with backend.open_reader(prefix) as r:
        assert [float(r.read(k)[0]) for k in r.keys()] == [2.0, 3.0, 4.0]
    backend.save(prefix, _items(3.0))
    assert _listing(Path(prefix).parent) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    with backend.open_reader(prefix) as r:
        assert float(r.read("t0")[0]) == 3.0


def test_a_failed_overwrite_leaves_the_old_checkpoint_untouched(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0, 4), CheckpointOptions(max_shard_bytes=4000))
    before = {p.name: p.read_bytes() for p in Path(prefix).parent.iterdir()}
    bad = [*_items(5.0, 4), WriteItem("bad", np.array([object()], dtype=object))]
    with pytest.raises(Exception, match="holding object"):
        backend.save(prefix, bad, CheckpointOptions(max_shard_bytes=4000, num_writers=2))
    assert {p.name: p.read_bytes() for p in Path(prefix).parent.iterdir()} == before
    with backend.open_reader(prefix) as r:
        assert float(r.read("t3")[0]) == 4.0


def test_cleanup_removes_data_files_the_committed_index_does_not_name(backend: BundleBackend, prefix: str) -> None:
    backend.save(prefix, _items(1.0))
    # What a save killed after its index replaced the old one leaves: the old data files.
    stray = Path(prefix + ".data-00000-of-00003")
    stray.write_bytes(b"old data")
    assert backend.cleanup(str(Path(prefix).parent)) == [], "young leftovers may belong to a running save"
    assert backend.cleanup(str(Path(prefix).parent), min_age=0) == [str(stray)]
    assert _listing(Path(prefix).parent) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    with backend.open_reader(prefix) as r:
        assert float(r.read("t0")[0]) == 1.0


def test_a_shard_lost_before_the_commit_is_reported_and_publishes_nothing(backend: BundleBackend, prefix: str) -> None:
    """Every shard's data is checked before the commit moves or indexes any of it."""
    backend.save(prefix, _items(1.0))
    before = _listing(Path(prefix).parent)
    save_id = uuid.uuid4().hex
    shards = [
        backend.write_shard(prefix, ShardSpec(i, 3, save_id), [WriteItem(f"s{i}", np.full(2000, i, np.float32))])
        for i in range(3)
    ]
    # The last shard's data file, wherever the strategy staged it (a crashed disk, a lifecycle rule).
    lost = [p for p in Path(prefix).parent.rglob("*.data-*") if p.name not in before and "00002" in p.name]
    assert len(lost) == 1
    lost[0].unlink()
    with pytest.raises(DataLossError, match=r"is missing or has None bytes instead of 8000"):
        backend.commit(prefix, shards)
    backend.abort(prefix, save_id)
    # Nothing of the failed save reached a final name; the committed checkpoint is untouched.
    assert _listing(Path(prefix).parent) == before
    with backend.open_reader(prefix) as r:
        assert r.keys() == ["t0", "t1", "t2"] and float(r.read("t2")[0]) == 3.0
