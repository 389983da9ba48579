"""``PythonState``: arbitrary Python state saved as one string tensor."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import DTypeMismatchError, ShapeMismatchError, TrackableError
from trackpoint.trackable import Trackable

if TYPE_CHECKING:
    from trackpoint.storage import TensorInfo

__all__ = ["PYTHON_STATE", "PythonState"]

#: Attribute name of the saved string (TensorFlow's ``py_state``).
PYTHON_STATE = "py_state"


class PythonState(Trackable, metaclass=abc.ABCMeta):
    """State that is not an array, saved as a scalar string (``tf.train.experimental.PythonState``).

    Subclasses implement :meth:`serialize` and :meth:`deserialize`. The value
    is saved under the attribute ``py_state``; checkpoints store it after all
    regular tensors, as TensorFlow does.

    Examples
    --------
    >>> import json
    >>> class Config(PythonState):
    ...     def __init__(self) -> None:
    ...         self.data = {"lr": 0.1}
    ...     def serialize(self) -> str:
    ...         return json.dumps(self.data)
    ...     def deserialize(self, string_value: str | bytes) -> None:
    ...         self.data = json.loads(string_value)
    """

    @abc.abstractmethod
    def serialize(self) -> str | bytes:
        """The state to save; ``str`` is stored UTF-8 encoded."""

    @abc.abstractmethod
    def deserialize(self, string_value: str | bytes) -> None:
        """Restore the state from the saved ``bytes`` (what :meth:`serialize` returned, encoded)."""

    def _serialize_to_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        value = self.serialize()
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise TrackableError(
                f"{type(self).__name__}.serialize() must return str or bytes, got {type(value).__name__}"
            )
        out = np.empty((), dtype=object)
        out[()] = value
        return {PYTHON_STATE: out}

    def _checkpoint_attribute_names(self) -> tuple[str, ...]:
        return (PYTHON_STATE,)

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(PYTHON_STATE)
        if info is None:
            return
        if info.dtype != np.dtype(object):
            raise DTypeMismatchError(
                f"cannot restore {where[PYTHON_STATE]!r} into {type(self).__name__}: expected a string, "
                f"the checkpoint holds dtype {info.dtype}"
            )
        if tuple(info.shape) != ():
            raise ShapeMismatchError(
                f"cannot restore {where[PYTHON_STATE]!r} into {type(self).__name__}: expected a scalar, "
                f"the checkpoint holds shape {tuple(info.shape)}"
            )

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if PYTHON_STATE in tensors:
            value = np.asarray(tensors[PYTHON_STATE], dtype=object)[()]
            self.deserialize(value.encode("utf-8") if isinstance(value, str) else bytes(value))
