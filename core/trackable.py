"""The base class of everything that can be saved in an object-based checkpoint.

A :class:`Trackable` has named dependencies on other trackables (the edges of
the object graph) and may hold state of its own, exposed through
:meth:`Trackable._serialize_to_tensors` and restored through
:meth:`Trackable._restore_from_tensors`. This module mirrors
``tensorflow/python/trackable/base.py``; it imports no storage code.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

import numpy as np

from trackpoint.errors import (
    DTypeMismatchError,
    NameConflictError,
    NotTrackableError,
    ShapeMismatchError,
    TrackableError,
)

if TYPE_CHECKING:
    from trackpoint._slices import TensorSlice
    from trackpoint.storage import TensorInfo
    from trackpoint.variables import Variable

__all__ = [
    "DEPENDENCIES_ATTRIBUTE",
    "VARIABLE_VALUE_KEY",
    "DeferredRestore",
    "NoRestoreSaveable",
    "SaveSpec",
    "SaveableObject",
    "Trackable",
    "TrackableReference",
    "dependency_changes",
    "has_default_children",
    "make_saveable",
    "next_uid",
    "no_automatic_dependency_tracking",
    "no_automatic_dependency_tracking_scope",
    "no_manual_dependency_tracking_scope",
    "uses_saveables",
    "uses_saveables_class",
]

#: Attribute name under which a variable's value is saved.
VARIABLE_VALUE_KEY = "VARIABLE_VALUE"


def serialized_refusal(obj: object, tensors: object, where: str) -> NotTrackableError:
    """Why ``obj._serialize_to_tensors()`` returning ``tensors`` cannot be saved: it is no dict, or has a non-str key.

    Called only once a save found the value wrong (a type check of the returned value, or a key met for
    the first time that is no ``str``), so that the check costs nothing per object.

    Parameters
    ----------
    obj
        The object whose method returned ``tensors``.
    tensors
        What it returned.
    where
        Where ``obj`` is in the graph (``" of the object at 'model/layer'"``), or ``""``.
    """
    method = f"{type(obj).__name__}._serialize_to_tensors(){where}"
    expected = (
        "it must return a dict {attribute_name: array} of the values this object saves, with str names "
        "({} to save nothing)"
    )
    if tensors is None:
        return NotTrackableError(f"{method} returned None; {expected}. Is a return statement missing?")
    if isinstance(tensors, Mapping):
        key = next((k for k in tensors if not isinstance(k, str)), None)
        return NotTrackableError(
            f"{method} returned a dict with the key {key!r} ({type(key).__name__}); {expected}: name each "
            f"value, e.g. {{'{key}': ...}}"
        )
    return NotTrackableError(
        f"{method} returned {type(tensors).__name__} {tensors!r:.80}; {expected}. To save several arrays, name "
        "each: {'a': array_a, 'b': array_b}"
    )


#: The instance attribute holding a trackable's tracked dependencies, created with the first one:
#: graph walks test for it in ``obj.__dict__`` to skip objects that never tracked anything.
DEPENDENCIES_ATTRIBUTE: Final = "_self_unconditional_checkpoint_dependencies"

_uids = itertools.count(1)

# Dependencies tracked, replaced or removed so far, in any object (see dependency_changes()).
_dependency_changes = 0

_Method = TypeVar("_Method", bound=Callable[..., Any])


def next_uid() -> int:
    """A process-wide increasing id; later restores get larger ids and so win."""
    return next(_uids)


def dependency_changes() -> int:
    """How many times a dependency was tracked, replaced or removed so far, in any trackable.

    Counted by :meth:`Trackable._track_trackable`, :meth:`Trackable._delete_tracking`
    and each access to :attr:`Trackable._unconditional_checkpoint_dependencies`
    (which hands out the list to change). While it stays the same, a graph
    whose objects all have the default children (see
    :func:`has_default_children`) is the graph it was: a restore's status
    assertions then need not walk it again.
    """
    return _dependency_changes


def _dependencies_changed() -> None:
    global _dependency_changes
    _dependency_changes += 1


class TrackableReference(NamedTuple):
    """A named edge from one trackable to another."""

    name: str
    ref: Trackable


class DeferredRestore(Protocol):
    """A checkpoint value waiting for the object it belongs to (see :mod:`trackpoint.restore`)."""

    @property
    def restore_uid(self) -> int:
        """Id of the restore that queued this value."""

    def is_simple_variable(self) -> bool:
        """Whether the value is one plain variable without children."""

    def tensor_info(self) -> TensorInfo:
        """Dtype and shape of a simple variable's value."""

    def restore(self, trackable: Trackable) -> None:
        """Bind ``trackable`` to the checkpointed object and restore it (and its subtree)."""


