"""Lists, dicts and tuples on trackables: TensorFlow's wrapper semantics and the refusals that prevent data loss."""

from __future__ import annotations

import collections
import copy
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.data_structures import ListWrapper, _DictWrapper

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def keys(path: str) -> list[str]:
    return [name for name, _ in tp.list_variables(path) if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]


# ------------------------------------------------------------------- lists: one list, two names
def test_assigned_list_is_wrapped_not_copied() -> None:
    model = tp.AutoTrackable()
    layers: list[Any] = []
    model.layers = layers
    model.layers.append(tp.Variable(1.0))
    assert len(layers) == 1 and layers[0] is model.layers[0]  # the wrapper edits the caller's list
    inner: list[Any] = [tp.Variable(2.0)]
    model.layers.append(inner)
    assert isinstance(layers[1], ListWrapper)  # nested lists are wrapped in place, as in TensorFlow
    path = tp.Checkpoint(model=model).write("memory://ds/shared")
    assert keys(path) == ["model/layers/0" + VALUE, "model/layers/1/0" + VALUE]


def test_edits_to_the_original_list_make_the_save_refuse_instead_of_dropping_them() -> None:
    model = tp.AutoTrackable()
    layers = [tp.Variable(1.0)]
    model.layers = layers
    layers.append(tp.Variable(2.0))  # not through the wrapper: it was never tracked
    assert model.layers[1] is layers[1]  # the wrapper sees it...
    with pytest.raises(tp.TrackableError, match=r"modified outside the wrapper .*its final value was") as info:
        tp.Checkpoint(model=model).write("memory://ds/external")
    assert isinstance(info.value, ValueError)
    # Assigning the list again tracks what it holds now.
    model.layers = list(layers)
    assert keys(tp.Checkpoint(model=model).write("memory://ds/again")) == [
        "model/layers/0" + VALUE,
        "model/layers/1" + VALUE,
    ]


def test_appending_keeps_saving_and_restoring_by_position() -> None:
    model = tp.AutoTrackable()
    model.vs = [tp.Variable(1.0)]
    model.vs.extend([tp.Variable(2.0)])
    model.vs += [tp.Variable(3.0)]
    model.vs.insert(len(model.vs), tp.Variable(4.0))  # at the end: nothing moves, it is an append
    path = tp.Checkpoint(model=model).write("memory://ds/append")
    fresh = tp.AutoTrackable()
    fresh.vs = []
    status = tp.Checkpoint(model=fresh).read(path)
    for _ in range(4):
        fresh.vs.append(tp.Variable(0.0))
    status.assert_consumed()
    assert [v.numpy() for v in fresh.vs] == [1.0, 2.0, 3.0, 4.0]


RENUMBERING: list[tuple[str, Callable[[list[Any]], object]]] = [
    ("__delitem__", lambda lst: lst.__delitem__(0)),
    ("__delslice__", lambda lst: lst.__delitem__(slice(0, 1))),
    ("insert", lambda lst: lst.insert(0, 5)),
    ("slice assignment", lambda lst: lst.__setitem__(slice(0, 1), [7])),
    ("sort", lambda lst: lst.sort(key=id)),
    ("pop", lambda lst: lst.pop()),
    ("remove", lambda lst: lst.remove(lst[0])),
    ("reverse", lambda lst: lst.reverse()),
    ("clear", lambda lst: lst.clear()),
    ("\\*= 0", lambda lst: lst.__imul__(0)),
]


@pytest.mark.parametrize(("operation", "edit"), RENUMBERING, ids=[name for name, _ in RENUMBERING])
def test_renumbering_a_list_with_saved_elements_refuses_to_save(
    operation: str, edit: Callable[[list[Any]], object]
) -> None:
    model = tp.AutoTrackable()
    model.items = [tp.Variable(1.0), np.zeros(2)]
    edit(model.items)
    with pytest.raises(tp.TrackableError, match=rf"A list element was replaced .*\(here: {operation}\)"):
        tp.Checkpoint(model=model).write("memory://ds/renumbered")
    # A list of plain values has nothing to renumber: the same edit is fine.
    plain = tp.AutoTrackable()
    plain.items = [3, 1, 2]
    edit(plain.items)
    assert plain.items._trackable_children() == {}


