"""``AutoTrackable``: dependencies by attribute assignment (``tf.Module``-style)."""

from __future__ import annotations

from typing import Any, ClassVar

from trackpoint.data_structures import _PLAIN_TREES, NoDependency, assign_attribute, read_plain_tree
from trackpoint.trackable import Trackable

__all__ = ["AutoTrackable"]

_MISSING = object()

#: The tracking switches of :class:`~trackpoint.Trackable`: properties, never dependencies.
_SWITCHES = frozenset({"_setattr_tracking", "_manual_tracking"})


class AutoTrackable(Trackable):
    """A trackable whose attributes holding trackables or numpy values are saved.

    ``self.layer = Dense()`` tracks the layer as ``"layer"``; lists, dicts and
    tuples are wrapped so that the trackables and numpy values inside are
    saved by index or key; ``self.x = NoDependency(value)`` stores ``value``
    unsaved. Assigning another trackable to the attribute replaces the
    dependency in place (its position in the saved graph is kept); deleting
    the attribute, or assigning a value that is not saved, removes the
    dependency. (TensorFlow keeps a stale dependency in that last case;
    dropping it means a checkpoint never saves an object the program no longer
    refers to.)

    A numeric numpy value (``self.w = np.zeros(3)``, ``self.best =
    np.float64(0.5)``) is saved exactly where a :class:`~trackpoint.Variable`
    assigned to the attribute would be, while the attribute keeps the numpy
    value: a writeable array is restored in place, a numpy scalar or a
    read-only array is replaced by the restored value. (TensorFlow saves no
    numpy attributes; here numpy arrays are the tensors, so they are state.)
    Plain Python values (numbers, strings, ``None``, ...) are configuration
    and are not saved, as in TensorFlow. So are containers of other kinds (a
    ``dict`` subclass, a ``set``, a ``deque``, a dataclass instance, ...),
    which are not wrapped: one that holds a trackable, a numeric array or a
    stateful object raises :class:`~trackpoint.TrackableError` when assigned,
    since what it holds would not be saved. Assign a plain ``dict``, ``list``
    or ``tuple`` instead, or ``NoDependency(value)`` to keep it unsaved.

    A pytree that holds JAX arrays (lists, dicts, tuples and registered
    nodes) is tracked through wrappers of a copy of its containers, and the
    attribute reads as a plain tree interchangeable with the one given: that
    tree itself, and after a restore a plain tree of the restored arrays,
    rebuilt when the restore ends (or, after one that raised, at its first
    read, through ``__getattr__``: a class that defines its own
    ``__getattr__``, or the name itself, reads the wrapped tree instead).

    Attributes starting with ``_self_`` are internal bookkeeping and are
    never tracked; neither is anything assigned inside a method decorated
    with :func:`~trackpoint.no_automatic_dependency_tracking` or inside
    :func:`~trackpoint.no_automatic_dependency_tracking_scope`.
    """

    #: Refuse public attribute values (and container elements) that would not
    #: be saved, instead of keeping them unsaved. ``Checkpoint`` sets it: what
    #: is handed to a checkpoint must be saved or explicitly ``NoDependency``.
    _refuse_unsaved_values: ClassVar[bool] = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_self_") or name in _SWITCHES or not self._setattr_tracking:
            # Inside no_automatic_dependency_tracking: stored as given, dependencies untouched.
            object.__setattr__(self, name, value)
            return
        # Only the instance dict: a property getter must not run on assignment.
        if self.__dict__.get(name, _MISSING) is value and name not in self.__dict__.get(_PLAIN_TREES, ()):
            # ``self.x = self.x`` must not re-wrap or re-track. (A plain tree of JAX arrays is wrapped again:
            # the tree may have been changed in place since, and assigning it again is how it is saved.)
            return
        strict = self._refuse_unsaved_values and not name.startswith("_")
        plain_trees = type(self).__getattr__ is AutoTrackable.__getattr__
        stored, tracked = assign_attribute(self, name, value, strict=strict, plain_trees=plain_trees)
        if not tracked:
            self._delete_tracking(name)
        super().__setattr__(name, stored)

    def __getattr__(self, name: str) -> Any:
        # Called only for an attribute missing from the instance and its class: a pytree of JAX arrays whose
        # plain tree a restore that raised made out of date is rebuilt here (see data_structures._PlainTree).
        return read_plain_tree(self, name)

    def _no_dependency(self, value: Any) -> Any:
        """``NoDependency(value)``: assigned to an attribute, ``value`` is stored unsaved (TensorFlow's hook)."""
        return NoDependency(value)

    def __delattr__(self, name: str) -> None:
        self._delete_tracking(name)
        trees = self.__dict__.get(_PLAIN_TREES)
        if trees is not None and trees.pop(name, None) is not None and name not in self.__dict__:
            return  # a plain tree out of date since a restore: nothing left to delete
        super().__delattr__(name)
