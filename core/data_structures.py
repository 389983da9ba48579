"""Trackable wrappers for lists, dicts and tuples, and the numpy values they hold.

``AutoTrackable`` wraps a ``list``/``dict``/``tuple`` assigned to an
attribute so that trackables inside it become dependencies, named by list
index or dict key, as ``tensorflow/python/trackable/data_structures.py`` does.
Nested containers are wrapped recursively. Wrappers compare equal to the plain
container they hold; :class:`NoDependency` opts a value out of wrapping and
tracking.

What is saved (the rule, also in ``docs/concepts.md``):

* a :class:`~trackpoint.Trackable` becomes a dependency;
* a numeric numpy value (an ``ndarray`` or a numpy scalar such as
  ``np.float32(1.0)``; bool, int, float, complex or bfloat16 elements) is
  saved as a variable in the same place would be (key
  ``<path>/.ATTRIBUTES/VARIABLE_VALUE``, so TensorFlow reads it into a
  ``tf.Variable`` and the other way round). The container (or attribute)
  keeps the numpy value itself; a writeable array is restored in place, a
  numpy scalar or read-only array is replaced by the restored value of the
  same type. This holds for ``AutoTrackable`` attributes too;
* a numpy value of another dtype (strings, objects, dates, structured) or a
  masked array raises :class:`TrackableError` when it is assigned;
* plain Python values (numbers, strings, ``None``, functions, other objects)
  are configuration: never saved, as in TensorFlow. A ``Checkpoint`` refuses
  them, directly or in its containers ("strict" containers), so that nothing
  handed to a checkpoint is skipped silently;
* ``NoDependency(value)`` keeps any value unsaved, everywhere.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import numpy as np

from trackpoint import dtypes
from trackpoint.errors import DTypeMismatchError, ShapeMismatchError, TrackableError, UnsupportedDTypeError
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable
from trackpoint.variables import Variable

if TYPE_CHECKING:
    from trackpoint.storage import TensorInfo

__all__ = [
    "ListWrapper",
    "NoDependency",
    "TrackableDataStructure",
    "is_numpy_value",
    "sticky_attribute_assignment",
    "wrap_or_unwrap",
]

T = TypeVar("T")


class NoDependency(Generic[T]):
    """Assign ``NoDependency(value)`` to store ``value`` without tracking, wrapping or saving it."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def is_numpy_value(value: Any) -> bool:
    """Whether ``value`` is a numpy array or numpy scalar (``np.str_``/``np.bytes_`` count as strings)."""
    return isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, (str, bytes))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


