"""TensorFlow's call shapes: sessions accepted and ignored, TensorFlow's option fields, weak roots, builtin errors."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import trackpoint as tp


class Session:
    """Stands in for a ``tf.compat.v1.Session`` (all trackpoint needs to recognise one is ``run``)."""

    def run(self, *fetches: object) -> None:
        raise AssertionError("trackpoint must not run anything in a session")


def test_checkpoint_save_write_and_statuses_take_a_session() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(2.0))
    path = ckpt.save("memory://shapes/ckpt", Session())  # TF1 positional form
    assert path == "memory://shapes/ckpt-1"
    assert ckpt.save("memory://shapes/ckpt", session=Session()) == "memory://shapes/ckpt-2"
    assert ckpt.write("memory://shapes/plain", Session()) == "memory://shapes/plain"
    status = tp.Checkpoint(v=tp.Variable(0.0)).restore(path)
    status.run_restore_ops(Session())
    status.initialize_or_restore(Session())
    status.assert_consumed()
    with pytest.raises(TypeError, match="options must be a trackpoint.CheckpointOptions"):
        ckpt.write("memory://shapes/bad", {"backend": "memory"})


def test_initialization_only_status_refuses_run_restore_ops() -> None:
    status = tp.Checkpoint(v=tp.Variable(1.0)).restore(None)
    with pytest.raises(tp.MatchError, match="No checkpoint specified, so no restore ops are available") as info:
        status.run_restore_ops(Session())
    assert isinstance(info.value, AssertionError)
    status.initialize_or_restore(Session())  # works without a checkpoint


def test_saver_takes_tensorflow_1_sessions() -> None:
    v = tp.Variable(3.0, name="v")
    saver = tp.Saver([v])
    first = saver.save(Session(), "memory://shapes/model", 7)
    second = saver.save(None, "memory://shapes/model", global_step=8, write_meta_graph=False)
    assert (first, second) == ("memory://shapes/model-7", "memory://shapes/model-8")
    assert saver.save("memory://shapes/plain", 3) == "memory://shapes/plain-3"  # trackpoint's own form
    v.assign(0.0)
    saver.restore(Session(), first)
    assert v.numpy() == 3.0
    v.assign(0.0)
    saver.restore(sess=None, save_path=second)
    assert v.numpy() == 3.0


def test_saver_restore_of_none_is_a_value_error_as_in_tensorflow() -> None:
    saver = tp.Saver([tp.Variable(1.0, name="v")])
    for call in (lambda: saver.restore(None), lambda: saver.restore(Session(), None)):
        with pytest.raises(ValueError, match="Can't load save_path when it is None") as info:
            call()
        assert isinstance(info.value, tp.CheckpointNotFoundError)  # 0.1's class still catches it


def test_checkpoint_options_accept_tensorflows_fields() -> None:
    options = tp.CheckpointOptions(experimental_io_device="/job:localhost", experimental_enable_async_checkpoint=False)
    assert options.experimental_io_device == "/job:localhost"
    path = tp.Checkpoint(v=tp.Variable(1.0)).save("memory://shapes/opts", options=options)
    assert tp.checkpoint_exists(path)
    # Async saves are implemented (tests/core/test_async.py): both spellings are accepted.
    assert tp.CheckpointOptions(enable_async=True).enable_async
    assert tp.CheckpointOptions(experimental_enable_async_checkpoint=True).experimental_enable_async_checkpoint
    for field, value in [
        ("experimental_skip_slot_variables", True),
        ("experimental_sharding_callback", object()),
    ]:
        with pytest.raises(tp.UnsupportedOptionError, match=rf"CheckpointOptions\({field}=\.\.\.\)") as info:
            tp.CheckpointOptions(**{field: value})
        assert isinstance(info.value, NotImplementedError)


def test_checkpoint_with_a_weakly_referenced_root() -> None:
    model = tp.AutoTrackable()
    model.v = tp.Variable(np.float32(1.0))
    ckpt = tp.Checkpoint(root=weakref.ref(model))
    assert isinstance(ckpt.root, weakref.ref) and ckpt.root() is model
    path = ckpt.save("memory://shapes/weak")
    assert [k for k, _ in tp.list_variables(path)] == [
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "v/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    other = tp.AutoTrackable()
    other.v = tp.Variable(np.float32(0.0))
    restoring = tp.Checkpoint(root=weakref.ref(other))
    restoring.restore(path).assert_consumed()  # save_counter included
    assert other.v.numpy() == 1.0 and restoring.save_counter.numpy() == 1
    alive = weakref.ref(model)
    gc.disable()
    try:
        del model  # the checkpoint does not keep it alive, even without the cycle collector
        assert alive() is None
    finally:
        gc.enable()
    with pytest.raises(tp.TrackableError, match="given as a weak reference, no longer exists"):
        ckpt.save("memory://shapes/weak")
