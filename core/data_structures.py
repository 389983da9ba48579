"""Trackable wrappers for lists, dicts and tuples assigned to attributes.

``AutoTrackable`` wraps a ``list``/``dict``/``tuple`` assigned to an
attribute so that trackables inside it become dependencies, named by list
index or dict key, as ``tensorflow/python/trackable/data_structures.py`` does.
Nested containers are wrapped recursively. Wrappers compare equal to the plain
container they hold; :class:`NoDependency` opts a value out of wrapping and
tracking.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Generic, TypeVar, overload

from trackpoint.errors import TrackableError
from trackpoint.trackable import Trackable

__all__ = [
    "ListWrapper",
    "NoDependency",
    "TrackableDataStructure",
    "sticky_attribute_assignment",
    "wrap_or_unwrap",
]

T = TypeVar("T")


class NoDependency(Generic[T]):
    """Assign ``NoDependency(value)`` to store ``value`` without tracking or wrapping it."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def wrap_or_unwrap(value: Any) -> Any:
    """Wrap containers in their trackable counterpart; unwrap :class:`NoDependency`."""
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, Trackable):
        return value
    if type(value) is dict:
        return _DictWrapper(value)
    if type(value) is list:
        return ListWrapper(value)
    if isinstance(value, tuple):
        return _TupleWrapper(value)
    return value


def sticky_attribute_assignment(trackable: Trackable, name: str, value: Any) -> Any:
    """Track ``value`` on ``trackable`` as ``name`` if it is (or wraps into) a trackable.

    Returns the value to store: the wrapper, or the unwrapped ``NoDependency`` value.
    """
    add_dependency = not isinstance(value, NoDependency)
    value = wrap_or_unwrap(value)
    if add_dependency and isinstance(value, Trackable):
        trackable._track_trackable(value, name=name, overwrite=True)
    return value


def _by_index(storage: Sequence[Any], name: str) -> Trackable | None:
    """The trackable element named ``name`` (its decimal index), in O(1)."""
    if not name.isdigit() or str(int(name)) != name or int(name) >= len(storage):
        return None
    value = storage[int(name)]
    return value if isinstance(value, Trackable) else None


class TrackableDataStructure(Trackable, metaclass=abc.ABCMeta):
    """Base of the container wrappers: children are computed from the contents."""

    @abc.abstractmethod
    def _items(self) -> Iterable[tuple[Any, Any]]:
        """``(name, value)`` pairs of the contents, in order."""

    def _trackable_children(self) -> dict[str, Trackable]:
        children: dict[str, Trackable] = {}
        for key, value in self._items():
            if isinstance(value, Trackable):
                if not isinstance(key, str):
                    raise TrackableError(
                        f"cannot save a dict wrapper holding trackable {type(value).__name__} under the "
                        f"non-string key {key!r}; use str keys for dicts of trackables"
                    )
                children[key] = value
        return children

    def _lookup_dependency(self, name: str) -> Trackable | None:
        for key, value in self._items():
            if key == name and isinstance(value, Trackable):
                return value
        return None

    def _added(self, key: Any, value: Any) -> None:
        """Apply restores waiting for ``key`` now that ``value`` sits there."""
        if isinstance(value, Trackable) and isinstance(key, str):
            self._handle_deferred_dependencies(key, value)


class ListWrapper(TrackableDataStructure, MutableSequence[Any]):
    """A list whose trackable elements are dependencies named ``"0"``, ``"1"``, ..."""

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self._maybe_initialize_trackable()
        self._self_storage: list[Any] = [wrap_or_unwrap(v) for v in values]

    def _items(self) -> Iterable[tuple[Any, Any]]:
        return ((str(i), v) for i, v in enumerate(self._self_storage))

    def _lookup_dependency(self, name: str) -> Trackable | None:
        return _by_index(self._self_storage, name)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._self_storage[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            self._self_storage[index] = [wrap_or_unwrap(v) for v in value]
            return
        position = range(len(self._self_storage))[index]
        self._self_storage[position] = wrap_or_unwrap(value)
        self._added(str(position), self._self_storage[position])

    def __delitem__(self, index: Any) -> None:
        del self._self_storage[index]

    def __len__(self) -> int:
        return len(self._self_storage)

    def insert(self, index: int, value: Any) -> None:
        value = wrap_or_unwrap(value)
        n = len(self._self_storage)
        # Where list.insert puts it: negative indices count from the end, both ends clamp.
        position = min(max(0, n + index) if index < 0 else index, n)
        self._self_storage.insert(position, value)
        self._added(str(position), value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListWrapper):
            other = other._self_storage
        return self._self_storage == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ListWrapper({self._self_storage!r})"


class _DictWrapper(TrackableDataStructure, MutableMapping[Any, Any]):
    """A dict whose trackable values are dependencies named by their (str) keys."""

    def __init__(self, values: Mapping[Any, Any] | None = None) -> None:
        self._maybe_initialize_trackable()
        self._self_storage: dict[Any, Any] = {k: wrap_or_unwrap(v) for k, v in (values or {}).items()}

    def _items(self) -> Iterable[tuple[Any, Any]]:
        return self._self_storage.items()

    def _lookup_dependency(self, name: str) -> Trackable | None:
        value = self._self_storage.get(name)
        return value if isinstance(value, Trackable) else None

    def __getitem__(self, key: Any) -> Any:
        return self._self_storage[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        value = wrap_or_unwrap(value)
        self._self_storage[key] = value
        self._added(key, value)

    def __delitem__(self, key: Any) -> None:
        del self._self_storage[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._self_storage)

    def __len__(self) -> int:
        return len(self._self_storage)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _DictWrapper):
            other = other._self_storage
        return self._self_storage == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DictWrapper({self._self_storage!r})"


class _TupleWrapper(TrackableDataStructure, Sequence[Any]):
    """An immutable tuple whose trackable elements are dependencies named by index.

    A wrapped namedtuple keeps its field access (``pair.a``) and its other
    attributes; ``isinstance(wrapper, tuple)`` is false.
    """

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self._maybe_initialize_trackable()
        self._self_original = values
        self._self_storage: tuple[Any, ...] = tuple(wrap_or_unwrap(v) for v in values)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the wrapper lacks: namedtuple fields and methods.
        if name.startswith("_self_"):
            raise AttributeError(name)
        fields = getattr(type(self._self_original), "_fields", ())
        if name in fields:
            return self._self_storage[fields.index(name)]
        return getattr(self._self_original, name)

    def _items(self) -> Iterable[tuple[Any, Any]]:
        return ((str(i), v) for i, v in enumerate(self._self_storage))

    def _lookup_dependency(self, name: str) -> Trackable | None:
        return _by_index(self._self_storage, name)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Any, ...]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._self_storage[index]

    def __len__(self) -> int:
        return len(self._self_storage)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TupleWrapper):
            other = other._self_storage
        return self._self_storage == other

    def __hash__(self) -> int:
        return hash(self._self_storage)

    def __repr__(self) -> str:
        return f"TupleWrapper({self._self_storage!r})"
