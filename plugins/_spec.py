"""Value objects of the plugin API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trackpoint.storage import Capabilities, CheckpointOptions, StorageBackend

__all__ = ["BackendFactory", "BackendSpec"]

#: Creates a backend for a URL and options. Heavy imports (s3fs, zarr) belong
#: inside the factory, never at module level, so registering stays cheap.
BackendFactory = Callable[[str, CheckpointOptions], StorageBackend]


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Describes one storage backend to the plugin manager.

    Parameters
    ----------
    name
        Unique backend name (``CheckpointOptions(backend=name)``).
    factory
        Called as ``factory(url, options)`` on first use.
    schemes
        URL schemes this backend serves by default (``("s3",)``). ``""`` means
        plain local paths.
    description
        One line for ``trackpoint.list_backends()``.
    requires
        Modules the factory imports; if one is missing the backend is reported
        unavailable and using it raises ``BackendUnavailableError`` naming ``extra``.
    extra
        The pip extra (``"s3"`` -> ``pip install 'trackpoint[s3]'``) or the
        package to install for ``requires``.
    capabilities
        Declared store abilities, shown in listings.
    override
        Replace an already registered backend of the same name (e.g. a plugin
        swapping the built-in ``s3``). Without it a duplicate name is an error.
    """

    name: str
    factory: BackendFactory
    schemes: tuple[str, ...] = ()
    description: str = ""
    requires: tuple[str, ...] = ()
    extra: str | None = None
    capabilities: Capabilities | None = None
    override: bool = False