def test_replacing_one_element_by_index_keeps_saving_under_its_position() -> None:
    model = tp.AutoTrackable()
    model.items = [tp.Variable(1.0), np.zeros(2), 3]
    model.items[1] = np.ones(2)
    model.items[2] = 4
    model.items[0] = tp.Variable(2.0)  # TensorFlow refuses this save; no other element moved (documented)
    path = tp.Checkpoint(model=model).write("memory://ds/replaced")
    assert keys(path) == ["model/items/0" + VALUE, "model/items/1" + VALUE]
    fresh = tp.AutoTrackable()
    fresh.items = [tp.Variable(0.0), np.zeros(2), 4]
    tp.Checkpoint(model=fresh).read(path).assert_consumed()
    assert fresh.items[0].numpy() == 2.0 and fresh.items[1].tolist() == [1.0, 1.0]


def test_a_renumbered_list_refuses_restores_too() -> None:
    path = tp.Checkpoint(items=[tp.Variable(1.0), tp.Variable(2.0)]).write("memory://ds/renumber-restore")
    first, second = tp.Variable(0.0), tp.Variable(0.0)
    target = tp.Checkpoint(items=[first, second])
    del target.items[0]  # "0" in the checkpoint is no longer the first element
    with pytest.raises(tp.TrackableError, match="here: __delitem__"):
        target.read(path)
    assert second.numpy() == 0.0


def test_sort_refuses_even_when_nothing_moves() -> None:
    model = tp.AutoTrackable()
    model.items = [[1], [2]]  # nested wrappers are trackable
    model.items.sort()
    assert model.items == [[1], [2]]
    with pytest.raises(tp.TrackableError, match=r"Unable to save .*sort"):
        model.items._trackable_children()


def test_slice_assignment_on_plain_values_tracks_the_new_saved_ones() -> None:
    wrapper = ListWrapper([1, 2, 3, 4])
    wrapper[:] = 2, 8, 9, 0
    assert wrapper == [2, 8, 9, 0] and wrapper._trackable_children() == {}
    wrapper[2:] = [tp.Variable(1.0)]
    assert wrapper[:2] == [2, 8] and list(wrapper._trackable_children()) == ["2"]
    wrapper[:] = []
    assert wrapper == []


def test_positive_imul_appends() -> None:
    v = tp.Variable(1.0)
    wrapper = ListWrapper([1, v])
    wrapper *= 2
    assert wrapper == [1, v, 1, v]
    assert wrapper._trackable_children() == {"1": v, "3": v}


def test_no_dependency_elements_are_not_saved() -> None:
    model = tp.AutoTrackable()
    hidden = tp.Variable(9.0)
    model.items = [tp.Variable(1.0), tp.NoDependency(hidden)]
    assert model.items[1] is hidden
    assert list(model.items._trackable_children()) == ["0"]
    model.items.append(tp.NoDependency(np.ones(2)))
    assert list(model.items._trackable_children()) == ["0"]


def test_list_wrapper_behaves_as_a_list() -> None:
    a, b = tp.AutoTrackable(), tp.AutoTrackable()
    wrapper = ListWrapper([a])
    assert isinstance(wrapper, list)
    assert wrapper + [b] == [a, b] and [b] + wrapper == [b, a]  # noqa: RUF005 -- the operators under test
    assert ListWrapper([1.0]) + ListWrapper([2.0]) == [1.0, 2.0]
    assert wrapper * 2 == [a, a] and 2 * wrapper == [a, a]
    assert ListWrapper([1]) < ListWrapper([1, 2]) and [1, 2] > ListWrapper([1])
    assert ListWrapper([1]) <= [1] and ListWrapper([2]) >= [1] and ListWrapper([1]) != [2]
    assert json.dumps(ListWrapper([1, [2, 3]])) == "[1, [2, 3]]"
    assert np.asarray(ListWrapper([1, 2])).tolist() == [1, 2]
    assert pickle.loads(pickle.dumps(ListWrapper([1, 2]))) == [1, 2]
    assert sorted(ListWrapper([3, 1])) == [1, 3] and list(reversed(ListWrapper([1, 2]))) == [2, 1]
    assert ListWrapper([1, 2, 2]).count(2) == 2 and ListWrapper([1, 2]).index(2) == 1 and 2 in ListWrapper([2])
    with pytest.raises(TypeError, match="unhashable type: 'ListWrapper'"):
        hash(ListWrapper([]))
    plain = ListWrapper([1])
    plain.sort()
    assert plain == [1]


