"""Per-value waits of async saves on S3, GCS, Zarr (and the bundle): an assignment waits for its own value only.

A write that must wait for the writer (here: ``async_memory_bytes=0``, so no
assignment may take a new buffer) waits until the backend has written that
value, not until the whole save is done. The bundle reports each value as it
writes it; S3, GCS and Zarr when the shard holding it is written. Each value
gets a shard of its own (``max_shard_bytes``), written one after the other
(``num_writers=1``), and an observer holds the writer at the first progress
event after a value was written, so the test acts while the save is certainly
in flight with that value written and the other not.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import plugins

BACKENDS = ["bundle", "zarr", "s3", "gcs"]
SIZE = 1000  # float64 values of 8000 bytes: one per shard with max_shard_bytes=8192


def _location(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> tuple[str, tp.CheckpointOptions]:
    """Directory and options (storage only) for ``backend``."""
    if backend == "bundle":
        return str(tmp_path / "run"), tp.CheckpointOptions()
    if backend == "zarr":
        return str(tmp_path / "run"), tp.CheckpointOptions(backend="zarr")
    bucket = request.getfixturevalue(f"{backend}_bucket")  # a URL: s3://... or gs://...
    storage = request.getfixturevalue(f"{backend}_storage_options")
    return f"{bucket}/run", tp.CheckpointOptions(storage_options=storage)


class _HoldOnceAValueIsWritten:
    """Holds the writer in the first progress event at which one of ``variables`` is no longer pinned."""

    def __init__(self, variables: list[tp.Variable]) -> None:
        self.variables = variables
        self.reached, self.release = threading.Event(), threading.Event()

    @plugins.hookimpl
    def trackpoint_save_progress(self, written_bytes: int) -> None:
        if not self.reached.is_set() and any(v._pin is None for v in self.variables):
            self.reached.set()
            assert self.release.wait(60), "the test never released the writer"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_assignment_waits_for_its_own_value_only_and_nothing_leaks(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    directory, storage = _location(request, backend, tmp_path)
    variables = [tp.Variable(np.full(SIZE, float(n))) for n in range(2)]
    ckpt = tp.Checkpoint(a=variables[0], b=variables[1])
    options = replace(
        storage, enable_async=True, async_memory_bytes=0, num_writers=1, max_shard_bytes=8192, progress=False
    )
    hold = _HoldOnceAValueIsWritten(variables)
    plugins.register(hold, "hold-once-a-value-is-written")
    done: list[Any] = []
    waiting: threading.Thread | None = None
    try:
        path = ckpt.write(f"{directory}/ckpt", options)
        assert hold.reached.wait(60), "no value was reported written"
        written = [v for v in variables if v._pin is None]
        assert len(written) == 1, "the values were not released one by one"
        unwritten = variables[1 - variables.index(written[0])]
        # The written value is the program's again: assigned in place at once, the save still in flight.
        written[0].assign(np.full(SIZE, 10.0))
        assert ckpt._self_async.busy()
        # The other one waits for its own value (the budget allows no new buffer) ...
        waiting = threading.Thread(target=lambda: done.append(unwritten.assign(np.full(SIZE, 11.0))))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive() and not done, "an assignment of a value not yet written did not wait"
    finally:
        hold.release.set()
        plugins.unregister("hold-once-a-value-is-written")
    assert waiting is not None
    waiting.join(60)
    assert done and not waiting.is_alive()  # ... and goes ahead once it is written
    ckpt.sync()
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 0 and save.waits == 1 and save.peak == 0
    # The checkpoint holds the values of the moment write() was called.
    back = [tp.Variable(np.full(SIZE, -1.0)) for _ in range(2)]
    tp.Checkpoint(a=back[0], b=back[1]).read(path, storage).assert_consumed()
    for n, v in enumerate(back):
        np.testing.assert_array_equal(v.numpy(), np.full(SIZE, float(n)))
    assert sorted(float(v.numpy()[0]) for v in variables) == [10.0, 11.0]
