"""Load statuses: each assertion passing and failing with a precise message; the GC warning."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.graph import GraphWalk, ObjectGraphView
from trackpoint.storage import WriteItem
from trackpoint.trackable import Trackable, TrackableReference


def _saved_pair() -> str:
    root = tp.AutoTrackable()
    root.a = tp.Variable(1.0)
    root.b = tp.Variable(2.0)
    return tp.Checkpoint(model=root).save("memory://s/ckpt")


def _restored_pair() -> tuple[tp.AutoTrackable, tp.CheckpointLoadStatus]:
    """A model with both variables of :func:`_saved_pair`, and the status of restoring that save into it."""
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(0.0)
    model.b = tp.Variable(0.0)
    return model, tp.Checkpoint(model=model).restore(path)


def test_full_match_passes_every_assertion() -> None:
    _model, status = _restored_pair()  # the model stays alive while its status is checked
    assert status.assert_consumed() is status
    assert status.assert_existing_objects_matched() is status
    assert status.assert_nontrivial_match() is status
    assert status.run_restore_ops() is None
    assert status.initialize_or_restore() is None


def test_checkpoint_value_without_object() -> None:
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(0.0)
    status = tp.Checkpoint(model=model).restore(path).expect_partial()
    status.assert_existing_objects_matched().assert_nontrivial_match()
    with pytest.raises(tp.MatchError, match=r"\(root\)\.model\.b: model/b/\.ATTRIBUTES/VARIABLE_VALUE$") as info:
        status.assert_consumed()
    assert "(root).model.a" not in str(info.value)


def test_object_without_checkpoint_value() -> None:
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(0.0)
    model.b = tp.Variable(0.0)
    model.extra = tp.Variable(0.0, name="extra")
    status = tp.Checkpoint(model=model).restore(path)
    message = r"Found 1 Python objects that were not bound.*\n  \(root\)\.model\.extra: <trackpoint.Variable 'extra'"
    with pytest.raises(tp.MatchError, match=message):
        status.assert_existing_objects_matched()
    with pytest.raises(tp.MatchError, match=message):
        status.assert_consumed()
    status.assert_nontrivial_match()


def test_a_written_checkpoint_restored_names_the_counter_restore_creates_and_read_passes() -> None:
    # write() saves no save_counter and restore() creates one (TensorFlow's rule): the report says so, not that
    # the program changed, and read() of the same checkpoint passes.
    path = tp.Checkpoint(w=tp.Variable(1.0)).write("memory://s/written")
    with pytest.raises(
        tp.MatchError, match=r"at \(root\): the checkpoint has no 'save_counter'.*\n.*write\(\).*read\(\)"
    ):
        tp.Checkpoint(w=tp.Variable(0.0)).restore(path).assert_consumed()
    tp.Checkpoint(w=tp.Variable(0.0)).read(path).assert_consumed()
    # An attribute of the program's own named so is a change of the program: no such hint.
    model = tp.AutoTrackable()
    model.save_counter = tp.Variable(0.0)
    with pytest.raises(tp.MatchError) as info:
        tp.Checkpoint(w=tp.Variable(0.0), model=model).read(path).assert_consumed()
    assert "write()" not in str(info.value)


def test_a_written_checkpoint_restored_by_a_program_with_its_own_counter_is_told_to_expect_partial() -> None:
    # The program saved before: the counter is its own, neither restore() nor read() makes it, and read() would
    # fail the same way; the report says so instead of advising read().
    path = tp.Checkpoint(w=tp.Variable(1.0)).write("memory://s/written-own")
    ckpt = tp.Checkpoint(w=tp.Variable(0.0))
    ckpt.save("memory://s/own")
    for how in ("restore", "read"):
        with pytest.raises(tp.MatchError) as info:
            getattr(ckpt, how)(path).assert_consumed()
        message = str(info.value)
        assert "at (root): the checkpoint has no 'save_counter'" in message
        assert "this save_counter is the program's own, from an earlier save()" in message
        assert "status.expect_partial()" in message and "read it with read()" not in message
    # A counter a first restore() made is no longer made by the next one.
    again = tp.Checkpoint(w=tp.Variable(0.0))
    again.restore(path).expect_partial()
    with pytest.raises(tp.MatchError, match=r"the program's own") as info:
        again.restore(path).assert_consumed()
    assert "read it with read()" not in str(info.value)


def test_a_written_checkpoint_restored_by_a_checkpoint_subclass_names_the_counter_restore_creates() -> None:
    class MyCheckpoint(tp.Checkpoint):
        pass

    path = tp.Checkpoint(w=tp.Variable(1.0)).write("memory://s/written-sub")
    with pytest.raises(tp.MatchError, match=r"which restore\(\) creates: read it with read\(\), which creates none"):
        MyCheckpoint(w=tp.Variable(0.0)).restore(path).assert_consumed()
    MyCheckpoint(w=tp.Variable(0.0)).read(path).assert_consumed()


def test_matches_are_found_whatever_weak_references_record_the_objects() -> None:
    # Objects are told matched or not by identity, not by the weak reference that records them: a different
    # reference to a matched object (another runtime, a reference with a callback) must still count as
    # matched, and a dead reference left under the id a new object now has must not hide that object.
    import weakref

    model, status = _restored_pair()
    checkpoint = status._checkpoint
    checkpoint.matched_objects[id(model.a)] = weakref.ref(model.a, lambda _: None)
    assert checkpoint.matched_objects[id(model.a)] is not weakref.ref(model.a)
    assert status.assert_consumed() is status
    model.c = tp.Variable(0.0)
    gone = tp.Variable(0.0)
    checkpoint.unmatched_seen[id(model.c)] = weakref.ref(gone)
    del gone
    with pytest.raises(tp.MatchError, match=r"(?s)Found 1 Python objects that were not bound.*\(root\)\.model\.c"):
        status.assert_consumed()


def test_nontrivial_match_fails_when_only_root_matches() -> None:
    # write()/read(): no save_counter, which would otherwise match besides the root.
    root = tp.AutoTrackable()
    root.a = tp.Variable(1.0)
    path = tp.Checkpoint(model=root).write("memory://s/written")
    other = tp.AutoTrackable()
    other.zzz = tp.Variable(0.0, name="zzz")
    status = tp.Checkpoint(root=other).read(path).expect_partial()
    with pytest.raises(tp.MatchError, match=r"Nothing except the root object matched.*\n  \(root\)\.zzz: "):
        status.assert_nontrivial_match()
    empty = tp.Checkpoint(root=tp.AutoTrackable()).read(path).expect_partial()
    with pytest.raises(tp.MatchError, match="Nothing to load"):
        empty.assert_nontrivial_match()


def test_unused_attributes_are_reported() -> None:
    class Two(tp.Trackable):
        def __init__(self, names: tuple[str, ...]) -> None:
            self.names = names
            self.got: dict[str, np.ndarray] = {}

        def _serialize_to_tensors(self) -> dict[str, np.ndarray]:
            return {n: np.array([1.0]) for n in self.names}

        def _restore_from_tensors(self, tensors: dict[str, np.ndarray]) -> None:  # type: ignore[override]
            self.got = dict(tensors)

    path = tp.Checkpoint(t=Two(("x", "y"))).write("memory://s/two")
    target = Two(("x",))
    status = tp.Checkpoint(t=target).read(path)
    assert list(target.got) == ["x"]
    status.assert_existing_objects_matched()
    with pytest.raises(tp.MatchError, match=r"Unused attributes.*\n  \(root\)\.t \(.*\): y$"):
        status.assert_consumed()
    status.expect_partial()


def test_restore_none_gives_initialization_only_status() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    status = ckpt.restore(None)
    assert isinstance(status, tp.InitializationOnlyStatus)
    for check in (status.assert_consumed, status.assert_existing_objects_matched, status.assert_nontrivial_match):
        with pytest.raises(tp.MatchError, match=r"No checkpoint specified \(save_path=None\)"):
            check()
    status.initialize_or_restore()
    assert ckpt.save_counter.numpy() == 0


def test_read_none_gives_initialization_only_status_as_tensorflow_does() -> None:
    """``ckpt.read(latest_checkpoint(empty_dir))`` works in TensorFlow: its saver takes None as nothing to read."""
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    status = ckpt.read(None)
    assert isinstance(status, tp.InitializationOnlyStatus)
    with pytest.raises(tp.MatchError, match=r"No checkpoint specified \(save_path=None\)"):
        status.assert_consumed()
    assert float(ckpt.v.numpy()) == 1.0


def test_a_restore_that_raises_logs_no_warning_about_unused_values(caplog: pytest.LogCaptureFixture) -> None:
    """The caller got the error and no status: telling them to call expect_partial() on it is noise."""
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(np.zeros(4, np.float32))  # saved as a scalar
    with caplog.at_level("WARNING", logger="trackpoint"):
        with pytest.raises(tp.ShapeMismatchError):
            tp.Checkpoint(model=model).restore(path)
        with pytest.raises(tp.ShapeMismatchError):
            tp.TrackableSaver(tp.Checkpoint(model=model)).restore(path)
        del model
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "trackpoint"] == []


def test_gc_warning_lists_unresolved_values(caplog: pytest.LogCaptureFixture) -> None:
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(0.0)
    with caplog.at_level("WARNING", logger="trackpoint"):
        status = tp.Checkpoint(model=model).restore(path)
        del status, model
        gc.collect()
    records = [r for r in caplog.records if r.name == "trackpoint"]
    assert len(records) == 1
    assert "Unresolved object in checkpoint: (root).model.b" in records[0].getMessage()
    assert "(root).model.a" not in records[0].getMessage()


def test_expect_partial_silences_the_gc_warning(caplog: pytest.LogCaptureFixture) -> None:
    path = _saved_pair()
    model = tp.AutoTrackable()
    with caplog.at_level("WARNING", logger="trackpoint"):
        status = tp.Checkpoint(model=model).restore(path).expect_partial()
        del status, model
        gc.collect()
    assert [r for r in caplog.records if r.name == "trackpoint"] == []


def test_no_warning_when_everything_was_used(caplog: pytest.LogCaptureFixture) -> None:
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(0.0)
    model.b = tp.Variable(0.0)
    with caplog.at_level("WARNING", logger="trackpoint"):
        status = tp.Checkpoint(model=model).restore(path)
        del status, model
        gc.collect()
    assert [r for r in caplog.records if r.name == "trackpoint"] == []


def _write_name_based(prefix: str, **tensors: np.ndarray) -> None:
    from trackpoint import _resolve

    backend = _resolve.open_backend(prefix)
    backend.save(prefix, [WriteItem(k, v) for k, v in tensors.items()])


def test_name_based_checkpoint_restores_by_variable_name() -> None:
    _write_name_based("memory://n/model.ckpt", **{"dense/kernel": np.full(2, 5.0, np.float32)})
    root = tp.AutoTrackable()
    root.k = tp.Variable(np.zeros(2, np.float32), name="dense/kernel")
    ckpt = tp.Checkpoint(root=root)
    status = ckpt.restore("memory://n/model.ckpt")
    assert isinstance(status, tp.NameBasedSaverStatus)
    np.testing.assert_array_equal(root.k.numpy(), [5.0, 5.0])
    status.assert_consumed()  # save_counter is optional


def test_name_based_checkpoint_reports_missing_names() -> None:
    _write_name_based("memory://n/model.ckpt", **{"dense/kernel": np.zeros(2, np.float32)})
    root = tp.AutoTrackable()
    root.k = tp.Variable(np.zeros(2, np.float32), name="dense/kernel")
    root.b = tp.Variable(np.zeros(2, np.float32), name="dense/bias")
    status = tp.Checkpoint(root=root).restore("memory://n/model.ckpt")
    with pytest.raises(
        tp.MatchError, match=r"not restored from the name-based checkpoint.*\n  \(root\)\.b: dense/bias$"
    ):
        status.assert_consumed()


def test_name_based_restore_validates_before_writing() -> None:
    _write_name_based("memory://n/model.ckpt", a=np.ones(2, np.float32), b=np.ones(3, np.float32))
    root = tp.AutoTrackable()
    root.a = tp.Variable(np.zeros(2, np.float32), name="a")
    root.b = tp.Variable(np.zeros(2, np.float32), name="b")
    with pytest.raises(tp.ShapeMismatchError, match=r"cannot restore 'b'.*shape \(3,\)"):
        tp.Checkpoint(root=root).restore("memory://n/model.ckpt")
    np.testing.assert_array_equal(root.a.numpy(), [0.0, 0.0])


def test_name_based_restore_reaches_variables_created_later() -> None:
    _write_name_based(
        "memory://n/model.ckpt", **{"k": np.full(2, 3.0, np.float32), "late": np.full(1, 4.0, np.float32)}
    )
    root = tp.AutoTrackable()
    root.k = tp.Variable(np.zeros(2, np.float32), name="k")
    status = tp.Checkpoint(root=root).restore("memory://n/model.ckpt")
    root.sub = tp.AutoTrackable()
    root.sub.late = tp.Variable(np.zeros(1, np.float32), name="late")
    assert root.sub.late.numpy()[0] == 4.0
    status.assert_consumed()


# ------------------------------------------------- assertions on a graph the restore matched whole
def _layered() -> tp.AutoTrackable:
    model = tp.AutoTrackable()
    for i in range(3):
        layer = tp.AutoTrackable()
        layer.w = tp.Variable(np.full(2, float(i), dtype=np.float32))
        layer.b = tp.Variable(float(i))
        setattr(model, f"layer{i}", layer)
    return model


def _count_walks(monkeypatch: pytest.MonkeyPatch) -> list[ObjectGraphView]:
    walked: list[ObjectGraphView] = []
    walk = ObjectGraphView.walk

    def counted(self: ObjectGraphView) -> GraphWalk:
        walked.append(self)
        return walk(self)

    monkeypatch.setattr(ObjectGraphView, "walk", counted)
    return walked


@pytest.mark.parametrize("how", ["read", "restore", "restore with root="])
def test_assertions_do_not_walk_a_graph_the_restore_matched_whole(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every live object was matched and no dependency changed since: the assertions compare counts. The
    # save_counter that restore() creates (restored on creation) joins the graph without undoing that.
    with_root = how == "restore with root="
    source = tp.Checkpoint(root=_layered()) if with_root else tp.Checkpoint(model=_layered())
    path = source.write("memory://s/whole") if how == "read" else source.save("memory://s/whole")
    model = _layered()
    ckpt = tp.Checkpoint(root=model) if with_root else tp.Checkpoint(model=model)
    status = ckpt.read(path) if how == "read" else ckpt.restore(path)
    walked = _count_walks(monkeypatch)
    assert status.assert_consumed() is status
    assert status.assert_existing_objects_matched().assert_nontrivial_match() is status
    assert walked == []
    assert float(model.layer2.b.numpy()) == 2.0


def _extra_attribute(model: tp.AutoTrackable, ckpt: tp.Checkpoint) -> None:
    model.layer1.extra = tp.Variable(0.0)


def _extra_tracked(model: tp.AutoTrackable, ckpt: tp.Checkpoint) -> None:
    model.layer1._track_trackable(tp.Variable(0.0), "extra")


def _extra_in_the_dependency_list(model: tp.AutoTrackable, ckpt: tp.Checkpoint) -> None:
    model.layer1._unconditional_checkpoint_dependencies.append(TrackableReference("extra", tp.Variable(0.0)))


def _extra_attached(model: tp.AutoTrackable, ckpt: tp.Checkpoint) -> None:
    ckpt._view().attached_dependencies.append(TrackableReference("extra", tp.Variable(0.0)))


def _extra_replacing(model: tp.AutoTrackable, ckpt: tp.Checkpoint) -> None:
    model.layer1 = tp.AutoTrackable()
    model.layer1.extra = tp.Variable(0.0)


@pytest.mark.parametrize(
    "change", [_extra_attribute, _extra_tracked, _extra_in_the_dependency_list, _extra_attached, _extra_replacing]
)
def test_assertions_find_objects_added_after_the_restore(
    change: Callable[[tp.AutoTrackable, tp.Checkpoint], None],
) -> None:
    path = tp.Checkpoint(root=_layered()).write("memory://s/added")
    model = _layered()
    ckpt = tp.Checkpoint(root=model)
    status = ckpt.read(path)
    status.assert_consumed()
    extra = tp.Variable(0.0)
    change(model, ckpt)
    with pytest.raises(
        tp.MatchError, match=r"Found 1 Python objects that were not bound.*\n  \(root\)\.(layer1\.)?extra: "
    ):
        status.assert_existing_objects_matched()
    del extra


def test_assertions_walk_graphs_whose_children_are_not_counted() -> None:
    # An overridden _trackable_children may return new children without any counted change, so a graph
    # with such an object is walked by every assertion.
    class Growing(tp.AutoTrackable):
        def _trackable_children(self) -> dict[str, Trackable]:
            children = super()._trackable_children()
            grown = self.__dict__.get("_self_grown")
            return children if grown is None else {**children, "grown": grown}

    model = _layered()
    model.growing = Growing()
    path = tp.Checkpoint(model=model).write("memory://s/growing")
    model = _layered()
    model.growing = Growing()
    status = tp.Checkpoint(model=model).read(path)
    status.assert_consumed()
    model.growing._self_grown = tp.Variable(0.0)
    with pytest.raises(tp.MatchError, match=r"Found 1 Python objects.*\n  \(root\)\.model\.growing\.grown: "):
        status.assert_consumed()


def test_a_counter_the_checkpoint_lacks_is_reported_after_restore() -> None:
    # write() saves no save_counter; restore() creates one, which then has no value.
    path = tp.Checkpoint(model=_layered()).write("memory://s/no-counter")
    status = tp.Checkpoint(model=_layered()).restore(path)
    with pytest.raises(tp.MatchError, match=r"Found 1 Python objects.*\n  \(root\)\.save_counter: "):
        status.assert_consumed()


def test_a_matched_object_that_died_leaves_its_value_unresolved() -> None:
    path = _saved_pair()
    model = tp.AutoTrackable()
    model.a = tp.Variable(0.0)
    status = tp.Checkpoint(model=model).restore(path)
    model.b = tp.Variable(0.0)  # restored on creation
    status.assert_consumed()
    del model.b
    gc.collect()
    with pytest.raises(
        tp.MatchError,
        match=r"Unresolved objects in checkpoint.*:\n  Unresolved object in checkpoint \(root\)\.model\.b: ",
    ):
        status.assert_consumed()


def test_an_object_whose_value_is_older_than_the_restore_is_reported() -> None:
    model, status = _restored_pair()
    model.a._update_uid = 0
    with pytest.raises(
        tp.MatchError, match=r"not assigned a value from checkpoint:\n  \(root\)\.model\.a: <trackpoint\.Variable"
    ):
        status.assert_existing_objects_matched()


def test_every_value_that_does_not_fit_is_reported_at_once_and_nothing_is_written(tmp_path: Path) -> None:
    path = tp.Checkpoint(
        a=tp.Variable(np.ones(3)), b=tp.Variable(np.ones(2, np.float32)), c=tp.Variable(np.ones(4)), d=tp.Variable(1.0)
    ).write(str(tmp_path / "ckpt"))
    a, b, c, d = tp.Variable(np.zeros(4)), tp.Variable(np.zeros(2)), tp.Variable(np.zeros(5)), tp.Variable(0.0)
    with pytest.raises(tp.AssignmentError, match=r"^3 values of the checkpoint do not fit their objects") as failed:
        tp.Checkpoint(a=a, b=b, c=c, d=d).read(path)
    message = str(failed.value)
    assert all(f"'{k}/.ATTRIBUTES/VARIABLE_VALUE'" in message for k in "abc") and "'d/" not in message
    assert float(d.numpy()) == 0.0 and not a.numpy().any()  # nothing was restored, the fitting d included
    # Of one kind, the error is of that kind.
    with pytest.raises(tp.ShapeMismatchError, match=r"^2 values"):
        tp.Checkpoint(a=a, c=c).read(path)


def test_the_unrestored_values_warning_of_a_manager_restore_says_what_to_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # restore_or_initialize returns no status, so "call status.expect_partial()" could not be followed.
    tp.CheckpointManager(tp.Checkpoint(a=tp.Variable(1.0), b=tp.Variable(2.0)), str(tmp_path), max_to_keep=1).save()
    manager = tp.CheckpointManager(tp.Checkpoint(a=tp.Variable(0.0)), str(tmp_path), max_to_keep=1)
    with caplog.at_level("WARNING", logger="trackpoint"):
        manager.restore_or_initialize()
        del manager  # the checkpoint keeps the restore for b's restore-on-create until it goes
        gc.collect()
    message = next(r.getMessage() for r in caplog.records if "unrestored values" in r.getMessage())
    assert "checkpoint.restore(manager.latest_checkpoint).expect_partial()" in message
    assert "Unresolved object in checkpoint: (root).b" in message
