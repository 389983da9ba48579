"""The one exception hierarchy of trackpoint.

Every error trackpoint raises on purpose derives from :class:`CheckpointError`.
Each subclass also inherits the builtin exception that a generic handler would
expect (``except FileNotFoundError`` still catches a missing checkpoint), so
adopting trackpoint never silently changes what existing ``except`` clauses do.
Backends translate the errors of their storage libraries (``OSError``,
botocore, gcsfs, zarr) into these classes, chained with ``raise ... from exc``.

::

    CheckpointError
    ├── CheckpointNotFoundError        (+ FileNotFoundError)
    ├── CheckpointExistsError          (+ FileExistsError)
    ├── InvalidCheckpointError         (+ ValueError)
    │   └── DataLossError                truncated / corrupted / foreign bytes
    ├── CheckpointKeyError             (+ KeyError)     no such tensor in a checkpoint
    ├── InvalidPathError               (+ ValueError)   a path or URL no store can use (NUL byte)
    ├── TrackableError                 (+ ValueError)   bad objects handed to trackpoint
    │   └── NameConflictError                           two dependencies, one name
    ├── AssignmentError                (+ ValueError)   value does not fit a variable
    │   ├── ShapeMismatchError
    │   └── DTypeMismatchError         (+ TypeError)
    ├── UnsupportedDTypeError          (+ TypeError)
    ├── MatchError                     (+ AssertionError) a load-status assertion failed
    ├── StorageError                   (+ OSError)      the store failed
    │   ├── StoragePermissionError     (+ PermissionError)
    │   ├── TransientStorageError                       retries exhausted
    │   └── ConcurrentModificationError                 a conditional write lost a race
    └── BackendError                   (+ LookupError)  choosing / loading a backend
        ├── UnknownBackendError                         no backend for a name / scheme
        ├── BackendUnavailableError    (+ ImportError)  optional dependency missing
        └── PluginError                                 a plugin is broken or clashes

Messages say what failed, where (path, key, backend), and what to do.
"""

from __future__ import annotations

__all__ = [
    "AssignmentError",
    "BackendError",
    "BackendUnavailableError",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointKeyError",
    "CheckpointNotFoundError",
    "ConcurrentModificationError",
    "DTypeMismatchError",
    "DataLossError",
    "InvalidCheckpointError",
    "InvalidPathError",
    "MatchError",
    "NameConflictError",
    "PluginError",
    "ShapeMismatchError",
    "StorageError",
    "StoragePermissionError",
    "TrackableError",
    "TransientStorageError",
    "UnknownBackendError",
    "UnsupportedDTypeError",
]


class CheckpointError(Exception):
    """Root of every error raised by trackpoint."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint (or a file a checkpoint needs) does not exist."""

    # FileNotFoundError's OSError.__init__ would reinterpret a 2-tuple of
    # arguments as (errno, strerror); keep the message exactly as given.
    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointExistsError(CheckpointError, FileExistsError):
    """A committed checkpoint already exists where a new one was to be written."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidCheckpointError(CheckpointError, ValueError):
    """The bytes at a checkpoint path are not a valid checkpoint."""


class DataLossError(InvalidCheckpointError):
    """Stored data is truncated, corrupted (checksum mismatch) or inconsistent."""


class CheckpointKeyError(CheckpointError, KeyError):
    """A checkpoint has no tensor under the requested key."""

    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument; a message reads better plain.
        return str(self.args[0]) if self.args else ""


class InvalidPathError(CheckpointError, ValueError):
    """A checkpoint path or URL that no store can use (for example one holding a NUL byte).

    Raised before any storage is touched, whichever backend the path would select.
    """


class TrackableError(CheckpointError, ValueError):
    """An object handed to trackpoint cannot be tracked as requested."""


class NameConflictError(TrackableError):
    """Two different dependencies were given the same name on one object."""


class AssignmentError(CheckpointError, ValueError):
    """A value cannot be assigned to (or restored into) a variable."""


class ShapeMismatchError(AssignmentError):
    """The value's shape differs from the variable's shape."""


class DTypeMismatchError(AssignmentError, TypeError):
    """The value's dtype differs from the variable's dtype."""


class UnsupportedDTypeError(CheckpointError, TypeError):
    """A dtype that no checkpoint format can store (e.g. arbitrary Python objects)."""


class MatchError(CheckpointError, AssertionError):
    """A load-status assertion (``assert_consumed`` and friends) failed."""


class StorageError(CheckpointError, OSError):
    """The storage system failed to read, write, list or delete."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoragePermissionError(StorageError, PermissionError):
    """The store refused access (credentials, ACLs, read-only file system)."""


class TransientStorageError(StorageError):
    """A failure that may succeed when retried; raised once retries are exhausted."""


class ConcurrentModificationError(StorageError):
    """A conditional write found the object changed by another writer."""


class BackendError(CheckpointError, LookupError):
    """Choosing or loading a storage backend failed."""


class UnknownBackendError(BackendError):
    """No backend is registered for the requested name or URL scheme."""


class BackendUnavailableError(BackendError, ImportError):
    """A backend's optional dependency is not installed."""


class PluginError(BackendError):
    """A plugin is invalid or clashes with another plugin."""
