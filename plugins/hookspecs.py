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
    "trackpoint_configure_backend",
    "trackpoint_detect_backends",
    "trackpoint_register_backends",
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
        :class:`~trackpoint.plugins.BackendSpec`. The host validates the spec and
        raises :class:`~trackpoint.errors.PluginError` naming both providers
        when a name is taken (unless the spec sets ``override=True``).

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
