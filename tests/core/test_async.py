"""Async saves: the snapshot, copy-on-write, the byte budget, failures, one save in flight.

Most tests save through ``gated-memory`` (tests/gated.py): the memory backend
behind a gate, so that the test acts while the background write is certainly
still running and then lets it finish.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from gated import GATE, Gate, gated_backends
from trackpoint import _async, state
from trackpoint.errors import SaveInProgressError, StorageError, UnsupportedOptionError
from trackpoint.plugins.testing import DTYPES

ASYNC = tp.CheckpointOptions(backend="gated-memory", enable_async=True)
READ = tp.CheckpointOptions(backend="memory")
READ_BUNDLE = tp.CheckpointOptions(backend="bundle")


@pytest.fixture
def gate() -> Iterator[Gate]:
    with gated_backends() as g:
        yield g


def _value(dtype: Any, seed: int, shape: tuple[int, ...] = (5,)) -> np.ndarray:
    raw = np.arange(seed, seed + int(np.prod(shape))).reshape(shape) % (2 if dtype == np.bool_ else 100)
    return raw.astype(dtype)


def _blank_like(v: tp.Variable) -> tp.Variable:
    if v.dtype == tp.string:
        return tp.Variable(np.full(v.shape, b"", dtype=object))
    return tp.Variable(np.zeros(v.shape, v.dtype))


class Counter(tp.PythonState):
    def __init__(self) -> None:
        self.n = 0

    def serialize(self) -> str:
        return json.dumps({"n": self.n})

    def deserialize(self, string_value: str | bytes) -> None:
        self.n = json.loads(string_value)["n"]


def _in_thread(fn: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts there is none
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


# ---------------------------------------------------------------- the snapshot
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_assignments_after_an_async_save_returns_do_not_leak_into_it(gate: Gate, dtype: Any) -> None:
    old, new = _value(dtype, 1), _value(dtype, 7)
    matrix, scalar = tp.Variable(old), tp.Variable(old[0])
    ckpt = tp.Checkpoint(matrix=matrix, scalar=scalar)
    path = ckpt.save("memory://async/leak/ckpt", ASYNC)
    assert gate.reached.wait(10), "the save never started writing"
    matrix.assign(new)
    scalar.assign(new[0])
    if np.dtype(matrix.dtype).kind in "iufc" and dtype is not np.bool_:
        matrix.assign_add(np.ones(5, matrix.dtype))
        matrix.assign_sub(np.ones(5, matrix.dtype))
    assert gate.writes == 0  # everything above happened while the save was in flight
    gate.open.set()
    ckpt.sync()
    assert ckpt._self_async.last is not None and ckpt._self_async.last.swaps >= 2
    back_matrix, back_scalar = _blank_like(matrix), _blank_like(scalar)
    tp.Checkpoint(matrix=back_matrix, scalar=back_scalar).read(path, READ).expect_partial()
    np.testing.assert_array_equal(back_matrix.numpy(), old)
    np.testing.assert_array_equal(back_scalar.numpy(), old[0])
    np.testing.assert_array_equal(matrix.numpy(), new)  # and the variables hold what was assigned


def test_string_variables_and_every_write_path_are_snapshotted(gate: Gate) -> None:
    text = tp.Variable(np.array([b"a", b"bc"], dtype=object))
    counted = tp.Variable(np.int64(3))
    restored_into = tp.Variable(np.arange(3.0))
    ckpt = tp.Checkpoint(text=text, counted=counted, restored_into=restored_into)
    other = tp.Checkpoint(restored_into=tp.Variable(np.full(3, 9.0)))
    other_path = other.write("memory://async/other/ckpt")
    path = ckpt.write("memory://async/paths/ckpt", ASYNC)
    assert gate.reached.wait(10)
    text.assign([b"zz", b"y"])
    counted.assign_add(10)
    # A restore writes straight into a variable's buffer: not into the one being saved.
    tp.Checkpoint(restored_into=restored_into).read(other_path).assert_consumed()
    gate.open.set()
    ckpt.sync()
    back = tp.Checkpoint(
        text=tp.Variable(np.array([b"", b""], dtype=object)),
        counted=tp.Variable(np.int64(0)),
        restored_into=tp.Variable(np.zeros(3)),
    )
    back.read(path, READ).assert_consumed()
    assert list(back.text.numpy()) == [b"a", b"bc"]
    assert back.counted.numpy() == 3
    np.testing.assert_array_equal(back.restored_into.numpy(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(restored_into.numpy(), [9.0, 9.0, 9.0])
    assert counted.numpy() == 13 and list(text.numpy()) == [b"zz", b"y"]


def test_values_that_are_not_variables_are_copied_when_save_is_called(gate: Gate) -> None:
    model = tp.AutoTrackable()
    model.table = np.arange(4.0)  # a numpy attribute: tracked, and mutable in place
    model.counter = Counter()
    ckpt = tp.Checkpoint(model=model)
    path = ckpt.write("memory://async/copies/ckpt", ASYNC)
    model.table[:] = -1.0
    model.counter.n = 99
    gate.open.set()
    ckpt.sync()
    save = ckpt._self_async.last
    assert save is not None
    # The numpy attribute was copied (32 bytes); the PythonState's array was made for the save and
    # nothing else can reach it, so it was not.
    assert save.peak == 32
    back = tp.AutoTrackable()
    back.table = np.zeros(4)
    back.counter = Counter()
    tp.Checkpoint(model=back).read(path, READ).assert_consumed()
    np.testing.assert_array_equal(back.table, [0.0, 1.0, 2.0, 3.0])
    assert back.counter.n == 0


class Holder(tp.Trackable):
    """Saves an array it keeps (and may change in place): trackpoint cannot see its writes."""

    def __init__(self) -> None:
        self.array = np.arange(3.0)

    def _serialize_to_tensors(self) -> dict[str, np.ndarray]:
        return {"array": self.array}

    def _restore_from_tensors(self, tensors: Any) -> None:
        self.array[...] = tensors["array"]


def test_an_array_a_custom_trackable_keeps_is_copied_when_save_is_called(gate: Gate) -> None:
    holder = Holder()
    ckpt = tp.Checkpoint(holder=holder)
    path = ckpt.write("memory://async/holder/ckpt", ASYNC)
    holder.array[:] = 7.0
    gate.open.set()
    ckpt.sync()
    back = Holder()
    back.array[:] = 0.0
    tp.Checkpoint(holder=back).read(path, READ).assert_consumed()
    np.testing.assert_array_equal(back.array, [0.0, 1.0, 2.0])


def test_a_view_of_the_value_makes_an_assignment_wait_for_the_writer_and_keeps_following_it(gate: Gate) -> None:
    v = tp.Variable(np.zeros(3))
    ckpt = tp.Checkpoint(v=v)
    view = v.value  # a view follows later assignments: the buffer cannot be swapped under it
    path = ckpt.write("memory://async/view/ckpt", ASYNC)
    assert gate.reached.wait(10)
    thread, errors = _in_thread(lambda: v.assign(np.ones(3)))
    thread.join(0.3)
    assert thread.is_alive(), "the assignment did not wait for the writer"
    np.testing.assert_array_equal(view, [0.0, 0.0, 0.0])
    gate.open.set()
    thread.join(10)
    assert not thread.is_alive() and not errors
    ckpt.sync()
    np.testing.assert_array_equal(view, [1.0, 1.0, 1.0])
    back = tp.Variable(np.full(3, 5.0))
    tp.Checkpoint(v=back).read(path, READ).assert_consumed()
    np.testing.assert_array_equal(back.numpy(), [0.0, 0.0, 0.0])
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 0 and save.waits >= 1


def test_without_views_an_assignment_swaps_buffers_and_old_views_of_new_values_follow(gate: Gate) -> None:
    v = tp.Variable(np.zeros(3))
    ckpt = tp.Checkpoint(v=v)
    ckpt.write("memory://async/swap/ckpt", ASYNC)
    v.assign(np.ones(3))  # swapped: no one could see the old buffer
    later = v.value
    v.assign_add(np.ones(3))  # not pinned any more: in place, the view follows
    np.testing.assert_array_equal(later, [2.0, 2.0, 2.0])
    gate.open.set()
    ckpt.sync()
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 1 and save.waits == 0


def test_a_failed_assignment_to_a_pinned_variable_leaves_its_value(gate: Gate) -> None:
    v = tp.Variable(np.array([60000.0], np.float16))
    ckpt = tp.Checkpoint(v=v)
    ckpt.write("memory://async/failed-assign/ckpt", ASYNC)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        v.assign_add(np.array([60000.0], np.float16))
    np.testing.assert_array_equal(v.numpy(), [60000.0])
    gate.open.set()
    ckpt.sync()


def test_two_checkpoints_in_flight_share_a_pinned_variable(gate: Gate) -> None:
    shared = tp.Variable(np.arange(3.0))
    first, second = tp.Checkpoint(v=shared), tp.Checkpoint(v=shared)
    first.write("memory://async/shared/a", ASYNC)
    second.write("memory://async/shared/b", ASYNC)
    shared.assign(np.full(3, 8.0))
    gate.open.set()
    first.sync()
    second.sync()
    for path in ("memory://async/shared/a", "memory://async/shared/b"):
        back = tp.Variable(np.zeros(3))
        tp.Checkpoint(v=back).read(path, READ).assert_consumed()
        np.testing.assert_array_equal(back.numpy(), [0.0, 1.0, 2.0])


# ---------------------------------------------------------------- the budget
def test_an_assignment_that_would_exceed_the_budget_waits_for_the_writer(gate: Gate) -> None:
    a, b = tp.Variable(np.zeros(1000)), tp.Variable(np.zeros(1000))  # 8000 bytes each
    ckpt = tp.Checkpoint(a=a, b=b)
    options = tp.CheckpointOptions(backend="gated-memory", enable_async=True, async_memory_bytes=12000)
    path = ckpt.write("memory://async/budget/ckpt", options)
    assert gate.reached.wait(10)
    a.assign(np.ones(1000))  # a new buffer: 8000 of 12000 bytes
    thread, errors = _in_thread(lambda: b.assign(np.ones(1000)))  # 16000 > 12000: waits
    thread.join(0.3)
    assert thread.is_alive(), "the assignment allocated beyond the budget instead of waiting"
    gate.open.set()
    thread.join(10)
    assert not errors
    ckpt.sync()
    save = ckpt._self_async.last
    assert save is not None and save.peak == 8000 and save.swaps == 1 and save.waits >= 1
    back = tp.Checkpoint(a=tp.Variable(np.ones(1000)), b=tp.Variable(np.ones(1000)))
    back.read(path, READ).assert_consumed()
    assert not back.a.numpy().any() and not back.b.numpy().any()


def test_a_waiting_assignment_goes_ahead_once_its_value_is_written_not_at_the_end_of_the_save(
    gate: Gate, tmp_path: Path
) -> None:
    a, b = tp.Variable(np.zeros(1000)), tp.Variable(np.zeros(1000))  # 8000 bytes each
    ckpt = tp.Checkpoint(a=a, b=b)
    committed, finish = threading.Event(), threading.Event()

    def hold(path: str) -> None:  # a write callback: the save is still in flight while it runs
        committed.set()
        assert finish.wait(10)

    options = tp.CheckpointOptions(
        backend="gated-bundle", enable_async=True, async_memory_bytes=12000, experimental_write_callbacks=[hold]
    )
    ckpt.write(str(tmp_path / "ckpt"), options)
    assert gate.reached.wait(10)
    a.assign(np.ones(1000))  # a new buffer: 8000 of 12000 bytes
    thread, errors = _in_thread(lambda: b.assign(np.ones(1000)))  # would exceed: waits
    thread.join(0.3)
    assert thread.is_alive()
    gate.open.set()
    assert committed.wait(10)
    thread.join(10)  # b was written: the assignment went ahead, in place, while the save is in flight
    assert not thread.is_alive() and not errors
    assert ckpt._self_async.busy()
    finish.set()
    ckpt.sync()
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 1 and save.waits >= 1
    back = tp.Checkpoint(a=tp.Variable(np.ones(1000)), b=tp.Variable(np.ones(1000)))
    back.read(str(tmp_path / "ckpt")).assert_consumed()
    assert not back.a.numpy().any() and not back.b.numpy().any()
    np.testing.assert_array_equal(b.numpy(), np.ones(1000))


def _step_until(gate: Gate, done: Any, shards: int) -> bool:
    """Let the held save write one shard at a time (at most ``shards``) until ``done()``; whether it came."""
    for _ in range(shards):
        gate.reached.clear()
        gate.let_through(1)
        # The writer is back at the gate: the shard was written and reported, its values released.
        if not gate.reached.wait(10) or done():
            return done()
    return done()


def test_a_written_value_releases_its_memory_at_once_so_a_waiting_assignment_goes_ahead(
    gate: Gate, tmp_path: Path
) -> None:
    # The budget holds one new buffer. a takes it; b's assignment waits for the budget. Once a's old
    # value is written, its memory leaves the save and b's assignment takes a buffer: it returns while
    # b's own value is still to be written (before, it waited until then).
    a, b = tp.Variable(np.zeros(1000)), tp.Variable(np.zeros(1000))  # 8000 bytes each: a shard each
    ckpt = tp.Checkpoint(a=a, b=b)

    def pinned(variable: tp.Variable) -> bool:
        save = ckpt._self_async.last
        return save is not None and any(p.variable is variable and p.view is not None for p in save.pins)

    options = tp.CheckpointOptions(
        backend="gated-bundle", enable_async=True, async_memory_bytes=8000, num_writers=1, max_shard_bytes=8192
    )
    ckpt.write(str(tmp_path / "ckpt"), options)
    assert gate.reached.wait(10)
    a.assign(np.ones(1000))  # a new buffer: the whole budget
    thread, errors = _in_thread(lambda: b.assign(np.full(1000, 2.0)))
    thread.join(0.2)
    assert thread.is_alive(), "the assignment allocated beyond the budget instead of waiting"
    try:
        assert _step_until(gate, lambda: not pinned(a), 3), "a's old buffer stayed with the save after it was written"
        thread.join(10)
        assert not thread.is_alive() and not errors, "b's assignment still waits though a's memory was released"
        assert pinned(b), "b was written already: the test did not show what it should"
    finally:
        gate.open.set()
    thread.join(10)
    ckpt.sync()
    save = ckpt._self_async.last
    # b's new buffer is a's old one, from the pool: the save never held more than the budget.
    assert save is not None and save.swaps == 2 and save.warm == 1 and save.waits == 1 and save.peak == 8000
    back = tp.Checkpoint(a=tp.Variable(np.ones(1000)), b=tp.Variable(np.ones(1000)))
    back.read(str(tmp_path / "ckpt"), READ_BUNDLE).assert_consumed()
    assert not back.a.numpy().any() and not back.b.numpy().any()
    np.testing.assert_array_equal(a.numpy(), np.ones(1000))
    np.testing.assert_array_equal(b.numpy(), np.full(1000, 2.0))


def test_a_copy_made_at_save_time_is_released_once_written(gate: Gate, tmp_path: Path) -> None:
    # A numpy attribute is copied at save time (the program may change it in place); the copy is
    # charged to the save until it is written, not until the save ends.
    holder = tp.AutoTrackable()
    holder.table = np.arange(1000.0)
    ckpt = tp.Checkpoint(holder=holder, v=tp.Variable(np.zeros(1000)))
    # Shards: v, the table, the object graph (written in that order).
    options = tp.CheckpointOptions(backend="gated-bundle", enable_async=True, num_writers=1, max_shard_bytes=8100)
    ckpt.write(str(tmp_path / "ckpt"), options)
    save = ckpt._self_async.last
    assert save is not None and save.held == 8000
    holder.table[:] = -1.0  # in place, behind trackpoint's back: the copy keeps the saved value
    try:
        assert gate.reached.wait(10)
        assert _step_until(gate, lambda: save.held == 0, 3), "the copy stayed charged after it was written"
        assert ckpt._self_async.busy()
    finally:
        gate.open.set()
    ckpt.sync()
    back = tp.AutoTrackable()
    back.table = np.zeros(1000)
    tp.Checkpoint(holder=back, v=tp.Variable(np.ones(1000))).read(str(tmp_path / "ckpt"), READ_BUNDLE).assert_consumed()
    np.testing.assert_array_equal(back.table, np.arange(1000.0))


class _HoldAtFirstProgress:
    """Blocks the writer in its first progress event (after the first value is written) until released."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()

    @tp.plugins.hookimpl
    def trackpoint_save_progress(self, written_bytes: int) -> None:
        if not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(10)


