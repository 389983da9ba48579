"""Async saves in a loop: warm buffers for copy-on-write, the writer's own views, the writer's priority.

The saves go through ``gated-bundle`` (tests/gated.py) on a temporary
directory: the bundle backend keeps no reference to the arrays it writes, so
the buffers a save releases can be reused, and the gate holds the writer back
while the test assigns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from gated import Gate, gated_backends
from trackpoint import _async


@pytest.fixture
def gate() -> Iterator[Gate]:
    with gated_backends() as g:
        yield g


def _options(budget: int | None = None) -> tp.CheckpointOptions:
    return tp.CheckpointOptions(backend="gated-bundle", enable_async=True, async_memory_bytes=budget)


def _save_and_assign(gate: Gate, ckpt: tp.Checkpoint, prefix: Path, options: tp.CheckpointOptions, fill: float) -> Any:
    """One save whose writer waits until every variable of ``ckpt`` was assigned ``fill``; its figures."""
    gate.open.clear()
    ckpt.save(str(prefix), options)
    for v in ckpt.vs:
        v.assign(np.full(v.shape, fill))
    gate.open.set()
    ckpt.sync()
    return ckpt._self_async.last


def _restored(path: str, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    back = [tp.Variable(np.zeros(shape)) for shape in shapes]
    tp.Checkpoint(vs=back).read(path).expect_partial()
    return [v.numpy() for v in back]


def _pooled_views_of(ckpt: tp.Checkpoint, array: np.ndarray) -> list[np.ndarray]:
    """The buffers ``ckpt``'s saver keeps for later writes that share memory with ``array``."""
    pool = ckpt._self_async._pool
    return [b for found in pool.buffers.values() for b in found if np.shares_memory(b, array)]


def test_later_saves_write_into_the_buffers_earlier_saves_released(gate: Gate, tmp_path: Path) -> None:
    shapes = [(1000,), (10, 30), (500,)]
    ckpt = tp.Checkpoint(vs=[tp.Variable(np.zeros(shape)) for shape in shapes])
    state = sum(int(np.prod(s)) * 8 for s in shapes)
    first = _save_and_assign(gate, ckpt, tmp_path / "ckpt", _options(), 1.0)
    # Fresh memory for the first save; the old buffers are kept for the next ones.
    assert first.swaps == 3 and first.warm == 0
    assert ckpt._self_async.pooled_bytes == state
    for step in range(2, 5):
        save = _save_and_assign(gate, ckpt, tmp_path / "ckpt", _options(), float(step))
        assert save.swaps == 3 and save.warm == 3, step
        # (And from the second save on, a buffer for save_counter, 8 bytes, never assigned, which the
        # warm-up beside the writer may still be preparing.)
        assert ckpt._self_async.pooled_bytes in (state, state + 8)
    # Each checkpoint holds the values of when its save was called, though buffers went round.
    for n, expected in ((1, 0.0), (2, 1.0), (3, 2.0), (4, 3.0)):
        for value in _restored(str(tmp_path / f"ckpt-{n}"), shapes):
            np.testing.assert_array_equal(value, np.full(value.shape, expected))
    for v in ckpt.vs:
        np.testing.assert_array_equal(v.numpy(), np.full(v.shape, 4.0))
    ckpt.close()
    assert ckpt._self_async.pooled_bytes == 0
    # close() is the way to give the warm buffers back between phases: the checkpoint stays usable.
    again = _save_and_assign(gate, ckpt, tmp_path / "ckpt", _options(), 5.0)
    assert again.swaps == 3 and ckpt._self_async.pooled_bytes >= state
    for value in _restored(str(tmp_path / "ckpt-5"), shapes):
        np.testing.assert_array_equal(value, np.full(value.shape, 4.0))


