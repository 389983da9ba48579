"""``AutoTrackable``: dependencies by attribute assignment (``tf.Module``-style)."""

from __future__ import annotations

from typing import Any

from trackpoint.data_structures import NoDependency, sticky_attribute_assignment
from trackpoint.trackable import Trackable

__all__ = ["AutoTrackable"]

_MISSING = object()


class AutoTrackable(Trackable):
    """A trackable whose attributes holding trackables become its dependencies.

    ``self.layer = Dense()`` tracks the layer as ``"layer"``; lists, dicts and
    tuples are wrapped so that the trackables inside are tracked by index or
    key; ``self.x = NoDependency(value)`` stores ``value`` untracked. Assigning
    another trackable to the attribute replaces the dependency in place (its
    position in the saved graph is kept); deleting the attribute, or assigning
    a value that is not trackable, removes the dependency. (TensorFlow keeps a
    stale dependency in that last case; dropping it means a checkpoint never
    saves an object the program no longer refers to.)

    Attributes starting with ``_self_`` are internal bookkeeping and are
    never tracked.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_self_"):
            object.__setattr__(self, name, value)
            return
        # Only the instance dict: a property getter must not run on assignment.
        if self.__dict__.get(name, _MISSING) is value:
            # ``self.x = self.x`` must not re-wrap or re-track.
            return
        stored = sticky_attribute_assignment(self, name, value)
        if isinstance(value, NoDependency) or not isinstance(stored, Trackable):
            self._delete_tracking(name)
        super().__setattr__(name, stored)

    def __delattr__(self, name: str) -> None:
        self._delete_tracking(name)
        super().__delattr__(name)
