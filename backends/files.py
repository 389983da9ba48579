"""Deprecated: the file layer moved to :mod:`trackpoint.backends.stores` (``FileLayer``, ``FileSink``)."""

from __future__ import annotations

from trackpoint.backends._deprecated import warn_moved
from trackpoint.backends.stores._base import FileLayer, FileSink

__all__ = ["FileLayer", "FileSink"]

warn_moved("trackpoint.backends.files", "trackpoint.backends.stores (FileLayer, FileSink)")
