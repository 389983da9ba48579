"""A torch tensor held directly, pointed at other memory by the program (``t.data = other``, ``t.set_(other)``).

torch code does this to tie weights or replace a parameter's values (``module.weight.data = ...``), keeping the
tensor object. A save then saves what the tensor holds now, and a restore writes into its memory now, not the
memory it had when the checkpoint first met it.
"""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def _saved(path: str, *keys: str) -> np.ndarray:
    tree = tp.load_tree(path)
    for key in keys:
        tree = tree[key]
    return np.asarray(tree)


def test_a_save_after_data_assignment_saves_the_new_values() -> None:
    t = torch.zeros(3)
    ckpt = tp.Checkpoint(tensors={"t": t})
    ckpt.write("memory://repointed/first")  # the checkpoint has met the tensor's memory
    t.data = torch.full((3,), 5.0)
    path = ckpt.write("memory://repointed/second")
    np.testing.assert_array_equal(_saved(path, "tensors", "t"), [5.0, 5.0, 5.0])


def test_a_save_after_set_saves_the_new_values_and_shape() -> None:
    t = torch.zeros(3)
    holder = tp.AutoTrackable()
    holder.t = t
    ckpt = tp.Checkpoint(holder=holder)
    ckpt.write("memory://repointed/first")
    t.set_(torch.arange(4.0))
    path = ckpt.write("memory://repointed/second")
    np.testing.assert_array_equal(_saved(path, "holder", "t"), [0.0, 1.0, 2.0, 3.0])
    # The same memory from the same place with another layout is a new layout too.
    t.data = t.data[:2]
    path = ckpt.write("memory://repointed/third")
    np.testing.assert_array_equal(_saved(path, "holder", "t"), [0.0, 1.0])


def test_a_restore_after_data_assignment_writes_into_the_new_memory() -> None:
    t = torch.zeros(3)
    ckpt = tp.Checkpoint(tensors={"t": t})
    saved = torch.tensor([1.0, 2.0, 3.0])
    path = tp.Checkpoint(tensors={"t": saved}).write("memory://repointed/saved")
    ckpt.write("memory://repointed/first")
    old = t.data
    new = torch.zeros(3)
    t.data = new
    ckpt.read(path).assert_consumed()
    assert torch.equal(t, saved) and t.data_ptr() == new.data_ptr()
    assert torch.equal(old, torch.zeros(3))  # the memory the tensor no longer has is left alone


def test_a_restore_after_set_into_a_tensor_of_another_shape_is_checked_against_the_new_shape() -> None:
    t = torch.zeros(3)
    ckpt = tp.Checkpoint(tensors={"t": t})
    path = tp.Checkpoint(tensors={"t": torch.ones(2)}).write("memory://repointed/saved")
    ckpt.write("memory://repointed/first")
    t.set_(torch.zeros(2))
    ckpt.read(path).assert_consumed()
    assert torch.equal(t, torch.ones(2))


def test_a_module_weight_replaced_through_data_is_saved_and_restored() -> None:
    net = torch.nn.Linear(2, 2)
    ckpt = tp.Checkpoint(weights={"w": net.weight})
    ckpt.write("memory://repointed/first")
    net.weight.data = torch.full((2, 2), 4.0)
    path = ckpt.write("memory://repointed/second")
    np.testing.assert_array_equal(_saved(path, "weights", "w"), np.full((2, 2), 4.0))
    with torch.no_grad():
        net.weight.zero_()
    ckpt.read(path).assert_consumed()
    assert torch.equal(net.weight.detach(), torch.full((2, 2), 4.0))


def test_a_weight_tied_through_data_holds_the_tied_values() -> None:
    a, b = torch.ones(3), torch.zeros(3)
    ckpt = tp.Checkpoint(tensors={"a": a, "b": b})
    ckpt.write("memory://repointed/first")
    b.data = a.data  # tied: one memory
    path = ckpt.write("memory://repointed/second")
    np.testing.assert_array_equal(_saved(path, "tensors", "b"), [1.0, 1.0, 1.0])
    path = ckpt.write("memory://repointed/third")
    tree = tp.load_tree(path)["tensors"]
    np.testing.assert_array_equal(tree["a"], tree["b"])
    with torch.no_grad():
        a.zero_()
    ckpt.read(path).assert_consumed()
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.ones(3))


def test_a_tensor_held_unchanged_keeps_its_view() -> None:
    t = torch.zeros(3)
    ckpt = tp.Checkpoint(tensors={"t": t})
    ckpt.write("memory://repointed/first")
    node = ckpt.tensors._self_nodes["t"]
    view = node._value
    t.add_(1.0)  # in place: the same memory
    path = ckpt.write("memory://repointed/second")
    assert node._value is view
    np.testing.assert_array_equal(_saved(path, "tensors", "t"), [1.0, 1.0, 1.0])