def test_list_wrapper_overrides_every_list_method() -> None:
    # Its own list part is only a mirror: every list method must work on the wrapped list.
    missing = [
        name
        for name in dir(list)
        if name not in ("__new__", "__init__", "__subclasshook__", "__getattribute__", "__init_subclass__")
        and callable(getattr(list, name))
        and getattr(object, name, None) != getattr(list, name)
        and getattr(list, name) == getattr(ListWrapper, name)
    ]
    assert missing == []


def test_copies_share_or_copy_elements_and_inherit_refusals() -> None:
    root = tp.AutoTrackable()
    original = [[1.0]]
    root.a = original
    shallow = copy.copy(root.a)
    assert shallow == [[1.0]] and shallow is not root.a and shallow[0] is root.a[0]
    deep = copy.deepcopy(root.a)
    assert deep == [[1.0]] and deep[0] is not root.a[0]
    assert root.a.copy() == [[1.0]]
    original.append(1.0)  # outside the wrapper
    for wrapper in (root.a, copy.copy(root.a), copy.deepcopy(root.a)):
        with pytest.raises(tp.TrackableError, match="modified outside the wrapper"):
            wrapper._trackable_children()


def test_checkpoint_list_refusal_leaves_the_callers_list_alone() -> None:
    nested: list[Any] = [np.ones(1)]
    given: list[Any] = [nested, "relu"]
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.layers\[1\] is 'relu'"):
        tp.Checkpoint(layers=given)
    assert type(given[0]) is list  # nothing was wrapped in place


# -------------------------------------------------------------------------------------- dicts
def test_assigned_dict_is_wrapped_not_copied() -> None:
    model = tp.AutoTrackable()
    table: dict[str, Any] = {"a": tp.Variable(1.0)}
    model.table = table
    model.table["b"] = np.ones(2)
    assert table["b"] is model.table["b"]
    del model.table["a"]  # keys name the values: deleting is fine
    assert keys(tp.Checkpoint(model=model).write("memory://ds/dict")) == ["model/table/b" + VALUE]
    table["c"] = tp.Variable(3.0)  # outside the wrapper
    with pytest.raises(tp.TrackableError, match=r"The wrapped dictionary was modified outside the wrapper"):
        tp.Checkpoint(model=model).write("memory://ds/dict-external")


def test_a_number_updated_in_the_dict_the_program_holds_is_saved_and_restored(tmp_path: Path) -> None:
    # `state["epoch"] += 1` on the program's own dict: no new object a restore could wait for, so not refused.
    state: dict[str, Any] = {"epoch": 0, "loss": 1.5, "w": np.ones(2)}
    ckpt = tp.Checkpoint(train=state)
    state["epoch"] += 3
    state["loss"] = 0.25
    path = ckpt.write(str(tmp_path / "ckpt"))
    fresh: dict[str, Any] = {"epoch": 0, "loss": 0.0, "w": np.zeros(2)}
    tp.Checkpoint(train=fresh).read(path).assert_consumed()
    assert fresh["epoch"] == 3 and type(fresh["epoch"]) is int and fresh["loss"] == 0.25
    np.testing.assert_array_equal(fresh["w"], np.ones(2))
    # A number of another type would be saved as another dtype; a new key, or a new array under a key, is a
    # new object: still refused, as in TensorFlow.
    state["epoch"] = 4.5
    with pytest.raises(tp.TrackableError, match=r"Here 'epoch' went from int to float: .*keep the type"):
        ckpt.write(str(tmp_path / "float"))
    state = {"epoch": 0, "w": np.ones(2)}
    ckpt = tp.Checkpoint(train=state)
    state["w"] = np.zeros(2)
    with pytest.raises(tp.TrackableError, match=r"The wrapped dictionary was modified outside the wrapper"):
        ckpt.write(str(tmp_path / "again"))
    other: dict[str, Any] = {"epoch": 0}
    held = tp.Checkpoint(train=other)
    other["step"] = 1
    with pytest.raises(tp.TrackableError, match=r"The wrapped dictionary was modified outside the wrapper"):
        held.write(str(tmp_path / "added"))


