"""Where bytes live: the store interface the formats are written against, and the built-in stores.

A *store* holds byte objects addressed by path. The formats
(:mod:`trackpoint.backends.bundle`, :mod:`trackpoint.backends.zarr`) are
written once against :class:`FileLayer` and run on every store. This package
imports nothing from the formats and no storage library.

Public API for store authors:

* :class:`FileLayer`, :class:`FileSink`, :class:`FileSource`: the store
  interface (a few abstract primitives, defaults for the rest), and
  :class:`UnfinishedUpload`, what it reports of uploads a killed save left;
* :class:`ObjectStore`: the base of object stores; subclass it and supply
  single-attempt client calls (:class:`ObjectStat`, :class:`UploadStat`,
  :class:`Condition`, :data:`ErrorKind`, :class:`TransferOptions`,
  :data:`WRITE_ID_METADATA_KEY`, :class:`HTTPStatusError`, :func:`fill_views`
  and :func:`fill_views_from` belong to it);
* :class:`LocalFiles`: the local disk.

The built-in object stores are :class:`trackpoint.backends.stores.s3.S3Files`
and :class:`trackpoint.backends.stores.gcs.GCSFiles` (import those modules
directly; they need the ``s3`` / ``gcs`` extras only when a store is built).
``docs/writing-a-backend.md`` walks through writing a store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackpoint.backends.stores._base import (
    OBJECT_STORE_CAPABILITIES,
    FileLayer,
    FileSink,
    FileSource,
    UnfinishedUpload,
)
from trackpoint.backends.stores.local import LocalFiles

if TYPE_CHECKING:  # at run time served lazily by __getattr__ below
    from trackpoint.backends.stores.objectstore import (
        WRITE_ID_METADATA_KEY,
        Condition,
        ErrorKind,
        HTTPStatusError,
        ObjectStat,
        ObjectStore,
        TransferOptions,
        UploadStat,
        fill_views,
        fill_views_from,
    )

__all__ = [
    "OBJECT_STORE_CAPABILITIES",
    "WRITE_ID_METADATA_KEY",
    "Condition",
    "ErrorKind",
    "FileLayer",
    "FileSink",
    "FileSource",
    "HTTPStatusError",
    "LocalFiles",
    "ObjectStat",
    "ObjectStore",
    "TransferOptions",
    "UnfinishedUpload",
    "UploadStat",
    "fill_views",
    "fill_views_from",
]

#: The names of ``__all__`` not imported above: served from
#: :mod:`trackpoint.backends.stores.objectstore` on first access.
_OBJECT_STORE_NAMES = frozenset(__all__) - set(globals())


def __getattr__(name: str) -> object:
    # Lazy: a local checkpoint needs only the disk store, and importing the object-store layer
    # (with its fsspec glue) costs several milliseconds of a process's first checkpoint.
    if name in _OBJECT_STORE_NAMES:
        from trackpoint.backends.stores import objectstore

        return getattr(objectstore, name)
    raise AttributeError(f"module 'trackpoint.backends.stores' has no attribute {name!r}")
