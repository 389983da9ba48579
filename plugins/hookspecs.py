"""Hook specifications: the whole plugin interface of trackpoint, in one module.

A plugin is a module or object with functions decorated by
:data:`trackpoint.plugins.hookimpl`, published in the ``trackpoint.backends``
entry-point group. Hooks are always called with keyword arguments.
Every hook here has a section in ``docs/hooks.md``; a test enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from trackpoint.plugins._spec import BackendSpec
    from trackpoint.storage import CheckpointOptions

__all__ = [
    "PROJECT_NAME",
    "hookimpl",
    "hookspec",
    "trackpoint_checkpoint_deleted",
    "trackpoint_configure_backend",
    "trackpoint_detect_backends",
    "trackpoint_register_backends",
    "trackpoint_restore_failed",
    "trackpoint_restore_finished",
    "trackpoint_restore_progress",
    "trackpoint_restore_started",
    "trackpoint_save_committed",
    "trackpoint_save_failed",
    "trackpoint_save_progress",
    "trackpoint_save_started",
    "trackpoint_select_backend",
]

#: The pluggy project name; markers of any other project are ignored.
PROJECT_NAME = "trackpoint"

#: Marks the hook specifications below.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's hook implementations (re-exported as ``trackpoint.plugins.hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


@hookspec
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register storage backends.

    Called for each plugin separately, in plugin load order (built-ins,
    then third-party entry points, then run-time registrations; see
    ``docs/backends/index.md``), whenever the backend table is (re)built:
    on first use and after :func:`~trackpoint.plugins.register`,
    :func:`~trackpoint.plugins.unregister` or :func:`~trackpoint.plugins.block`.
    It must therefore only describe backends, never do work.

    Parameters
    ----------
    register
        Host-owned callback; call it once per backend with a
        :class:`~trackpoint.plugins.BackendSpec`. The host validates the spec.
        A spec whose name a backend registered earlier holds replaces it with
        ``override=True`` and is left out without; so is a spec claiming a URL
        scheme an earlier backend of another name serves (``override=True``
        replaces by name only). A left-out backend breaks no other: it is
        logged, listed as unusable by :func:`~trackpoint.list_backends` with a
        reason naming both providers and what resolves the clash, and asking
        for it raises :class:`~trackpoint.errors.PluginError` with that reason
        (:func:`~trackpoint.plugins.register` raises it at once).

    Returns
    -------
    None
        The return value is ignored; registration happens through ``register``.

    .. versionadded:: 0.1

    Use in backends
    ---------------
    Keep the module light: no storage-library import at module level. Put
    heavy imports inside ``BackendSpec.factory`` and list them in ``requires``
    so a missing dependency is reported with the extra to install.
    """


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def trackpoint_select_backend(url: str, options: CheckpointOptions) -> str | None:
    """Choose the backend name for a checkpoint URL.

    Consulted after an explicit ``CheckpointOptions(backend=...)`` and the
    ``TRACKPOINT_BACKEND`` environment variable, before the scheme table and
    the default (``bundle``). Implementations run last-registered first, so a
    third-party plugin is asked before the built-ins; ``tryfirst``/``trylast``
    adjust that as usual in pluggy.

    Parameters
    ----------
    url
        The checkpoint path or URL as the user wrote it.
    options
        The options of the save or restore.

    Returns
    -------
    str or None
        A registered backend name, or ``None`` to let the next plugin (and
        finally the scheme table) decide. A name that is not registered is an
        :class:`~trackpoint.errors.UnknownBackendError` listing the valid ones.

    This hook is ``firstresult``: the first non-``None`` answer wins.

    .. versionadded:: 0.1

    Use in backends
    ---------------
    Only needed when a scheme alone cannot decide, e.g. a plugin that routes
    ``s3://`` URLs of one bucket to a different backend. Backends that serve a
    scheme just declare it in ``BackendSpec.schemes``.
    """


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


