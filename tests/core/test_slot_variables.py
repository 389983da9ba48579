"""Optimizer slot variables restored in every creation order, and SGD itself."""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.optimizer import SGD


class Net(tp.AutoTrackable):
    def __init__(self) -> None:
        self.w = tp.Variable(np.array([1.0, 2.0], np.float32), name="w")


def _trained(path: str = "memory://slots/ckpt") -> tuple[str, np.ndarray, np.ndarray]:
    net = Net()
    opt = SGD(0.1, momentum=0.9)
    opt.apply_gradients([(np.array([1.0, 1.0]), net.w)])
    opt.apply_gradients([(np.array([0.5, 0.5]), net.w)])
    momentum = opt.get_slot(net.w, "momentum")
    assert momentum is not None
    saved = tp.Checkpoint(net=net, opt=opt).save(path)
    return saved, net.w.numpy(), momentum.numpy()


def _check(net: Net, opt: SGD, w: np.ndarray, m: np.ndarray) -> None:
    np.testing.assert_allclose(net.w.numpy(), w)
    slot = opt.get_slot(net.w, "momentum")
    assert slot is not None
    np.testing.assert_allclose(slot.numpy(), m)
    assert opt.iterations.numpy() == 2


def test_sgd_update_rule_and_slots() -> None:
    _path, w, m = _trained()
    np.testing.assert_allclose(m, [1.4, 1.4])
    np.testing.assert_allclose(w, [1.0 - 0.1 * 1.0 - 0.1 * 1.4, 2.0 - 0.1 - 0.14], rtol=1e-6)
    assert SGD(0.1).get_slot_names() == []


def test_everything_exists_before_restore() -> None:
    path, w, m = _trained()
    net, opt = Net(), SGD(0.1, momentum=0.9)
    tp.Checkpoint(net=net, opt=opt).restore(path).assert_consumed()
    _check(net, opt, w, m)


def test_variable_created_after_restore() -> None:
    path, w, m = _trained()
    holder, opt = tp.AutoTrackable(), SGD(0.1, momentum=0.9)
    status = tp.Checkpoint(net=holder, opt=opt).restore(path)
    assert opt.get_slot_names() == []
    holder.w = tp.Variable(np.zeros(2, np.float32))
    status.assert_consumed()
    _check(holder, opt, w, m)  # type: ignore[arg-type]


def test_optimizer_created_after_restore() -> None:
    path, w, m = _trained()
    net, late = Net(), tp.AutoTrackable()
    root = tp.AutoTrackable()
    root.net = net
    status = tp.Checkpoint(root=root).restore(path)
    with pytest.raises(tp.MatchError, match="Unresolved objects"):
        status.assert_consumed()
    root.opt = late_opt = SGD(0.1, momentum=0.9)
    status.assert_consumed()
    _check(net, late_opt, w, m)
    del late


def test_slot_created_after_both_is_restored_when_the_optimizer_makes_it() -> None:
    class LazySGD(SGD):
        create_slots_on_restore = False

    path, _w, m = _trained()
    net, opt = Net(), LazySGD(0.1, momentum=0.9)
    status = tp.Checkpoint(net=net, opt=opt).restore(path)
    assert opt.get_slot(net.w, "momentum") is None
    with pytest.raises(tp.MatchError, match=r"\(root\)\.opt's state 'momentum' for \(root\)\.net\.w"):
        status.assert_consumed()
    slot = opt.add_slot(net.w, "momentum")
    np.testing.assert_allclose(slot.numpy(), m)
    status.assert_consumed()


def test_slot_shape_mismatch_raises_before_anything_changes() -> None:
    path, _, _ = _trained()
    net, opt = Net(), SGD(0.1, momentum=0.9)
    opt_ckpt = tp.Checkpoint(net=net, opt=opt)
    net.w = tp.Variable(np.zeros(3, np.float32))
    with pytest.raises(tp.ShapeMismatchError):
        opt_ckpt.restore(path)
    np.testing.assert_array_equal(net.w.numpy(), np.zeros(3))
    assert opt.get_slot_names() == []


def test_apply_gradients_checks_every_gradient_first() -> None:
    a = tp.Variable(np.zeros(2, np.float32), name="a")
    b = tp.Variable(np.zeros(3, np.float32), name="b")
    opt = SGD(1.0)
    with pytest.raises(tp.ShapeMismatchError, match=r"gradient for Variable 'b' has shape \(2,\)"):
        opt.apply_gradients([(np.ones(2), a), (np.ones(2), b)])
    np.testing.assert_array_equal(a.numpy(), [0.0, 0.0])
    with pytest.raises(tp.DTypeMismatchError, match="cannot update Variable 'i'"):
        opt.apply_gradients([(1, tp.Variable(1, name="i"))])
    with pytest.raises(tp.TrackableError, match=r"momentum must be in \[0, 1\)"):
        SGD(0.1, momentum=1.5)


def test_tensorflow_momentum_layout_restores_with_assert_consumed() -> None:
    """TF's MomentumOptimizer node has no children and no state, only slot references."""
    src_net, src_opt = Net(), SGD(0.1, momentum=0.9)
    src_opt.add_slot(src_net.w, "momentum").assign(np.array([0.5, 0.25], np.float32))
    path = tp.Checkpoint(net=src_net, opt=src_opt).write("memory://slots/tf_like")
    graph = tp.object_metadata(path)
    opt_node = graph.nodes[next(c.node_id for c in graph.nodes[0].children if c.local_name == "opt")]
    assert not opt_node.children and not opt_node.attributes and len(opt_node.slot_variables) == 1

    net, opt = Net(), SGD(0.1, momentum=0.9)
    tp.Checkpoint(net=net, opt=opt).read(path).assert_consumed()
    assert opt._lookup_dependency("iter") is None
    np.testing.assert_array_equal(opt.get_slot(net.w, "momentum").numpy(), [0.5, 0.25])  # type: ignore[union-attr]


def test_step_counter_in_checkpoint_is_created_on_restore() -> None:
    path, _, _ = _trained()
    net, opt = Net(), SGD(0.1, momentum=0.9)
    tp.Checkpoint(net=net, opt=opt).restore(path).assert_consumed()
    assert opt._lookup_dependency("iter") is opt.iterations
    assert opt.iterations.numpy() == 2


def test_slot_variable_names_follow_tf1_momentum_rule() -> None:
    net = Net()
    opt = SGD(0.1, momentum=0.9, name="Momentum")
    opt.apply_gradients([(np.ones(2), net.w)])
    assert opt.get_slot(net.w, "momentum").name == "w/Momentum"  # type: ignore[union-attr]
