"""Two managers saving the same checkpoint of one series: the later one must not replace the earlier one's.

A manager refuses to save over a checkpoint another writer committed after it was created. The race that
check leaves is played out every time, not by chance: the late writer's save passes the check, then waits in
the ``trackpoint_save_started`` hook (which fires after the check and before anything is written) until the
early writer's save of the same number has committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import plugins

_LATE = "late-writer"


class _LateWriterWaits:
    """Holds the save of the thread named :data:`_LATE` until ``committed`` is set."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.committed = threading.Event()

    @plugins.hookimpl
    def trackpoint_save_started(self, **_: Any) -> None:
        if threading.current_thread().name.startswith(_LATE):
            self.waiting.set()
            assert self.committed.wait(30), "the early writer's save never committed"


@pytest.fixture
def late() -> Iterator[_LateWriterWaits]:
    hook = _LateWriterWaits()
    plugins.register(hook, "test-fencing-race")
    try:
        yield hook
    finally:
        plugins.unregister("test-fencing-race")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_save_racing_another_writers_commit_is_refused_and_leaves_it(
    late: _LateWriterWaits, where: str, asynchronous: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        directory = f"{request.getfixturevalue('s3_bucket')}/run"
        storage: dict[str, Any] = request.getfixturevalue("s3_storage_options")
    else:
        directory, storage = str(tmp_path / "run"), {}
    options = tp.CheckpointOptions(storage_options=storage)
    early_options = tp.CheckpointOptions(storage_options=storage, experimental_write_callbacks=[late.committed.set])
    # Both opened on the empty directory before either saves, as two jobs given one directory are.
    early = tp.CheckpointManager(tp.Checkpoint(v=tp.Variable(np.full(4, 1.0))), directory, 3, options=early_options)
    later = tp.CheckpointManager(tp.Checkpoint(v=tp.Variable(np.full(4, 2.0))), directory, 3, options=options)
    with early, later, ThreadPoolExecutor(1, thread_name_prefix=_LATE) as pool:
        if asynchronous:
            # The refusal of an async save is raised when it is waited for, with the same message.
            save_options = tp.CheckpointOptions(storage_options=storage, enable_async=True)
            racing = pool.submit(lambda: (later.save(options=save_options), later.sync()))
        else:
            racing = pool.submit(later.save)
        assert late.waiting.wait(30), racing.exception(0)
        assert early.save() == f"{directory}/ckpt-1"
        with pytest.raises(tp.CheckpointExistsError, match="another writer"):
            racing.result(30)
    prefix = f"{directory}/ckpt-1"
    stored = tp.load_variable(prefix, "v/.ATTRIBUTES/VARIABLE_VALUE", options=options)
    np.testing.assert_array_equal(stored, np.full(4, 1.0))
    state = tp.get_checkpoint_state(directory, options=options)
    assert state is not None and list(state.all_model_checkpoint_paths) == [prefix]
    assert later.checkpoints == []
    # A failed synchronous save gives its number back; an async one keeps it (its save() returned the path).
    assert int(later.checkpoint.save_counter.numpy()) == (1 if asynchronous else 0)
