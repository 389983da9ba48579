"""Packed small tensors: shard objects exactly as zarr-python writes them, saves safe under load.

The packer once handed zarr views of a buffer it then resized, which failed
with ``BufferError: Existing exports of data`` under CPU load. It now encodes
each shard itself from one of two windows: one fills while the chunk writers
write the other, which is refilled only once its shard object is written.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zarr

from trackpoint.storage import CheckpointOptions, WriteItem

# Small shards and inner chunks: every save hands zarr many separate shard windows.
_SMALL_SHARDS = {"chunk_bytes": 4096, "packed_chunk_bytes": 1024}


def _items(seed: int, count: int = 40) -> list[WriteItem]:
    rng = np.random.default_rng(seed)
    dtypes = [np.int32, np.float64, np.uint8, np.float16, np.int64]
    items = []
    for i in range(count):
        dtype = np.dtype(dtypes[i % len(dtypes)])
        # Random bit patterns (NaNs included): compared bit for bit below.
        items.append(
            WriteItem(
                f"t{i}",
                rng.integers(0, 256, size=(7 + 13 * i) * dtype.itemsize, dtype=np.uint8).view(dtype),
            )
        )
    return items


def _assert_round_trip(backend: Any, prefix: str, items: list[WriteItem]) -> None:
    with backend.open_reader(prefix) as reader:
        for item in items:
            got = reader.read(item.key)
            assert got.dtype == item.array.dtype and got.tobytes() == item.array.tobytes(), item.key


@pytest.mark.parametrize("compressor", ["none", "zstd"])
def test_shard_objects_are_byte_identical_to_zarrs(local: Any, compressor: str) -> None:
    import os

    items = _items(0)
    prefix = local.prefix()
    options = {**_SMALL_SHARDS, "compressor": compressor}
    local.backend.save(prefix, items, CheckpointOptions(backend_options=options))
    _assert_round_trip(local.backend, prefix, items)
    packed = prefix + ".zarr/_packed-00000"
    ours = zarr.open_array(packed, mode="r")
    assert ours.shape[0] > 4 * 4096  # several shard objects, the last one short
    # zarr-python writing the same bytes with the same metadata produces the same objects.
    theirs = zarr.create_array(
        store=zarr.storage.MemoryStore(),
        shape=ours.shape,
        chunks=ours.chunks,
        shards=ours.shards,
        dtype=ours.dtype,
        fill_value=0,
        compressors=ours.compressors,
        serializer=ours.serializer,
        chunk_key_encoding=ours.metadata.chunk_key_encoding,
        config={"write_empty_chunks": True},
    )
    theirs[...] = ours[...]
    shards = sorted((n for n in os.listdir(packed) if n != "zarr.json"), key=lambda n: int(n.removeprefix("c.")))
    assert len(shards) == -(-ours.shape[0] // 4096)
    for name in shards:
        with open(f"{packed}/{name}", "rb") as f:
            assert f.read() == theirs.store._store_dict[name].to_bytes(), name


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two CPU-bound Python threads competing for the interpreter, as in the report."""
    stop = threading.Event()

    def burn() -> None:
        x = 0
        while not stop.is_set():
            for i in range(2000):
                x += i

    threads = [threading.Thread(target=burn, daemon=True) for _ in range(2)]
    old_interval = sys.getswitchinterval()
    # Frequent thread switches make the interleavings that exposed the bug common.
    sys.setswitchinterval(1e-4)
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old_interval)


def test_saves_round_trip_under_cpu_load(local: Any, cpu_load: None) -> None:
    opts = CheckpointOptions(backend_options=_SMALL_SHARDS)
    deadline = time.monotonic() + 3.0
    saves = 0
    while time.monotonic() < deadline or saves < 5:
        items = _items(saves)
        prefix = local.prefix(f"ckpt-{saves}")
        local.backend.save(prefix, items, opts)
        _assert_round_trip(local.backend, prefix, items)
        saves += 1


def test_a_window_is_refilled_only_after_its_shard_object_is_written(tmp_path: Any) -> None:
    from trackpoint.backends.stores import LocalFiles
    from trackpoint.backends.zarr import ZarrBackend

    class SlowShards(LocalFiles):
        """Shard objects of the packed array take a while to write; the packer must wait for them."""

        def open_sink(self, path: str, *, create_only: bool = False) -> Any:
            if "/_packed-" in path and "/c." in path:
                time.sleep(0.02)
            return super().open_sink(path, create_only=create_only)

    items = _items(1, count=60)
    backend = ZarrBackend(SlowShards())
    prefix = str(tmp_path / "ckpt")
    backend.save(prefix, items, CheckpointOptions(backend_options=_SMALL_SHARDS))
    assert len(list((tmp_path / "ckpt.zarr" / "_packed-00000").glob("c.*"))) > 10
    _assert_round_trip(backend, prefix, items)