def no_automatic_dependency_tracking(method: _Method) -> _Method:
    """Decorate a method of a trackable so that attribute assignments inside it track nothing.

    As TensorFlow's decorator of that name: while ``method`` runs, assigning
    an attribute of ``self`` stores the value as it is (a list stays a plain
    list, a trackable is not made a dependency) and leaves the dependencies
    as they were. Harmless on classes that do not track assignments.
    """

    @functools.wraps(method)
    def wrapper(self: Trackable, *args: Any, **kwargs: Any) -> Any:
        previous = self._setattr_tracking
        self._setattr_tracking = False
        try:
            return method(self, *args, **kwargs)
        finally:
            self._setattr_tracking = previous

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def no_automatic_dependency_tracking_scope(obj: Trackable) -> Iterator[None]:
    """A ``with`` block in which assigning attributes of ``obj`` tracks nothing (TensorFlow's scope).

    Examples
    --------
    >>> import trackpoint as tp
    >>> m = tp.AutoTrackable()
    >>> with tp.no_automatic_dependency_tracking_scope(m):
    ...     m.cache = [tp.Variable(1.0)]
    >>> type(m.cache) is list, tp.list_objects(m) == [m]
    (True, True)
    """
    previous = obj._setattr_tracking
    obj._setattr_tracking = False
    try:
        yield
    finally:
        obj._setattr_tracking = previous


@contextlib.contextmanager
def no_manual_dependency_tracking_scope(obj: Trackable) -> Iterator[None]:
    """A ``with`` block in which ``obj._track_trackable`` tracks nothing (TensorFlow's scope).

    Library code that tracks objects itself (``add_variable``,
    ``_track_trackable``) creates them untracked inside it: they are not
    saved with ``obj``.
    """
    previous = obj._manual_tracking
    obj._manual_tracking = False
    try:
        yield
    finally:
        obj._manual_tracking = previous


