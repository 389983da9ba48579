"""``Variable``: a named, mutable numpy array that checkpoints track."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint import dtypes
from trackpoint.errors import DTypeMismatchError, ShapeMismatchError
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

if TYPE_CHECKING:
    from trackpoint.storage import TensorInfo

__all__ = ["Variable"]


class Variable(Trackable):
    """A named, mutable holder of one numpy array (``tf.Variable`` on numpy).

    The array is owned by the variable, C-contiguous, and keeps its dtype and
    shape for life: assignments copy into it, restores read straight into it.

    Parameters
    ----------
    initial_value
        Array, numpy scalar, Python scalar or (nested) list, or a callable
        returning one. Python floats default to float32 and Python ints to
        int32 (int64 when too large), as in TensorFlow; ``str``/``bytes`` give a
        string variable.
    dtype
        Element type; when given, the initial value is converted if that is
        lossless (:class:`DTypeMismatchError` otherwise).
    name
        The variable's name (``"Variable"`` by default), saved as ``full_name``
        in the object graph and used by name-based restores.
    trainable
        Whether optimizers should update it; informational.
    shape
        Expected shape; :class:`ShapeMismatchError` if the value differs.

    Raises
    ------
    UnsupportedDTypeError
        The value's type cannot be stored in a checkpoint.
    """

    _value: np.ndarray[Any, Any]
    # Set while an async save still has to write ``_value`` (trackpoint._async): writes then
    # go through _async.writable_buffer, which keeps the pinned buffer unchanged for the writer.
    _pin: Any = None

    def __init__(
        self,
        initial_value: Any,
        dtype: Any = None,
        name: str | None = None,
        trainable: bool = True,
        shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        self._maybe_initialize_trackable()
        self._name = "Variable" if name is None else str(name)
        self._trainable = bool(trainable)
        if callable(initial_value):
            factory: Callable[[], Any] = initial_value
            initial_value = factory()
        value = dtypes.convert_initial_value(initial_value, dtype, f"Variable {self._name!r}")
        if shape is not None and tuple(int(d) for d in shape) != value.shape:
            raise ShapeMismatchError(
                f"Variable {self._name!r}: initial value has shape {value.shape}, but shape {tuple(shape)} was given"
            )
        self._value = value

    @classmethod
    def _uninitialized(cls, shape: tuple[int, ...], dtype: np.dtype[Any], *, name: str, trainable: bool) -> Variable:
        """A variable whose buffer is allocated but not filled (a restore fills it)."""
        self = cls.__new__(cls)
        self._maybe_initialize_trackable()
        self._name = name
        self._trainable = trainable
        dtype = dtypes.as_dtype(dtype)
        self._value = np.empty(shape, dtype=dtype) if dtype != dtypes.string else np.full(shape, b"", dtype=object)
        return self

    # ------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """The variable's name."""
        return self._name

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type (``trackpoint.string`` for strings)."""
        dtype: np.dtype[Any] = self._value.dtype
        return dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape, fixed at creation."""
        return tuple(self._value.shape)

    @property
    def trainable(self) -> bool:
        """Whether optimizers should update this variable."""
        return self._trainable

    @property
    def value(self) -> np.ndarray[Any, Any]:
        """A read-only view of the current value (it follows later assignments)."""
        view = self._value.view()
        view.flags.writeable = False
        return view

    def numpy(self) -> np.ndarray[Any, Any]:
        """A copy of the current value."""
        return self._value.copy()

    def read_value(self) -> np.ndarray[Any, Any]:
        """A copy of the current value (``tf.Variable.read_value``)."""
        return self._value.copy()

    # ------------------------------------------------------------ assignment
    def _converted(self, value: Any, op: str) -> np.ndarray[Any, Any]:
        where = f"{op} to Variable {self._name!r}"
        if isinstance(value, Variable):
            value = value._value
        arr = dtypes.convert_for_assign(value, self._value.dtype, where)
        if arr.shape != self._value.shape:
            raise ShapeMismatchError(f"{where}: value has shape {arr.shape}, the variable has shape {self.shape}")
        return arr

    def assign(self, value: Any) -> Variable:
        """Replace the value; dtype and shape must match. Returns ``self``.

        Raises
        ------
        DTypeMismatchError
            ``value`` is an array of another dtype, or Python data that does
            not fit (a float for an integer variable, an out-of-range int).
        ShapeMismatchError
            ``value`` has another shape.

        A failed assign leaves the value unchanged.
        """
        arr = self._converted(value, "assign")
        if self._pin is None:
            np.copyto(self._value, arr)
        else:
            self._write_pinned(lambda out: np.copyto(out, arr))
        return self

    def _write_pinned(self, write: Callable[[np.ndarray[Any, Any]], Any]) -> None:
        """Run ``write`` (which fills the array it is given) while an async save pins the value.

        ``write`` gets either a new buffer, which becomes the variable's value
        (the pinned one stays as it was for the save), or, once the save no
        longer needs it, the variable's own buffer; ``self._value`` holds the
        old value while ``write`` runs.
        """
        from trackpoint import _async

        target = _async.writable_buffer(self)
        if target is self._value:
            write(target)
            return
        try:
            write(target)
        except BaseException:
            # A failed write leaves the value as it was, as it does without a save.
            np.copyto(target, self._value)
            raise
        finally:
            self._value = target

    def _check_arithmetic(self, op: str) -> None:
        if self._value.dtype.kind not in "iufcV":
            raise DTypeMismatchError(
                f"{op} on Variable {self._name!r}: not defined for dtype {dtypes._name(self.dtype)}"
            )

    def assign_add(self, delta: Any) -> Variable:
        """Add ``delta`` in place (numeric variables only). Returns ``self``."""
        self._check_arithmetic("assign_add")
        arr = self._converted(delta, "assign_add")
        if self._pin is None:
            np.add(self._value, arr, out=self._value)
        else:
            self._write_pinned(lambda out: np.add(self._value, arr, out=out))
        return self

    def assign_sub(self, delta: Any) -> Variable:
        """Subtract ``delta`` in place (numeric variables only). Returns ``self``."""
        self._check_arithmetic("assign_sub")
        arr = self._converted(delta, "assign_sub")
        if self._pin is None:
            np.subtract(self._value, arr, out=self._value)
        else:
            self._write_pinned(lambda out: np.subtract(self._value, arr, out=out))
        return self

    # -------------------------------------------------------------- protocol
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        if dtype is not None and np.dtype(dtype) != self._value.dtype:
            return self._value.astype(dtype)
        return self._value.copy() if copy else self.value

    def __repr__(self) -> str:
        return (
            f"<trackpoint.Variable {self._name!r} shape={self.shape} dtype={dtypes._name(self.dtype)}, "
            f"numpy={np.array_repr(self._value)}>"
        )

    # ----------------------------------------------------------- checkpoints
    def _serialize_to_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        # No copy: a synchronous save finishes before returning; an async one pins the buffer
        # and every write then goes through _write_pinned (trackpoint._async).
        return {VARIABLE_VALUE_KEY: self._value}

    def _checkpoint_attribute_names(self) -> tuple[str, ...]:
        return (VARIABLE_VALUE_KEY,)

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(VARIABLE_VALUE_KEY)
        if info is None:
            return
        key = where[VARIABLE_VALUE_KEY]
        if info.dtype != self._value.dtype:
            raise DTypeMismatchError(
                f"cannot restore {key!r} into Variable {self._name!r}: the checkpoint holds dtype "
                f"{dtypes._name(info.dtype)}, the variable has dtype {dtypes._name(self.dtype)}"
            )
        if tuple(info.shape) != self._value.shape:
            raise ShapeMismatchError(
                f"cannot restore {key!r} into Variable {self._name!r}: the checkpoint holds shape "
                f"{tuple(info.shape)}, the variable has shape {self.shape}"
            )

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if VARIABLE_VALUE_KEY in tensors:
            self.assign(tensors[VARIABLE_VALUE_KEY])

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        # Numeric values are read straight into the variable's own buffer
        # (dtype and shape were checked first), so a restore copies once.
        if attribute == VARIABLE_VALUE_KEY and self._value.dtype != dtypes.string:
            if self._pin is not None:
                # An async save still writes the current buffer: read into another one, which
                # starts as a copy so that a failed read leaves the value as it was.
                self._write_pinned(lambda out: None if out is self._value else np.copyto(out, self._value))
            return self._value
        return None
