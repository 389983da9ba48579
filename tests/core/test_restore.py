"""Restore semantics: nested models, deferred restore, restore-on-create, latest wins, diamonds."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pytest

import trackpoint as tp


class Dense(tp.AutoTrackable):
    def __init__(self, n: int, seed: float = 0.0) -> None:
        self.kernel = tp.Variable(np.full((n, n), seed, np.float32), name="kernel")
        self.bias = tp.Variable(np.full(n, seed, np.float32), name="bias")


class Model(tp.AutoTrackable):
    def __init__(self, seed: float = 0.0) -> None:
        self.blocks = [Dense(2, seed), Dense(3, seed)]
        self.heads = {"cls": Dense(1, seed), "reg": Dense(2, seed)}
        self.pair = (tp.Variable(seed), tp.Variable(seed + 1))


def test_nested_lists_dicts_tuples_round_trip() -> None:
    saved = Model(seed=1.0)
    path = tp.Checkpoint(model=saved).save("memory://r/ckpt")
    fresh = Model(seed=0.0)
    tp.Checkpoint(model=fresh).restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.blocks[1].kernel.numpy(), np.ones((3, 3)))
    np.testing.assert_array_equal(fresh.heads["reg"].bias.numpy(), [1.0, 1.0])
    assert fresh.pair[1].numpy() == 2.0


def test_restore_before_objects_exist_applies_on_assignment() -> None:
    path = tp.Checkpoint(model=Model(seed=3.0)).save("memory://r/ckpt")
    model = tp.AutoTrackable()
    status = tp.Checkpoint(model=model).restore(path)
    with pytest.raises(tp.MatchError, match="Unresolved objects in checkpoint"):
        status.assert_consumed()
    status.assert_existing_objects_matched()
    model.blocks = [Dense(2), Dense(3)]
    model.heads = {"cls": Dense(1), "reg": Dense(2)}
    assert model.blocks[0].kernel.numpy()[0, 0] == 3.0
    with pytest.raises(tp.MatchError, match=r"\(root\)\.model\.pair\.0"):
        status.assert_consumed()
    model.pair = (tp.Variable(0.0), tp.Variable(0.0))
    status.assert_consumed()
    assert model.pair[1].numpy() == 4.0


def test_list_append_and_dict_insert_receive_deferred_values() -> None:
    root = tp.AutoTrackable()
    root.items = [tp.Variable(5.0), tp.Variable(6.0)]
    root.table = {"k": tp.Variable(7.0)}
    path = tp.Checkpoint(root=root).write("memory://r/w")
    other = tp.AutoTrackable()
    other.items = []
    other.table = {}
    status = tp.Checkpoint(root=other).read(path)
    other.items.append(tp.Variable(0.0))
    other.items.insert(1, tp.Variable(0.0))
    other.table["k"] = tp.Variable(0.0)
    status.assert_consumed()
    assert [v.numpy() for v in other.items] == [5.0, 6.0]
    assert other.table["k"].numpy() == 7.0


def test_add_variable_restores_on_create() -> None:
    holder = tp.AutoTrackable()
    holder.add_variable("w", shape=(2,), initializer=np.array([8.0, 9.0], np.float32))
    path = tp.Checkpoint(holder=holder).save("memory://r/ckpt")
    new_holder = tp.AutoTrackable()
    status = tp.Checkpoint(holder=new_holder).restore(path)
    w = new_holder.add_variable("w", shape=(2,), dtype=np.float32)
    np.testing.assert_array_equal(w.numpy(), [8.0, 9.0])
    status.assert_consumed()


def test_add_variable_refuses_a_waiting_value_of_another_shape() -> None:
    holder = tp.AutoTrackable()
    holder.add_variable("w", shape=(2,))
    path = tp.Checkpoint(holder=holder).save("memory://r/ckpt")
    new_holder = tp.AutoTrackable()
    tp.Checkpoint(holder=new_holder).restore(path).expect_partial()
    with pytest.raises(tp.ShapeMismatchError, match=r"checkpoint holds shape \(2,\), but shape \(3,\) was requested"):
        new_holder.add_variable("w", shape=(3,))
    assert new_holder._lookup_dependency("w") is None


def test_add_variable_name_conflict() -> None:
    holder = tp.AutoTrackable()
    holder.add_variable("w")
    with pytest.raises(tp.NameConflictError, match="A variable named 'w' already exists"):
        holder.add_variable("w")


def test_later_restore_wins_for_existing_objects() -> None:
    v = tp.Variable(1.0)
    ckpt = tp.Checkpoint(v=v)
    first = ckpt.save("memory://r/ckpt")
    v.assign(2.0)
    second = ckpt.save("memory://r/ckpt")
    ckpt.restore(second)
    ckpt.restore(first)
    assert v.numpy() == 1.0


def test_later_restore_wins_for_deferred_objects() -> None:
    src = tp.AutoTrackable()
    src.v = tp.Variable(1.0)
    ckpt = tp.Checkpoint(src=src)
    first = ckpt.save("memory://r/ckpt")
    src.v.assign(2.0)
    second = ckpt.save("memory://r/ckpt")
    for order, expected in (((first, second), 2.0), ((second, first), 1.0)):
        dst = tp.AutoTrackable()
        restore = tp.Checkpoint(src=dst)
        statuses = [restore.restore(p) for p in order]
        dst.v = tp.Variable(0.0)
        assert dst.v.numpy() == expected
        for status in statuses:
            status.assert_consumed()


def test_diamond_is_restored_once_and_shared() -> None:
    shared = tp.Variable([1.0, 2.0])
    root = tp.AutoTrackable()
    root.left = tp.AutoTrackable()
    root.right = tp.AutoTrackable()
    root.left.v = shared
    root.right.v = shared
    path = tp.Checkpoint(root=root).write("memory://r/d")
    new_shared = tp.Variable([0.0, 0.0])
    new = tp.AutoTrackable()
    new.left = tp.AutoTrackable()
    new.right = tp.AutoTrackable()
    new.left.v = new_shared
    new.right.v = new_shared
    status = tp.Checkpoint(root=new).read(path)
    status.assert_consumed()
    np.testing.assert_array_equal(new_shared.numpy(), [1.0, 2.0])
    assert len(status._checkpoint.object_by_proto_id) == 4


def test_inconsistent_references_are_logged_not_restored(caplog: pytest.LogCaptureFixture) -> None:
    shared = tp.Variable(1.0)
    root = tp.AutoTrackable()
    root.a = tp.AutoTrackable()
    root.b = tp.AutoTrackable()
    root.a.v = shared
    root.b.v = shared
    path = tp.Checkpoint(root=root).write("memory://r/d")
    new = tp.AutoTrackable()
    new.a = tp.AutoTrackable()
    new.b = tp.AutoTrackable()
    new.a.v = tp.Variable(0.0)
    new.b.v = tp.Variable(0.0)
    with caplog.at_level("WARNING", logger="trackpoint"):
        status = tp.Checkpoint(root=new).read(path)
    assert new.a.v.numpy() == 1.0 and new.b.v.numpy() == 0.0
    assert "Inconsistent references" in caplog.text
    with pytest.raises(tp.MatchError, match=r"\(root\)\.b\.v"):
        status.assert_existing_objects_matched()


def test_reassigning_and_deleting_attributes_updates_dependencies() -> None:
    root = tp.AutoTrackable()
    root.a = tp.Variable(1.0)
    root.b = tp.Variable(2.0)
    root.a = tp.Variable(3.0)
    assert list(root._trackable_children()) == ["a", "b"]
    assert root._lookup_dependency("a") is root.a
    del root.b
    assert list(root._trackable_children()) == ["a"]
    root.a = 5
    assert root._trackable_children() == {}
    root.c = tp.NoDependency(tp.Variable(1.0))
    assert isinstance(root.c, tp.Variable) and root._trackable_children() == {}
    root.d = tp.NoDependency([tp.Variable(1.0)])
    assert type(root.d) is list and root._trackable_children() == {}


def test_explicit_track_trackable_conflicts() -> None:
    root = tp.Trackable()
    root._track_trackable(tp.Variable(1.0), "x")
    with pytest.raises(tp.NameConflictError, match="name='x'.*already declared as a dependency"):
        root._track_trackable(tp.Variable(2.0), "x")
    with pytest.raises(tp.TrackableError, match="only Trackable objects can be tracked, got int"):
        root._track_trackable(3, "y")  # type: ignore[arg-type]


def test_wrappers_behave_like_containers() -> None:
    root = tp.AutoTrackable()
    root.l = [1, [tp.Variable(1.0)]]
    root.d = {"a": 1}
    root.t = (1, 2)
    assert root.l == [1, root.l[1]] and len(root.l) == 2
    assert isinstance(root.l[1], tp.ListWrapper)
    assert root.d == {"a": 1} and dict(root.d) == {"a": 1}
    assert root.t == (1, 2) and root.t[1] == 2
    del root.l[0]  # renumbers a saved element: saving is refused, as in TensorFlow
    with pytest.raises(tp.TrackableError, match=r"A list element was replaced.*here: __delitem__"):
        root.l._trackable_children()


def test_dict_key_neither_str_nor_int_with_trackable_fails_on_save() -> None:
    root = tp.AutoTrackable()
    root.d = {(1, 2): tp.Variable(1.0)}
    with pytest.raises(tp.TrackableError, match=r"neither a str nor an int .*key \(1, 2\) of type tuple"):
        tp.Checkpoint(root=root).write("memory://r/bad")


def test_list_lookup_by_decimal_index_only() -> None:
    wrapper = tp.ListWrapper([tp.Variable(1.0), 3])
    assert wrapper._lookup_dependency("0") is wrapper[0]
    assert wrapper._lookup_dependency("00") is None
    assert wrapper._lookup_dependency("1") is None  # not trackable
    assert wrapper._lookup_dependency("7") is None


def test_empty_containers_are_matched_and_filled_across_restores() -> None:
    root = tp.AutoTrackable()
    root.items = [tp.Variable(1.0)]
    path = tp.Checkpoint(root=root).write("memory://r/empty")
    target = tp.AutoTrackable()
    target.items = []
    ckpt = tp.Checkpoint(root=target)
    first = ckpt.read(path)
    second = ckpt.read(path)  # the (empty, falsy) list is already matched: no re-binding
    assert first._checkpoint.object_by_proto_id[1] is target.items
    target.items.append(tp.Variable(0.0))
    assert target.items[0].numpy() == 1.0
    first.assert_consumed()
    second.assert_consumed()


def test_namedtuples_are_tracked_and_keep_field_access() -> None:
    import collections

    Pair = collections.namedtuple("Pair", ["a", "b"])
    root = tp.AutoTrackable()
    root.pair = Pair(tp.Variable(1.0), tp.Variable(2.0))
    assert root.pair.b.numpy() == 2.0 and root.pair[0] is root.pair.a
    assert root.pair._fields == ("a", "b")
    path = tp.Checkpoint(root=root).write("memory://r/nt")
    other = tp.AutoTrackable()
    other.pair = Pair(tp.Variable(0.0), tp.Variable(0.0))
    tp.Checkpoint(root=other).read(path).assert_consumed()
    assert (other.pair.a.numpy(), other.pair.b.numpy()) == (1.0, 2.0)


class _Replaces(tp.Trackable):
    """Copies its restored value elsewhere (as a JAX array is put on its devices) and keeps no reference."""

    seen_refs: list[Any]

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {"x": np.ones(1000)}

    def _restore_from_tensors(self, tensors: Any) -> None:
        # Each value read for an earlier object is freed once that object is done with it: a restore
        # that replaces what it holds then needs the memory of one read value, not all of them at once.
        self.seen.append([ref() is None for ref in self.seen_refs])
        self.seen_refs.append(weakref.ref(tensors["x"]))


def test_values_read_for_an_object_are_freed_once_it_is_restored() -> None:
    seen: list[Any] = []
    objects = [_Replaces(seen) for _ in range(3)]
    refs: list[Any] = []
    for obj in objects:
        obj.seen_refs = refs
    path = tp.Checkpoint(a=objects[0], b=objects[1], c=objects[2]).write("memory://r/free")
    tp.Checkpoint(a=objects[0], b=objects[1], c=objects[2]).read(path).assert_consumed()
    assert seen == [[], [True], [True, True]]