def test_kept_buffers_count_against_the_budget(gate: Gate, tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(vs=[tp.Variable(np.zeros(1000)) for _ in range(4)])  # 8000 bytes each
    budget = 20000  # two buffers, not three

    def save(options: tp.CheckpointOptions, fill: float) -> Any:
        gate.open.clear()
        ckpt.save(str(tmp_path / "ckpt"), options)
        threading.Timer(0.2, gate.open.set).start()  # the writes beyond the budget wait for the writer
        for v in ckpt.vs:
            v.assign(np.full(1000, fill))
        ckpt.sync()
        return ckpt._self_async.last

    saves = [save(_options(budget), float(n)) for n in range(1, 4)]
    # Two writes get a buffer, the others wait for the writer (and may take the buffer a written value
    # released); kept buffers never exceed the budget.
    assert all(s.swaps >= 2 and s.waits >= 1 and s.peak <= budget for s in saves)
    assert all(s.warm >= 2 for s in saves[1:])
    assert 16000 <= ckpt._self_async.pooled_bytes <= budget
    # A save with a smaller budget keeps no more than it allows.
    save(_options(8000), 9.0)
    assert ckpt._self_async.pooled_bytes <= 8000
    for value in _restored(str(tmp_path / "ckpt-3"), [(1000,)] * 4):
        np.testing.assert_array_equal(value, np.full(1000, 2.0))


def test_a_buffer_someone_still_refers_to_is_never_reused(gate: Gate, tmp_path: Path) -> None:
    v = tp.Variable(np.zeros(100))
    ckpt = tp.Checkpoint(vs=[v])
    gate.open.clear()
    ckpt.save(str(tmp_path / "ckpt"), _options())
    assert v._pin is not None and v._pin.view is not None
    kept = v._pin.view[::2]  # a reference to the old buffer, as a backend that keeps arrays would hold
    v.assign(np.ones(100))
    gate.open.set()
    ckpt.sync()
    assert ckpt._self_async.pooled_bytes == 0
    gate.open.clear()
    ckpt.save(str(tmp_path / "ckpt"), _options())
    # The first save's value swapped, so this save warms up a fresh buffer for each of its values (v's and
    # save_counter's) beside the writer. Waited for, so that the assignment below finds a pooled buffer
    # every time: whether it takes one depends on nothing but what the pool holds, never on which thread
    # ran first. The deadline only bounds a failure.
    warm = 800 + 8
    deadline = time.monotonic() + 60
    while ckpt._self_async.pooled_bytes < warm and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ckpt._self_async.pooled_bytes == warm
    assert not _pooled_views_of(ckpt, kept)
    v.assign(np.full(100, 2.0))
    gate.open.set()
    ckpt.sync()
    second = ckpt._self_async.last
    # The write took a warm buffer: the warm-up's, never the one ``kept`` still refers to.
    assert second is not None and second.swaps == 1 and second.warm == 1
    assert not np.shares_memory(v.numpy(), kept) and not _pooled_views_of(ckpt, kept)
    np.testing.assert_array_equal(kept, np.zeros(50))
    np.testing.assert_array_equal(_restored(str(tmp_path / "ckpt-2"), [(100,)])[0], np.ones(100))


def test_values_a_save_did_not_swap_get_warm_buffers_for_the_next(gate: Gate, tmp_path: Path) -> None:
    a, b = tp.Variable(np.zeros(1000)), tp.Variable(np.zeros(700))
    ckpt = tp.Checkpoint(vs=[a, b])
    gate.open.clear()
    ckpt.save(str(tmp_path / "ckpt"), _options())
    a.assign(np.ones(1000))  # only a swaps: the program assigns during writes
    gate.open.set()
    ckpt.sync()
    assert ckpt._self_async.pooled_bytes == 8000
    gate.open.clear()
    ckpt.save(str(tmp_path / "ckpt"), _options())
    # The second save warms up a buffer for b (its value had none) while it writes.
    deadline = time.monotonic() + 10
    warm = 8000 + 5600 + 8  # a, b and save_counter
    while ckpt._self_async.pooled_bytes < warm and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ckpt._self_async.pooled_bytes == warm
    a.assign(np.full(1000, 2.0))
    b.assign(np.full(700, 2.0))
    gate.open.set()
    ckpt.sync()
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 2 and save.warm == 2
    np.testing.assert_array_equal(_restored(str(tmp_path / "ckpt-2"), [(1000,), (700,)])[1], np.zeros(700))


def test_views_the_writer_takes_of_a_value_do_not_make_its_assignment_wait(gate: Gate, tmp_path: Path) -> None:
    v = tp.Variable(np.arange(6.0))
    ckpt = tp.Checkpoint(vs=[v])
    gate.open.clear()
    ckpt.save(str(tmp_path / "ckpt"), _options())
    assert v._pin is not None and v._pin.view is not None
    # What a backend does while it writes the value: byte views, reshapes.
    writing = [v._pin.view.view(np.uint8), v._pin.view.reshape(2, 3)]
    v.assign(np.full(6, 7.0))  # swaps at once: the writer's views are no view of the program's
    save = ckpt._self_async.last
    assert save is not None and save.swaps == 1 and save.waits == 0
    np.testing.assert_array_equal(writing[1], np.arange(6.0).reshape(2, 3))
    gate.open.set()
    ckpt.sync()
    np.testing.assert_array_equal(_restored(str(tmp_path / "ckpt-1"), [(6,)])[0], np.arange(6.0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
@pytest.mark.parametrize("setting", [None, "0", "3"])
def test_the_writer_runs_at_the_programs_priority_unless_told_otherwise(tmp_path: Path, setting: str | None) -> None:
    # In a fresh process: the writer's priority is set relative to the main thread's.
    script = """
import os, sys, threading
import numpy as np
import trackpoint as tp
from trackpoint import _async

seen = []
options = tp.CheckpointOptions(
    enable_async=True,
    experimental_write_callbacks=[lambda path: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))],
)
ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(3)))
for _ in range(2):
    ckpt.save(sys.argv[1], options)
    ckpt.sync()
print(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), _async.writer_niceness(), *seen)
"""
    env = {k: v for k, v in os.environ.items() if k != _async.NICENESS_ENV}
    if setting is not None:
        env[_async.NICENESS_ENV] = setting
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ckpt")], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    mine, niceness, *seen = map(int, done.stdout.split())
    # The default is the program's own priority: a nicer writer lost the CPUs to other processes.
    assert niceness == {None: 0, "0": 0, "3": 3}[setting]
    assert seen == [min(19, mine + niceness)] * 2


@pytest.mark.parametrize("setting", ["-1", "20", "low"])
def test_a_bad_niceness_setting_fails_the_save_before_anything_is_pinned(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str
) -> None:
    monkeypatch.setenv(_async.NICENESS_ENV, setting)
    v = tp.Variable(np.zeros(3))
    ckpt = tp.Checkpoint(v=v)
    with pytest.raises(ValueError, match=r"TRACKPOINT_ASYNC_NICENESS=.*expected an integer from 0"):
        ckpt.write(str(tmp_path / "ckpt"), tp.CheckpointOptions(enable_async=True))
    assert v._pin is None and not tp.checkpoint_exists(str(tmp_path / "ckpt"))
    # Before the save started: no save_counter moved (and no save_started event without its end).
    with pytest.raises(ValueError, match=r"TRACKPOINT_ASYNC_NICENESS="):
        ckpt.save(str(tmp_path / "numbered"), tp.CheckpointOptions(enable_async=True))
    assert int(ckpt.save_counter.numpy()) == 0