@hookspec
def trackpoint_detect_backends(url: str, options: CheckpointOptions) -> Sequence[str] | None:
    """Name the backends, besides the selected one, whose checkpoints may be stored at a path or URL.

    Readers (``Checkpoint.restore``/``read``, ``load_checkpoint``,
    ``list_variables``, ``object_metadata``, ``latest_checkpoint``,
    ``CheckpointManager``) call it when the caller chose no backend
    explicitly (neither ``CheckpointOptions(backend=...)`` nor
    ``TRACKPOINT_BACKEND``), so that a checkpoint written with an option that
    picked another backend is found from its path alone. Every plugin that
    implements it is asked; the answers are merged in backend registration
    order. The host then asks each named backend, through the storage
    contract, the cheap questions: :meth:`~trackpoint.storage.StorageBackend.exists`
    for a prefix (the selected backend first, the others only when it has
    nothing there) and :meth:`~trackpoint.storage.StorageBackend.list_checkpoints`
    for a directory (all of them). The backend the URL selects, and the one
    its scheme (or the ``bundle`` default) names, are always asked: do not
    name them.

    Parameters
    ----------
    url
        A checkpoint prefix or a directory, as the user wrote it.
    options
        The options of the read; ``options.backend`` is ``None`` here.

    Returns
    -------
    Sequence of str or None
        Names of registered backends that can store checkpoints at ``url``
        as written (``["zarr"]`` for a plain local path), or ``None`` (or an
        empty sequence) when none of this plugin's backends can. A blocked
        name, or a backend whose ``requires`` are not installed, is skipped;
        a name nobody registered, or anything but a sequence of ``str``, is a
        :class:`~trackpoint.errors.PluginError` naming the implementers.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Implement it when your backend also writes to a store whose URLs another
    backend serves by default: ``zarr`` answers ``["zarr"]`` for plain paths,
    ``file://``, ``s3://`` and ``gs://`` URLs, which ``bundle``, ``s3`` and
    ``gcs`` serve. Decide from ``url`` alone (its scheme, never its contents)
    and do no I/O: it runs on every read. The backends you name are opened
    with the caller's ``storage_options`` and no ``backend_options``, and
    their ``exists`` and ``list_checkpoints`` must stay cheap (one stat or
    request, one listing), because readers call them for paths that hold
    other formats.
    """


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@hookspec
def trackpoint_configure_backend(name: str, url: str, options: CheckpointOptions) -> Mapping[str, Any] | None:
    """Supply storage options (endpoints, credentials, tuning) for a backend about to be opened.

    Called after selection, just before ``BackendSpec.factory``, by every
    plugin that implements it (last-registered first). The answers are merged
    into ``options.storage_options`` and the factory receives the result: for
    each key the user's own ``storage_options`` win, then the first plugin
    that supplied the key.

    Parameters
    ----------
    name
        The selected backend's name (``"s3"``).
    url
        The checkpoint path or URL as the user wrote it.
    options
        The options of the save or restore, as the user gave them.

    Returns
    -------
    Mapping or None
        Storage options to add (``{"endpoint_url": ..., "key": ...}``), or
        ``None`` to add nothing. Values may be secrets: trackpoint never logs
        them or puts them in messages. Anything but a mapping with ``str``
        keys is a :class:`~trackpoint.errors.PluginError`.

    .. versionadded:: 0.1

    Use in backends
    ---------------
    Backends rarely implement it; it is for site plugins that know where
    checkpoints live, e.g. one that returns the endpoint and credentials of an
    on-premises S3 store for ``s3://`` URLs of its buckets, so that training
    code carries no secrets. Return ``None`` for URLs and backends you do not
    know.
    """


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------
#
# Fired by trackpoint for every save and restore of its API, and every delete
# of a committed checkpoint; observers
# implement them to export metrics, draw progress or log. Each implementation
# is called on its own: one that raises is logged at WARNING on the
# "trackpoint" logger and never fails the save or restore, nor keeps the
# other observers from being called. Hook wrappers are refused on these hooks.


@hookspec
def trackpoint_save_started(
    path: str, operation: str, backend: str, total_bytes: int, num_tensors: int, is_async: bool
) -> None:
    """Observe the start of a save.

    Called once per save, in the thread that called it (``Checkpoint.save``,
    ``Checkpoint.write``, ``CheckpointManager.save``, ``Saver.save`` or
    :func:`trackpoint.convert`), before any byte is written. Exactly one of
    :func:`trackpoint_save_committed` and :func:`trackpoint_save_failed`
    follows for the same save.

    Parameters
    ----------
    path
        The checkpoint prefix being written (``/run/ckpt-3``, ``s3://b/run/ckpt-3``).
    operation
        What writes: ``"checkpoint"`` (``Checkpoint.save``/``write`` and
        ``CheckpointManager.save``), ``"saver"`` (the name-based ``Saver``) or
        ``"convert"`` (:func:`trackpoint.convert`, whose ``path`` may be a
        ``.safetensors`` or ``.npz`` file).
    backend
        The name of the backend that writes (``"bundle"``, ``"zarr"``, ...;
        ``"safetensors"`` or ``"npz"`` for a file written by ``convert``).
    total_bytes
        The bytes the save will write: the tensors' sizes (string tensors
        estimated), the serialized object graph included.
    num_tensors
        How many tensors the save writes, the object graph included.
    is_async
        Whether the save is asynchronous: the call returns before the write
        and the commit, which then run in a writer thread.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement event hooks; observers do (a plugin registered
    like any other, or at run time with :func:`trackpoint.plugins.register`).
    """


