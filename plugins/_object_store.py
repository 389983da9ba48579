"""One plugin object registering both formats on a third party's object store, its module imported on first use."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trackpoint import _paths
from trackpoint.errors import PluginError
from trackpoint.plugins._spec import BackendSpec
from trackpoint.plugins.hookspecs import hookimpl
from trackpoint.storage import Capabilities, CheckpointOptions, StorageBackend

if TYPE_CHECKING:
    from collections.abc import Callable

    from trackpoint.backends.stores import ObjectStore

__all__ = ["ObjectStorePlugin"]


#: How to install the Zarr format.
_ZARR_HINT = "pip install 'trackpoint[zarr]'"


@dataclass(frozen=True, slots=True)
class _ZarrSpec(BackendSpec):
    """The Zarr backend on a store: it requires the store's modules and ``zarr``, each installed its own way.

    ``install_hint`` is the store's; :meth:`install_command` gives the hint for what is missing.
    """

    def install_command(self) -> str:
        """The hint for the first module of ``requires`` that is missing: the store's own, else ``zarr``."""
        from trackpoint.plugins.manager import _missing_module

        missing = _missing_module(self)
        store = BackendSpec.install_command(self)
        if missing == "zarr":
            return _ZARR_HINT
        if missing is not None:
            return store
        # Nothing is missing, yet an import failed (reported with this hint): either may be at fault.
        return f"{store} and {_ZARR_HINT}" if self.install_hint else _ZARR_HINT


