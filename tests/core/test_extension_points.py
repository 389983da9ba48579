"""TensorFlow's extension points on Trackable are honoured: _checkpoint_dependencies,
_trackable_children, _gather_saveables_for_checkpoint, and _serialize_to_tensors returning Variables."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.trackable import SaveableObject, SaveSpec, TrackableReference


def keys(path: str) -> list[str]:
    return [name for name, _ in tp.list_variables(path) if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]


# ------------------------------------------------------------ dependencies
class Conditional(tp.Trackable):
    """Declares its dependencies only through the _checkpoint_dependencies property."""

    def __init__(self, value: float) -> None:
        self.a = tp.Variable(np.full(2, value))
        self.b = tp.Variable(value)

    @property
    def _checkpoint_dependencies(self) -> list[TrackableReference]:
        return [TrackableReference("a", self.a), TrackableReference("b", self.b)]


def test_checkpoint_dependencies_override_is_saved_and_restored() -> None:
    path = tp.Checkpoint(obj=Conditional(3.0)).save("memory://e/ckpt")
    assert keys(path) == [
        "obj/a/.ATTRIBUTES/VARIABLE_VALUE",
        "obj/b/.ATTRIBUTES/VARIABLE_VALUE",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    fresh = Conditional(0.0)
    tp.Checkpoint(obj=fresh).restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.a.numpy(), [3.0, 3.0])
    assert fresh.b.numpy() == 3.0


def test_trackable_children_override_is_restored() -> None:
    class Children(tp.Trackable):
        def __init__(self, value: float) -> None:
            self.v = tp.Variable(value)

        def _trackable_children(self) -> dict[str, tp.Trackable]:
            return {"v": self.v}

    path = tp.Checkpoint(obj=Children(5.0)).save("memory://e/ckpt")
    fresh = Children(0.0)
    tp.Checkpoint(obj=fresh).restore(path).assert_consumed()
    assert fresh.v.numpy() == 5.0


def test_dependency_that_is_not_trackable_is_an_error() -> None:
    class Broken(tp.Trackable):
        @property
        def _checkpoint_dependencies(self) -> list[Any]:
            return [("w", np.ones(2))]

    with pytest.raises(tp.TrackableError, match=r"Broken\._checkpoint_dependencies returned 'w': ndarray"):
        tp.Checkpoint(obj=Broken()).save("memory://e/ckpt")

    class BrokenChildren(tp.Trackable):
        def _trackable_children(self) -> dict[str, Any]:
            return {"w": 1.0}

    with pytest.raises(tp.TrackableError, match=r"BrokenChildren\._trackable_children\(\) returned 'w': float"):
        tp.Checkpoint(obj=BrokenChildren()).save("memory://e/ckpt")


# --------------------------------------------------------------- saveables
class Table(tp.Trackable):
    """A variable-length key/value table saved TensorFlow-1 style, as two tensors of one saveable."""

    def __init__(self, items: dict[int, float]) -> None:
        self.items = dict(items)
        self.scale = tp.Variable(np.float32(1.0))

    class _Saveable(SaveableObject):
        def __init__(self, table: Table, name: str) -> None:
            keys_ = np.array(sorted(table.items), np.int64)
            values = np.array([table.items[k] for k in keys_], np.float64)
            super().__init__(table, [SaveSpec(keys_, "", name + "-keys"), SaveSpec(values, "", name + "-values")], name)
            self.table = table

        def restore(self, restored_tensors: Sequence[np.ndarray[Any, Any]], restored_shapes: Any) -> None:
            assert restored_shapes is None
            restored_keys, restored_values = restored_tensors
            self.table.items = {int(k): float(v) for k, v in zip(restored_keys, restored_values, strict=True)}

    def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
        return {"table": functools.partial(Table._Saveable, self), "scale": self.scale}


def test_gather_saveables_round_trip() -> None:
    saved = Table({1: 0.5, 7: 2.0, 9: -1.0})
    saved.scale.assign(np.float32(4.0))
    path = tp.Checkpoint(t=saved).save("memory://e/ckpt")
    assert keys(path) == [
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "t/.ATTRIBUTES/scale",
        "t/.ATTRIBUTES/table-keys",
        "t/.ATTRIBUTES/table-values",
    ]
    graph = tp.object_metadata(path)
    node = graph.nodes[graph.nodes[0].children[0].node_id]
    assert [(a.name, a.checkpoint_key) for a in node.attributes] == [
        ("table", "t/.ATTRIBUTES/table"),
        ("scale", "t/.ATTRIBUTES/scale"),
    ]

    fresh = Table({})  # a different number of entries is fine: the saveable decides
    tp.Checkpoint(t=fresh).restore(path).assert_consumed()
    assert fresh.items == {1: 0.5, 7: 2.0, 9: -1.0}
    assert fresh.scale.numpy() == 4.0


def test_gather_saveables_restore_on_create_and_partial_matches() -> None:
    path = tp.Checkpoint(t=Table({2: 3.0})).save("memory://e/ckpt")
    late = Table({})
    root = tp.AutoTrackable()
    status = tp.Checkpoint(root=root).restore(path)
    root.t = late  # restore-on-create through the saveables
    assert late.items == {2: 3.0}
    status.assert_consumed()

    class OnlyScale(Table):
        def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
            return {"scale": self.scale}

    with pytest.raises(tp.MatchError, match="(?s)Unused attributes.*: table$"):
        tp.Checkpoint(t=OnlyScale({})).restore(path).assert_consumed()


def test_gather_saveables_checks_before_writing() -> None:
    path = tp.Checkpoint(t=Table({1: 1.0})).save("memory://e/ckpt")

    class WrongScale(Table):
        def __init__(self) -> None:
            super().__init__({5: 5.0})
            self.scale = tp.Variable(np.zeros(3, np.float32))

    target = WrongScale()
    with pytest.raises(tp.ShapeMismatchError, match=r"t/\.ATTRIBUTES/scale"):
        tp.Checkpoint(t=target).restore(path)
    assert target.items == {5: 5.0}  # the table saveable was not restored either

    class IntValues(Table):
        class _Saveable(Table._Saveable):
            def __init__(self, table: Table, name: str) -> None:
                super().__init__(table, name)
                self.specs[1] = SaveSpec(np.zeros(1, np.int32), "", name + "-values")

        def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
            return {"table": functools.partial(IntValues._Saveable, self), "scale": self.scale}

    with pytest.raises(tp.DTypeMismatchError, match=r"t/\.ATTRIBUTES/table-values.*float64.*int32"):
        tp.Checkpoint(t=IntValues({})).restore(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (lambda name: 3.0, r"\['x'\] gave float; it must be a trackpoint\.Variable, a SaveableObject"),
        (np.ones(2), r"\['x'\] gave ndarray"),
        (
            lambda name: Table._Saveable(Table({}), "elsewhere"),
            r"SaveableObject named 'elsewhere'; its name must contain the checkpoint key 'obj/\.ATTRIBUTES/x'",
        ),
    ],
)
def test_gather_saveables_that_cannot_be_honoured_raise(entry: Any, message: str) -> None:
    class Odd(tp.Trackable):
        def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
            return {"x": entry}

    with pytest.raises(tp.TrackableError, match=message):
        tp.Checkpoint(obj=Odd()).save("memory://e/ckpt")


def test_sliced_saveables_are_refused() -> None:
    class Sliced(tp.Trackable):
        class _Part(SaveableObject):
            def __init__(self, name: str) -> None:
                super().__init__(None, [SaveSpec(np.ones(2), "4 0,2", name)], name)

            def restore(self, restored_tensors: Sequence[np.ndarray[Any, Any]], restored_shapes: Any) -> None:
                raise AssertionError("never restored")

        def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
            return {"part": Sliced._Part}

    with pytest.raises(tp.TrackableError, match="slice_spec '4 0,2'; partitioned"):
        tp.Checkpoint(obj=Sliced()).save("memory://e/ckpt")


def test_serialize_to_tensors_wins_over_gather_saveables() -> None:
    class Both(tp.Trackable):
        def _serialize_to_tensors(self) -> dict[str, Any]:
            return {"new": np.ones(1)}

        def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
            return {"old": tp.Variable(2.0)}

    assert keys(tp.Checkpoint(obj=Both()).write("memory://e/ckpt")) == ["obj/.ATTRIBUTES/new"]


# ------------------------------------------------- _serialize_to_tensors values
def test_serialize_to_tensors_may_return_variables_and_scalars() -> None:
    class Holder(tp.Trackable):
        def __init__(self, value: float) -> None:
            self.v = tp.Variable(np.full(2, value))
            self.count = 0

        def _serialize_to_tensors(self) -> dict[str, Any]:
            return {"v": self.v, "count": self.count, "label": "x"}

        def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
            self.v.assign(tensors["v"])
            self.count = int(tensors["count"])

    saved = Holder(2.0)
    saved.count = 7
    path = tp.Checkpoint(h=saved).save("memory://e/ckpt")
    with tp.load_checkpoint(path) as reader:
        assert reader.get_tensor("h/.ATTRIBUTES/count").dtype == np.int32  # as TensorFlow converts a Python int
        assert reader.get_tensor("h/.ATTRIBUTES/label") == b"x"
    fresh = Holder(0.0)
    tp.Checkpoint(h=fresh).restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), [2.0, 2.0])
    assert fresh.count == 7


def test_two_values_under_one_key_are_refused() -> None:
    class Clash(tp.Trackable):
        def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
            def make(name: str) -> SaveableObject:
                return Table._Saveable(Table({}), name)

            return {"a": make, "a-keys": tp.Variable(np.zeros(1, np.int64))}

    with pytest.raises(
        tp.TrackableError, match=r"both save a value under the checkpoint key 'obj/\.ATTRIBUTES/a-keys'"
    ):
        tp.Checkpoint(obj=Clash()).save("memory://e/ckpt")
