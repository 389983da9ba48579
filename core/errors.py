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
    │   ├── ForeignCheckpointError                      another library's checkpoint or weights file is there
    │   └── InvalidSavePathError       (+ ValueError)   no checkpoint where TensorFlow raises ValueError
    │       └── SavePathIsNoneError                     None given where a checkpoint path is required
    ├── CheckpointExistsError          (+ FileExistsError)
    ├── InvalidCheckpointError         (+ ValueError)
    │   └── DataLossError                truncated / corrupted / foreign bytes
    ├── CheckpointKeyError             (+ KeyError)     no such tensor in a checkpoint
    ├── InvalidPathError               (+ ValueError)   a path or URL no store can use (NUL byte)
    ├── TrackableError                 (+ ValueError)   bad objects handed to trackpoint
    │   ├── NameConflictError                           two dependencies, one name
    │   ├── IncompletePartitionError                    the parts saved leave some of a partitioned value out
    │   └── NotTrackableError          (+ TypeError)    an object of the wrong type (TypeError in TensorFlow)
    ├── AssignmentError                (+ ValueError)   value does not fit a variable
    │   ├── ShapeMismatchError
    │   └── DTypeMismatchError         (+ TypeError)
    ├── UnsupportedDTypeError          (+ TypeError)
    ├── InvalidArgumentError           (+ ValueError)   an argument or option with a value trackpoint cannot use
    │   └── ArgumentTypeError          (+ TypeError)    an argument or option of the wrong type
    ├── UnsupportedOptionError         (+ NotImplementedError) an option trackpoint does not implement (yet)
    ├── SaveInProgressError            (+ RuntimeError) an async save is still being written
    ├── MatchError                     (+ AssertionError) a load-status assertion failed
    ├── CoordinationError              (+ RuntimeError) processes saving or restoring together disagree or fail
    │   └── CoordinationTimeoutError   (+ TimeoutError) another process did not answer in time
    ├── StorageError                   (+ OSError)      the store failed
    │   ├── StoragePermissionError     (+ PermissionError)
    │   ├── TransientStorageError                       retries exhausted
    │   └── ConcurrentModificationError                 a conditional write lost a race
    └── BackendError                   (+ LookupError)  choosing / loading a backend
        ├── BackendOptionError         (+ InvalidArgumentError) a backend or storage option it does not take
        ├── UnknownBackendError                         no backend for a name / scheme
        ├── BackendUnavailableError    (+ ImportError)  optional dependency missing
        └── PluginError                                 a plugin is broken or clashes

Messages say what failed, where (path, key, backend), and what to do. Every error
also carries that context as fields (:attr:`CheckpointError.backend`, ``url`` and
``key``, each ``None`` when unknown), so handlers need not parse messages.

Stores translate their failures in one place, :func:`translate_error`: an
``OSError`` by its ``errno``, an object-store failure by the :data:`ErrorKind`
its store classified it as. The table it reads (:data:`ERROR_CLASSES`) is the
one mapping from store failures to these classes.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = [
    "ERROR_CLASSES",
    "ArgumentTypeError",
    "AssignmentError",
    "BackendError",
    "BackendOptionError",
    "BackendUnavailableError",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointKeyError",
    "CheckpointNotFoundError",
    "ConcurrentModificationError",
    "CoordinationError",
    "CoordinationTimeoutError",
    "DTypeMismatchError",
    "DataLossError",
    "ErrorKind",
    "ForeignCheckpointError",
    "IncompletePartitionError",
    "InvalidArgumentError",
    "InvalidCheckpointError",
    "InvalidPathError",
    "InvalidSavePathError",
    "MatchError",
    "NameConflictError",
    "NotTrackableError",
    "PluginError",
    "SaveInProgressError",
    "SavePathIsNoneError",
    "ShapeMismatchError",
    "StorageError",
    "StoragePermissionError",
    "TrackableError",
    "TransientStorageError",
    "UnknownBackendError",
    "UnsupportedDTypeError",
    "UnsupportedOptionError",
    "translate_error",
]