class Trackable:
    """Base class for objects with checkpointable state and dependencies.

    Dependencies are declared explicitly with :meth:`_track_trackable` (or
    implicitly by attribute assignment on :class:`~trackpoint.AutoTrackable`).
    Their names become edges of the object graph and path elements of the
    checkpoint keys, so they must stay stable across program versions.

    Holding state: the extension point
    -----------------------------------
    A trackable that holds data of its own (a framework tensor, a counter, a
    random generator state) overrides two methods:

    * :meth:`_serialize_to_tensors` returns ``{attribute_name: ndarray}``;
      each array is saved under ``<object path>/.ATTRIBUTES/<attribute_name>``;
    * :meth:`_restore_from_tensors` receives the same mapping read back.

    Optionally :meth:`_check_restore_tensors` inspects dtypes and shapes before
    anything is restored, so an incompatible checkpoint raises while every
    object is still unchanged. This is how adapters for PyTorch or JAX state
    plug in; :class:`~trackpoint.Variable` and :class:`~trackpoint.PythonState`
    are implemented the same way.

    TensorFlow's other extension points are honoured as TensorFlow honours
    them: an overridden :attr:`_checkpoint_dependencies` (or
    :meth:`_trackable_children`) defines the children, and an overridden
    :meth:`_gather_saveables_for_checkpoint` (without
    :meth:`_serialize_to_tensors`) defines the saved values through
    :class:`SaveableObject` factories.

    Internal attributes use the ``_self_`` prefix, which attribute tracking
    ignores.
    """

    # Internal state is created lazily, so subclasses need not call __init__ first. The containers are
    # created when first written: most objects of a large graph are variables that never hold a
    # dependency, and four empty containers each would be a quarter of a kilobyte per variable and four
    # more objects for the cyclic garbage collector to scan again and again.
    _self_unconditional_checkpoint_dependencies: list[TrackableReference]
    _self_unconditional_dependency_names: dict[str, Trackable]
    _self_unconditional_deferred_dependencies: dict[str, list[DeferredRestore]]
    _self_name_based_restores: list[DeferredRestore]
    _self_update_uid: int

    def _maybe_initialize_trackable(self) -> None:
        """Create the bookkeeping attributes if they do not exist yet."""
        if "_self_update_uid" in self.__dict__:
            return
        # -1: never restored; any restore (uid >= 1) is newer.
        object.__setattr__(self, "_self_update_uid", -1)

    def _own(self, name: str, empty: type[list[Any]] | type[dict[str, Any]]) -> Any:
        """The bookkeeping container ``name``, created (empty) if it does not exist yet."""
        found = self.__dict__.get(name)
        if found is None:
            self._maybe_initialize_trackable()
            found = empty()
            object.__setattr__(self, name, found)
        return found

    # ------------------------------------------------------- tracking switches
    @property
    def _setattr_tracking(self) -> bool:
        """Whether attribute assignment tracks dependencies (see :func:`no_automatic_dependency_tracking`)."""
        return bool(self.__dict__.get("_self_setattr_tracking", True))

    @_setattr_tracking.setter
    def _setattr_tracking(self, value: bool) -> None:
        object.__setattr__(self, "_self_setattr_tracking", value)

    @property
    def _manual_tracking(self) -> bool:
        """Whether :meth:`_track_trackable` tracks (see :func:`no_manual_dependency_tracking_scope`)."""
        return bool(self.__dict__.get("_self_manual_tracking", True))

    @_manual_tracking.setter
    def _manual_tracking(self, value: bool) -> None:
        object.__setattr__(self, "_self_manual_tracking", value)

    def _no_dependency(self, value: Any) -> Any:
        """``value`` marked as not a dependency where assignments are tracked; here, ``value`` itself.

        :class:`~trackpoint.AutoTrackable` returns ``NoDependency(value)``, so
        ``self.x = self._no_dependency(layers)`` stores ``layers`` unsaved, as
        in TensorFlow.
        """
        return value

    # ------------------------------------------------------------ restore uids
    @property
    def _update_uid(self) -> int:
        """Uid of the latest restore applied to this object (-1 if none)."""
        self._maybe_initialize_trackable()
        return self._self_update_uid

    @_update_uid.setter
    def _update_uid(self, value: int) -> None:
        self._maybe_initialize_trackable()
        object.__setattr__(self, "_self_update_uid", value)

    # ----------------------------------------------------------- dependencies
    @property
    def _unconditional_checkpoint_dependencies(self) -> list[TrackableReference]:
        """Explicitly tracked dependencies, in the order they were added.

        The list itself: whoever asks for it may change it, which counts as
        a change of dependencies (:func:`dependency_changes`).
        """
        _dependencies_changed()
        return self._tracked()

    def _tracked(self) -> list[TrackableReference]:
        """The list of explicitly tracked dependencies (created empty if there is none yet)."""
        deps: list[TrackableReference] = self._own(DEPENDENCIES_ATTRIBUTE, list)
        return deps

    @property
    def _deferred_dependencies(self) -> dict[str, list[DeferredRestore]]:
        """Checkpoint values waiting for a dependency of that name to be tracked."""
        waiting: dict[str, list[DeferredRestore]] = self._own("_self_unconditional_deferred_dependencies", dict)
        return waiting

    @property
    def _name_based_restores(self) -> list[DeferredRestore]:
        """Name-based restores that reached this object; dependencies tracked later are restored by them too."""
        restores: list[DeferredRestore] = self._own("_self_name_based_restores", list)
        return restores

    @property
    def _checkpoint_dependencies(self) -> Sequence[TrackableReference]:
        """All dependencies of this object, as ``(name, trackable)`` references.

        TensorFlow's extension point for conditional dependencies: a subclass
        may override this property, and what it returns becomes the object's
        children in saved graphs (through the default :meth:`_trackable_children`)
        and is matched by restores. Such a subclass that adds a dependency after
        a restore passes it to :meth:`_handle_deferred_dependencies` so that
        the waiting values are applied (as in TensorFlow). The default is the
        explicitly tracked dependencies.
        """
        # Read without creating the list: a graph walk asks every object, most have no dependencies.
        deps: list[TrackableReference] | None = self.__dict__.get(DEPENDENCIES_ATTRIBUTE)
        return [] if deps is None else deps

    def _trackable_children(self) -> dict[str, Trackable]:
        """Named children in dependency order; the order of nodes in saved graphs.

        Built from :attr:`_checkpoint_dependencies`; subclasses may override
        either. Every child must be a :class:`Trackable` named by a ``str``.

        Raises
        ------
        TrackableError
            A dependency is not a trackable or its name is not a string.
        """
        dependencies = self._checkpoint_dependencies
        if not dependencies:
            return {}  # most objects of a large graph are variables, without dependencies
        children: dict[str, Trackable] = {}
        for item in dependencies:
            try:
                name, ref = item
            except (TypeError, ValueError):
                raise TrackableError(
                    f"{type(self).__name__}._checkpoint_dependencies returned {item!r}; every dependency must be a "
                    "TrackableReference(name, trackable)"
                ) from None
            if not isinstance(name, str) or not isinstance(ref, Trackable):
                raise TrackableError(
                    f"{type(self).__name__}._checkpoint_dependencies returned {name!r}: "
                    f"{type(ref).__name__}; every dependency must be a Trackable named by a str "
                    "(a TrackableReference(name, trackable))"
                )
            children[name] = ref
        return children

    def _lookup_dependency(
        self, name: str, cached_dependencies: Mapping[str, Trackable] | None = None
    ) -> Trackable | None:
        """The dependency called ``name``, or ``None``.

        Parameters
        ----------
        name
            The dependency's local name.
        cached_dependencies
            The result of :meth:`_trackable_children`, when the caller has it
            (restores pass it, so dependencies from an overridden
            :attr:`_checkpoint_dependencies` or :meth:`_trackable_children`
            are found, as in TensorFlow).
        """
        if cached_dependencies is not None:
            return cached_dependencies.get(name)
        names: dict[str, Trackable] | None = self.__dict__.get("_self_unconditional_dependency_names")
        return None if names is None else names.get(name)

    def _track_trackable(self, trackable: Trackable, name: str, overwrite: bool = False) -> Trackable:
        """Declare ``trackable`` a dependency called ``name`` and return it.

        If a restore is waiting for a dependency of this name, its values are
        applied to ``trackable`` (and its own dependencies) now. A restore that
        fails validation raises and leaves the dependency untracked.

        Inside :func:`no_manual_dependency_tracking_scope` ``trackable`` is
        returned untracked.

        Raises
        ------
        NotTrackableError
            (a ``TypeError``, as in TensorFlow) ``trackable`` is not a :class:`Trackable`.
        NameConflictError
            Another object is tracked as ``name`` and ``overwrite`` is false.
        """
        self._maybe_initialize_trackable()
        if not isinstance(trackable, Trackable):
            raise NotTrackableError(
                f"only Trackable objects can be tracked, got {type(trackable).__name__} for dependency {name!r} of "
                f"{type(self).__name__} (Trackable._track_trackable() can only be used to track objects of type "
                "Trackable); wrap state in a Variable or a Trackable subclass"
            )
        if not self._manual_tracking:
            # Inside no_manual_dependency_tracking_scope: returned untracked, as in TensorFlow.
            return trackable
        current = self._lookup_dependency(name)
        if current is not None and current is not trackable:
            if not overwrite:
                raise NameConflictError(
                    f"Called Trackable._track_trackable() with name={name!r} on {type(self).__name__}, but a "
                    "Trackable with this name is already declared as a dependency. Names must be unique "
                    "(or pass overwrite=True)."
                )
            _dependencies_changed()
            deps = self._tracked()
            for index, ref in enumerate(deps):
                if ref.name == name:
                    deps[index] = TrackableReference(name, trackable)
                    break
        elif current is None:
            # Apply waiting restores first: if one fails validation, nothing is tracked.
            self._handle_deferred_dependencies(name, trackable)
            _dependencies_changed()
            self._tracked().append(TrackableReference(name, trackable))
        self._own("_self_unconditional_dependency_names", dict)[name] = trackable
        return trackable

    def _delete_tracking(self, name: str) -> None:
        """Forget the dependency called ``name`` (no error if there is none)."""
        names: dict[str, Trackable] | None = self.__dict__.get("_self_unconditional_dependency_names")
        if names is None or names.pop(name, None) is None:
            return
        _dependencies_changed()
        deps = self._tracked()
        for index, ref in enumerate(deps):
            if ref.name == name:
                del deps[index]
                break

    def _handle_deferred_dependencies(self, name: str, trackable: Trackable) -> None:
        """Apply restores that were waiting for a dependency called ``name``.

        The newest restore is applied first; older ones then only bind objects,
        since restore uids make their values lose (the latest restore wins).
        Name-based restores that reached this object are passed on to the new
        dependency as well (TensorFlow restores variables created after a
        name-based ``restore()`` too).
        """
        self._maybe_initialize_trackable()
        trackable._maybe_initialize_trackable()
        deferred: dict[str, list[DeferredRestore]] = self.__dict__.get("_self_unconditional_deferred_dependencies", {})
        waiting = deferred.get(name)
        if waiting:
            for position in sorted(waiting, key=lambda p: p.restore_uid, reverse=True):
                position.restore(trackable)
            self._deferred_dependencies.pop(name, None)
        by_names: list[DeferredRestore] = self.__dict__.get("_self_name_based_restores") or []
        for by_name in sorted(by_names, key=lambda r: r.restore_uid, reverse=True):
            by_name.restore(trackable)

    def _dependency_requested(self, name: str) -> None:
        """A restore queued a value for the missing dependency ``name``.

        Objects that create a dependency lazily (an optimizer's step counter)
        override this to create it now, so it is restored at once instead of
        waiting for first use. The default does nothing.
        """

    # ------------------------------------------------------------------ state
    def _serialize_to_tensors(self) -> dict[str, Any]:
        """The state of this object (not of its dependencies) to save.

        Returns
        -------
        dict
            ``{attribute_name: array}``, with ``str`` attribute names. Arrays
            must not be mutated until the save returns; strings are object
            arrays of ``bytes``. The default returns ``{}``: the object only
            groups its dependencies (return ``{}`` to save nothing; ``None``
            or another type is refused with :class:`NotTrackableError`). As in
            TensorFlow, a value may instead be ``{slice_spec: array}``, the
            slices of a larger tensor this object holds (spec strings as
            :attr:`trackpoint.SaveSliceInfo.spec` gives them); nested state
            is saved as one attribute per array, not as nested dicts.
        """
        return {}

    def _restore_from_tensors(self, tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore the state saved by :meth:`_serialize_to_tensors`.

        Parameters
        ----------
        tensors
            The saved arrays, keyed by attribute name; only attributes present
            both in the checkpoint and in :meth:`_checkpoint_attribute_names`.
        """

    def _check_restore_tensors(self, infos: Mapping[str, TensorInfo], where: Mapping[str, str]) -> None:
        """Validate checkpointed dtypes/shapes before anything is restored.

        Parameters
        ----------
        infos
            Dtype and shape of each attribute about to be restored.
        where
            The checkpoint key of each attribute, for error messages.

        Raises
        ------
        AssignmentError
            (or a subclass) when the values cannot be restored into this object.
            The default accepts everything.
        """

    def _restore_buffer(self, attribute: str) -> np.ndarray[Any, Any] | None:
        """An array to read ``attribute`` into in place, or ``None`` (the default).

        Returning this object's own C-contiguous, writeable buffer (with the
        checkpoint's dtype and shape, as checked by :meth:`_check_restore_tensors`)
        lets the storage reader fill it without an intermediate copy; the
        attribute is then not passed to :meth:`_restore_from_tensors`.
        """
        return None

    def _restore_slice(self, attribute: str) -> TensorSlice | None:
        """The slice of the saved tensor that ``attribute`` holds, or ``None`` (the default: all of it).

        When it returns a slice, a restore reads only that part of the saved
        tensor (:meth:`trackpoint.storage.CheckpointReader.read_slice`), and
        :meth:`_check_restore_tensors` sees the full tensor's shape.
        """
        return None

    def _checkpoint_attribute_names(self) -> tuple[str, ...]:
        """Names of the attributes this object saves.

        Default: the keys of :meth:`_serialize_to_tensors`, or of
        :meth:`_gather_saveables_for_checkpoint` for an object that saves
        through saveables (see :func:`uses_saveables`).
        """
        if uses_saveables(self):
            return tuple(self._gather_saveables_for_checkpoint())
        tensors = self._serialize_to_tensors()
        if type(tensors) is not dict and not isinstance(tensors, Mapping):
            raise serialized_refusal(self, tensors, "")
        return tuple(tensors)

    def _gather_saveables_for_checkpoint(self) -> Mapping[str, Any]:
        """Values to save with this object, the TensorFlow 1 way (prefer :meth:`_serialize_to_tensors`).

        Honoured as TensorFlow honours it, when a subclass overrides this
        method but not :meth:`_serialize_to_tensors` (TensorFlow prefers the
        latter when both exist).

        Returns
        -------
        Mapping
            ``{attribute_name: value}``; each value is a :class:`~trackpoint.Variable`,
            a :class:`SaveableObject`, or a callable ``factory(name=key)``
            returning either. ``key`` is the attribute's checkpoint key
            (``<object path>/.ATTRIBUTES/<attribute_name>``); a saveable's
            :attr:`SaveableObject.name` must contain it, and its
            :class:`SaveSpec` names are the checkpoint keys its tensors are
            saved under (usually ``key`` itself, or ``key`` plus a suffix for
            several tensors). The default returns ``{}``.
        """
        return {}

    # -------------------------------------------------------------- variables
    def add_variable(
        self,
        name: str,
        shape: tuple[int, ...] | list[int] | None = None,
        dtype: Any = None,
        initializer: Any = None,
        trainable: bool = True,
    ) -> Variable:
        """Create a :class:`~trackpoint.Variable` and track it as ``name``.

        If a restore is waiting for a dependency called ``name`` (restore
        before create), the variable is created directly from the checkpoint
        value and ``initializer`` is not used.

        Parameters
        ----------
        name
            Dependency name; also the variable's name.
        shape
            Shape of the variable; inferred from ``initializer`` when omitted.
        dtype
            Element type; float32 when neither it nor the initializer fixes one.
        initializer
            ``None`` (zeros), a value of shape ``shape`` (not broadcast, as
            in TensorFlow), or a callable ``initializer(shape, dtype)``
            returning the value.
        trainable
            Stored on the variable for optimizers and users.

        Raises
        ------
        NameConflictError
            A dependency called ``name`` exists already.
        ShapeMismatchError, DTypeMismatchError
            A waiting checkpoint value does not fit ``shape``/``dtype``, or a
            constant ``initializer`` has another shape than ``shape``.
        """
        from trackpoint.dtypes import as_dtype
        from trackpoint.variables import Variable

        self._maybe_initialize_trackable()
        if self._lookup_dependency(name) is not None:
            raise NameConflictError(
                f"A variable named {name!r} already exists on {type(self).__name__}. Choose a different name."
            )
        want_dtype = None if dtype is None else as_dtype(dtype)
        want_shape = None if shape is None else tuple(int(d) for d in shape)
        position = self._preload_simple_restoration(name)
        if position is not None:
            info = position.tensor_info()
            if want_shape is not None and want_shape != info.shape:
                raise ShapeMismatchError(
                    f"add_variable({name!r}): the checkpoint holds shape {info.shape}, but shape {want_shape} "
                    "was requested"
                )
            if want_dtype is not None and want_dtype != info.dtype:
                raise DTypeMismatchError(
                    f"add_variable({name!r}): the checkpoint holds dtype {info.dtype}, but dtype {want_dtype} "
                    "was requested"
                )
            variable = Variable._uninitialized(info.shape, info.dtype, name=name, trainable=trainable)
            # Read the checkpoint value straight into the new buffer; tracking
            # below then only binds the object, its uid is already current.
            position.restore(variable)
        else:
            value = _initial_value(initializer, want_shape, want_dtype)
            variable = Variable(value, dtype=want_dtype, name=name, trainable=trainable, shape=want_shape)
        self._track_trackable(variable, name)
        return variable

    def _add_variable_with_custom_getter(
        self,
        name: str,
        shape: Any = None,
        dtype: Any = np.float32,
        initializer: Any = None,
        getter: Callable[..., Any] | None = None,
        overwrite: bool = False,
        **kwargs_for_getter: Any,
    ) -> Any:
        """Create a variable through ``getter`` and track it as ``name`` (TensorFlow's extension point).

        ``getter(name=name, shape=shape, dtype=dtype, initializer=initializer,
        **kwargs_for_getter)`` creates the variable, in whatever framework.
        When a restore is waiting for ``name`` with a plain variable value,
        ``initializer`` is replaced by a callable ``initializer(shape=None,
        dtype=None)`` returning the checkpoint's value, so any getter restores
        on creation; the result is then tracked (and restored again if it is
        a trackable). With ``overwrite``, a result that is not a
        :class:`Trackable` is returned untracked, as in TensorFlow.

        Raises
        ------
        TrackableError
            ``getter`` is missing, or the result is not trackable (without ``overwrite``).
        NameConflictError
            ``name`` is tracked already and ``overwrite`` is false.
        """
        if getter is None:
            raise TrackableError(
                f"_add_variable_with_custom_getter({name!r}) needs a getter(name=, shape=, dtype=, initializer=, ...) "
                "that creates the variable; use add_variable() for a trackpoint.Variable"
            )
        self._maybe_initialize_trackable()
        position = self._preload_simple_restoration(name)
        if position is not None:
            initializer = _CheckpointInitialValue(position, name)
        created = getter(name=name, shape=shape, dtype=dtype, initializer=initializer, **kwargs_for_getter)
        if not overwrite or isinstance(created, Trackable):
            return self._track_trackable(created, name=name, overwrite=overwrite)
        return created

    def _preload_simple_restoration(self, name: str) -> DeferredRestore | None:
        """The newest waiting restore for ``name`` if it is a plain variable value."""
        waiting = self._deferred_dependencies.get(name, [])
        if not waiting or not all(p.is_simple_variable() for p in waiting):
            return None
        return max(waiting, key=lambda p: p.restore_uid)


# ----------------------------------------------------------------- saveables
#: The property object of the default :attr:`Trackable._checkpoint_dependencies`.
_DEFAULT_DEPENDENCIES: Final = Trackable.__dict__["_checkpoint_dependencies"]


class SaveSpec:
    """One tensor of a :class:`SaveableObject` (``tensorflow.python.training.saving.saveable_object.SaveSpec``).

    Parameters
    ----------
    tensor
        The value to save (array, :class:`~trackpoint.Variable`, scalar), or a
        callable returning it when the save happens.
    slice_spec
        Must be ``""``: partitioned (sliced) values are not supported.
    name
        The checkpoint key the value is saved under.
    dtype
        Element type; taken from ``tensor`` when it is not callable. Restores
        check it before anything is written.
    device
        Accepted for TensorFlow compatibility; no effect on numpy.
    """

    def __init__(self, tensor: Any, slice_spec: str, name: str, dtype: Any = None, device: Any = None) -> None:
        from trackpoint.dtypes import as_dtype

        self._tensor = tensor
        self.slice_spec = slice_spec
        self.name = name
        self.device = device
        if dtype is None and not callable(tensor):
            dtype = getattr(tensor, "dtype", None)
        self.dtype: np.dtype[Any] | None = None if dtype is None else as_dtype(dtype)

    @property
    def tensor(self) -> Any:
        """The value to save (the callable given at construction is called)."""
        if callable(self._tensor):
            return self._tensor()
        return self._tensor


class SaveableObject(abc.ABC):
    """Values saved and restored together (``tensorflow.python.training.saving.saveable_object.SaveableObject``).

    Returned (or built by a factory) from
    :meth:`Trackable._gather_saveables_for_checkpoint`. Subclasses implement
    :meth:`restore`.

    Parameters
    ----------
    op
        The object being saved (kept for TensorFlow compatibility).
    specs
        The tensors to save, one :class:`SaveSpec` each.
    name
        The saveable's name; must contain the attribute's checkpoint key.
    """

    def __init__(self, op: Any, specs: Iterable[SaveSpec], name: str) -> None:
        self.op = op
        self.specs = list(specs)
        self.name = name

    @abc.abstractmethod
    def restore(self, restored_tensors: Sequence[np.ndarray[Any, Any]], restored_shapes: Any) -> Any:
        """Restore the values read back, one array per spec in :attr:`specs` order.

        ``restored_shapes`` is ``None``, as in eager TensorFlow.
        """


class NoRestoreSaveable(SaveableObject):
    """A value saved with its object and never restored (TensorFlow's ``NoRestoreSaveable``).

    Return it from :meth:`Trackable._gather_saveables_for_checkpoint` for
    save-only state (a description, a config dump for other tools): the value
    is written under its checkpoint key, a restore reads nothing for it and
    counts it as matched, so ``assert_consumed`` passes.

    Parameters
    ----------
    tensor
        The value, or a callable returning it when the save happens.
    name
        The checkpoint key (the name the factory is called with).
    dtype, device
        As for :class:`SaveSpec`.
    """

    def __init__(self, tensor: Any, name: str, dtype: Any = None, device: Any = None) -> None:
        super().__init__(tensor, [SaveSpec(tensor, "", name, dtype=dtype, device=device)], name)

    def restore(self, restored_tensors: Sequence[np.ndarray[Any, Any]], restored_shapes: Any) -> Any:
        """Nothing: the value is save-only."""
        return None


class _VariableSaveable(SaveableObject):
    """A :class:`~trackpoint.Variable` returned from ``_gather_saveables_for_checkpoint``."""

    def __init__(self, variable: Variable, name: str) -> None:
        super().__init__(variable, [SaveSpec(variable._value, "", name, dtype=variable.dtype)], name)
        self.variable = variable

    def restore(self, restored_tensors: Sequence[np.ndarray[Any, Any]], restored_shapes: Any) -> Any:
        self.variable.assign(restored_tensors[0])


def uses_saveables(trackable: Trackable) -> bool:
    """Whether ``trackable`` saves through :meth:`Trackable._gather_saveables_for_checkpoint`.

    TensorFlow's rule: the class nearest in the method resolution order that
    defines one of :meth:`Trackable._serialize_to_tensors` and
    :meth:`Trackable._gather_saveables_for_checkpoint` decides, so a subclass
    of :class:`~trackpoint.Variable` overriding the latter saves through it
    (it is never silently ignored).
    """
    return uses_saveables_class(type(trackable))


def uses_saveables_class(kind: type[Trackable]) -> bool:
    """:func:`uses_saveables` for every object of the class ``kind``."""
    for cls in kind.__mro__:
        if cls is Trackable:
            return False
        if "_serialize_to_tensors" in cls.__dict__:
            return False
        if "_gather_saveables_for_checkpoint" in cls.__dict__:
            return True
    return False


def has_default_children(cls: type[Trackable]) -> bool:
    """Whether the children of ``cls``'s objects are their tracked dependencies, as :class:`Trackable` defines them.

    True unless the class overrides :meth:`Trackable._trackable_children` or
    :attr:`Trackable._checkpoint_dependencies`: an object of such a class
    that never tracked a dependency has no children, which graph walks use to
    skip asking each of 10^5 variables for its empty children.
    """
    return (
        cls._trackable_children is Trackable._trackable_children
        and cls._checkpoint_dependencies is _DEFAULT_DEPENDENCIES
    )


def make_saveable(trackable: Trackable, attribute: str, factory: Any, key: str) -> SaveableObject:
    """The :class:`SaveableObject` of one entry of ``_gather_saveables_for_checkpoint``.

    Parameters
    ----------
    trackable
        The object whose entry this is (for messages).
    attribute
        The entry's name.
    factory
        The entry's value: a Variable, a SaveableObject, or ``factory(name=key)``.
    key
        The attribute's checkpoint key.

    Raises
    ------
    TrackableError
        The value is none of those, the saveable's name does not contain
        ``key``, or a spec is sliced.
    """
    from trackpoint.variables import Variable

    owner = f"{type(trackable).__name__}._gather_saveables_for_checkpoint()[{attribute!r}]"
    value = factory
    if callable(value) and not isinstance(value, (Variable, SaveableObject)):
        value = value(name=key)
    if isinstance(value, Variable):
        return _VariableSaveable(value, key)
    if not isinstance(value, SaveableObject):
        raise TrackableError(
            f"{owner} gave {type(value).__name__}; it must be a trackpoint.Variable, a SaveableObject, or a "
            "callable factory(name=key) returning one (or implement _serialize_to_tensors instead)"
        )
    if key not in value.name:
        raise TrackableError(
            f"{owner} produced a SaveableObject named {value.name!r}; its name must contain the checkpoint key "
            f"{key!r} (build it with the name the factory is called with)"
        )
    for spec in value.specs:
        if spec.slice_spec:
            raise TrackableError(
                f"{owner}: spec {spec.name!r} has slice_spec {spec.slice_spec!r}; partitioned (sliced) values "
                "are not supported, save the whole value in one spec"
            )
    return value


class _CheckpointInitialValue:
    """An initializer returning the value a waiting restore holds for a variable (restore on create)."""

    def __init__(self, position: DeferredRestore, name: str) -> None:
        self._position = position
        self._name = name

    def __call__(self, shape: Any = None, dtype: Any = None, **_: Any) -> np.ndarray[Any, Any]:
        from trackpoint.variables import Variable

        info = self._position.tensor_info()
        if shape is not None and tuple(int(d) for d in shape) != tuple(info.shape):
            raise ShapeMismatchError(
                f"{self._name!r}: the checkpoint holds shape {tuple(info.shape)}, but shape {tuple(shape)} was "
                "requested"
            )
        holder = Variable._uninitialized(info.shape, info.dtype, name=self._name, trainable=False)
        self._position.restore(holder)
        return holder.numpy()


def _initial_value(initializer: Any, shape: tuple[int, ...] | None, dtype: np.dtype[Any] | None) -> Any:
    """The value add_variable starts from when nothing is restored.

    Raises
    ------
    ShapeMismatchError
        ``initializer`` is a value of another shape than ``shape``: it is not
        broadcast, as TensorFlow does not broadcast a constant initializer.
    """
    if initializer is None:
        return np.zeros(shape or (), dtype=dtype if dtype is not None else np.float32)
    if callable(initializer):
        fn: Callable[..., Any] = initializer
        return fn(shape if shape is not None else (), dtype if dtype is not None else np.dtype(np.float32))
    if shape is not None and np.shape(initializer) != shape:
        raise ShapeMismatchError(
            f"add_variable: the initializer is a constant of shape {np.shape(initializer)}, but shape {shape} was "
            "requested; a constant is not broadcast (TensorFlow: 'If initializer is a constant, do not specify "
            "shape.'). Pass a value of the requested shape, or a callable initializer(shape, dtype)."
        )
    return initializer
