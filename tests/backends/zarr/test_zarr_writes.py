"""A shard writes its chunks and array documents concurrently; any failure fails the whole save."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from trackpoint.backends.stores import LocalFiles
from trackpoint.backends.zarr import ZarrBackend
from trackpoint.errors import StorageError
from trackpoint.storage import CheckpointOptions, WriteItem

#: Tensors of 80 KiB in arrays of their own; tensors under 1 KiB packed.
_OPTIONS = CheckpointOptions(num_writers=1, backend_options={"pack_bytes": 1024, "chunk_bytes": 64 * 1024})


class _Files(LocalFiles):
    """Local files that record which thread wrote each array document, and can refuse one."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: str | None = None
        self.documents: dict[str, str] = {}  # array name -> thread that wrote its zarr.json
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes | bytearray | memoryview, *, create_only: bool = False) -> None:
        if path.endswith("/zarr.json"):
            with self._lock:
                self.documents[path.split("/")[-2]] = threading.current_thread().name
            if self.refuse is not None and f"/{self.refuse}/" in path:
                raise StorageError(f"local: refused to write {path!r}")
        super().put(path, data, create_only=create_only)


def _items(value: float) -> list[WriteItem]:
    return [WriteItem(f"t{i}", np.full(20_000, value + i, np.float32)) for i in range(6)] + [
        WriteItem("small", np.arange(5.0) + value)
    ]


def test_array_documents_are_written_by_the_chunk_writers(tmp_path: Path) -> None:
    # Each document is fsynced on its own; written by the shard's own thread, the waits for
    # the journal held up the shard's next tensors.
    files = _Files()
    backend = ZarrBackend(files)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, _items(0.0), _OPTIONS)
    arrays = {name: thread for name, thread in files.documents.items() if ".zarr" not in name}  # not the group's
    assert {f"t{i}" for i in range(6)} | {"_packed-00000"} == set(arrays)
    assert all(thread.startswith("trackpoint-zarr-chunks") for thread in arrays.values())
    with backend.open_reader(prefix) as reader:
        for item in _items(0.0):
            np.testing.assert_array_equal(reader.read(item.key), item.array)


def test_a_refused_array_document_fails_the_save_and_keeps_the_earlier_checkpoint(tmp_path: Path) -> None:
    files = _Files()
    backend = ZarrBackend(files)
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, _items(0.0), _OPTIONS)
    files.refuse = "t4"
    with pytest.raises(StorageError, match=r"refused to write .*/t4/zarr\.json"):
        backend.save(prefix, _items(100.0), _OPTIONS, overwrite=True)
    assert os.listdir(tmp_path) == ["ckpt.zarr"]  # no staging group left behind
    with backend.open_reader(prefix) as reader:
        for item in _items(0.0):
            np.testing.assert_array_equal(reader.read(item.key), item.array)
