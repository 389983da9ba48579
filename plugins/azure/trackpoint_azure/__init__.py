"""trackpoint-azure: Azure Blob Storage for trackpoint (``az://container/path``).

This release holds the Azure-specific client calls (:class:`AzureClient`):
conditional creates and replaces, ranged reads, listing, batch deletes and
staged block uploads, each a single attempt, with :func:`classify` telling
which failures to retry. Importing the package does not import the Azure SDK.
"""

from __future__ import annotations

from trackpoint_azure._client import (
    ENVIRONMENT_VARIABLES,
    STORAGE_OPTIONS,
    WRITE_ID_METADATA_KEY,
    AzureClient,
    BlobStat,
    BlockUpload,
    ErrorKind,
    classify,
    split_url,
)

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "STORAGE_OPTIONS",
    "WRITE_ID_METADATA_KEY",
    "AzureClient",
    "BlobStat",
    "BlockUpload",
    "ErrorKind",
    "classify",
    "split_url",
]
