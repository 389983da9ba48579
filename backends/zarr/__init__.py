"""The ``zarr`` storage backend: checkpoints as consolidated Zarr v3 groups.

A checkpoint ``P`` is the Zarr group ``P.zarr`` on local disk, S3 or GCS, so
any Zarr v3 reader can open it and slice its tensors lazily. Selected with
``CheckpointOptions(backend="zarr")`` or the URL schemes ``zarr://``,
``zarr+file://``, ``zarr+s3://`` and ``zarr+gs://`` (``zarr+gcs://``). See
``docs/backends/zarr.md`` for the layout, key encoding, dtypes, options and
guarantees.

This module registers the backend and stays light: zarr and fsspec are
imported only when a backend is created (``import trackpoint`` never imports
zarr). :class:`ZarrBackend` and :class:`ZarrReader` are loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trackpoint import _paths
from trackpoint.backends.zarr._keys import decode_key, encode_key
from trackpoint.backends.zarr._options import ZarrOptions
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import Capabilities, CheckpointOptions

if TYPE_CHECKING:
    from trackpoint.backends.zarr._backend import ZarrBackend, ZarrReader

__all__ = [
    "SCHEMES",
    "SHARED_SCHEMES",
    "ZarrBackend",
    "ZarrOptions",
    "ZarrReader",
    "create",
    "decode_key",
    "encode_key",
    "trackpoint_detect_backends",
    "trackpoint_register_backends",
]

#: URL schemes served by default; plain paths, ``s3://`` and ``gs://`` need
#: ``CheckpointOptions(backend="zarr")``.
SCHEMES = ("zarr", "zarr+file", "zarr+s3", "zarr+gs", "zarr+gcs")


def create(url: str, options: CheckpointOptions) -> ZarrBackend:
    """Factory: a Zarr backend for the store ``url`` lives on, tuned by ``options.backend_options``."""
    from trackpoint.backends.zarr._backend import ZarrBackend, make_location

    opts = ZarrOptions.from_mapping(options.backend_options)
    return ZarrBackend(make_location(url, options.storage_options), opts)


@hookimpl
def trackpoint_register_backends(register: Any) -> None:
    """Register the ``zarr`` backend."""
    register(
        BackendSpec(
            name="zarr",
            factory=create,
            schemes=SCHEMES,
            description="Zarr v3 groups (local disk, S3, GCS), readable with plain zarr",
            requires=("zarr",),
            extra="zarr",
            capabilities=Capabilities(conditional_create=True, ranged_reads=True, parallel_writes=True),
        )
    )


#: Schemes of stores that other backends serve by default but where
#: ``CheckpointOptions(backend="zarr")`` also writes (see :func:`make_location`).
SHARED_SCHEMES = ("", "file", "s3", "gs", "gcs")


@hookimpl
def trackpoint_detect_backends(url: str, options: CheckpointOptions) -> list[str] | None:
    """Zarr checkpoints saved with ``backend="zarr"`` at plain paths, ``s3://`` or ``gs://`` URLs are found there."""
    return ["zarr"] if _paths.scheme(url) in SHARED_SCHEMES else None


def __getattr__(name: str) -> Any:
    # Lazy re-export: importing the backend class imports zarr.
    if name in ("ZarrBackend", "ZarrReader"):
        from trackpoint.backends.zarr import _backend

        return getattr(_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
