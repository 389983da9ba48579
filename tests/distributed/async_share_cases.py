"""Cases of test_async_ranks.py about what an async save holds on each rank while it writes."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from cases import Context

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend


def replicated_copies_while_writing(ctx: Context, prefix: str, values: int, size: int) -> dict[str, Any]:
    """An async save of ``values`` numpy arrays every rank holds alike; what it holds while this rank writes.

    Each array is copied when ``write`` is called (the program may change it in place, and does, below);
    the plan then gives each array to one rank to write.
    """
    model = tp.AutoTrackable()
    for i in range(values):
        setattr(model, f"t{i}", np.full(size, float(i)))
    ckpt = tp.Checkpoint(model=model)
    entered, go = threading.Event(), threading.Event()
    write_shard = BundleBackend.write_shard

    def held_back(self: BundleBackend, *args: Any, **kwargs: Any) -> Any:
        entered.set()  # planned: this rank knows which values it writes
        if not go.wait(20):
            raise TimeoutError("the test never let the write go on")
        return write_shard(self, *args, **kwargs)

    BundleBackend.write_shard = held_back  # type: ignore[method-assign]
    try:
        options = tp.CheckpointOptions(
            coordinator=tp.distributed.TorchCoordinator(timeout=30), enable_async=True, num_writers=1
        )
        ckpt.write(prefix, options=options)
        save = ckpt._self_async.last
        assert save is not None, "the save was written synchronously"
        copied = save.peak
        if not entered.wait(20):
            raise TimeoutError("the save never started writing")
        held = save.held
        for i in range(values):
            getattr(model, f"t{i}")[:] = -1.0  # in place, while the save writes: never in the checkpoint
        go.set()
        ckpt.sync()
    finally:
        go.set()
        BundleBackend.write_shard = write_shard  # type: ignore[method-assign]
    return {"copied": copied, "held_while_writing": held}
