"""Load-status messages start with TensorFlow's wording, so code matching on them keeps working."""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp


def test_unresolved_object_wording() -> None:
    path = tp.Checkpoint(a=tp.Variable(1.0), b=tp.Variable(2.0)).write("memory://msg/a")
    status = tp.Checkpoint(a=tp.Variable(0.0)).read(path)
    with pytest.raises(AssertionError, match=r"Unresolved object in checkpoint \(root\)\.b: b/\.ATTRIBUTES"):
        status.assert_consumed()


def test_unbound_python_objects_wording() -> None:
    path = tp.Checkpoint(a=tp.Variable(1.0)).write("memory://msg/b")
    status = tp.Checkpoint(a=tp.Variable(0.0), extra=tp.Variable(0.0)).read(path)
    with pytest.raises(
        AssertionError,
        match="Found 1 Python objects that were not bound to checkpointed values, likely due to changes in the "
        "Python program",
    ):
        status.assert_existing_objects_matched()


class TwoValues(tp.Trackable):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.got: dict[str, object] = {}

    def _serialize_to_tensors(self) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
        return {n: np.float32(1.0) * np.ones(()) for n in self.names}

    def _restore_from_tensors(self, tensors: object) -> None:
        self.got = dict(tensors)  # type: ignore[call-overload]


def test_unused_attributes_wording() -> None:
    path = tp.Checkpoint(t=TwoValues(("x", "y"))).write("memory://msg/c")
    status = tp.Checkpoint(t=TwoValues(("x",))).read(path)
    with pytest.raises(
        AssertionError, match=r"Unused attributes in these objects \(the attributes exist in the checkpoint but were"
    ):
        status.assert_consumed()
