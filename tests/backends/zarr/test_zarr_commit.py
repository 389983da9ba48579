"""Commit visibility, overwrite, abort, delete, listing and cleanup of leftovers."""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import pytest

from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError, InvalidCheckpointError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, ShardSpec, WriteItem


def _shards(where: Any, prefix: str, save_id: str, value: float = 1.0) -> list[Any]:
    items = [[WriteItem("a", np.full(100_000, value))], [WriteItem("b", np.full(3, value))]]
    return [where.backend.write_shard(prefix, ShardSpec(i, 2, save_id), g) for i, g in enumerate(items)]


def test_nothing_is_visible_before_commit(where: Any) -> None:
    prefix = where.prefix()
    results = _shards(where, prefix, uuid.uuid4().hex)
    assert not where.backend.exists(prefix)
    assert where.backend.list_checkpoints(where.directory) == []
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint is committed at"):
        where.backend.open_reader(prefix)
    where.backend.commit(prefix, results)
    assert where.backend.exists(prefix)
    assert where.backend.list_checkpoints(where.directory) == [prefix]


def test_local_shards_go_to_a_temporary_group_beside_the_target(local: Any) -> None:
    save_id = uuid.uuid4().hex
    results = _shards(local, local.prefix(), save_id)
    assert os.listdir(local.directory) == [f"ckpt.zarr.tmp-{save_id}"]
    local.backend.commit(local.prefix(), results)
    assert os.listdir(local.directory) == ["ckpt.zarr"]
    assert ".trackpoint-owner" not in os.listdir(local.prefix() + ".zarr")


def test_object_store_root_is_written_last_and_create_only(where: Any) -> None:
    if where.kind == "local":
        pytest.skip("object stores only")
    prefix = where.prefix()
    first = _shards(where, prefix, "first")
    second = _shards(where, prefix, "second", value=2.0)
    root = where.raw_path(prefix) + ".zarr/zarr.json"
    assert not where.raw.exists(root)
    where.backend.commit(prefix, first)
    with pytest.raises(CheckpointExistsError, match="already committed at .*overwrite=True"):
        where.backend.commit(prefix, second, overwrite=False)
    with where.backend.open_reader(prefix) as reader:
        assert reader.read("b")[0] == 1.0
    where.backend.commit(prefix, second, overwrite=True)
    with where.backend.open_reader(prefix) as reader:
        assert reader.read("b")[0] == 2.0
    # The replaced save's data is gone; only the new one and the root remain.
    names = sorted(p.rsplit("/", 1)[-1] for p in where.raw.ls(where.raw_path(prefix) + ".zarr", detail=False))
    assert names == ["v-second", "zarr.json"]


def test_overwrite_replaces_and_refusal_keeps(local: Any) -> None:
    prefix = local.prefix()
    local.backend.save(prefix, [WriteItem("x", np.zeros(3))])
    with pytest.raises(CheckpointExistsError, match="already committed"):
        local.backend.save(prefix, [WriteItem("y", np.ones(3))], overwrite=False)
    with local.backend.open_reader(prefix) as reader:
        assert reader.keys() == ["x"]
    local.backend.save(prefix, [WriteItem("y", np.ones(3))], overwrite=True)
    with local.backend.open_reader(prefix) as reader:
        assert reader.keys() == ["y"]
    assert os.listdir(local.directory) == ["ckpt.zarr"]


def test_abort_removes_the_save(where: Any) -> None:
    _shards(where, where.prefix(), "doomed")
    where.backend.abort(where.prefix(), "doomed")
    where.backend.abort(where.prefix(), "doomed")  # idempotent
    assert where.raw.find(where.raw_path(where.directory)) == []


def test_abort_never_removes_a_committed_save(where: Any) -> None:
    results = _shards(where, where.prefix(), "kept")
    where.backend.commit(where.prefix(), results)
    where.backend.abort(where.prefix(), "kept")
    with where.backend.open_reader(where.prefix()) as reader:
        assert reader.read("b")[0] == 1.0


def test_delete_then_listing(where: Any) -> None:
    for name in ("ckpt-2", "ckpt-1", "other"):
        where.backend.save(where.prefix(name), [WriteItem("x", np.zeros(2))])
    assert where.backend.list_checkpoints(where.directory) == [where.prefix(n) for n in ("ckpt-1", "ckpt-2", "other")]
    where.backend.delete(where.prefix("ckpt-2"))
    where.backend.delete(where.prefix("ckpt-2"))
    assert where.backend.list_checkpoints(where.directory) == [where.prefix(n) for n in ("ckpt-1", "other")]
    assert not any("ckpt-2" in p for p in where.raw.find(where.raw_path(where.directory)))


def test_commit_without_shards_or_with_mixed_saves_is_refused(local: Any) -> None:
    with pytest.raises(InvalidCheckpointError, match="got no shards"):
        local.backend.commit(local.prefix(), [])
    a = _shards(local, local.prefix(), "one")
    b = _shards(local, local.prefix(), "two")
    with pytest.raises(InvalidCheckpointError, match="mixes shards of saves"):
        local.backend.commit(local.prefix(), [a[0], b[1]])


def test_a_plain_zarr_group_is_not_a_checkpoint(local: Any) -> None:
    import zarr

    zarr.open_group(local.prefix() + ".zarr", mode="w", attributes={"hello": 1})
    with pytest.raises(InvalidCheckpointError, match="is a Zarr group not written by trackpoint"):
        local.backend.open_reader(local.prefix())


def test_cleanup_removes_abandoned_saves_only(where: Any) -> None:
    committed = _shards(where, where.prefix("done"), "done")
    where.backend.commit(where.prefix("done"), committed)
    _shards(where, where.prefix("done"), "abandoned-over-existing")
    _shards(where, where.prefix("never"), "abandoned")
    # Default: a leftover might still be in use by a live writer; keep it.
    assert where.backend.cleanup(where.directory) == []
    assert where.backend.cleanup(where.directory, min_age=3600) == []
    eager = open_backend(
        where.directory,
        CheckpointOptions(
            backend="zarr", storage_options=where.options.storage_options, backend_options={"cleanup_min_age": 0}
        ),
    )
    removed = eager.cleanup(where.directory)
    assert len(removed) == 2 and all("abandoned" in r for r in removed)
    assert eager.cleanup(where.directory) == []
    # The contract's keyword overrides the option.
    _shards(where, where.prefix("again"), "abandoned-again")
    (removed_again,) = where.backend.cleanup(where.directory, min_age=0)
    assert removed_again.endswith("abandoned-again")
    assert where.backend.list_checkpoints(where.directory) == [where.prefix("done")]
    with where.backend.open_reader(where.prefix("done")) as reader:
        assert reader.read("b")[0] == 1.0


def test_leftovers_lists_what_cleanup_would_remove_and_removes_nothing(where: Any) -> None:
    where.backend.commit(where.prefix("done"), _shards(where, where.prefix("done"), "done"))
    _shards(where, where.prefix("done"), "abandoned-over-existing")
    _shards(where, where.prefix("never"), "abandoned")
    listed = where.backend.leftovers(where.directory)
    assert len(listed) == 2 and all("abandoned" in p for p in listed)
    assert where.backend.leftovers(where.directory) == listed  # listing removed nothing
    assert where.backend.cleanup(where.directory, min_age=0) == listed
    assert where.backend.leftovers(where.directory) == []