class ObjectStorePlugin:
    """A plugin serving the TensorBundle and Zarr formats on one :class:`~trackpoint.backends.stores.ObjectStore`.

    Point the package's one ``trackpoint.backends`` entry point at an instance, and the store is usable in
    both formats, found by readers in either::

        plugin = ObjectStorePlugin("trackpoint_tinyobj._store:TinyObjStore", name="tinyobj", schemes=("tinyobj",))

    registers ``tinyobj`` (TensorBundle, ``tinyobj://bucket/key``) and ``zarr-tinyobj`` (Zarr v3,
    ``zarr+tinyobj://bucket/key`` or ``CheckpointOptions(backend="zarr-tinyobj")``), and names
    ``zarr-tinyobj`` for ``tinyobj://`` URLs through ``trackpoint_detect_backends``, so readers of a plain
    ``tinyobj://`` URL also find the Zarr checkpoints saved there. The store's module is imported when a
    backend is first opened, never when plugins load (every process's first checkpoint loads every plugin);
    then its class is checked against what was declared here.

    Parameters
    ----------
    store
        ``"module:Class"`` naming the :class:`~trackpoint.backends.stores.ObjectStore` subclass.
    name
        The TensorBundle backend's name; the Zarr one is ``zarr-<name>``.
    schemes
        The URL schemes the store serves (its ``schemes``, which the first open checks); Zarr serves
        ``zarr+<scheme>`` for each.
    description
        One line for ``trackpoint backends`` and :func:`~trackpoint.list_backends`.
    requires, install_hint
        The store's own modules and how to install them, as in :class:`BackendSpec` (the Zarr backend also
        requires ``zarr``, installed with ``pip install 'trackpoint[zarr]'``).
    capabilities
        The store's capabilities (its ``capabilities``, which the first open checks); by default what
        :class:`~trackpoint.backends.stores.ObjectStore` declares.
    zarr
        ``False`` registers the TensorBundle backend alone.

    Raises
    ------
    PluginError
        A name or scheme is malformed (as :class:`BackendSpec` checks them); when a backend is opened, the
        store cannot be imported, is no ``ObjectStore``, or declares other schemes or capabilities.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        store: str,
        *,
        name: str,
        schemes: tuple[str, ...],
        description: str = "",
        requires: tuple[str, ...] = (),
        install_hint: str | None = None,
        capabilities: Capabilities | None = None,
        zarr: bool = True,
    ) -> None:
        module, _, attribute = store.partition(":")
        if not module or not attribute:
            raise PluginError(f"ObjectStorePlugin: store must be 'module:Class', got {store!r}")
        if not schemes or "" in schemes:
            raise PluginError(f"ObjectStorePlugin {name!r}: an object store serves URL schemes, got {schemes!r}")
        from trackpoint.backends.stores import OBJECT_STORE_CAPABILITIES

        self._store = (module, attribute)
        self._loaded: type[ObjectStore] | None = None
        self._lock = threading.Lock()
        self._schemes = tuple(s.lower() for s in schemes)
        caps = OBJECT_STORE_CAPABILITIES if capabilities is None else capabilities
        # Built now, so that a malformed name or scheme fails when the plugin is made, not when it is used.
        self._specs = [
            BackendSpec(
                name=name,
                factory=self._bundle,
                schemes=self._schemes,
                description=description,
                requires=requires,
                install_hint=install_hint,
                capabilities=caps,
                buckets=True,
            )
        ]
        if zarr:
            self._specs.append(
                _ZarrSpec(
                    name=f"zarr-{name}",
                    factory=self._zarr,
                    schemes=tuple(f"zarr+{s}" for s in self._schemes),
                    description=f"Zarr v3 groups; {description}" if description else "Zarr v3 groups",
                    requires=(*requires, "zarr"),
                    install_hint=install_hint,
                    capabilities=caps,
                    buckets=True,
                )
            )

    @property
    def specs(self) -> tuple[BackendSpec, ...]:
        """The backends this plugin registers: TensorBundle first, then Zarr unless ``zarr=False``."""
        return tuple(self._specs)

    @hookimpl
    def trackpoint_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        """Register the TensorBundle backend and, unless ``zarr=False``, the Zarr one."""
        for spec in self._specs:
            register(spec)

    @hookimpl
    def trackpoint_detect_backends(self, url: str, options: CheckpointOptions) -> list[str] | None:
        """Name the Zarr backend for the store's own schemes, so readers find Zarr checkpoints there."""
        del options
        if len(self._specs) < 2 or _paths.scheme(url) not in self._schemes:
            return None
        return [self._specs[1].name]

    def store_class(self) -> type[ObjectStore]:
        """The store's class, imported and checked against the declared schemes and capabilities once."""
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._import()
            return self._loaded

    def _import(self) -> type[ObjectStore]:
        from trackpoint.backends.stores import ObjectStore

        module, attribute = self._store
        name = self._specs[0].name
        where = f"{module}:{attribute}"
        # An ImportError propagates: the manager reports it with the spec's install hint.
        found: Any = getattr(importlib.import_module(module), attribute, None)
        if not (isinstance(found, type) and issubclass(found, ObjectStore)):
            raise PluginError(f"backend {name!r}: {where} is not a trackpoint.backends.stores.ObjectStore subclass")
        declared = self._specs[0]
        if tuple(s.lower() for s in found.schemes) != self._schemes:
            raise PluginError(
                f"backend {name!r}: {where}.schemes is {tuple(found.schemes)!r}, but the plugin was declared "
                f"with schemes={self._schemes!r}; make them the same"
            )
        if found.capabilities != declared.capabilities:
            raise PluginError(
                f"backend {name!r}: {where}.capabilities is {found.capabilities!r}, but the plugin was declared "
                f"with capabilities={declared.capabilities!r}; make them the same"
            )
        return found

    def _bundle(self, url: str, options: CheckpointOptions) -> StorageBackend:
        from trackpoint.backends.bundle import BundleBackend

        return BundleBackend(self.store_class().from_options(options), options=options)

    def _zarr(self, url: str, options: CheckpointOptions) -> StorageBackend:
        from trackpoint.backends.zarr import ZarrBackend

        return ZarrBackend(self.store_class().from_options(options), options)

    def __repr__(self) -> str:
        module, attribute = self._store
        return f"ObjectStorePlugin({module}:{attribute}, backends={[s.name for s in self._specs]!r})"
