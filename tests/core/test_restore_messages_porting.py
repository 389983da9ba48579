"""Restore errors for a program that mirrors another's model: they name its objects and the checkpoint's names.

The checkpoint is laid out as Keras' are (see 'Keras checkpoints' in docs/tensorflow.md): the layers under
``model/_operations/<N>`` and the same variables under ``optimizer/_trainable_variables``, whose shorter path
gives the keys. It is written here, so the tests need neither TensorFlow nor Keras.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


class Layer(tp.AutoTrackable):
    pass


def keras_like(tmp_path: Path, extra: int = 0) -> str:
    """A checkpoint of ``model._operations[1]`` (``_kernel``, ``bias``) and an optimizer holding both."""
    model = Layer()
    model._operations = [Layer(), Layer()]
    conv = model._operations[1]
    conv._kernel = tp.Variable(np.ones((3, 3, 3, 4), np.float32))
    conv.bias = tp.Variable(np.ones(4, np.float32))
    optimizer = Layer()
    optimizer._trainable_variables = [conv._kernel, conv.bias]
    optimizer._momentums = [tp.Variable(np.zeros(i + 1, np.float32)) for i in range(extra)]
    return tp.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))


def mirror(operations: str = "_operations", kernel: str = "_kernel", bias_shape: int = 4) -> Layer:
    model = Layer()
    setattr(model, operations, [Layer(), Layer()])
    conv = getattr(model, operations)[1]
    setattr(conv, kernel, tp.Variable(np.zeros((3, 3, 3, 4), np.float32)))
    conv.bias = tp.Variable(np.zeros(bias_shape, np.float32))
    return model


def unmatched(path: str, model: Layer) -> str:
    status = tp.Checkpoint(model=model).read(path).expect_partial()
    with pytest.raises(tp.MatchError) as caught:
        status.assert_existing_objects_matched()
    return str(caught.value)


def test_a_misspelled_attribute_is_named_with_the_name_the_checkpoint_has_there(tmp_path: Path) -> None:
    path = keras_like(tmp_path)
    message = unmatched(path, mirror(operations="_operation"))
    # The program's object, described without its values.
    assert "  (root).model._operation.1._kernel: <trackpoint.Variable 'Variable' shape=(3, 3, 3, 4) dtype=float32>" in (
        message
    )
    assert "numpy=" not in message
    # Where the names part: the nearest matched object, the name meant and what nothing took there.
    assert (
        "at (root).model: the checkpoint has no '_operation' (did you mean '_operations'?); it has '_operations' "
        "there, which no object took"
    ) in message
    assert message.count("at (root).model:") == 1  # once for both objects under the misspelled name
    # The values left, named where the program's objects lead to them (not the optimizer's path of their key).
    assert (
        "  (root).model._operations.1._kernel: shape=(3, 3, 3, 4) dtype=float32 "
        "('optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE')"
    ) in message


def test_a_misspelled_variable_is_named_under_its_layer(tmp_path: Path) -> None:
    path = keras_like(tmp_path)
    message = unmatched(path, mirror(kernel="kernel"))
    assert "at (root).model._operations.1: the checkpoint has no 'kernel' (did you mean '_kernel'?); it has " in (
        message
    )
    assert "'_kernel' there, which no object took" in message  # bias was taken


def test_the_values_left_are_listed_up_to_a_bound(tmp_path: Path) -> None:
    path = keras_like(tmp_path, extra=30)
    message = unmatched(path, mirror(operations="_operation"))
    assert "The checkpoint's values that no object took (32):" in message
    assert "  ... and 12 more values" in message
    # The values under the program's model come before the optimizer's own.
    assert message.index("(root).model._operations.1.bias: ") < message.index("(root).optimizer._momentums.0: ")


def test_assert_consumed_describes_objects_without_their_values(tmp_path: Path) -> None:
    path = tp.Checkpoint(t=tp.Variable(np.ones(3000, np.float32))).write(str(tmp_path / "ckpt"))
    status = tp.Checkpoint(t=tp.Variable(np.zeros(3000, np.float32)), u=tp.Variable(np.zeros(3000))).read(path)
    with pytest.raises(tp.MatchError) as caught:
        status.assert_consumed()
    message = str(caught.value)
    assert "(root).u: <trackpoint.Variable 'Variable' shape=(3000,) dtype=float64>" in message
    assert len(message) < 1000


def test_a_shape_mismatch_names_the_programs_object_and_the_key(tmp_path: Path) -> None:
    path = keras_like(tmp_path)
    model = mirror(bias_shape=5)
    with pytest.raises(tp.ShapeMismatchError) as caught:
        tp.Checkpoint(model=model).read(path)
    assert str(caught.value).startswith(
        "(root).model._operations.1.bias: cannot restore 'optimizer/_trainable_variables/1/.ATTRIBUTES/"
        "VARIABLE_VALUE' into Variable"
    )
    assert "the checkpoint holds shape (4,), the variable has shape (5,)" in str(caught.value)


def test_several_mismatches_each_name_their_object(tmp_path: Path) -> None:
    path = keras_like(tmp_path)
    model = mirror(bias_shape=5)
    model._operations[1]._kernel = tp.Variable(np.zeros((3, 3, 4, 4), np.float32))
    with pytest.raises(tp.ShapeMismatchError, match="^2 values") as caught:
        tp.Checkpoint(model=model).read(path)
    message = str(caught.value)
    assert "\n  (root).model._operations.1._kernel: cannot restore 'optimizer/_trainable_variables/0/" in message
    assert "\n  (root).model._operations.1.bias: cannot restore 'optimizer/_trainable_variables/1/" in message


def test_a_mismatch_of_another_holder_of_an_array_saved_once_names_that_holder(tmp_path: Path) -> None:
    shared = np.zeros(2)
    path = tp.Checkpoint(model={"x": shared, "y": shared}).write(str(tmp_path / "ckpt"))  # saved once, under x
    with pytest.raises(tp.ShapeMismatchError) as caught:
        tp.Checkpoint(model={"x": np.zeros(2), "y": np.zeros(3)}).read(path)
    assert str(caught.value).startswith(
        "(root).model.y: cannot restore 'model/x/.ATTRIBUTES/VARIABLE_VALUE' into the numpy value 'y'"
    )


def unrestored_warning(caplog: pytest.LogCaptureFixture, restore: object) -> str:
    with caplog.at_level("WARNING", logger="trackpoint"):
        caplog.clear()
        restore()  # type: ignore[operator]
        gc.collect()
    return next(r.getMessage() for r in caplog.records if "unrestored values" in r.getMessage())


def test_the_unrestored_values_warning_names_the_call_that_was_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tp.Checkpoint(a=tp.Variable(1.0), b=tp.Variable(2.0)).save(str(tmp_path / "ckpt"))
    restored = unrestored_warning(caplog, lambda: tp.Checkpoint(a=tp.Variable(0.0)).restore(path))
    assert "call expect_partial() on the status Checkpoint.restore returned" in restored
    assert "CheckpointManager" not in restored
    read = unrestored_warning(caplog, lambda: tp.Checkpoint(a=tp.Variable(0.0)).read(path))
    assert "the status Checkpoint.read returned (checkpoint.read(path).expect_partial())" in read
    assert "CheckpointManager" not in read

    def resume() -> None:
        tp.CheckpointManager(tp.Checkpoint(a=tp.Variable(0.0)), str(tmp_path), max_to_keep=1).restore_or_initialize()

    resumed = unrestored_warning(caplog, resume)
    assert "restore with checkpoint.restore(manager.latest_checkpoint).expect_partial() instead of " in resumed


def test_nothing_matched_names_the_top_level_names_of_the_checkpoint(tmp_path: Path) -> None:
    path = keras_like(tmp_path)
    status = tp.Checkpoint(modle=mirror()).read(path).expect_partial()
    with pytest.raises(tp.MatchError, match="^Nothing except the root object matched") as caught:
        status.assert_nontrivial_match()
    assert "at (root): the checkpoint has no 'modle' (did you mean 'model'?); it has 'model', 'optimizer' there" in (
        str(caught.value)
    )
