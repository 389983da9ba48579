"""Deprecated: ``LocalFiles`` moved to :mod:`trackpoint.backends.stores`.

The ``bundle`` backend is registered by :mod:`trackpoint.backends._builtin`.
"""

from __future__ import annotations

from trackpoint.backends._deprecated import warn_moved
from trackpoint.backends.stores.local import LocalFiles

__all__ = ["LocalFiles"]

warn_moved("trackpoint.backends.local", "trackpoint.backends.stores (LocalFiles)")
