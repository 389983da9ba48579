"""What saves and restores of large graphs cost, counted in work done rather than timed.

Timing belongs in ``benchmarks/``; these tests pin the properties the benchmarks' figures rest on:
each object's children are listed once per save, a restore and its assertions list them a bounded
number of times, the cyclic garbage collector is paused meanwhile, and full collections wait until a
synchronous save or restore ends.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import _gc
from trackpoint.trackable import Trackable

calls: Counter[int] = Counter()


class Counted(tp.AutoTrackable):
    """Counts how often its children are listed (the per-object step of every graph walk)."""

    def _trackable_children(self) -> dict[str, Trackable]:
        calls[id(self)] += 1
        return super()._trackable_children()


@pytest.fixture
def model() -> Iterator[tuple[Counted, list[Counted]]]:
    root = Counted()
    layers = []
    for i in range(20):
        layer = Counted()
        layer.kernel = tp.Variable(np.full((2, 3), i, np.float32))
        layer.bias = tp.Variable(np.zeros(3, np.float32))
        setattr(root, f"layer{i}", layer)
        layers.append(layer)
    calls.clear()
    yield root, layers
    calls.clear()


def test_a_save_lists_each_objects_children_once(model: tuple[Counted, list[Counted]]) -> None:
    root, layers = model
    tp.Checkpoint(model=root).write("memory://cost/save")
    assert {calls[id(o)] for o in [root, *layers]} == {1}


def test_a_restore_and_its_assertions_list_each_objects_children_twice(model: tuple[Counted, list[Counted]]) -> None:
    root, layers = model
    ckpt = tp.Checkpoint(model=root)
    path = ckpt.write("memory://cost/restore")
    calls.clear()
    # Once to match the saved graph, once for assert_consumed's check that no new object is unmatched.
    ckpt.read(path).assert_consumed()
    assert {calls[id(o)] for o in [root, *layers]} == {2}
    assert layers[3].kernel.numpy().tolist() == [[3.0] * 3] * 2


class Probe(tp.Variable):
    """Records whether the cyclic collector was enabled when its value was saved and restored."""

    seen: ClassVar[list[bool]] = []

    def _serialize_to_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        Probe.seen.append(gc.isenabled())
        return super()._serialize_to_tensors()

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        Probe.seen.append(gc.isenabled())
        return super()._restore_buffer(attribute)


def test_the_collector_is_paused_while_the_graph_is_built_and_restored() -> None:
    Probe.seen = []
    assert gc.isenabled()
    ckpt = tp.Checkpoint(v=Probe([1.0, 2.0]))
    ckpt.read(ckpt.write("memory://cost/paused")).assert_consumed()
    assert Probe.seen == [False, False]
    assert gc.isenabled()


def test_a_collector_disabled_by_the_program_stays_disabled() -> None:
    gc.disable()
    try:
        ckpt = tp.Checkpoint(v=tp.Variable([1.0, 2.0]))
        ckpt.read(ckpt.write("memory://cost/disabled")).assert_consumed()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_variable_without_dependencies_holds_no_bookkeeping_containers() -> None:
    # A model of 10^5 variables: the cyclic collector scans every container they hold, on every full
    # collection. A variable is itself and its attribute dict, whatever a save or restore did with it.
    gc.collect()
    before = len(gc.get_objects())
    root = tp.AutoTrackable()
    root.vs = [tp.Variable(np.float32(i)) for i in range(1000)]
    ckpt = tp.Checkpoint(model=root)
    ckpt.read(ckpt.write("memory://cost/containers")).assert_consumed()
    del ckpt
    gc.collect()
    assert len(gc.get_objects()) - before < 2200
    assert root.vs[7].numpy() == 7.0


def _model(n: int) -> tp.AutoTrackable:
    root = tp.AutoTrackable()
    for i in range(n):
        layer = tp.AutoTrackable()
        layer.w = tp.Variable(np.full(3, i, np.float32))
        setattr(root, f"layer{i}", layer)
    return root


def test_no_full_collection_runs_during_a_save_or_a_restore(tmp_path: Any, eager_full_collections: list[int]) -> None:
    # A full collection scans the whole model; growing by a quarter since the last one is enough to start
    # another, so a save or restore of many variables paid for several. Young ones still run.
    root = _model(1500)
    ckpt = tp.Checkpoint(model=root)
    threshold = gc.get_threshold()
    eager_full_collections.clear()
    path = ckpt.write(str(tmp_path / "ckpt"))
    assert 2 not in eager_full_collections
    status = ckpt.read(path)
    assert 2 not in eager_full_collections
    status.assert_consumed()
    assert 0 in eager_full_collections  # the young generations were collected as usual
    assert gc.get_threshold() == threshold
    assert root.layer7.w.numpy().tolist() == [7.0] * 3


def test_deferred_full_collections_nest_and_leave_the_programs_own_thresholds() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(500, 8, 9)
        with _gc.full_collections_deferred():
            with _gc.full_collections_deferred():
                assert gc.get_threshold()[:2] == (500, 8)
                assert gc.get_threshold()[2] > 10**6
            assert gc.get_threshold()[2] > 10**6  # the outer block still defers
        assert gc.get_threshold() == (500, 8, 9)
        with pytest.raises(RuntimeError, match="boom"), _gc.full_collections_deferred():
            raise RuntimeError("boom")
        assert gc.get_threshold() == (500, 8, 9)
        with _gc.full_collections_deferred():
            gc.set_threshold(600, 5, 7)  # the program's choice while a save runs stands
        assert gc.get_threshold() == (600, 5, 7)
    finally:
        gc.set_threshold(*saved)


def test_full_collections_are_deferred_in_the_callers_thread_only(tmp_path: Any) -> None:
    # The background writer of a program that saves all the time would otherwise hold them off for good.
    seen: list[tuple[int, int, int]] = []
    saved = gc.get_threshold()

    def record() -> None:
        seen.append(gc.get_threshold())

    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    ckpt.write(str(tmp_path / "sync"), options=tp.CheckpointOptions(experimental_write_callbacks=[record]))
    async_options = tp.CheckpointOptions(enable_async=True, experimental_write_callbacks=[record])
    ckpt.write(str(tmp_path / "async"), options=async_options)
    ckpt.sync()
    assert seen[0][:2] == saved[:2] and seen[0][2] > 10**6  # the synchronous save, in the caller's thread
    assert seen[1] == saved  # the async save's writer thread
    assert gc.get_threshold() == saved