@hookspec
def trackpoint_save_progress(path: str, operation: str, written_bytes: int, total_bytes: int, seconds: float) -> None:
    """Observe the bytes a save has written so far.

    Called while the save writes, at most every 0.1 seconds and once when the
    last shard is written, from the thread that wrote the bytes (a writer
    thread of the backend's pool, or the writer thread of an asynchronous
    save). Calls for one save are never concurrent and ``written_bytes`` never
    decreases.

    Parameters
    ----------
    path
        The checkpoint prefix being written.
    operation
        As for :func:`trackpoint_save_started`.
    written_bytes
        Bytes written so far. Counted per tensor where the backend reports
        them (:func:`trackpoint.storage.shard_progress`), otherwise per shard.
        May end above ``total_bytes`` when string tensors were estimated low.
    total_bytes
        As announced by :func:`trackpoint_save_started`.
    seconds
        Seconds since the save started.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement it. A backend makes it finer-grained by calling
    the reporter :func:`trackpoint.storage.shard_progress` returns after each
    tensor it writes in ``write_shard``.
    """


@hookspec
def trackpoint_save_committed(
    path: str,
    operation: str,
    backend: str,
    nbytes: int,
    num_tensors: int,
    seconds: float,
    blocking_seconds: float,
    is_async: bool,
) -> None:
    """Observe a save that committed: the checkpoint is visible and complete.

    Called once per successful save, right after the backend's commit and
    before the write callbacks (``CheckpointOptions.experimental_write_callbacks``),
    the state-file update of ``Checkpoint.save`` and the retention of
    ``CheckpointManager.save``. For an asynchronous save it runs in the writer
    thread.

    Parameters
    ----------
    path
        The committed checkpoint prefix (what ``save`` returned).
    operation
        As for :func:`trackpoint_save_started`.
    backend
        The name of the backend that wrote it.
    nbytes
        Bytes written (as ``total_bytes`` of the start event).
    num_tensors
        Tensors written, the object graph included.
    seconds
        Seconds from the call of the save to the commit (the write duration
        TensorFlow records as a checkpoint metric).
    blocking_seconds
        Seconds the caller was blocked: equal to ``seconds`` for a synchronous
        save, the time until the call returned for an asynchronous one.
    is_async
        Whether the save was asynchronous.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement it. A monitoring plugin records ``seconds``,
    ``blocking_seconds`` and ``nbytes`` here, the figures TensorFlow records
    for its checkpoints.
    """


@hookspec
def trackpoint_save_failed(
    path: str,
    operation: str,
    backend: str,
    error: BaseException,
    seconds: float,
    blocking_seconds: float,
    is_async: bool,
) -> None:
    """Observe a save that failed: nothing of it is visible, the previous checkpoint is intact.

    Called once per failed save, after the backend aborted it, before the
    error reaches the caller (for an asynchronous save: the next ``save``,
    ``sync()`` or ``restore``).

    Parameters
    ----------
    path
        The checkpoint prefix that was being written.
    operation
        As for :func:`trackpoint_save_started`.
    backend
        The name of the backend that was writing.
    error
        The exception the save raises (a :class:`~trackpoint.errors.CheckpointError`
        as a rule; ``KeyboardInterrupt`` and the like too).
    seconds
        Seconds from the call of the save to the failure.
    blocking_seconds
        Seconds the caller was blocked (``seconds`` for a synchronous save).
    is_async
        Whether the save was asynchronous.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement it; they raise, and trackpoint reports the
    failure here.
    """


@hookspec
def trackpoint_restore_started(path: str, operation: str, backend: str, total_bytes: int, num_tensors: int) -> None:
    """Observe the start of a restore.

    Called once the checkpoint is found and opened, in the thread that called
    ``Checkpoint.restore``/``read`` (and ``CheckpointManager.restore_or_initialize``)
    or ``Saver.restore``; a restore that finds no checkpoint raises
    :class:`~trackpoint.errors.CheckpointNotFoundError` without events.
    Exactly one of :func:`trackpoint_restore_finished` and
    :func:`trackpoint_restore_failed` follows.

    Parameters
    ----------
    path
        The checkpoint prefix read (a directory given to ``restore`` is
        resolved to its latest checkpoint first).
    operation
        ``"checkpoint"`` (object-based restores) or ``"saver"`` (the name-based ``Saver``).
    backend
        The name of the backend that reads.
    total_bytes
        Bytes of the checkpoint's numeric tensors: an upper bound on what the
        restore reads (a partial restore reads less; string tensors are not counted).
    num_tensors
        Tensors stored in the checkpoint.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement event hooks; observers do.
    """


