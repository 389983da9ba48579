"""Built-in storage backends: formats written once, over stores written once per kind of storage.

Layout::

    stores/        where bytes live; imports nothing from the formats
      _base.py       FileLayer, FileSink: the store interface the formats are written against
      local.py       LocalFiles: the local disk
      objectstore.py ObjectStore: the public base of object stores (retries, conditional writes, ...)
      s3.py, gcs.py  S3Files, GCSFiles: the built-in object stores
      _fsspec.py     the one place fsspec filesystems are built
    bundle/        the TensorBundle format (TensorFlow's), over any FileLayer
    zarr/          the Zarr v3 format
    _post_commit.py  what a format's commit does after its commit point: housekeeping that never fails the save
    _leftovers.py  the age test of a crashed save's leftovers, shared by the formats' cleanups
    memory.py      the in-process backend (format and store in one)
    _builtin.py    one plugin object per built-in backend, composing a format over a store

Every built-in backend is an ordinary plugin registered through the
``trackpoint.backends`` entry-point group (``bundle =
"trackpoint.backends._builtin:bundle"``, ...), exactly like a third-party one.
Importing this package imports no storage library. The 0.1 modules
``files``, ``local``, ``fsspec_files``, ``s3`` and ``gcs`` remain for one
release as deprecated aliases of their new places.
"""

from __future__ import annotations

__all__: list[str] = []
