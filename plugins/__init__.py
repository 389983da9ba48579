"""Storage plugins: hook specifications, the plugin manager and the conformance kit.

Backends, built-in and third-party alike, are pluggy plugins published in the
``trackpoint.backends`` entry-point group. A plugin module implements
:func:`~trackpoint.plugins.hookspecs.trackpoint_register_backends` with the
:data:`hookimpl` marker and registers :class:`BackendSpec` values; the manager
(:mod:`trackpoint.plugins.manager`) loads plugins in a documented order and
picks the backend for each URL. A store declares the ``storage_options`` it takes
with :class:`StorageOptions` and :func:`option`. The pytest conformance kit every backend must
pass is :mod:`trackpoint.plugins.testing` (imported separately: it needs pytest).
"""

from __future__ import annotations

from trackpoint.plugins._object_store import ObjectStorePlugin
from trackpoint.plugins._options import StorageOptions, option
from trackpoint.plugins._spec import (
    LOCAL_PATHS,
    BackendFactory,
    BackendInfo,
    BackendSpec,
    bundle_backend_spec,
    url_form,
)
from trackpoint.plugins.hookspecs import hookimpl, hookspec
from trackpoint.plugins.manager import (
    ENTRY_POINT_GROUP,
    block,
    detect_backends,
    get_plugin_manager,
    list_backends,
    open_backend,
    register,
    reset,
    select_backend,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOCAL_PATHS",
    "BackendFactory",
    "BackendInfo",
    "BackendSpec",
    "ObjectStorePlugin",
    "StorageOptions",
    "block",
    "bundle_backend_spec",
    "detect_backends",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "list_backends",
    "open_backend",
    "option",
    "register",
    "reset",
    "select_backend",
    "unregister",
    "url_form",
]