class _NumpyValue(Variable):
    """A numpy value held by a container or an ``AutoTrackable`` attribute, saved as a Variable.

    The holder keeps the numpy value; this node of the object graph saves
    it. A writeable array is shared, so in-place updates are saved and
    restores write into it; numpy scalars and read-only arrays are replaced on
    restore (``on_replace`` tells the holder, and :meth:`current` is the value
    to hold).
    """

    def __init__(self, value: Any, name: str, where: str, on_replace: Callable[[Any], None] | None = None) -> None:
        self._maybe_initialize_trackable()
        if isinstance(value, np.ma.MaskedArray):
            raise TrackableError(
                f"{where}: a masked array cannot be saved (its mask would be lost); save .data and .mask as "
                "two arrays, or assign NoDependency(value) to keep it unsaved"
            )
        try:
            saved = dtypes.as_dtype(value.dtype)
        except UnsupportedDTypeError as exc:
            raise TrackableError(
                f"{where}: a numpy value of dtype {value.dtype} cannot be saved ({exc}); convert it, or assign "
                "NoDependency(value) to keep it unsaved"
            ) from exc
        if dtypes.is_string(saved):
            raise TrackableError(
                f"{where}: numpy values of dtype {value.dtype} are not saved from containers or attributes; save "
                "strings in a trackpoint.Variable(value, dtype=trackpoint.string), or assign NoDependency(value) "
                "to keep them unsaved"
            )
        self._name = name
        self._trainable = False
        self._saved_dtype = saved
        self._on_replace = on_replace
        self._current: Any = value
        self._value = value if isinstance(value, np.ndarray) else np.asarray(value)

    def current(self) -> Any:
        """The value the holder should hold (the restored one after a replacing restore)."""
        return self._current

    def _in_place(self) -> bool:
        return isinstance(self._current, np.ndarray) and bool(self._value.flags.writeable)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype the value is saved with (native byte order)."""
        return self._saved_dtype

    def _serialize_to_tensors(self) -> dict[str, np.ndarray[Any, Any]]:
        value = self._value
        if value.dtype != self._saved_dtype or not value.flags.c_contiguous:
            value = np.ascontiguousarray(value, dtype=self._saved_dtype)
        return {VARIABLE_VALUE_KEY: value}

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        info = infos.get(VARIABLE_VALUE_KEY)
        if info is None:
            return
        key = where[VARIABLE_VALUE_KEY]
        if info.dtype != self._saved_dtype:
            raise DTypeMismatchError(
                f"cannot restore {key!r} into the numpy value {self._name!r}: the checkpoint holds dtype "
                f"{dtypes._name(info.dtype)}, the value has dtype {self._saved_dtype}"
            )
        if tuple(info.shape) != self._value.shape:
            raise ShapeMismatchError(
                f"cannot restore {key!r} into the numpy value {self._name!r}: the checkpoint holds shape "
                f"{tuple(info.shape)}, the value has shape {self._value.shape}"
            )

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        value = self._value
        if (
            attribute == VARIABLE_VALUE_KEY
            and self._in_place()
            and value.flags.c_contiguous
            and value.dtype == self._saved_dtype
        ):
            return value
        return None

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if VARIABLE_VALUE_KEY not in tensors:
            return
        restored = tensors[VARIABLE_VALUE_KEY]
        if self._in_place():
            np.copyto(self._value, restored)
            return
        original_dtype = self._value.dtype
        if isinstance(self._current, np.ndarray):
            replacement: Any = np.array(restored, dtype=original_dtype)
            replacement.flags.writeable = False  # it replaces a read-only array
            self._value = replacement
        else:
            array = np.array(restored, dtype=original_dtype)
            replacement = array[()]
            self._value = array
        self._current = replacement
        if self._on_replace is not None:
            self._on_replace(replacement)

    def assign(self, value: Any) -> Variable:
        # docstring inherited
        self._restore_from_tensors({VARIABLE_VALUE_KEY: self._converted(value, "assign")})
        return self

    def __repr__(self) -> str:
        return f"<numpy value {self._name!r} shape={self.shape} dtype={self._value.dtype}>"


def _unwrap(value: Any) -> Any:
    """What a container hands out for a stored value."""
    return value.current() if isinstance(value, _NumpyValue) else value


def _wrap(value: Any, name: str, strict: bool, where: str) -> Any:
    """The value a container stores for ``value`` placed under ``name``.

    Raises
    ------
    TrackableError
        ``value`` is a numpy value that cannot be saved, or ``strict`` is set
        and ``value`` would not be saved.
    """
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, Trackable):
        return value
    if type(value) is dict:
        return _DictWrapper(value, strict=strict, _where=where)
    if type(value) is list:
        return ListWrapper(value, strict=strict, _where=where)
    if isinstance(value, tuple):
        return _TupleWrapper(value, strict=strict, _where=where)
    if is_numpy_value(value):
        return _NumpyValue(value, name, where)
    if strict:
        raise TrackableError(_unsaved_message(value, where))
    return value


def _unsaved_message(value: Any, where: str) -> str:
    return (
        f"{where} is {_describe(value)}, which a checkpoint does not save: only trackables, numeric numpy values "
        "and lists/dicts/tuples of them are saved. Save it as a numpy value (np.asarray(value)) or a "
        "trackpoint.Variable, or pass NoDependency(value) to keep it unsaved."
    )


def wrap_or_unwrap(value: Any) -> Any:
    """Wrap containers in their trackable counterpart; unwrap :class:`NoDependency`.

    Numpy values are returned unchanged: they are saved by the container or
    attribute that holds them.
    """
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, Trackable) or is_numpy_value(value):
        return value
    return _wrap(value, "", False, "a value")


class _AttributeSetter:
    """Puts a replacing restore's value back on the attribute (holds the owner weakly)."""

    __slots__ = ("name", "owner")

    def __init__(self, owner: Trackable, name: str) -> None:
        self.owner = weakref.ref(owner)
        self.name = name

    def __call__(self, value: Any) -> None:
        owner = self.owner()
        if owner is not None:
            # Not through AutoTrackable.__setattr__: the dependency stays the same node.
            object.__setattr__(owner, self.name, value)


