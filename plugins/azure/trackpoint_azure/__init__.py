"""trackpoint-azure: the ``azure`` backend, TensorBundle checkpoints on Azure Blob Storage (``az://container/path``).

The entry point loads this module: it stays light, the Azure SDK is imported when a backend is opened."""

from __future__ import annotations

from collections.abc import Callable

from trackpoint.backends.stores import OBJECT_STORE_CAPABILITIES
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import CheckpointOptions, StorageBackend


def _create(url: str, options: CheckpointOptions) -> StorageBackend:
    from trackpoint.backends.bundle import BundleBackend
    from trackpoint_azure.store import AzureStore

    return BundleBackend(AzureStore.from_options(options), options=options)


@hookimpl
def trackpoint_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register ``azure`` for ``az://`` and (as adlfs spells it) ``abfs://`` URLs."""
    what = "TensorBundle checkpoints on Azure Blob Storage; create-only commit with If-None-Match"
    needs, hint, caps = ("azure.storage.blob",), "pip install trackpoint-azure", OBJECT_STORE_CAPABILITIES
    schemes = ("az", "abfs")
    register(BackendSpec("azure", _create, schemes, what, needs, install_hint=hint, capabilities=caps, buckets=True))
