"""Deprecated: the S3 store moved to :mod:`trackpoint.backends.stores.s3` (``S3Files``, ``create_files``)."""

from __future__ import annotations

from trackpoint.backends._deprecated import warn_moved
from trackpoint.backends.stores.s3 import S3Files, create_files
from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = ["S3Files", "create_backend", "create_files"]

warn_moved("trackpoint.backends.s3", "trackpoint.backends.stores.s3 (S3Files, create_files)")


def create_backend(url: str, options: CheckpointOptions) -> StorageBackend:
    """Deprecated: the ``s3`` backend, ``BundleBackend(S3Files.from_options(options))``."""
    from trackpoint.backends.bundle import BundleBackend

    return BundleBackend(create_files(options), options=options)
