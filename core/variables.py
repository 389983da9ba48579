"""``Variable``: a named, mutable numpy array that checkpoints track."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from trackpoint import _signal_safe, dtypes
from trackpoint._slices import TensorSlice
from trackpoint.errors import DTypeMismatchError, ShapeMismatchError
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

if TYPE_CHECKING:
    from trackpoint.storage import TensorInfo

__all__ = ["SaveSliceInfo", "Variable"]


@dataclass(frozen=True, slots=True, init=False)
class SaveSliceInfo:
    """How a variable holding one slice of a larger tensor is saved (TensorFlow's ``Variable.SaveSliceInfo``).

    Pass it as ``Variable(value, save_slice_info=...)``: the variable's value
    is the slice ``var_offset`` .. ``var_offset + var_shape`` of a tensor of
    shape ``full_shape``. A save writes the slice as TensorFlow writes a slice
    of a partitioned variable, so the slices saved by several variables (in
    one process or several) form one tensor in the checkpoint, and a restore
    reads exactly this slice, however the checkpoint was partitioned.

    Parameters
    ----------
    full_name
        Name of the whole tensor. Name-based restores (checkpoints without
        an object graph, TensorFlow 1's ``Saver``) look the value up under it;
        object-based saves key the value by the variable's path, as
        TensorFlow 2 does.
    full_shape
        Shape of the whole tensor.
    var_offset
        Where this variable's slice starts, per dimension.
    var_shape
        Shape of this variable's slice (the variable's own shape).

    Raises
    ------
    ValueError
        The shapes and offset have different ranks or the slice does not lie
        inside ``full_shape``.

    Examples
    --------
    >>> import numpy as np, trackpoint as tp
    >>> info = tp.SaveSliceInfo("emb", full_shape=[4, 2], var_offset=[2, 0], var_shape=[2, 2])
    >>> info.spec
    '4 2 2,2:0,2'
    >>> tp.Variable(np.zeros((2, 2), np.float32), save_slice_info=info).save_slice_info.var_offset
    (2, 0)
    """

    full_name: str | None
    full_shape: tuple[int, ...]
    var_offset: tuple[int, ...]
    var_shape: tuple[int, ...]

    def __init__(
        self,
        full_name: str | None = None,
        full_shape: Sequence[int] = (),
        var_offset: Sequence[int] = (),
        var_shape: Sequence[int] = (),
    ) -> None:
        # The geometry is validated once, by TensorSlice.
        geometry = TensorSlice(tuple(full_shape), tuple(var_offset), tuple(var_shape))
        object.__setattr__(self, "full_name", None if full_name is None else str(full_name))
        object.__setattr__(self, "full_shape", geometry.full_shape)
        object.__setattr__(self, "var_offset", geometry.offset)
        object.__setattr__(self, "var_shape", geometry.shape)

    @property
    def spec(self) -> str:
        """The slice spec TensorFlow saves with the value: ``"d0 d1 off0,len0:off1,len1"``."""
        return self.slice.spec

    @property
    def slice(self) -> TensorSlice:
        """The slice as a :class:`TensorSlice` (the form the storage contract uses)."""
        return TensorSlice(self.full_shape, self.var_offset, self.var_shape)

    @classmethod
    def from_spec(cls, spec: str, full_name: str | None = None) -> SaveSliceInfo:
        """Parse a spec string (as :attr:`spec` gives it, or TensorFlow's ``-`` for a whole dimension).

        Raises
        ------
        ValueError
            ``spec`` is not a slice spec.
        """
        s = TensorSlice.from_spec(spec)
        return cls(full_name, s.full_shape, s.offset, s.shape)


def _refuse_in_place(symbol: str, instead: str) -> Callable[[Variable, Any], NoReturn]:
    """An in-place operator of :class:`Variable` that raises, naming the call that changes the variable."""

    def refuse(self: Variable, other: Any) -> NoReturn:
        self._no_in_place(symbol, instead)

    return refuse


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
    save_slice_info
        A :class:`SaveSliceInfo` when the variable holds one slice of a larger
        tensor: saves write it as that slice, restores read just that slice.
        Its ``var_shape`` must be the value's shape.

    Raises
    ------
    UnsupportedDTypeError
        The value's type cannot be stored in a checkpoint.
    ShapeMismatchError
        The value's shape differs from ``shape`` or from the slice's ``var_shape``.
    AssignmentError
        A nested list is not rectangular.

    Notes
    -----
    Arrays of other libraries are arrays too and keep their dtype: a torch
    tensor (detached and copied to the host first; ``torch.bfloat16`` becomes
    :data:`trackpoint.bfloat16`), a JAX array, or any object with a ``dtype``
    and a ``shape`` that numpy can convert (``__array__``,
    ``__array_interface__``, ``__dlpack__``).

    In expressions a variable stands for its current value, as an eager
    ``tf.Variable`` does, and every result is a numpy value, never a variable:
    ``int(v)``, ``float(v)``, ``complex(v)``, ``operator.index(v)`` (integer
    dtypes), ``bool(v)``, ``len(v)``, ``v[i]`` (a copy), iteration, ``x in v``,
    the arithmetic, bitwise and matrix operators (also reflected), unary
    ``-v``, ``+v``, ``abs(v)``, ``~v``, and the comparisons. Each follows
    numpy's rules for the value: ``bool`` of more than one element raises
    ``ValueError``, ``len`` of a scalar raises ``TypeError``.

    ``==`` and ``!=`` compare elementwise, as in TensorFlow 2 (``v == None``
    is ``False``; shapes that do not broadcast compare unequal). Unlike
    TensorFlow's, variables stay hashable, by identity: sets and dict keys
    hold distinct variables apart whatever their values. Lists compare their
    elements with ``==``, so ``list.index``, ``list.remove`` and ``in`` on a
    list of variables ask about values, as in TensorFlow; use ``is`` (or
    ``id``) to find one variable. ``weakref.WeakKeyDictionary`` and
    ``WeakSet`` compare their keys with ``==`` too (elementwise: ambiguous for
    more than one element, false for NaN): key those by ``id(v)``.

    In-place operators (``v += 1``) raise ``TypeError``: Python would rebind
    ``v`` to a new numpy value and the variable, still saved by its owner,
    would silently stop changing. Use :meth:`assign_add`, :meth:`assign_sub`
    or :meth:`assign` (``v.assign(v * 2)``).

    Examples
    --------
    >>> import trackpoint as tp
    >>> step = tp.Variable(9)
    >>> step.assign_add(1)  # doctest: +ELLIPSIS
    <trackpoint.Variable 'Variable' shape=() dtype=int32, numpy=array(10, dtype=int32)>
    >>> int(step) % 10 == 0, bool(step == 10), step * 2
    (True, True, np.int32(20))
    """

    _value: np.ndarray[Any, Any]
    # Set while an async save still has to write ``_value`` (trackpoint._async): writes then
    # go through _async.writable_buffer, which keeps the pinned buffer unchanged for the writer.
    _pin: Any = None
    # A class default: subclasses that build instances without __init__ hold whole values.
    _save_slice_info: SaveSliceInfo | None = None

    def __init__(
        self,
        initial_value: Any,
        dtype: Any = None,
        name: str | None = None,
        trainable: bool = True,
        shape: tuple[int, ...] | list[int] | None = None,
        *,
        save_slice_info: SaveSliceInfo | None = None,
    ) -> None:
        self._maybe_initialize_trackable()
        self._save_slice_info = None
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
        if save_slice_info is not None:
            self._set_save_slice_info(save_slice_info)

    @classmethod
    def _uninitialized(cls, shape: tuple[int, ...], dtype: np.dtype[Any], *, name: str, trainable: bool) -> Variable:
        """A variable whose buffer is allocated but not filled (a restore fills it)."""
        self = cls.__new__(cls)
        self._maybe_initialize_trackable()
        self._name = name
        self._trainable = trainable
        self._save_slice_info = None
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
    def save_slice_info(self) -> SaveSliceInfo | None:
        """The slice of a larger tensor this variable holds, ``None`` for a whole value."""
        return self._save_slice_info

    def _set_save_slice_info(self, save_slice_info: SaveSliceInfo | None) -> None:
        """Declare (or, with ``None``, forget) the slice this variable holds (TensorFlow's name)."""
        if save_slice_info is not None:
            if not isinstance(save_slice_info, SaveSliceInfo):
                raise TypeError(
                    f"Variable {self._name!r}: save_slice_info must be a trackpoint.SaveSliceInfo, got "
                    f"{type(save_slice_info).__name__}"
                )
            if save_slice_info.var_shape != self._value.shape:
                raise ShapeMismatchError(
                    f"Variable {self._name!r}: the value has shape {self._value.shape}, but its save_slice_info "
                    f"declares a slice of shape {save_slice_info.var_shape}"
                )
        self._save_slice_info = save_slice_info

    def _get_save_slice_info(self) -> SaveSliceInfo | None:
        """TensorFlow's accessor of :attr:`save_slice_info`."""
        return self._save_slice_info

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

    @_signal_safe.guarded
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
        return f"{self._describe()[:-1]}, numpy={np.array_repr(self._value)}>"

    def _describe(self) -> str:
        """The repr without the value: messages name variables by this, short whatever their size."""
        return f"<trackpoint.Variable {self._name!r} shape={self.shape} dtype={dtypes._name(self.dtype)}>"

    def __format__(self, spec: str) -> str:
        # f"{loss:.3f}" formats the value, as for a tensor; f"{v}" keeps the repr, which names the variable.
        return format(self._value, spec) if spec else str(self)

    # The eager value protocol of tf.Variable: each operator acts on the current value and returns
    # numpy's result. Results never alias the buffer, which later assignments and restores overwrite.
    def __int__(self) -> int:
        return int(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __complex__(self) -> complex:
        return complex(self._value)

    def __index__(self) -> int:
        return operator.index(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __getitem__(self, key: Any) -> Any:
        item = self._value[key]
        # Basic indexing gives a view of the buffer; the caller gets a value of its own.
        return item.copy() if isinstance(item, np.ndarray) else item

    def __iter__(self) -> Iterator[Any]:
        # Defined so that iteration does not fall back to __getitem__ (which would end a loop over a
        # scalar silently, at the first IndexError): numpy raises TypeError for a 0-d value.
        return iter(self._value.copy())

    def __contains__(self, item: object) -> bool:
        return bool(_operand(item) in self._value)

    def __eq__(self, other: object) -> Any:
        if other is None:  # as TensorFlow: a plain False, not an array of them
            return False
        try:
            return self._value == _operand(other)
        except ValueError:
            # Shapes that do not broadcast are unequal (TensorFlow's incompatible_shape_error=False).
            return np.False_

    def __ne__(self, other: object) -> Any:
        if other is None:
            return True
        try:
            return self._value != _operand(other)
        except ValueError:
            return np.True_

    # Identity, as before __eq__ was elementwise: dict and set lookups compare hashes first and
    # identity next, so distinct variables (whose identity hashes differ) never reach __eq__.
    __hash__ = object.__hash__

    def __lt__(self, other: Any) -> Any:
        return self._value < _operand(other)

    def __le__(self, other: Any) -> Any:
        return self._value <= _operand(other)

    def __gt__(self, other: Any) -> Any:
        return self._value > _operand(other)

    def __ge__(self, other: Any) -> Any:
        return self._value >= _operand(other)

    def __neg__(self) -> Any:
        return -self._value

    def __pos__(self) -> Any:
        return +self._value

    def __abs__(self) -> Any:
        return abs(self._value)

    def __invert__(self) -> Any:
        return ~self._value

    def __add__(self, other: Any) -> Any:
        return self._value + _operand(other)

    def __radd__(self, other: Any) -> Any:
        return _operand(other) + self._value

    def __sub__(self, other: Any) -> Any:
        return self._value - _operand(other)

    def __rsub__(self, other: Any) -> Any:
        return _operand(other) - self._value

    def __mul__(self, other: Any) -> Any:
        return self._value * _operand(other)

    def __rmul__(self, other: Any) -> Any:
        return _operand(other) * self._value

    def __truediv__(self, other: Any) -> Any:
        return self._value / _operand(other)

    def __rtruediv__(self, other: Any) -> Any:
        return _operand(other) / self._value

    def __floordiv__(self, other: Any) -> Any:
        return self._value // _operand(other)

    def __rfloordiv__(self, other: Any) -> Any:
        return _operand(other) // self._value

    def __mod__(self, other: Any) -> Any:
        return self._value % _operand(other)

    def __rmod__(self, other: Any) -> Any:
        return _operand(other) % self._value

    def __divmod__(self, other: Any) -> Any:
        return divmod(self._value, _operand(other))

    def __rdivmod__(self, other: Any) -> Any:
        return divmod(_operand(other), self._value)

    def __pow__(self, other: Any) -> Any:
        return self._value ** _operand(other)

    def __rpow__(self, other: Any) -> Any:
        return _operand(other) ** self._value

    def __matmul__(self, other: Any) -> Any:
        return self._value @ _operand(other)

    def __rmatmul__(self, other: Any) -> Any:
        return _operand(other) @ self._value

    def __and__(self, other: Any) -> Any:
        return self._value & _operand(other)

    def __rand__(self, other: Any) -> Any:
        return _operand(other) & self._value

    def __or__(self, other: Any) -> Any:
        return self._value | _operand(other)

    def __ror__(self, other: Any) -> Any:
        return _operand(other) | self._value

    def __xor__(self, other: Any) -> Any:
        return self._value ^ _operand(other)

    def __rxor__(self, other: Any) -> Any:
        return _operand(other) ^ self._value

    # In-place operators refuse (TensorFlow 2 refuses +=, -=, *=, /= and **= with RuntimeError).
    # Without them Python would evaluate ``ckpt.step += 1`` as ``ckpt.step = ckpt.step + 1``,
    # replacing the tracked variable by a numpy value: every other holder of the variable, and
    # optimizer slots keyed by it, would silently stop seeing updates.
    def _no_in_place(self, symbol: str, instead: str) -> NoReturn:
        raise TypeError(
            f"`v {symbol}= value` on Variable {self._name!r} is not supported: it would replace the variable by "
            f"a numpy value. Use `{instead}` to change the variable, or `out = v {symbol} value` for a new "
            "numpy value"
        )

    __iadd__ = _refuse_in_place("+", "v.assign_add(value)")
    __isub__ = _refuse_in_place("-", "v.assign_sub(value)")
    __imul__ = _refuse_in_place("*", "v.assign(v * value)")
    __itruediv__ = _refuse_in_place("/", "v.assign(v / value)")
    __ifloordiv__ = _refuse_in_place("//", "v.assign(v // value)")
    __imod__ = _refuse_in_place("%", "v.assign(v % value)")
    __ipow__ = _refuse_in_place("**", "v.assign(v ** value)")
    __imatmul__ = _refuse_in_place("@", "v.assign(v @ value)")
    __iand__ = _refuse_in_place("&", "v.assign(v & value)")
    __ior__ = _refuse_in_place("|", "v.assign(v | value)")
    __ixor__ = _refuse_in_place("^", "v.assign(v ^ value)")

    # ----------------------------------------------------------- checkpoints
    def _serialize_to_tensors(self) -> dict[str, Any]:
        # No copy: a synchronous save finishes before returning; an async one pins the buffer
        # and every write then goes through _write_pinned (trackpoint._async).
        info = self._save_slice_info
        if info is not None and info.var_shape != info.full_shape:
            # TensorFlow's form for a slice: {slice spec: tensor} under the attribute.
            return {VARIABLE_VALUE_KEY: {info.spec: self._value}}
        return {VARIABLE_VALUE_KEY: self._value}

    def _checkpoint_attribute_names(self) -> tuple[str, ...]:
        return (VARIABLE_VALUE_KEY,)

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(VARIABLE_VALUE_KEY)
        if info is None:
            return
        key = where[VARIABLE_VALUE_KEY]
        value = self._value
        # Identity first: numpy's built-in dtypes are singletons, and this runs for each variable restored.
        if info.dtype is not value.dtype and info.dtype != value.dtype:
            raise DTypeMismatchError(
                f"cannot restore {key!r} into Variable {self._name!r}: the checkpoint holds dtype "
                f"{dtypes._name(info.dtype)}, the variable has dtype {dtypes._name(self.dtype)}"
            )
        sliced = self._save_slice_info
        if sliced is not None:
            if tuple(info.shape) != sliced.full_shape:
                raise ShapeMismatchError(
                    f"cannot restore {key!r} into Variable {self._name!r}: the checkpoint holds shape "
                    f"{tuple(info.shape)}, the variable is a slice of a tensor of shape {sliced.full_shape}"
                )
            return
        # A reader's shape is a tuple (``tuple()`` only for one that hands out another sequence): the check
        # runs for each variable of a restore.
        shape = info.shape
        if shape != value.shape and tuple(shape) != value.shape:
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

    def _restore_slice(self, attribute: str) -> TensorSlice | None:
        # docstring inherited
        info = self._save_slice_info
        if attribute == VARIABLE_VALUE_KEY and info is not None:
            return info.slice
        return None


def _operand(value: Any) -> Any:
    """The other operand of an operator: a variable's current value, anything else as it is."""
    return value._value if isinstance(value, Variable) else value
