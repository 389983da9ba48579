"""The storage contract's own logic: shard planning, options, the save protocol and the default save()."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trackpoint as tp
from trackpoint.backends.memory import MemoryBackend, clear
from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError, StorageError
from trackpoint.storage import (
    CheckpointOptions,
    ShardResult,
    ShardSpec,
    StorageBackend,
    WriteItem,
    plan_shards,
)


def _items(sizes: Sequence[int]) -> list[WriteItem]:
    return [WriteItem(f"t{i}", np.zeros(n, dtype=np.uint8)) for i, n in enumerate(sizes)]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=60),
    cap=st.one_of(st.none(), st.integers(1, 8000)),
    writers=st.integers(1, 8),
)
def test_plan_shards_properties(sizes: list[int], cap: int | None, writers: int) -> None:
    items = _items(sizes)
    shards = plan_shards(items, max_shard_bytes=cap, num_writers=writers)
    # Order and membership are preserved exactly.
    assert [it.key for s in shards for it in s] == [it.key for it in items]
    assert all(shards), "no empty shard"
    for s in shards:
        if cap is not None and len(s) > 1:
            assert sum(it.nbytes for it in s) <= cap
    if cap is None:
        assert len(shards) <= writers


def test_plan_shards_balances_across_writers() -> None:
    shards = plan_shards(_items([100] * 8), max_shard_bytes=None, num_writers=4)
    assert [len(s) for s in shards] == [2, 2, 2, 2]


def test_plan_shards_single_writer_keeps_one_shard() -> None:
    assert len(plan_shards(_items([10, 20, 30]), max_shard_bytes=None, num_writers=1)) == 1


def test_oversized_item_gets_its_own_shard() -> None:
    shards = plan_shards(_items([10, 1000, 10]), max_shard_bytes=100, num_writers=1)
    assert [[it.key for it in s] for s in shards] == [["t0"], ["t1"], ["t2"]]


def test_empty_save_has_one_empty_shard() -> None:
    assert plan_shards([], max_shard_bytes=None, num_writers=3) == [[]]


def test_options_validate_and_hide_credentials() -> None:
    with pytest.raises(ValueError, match="max_shard_bytes must be positive"):
        CheckpointOptions(max_shard_bytes=0)
    with pytest.raises(ValueError, match="num_writers must be positive"):
        CheckpointOptions(num_writers=-1)
    with pytest.raises(TypeError, match="backend must be a str"):
        CheckpointOptions(backend=3)  # type: ignore[arg-type]
    # TensorFlow's first positional field is the I/O device: ported positionally, it lands in `backend`.
    with pytest.raises(ValueError, match=r"that is a device name.*CheckpointOptions\(experimental_io_device="):
        CheckpointOptions("/job:localhost/device:CPU:0")
    assert CheckpointOptions(experimental_io_device="/job:localhost/device:CPU:0").backend is None
    opts = CheckpointOptions(storage_options={"secret": "hunter2", "key": "AKIA123"})
    text = repr(opts)
    assert "hunter2" not in text and "AKIA123" not in text
    assert "'secret'" in text


def test_option_mappings_are_checked_copied_and_none_is_empty(tmp_path: Any) -> None:
    # None is what callers pass for "no options" (as fsspec takes it); it used to fail later, inside a backend.
    opts = CheckpointOptions(backend="zarr", storage_options=None, backend_options=None)  # type: ignore[arg-type]
    assert opts.storage_options == {} and opts.backend_options == {}
    assert opts == CheckpointOptions(backend="zarr")
    tp.Checkpoint(v=tp.Variable(1.0)).write(str(tmp_path / "ckpt"), options=opts)
    tp.Checkpoint(v=tp.Variable(0.0)).read(str(tmp_path / "ckpt"), options=opts).assert_consumed()
    given = {"compressor": "zstd"}
    opts = CheckpointOptions(backend_options=given)
    given["compressor"] = "gzip"
    assert opts.backend_options == {"compressor": "zstd"}
    with pytest.raises(TypeError, match=r"backend_options must be a mapping .* got list"):
        CheckpointOptions(backend_options=[("compressor", "zstd")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"storage_options takes option names as str keys, got 1"):
        CheckpointOptions(storage_options={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"num_writers must be an int or None, got str"):
        CheckpointOptions(num_writers="4")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"max_shard_bytes must be an int or None, got bool"):
        CheckpointOptions(max_shard_bytes=True)


def test_shard_spec_bounds() -> None:
    with pytest.raises(ValueError, match="outside 0..1"):
        ShardSpec(2, 2, "x")


class _FailingBackend(MemoryBackend):
    """The memory backend with one shard write failing, to exercise save()'s abort path."""

    def __init__(self, fail_shard: int) -> None:
        self.fail_shard = fail_shard
        self.aborted: list[str] = []

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        if spec.shard_id == self.fail_shard:
            raise StorageError(f"injected failure writing shard {spec.shard_id}")
        return super().write_shard(prefix, spec, items)

    def abort(self, prefix: str, save_id: str) -> None:
        self.aborted.append(save_id)
        super().abort(prefix, save_id)


def test_failed_parallel_save_aborts_and_leaves_previous_checkpoint() -> None:
    clear()
    good = MemoryBackend()
    good.save("memory://c/ckpt", [WriteItem("a", np.arange(4))])
    bad = _FailingBackend(fail_shard=1)
    with pytest.raises(StorageError, match="injected failure writing shard 1"):
        bad.save(
            "memory://c/ckpt",
            _items([100] * 6),
            CheckpointOptions(num_writers=3),
        )
    assert len(bad.aborted) == 1
    # The previous checkpoint is untouched and nothing of the failed save is visible.
    with good.open_reader("memory://c/ckpt") as r:
        assert r.keys() == ["a"]
        np.testing.assert_array_equal(r.read("a"), np.arange(4))
    with pytest.raises(CheckpointNotFoundError):
        good.open_reader("memory://c/other")


