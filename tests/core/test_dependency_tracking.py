"""Turning dependency tracking off (``no_automatic_dependency_tracking``, its scopes, ``_no_dependency``),
save-only state (``NoRestoreSaveable``) and TensorFlow's rule choosing between two extension points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.trackable import NoRestoreSaveable, SaveableObject, SaveSpec


class Model(tp.AutoTrackable):
    def __init__(self) -> None:
        self.kept = tp.Variable(1.0)
        self.build()

    @tp.no_automatic_dependency_tracking
    def build(self) -> None:
        self.cache = [tp.Variable(2.0)]
        self.helper = tp.Variable(3.0)


def test_decorated_method_tracks_nothing() -> None:
    model = Model()
    assert type(model.cache) is list  # not wrapped
    assert tp.list_objects(model) == [model, model.kept]
    model.later = tp.Variable(4.0)  # tracking is back on after the method
    assert model.later in tp.list_objects(model)
    names = [n for n, _ in tp.list_variables(tp.Checkpoint(m=model).write("memory://tracking/a"))]
    assert "m/helper/.ATTRIBUTES/VARIABLE_VALUE" not in names
    assert "m/kept/.ATTRIBUTES/VARIABLE_VALUE" in names


def test_decorator_restores_the_switch_after_an_error() -> None:
    class Failing(tp.AutoTrackable):
        @tp.no_automatic_dependency_tracking
        def build(self) -> None:
            raise RuntimeError("boom")

    obj = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        obj.build()
    assert obj._setattr_tracking
    obj.v = tp.Variable(1.0)
    assert obj.v in tp.list_objects(obj)


def test_automatic_tracking_scope_leaves_dependencies_as_they_were() -> None:
    model = tp.AutoTrackable()
    model.layer = tp.Variable(1.0)
    first = model.layer
    with tp.no_automatic_dependency_tracking_scope(model):
        model.scratch = tp.Variable(5.0)
        model.layer = tp.Variable(9.0)  # the attribute changes, the saved dependency does not
        assert not model._setattr_tracking
    assert model._setattr_tracking
    assert tp.list_objects(model) == [model, first]


def test_manual_tracking_scope() -> None:
    obj = tp.AutoTrackable()
    with tp.no_manual_dependency_tracking_scope(obj):
        untracked = obj.add_variable("hidden", shape=(2,))
        returned = obj._track_trackable(tp.Variable(1.0), "other")
    assert isinstance(untracked, tp.Variable) and isinstance(returned, tp.Variable)
    assert tp.list_objects(obj) == [obj]
    assert obj._manual_tracking
    obj._track_trackable(returned, "other")
    assert tp.list_objects(obj) == [obj, returned]


def test_no_dependency_hook() -> None:
    obj = tp.AutoTrackable()
    obj.layers = obj._no_dependency([tp.Variable(1.0)])
    assert type(obj.layers) is list
    assert tp.list_objects(obj) == [obj]
    plain = tp.Trackable()
    value = [1]
    assert plain._no_dependency(value) is value  # TensorFlow's base class: the value itself


def test_track_trackable_of_a_non_trackable_is_a_type_error() -> None:
    message = r"only Trackable objects can be tracked, got object.*can only be used to track objects of type"
    with pytest.raises(tp.NotTrackableError, match=message) as info:
        tp.AutoTrackable()._track_trackable(object(), "x")  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


class Described(tp.Trackable):
    """Saves a description for other tools; never restores it."""

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.weight = tp.Variable(np.arange(2.0))

    def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
        def description(name: str) -> SaveableObject:
            value = np.empty((), dtype=object)
            value[()] = self.text
            return NoRestoreSaveable(value, name)

        return {"description": description, "weight": self.weight}


def test_save_only_state() -> None:
    path = tp.Checkpoint(d=Described(b"v1 model")).write("memory://tracking/described")
    assert tp.load_variable(path, "d/.ATTRIBUTES/description") == b"v1 model"
    target = Described(b"other")
    target.weight.assign(np.zeros(2))
    tp.Checkpoint(d=target).read(path).assert_consumed()  # matched, nothing left over
    assert target.text == b"other"  # never restored
    np.testing.assert_array_equal(target.weight.numpy(), [0.0, 1.0])


class _DoubleSaveable(SaveableObject):
    def __init__(self, var: tp.Variable, name: str) -> None:
        self.var = var
        super().__init__(var, [SaveSpec(lambda: var.numpy() * 2, "", name, dtype=var.dtype)], name)

    def restore(self, restored_tensors: Any, restored_shapes: Any) -> None:
        self.var.assign(restored_tensors[0] / 2)


class Doubled(tp.Variable):
    """A Variable subclass that saves through saveables: TensorFlow's nearest-class rule picks them."""

    def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
        return {"doubled": lambda name: _DoubleSaveable(self, name)}


def test_saveables_override_on_a_variable_subclass_is_honoured() -> None:
    # Never silently ignored: saved through the override, under its attribute name.
    path = tp.Checkpoint(v=Doubled(np.array([1.0, 2.0]))).write("memory://tracking/doubled")
    names = [n for n, _ in tp.list_variables(path)]
    assert "v/.ATTRIBUTES/doubled" in names and "v/.ATTRIBUTES/VARIABLE_VALUE" not in names
    np.testing.assert_array_equal(tp.load_variable(path, "v/.ATTRIBUTES/doubled"), [2.0, 4.0])
    target = Doubled(np.zeros(2))
    tp.Checkpoint(v=target).read(path).assert_consumed()
    np.testing.assert_array_equal(target.numpy(), [1.0, 2.0])
