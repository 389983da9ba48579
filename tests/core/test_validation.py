"""A checkpoint that does not fit raises before any object changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


def _model(a: np.ndarray, b: np.ndarray) -> tp.AutoTrackable:
    model = tp.AutoTrackable()
    model.a = tp.Variable(a, name="a")
    model.sub = tp.AutoTrackable()
    model.sub.b = tp.Variable(b, name="b")
    return model


def _saved() -> str:
    return tp.Checkpoint(model=_model(np.ones(2, np.float32), np.ones(3, np.float32))).save("memory://v/ckpt")


def test_shape_mismatch_deep_in_the_graph_changes_nothing() -> None:
    path = _saved()
    model = _model(np.zeros(2, np.float32), np.zeros(4, np.float32))
    ckpt = tp.Checkpoint(model=model)
    with pytest.raises(
        tp.ShapeMismatchError,
        match=r"cannot restore 'model/sub/b/\.ATTRIBUTES/VARIABLE_VALUE' into Variable 'b': the checkpoint holds "
        r"shape \(3,\), the variable has shape \(4,\)",
    ):
        ckpt.restore(path)
    np.testing.assert_array_equal(model.a.numpy(), [0.0, 0.0])
    assert model.a._update_uid == -1
    assert model._deferred_dependencies == {}


def test_dtype_mismatch_changes_nothing() -> None:
    path = _saved()
    model = _model(np.zeros(2, np.float32), np.zeros(3, np.float64))
    with pytest.raises(tp.DTypeMismatchError, match="holds dtype float32, the variable has dtype float64"):
        tp.Checkpoint(model=model).restore(path)
    np.testing.assert_array_equal(model.a.numpy(), [0.0, 0.0])


def test_failed_deferred_restore_leaves_attribute_untracked() -> None:
    path = _saved()
    holder = tp.AutoTrackable()
    ckpt = tp.Checkpoint(model=holder)
    status = ckpt.restore(path)
    sub = tp.AutoTrackable()
    sub.b = tp.Variable(np.zeros(5, np.float32))
    with pytest.raises(tp.ShapeMismatchError, match=r"shape \(3,\), the variable has shape \(5,\)"):
        holder.sub = sub
    assert holder._lookup_dependency("sub") is None
    np.testing.assert_array_equal(sub.b.numpy(), np.zeros(5))
    # The value still waits and is applied to a fitting object.
    fitting = tp.AutoTrackable()
    fitting.b = tp.Variable(np.zeros(3, np.float32))
    holder.sub = fitting
    np.testing.assert_array_equal(fitting.b.numpy(), np.ones(3))
    status.expect_partial()


def test_string_into_numeric_variable_is_refused() -> None:
    path = tp.Checkpoint(v=tp.Variable("text")).write("memory://v/str")
    target = tp.Variable(0.0)
    with pytest.raises(tp.DTypeMismatchError, match="holds dtype string, the variable has dtype float32"):
        tp.Checkpoint(v=target).read(path)
    assert target.numpy() == 0.0


def test_missing_tensor_referenced_by_graph_is_invalid() -> None:
    from trackpoint import _resolve
    from trackpoint.checkpoint import write_items
    from trackpoint.graph import ObjectGraphView
    from trackpoint.storage import WriteItem

    items = write_items(ObjectGraphView(tp.Checkpoint(v=tp.Variable(1.0))))
    graph_only = [it for it in items if it.key == "_CHECKPOINTABLE_OBJECT_GRAPH"]
    _resolve.open_backend("memory://v/broken").save(
        "memory://v/broken", [WriteItem(i.key, i.array) for i in graph_only]
    )
    target = tp.Variable(0.0)
    with pytest.raises(
        tp.InvalidCheckpointError,
        match="refers to 'v/.ATTRIBUTES/VARIABLE_VALUE', which the checkpoint does not contain",
    ):
        tp.Checkpoint(v=target).read("memory://v/broken")
    assert target.numpy() == 0.0


def test_unparseable_object_graph_is_invalid() -> None:
    from trackpoint import _resolve
    from trackpoint.storage import WriteItem

    graph = np.empty((), dtype=object)
    graph[()] = b"\xff\xff\xff not a proto"
    _resolve.open_backend("memory://v/garbage").save(
        "memory://v/garbage", [WriteItem("_CHECKPOINTABLE_OBJECT_GRAPH", graph)]
    )
    with pytest.raises(
        tp.InvalidCheckpointError, match="object graph stored in 'memory://v/garbage'.*cannot be parsed"
    ):
        tp.Checkpoint(v=tp.Variable(0.0)).read("memory://v/garbage")


def test_slot_variable_reused_as_dependency_cannot_be_saved() -> None:
    w = tp.Variable(np.zeros(2, np.float32), name="w")
    opt = tp.optimizers.SGD(0.1, momentum=0.5)
    opt.apply_gradients([(np.ones(2), w)])
    root = tp.AutoTrackable()
    root.w = w
    root.opt = opt
    root.leak = opt.get_slot(w, "momentum")
    with pytest.raises(tp.TrackableError, match="slot 'momentum' of SGD is also a dependency"):
        tp.Checkpoint(root=root).write("memory://v/leak")


def _flip_first_byte_of(directory: Path, values: np.ndarray) -> None:
    """Corrupt the stored bytes of ``values`` in the checkpoint's one data file."""
    (data,) = directory.glob("ckpt.data-*")
    raw = bytearray(data.read_bytes())
    at = raw.find(values.tobytes())
    assert at >= 0
    raw[at] ^= 0xFF
    data.write_bytes(raw)


@pytest.mark.parametrize("how", ["checkpoint", "saver"])
def test_a_read_that_fails_midway_says_arrays_may_be_partly_restored(tmp_path: Path, how: str) -> None:
    b_values = np.arange(3, dtype=np.float32) + 7
    saved = _model(np.ones(2, np.float32), b_values)
    model = _model(np.zeros(2, np.float32), np.zeros(3, np.float32))
    if how == "checkpoint":
        path = tp.Checkpoint(model=saved, best=np.float64(0.5)).write(str(tmp_path / "ckpt"))
        target = tp.Checkpoint(model=model, best=np.float64(0.0))
        _flip_first_byte_of(tmp_path, b_values)
        with pytest.raises(tp.DataLossError, match=r"CRC-32C mismatch for tensor 'model/sub/b/") as info:
            target.read(path)
        assert target.best == 0.0  # replaced only once every value was read: as it was
    else:
        path = tp.Saver([saved.a, saved.sub.b]).save(None, str(tmp_path / "ckpt"), write_state=False)
        _flip_first_byte_of(tmp_path, b_values)
        with pytest.raises(tp.DataLossError, match=r"CRC-32C mismatch for tensor 'b'") as info:
            tp.Saver([model.a, model.sub.b]).restore(None, path)
    (note,) = info.value.__notes__
    assert "may already hold some of the checkpoint's values" in note and "Restore again" in note
    assert not np.array_equal(model.sub.b.numpy(), b_values)  # never the saved value: it is corrupt


def test_a_restore_refused_before_reading_has_no_note() -> None:
    path = _saved()
    with pytest.raises(tp.ShapeMismatchError) as info:
        tp.Checkpoint(model=_model(np.zeros(2, np.float32), np.zeros(4, np.float32))).restore(path)
    assert not getattr(info.value, "__notes__", [])
