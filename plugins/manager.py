"""The plugin manager: loads backends from entry points and picks one per URL."""

from __future__ import annotations

import importlib.metadata
import os
import threading
from dataclasses import dataclass

import pluggy

from trackpoint import _paths
from trackpoint.errors import PluginError, UnknownBackendError
from trackpoint.plugins import hookspecs
from trackpoint.plugins._spec import BackendSpec
from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = ["ENTRY_POINT_GROUP", "Registry", "get_registry", "open_backend", "reset"]

ENTRY_POINT_GROUP = "trackpoint.backends"
DEFAULT_BACKEND = "bundle"


@dataclass
class Registry:
    """Loaded plugins and the backends they registered."""

    pm: pluggy.PluginManager
    specs: dict[str, BackendSpec]
    providers: dict[str, str]

    def select(self, url: str, options: CheckpointOptions) -> str:
        if options.backend:
            return options.backend
        env = os.environ.get("TRACKPOINT_BACKEND")
        if env:
            return env
        chosen = self.pm.hook.trackpoint_select_backend(url=url, options=options)
        if chosen:
            return str(chosen)
        sch = _paths.scheme(url)
        if sch in ("", "file"):
            return DEFAULT_BACKEND
        for spec in self.specs.values():
            if sch in spec.schemes:
                return spec.name
        known = sorted({s for sp in self.specs.values() for s in sp.schemes if s})
        raise UnknownBackendError(
            f"no backend serves the URL scheme {sch!r} of {url!r}; known schemes: {', '.join(known)}"
        )


_lock = threading.Lock()
_registry: Registry | None = None


def _load() -> Registry:
    pm = pluggy.PluginManager("trackpoint")
    pm.add_hookspecs(hookspecs)
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if pm.get_plugin(ep.name) is None:
            try:
                plugin = ep.load()
            except ImportError:
                # Not yet reported precisely; the plugins work will turn this into a
                # listed, unavailable backend.
                continue
            pm.register(plugin, name=ep.name)
    specs: dict[str, BackendSpec] = {}
    providers: dict[str, str] = {}

    def register(spec: BackendSpec) -> None:
        if spec.name in specs and not spec.override:
            raise PluginError(f"backend name {spec.name!r} registered twice ({providers[spec.name]})")
        specs[spec.name] = spec
        providers[spec.name] = spec.name

    pm.hook.trackpoint_register_backends(register=register)
    return Registry(pm, specs, providers)


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _load()
        return _registry


def reset() -> None:
    """Forget loaded plugins (tests; after installing a plugin at run time)."""
    global _registry
    with _lock:
        _registry = None


def open_backend(url: str, options: CheckpointOptions | None = None) -> StorageBackend:
    """The backend instance that serves ``url``."""
    opts = options or CheckpointOptions()
    reg = get_registry()
    name = reg.select(url, opts)
    spec = reg.specs.get(name)
    if spec is None:
        raise UnknownBackendError(f"unknown backend {name!r}; registered: {', '.join(sorted(reg.specs))}")
    backend = spec.factory(url, opts)
    backend.name = name
    return backend
