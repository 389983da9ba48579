"""TensorFlow's variable-creation extension points on Trackable: custom getters, and no broadcasting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import trackpoint as tp


def _getter(name: str, shape: Any, dtype: Any, initializer: Any, **kwargs: Any) -> tp.Variable:
    value = initializer(shape=shape, dtype=dtype) if callable(initializer) else np.zeros(shape, dtype)
    return tp.Variable(value, name=name, trainable=kwargs.get("trainable", True))


def test_custom_getter_creates_tracks_and_restores_on_create() -> None:
    root = tp.AutoTrackable()
    made = root._add_variable_with_custom_getter("v", shape=(2,), dtype=np.float32, getter=_getter, trainable=False)
    assert tp.list_objects(root) == [root, made] and not made.trainable
    made.assign(np.array([3.0, 4.0], np.float32))
    path = tp.Checkpoint(root=root).write("memory://getter/ckpt")

    seen: list[Any] = []

    def recording_getter(**kwargs: Any) -> tp.Variable:
        seen.append(kwargs["initializer"])
        return _getter(**kwargs)

    fresh = tp.AutoTrackable()
    status = tp.Checkpoint(root=fresh).read(path)
    restored = fresh._add_variable_with_custom_getter("v", shape=(2,), dtype=np.float32, getter=recording_getter)
    assert callable(seen[0])  # the getter was handed the checkpoint's value as its initializer
    np.testing.assert_array_equal(restored.numpy(), [3.0, 4.0])
    status.assert_consumed()


def test_custom_getter_overwrite_rules() -> None:
    root = tp.Trackable()
    first = root._add_variable_with_custom_getter("v", shape=(), getter=_getter)
    second = root._add_variable_with_custom_getter("v", shape=(), getter=_getter, overwrite=True)
    assert tp.list_objects(root) == [root, second] and second is not first
    with pytest.raises(tp.NameConflictError, match="already declared as a dependency"):
        root._add_variable_with_custom_getter("v", shape=(), getter=_getter)
    plain = root._add_variable_with_custom_getter("w", shape=(), getter=lambda **_: 5.0, overwrite=True)
    assert plain == 5.0 and root._lookup_dependency("w") is None  # not trackable: returned untracked
    with pytest.raises(tp.TrackableError, match="needs a getter"):
        root._add_variable_with_custom_getter("x", shape=())


def test_add_variable_does_not_broadcast_a_constant() -> None:
    holder = tp.AutoTrackable()
    with pytest.raises(tp.ShapeMismatchError, match=r"constant of shape \(\), but shape \(2,\).*do not specify shape"):
        holder.add_variable("w", shape=(2,), initializer=1.0)
    assert holder.add_variable("s", shape=(), initializer=1.0).numpy() == 1.0
    filled = holder.add_variable("f", shape=(2,), initializer=lambda shape, dtype: np.full(shape, 1.0, dtype))
    np.testing.assert_array_equal(filled.numpy(), [1.0, 1.0])
