"""The small-tensor packer never changes a buffer it has handed to zarr.

zarr may still hold a view of the values it was given after ``arr[...] = v``
returns: a codec worker thread drops its reference to the work item only
after the result was delivered, so under CPU load the caller can run first.
The packer once handed zarr a view of a ``bytearray`` and then resized it,
which fails with ``BufferError: Existing exports of data`` whenever such a
view is still alive (seen in 5 of 854 saves beside two CPU-bound threads).
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


@pytest.fixture
def retained_values(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[np.ndarray[Any, Any], bytes]]:
    """Every value given to ``zarr.Array.__setitem__``, kept alive with a copy of its bytes at hand-over.

    Holding the value is what a lagging zarr worker thread does; the copy shows
    whether the caller changed the buffer after handing it over.
    """
    kept: list[tuple[np.ndarray[Any, Any], bytes]] = []
    original = zarr.Array.__setitem__

    def setitem(self: Any, selection: Any, value: Any) -> None:
        if isinstance(value, np.ndarray):
            kept.append((value, value.tobytes()))
        original(self, selection, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    return kept


def test_packer_leaves_buffers_handed_to_zarr_untouched(local: Any, retained_values: list[Any]) -> None:
    items = _items(0)
    prefix = local.prefix()
    local.backend.save(prefix, items, CheckpointOptions(backend_options=_SMALL_SHARDS))
    _assert_round_trip(local.backend, prefix, items)
    # Several shard windows were written, and each still holds what zarr was given.
    assert len(retained_values) > 3
    for value, at_hand_over in retained_values:
        assert value.tobytes() == at_hand_over


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
