"""Checkpoint: save/write/read/restore, save_counter, the root= form and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp
from gated import gated_backends


def test_save_numbers_checkpoints_and_updates_state_file() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    assert ckpt.save("memory://c/run/ckpt") == "memory://c/run/ckpt-1"
    assert ckpt.save("memory://c/run/ckpt") == "memory://c/run/ckpt-2"
    assert ckpt.save_counter.numpy() == 2
    assert ckpt.save_counter.dtype == np.int64
    assert tp.latest_checkpoint("memory://c/run") == "memory://c/run/ckpt-2"


def test_save_counter_continues_after_restore() -> None:
    first = tp.Checkpoint(v=tp.Variable(1.0))
    first.save("memory://c/ckpt")
    path = first.save("memory://c/ckpt")
    second = tp.Checkpoint(v=tp.Variable(0.0))
    second.restore(path).assert_consumed()
    assert second.save_counter.numpy() == 2
    assert second.save("memory://c/ckpt") == "memory://c/ckpt-3"


def test_write_does_not_touch_counter_or_state_file() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    assert ckpt.write("memory://c/plain") == "memory://c/plain"
    assert ckpt.save_counter.numpy() == 0
    assert tp.latest_checkpoint("memory://c") is None
    # read() of a write() checkpoint: no save_counter expected.
    tp.Checkpoint(v=tp.Variable(0.0)).read("memory://c/plain").assert_consumed()
    with pytest.raises(tp.MatchError, match="save_counter"):
        tp.Checkpoint(v=tp.Variable(0.0)).restore("memory://c/plain").assert_consumed()


def test_missing_checkpoint_mentions_suffix() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    ckpt.save("memory://c/ckpt")
    with pytest.raises(
        tp.CheckpointNotFoundError, match=r"(?s)'memory://c/ckpt'.*missing the checkpoint suffix.*latest_checkpoint"
    ):
        ckpt.restore("memory://c/ckpt")
    with pytest.raises(FileNotFoundError):
        ckpt.read("memory://c/nothing")


def test_root_form_matches_a_checkpoint_of_the_root() -> None:
    model = tp.AutoTrackable()
    model.w = tp.Variable([1.0, 2.0])
    path = tp.Checkpoint(model).save("memory://c/root")
    graph = tp.object_metadata(path)
    assert [c.local_name for c in graph.nodes[0].children] == ["w", "root", "save_counter"]
    assert graph.nodes[0].children[1].node_id == 0

    clone = tp.AutoTrackable()
    clone.w = tp.Variable([0.0, 0.0])
    ckpt = tp.Checkpoint(root=clone)
    ckpt.restore(path).assert_consumed()
    np.testing.assert_array_equal(clone.w.numpy(), [1.0, 2.0])
    assert ckpt.save_counter.numpy() == 1


def test_root_form_with_attached_dependencies() -> None:
    model = tp.AutoTrackable()
    model.w = tp.Variable(1.0)
    extra = tp.Variable(5.0)
    path = tp.Checkpoint(root=model, extra=extra).save("memory://c/att")
    clone = tp.AutoTrackable()
    clone.w = tp.Variable(0.0)
    new_extra = tp.Variable(0.0)
    tp.Checkpoint(root=clone, extra=new_extra).restore(path).assert_consumed()
    assert new_extra.numpy() == 5.0


def test_root_form_kwarg_conflict() -> None:
    model = tp.AutoTrackable()
    model.child = tp.Variable(1.0)
    with pytest.raises(tp.NameConflictError, match="keyword argument 'child' if root.child already exists"):
        tp.Checkpoint(root=model, child=tp.Variable(2.0))
    tp.Checkpoint(root=model, child=model.child)  # the same object is fine


def test_non_trackable_arguments_are_named() -> None:
    with pytest.raises(tp.TrackableError, match="expecting name to be a trackable object.*got str"):
        tp.Checkpoint(name="run-1")
    with pytest.raises(tp.TrackableError, match="expecting nothing to be a trackable object.*got NoneType"):
        tp.Checkpoint(nothing=None)
    with pytest.raises(tp.TrackableError, match="expecting root to be a trackable object"):
        tp.Checkpoint(root=3)  # type: ignore[arg-type]


def test_kwargs_accept_containers_of_trackables() -> None:
    ckpt = tp.Checkpoint(layers=[tp.Variable(1.0), tp.Variable(2.0)])
    path = ckpt.save("memory://c/list")
    other = tp.Checkpoint(layers=[tp.Variable(0.0), tp.Variable(0.0)])
    other.restore(path).assert_consumed()
    assert [v.numpy() for v in other.layers] == [1.0, 2.0]


def test_options_are_passed_to_the_backend() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    path = ckpt.save("memory://c/opt", options=tp.CheckpointOptions(backend="memory", num_writers=1))
    tp.Checkpoint(v=tp.Variable(0.0)).restore(path, options=tp.CheckpointOptions(backend="memory")).assert_consumed()
    with pytest.raises(tp.UnknownBackendError):
        ckpt.write("memory://c/x", options=tp.CheckpointOptions(backend="no-such-backend"))


def test_restore_and_read_accept_a_directory_and_use_its_latest_checkpoint() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(0.0))
    for value in (1.0, 2.0):
        ckpt.v.assign(value)
        ckpt.save("memory://c/dir/ckpt")
    fresh = tp.Checkpoint(v=tp.Variable(0.0))
    fresh.restore("memory://c/dir").assert_consumed()
    assert fresh.v.numpy() == 2.0 and fresh.save_counter.numpy() == 2
    # read() (for write()'s checkpoints) resolves a directory the same way.
    writer = tp.Checkpoint(v=tp.Variable(7.0))
    writer.write("memory://c/written/w-3")
    writer.v.assign(9.0)
    writer.write("memory://c/written/w-12")
    reread = tp.Checkpoint(v=tp.Variable(0.0))
    reread.read("memory://c/written").assert_consumed()
    assert reread.v.numpy() == 9.0


def test_a_committed_prefix_wins_over_a_directory_of_the_same_name() -> None:
    tp.Checkpoint(v=tp.Variable(1.0)).write("memory://c/both/ckpt-1")
    tp.Checkpoint(v=tp.Variable(2.0)).write("memory://c/both/ckpt-1/inner-1")
    fresh = tp.Checkpoint(v=tp.Variable(0.0))
    fresh.read("memory://c/both/ckpt-1").assert_consumed()
    assert fresh.v.numpy() == 1.0


def test_restore_of_an_empty_directory_says_it_wants_a_prefix_or_a_directory_with_checkpoints() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(0.0))
    with pytest.raises(
        tp.CheckpointNotFoundError,
        match=r"(?s)no checkpoint at 'memory://c/empty': nothing is committed at that prefix .*not a directory holding "
        r"checkpoints\. Pass a checkpoint prefix.*-N suffix",
    ):
        ckpt.restore("memory://c/empty")


def test_a_save_whose_write_fails_gives_its_number_back() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    with gated_backends() as gate:
        gate.open.set()
        failing = tp.CheckpointOptions(backend="gated-memory")
        assert ckpt.save("memory://c/fails/ckpt", failing) == "memory://c/fails/ckpt-1"
        gate.fail = tp.StorageError("memory: the disk is full")
        with pytest.raises(tp.StorageError, match="the disk is full"):
            ckpt.save("memory://c/fails/ckpt", failing)
        assert ckpt.save_counter.numpy() == 1  # nothing was committed
        gate.fail = None
        assert ckpt.save("memory://c/fails/ckpt", failing) == "memory://c/fails/ckpt-2"
    assert tp.latest_checkpoint("memory://c/fails") == "memory://c/fails/ckpt-2"


def test_a_no_dependency_keyword_is_kept_unsaved() -> None:
    ckpt = tp.Checkpoint(note=tp.NoDependency("run 7"), v=tp.Variable(1.0))
    assert ckpt.note == "run 7"
    assert [key for key, _ in tp.list_variables(ckpt.write("memory://c/nodep"))] == [
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "v/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    with pytest.raises(
        tp.TrackableError,
        match=r"expecting root to be a trackable object \(an object derived from trackpoint\.Trackable, whose ",
    ):
        tp.Checkpoint(root={"w": 1.0})  # type: ignore[arg-type]