def assign_attribute(trackable: Trackable, name: str, value: Any, strict: bool = False) -> tuple[Any, bool]:
    """Track ``value`` on ``trackable`` as ``name`` if it is saved; return what to store and whether it is tracked.

    Trackables (and wrapped containers) are tracked as themselves; numpy
    values through a saved node while the attribute keeps the numpy value. A
    waiting restore is applied at once, so the value returned may be the
    restored one.

    Raises
    ------
    TrackableError
        ``value`` is a numpy value that cannot be saved, or ``strict`` is set
        and ``value`` is not saved (and not :class:`NoDependency`).
    """
    where = f"{type(trackable).__name__}.{name}"
    if isinstance(value, NoDependency):
        return value.value, False
    if is_numpy_value(value):
        node = _NumpyValue(value, name, where, on_replace=_AttributeSetter(trackable, name))
        trackable._track_trackable(node, name=name, overwrite=True)
        return node.current(), True
    stored = _wrap(value, name, strict, where)
    if isinstance(stored, Trackable):
        trackable._track_trackable(stored, name=name, overwrite=True)
        return stored, True
    return stored, False


def sticky_attribute_assignment(trackable: Trackable, name: str, value: Any) -> Any:
    """Track ``value`` on ``trackable`` as ``name`` if it is saved (see :func:`assign_attribute`).

    Returns the value to store: the wrapper, the numpy value, or the
    unwrapped ``NoDependency`` value.
    """
    return assign_attribute(trackable, name, value)[0]


def _by_index(storage: Sequence[Any], name: str) -> Trackable | None:
    """The trackable element named ``name`` (its decimal index), in O(1)."""
    if not name.isdigit() or str(int(name)) != name or int(name) >= len(storage):
        return None
    value = storage[int(name)]
    return value if isinstance(value, Trackable) else None


class TrackableDataStructure(Trackable, metaclass=abc.ABCMeta):
    """Base of the container wrappers: children are computed from the contents.

    A *strict* wrapper (the containers of a ``Checkpoint``) refuses values it
    would not save, so nothing given to a checkpoint is skipped silently;
    containers nested in it are strict too.
    """

    _self_strict: bool
    _self_where: str

    def _init_structure(self, strict: bool, where: str | None, kind: str) -> None:
        self._maybe_initialize_trackable()
        self._self_strict = strict
        self._self_where = where if where is not None else f"a {kind}"

    def _element_where(self, key: Any) -> str:
        return f"{self._self_where}[{key!r}]"

    def _wrap_element(self, key: Any, value: Any) -> Any:
        return _wrap(value, str(key), self._self_strict, self._element_where(key))

    @abc.abstractmethod
    def _items(self) -> Iterable[tuple[Any, Any]]:
        """``(name, value)`` pairs of the contents, in order."""

    def _trackable_children(self) -> dict[str, Trackable]:
        children: dict[str, Trackable] = {}
        for key, value in self._items():
            if isinstance(value, Trackable):
                if not isinstance(key, str):
                    raise TrackableError(
                        f"cannot save {self._element_where(key)}: {_describe(_unwrap(value))} is saved under the "
                        f"non-string key {key!r}; use str keys for dicts of saved values"
                    )
                children[key] = value
        return children

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        for key, value in self._items():
            if key == name and isinstance(value, Trackable):
                return value
        return None

    def _added(self, key: Any, value: Any) -> None:
        """Apply restores waiting for ``key`` now that ``value`` sits there."""
        if isinstance(value, Trackable) and isinstance(key, str):
            self._handle_deferred_dependencies(key, value)


