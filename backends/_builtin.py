"""The built-in backends, registered exactly like third-party ones.

Each name below is one plugin object, published in the ``trackpoint.backends``
entry-point group of the ``trackpoint`` distribution
(``bundle = "trackpoint.backends._builtin:bundle"``, ...) and loaded by the
plugin manager in its documented order. Each registers its backend(s) with a
factory that composes a format over a store:

==========  ==========================================  ==========================
plugin      backend                                     store
==========  ==========================================  ==========================
``bundle``  ``bundle``: TensorBundle on a local disk    :class:`~trackpoint.backends.stores.LocalFiles`
``memory``  ``memory``: in-process (format and store)   --
``s3``      ``s3``: TensorBundle on S3                  :class:`~trackpoint.backends.stores.s3.S3Files`
``gcs``     ``gcs``: TensorBundle on GCS                :class:`~trackpoint.backends.stores.gcs.GCSFiles`
``zarr``    ``zarr``: Zarr v3 on disk, S3 or GCS        chosen from the URL
==========  ==========================================  ==========================

Registering imports no storage library and no format: the factories import
them when a backend is created.
"""

from __future__ import annotations

from typing import Any

from trackpoint.plugins import BackendSpec, bundle_backend_spec, hookimpl
from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = ["bundle", "gcs", "memory", "s3", "zarr"]


def _local_bundle(url: str, options: CheckpointOptions) -> StorageBackend:
    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.stores import LocalFiles

    return BundleBackend(LocalFiles(), options=options)


class _Bundle:
    """The ``bundle`` backend: the TensorBundle format on the local disk."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        from trackpoint.backends.stores.local import LOCAL_CAPABILITIES

        register(
            BackendSpec(
                name="bundle",
                factory=_local_bundle,
                schemes=("", "file"),
                description="TensorFlow TensorBundle files on a local disk (byte-compatible with tf.train.Checkpoint)",
                capabilities=LOCAL_CAPABILITIES,
            )
        )


class _Memory:
    """The ``memory`` backend: checkpoints in this process, for tests and notebooks."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        from trackpoint.backends import memory

        memory.trackpoint_register_backends(register=register)


class _S3:
    """The ``s3`` backend: the TensorBundle format on Amazon S3."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        from trackpoint.backends.stores.s3 import S3Files

        register(
            bundle_backend_spec(
                S3Files,
                name="s3",
                description="TensorBundle checkpoints on Amazon S3 (s3fs); create-only commit with If-None-Match",
                requires=("s3fs",),
                extra="s3",
            )
        )


class _GCS:
    """The ``gcs`` backend: the TensorBundle format on Google Cloud Storage."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        from trackpoint.backends.stores.gcs import GCSFiles

        register(
            bundle_backend_spec(
                GCSFiles,
                name="gcs",
                description=(
                    "TensorBundle checkpoints on Google Cloud Storage (gcsfs); "
                    "create-only commit with ifGenerationMatch=0"
                ),
                requires=("gcsfs",),
                extra="gcs",
            )
        )


class _Zarr:
    """The ``zarr`` backend: Zarr v3 groups on the store the URL names."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        from trackpoint.backends import zarr

        zarr.trackpoint_register_backends(register=register)

    @hookimpl
    def trackpoint_detect_backends(self, url: str, options: CheckpointOptions) -> list[str] | None:
        from trackpoint.backends import zarr

        return zarr.trackpoint_detect_backends(url=url, options=options)


bundle = _Bundle()
memory = _Memory()
s3 = _S3()
gcs = _GCS()
zarr = _Zarr()
