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

Chosen by name (``CheckpointOptions(backend="bundle")``, ``TRACKPOINT_BACKEND``),
``bundle`` takes its store from the URL, as ``zarr`` does: S3 and GCS URLs get
the same backend the ``s3`` and ``gcs`` names give.

Registering imports no storage library, no store and no format: the factories
import them when a backend is created, so that a process's first checkpoint pays
only for the backend it uses.
"""

from __future__ import annotations

from typing import Any, Final

from trackpoint.backends.stores import OBJECT_STORE_CAPABILITIES
from trackpoint.backends.stores.local import LOCAL_CAPABILITIES
from trackpoint.plugins import BackendSpec, hookimpl
from trackpoint.storage import Capabilities, CheckpointOptions, StorageBackend

__all__ = ["bundle", "gcs", "memory", "s3", "zarr"]


def _bundle(url: str, options: CheckpointOptions) -> StorageBackend:
    """The TensorBundle format over the store ``url`` names.

    URLs reach the ``bundle`` backend by the scheme table (local paths, ``file://``) or by its name
    (``CheckpointOptions(backend="bundle")``, ``TRACKPOINT_BACKEND=bundle``), which applies to every URL: as
    with ``zarr``, a name chooses the format and the URL the store, so ``s3://`` and ``gs://`` get the same
    backend as the ``s3`` and ``gcs`` names give.
    """
    import importlib.util

    from trackpoint import _paths
    from trackpoint.errors import BackendUnavailableError, UnknownBackendError

    scheme = _paths.scheme(url)
    if scheme in ("", "file"):
        from trackpoint.backends.bundle import BundleBackend
        from trackpoint.backends.stores import LocalFiles

        _check_options_of_plain_store(url, options, "bundle", "the local disk")
        return BundleBackend(LocalFiles(), options=options)
    for schemes, module, extra, factory in (
        (_S3_SCHEMES, "s3fs", "s3", _s3_bundle),
        (_GCS_SCHEMES, "gcsfs", "gcs", _gcs_bundle),
    ):
        if scheme in schemes:
            if importlib.util.find_spec(module) is None:
                raise BackendUnavailableError(
                    f"backend 'bundle' needs {module} for {scheme}:// URLs: pip install 'trackpoint[{extra}]'",
                    backend="bundle",
                )
            return factory(url, options)
    raise UnknownBackendError(
        f"bundle: cannot store checkpoints at {url!r}: the bundle backend writes to local paths, file://, s3:// "
        f"and gs:// URLs; for {scheme}:// leave CheckpointOptions.backend (and TRACKPOINT_BACKEND) unset, so the "
        "backend registered for the scheme is used (trackpoint.list_backends() shows them)",
        backend="bundle",
    )


class _Bundle:
    """The ``bundle`` backend: the TensorBundle format on the local disk."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(
            BackendSpec(
                name="bundle",
                factory=_bundle,
                schemes=("", "file"),
                description="TensorFlow TensorBundle files on a local disk (byte-compatible with tf.train.Checkpoint)",
                capabilities=LOCAL_CAPABILITIES,
            )
        )


class _Memory:
    """The ``memory`` backend: checkpoints in this process, for tests and notebooks."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(
            BackendSpec(
                name="memory",
                factory=_memory,
                schemes=("memory",),
                description="in-process store for tests and notebooks",
                capabilities=_MEMORY_CAPABILITIES,
            )
        )


def _check_options_of_plain_store(
    url: str, options: CheckpointOptions, backend: str, store: str, *, backend_options: bool = False
) -> None:
    """Say that ``storage_options`` and ``backend_options`` given for a store that takes none go unread.

    ``storage_options`` configure fsspec's S3 and GCS file systems (endpoint, credentials), ``backend_options``
    the object stores' transfers (retries, part size); neither the local disk nor ``memory://`` takes any
    (with ``backend_options=True`` the format takes its own and checks them). Given for a local path or
    ``memory://`` they are most likely meant for another URL: one options object often serves a bucket and
    local copies alike (so they are not refused), but a typo in a bucket URL that made it a local path, or a
    misspelt option, must not go unnoticed. Said once per directory and keys: a command opens a location
    several times.
    """
    import logging

    unused = [("storage_options", options.storage_options, "they configure the S3 and GCS stores")]
    if not backend_options:
        unused.append(("backend_options", options.backend_options, "they tune the object stores' transfers"))
    for field, given, what in unused:
        if not given:
            continue
        said = (backend, field, _paths_dirname(url), tuple(sorted(given)))
        if said in _SAID_UNUSED:
            continue
        _SAID_UNUSED.add(said)
        logging.getLogger(OPTIONS_LOGGER).warning(
            "%s: %s %s were given for %r, but %s takes none (%s): they are not used for this path; check that the "
            "URL is the one meant",
            backend,
            field,
            sorted(given),
            url,
            store,
            what,
        )


#: The logger of the warning of options a store takes none of (:func:`_check_options_of_plain_store`): the CLI,
#: which says so itself before a command runs, drops its records by this name.
OPTIONS_LOGGER: Final = "trackpoint.options"

#: (backend, field, directory, keys) of the unused options already logged: each is said once per process.
_SAID_UNUSED: set[tuple[str, str, str, tuple[str, ...]]] = set()


def _paths_dirname(url: str) -> str:
    from trackpoint import _paths

    return _paths.dirname(url)


def _memory(url: str, options: CheckpointOptions) -> StorageBackend:
    from trackpoint.backends.memory import MemoryBackend

    _check_options_of_plain_store(url, options, "memory", "the in-process memory store")
    return MemoryBackend()


# The memory backend's capabilities and the object stores' schemes are spelled out rather
# than read from MemoryBackend, S3Files and GCSFiles (the object stores' capabilities come from
# the light store base), so that registering imports neither the memory backend nor the object-store layer: together
# about 7 ms of a process's first use of the plugin system, which a local checkpoint would pay
# too. A test checks that they match the classes.

#: What the in-process store can do (:attr:`trackpoint.backends.memory.MemoryBackend.capabilities`).
_MEMORY_CAPABILITIES = Capabilities(
    atomic_rename=True, conditional_create=True, ranged_reads=True, parallel_writes=True
)
#: URL schemes of :class:`~trackpoint.backends.stores.s3.S3Files`.
_S3_SCHEMES = ("s3", "s3a")
#: URL schemes of :class:`~trackpoint.backends.stores.gcs.GCSFiles`.
_GCS_SCHEMES = ("gs", "gcs")


def _s3_bundle(url: str, options: CheckpointOptions) -> StorageBackend:
    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.stores.s3 import S3Files

    return BundleBackend(S3Files.from_options(options), options=options)


def _gcs_bundle(url: str, options: CheckpointOptions) -> StorageBackend:
    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.stores.gcs import GCSFiles

    return BundleBackend(GCSFiles.from_options(options), options=options)


class _S3:
    """The ``s3`` backend: the TensorBundle format on Amazon S3."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(
            BackendSpec(
                name="s3",
                factory=_s3_bundle,
                schemes=_S3_SCHEMES,
                description="TensorBundle checkpoints on Amazon S3 (s3fs); create-only commit with If-None-Match",
                requires=("s3fs",),
                extra="s3",
                capabilities=OBJECT_STORE_CAPABILITIES,
                buckets=True,
            )
        )


