"""The commit strategy follows the store's declared capabilities, whatever the store's class."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from trackpoint.backends.stores import FileSink, LocalFiles
from trackpoint.backends.zarr import ZarrBackend, ZarrOptions
from trackpoint.errors import BackendError, CheckpointExistsError, StorageError
from trackpoint.storage import Capabilities, ShardSpec, WriteItem


def test_a_store_without_atomic_rename_commits_by_create_only_root(tmp_path: Path) -> None:
    # A local disk declared like an object store: the object-store layout and commit point.
    files = LocalFiles(capabilities=Capabilities(conditional_create=True, parallel_writes=True))
    backend = ZarrBackend(files)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, [WriteItem("w", np.arange(50_000.0)), WriteItem("b", np.ones(3))])
    assert os.listdir(tmp_path) == ["ckpt.zarr"]
    (data,) = [n for n in os.listdir(tmp_path / "ckpt.zarr") if n != "zarr.json"]
    assert data.startswith("v-")
    with pytest.raises(CheckpointExistsError, match="already committed at"):
        backend.save(prefix, [WriteItem("w", np.zeros(2))], overwrite=False)
    backend.save(prefix, [WriteItem("w", np.zeros(2))])
    (replaced,) = [n for n in os.listdir(tmp_path / "ckpt.zarr") if n != "zarr.json"]
    assert replaced != data  # the overwritten save's data is gone
    with backend.open_reader(prefix) as reader:
        assert reader.keys() == ["w"] and reader.read("w").tolist() == [0.0, 0.0]
    assert backend.list_checkpoints(str(tmp_path)) == [prefix]


def test_a_store_with_atomic_rename_commits_by_renaming_the_group(tmp_path: Path) -> None:
    backend = ZarrBackend(LocalFiles())
    backend.save(str(tmp_path / "ckpt"), [WriteItem("w", np.arange(200_000.0))])
    assert sorted(os.listdir(tmp_path / "ckpt.zarr")) == ["w", "zarr.json"]


def test_a_store_without_either_capability_is_refused(tmp_path: Path) -> None:
    files = LocalFiles(capabilities=Capabilities(parallel_writes=True))
    with pytest.raises(BackendError, match="neither an atomic rename nor a conditional create"):
        ZarrBackend(files)


def test_saves_run_the_contract_protocol(tmp_path: Path) -> None:
    from trackpoint.storage import StorageBackend

    # One save protocol: the format supplies its steps, never its own save().
    assert ZarrBackend.save is StorageBackend.save
    backend = ZarrBackend(LocalFiles())
    tuned = backend.with_options(backend.save_defaults.__class__(backend_options={"compressor": "zstd"}))
    assert tuned is not backend and tuned.options.compressor == "zstd"  # type: ignore[attr-defined]
    assert backend.options.compressor == "none"


class _SyncRecorder(LocalFiles):
    """Local files that remember which directories were synced (from any thread)."""

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        super().__init__(capabilities=capabilities)
        self.synced: list[str] = []

    def sync_dir(self, directory: str) -> None:
        self.synced.append(directory)  # list.append is atomic: the shard's writer threads call this
        super().sync_dir(directory)


def _mixed_items(value: float) -> list[WriteItem]:
    # A 2-D tensor in several chunks, packed small tensors, and a string tensor, which goes through
    # zarr-python's own store calls.
    return [
        WriteItem("grid", np.full((600, 700), value)),
        WriteItem("small", np.full(3, value)),
        WriteItem("names", np.array([b"a", b"bc"], dtype=object)),
    ]


def test_each_shard_syncs_its_directories_and_the_commit_only_the_root(tmp_path: Path) -> None:
    files = _SyncRecorder()
    backend = ZarrBackend(files, ZarrOptions(chunk_bytes=1 << 20))
    prefix = str(tmp_path / "ckpt")
    save_id = uuid.uuid4().hex
    staging = str(tmp_path / f"ckpt.zarr.tmp-{save_id}")
    results = []
    for i, items in enumerate([_mixed_items(1.0)[:2], _mixed_items(2.0)[2:]]):
        results.append(backend.write_shard(prefix, ShardSpec(i, 2, save_id), items))
        # Once write_shard returns, every directory holding entries is durable: no one lists them later.
        holding = {d for d, subdirs, names in os.walk(staging) if subdirs or names}
        assert len(holding) == 1 + (2 if i == 0 else 3)  # the group; grid, _packed-00000 (and names)
        assert holding <= set(files.synced)
    files.synced.clear()
    backend.commit(prefix, results)
    assert sorted(files.synced) == sorted([staging, str(tmp_path)])
    with backend.open_reader(prefix) as reader:
        assert reader.read("grid")[599, 699] == 1.0 and reader.read("names").tolist() == [b"a", b"bc"]


def test_shards_on_a_store_without_rename_sync_no_directories(tmp_path: Path) -> None:
    files = _SyncRecorder(capabilities=Capabilities(conditional_create=True, parallel_writes=True))
    backend = ZarrBackend(files, ZarrOptions(chunk_bytes=1 << 20))
    backend.save(str(tmp_path / "ckpt"), _mixed_items(1.0))
    # Only the commit's: the root is a versioned write, which a local disk makes durable.
    assert files.synced == [str(tmp_path / "ckpt.zarr")]


class _FailingSync(LocalFiles):
    def sync_dir(self, directory: str) -> None:
        raise OSError(5, "Input/output error", directory)


def test_a_failed_directory_sync_fails_the_save_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    backend = ZarrBackend(_FailingSync(), ZarrOptions(chunk_bytes=1 << 20))
    prefix = str(tmp_path / "ckpt")
    with pytest.raises(StorageError, match='failed to write "the shard\'s directories" of .*Input/output error'):
        backend.save(prefix, _mixed_items(1.0))
    assert not backend.exists(prefix)
    assert backend.list_checkpoints(str(tmp_path)) == []


class _FailingChunk(LocalFiles):
    """Local files whose chunk writes below one array fail, as a full or broken disk would."""

    def __init__(self, array: str) -> None:
        super().__init__()
        self.array = array

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        array, name = path.split("/")[-2:]
        if array.startswith(self.array) and name.startswith("c"):
            raise OSError(28, "No space left on device", path)
        return super().open_sink(path, create_only=create_only)


@pytest.mark.parametrize(
    ("array", "named"),
    [("grid", "'grid'"), ("_packed-", r"'_packed-\d+ \(packed small tensors\)'")],
)
def test_a_failed_chunk_write_names_its_tensor(tmp_path: Path, array: str, named: str) -> None:
    # Chunks are written by a pool and waited for at the end of the shard; the error still says whose chunk failed.
    items = [WriteItem("grid", np.ones((600, 700))), WriteItem("small", np.ones(3)), WriteItem("last", np.ones(9))]
    backend = ZarrBackend(_FailingChunk(array), ZarrOptions(chunk_bytes=1 << 20))
    prefix = str(tmp_path / "ckpt")
    with pytest.raises(StorageError, match=f"zarr: failed to write {named} of .*No space left on device"):
        backend.save(prefix, items)
    assert backend.list_checkpoints(str(tmp_path)) == []