def test_dict_wrapper_behaves_as_a_dict() -> None:
    model = tp.AutoTrackable()
    model.d = {"a": 2, "nested": [1]}
    wrapper = model.d
    assert isinstance(wrapper, dict)
    assert json.dumps(wrapper) == '{"a": 2, "nested": [1]}'
    assert {**wrapper} == {"a": 2, "nested": [1]} and dict(wrapper) == {"a": 2, "nested": [1]}
    assert wrapper | {"b": 3} == {"a": 2, "nested": [1], "b": 3} and {"b": 3} | wrapper == wrapper | {"b": 3}
    assert wrapper.get("a") == 2 and wrapper.setdefault("c", 5) == 5 and wrapper.pop("c") == 5
    assert pickle.loads(pickle.dumps(_DictWrapper({"a": 1}))) == {"a": 1}
    assert _DictWrapper([(1, 2), (3, 4)]) == {1: 2, 3: 4}
    assert wrapper != {} and not ({} != _DictWrapper())
    with pytest.raises(TypeError, match="unhashable"):
        {wrapper}  # noqa: B018
    copied = wrapper.copy()
    assert copied == wrapper and copied is not wrapper and copied["nested"] is wrapper["nested"]
    wrapper |= {"z": 1}
    assert wrapper["z"] == 1 and list(wrapper)[-1] == "z"
    wrapper.clear()
    assert wrapper == {} and json.dumps(wrapper) == "{}"


def test_keys_neither_str_nor_int() -> None:
    model = tp.AutoTrackable()
    model.d = {1.5: "plain values under any key are fine"}
    assert model.d._trackable_children() == {}
    model.d[2.5] = tp.Variable(1.0)
    with pytest.raises(tp.TrackableError, match=r"contains a key that is neither a str nor an int .*key 2.5 of type"):
        tp.Checkpoint(model=model).write("memory://ds/nonstr")
    model.d[2.5] = tp.NoDependency(tp.Variable(1.0))
    assert model.d._trackable_children() == {}
    model.d[True] = tp.Variable(1.0)  # True is 1 to a dict, "True" to str(): neither name is taken for it
    with pytest.raises(tp.TrackableError, match=r"key True of type bool"):
        model.d._trackable_children()


# ------------------------------------------------------------------------------------- tuples
def test_tuples_stay_tuples() -> None:
    model = tp.AutoTrackable()
    model.shape = (2, 3)
    assert type(model.shape) is tuple and model._trackable_children() == {}  # nothing saved in it
    v = tp.Variable(1.0)
    model.pair = (v, [2])
    assert type(model.pair) is tuple and model.pair[0] is v and isinstance(model.pair[1], ListWrapper)
    assert json.dumps((1, model.pair[1])) == "[1, [2]]"
    assert model.pair + (3,) == (v, [2], 3) and model.pair * 1 == model.pair  # noqa: RUF005
    assert keys(tp.Checkpoint(model=model).write("memory://ds/tuple")) == ["model/pair/0" + VALUE]