@hookspec
def trackpoint_restore_progress(path: str, operation: str, read_bytes: int, total_bytes: int, seconds: float) -> None:
    """Observe the bytes a restore has read so far.

    Called while tensors are read, at most every 0.1 seconds (reads are
    counted in batches of up to 64 MiB), in the restoring thread.

    Parameters
    ----------
    path
        The checkpoint prefix being read.
    operation
        As for :func:`trackpoint_restore_started`.
    read_bytes
        Bytes of numeric tensors read so far.
    total_bytes
        As announced by :func:`trackpoint_restore_started`.
    seconds
        Seconds since the restore started.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement it; trackpoint counts what their readers return.
    """


@hookspec
def trackpoint_restore_finished(
    path: str, operation: str, backend: str, nbytes: int, num_tensors: int, seconds: float
) -> None:
    """Observe a restore that completed: every value available now was assigned.

    Called once per successful restore, when ``restore``/``read`` returns.
    Values for objects created later (deferred restores) are read then, after
    this event, and are not counted.

    Parameters
    ----------
    path
        The checkpoint prefix read.
    operation
        As for :func:`trackpoint_restore_started`.
    backend
        The name of the backend that read it.
    nbytes
        Bytes of numeric tensors read during the call.
    num_tensors
        Tensors read during the call, the object graph included.
    seconds
        Seconds from opening the checkpoint to the end of the call.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement event hooks; observers do.
    """


@hookspec
def trackpoint_restore_failed(path: str, operation: str, backend: str, error: BaseException, seconds: float) -> None:
    """Observe a restore that failed after its checkpoint was opened.

    Called once, before the error reaches the caller. A restore that fails
    before any value is assigned (a dtype or shape mismatch, damaged data)
    leaves every object as it was.

    Parameters
    ----------
    path
        The checkpoint prefix that was being read.
    operation
        As for :func:`trackpoint_restore_started`.
    backend
        The name of the backend that was reading.
    error
        The exception the restore raises.
    seconds
        Seconds from opening the checkpoint to the failure.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement it; they raise, and trackpoint reports the
    failure here.
    """


@hookspec
def trackpoint_checkpoint_deleted(
    path: str, backend: str, reason: str, error: BaseException | None, seconds: float
) -> None:
    """Observe the delete of a committed checkpoint: done, or failed.

    Called once per attempt, after it, in the thread that deletes: the
    caller's for ``CheckpointManager.delete`` (and ``trackpoint rm``),
    :func:`~trackpoint.remove_checkpoint`, and the checkpoint of another
    format that :func:`~trackpoint.convert` (or ``convert_run``) with
    ``overwrite=True`` replaces; for retention (``CheckpointManager``'s, and
    the name-based ``Saver``'s ``max_to_keep``), the thread of the save that
    triggered it (the writer thread of an asynchronous save) and, with a
    coordinator, rank 0 alone, which deletes. A checkpoint kept by
    ``keep_checkpoint_every_n_hours`` is not deleted and fires nothing; nor
    does ``remove_checkpoint`` of a prefix where nothing is committed.

    Parameters
    ----------
    path
        The checkpoint prefix deleted.
    backend
        The name of the backend that holds the checkpoint.
    reason
        Why it is deleted: ``"retention"`` (``CheckpointManager``'s
        ``max_to_keep`` or ``best_fn``, or ``Saver``'s ``max_to_keep``, let it
        go) or ``"delete"`` (asked for: ``CheckpointManager.delete``,
        ``trackpoint rm``, :func:`~trackpoint.remove_checkpoint`, or a
        ``convert`` with ``overwrite=True`` onto a prefix holding a checkpoint
        of another format, which readers would otherwise read first).
    error
        ``None`` when the checkpoint is gone. Otherwise the exception the
        delete raised: the checkpoint may be whole or an invisible remainder
        (the commit point goes first). A failed retention delete is not raised:
        the checkpoint stays listed and the next save retries it, firing this
        event again. A failed ``delete`` is raised to the caller after this event.
    seconds
        Seconds the delete took, to its end or its failure.

    Returns
    -------
    None
        The return value is ignored.

    .. versionadded:: 0.2

    Use in backends
    ---------------
    Backends do not implement it; they raise from ``StorageBackend.delete``,
    and trackpoint reports the failure here. An alert on failed retention
    deletes catches a store that keeps checkpoints it should drop.
    """