def test_the_bundle_releases_each_value_as_it_writes_it(tmp_path: Path) -> None:
    values = [tp.Variable(np.full(1000, float(n))) for n in range(3)]
    ckpt = tp.Checkpoint(vs=values)
    hold = _HoldAtFirstProgress()
    tp.plugins.register(hold, "hold-at-first-progress")
    try:
        options = tp.CheckpointOptions(enable_async=True, num_writers=1, progress=False)
        ckpt.write(str(tmp_path / "ckpt"), options)
        assert hold.reached.wait(10)
        # One shard, held after its first tensor: that value alone is the program's again.
        pinned = [v._pin is not None for v in values]
        assert pinned.count(False) == 1, pinned
        first = values[pinned.index(False)]
        first.assign_add(np.ones(1000))  # in place, no wait, no new buffer
        hold.release.set()
        ckpt.sync()
    finally:
        hold.release.set()
        tp.plugins.unregister("hold-at-first-progress")
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 0 and save.waits == 0
    back = [tp.Variable(np.zeros(1000)) for _ in range(3)]
    tp.Checkpoint(vs=back).read(str(tmp_path / "ckpt")).assert_consumed()
    for n, v in enumerate(back):
        np.testing.assert_array_equal(v.numpy(), np.full(1000, float(n)))


