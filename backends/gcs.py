"""Deprecated: the GCS store moved to :mod:`trackpoint.backends.stores.gcs` (``GCSFiles``, ``create_files``)."""

from __future__ import annotations

from trackpoint.backends._deprecated import warn_moved
from trackpoint.backends.stores.gcs import GCSFiles, create_files
from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = ["GCSFiles", "create_backend", "create_files"]

warn_moved("trackpoint.backends.gcs", "trackpoint.backends.stores.gcs (GCSFiles, create_files)")


def create_backend(url: str, options: CheckpointOptions) -> StorageBackend:
    """Deprecated: the ``gcs`` backend, ``BundleBackend(GCSFiles.from_options(options))``."""
    from trackpoint.backends.bundle import BundleBackend

    return BundleBackend(create_files(options), options=options)
