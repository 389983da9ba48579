"""Slot variables of sliced variables hold the same slice of the slot's whole tensor (TensorFlow's slot_creator rule).

Saving the slices of several parts needs several processes (one object path, one slice each):
tests/distributed/test_partitioned.py saves them with N ranks and restores them on M.
"""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.optimizer import SGD, Optimizer

FULL = np.arange(24, dtype=np.float32).reshape(6, 4)
GRAD = (np.arange(24, dtype=np.float32).reshape(6, 4) % 5) - 2.0


def _part(a: int, b: int, value: np.ndarray | None = None) -> tp.Variable:
    info = tp.SaveSliceInfo("table", [6, 4], [a, 0], [b - a, 4])
    return tp.Variable(FULL[a:b].copy() if value is None else value, name="table/part_1", save_slice_info=info)


def test_a_slot_holds_the_slice_its_variable_holds() -> None:
    var = _part(2, 5)
    momentum = SGD(0.1, momentum=0.9, name="Momentum").add_slot(var, "momentum")
    # TensorFlow 1's name for the slot of a partitioned variable: "<full name>/<slot variable's own name>".
    assert momentum.save_slice_info == tp.SaveSliceInfo("table/Momentum", [6, 4], [2, 0], [3, 4])
    assert momentum.shape == (3, 4) and not momentum.numpy().any()
    assert Optimizer("Adam").add_slot(var, "m").save_slice_info == tp.SaveSliceInfo(
        "table/Adam/m", [6, 4], [2, 0], [3, 4]
    )
    assert SGD(0.1, momentum=0.9).add_slot(tp.Variable(FULL), "momentum").save_slice_info is None


def _trained_whole() -> str:
    """A checkpoint of the whole table and its momentum (GRAD after one step), written by one process."""
    net = tp.AutoTrackable()
    net.table = tp.Variable(FULL.copy())
    opt = SGD(0.5, momentum=0.9)
    opt.apply_gradients([(GRAD, net.table)])
    return tp.Checkpoint(net=net, opt=opt).write("memory://slot-slices/whole")


@pytest.mark.parametrize("slot_exists", [False, True], ids=["created-on-restore", "existing"])
def test_a_slot_of_a_sliced_variable_restores_its_slice_of_the_saved_slot(slot_exists: bool) -> None:
    path = _trained_whole()
    net = tp.AutoTrackable()
    net.table = _part(2, 5, np.zeros((3, 4), np.float32))
    opt = SGD(0.5, momentum=0.9)
    if slot_exists:
        opt.add_slot(net.table, "momentum")
    tp.Checkpoint(net=net, opt=opt).read(path).assert_consumed()
    slot = opt.get_slot(net.table, "momentum")
    assert slot is not None and slot.shape == (3, 4)
    assert slot.save_slice_info == tp.SaveSliceInfo("table/SGD", [6, 4], [2, 0], [3, 4])
    np.testing.assert_array_equal(slot.numpy(), GRAD[2:5])
    np.testing.assert_array_equal(net.table.numpy(), (FULL - 0.5 * GRAD)[2:5])