def test_copies_beyond_the_budget_make_the_save_synchronous() -> None:
    model = tp.AutoTrackable()
    model.table = np.arange(100.0)  # 800 bytes to copy
    model.v = tp.Variable(np.zeros(10))
    ckpt = tp.Checkpoint(model=model)
    options = tp.CheckpointOptions(enable_async=True, async_memory_bytes=100)
    path = ckpt.write("memory://async/sync-fallback/ckpt", options)
    # Written before write() returned, without copies; no background save was started.
    assert tp.checkpoint_exists(path)
    assert ckpt._self_async.last is None


def test_a_save_made_synchronous_by_the_budget_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    model = tp.AutoTrackable()
    model.table = np.arange(1000.0)  # 8000 bytes to copy
    ckpt = tp.Checkpoint(model=model)
    options = tp.CheckpointOptions(enable_async=True, async_memory_bytes=4096)
    with caplog.at_level("WARNING", logger="trackpoint"):
        ckpt.write("memory://async/sync-said/ckpt-1", options)
        ckpt.write("memory://async/sync-said/ckpt-2", options)
    (record,) = [r for r in caplog.records if "written synchronously" in r.getMessage()]
    message = record.getMessage()
    assert "exceed async_memory_bytes (4.0 KiB)" in message and "7.8 KiB" in message
    assert "CheckpointOptions(async_memory_bytes=...)" in message
    assert message.startswith("the async save of 'memory://async/sync-said/ckpt-1': the values")  # said once