class _GCS:
    """The ``gcs`` backend: the TensorBundle format on Google Cloud Storage."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(
            BackendSpec(
                name="gcs",
                factory=_gcs_bundle,
                schemes=_GCS_SCHEMES,
                description=(
                    "TensorBundle checkpoints on Google Cloud Storage (gcsfs); "
                    "create-only commit with ifGenerationMatch=0"
                ),
                requires=("gcsfs",),
                extra="gcs",
                capabilities=OBJECT_STORE_CAPABILITIES,
                buckets=True,
            )
        )


class _Zarr:
    """The ``zarr`` backend: the Zarr v3 format on the store the URL names."""

    @hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        from trackpoint.backends.zarr import SCHEMES

        register(
            BackendSpec(
                name="zarr",
                factory=_zarr,
                schemes=SCHEMES,
                description="Zarr v3 groups (local disk, S3, GCS), readable with plain zarr",
                requires=("zarr",),
                extra="zarr",
                capabilities=Capabilities(conditional_create=True, ranged_reads=True, parallel_writes=True),
            )
        )

    @hookimpl
    def trackpoint_detect_backends(self, url: str, options: CheckpointOptions) -> list[str] | None:
        """Zarr checkpoints saved with ``backend="zarr"`` at plain paths, ``s3://`` or ``gs://`` URLs are found."""
        from trackpoint import _paths
        from trackpoint.backends.zarr import SHARED_SCHEMES

        return ["zarr"] if _paths.scheme(url) in SHARED_SCHEMES else None


#: Store of each URL scheme the zarr backend accepts.
_ZARR_STORES = {
    "": "local", "file": "local", "zarr": "local", "zarr+file": "local",
    "s3": "s3", "zarr+s3": "s3",
    "gs": "gcs", "gcs": "gcs", "zarr+gs": "gcs", "zarr+gcs": "gcs",
}  # fmt: skip


def _zarr(url: str, options: CheckpointOptions) -> StorageBackend:
    """The Zarr format over the store ``url`` names, tuned by ``options.backend_options``."""
    from trackpoint import _paths
    from trackpoint.backends.zarr import ZarrBackend
    from trackpoint.errors import UnknownBackendError

    # ZarrBackend takes the format's backend options and checks the rest against the store's (S3 and GCS take
    # their TransferOptions, the local disk none), with the message a per-save option gets too (with_options).
    kind = _ZARR_STORES.get(_paths.scheme(url))
    if kind == "local":
        from trackpoint.backends.stores.local import LocalFiles, exchange_directories

        _check_options_of_plain_store(url, options, "zarr", "the local disk", backend_options=True)

        # On Linux an overwrite swaps the directories atomically.
        return ZarrBackend(LocalFiles(), options, exchange=exchange_directories)
    if kind == "s3":
        from trackpoint.backends.stores.s3 import S3Files

        return ZarrBackend(S3Files.from_options(options), options)
    if kind == "gcs":
        from trackpoint.backends.stores.gcs import GCSFiles

        return ZarrBackend(GCSFiles.from_options(options), options)
    raise UnknownBackendError(
        f"zarr: cannot store checkpoints at {url!r}; use a local path or a zarr+file://, s3://, zarr+s3://, "
        "gs:// or zarr+gs:// URL"
    )


bundle = _Bundle()
memory = _Memory()
s3 = _S3()
gcs = _GCS()
zarr = _Zarr()
