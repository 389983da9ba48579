"""The one seam between the core and backend discovery.

The core asks for "the backend for this URL and these options" here and
nowhere else. Discovery itself (entry points, hooks, precedence) lives in
:mod:`trackpoint.plugins`, imported on first use so that ``import trackpoint``
stays fast and imports no storage library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = ["open_backend"]


def open_backend(path: str, options: CheckpointOptions | None = None) -> StorageBackend:
    """The storage backend that serves ``path`` under ``options``.

    Raises
    ------
    UnknownBackendError
        No backend is registered for the requested name or the URL's scheme.
    BackendUnavailableError
        The backend's optional dependency is missing (the message names the extra).
    InvalidPathError
        ``path`` holds a character no store accepts (a NUL byte).
    """
    from trackpoint import _paths
    from trackpoint.plugins import open_backend as _open  # lazy: keeps import light

    return _open(_paths.check(path), options)