def test_async_options_are_validated() -> None:
    with pytest.raises(ValueError, match="async_memory_bytes must be a non-negative int"):
        tp.CheckpointOptions(async_memory_bytes=-1)
    with pytest.raises(ValueError, match="async_when_busy must be one of 'wait', 'raise'"):
        tp.CheckpointOptions(async_when_busy="skip")
    assert _async.storage_options_of(tp.CheckpointOptions(enable_async=True)) == tp.CheckpointOptions()


# ---------------------------------------------------------------- failures
def test_a_failing_store_surfaces_its_error_at_sync_and_nothing_of_the_save_is_visible(gate: Gate) -> None:
    v = tp.Variable(1.0)
    ckpt = tp.Checkpoint(v=v)
    first = ckpt.save("memory://async/fail/ckpt", tp.CheckpointOptions(backend="memory"))
    gate.fail = StorageError("memory: the disk is full")
    second = ckpt.save("memory://async/fail/ckpt", ASYNC)
    gate.open.set()
    with pytest.raises(StorageError, match="the disk is full") as info:
        ckpt.sync()
    assert any("failed in the background" in note for note in info.value.__notes__)
    ckpt.sync()  # raised once
    assert not tp.checkpoint_exists(second)
    assert tp.latest_checkpoint("memory://async/fail") == first
    back = tp.Variable(0.0)
    tp.Checkpoint(v=back).restore(first).assert_consumed()
    assert back.numpy() == 1.0


