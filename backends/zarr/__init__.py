"""The Zarr v3 format: checkpoints as consolidated Zarr v3 groups, written over any store.

A checkpoint ``P`` is the Zarr group ``P.zarr``, so any Zarr v3 reader can
open it and slice its tensors lazily. The format is written once against the
store interface (:class:`trackpoint.backends.stores.FileLayer`):
``ZarrBackend(files, options)`` runs on the local disk, on the S3/GCS stores
and on a plugin's store, committing by the strategy the store's declared
capabilities allow. The built-in ``zarr`` backend (registered in
:mod:`trackpoint.backends._builtin`) picks the store from the URL: ``zarr://``,
``zarr+file://``, ``zarr+s3://`` and ``zarr+gs://`` (``zarr+gcs://``), or plain
paths, ``s3://`` and ``gs://`` with ``CheckpointOptions(backend="zarr")``. See
``docs/backends/zarr.md`` for the layout, key encoding, dtypes, options and
guarantees.

This module stays light: zarr is imported when :class:`ZarrBackend` or
:class:`ZarrReader` is first accessed (``import trackpoint`` never imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trackpoint.backends.zarr._keys import decode_key, encode_key

if TYPE_CHECKING:
    from trackpoint.backends.zarr._backend import ZarrBackend, ZarrReader
    from trackpoint.backends.zarr._options import ZarrOptions

__all__ = ["SCHEMES", "SHARED_SCHEMES", "ZarrBackend", "ZarrOptions", "ZarrReader", "decode_key", "encode_key"]

#: URL schemes served by default; plain paths, ``s3://`` and ``gs://`` need
#: ``CheckpointOptions(backend="zarr")``.
SCHEMES = ("zarr", "zarr+file", "zarr+s3", "zarr+gs", "zarr+gcs")

#: Schemes of stores that other backends serve by default but where
#: ``CheckpointOptions(backend="zarr")`` also writes.
SHARED_SCHEMES = ("", "file", "s3", "gs", "gcs")


def __getattr__(name: str) -> Any:
    # Lazy re-export: importing the backend class imports zarr.
    if name in ("ZarrBackend", "ZarrReader"):
        from trackpoint.backends.zarr import _backend

        return getattr(_backend, name)
    if name == "ZarrOptions":
        # Registering the zarr backend reads SCHEMES only; the options are built when a backend is.
        from trackpoint.backends.zarr._options import ZarrOptions

        return ZarrOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