def test_namedtuple_fields_are_tracked_by_name() -> None:
    Named = collections.namedtuple("Named", ["x", "y"])
    v = tp.Variable(2.0)
    model = tp.AutoTrackable()
    model.nt = Named(x=v, y=2)
    assert type(model.nt) is Named and model.nt.x is v and model.nt[0] is v and model.nt.y == 2
    node = model._trackable_children()["nt"]
    assert node._trackable_children() == {"x": v, "0": v}
    path = tp.Checkpoint(model=model).write("memory://ds/nt")
    assert keys(path) == ["model/nt/x" + VALUE]  # TensorFlow's key, by field name
    fresh = tp.AutoTrackable()
    fresh.nt = Named(x=tp.Variable(0.0), y=2)
    tp.Checkpoint(model=fresh).read(path).assert_consumed()
    assert fresh.nt.x.numpy() == 2.0


def test_namedtuple_subclass_keeps_its_methods() -> None:
    class Summed(collections.namedtuple("Named", ["x", "y"])):
        def __new__(cls, x: Any, y: Any) -> Summed:
            del y  # always 3, as a custom __new__ may decide
            return super().__new__(cls, x, 3)

        @property
        def summed(self) -> Any:
            return self.x + self.y

    model = tp.AutoTrackable()
    model.nt = Summed(x=np.float64(2.0), y=0)
    assert isinstance(model.nt, Summed) and model.nt.y == 3 and model.nt.summed == 5.0
    assert set(model._trackable_children()["nt"]._trackable_children()) == {"x", "0"}


def test_namedtuple_that_cannot_be_rebuilt_refuses_to_save() -> None:
    class Odd(collections.namedtuple("Odd", ["x"])):
        def __new__(cls) -> Odd:
            return super().__new__(cls, [])

    model = tp.AutoTrackable()
    model.nt = Odd()
    model.nt.x.append(tp.Variable(1.0))
    with pytest.raises(tp.TrackableError, match=r"namedtuple .* is not constructable from its _fields"):
        tp.Checkpoint(model=model).write("memory://ds/odd")


def test_restored_scalar_in_a_tuple_gives_the_holder_a_new_tuple() -> None:
    Pair = collections.namedtuple("Pair", ["step", "rate"])
    saved = tp.AutoTrackable()
    saved.pair = Pair(np.int64(7), np.float32(0.5))
    saved.items = [(np.int64(1),)]
    path = tp.Checkpoint(m=saved).write("memory://ds/scalars")
    fresh = tp.AutoTrackable()
    fresh.pair = Pair(np.int64(0), np.float32(0.0))
    fresh.items = [(np.int64(0),)]
    tp.Checkpoint(m=fresh).read(path).assert_consumed()
    assert type(fresh.pair) is Pair and fresh.pair == (7, 0.5) and type(fresh.pair.step) is np.int64
    assert fresh.items == [(1,)]
    # The restore went through the wrapper: the list still saves.
    assert keys(tp.Checkpoint(m=fresh).write("memory://ds/scalars-again")) == keys(path)


def test_objects_holding_numpy_values_pickle_and_restore_after(tmp_path: Path) -> None:
    """Tracked numpy attributes, dict values and list items survive pickling, and restores reach the copy."""
    source = tp.AutoTrackable()
    source.a, source.d, source.l = np.arange(3.0), {"x": np.full(2, 7.0)}, [np.full(1, 9.0)]
    path = tp.Checkpoint(m=source).write(str(tmp_path / "ck"))
    model = tp.AutoTrackable()
    model.a, model.d, model.l = np.zeros(3), {"x": np.zeros(2)}, [np.zeros(1)]
    unpickled = pickle.loads(pickle.dumps(model))
    # A read-only value is replaced by the restore, through the setter pickled with the object.
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    unpickled.a = read_only
    tp.Checkpoint(m=unpickled).read(path).assert_consumed()
    assert unpickled.a.tolist() == [0.0, 1.0, 2.0]
    assert unpickled.d["x"].tolist() == [7.0, 7.0] and unpickled.l[0].tolist() == [9.0]
    assert model.a.tolist() == [0.0, 0.0, 0.0]  # the original is untouched