@pytest.mark.parametrize("then", ["save", "restore", "close"])
def test_a_background_failure_is_raised_by_the_next_save_restore_or_close(gate: Gate, then: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    ok = ckpt.write("memory://async/next/ok", tp.CheckpointOptions(backend="memory"))
    gate.fail = StorageError("memory: connection reset")
    gate.open.set()
    ckpt.write("memory://async/next/ckpt", ASYNC)
    act = {
        "save": lambda: ckpt.save("memory://async/next/again", tp.CheckpointOptions(backend="memory")),
        "restore": lambda: ckpt.restore(ok),
        "close": ckpt.close,
    }[then]
    with pytest.raises(StorageError, match="connection reset"):
        act()
    act()  # the failure was raised; the call works now
    ckpt.sync()


def test_a_failed_manager_save_is_not_recorded_and_the_state_file_keeps_the_previous_one(gate: Gate) -> None:
    v = tp.Variable(1.0)
    manager = tp.CheckpointManager(tp.Checkpoint(v=v), "memory://async/mfail", 2, options=ASYNC)
    gate.open.set()
    first = manager.save()
    manager.sync()
    gate.fail = StorageError("memory: quota exceeded")
    manager.save()
    with pytest.raises(StorageError, match="quota exceeded"):
        manager.sync()
    assert manager.checkpoints == [first] and manager.latest_checkpoint == first
    recorded = state.read_checkpoint_state("memory://async/mfail", READ)
    assert recorded is not None and list(recorded.all_model_checkpoint_paths) == [first]


def test_an_async_save_counts_for_the_interval_once_committed_and_keeps_its_number_if_it_fails(gate: Gate) -> None:
    step = tp.Variable(np.int64(0))
    ckpt = tp.Checkpoint(step=step)
    manager = tp.CheckpointManager(
        ckpt, "memory://async/interval", None, step_counter=step, checkpoint_interval=100, options=ASYNC
    )
    gate.open.set()
    assert manager.save() == "memory://async/interval/ckpt-1"
    manager.sync()
    gate.fail = StorageError("memory: connection reset")
    step.assign(100)
    assert manager.save() == "memory://async/interval/ckpt-2"  # started: its number is taken
    with pytest.raises(StorageError, match="connection reset"):
        manager.sync()
    gate.fail = None
    assert int(ckpt.save_counter.numpy()) == 2
    # The failed save did not count: the next save is due, not skipped until step 200.
    step.assign(101)
    assert manager.save() == "memory://async/interval/ckpt-3"
    step.assign(150)
    assert manager.save() is None  # the save at 101 committed (the check waits for it first)
    manager.sync()
    assert manager.checkpoints == ["memory://async/interval/ckpt-1", "memory://async/interval/ckpt-3"]
    step.assign(201)
    assert manager.save() == "memory://async/interval/ckpt-4"
    manager.sync()


def test_an_async_save_that_fails_before_it_starts_gives_its_number_back(gate: Gate) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    manager = tp.CheckpointManager(ckpt, "memory://async/nostart", 2, options=ASYNC)
    gate.open.set()
    assert manager.save() == "memory://async/nostart/ckpt-1"
    manager.sync()

    class Broken(tp.PythonState):
        def serialize(self) -> str:
            raise RuntimeError("cannot serialize right now")

        def deserialize(self, string_value: str | bytes) -> None:
            pass

    ckpt.broken = Broken()  # fails the snapshot, in save(), before the background write starts
    with pytest.raises(RuntimeError, match="cannot serialize right now"):
        manager.save()
    assert int(ckpt.save_counter.numpy()) == 1
    del ckpt.broken
    assert manager.save() == "memory://async/nostart/ckpt-2"
    manager.sync()


# ---------------------------------------------------------------- one in flight
def test_the_next_save_waits_for_the_one_in_flight_or_is_refused_by_option(gate: Gate) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    ckpt.save("memory://async/busy/ckpt", ASYNC)
    refuse = tp.CheckpointOptions(backend="gated-memory", enable_async=True, async_when_busy="raise")
    with pytest.raises(SaveInProgressError, match="is still being written"):
        ckpt.save("memory://async/busy/ckpt", refuse)
    thread, errors = _in_thread(lambda: ckpt.save("memory://async/busy/ckpt", ASYNC))
    thread.join(0.3)
    assert thread.is_alive(), "a second save started while the first was in flight"
    gate.open.set()
    thread.join(10)
    ckpt.sync()
    assert not errors
    assert tp.latest_checkpoint("memory://async/busy") == "memory://async/busy/ckpt-2"


def test_manager_records_and_applies_retention_after_the_commit(gate: Gate) -> None:
    v = tp.Variable(0.0)
    manager = tp.CheckpointManager(tp.Checkpoint(v=v), "memory://async/mgr", 1, options=ASYNC)
    gate.open.set()
    manager.save()
    manager.sync()
    gate.open.clear()
    started = time.perf_counter()
    path = manager.save()
    assert time.perf_counter() - started < 5
    assert path == "memory://async/mgr/ckpt-2"
    # Not committed yet: neither recorded nor retired the old one.
    assert manager.latest_checkpoint == "memory://async/mgr/ckpt-1"
    assert tp.checkpoint_exists("memory://async/mgr/ckpt-1")
    gate.open.set()
    manager.sync()
    assert manager.checkpoints == [path]
    assert not tp.checkpoint_exists("memory://async/mgr/ckpt-1")
    assert tp.latest_checkpoint("memory://async/mgr") == path


def test_restore_waits_for_the_save_in_flight(gate: Gate) -> None:
    v = tp.Variable(3.0)
    ckpt = tp.Checkpoint(v=v)
    path = ckpt.save("memory://async/restore/ckpt", ASYNC)
    v.assign(4.0)
    threading.Timer(0.2, gate.open.set).start()
    ckpt.restore(path).assert_consumed()
    assert v.numpy() == 3.0


def test_sync_without_a_save_returns() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    ckpt.sync()
    ckpt.save("memory://async/plain/ckpt")
    ckpt.sync()


def test_the_tensorflow_1_savers_refuse_async_saves() -> None:
    saver = tp.Saver({"v": tp.Variable(1.0)})
    with pytest.raises(UnsupportedOptionError, match=r"Saver.save saves synchronously"):
        saver.save(None, "memory://async/saver/model", options=tp.CheckpointOptions(enable_async=True))
    # The object-based ones too: they have no sync(), and an option saying async must not mean "blocks".
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    for save, what in (
        (tp.TrackableSaver(ckpt).save, "TrackableSaver.save"),
        (tp.frozen_saver(ckpt).save, "FrozenSaver.save"),
    ):
        with pytest.raises(UnsupportedOptionError, match=rf"{what} saves synchronously"):
            save("memory://async/saver/objects", options=tp.CheckpointOptions(enable_async=True))
    assert not tp.checkpoint_exists("memory://async/saver/objects")


def test_a_managers_close_names_itself_in_a_background_failures_note(gate: Gate, tmp_path: Path) -> None:
    manager = tp.CheckpointManager(
        tp.Checkpoint(v=tp.Variable(1.0)), "memory://async/close", max_to_keep=2, options=ASYNC
    )
    gate.fail = StorageError("memory: the disk is full")
    manager.save()
    gate.open.set()
    with pytest.raises(StorageError, match="the disk is full") as info:
        manager.close()
    assert any(note.startswith("raised by close()") for note in info.value.__notes__), info.value.__notes__


def test_convert_refuses_an_async_destination_and_ignores_async_fields_of_the_source(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src" / "ckpt"), str(tmp_path / "dst" / "ckpt")
    tp.Checkpoint(v=tp.Variable(np.arange(3.0))).write(src)
    training = tp.CheckpointOptions(enable_async=True, async_memory_bytes=1024)
    with pytest.raises(UnsupportedOptionError, match=r"convert copies synchronously.*drop enable_async"):
        tp.convert(src, dst, dst_options=training)
    assert not tp.checkpoint_exists(dst)
    tp.convert(src, dst, src_options=training)  # the source is only read
    back = tp.Variable(np.zeros(3))
    tp.Checkpoint(v=back).read(dst).assert_consumed()
    np.testing.assert_array_equal(back.numpy(), [0.0, 1.0, 2.0])


def _open_gate_when_a_write_waits(save: Any) -> None:
    deadline = time.monotonic() + 10
    while not save.waits and not GATE.open.is_set() and time.monotonic() < deadline:
        time.sleep(0.001)
    GATE.open.set()


def _assign_loop(directory: Path, options: tp.CheckpointOptions | None, steps: int) -> tuple[int, list[Any]]:
    """Save every step and assign every variable while the save writes; the traced peak and each save."""
    tracemalloc.start()
    try:
        # Created while tracing, so the state itself is in both loops' figures.
        variables = [tp.Variable(np.zeros(32 * 1024)) for _ in range(8)]  # 8 x 256 KiB
        delta = np.ones(32 * 1024)
        ckpt = tp.Checkpoint(vs=variables)
        saves = []
        for _ in range(steps):
            # The write is held until an assignment waits for it (or all are done): the
            # assignments certainly come while it is in flight, and the budget binds.
            if _async.enabled(options):
                ckpt.sync()  # what the save would wait for anyway, before the gate closes again
                GATE.open.clear()
            ckpt.save(str(directory / "ckpt"), options)
            save = ckpt._self_async.last
            if _async.enabled(options) and save is not None:
                threading.Thread(target=_open_gate_when_a_write_waits, args=(save,)).start()
            saves.append(save)
            for v in variables:
                v.assign_add(delta)
            GATE.open.set()
        ckpt.sync()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    back = [tp.Variable(np.zeros(32 * 1024)) for _ in range(8)]
    tp.Checkpoint(vs=back).restore(tp.latest_checkpoint(str(directory))).expect_partial()
    for v in back:
        np.testing.assert_array_equal(v.numpy(), np.full(32 * 1024, steps - 1.0))
    return peak, saves


def test_memory_stays_within_the_budget_when_every_variable_is_assigned_during_every_save(
    gate: Gate, tmp_path: Path
) -> None:
    budget = 600 * 1024  # room for two of the eight 256 KiB buffers
    options = tp.CheckpointOptions(backend="gated-bundle", enable_async=True, async_memory_bytes=budget)
    _assign_loop(tmp_path / "warm-up", options, 2)  # first-use allocations (imports, plugins) out of the way
    sync_peak, _ = _assign_loop(tmp_path / "sync", tp.CheckpointOptions(backend="gated-bundle"), 6)
    async_peak, saves = _assign_loop(tmp_path / "async", options, 6)
    unbounded = tp.CheckpointOptions(backend="gated-bundle", enable_async=True)
    unbounded_peak, unbounded_saves = _assign_loop(tmp_path / "unbounded", unbounded, 6)
    # (A write may wait while the writer is writing that very value, so not all eight need swap.)
    assert max(save.swaps for save in unbounded_saves if save is not None) >= 3
    # The accounting: no save ever held more than its budget, and the budget did bind.
    assert all(save is not None and save.peak <= budget for save in saves)
    # (Two new buffers fit; more once written values released theirs.)
    assert all(save.swaps >= 2 and save.waits >= 1 for save in saves)
    # What tracemalloc saw (numpy reports its buffers to it): the async loop's peak exceeds the
    # synchronous loop's by at most the budget (plus 64 KiB for threads and bookkeeping) ...
    slack = 64 * 1024
    assert async_peak - sync_peak <= budget + slack, (async_peak, sync_peak)
    # ... where the default budget (2 GiB) lets every variable take a new buffer during each save.
    assert unbounded_peak - sync_peak > budget + slack, (unbounded_peak, sync_peak)


def test_the_snapshot_keeps_each_items_slice() -> None:
    # A partitioned value's item names its part of the tensor; pinning or copying it must keep that.
    from trackpoint.storage import TensorSlice, WriteItem

    v = tp.Variable(np.zeros((2, 3)))
    table = np.ones((2, 3))
    part = TensorSlice(full_shape=(4, 3), offset=(2, 0), shape=(2, 3))
    items = [WriteItem("v", v._value, slice=part), WriteItem("table", table, slice=part)]
    written: list[Any] = []
    saver = _async.AsyncSaver()
    saver.begin(None)
    saver.start(items, [v], "the test save", tp.CheckpointOptions(enable_async=True), written.extend)
    saver.sync()
    assert [(it.key, it.slice) for it in written] == [("v", part), ("table", part)]


def test_reading_a_checkpoint_another_object_is_still_saving_says_so(gate: Gate) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.ones(2)))
    path = ckpt.save("memory://async/in-flight/ckpt", ASYNC)
    assert gate.reached.wait(10)
    with pytest.raises(tp.CheckpointNotFoundError, match=r"an async save of it is still being written .* call sync"):
        tp.Checkpoint(w=tp.Variable(np.zeros(2))).read(path, READ)
    gate.open.set()
    ckpt.sync()
    back = tp.Variable(np.zeros(2))
    tp.Checkpoint(w=back).read(path, READ).expect_partial()
    np.testing.assert_array_equal(back.numpy(), [1.0, 1.0])