class CheckpointError(Exception):
    """Root of every error raised by trackpoint.

    Parameters
    ----------
    *args
        The message (as for any exception).
    backend
        Name of the backend that failed (``"s3"``, ``"bundle"``), if known.
    url
        The path or URL of the checkpoint, file or object concerned, if known.
    key
        The tensor key or object key concerned, if known.

    Notes
    -----
    The three fields are keyword-only, optional, and kept as attributes of
    the same names. ``str()`` appends those the message does not already
    show, so a message that names its URL is not repeated (an object key
    counts as shown when the URL holding it is).
    """

    backend: str | None
    url: str | None
    key: str | None

    def __init__(
        self, *args: object, backend: str | None = None, url: str | None = None, key: str | None = None
    ) -> None:
        super().__init__(*args)
        self.backend = backend
        self.url = url
        self.key = key

    def _message(self) -> str:
        return super().__str__()

    def __str__(self) -> str:
        message = self._message()
        shown = {v for v in (self.backend, self.url, self.key) if v is not None and _names(message, v)}
        if self.url in shown and self.key is not None and self.key in self.url:
            shown.add(self.key)  # an object key is shown as part of its URL
        missing = [
            f"{label} {value!r}"
            for label, value in (("backend", self.backend), ("url", self.url), ("key", self.key))
            if value is not None and value not in shown
        ]
        if not missing:
            return message
        context = ", ".join(missing)
        return f"{message} ({context})" if message else context


def _names(message: str, value: str) -> bool:
    """Whether ``message`` shows ``value`` as a whole (``'ckpt-1'`` is not shown by ``'ckpt-10'``)."""
    return re.search(rf"(?<![\w/.:-]){re.escape(value)}(?![\w/-])", message) is not None