class ListWrapper(TrackableDataStructure, MutableSequence[Any]):
    """A list whose trackable elements and numpy values are saved as ``"0"``, ``"1"``, ...

    Parameters
    ----------
    values
        The initial elements.
    strict
        Refuse elements that would not be saved (plain Python values)
        instead of keeping them unsaved.
    """

    def __init__(self, values: Iterable[Any] = (), *, strict: bool = False, _where: str | None = None) -> None:
        self._init_structure(strict, _where, "list")
        self._self_storage: list[Any] = [self._wrap_element(i, v) for i, v in enumerate(values)]

    def _items(self) -> Iterable[tuple[Any, Any]]:
        return ((str(i), v) for i, v in enumerate(self._self_storage))

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        return _by_index(self._self_storage, name)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [_unwrap(v) for v in self._self_storage[index]]
        return _unwrap(self._self_storage[index])

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            first = index.indices(len(self._self_storage))[0]
            self._self_storage[index] = [self._wrap_element(first + i, v) for i, v in enumerate(value)]
            return
        position = range(len(self._self_storage))[index]
        self._self_storage[position] = self._wrap_element(position, value)
        self._added(str(position), self._self_storage[position])

    def __delitem__(self, index: Any) -> None:
        del self._self_storage[index]

    def __len__(self) -> int:
        return len(self._self_storage)

    def insert(self, index: int, value: Any) -> None:
        n = len(self._self_storage)
        # Where list.insert puts it: negative indices count from the end, both ends clamp.
        position = min(max(0, n + index) if index < 0 else index, n)
        wrapped = self._wrap_element(position, value)
        self._self_storage.insert(position, wrapped)
        self._added(str(position), wrapped)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListWrapper):
            other = other[:]
        return self[:] == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ListWrapper({self[:]!r})"


class _DictWrapper(TrackableDataStructure, MutableMapping[Any, Any]):
    """A dict whose trackable values and numpy values are saved under their (str) keys."""

    def __init__(
        self, values: Mapping[Any, Any] | None = None, *, strict: bool = False, _where: str | None = None
    ) -> None:
        self._init_structure(strict, _where, "dict")
        self._self_storage: dict[Any, Any] = {k: self._wrap_element(k, v) for k, v in (values or {}).items()}

    def _items(self) -> Iterable[tuple[Any, Any]]:
        return self._self_storage.items()

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        value = self._self_storage.get(name)
        return value if isinstance(value, Trackable) else None

    def __getitem__(self, key: Any) -> Any:
        return _unwrap(self._self_storage[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        value = self._wrap_element(key, value)
        self._self_storage[key] = value
        self._added(key, value)

    def __delitem__(self, key: Any) -> None:
        del self._self_storage[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._self_storage)

    def __len__(self) -> int:
        return len(self._self_storage)

    def _plain(self) -> dict[Any, Any]:
        return {k: _unwrap(v) for k, v in self._self_storage.items()}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _DictWrapper):
            other = other._plain()
        return self._plain() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DictWrapper({self._plain()!r})"


class _TupleWrapper(TrackableDataStructure, Sequence[Any]):
    """An immutable tuple whose trackable elements and numpy values are saved by index.

    A wrapped namedtuple keeps its field access (``pair.a``) and its other
    attributes; ``isinstance(wrapper, tuple)`` is false. Numpy scalars and
    read-only arrays in it are still restored: the wrapper hands out the
    restored value.
    """

    def __init__(self, values: Iterable[Any] = (), *, strict: bool = False, _where: str | None = None) -> None:
        self._init_structure(strict, _where, "tuple")
        self._self_original = values
        self._self_storage: tuple[Any, ...] = tuple(self._wrap_element(i, v) for i, v in enumerate(values))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the wrapper lacks: namedtuple fields and methods.
        if name.startswith("_self_"):
            raise AttributeError(name)
        fields = getattr(type(self._self_original), "_fields", ())
        if name in fields:
            return _unwrap(self._self_storage[fields.index(name)])
        return getattr(self._self_original, name)

    def _items(self) -> Iterable[tuple[Any, Any]]:
        return ((str(i), v) for i, v in enumerate(self._self_storage))

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        return _by_index(self._self_storage, name)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Any, ...]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(_unwrap(v) for v in self._self_storage[index])
        return _unwrap(self._self_storage[index])

    def __len__(self) -> int:
        return len(self._self_storage)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TupleWrapper):
            other = other[:]
        return self[:] == other

    def __hash__(self) -> int:
        return hash(self[:])

    def __repr__(self) -> str:
        return f"TupleWrapper({self[:]!r})"