def test_parallel_save_produces_one_checkpoint() -> None:
    clear()
    b = MemoryBackend()
    b.save("memory://p/ckpt", _items([64] * 10), CheckpointOptions(num_writers=4))
    with b.open_reader("memory://p/ckpt") as r:
        assert sorted(r.keys()) == sorted(f"t{i}" for i in range(10))


class _RecordingBackend(MemoryBackend):
    """The memory backend, recording the protocol steps a writer drives."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self, prefix: str, save_id: str, *, overwrite: bool = True) -> None:
        self.calls.append(f"begin overwrite={overwrite}")
        super().begin(prefix, save_id, overwrite=overwrite)

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        self.calls.append("write_shard")
        return super().write_shard(prefix, spec, items)

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        self.calls.append(f"commit overwrite={overwrite}")
        super().commit(prefix, shards, overwrite=overwrite)

    def abort(self, prefix: str, save_id: str) -> None:
        self.calls.append("abort")
        super().abort(prefix, save_id)


def test_save_drives_begin_write_commit_with_one_overwrite() -> None:
    clear()
    b = _RecordingBackend()
    b.save("memory://proto/ckpt", _items([10, 10]), CheckpointOptions(num_writers=1))
    assert b.calls == ["begin overwrite=True", "write_shard", "commit overwrite=True"]
    b.calls.clear()
    with pytest.raises(CheckpointExistsError, match=r"memory: a checkpoint is already committed at .*overwrite=True"):
        b.save("memory://proto/ckpt", _items([10]), overwrite=False)
    # Refused before anything was written: nothing to abort.
    assert b.calls == ["begin overwrite=False"]


def test_min_bytes_per_writer_adds_writers_only_for_large_saves(monkeypatch: pytest.MonkeyPatch) -> None:
    clear()
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    b = _RecordingBackend()
    b.min_bytes_per_writer = 1000
    b.save("memory://w/ckpt", _items([100] * 19))  # 1,900 bytes: one writer
    assert b.calls.count("write_shard") == 1
    b.calls.clear()
    b.save("memory://w/ckpt", _items([100] * 30))  # 3,000 bytes: three writers of the four CPUs
    assert b.calls.count("write_shard") == 3
    b.calls.clear()
    b.save("memory://w/ckpt", _items([100] * 19), CheckpointOptions(num_writers=2))  # asked for: as asked
    assert b.calls.count("write_shard") == 2
    b.calls.clear()
    b.min_bytes_per_writer = 0  # the default: one writer per CPU whatever the size
    b.save("memory://w/ckpt", _items([100] * 19))
    assert b.calls.count("write_shard") == 4


def test_local_bundle_saves_one_data_file_below_min_bytes_per_writer(tmp_path: Path) -> None:
    from trackpoint.plugins import open_backend

    backend = open_backend(str(tmp_path / "x"))
    assert backend.min_bytes_per_writer == 256 << 20
    backend.save(str(tmp_path / "ckpt"), _items([4096] * 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.data-00000-of-00001", "ckpt.index"]


def test_default_begin_refuses_only_without_overwrite() -> None:
    clear()
    b = MemoryBackend()
    b.begin("memory://d/ckpt", "s1", overwrite=False)  # nothing there yet
    b.save("memory://d/ckpt", [WriteItem("a", np.arange(2))])
    b.begin("memory://d/ckpt", "s2")  # overwrite defaults to True, as for save and commit
    with pytest.raises(CheckpointExistsError, match="already committed at 'memory://d/ckpt'"):
        b.begin("memory://d/ckpt", "s3", overwrite=False)
    assert b.exists("memory://d/ckpt")


def test_overwrite_has_one_default_across_the_protocol() -> None:
    import inspect

    for method in (StorageBackend.begin, StorageBackend.commit, StorageBackend.save):
        assert inspect.signature(method).parameters["overwrite"].default is True, method.__name__


def test_formats_do_not_override_save() -> None:
    # Work hidden in save() is missed by convert and multi-process saves, which drive the primitives.
    from trackpoint.backends.bundle import BundleBackend

    assert "save" not in vars(BundleBackend)
    assert "begin" in vars(BundleBackend)


def test_write_item_keeps_the_frozen_dataclass_contract() -> None:
    import dataclasses

    from trackpoint import TensorSlice
    from trackpoint.errors import ShapeMismatchError

    a = np.arange(3, dtype=np.float32)
    item = WriteItem("w", a)
    assert (item.key, item.array, item.slice) == ("w", a, None)
    assert WriteItem(key="w", array=a) == item
    assert [f.name for f in dataclasses.fields(WriteItem)] == ["key", "array", "slice"]
    assert repr(item).startswith("WriteItem(key='w', array=array([0., 1., 2.]")
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'key'"):
        item.key = "v"  # type: ignore[misc]
    part = TensorSlice((6,), (3,), (3,))
    moved = dataclasses.replace(item, key="v", slice=part)
    assert (moved.key, moved.array is a, moved.slice) == ("v", True, part)
    with pytest.raises(ShapeMismatchError, match=r"WriteItem 'w': the array has shape \(3,\), its slice"):
        WriteItem("w", a, TensorSlice((6,), (0,), (2,)))
    assert not hasattr(item, "__dict__")
