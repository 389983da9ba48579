"""The commit strategy follows the store's declared capabilities, whatever the store's class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.zarr import ZarrBackend
from trackpoint.errors import BackendError, CheckpointExistsError
from trackpoint.storage import Capabilities, WriteItem


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
    backend.save(str(tmp_path / "ckpt"), [WriteItem("w", np.arange(50_000.0))])
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
