"""A Zarr save takes the bytes of each tensor it packs once.

An item may make its array when it is read (a JAX array's host copy, gathered from its devices): the
save must not read it a second time to size the pack of small tensors, nor keep the arrays it made
alive to avoid that.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from typing import Any

import numpy as np

from trackpoint.storage import CheckpointOptions, WriteItem, _LazyItem


def _counted_items(count: int, nbytes: int, made: Counter[str]) -> list[WriteItem]:
    """Items made when read, as a ``Checkpoint`` hands JAX arrays over; ``made`` counts each making."""

    def maker(key: str, value: float) -> Any:
        def make() -> np.ndarray[Any, Any]:
            made[key] += 1
            return np.full(nbytes // 4, value, np.float32)

        return make

    placeholder = np.broadcast_to(np.zeros((), np.float32), (nbytes // 4,))
    return [_LazyItem(f"t{i}", placeholder, make=maker(f"t{i}", float(i))) for i in range(count)]


def test_each_packed_tensor_is_made_once_and_not_held(local: Any) -> None:
    # 64 tensors of 64 KiB (4 MiB) packed into shard objects of 256 KiB: the save holds two shard windows
    # and the tensor being copied (about 1.3 MiB in all), never all the packed tensors.
    made: Counter[str] = Counter()
    items = _counted_items(64, 64 << 10, made)
    options = CheckpointOptions(
        backend_options={"pack_bytes": 1 << 20, "chunk_bytes": 256 << 10, "packed_chunk_bytes": 64 << 10}
    )
    prefix = local.prefix()
    # The first save imports what it needs: those allocations are not the save's.
    local.backend.save(local.prefix("warm-up"), [WriteItem("w", np.ones(4, np.float32))], options)
    tracemalloc.start()
    try:
        local.backend.save(prefix, items, options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made == dict.fromkeys((item.key for item in items), 1), f"tensors made more than once: {made}"
    assert peak < (2 << 20), f"the save held {peak} bytes at its peak; the packed tensors are 4 MiB"
    with local.backend.open_reader(prefix) as reader:
        for i, item in enumerate(items):
            np.testing.assert_array_equal(reader.read(item.key), np.full((64 << 10) // 4, float(i), np.float32))
