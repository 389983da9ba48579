"""Checkpoints create no reference cycles: they and the arrays they hold are freed as soon as they are
dropped, not when the cycle collector happens to run (TensorFlow's tests assert no garbage is created)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


@pytest.fixture
def cyclic_garbage() -> Iterator[Callable[[Callable[[], object]], list[str]]]:
    """Run a function with the cycle collector off; return the types of what only the collector could free."""

    def run(fn: Callable[[], object]) -> list[str]:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            fn()
            gc.collect()
            found = sorted({type(o).__name__ for o in gc.garbage})
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
        return found

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield run
    finally:
        if enabled:
            gc.enable()


class Model(tp.AutoTrackable):
    def __init__(self) -> None:
        self.dense = tp.AutoTrackable()
        self.dense.kernel = tp.Variable(np.ones((2, 2)))
        self.blocks = [tp.Variable(np.zeros(3))]


def test_save_write_and_restore_leave_no_cycles(
    tmp_path: Path, cyclic_garbage: Callable[[Callable[[], object]], list[str]]
) -> None:
    model = Model()
    written = tp.Checkpoint(model=model).write(str(tmp_path / "w"))
    assert cyclic_garbage(lambda: tp.Checkpoint(model=model)) == []
    assert cyclic_garbage(lambda: tp.Checkpoint(model=model).save(str(tmp_path / "s"))) == []
    assert cyclic_garbage(lambda: tp.Checkpoint(root=model).write(str(tmp_path / "r"))) == []
    assert cyclic_garbage(lambda: tp.Checkpoint(model=Model()).read(written).assert_consumed()) == []
    assert cyclic_garbage(lambda: tp.Checkpoint(model=Model()).restore(written).expect_partial()) == []
    assert cyclic_garbage(lambda: tp.Checkpoint(model=Model()).restore(str(tmp_path))) == []  # a directory


def test_dropped_checkpoint_frees_its_arrays_at_once(tmp_path: Path) -> None:
    import weakref

    enabled = gc.isenabled()
    gc.disable()
    try:
        model = Model()
        ckpt = tp.Checkpoint(model=model)
        ckpt.save(str(tmp_path / "ckpt"))
        alive = weakref.ref(ckpt)
        kernel = weakref.ref(model.dense.kernel)
        del ckpt, model
        assert alive() is None and kernel() is None
    finally:
        if enabled:
            gc.enable()