class _VerbatimMessage(CheckpointError):
    """A message kept exactly as given, for subclasses of ``OSError``.

    ``OSError.__init__`` would reinterpret a 2-tuple of arguments as
    ``(errno, strerror)``; these classes keep ``str(message)`` as it was passed.
    """

    def __init__(
        self, message: str = "", *, backend: str | None = None, url: str | None = None, key: str | None = None
    ) -> None:
        Exception.__init__(self, message)
        self.backend = backend
        self.url = url
        self.key = key

    def _message(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(_VerbatimMessage, FileNotFoundError):
    """A checkpoint (or a file a checkpoint needs) does not exist."""


class InvalidSavePathError(CheckpointNotFoundError, ValueError):
    """No checkpoint is committed at a path given to restore where TensorFlow raises ``ValueError``.

    ``Saver.restore`` of a path that is not a checkpoint ("The passed save_path
    is not a valid checkpoint"): ported ``except ValueError`` clauses and
    ``except FileNotFoundError`` ones both catch it.
    """


class SavePathIsNoneError(InvalidSavePathError):
    """``None`` was given where a checkpoint path is required (TensorFlow raises ``ValueError`` there)."""


class ForeignCheckpointError(CheckpointNotFoundError):
    """No checkpoint is at the path, but another library's checkpoint or weights file is.

    An Orbax run or step, a PyTorch distributed (DCP) checkpoint, a Keras
    HDF5 weights file or ``.keras`` archive, a ``torch.save`` file, a
    SavedModel without its variables: the message says which, and how to go
    on (usually: load it with that library once and save the values with
    trackpoint). A :class:`CheckpointNotFoundError`, so handlers of that class
    (and of ``FileNotFoundError``) catch it too.

    Attributes
    ----------
    found : str
        What is at the path and what to do, the clause of the message after the path
        (``"it is a Keras weights file (...), a format trackpoint does not read. ..."``).
    """

    def __init__(
        self,
        message: str = "",
        *,
        found: str = "",
        backend: str | None = None,
        url: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend, url=url, key=key)
        self.found = found


class CheckpointExistsError(_VerbatimMessage, FileExistsError):
    """A committed checkpoint already exists where a new one was to be written."""


class InvalidCheckpointError(CheckpointError, ValueError):
    """The bytes at a checkpoint path are not a valid checkpoint."""


class DataLossError(InvalidCheckpointError):
    """Stored data is truncated, corrupted (checksum mismatch) or inconsistent."""


class CheckpointKeyError(CheckpointError, KeyError):
    """A checkpoint has no tensor under the requested key."""

    def _message(self) -> str:
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


class IncompletePartitionError(TrackableError):
    """The parts (slices) saved for a partitioned value leave some of its elements unwritten.

    Raised by the coverage check a save makes before it commits a
    partitioned value, so nothing is committed. The usual cause is one
    process of a multi-process job saving alone the part of a value it holds
    (a sharded DTensor or JAX array): the remedy is to save together with
    the others, passing ``CheckpointOptions(coordinator=...)`` on every
    process. A :class:`TrackableError`, so handlers of that class (and of
    ``ValueError``) catch it too.
    """


class NotTrackableError(TrackableError, TypeError):
    """An object of the wrong type was given where a trackable or a variable is required.

    Raised where TensorFlow raises ``TypeError`` (``_track_trackable`` of a
    non-trackable, a ``Saver`` ``var_list`` that is not a list or dict of
    variables, or has non-string names), so ported ``except TypeError`` clauses
    keep working; it is also a :class:`TrackableError` (a ``ValueError``).
    """


class AssignmentError(CheckpointError, ValueError):
    """A value cannot be assigned to (or restored into) a variable."""


class ShapeMismatchError(AssignmentError):
    """The value's shape differs from the variable's shape."""


class DTypeMismatchError(AssignmentError, TypeError):
    """The value's dtype differs from the variable's dtype."""


class UnsupportedDTypeError(CheckpointError, TypeError):
    """A dtype that no checkpoint format can store (e.g. arbitrary Python objects)."""


class InvalidArgumentError(CheckpointError, ValueError):
    """An argument or option has a value trackpoint cannot use (``max_to_keep=-1``, ``num_writers=0``).

    Raised when the call is made, before anything is written, not later when the value is first used.
    """


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument or option is of a type trackpoint cannot use (``max_to_keep="3"``, ``options={...}``)."""


class UnsupportedOptionError(CheckpointError, NotImplementedError):
    """An option TensorFlow accepts was set to a value trackpoint does not implement (yet)."""


class SaveInProgressError(CheckpointError, RuntimeError):
    """An asynchronous save is still being written where it must not be (a refused save, a call from its writer)."""


class MatchError(CheckpointError, AssertionError):
    """A load-status assertion (``assert_consumed`` and friends) failed."""


class CoordinationError(CheckpointError, RuntimeError):
    """Processes saving or restoring one checkpoint together (:mod:`trackpoint.distributed`) failed.

    Raised on every process of a coordinated save or restore when any of them
    failed (the message names the process and its error) or when they did not
    call the same operation with the same arguments.
    """


class CoordinationTimeoutError(CoordinationError, TimeoutError):
    """Another process did not answer within the coordinator's time-out (it died, hangs, or is too slow)."""


class StorageError(_VerbatimMessage, OSError):
    """The storage system failed to read, write, list or delete."""


class StoragePermissionError(StorageError, PermissionError):
    """The store refused access (credentials, ACLs, read-only file system)."""


class TransientStorageError(StorageError):
    """A failure that may succeed when retried; raised once retries are exhausted."""


class ConcurrentModificationError(StorageError):
    """A conditional write found the object changed by another writer."""


class BackendError(CheckpointError, LookupError):
    """Choosing or loading a storage backend failed."""


class BackendOptionError(BackendError, InvalidArgumentError):
    """A ``backend_options`` or ``storage_options`` entry the backend does not take, or a value it cannot use.

    Also an :class:`InvalidArgumentError` (a ``ValueError``): a misspelt key or a ``part_size`` too small is
    a wrong argument like any other, whichever handler catches it.
    """


class UnknownBackendError(BackendError):
    """No backend is registered for the requested name or URL scheme."""


class BackendUnavailableError(BackendError, ImportError):
    """A backend's optional dependency is not installed."""


class PluginError(BackendError):
    """A plugin is invalid or clashes with another plugin."""


# ------------------------------------------------------------------ translation
#: How a store classifies one failure of its client (see :func:`translate_error`):
#: ``"transient"`` (worth retrying: throttling, time-outs, 5xx), ``"not_found"``,
#: ``"precondition"`` (a conditional write or create found another version),
#: ``"permission"`` (credentials, ACLs, a read-only file system), ``"range"``
#: (a ranged read past the end of the object) and ``"other"``.
ErrorKind = Literal["transient", "not_found", "precondition", "permission", "range", "other"]

#: The one table from store failures to trackpoint errors: an :data:`ErrorKind`
#: or an ``OSError`` errno to the class :func:`translate_error` raises. An errno
#: not listed is a plain :class:`StorageError`. ``"precondition"`` maps to
#: :class:`ConcurrentModificationError`; a failed create-only write
#: (``translate_error(..., create_only=True)``, or ``EEXIST``) is a
#: :class:`CheckpointExistsError`.
ERROR_CLASSES: Final[Mapping[ErrorKind | int, type[CheckpointError]]] = MappingProxyType(
    {
        "transient": TransientStorageError,
        "not_found": CheckpointNotFoundError,
        "precondition": ConcurrentModificationError,
        "permission": StoragePermissionError,
        "range": DataLossError,
        "other": StorageError,
        errno.ENOENT: CheckpointNotFoundError,
        errno.EACCES: StoragePermissionError,
        errno.EPERM: StoragePermissionError,
        errno.EROFS: StoragePermissionError,
        errno.EEXIST: CheckpointExistsError,
    }
)


def translate_error(
    cause: ErrorKind | OSError | CheckpointError,
    message: str,
    *,
    backend: str | None = None,
    url: str | None = None,
    key: str | None = None,
    create_only: bool = False,
) -> CheckpointError:
    """The trackpoint error for a failure of a store, chosen by :data:`ERROR_CLASSES`.

    Stores call this wherever their client or the operating system fails, and
    raise the result chained to the original exception::

        except OSError as exc:
            raise translate_error(exc, f"local: cannot read {path!r}", url=path) from exc

    A trackpoint error is returned as it is. Several are ``OSError`` subclasses
    (:class:`CheckpointNotFoundError`, :class:`CheckpointExistsError`, every
    :class:`StorageError`), so a handler like the one above also catches those
    a store raises itself inside the ``try``; translating them by ``errno``
    (which they do not set) would turn each into a plain :class:`StorageError`
    and lose what it says.

    Parameters
    ----------
    cause
        An ``OSError`` (chosen by its ``errno``), or the :data:`ErrorKind` the
        store classified its client's exception as. A
        :class:`CheckpointError` is returned unchanged (class and message;
        only context it lacks is filled in from ``backend``, ``url`` and
        ``key``), and ``message`` is then not used.
    message
        What failed, where, and what to do; kept verbatim. Never put
        credentials or request headers into it.
    backend, url, key
        The context the error carries (see :class:`CheckpointError`).
    create_only
        The failed request was a create-only write: a ``"precondition"``
        failure then means the object exists (:class:`CheckpointExistsError`)
        rather than that it changed (:class:`ConcurrentModificationError`).

    Returns
    -------
    CheckpointError
        Not raised: the caller raises it ``from`` the original exception
        (for a ``cause`` returned unchanged, ``raise error from error`` shows
        it once, as a plain ``raise`` would).

    Raises
    ------
    ValueError
        ``cause`` is a string that is no :data:`ErrorKind`.
    """
    if isinstance(cause, CheckpointError):
        # Already ours: its class says more than an errno it does not have. Context is only added.
        cause.backend = cause.backend or backend
        cause.url = cause.url or url
        cause.key = cause.key or key
        return cause
    if isinstance(cause, OSError):
        cls = ERROR_CLASSES.get(cause.errno, StorageError) if cause.errno is not None else StorageError
    elif cause == "precondition" and create_only:
        cls = CheckpointExistsError
    elif cause in ERROR_CLASSES:
        cls = ERROR_CLASSES[cause]
    else:
        kinds = ", ".join(repr(k) for k in ERROR_CLASSES if isinstance(k, str))
        raise ValueError(
            f"translate_error: unknown error kind {cause!r}; a store classifies failures as one of {kinds}"
        )
    return cls(message, backend=backend, url=url, key=key)


# ------------------------------------------------------------------ redaction
#: Storage-option names whose values are credentials (s3fs ``key``/``secret``/``token``, gcsfs ``token``,
#: Azure account keys, SAS tokens and connection strings, passwords of any client).
_SECRET_OPTION: Final = re.compile(r"token|secret|key|password|passwd|credential|sas|signature|connection|auth", re.I)
#: Credentials carried in a URL's query by client libraries' own messages (a token being validated, a
#: presigned URL's signature, an API key) or in an Azure connection string (``AccountKey=...;``, whose
#: parameters ``;`` separates). Names match within longer ones too: ``key=`` also finds ``AccountKey=`` and
#: ``x-api-key=``, ``signature=`` finds ``SharedAccessSignature=``.
_SECRET_QUERY: Final = re.compile(
    r"((?:access_token|id_token|refresh_token|token|sig|signature|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-goog-signature|x-goog-credential|key)=)"
    r"[^&;\s'\"]+",
    re.I,
)
REDACTED: Final = "<redacted>"


def redact(text: str, storage_options: Mapping[str, object]) -> str:
    """``text`` without the credentials of ``storage_options`` and without credentials in URL queries.

    Client libraries put what they were given into their messages (gcsfs
    validates a token by a request whose URL holds it, and reports the URL
    when the request fails); trackpoint's messages quote such errors, and
    storage options must never reach a message or a log. Values of options
    whose names say they are credentials are replaced, at any depth of
    nested mappings, as written and URL-encoded, and so is anything after
    ``access_token=``, ``sig=`` and the like in a URL.
    """
    from urllib.parse import quote, quote_plus

    secrets: set[str] = set()

    def collect(options: Mapping[Any, object]) -> None:
        for name, value in options.items():
            if isinstance(value, Mapping):
                collect(value)
            elif isinstance(value, str) and len(value) >= 4 and _SECRET_OPTION.search(str(name)):
                secrets.update((value, quote(value, safe=""), quote_plus(value)))

    collect(storage_options)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _SECRET_QUERY.sub(rf"\1{REDACTED}", text)
