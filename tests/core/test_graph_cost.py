"""What saves and restores of large graphs cost, counted in work done rather than timed.

Timing belongs in ``benchmarks/``; these tests pin the properties the benchmarks' figures rest on:
each object's children are listed once per save, a restore and its assertions list them a bounded
number of times, and the cyclic garbage collector leaves the model's objects alone meanwhile.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

import trackpoint as tp
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
    """Records how many objects the collector had frozen when its value was saved and restored."""

    seen: ClassVar[list[int]] = []

    def _serialize_to_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        Probe.seen.append(gc.get_freeze_count())
        return super()._serialize_to_tensors()

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        Probe.seen.append(gc.get_freeze_count())
        return super()._restore_buffer(attribute)


def test_existing_objects_are_frozen_for_the_collector_during_save_and_restore() -> None:
    Probe.seen = []
    assert gc.get_freeze_count() == 0
    ckpt = tp.Checkpoint(v=Probe([1.0, 2.0]))
    path = ckpt.write("memory://cost/frozen")
    ckpt.read(path).assert_consumed()
    assert len(Probe.seen) == 2 and all(n > 0 for n in Probe.seen)
    assert gc.get_freeze_count() == 0  # all unfrozen again


def test_a_program_that_froze_objects_itself_keeps_them_frozen() -> None:
    Probe.seen = []
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        ckpt = tp.Checkpoint(v=Probe([1.0, 2.0]))
        ckpt.read(ckpt.write("memory://cost/user-frozen")).assert_consumed()
        # trackpoint neither froze more objects nor unfroze the program's.
        assert Probe.seen == [before, before]
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()
