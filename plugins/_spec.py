"""Value objects of the plugin API: what a plugin registers and what a listing shows."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from trackpoint.errors import PluginError
from trackpoint.storage import Capabilities, CheckpointOptions, StorageBackend

if TYPE_CHECKING:
    from trackpoint.backends.stores import ObjectStore

__all__ = ["LOCAL_PATHS", "BackendFactory", "BackendInfo", "BackendSpec", "bundle_backend_spec", "url_form"]

#: Creates a backend for a URL and options. Heavy imports (s3fs, zarr) belong
#: inside the factory, never at module level, so registering stays cheap.
BackendFactory = Callable[[str, CheckpointOptions], StorageBackend]

# Backend names appear in environment variables (comma separated) and in
# CheckpointOptions; schemes follow RFC 3986 (plus "" for plain local paths).
_NAME: Final = re.compile(r"^[a-z][a-z0-9_.\-]*$")
_SCHEME: Final = re.compile(r"^([a-z][a-z0-9+.\-]*)?$")
_MODULE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Describes one storage backend to the plugin manager.

    Parameters
    ----------
    name
        Unique backend name, used in ``CheckpointOptions(backend=name)``,
        ``TRACKPOINT_BACKEND`` and ``TRACKPOINT_BLOCK_BACKENDS``: lower case
        letters, digits, ``_``, ``.`` and ``-``, starting with a letter.
    factory
        Called as ``factory(url, options)`` each time a backend is needed for a
        URL. Heavy imports belong inside it.
    schemes
        URL schemes this backend serves by default, lower case (``("s3",)``,
        ``("zarr+s3",)``). ``""`` means plain local paths. A scheme is served by
        one backend only.
    description
        One line for :func:`trackpoint.list_backends`.
    requires
        Modules the factory imports. If one is missing the backend is listed
        as unavailable and using it raises
        :class:`~trackpoint.errors.BackendUnavailableError` naming ``extra``.
        Checked with :func:`importlib.util.find_spec`, without importing.
    extra
        The trackpoint extra that installs ``requires`` (``"s3"`` gives the
        hint ``pip install 'trackpoint[s3]'``). Third-party plugins leave it
        ``None`` and set ``install_hint``.
    install_hint
        What to run to install ``requires`` when ``extra`` does not apply
        (``"pip install 'trackpoint-example-sqlite[fast]'"``).
    capabilities
        Declared store abilities, shown in listings.
    override
        Replace an already registered backend of the same name (e.g. a plugin
        swapping the built-in ``s3``). Without it a duplicate name is a
        :class:`~trackpoint.errors.PluginError`.
    buckets
        URLs of ``schemes`` name a bucket (or container) first,
        ``scheme://bucket/key``, as those of every
        :class:`~trackpoint.backends.stores.ObjectStore` do. A checkpoint
        prefix naming a bucket alone (``scheme://bucket``) is then refused:
        its files are named by appending to the prefix, so they would land in
        another bucket (``bucket.index``, ``bucket-1.index``). A
        ``<format>+<scheme>`` URL (``zarr+s3://``) follows the backend of
        ``<scheme>``. :func:`bundle_backend_spec` and
        :class:`~trackpoint.plugins.ObjectStorePlugin` set it; a spec of an
        object store written out by hand sets ``buckets=True``. Without it
        an ``ObjectStore`` still refuses to write, read or delete an object
        with an empty key (``scheme://bucket-1.index``), with
        :class:`~trackpoint.errors.InvalidArgumentError`; this field makes
        the refusal come first, naming the prefix given.

    Raises
    ------
    PluginError
        A field is malformed (the message names the backend and the field).
    """

    name: str
    factory: BackendFactory
    schemes: tuple[str, ...] = ()
    description: str = ""
    requires: tuple[str, ...] = ()
    extra: str | None = None
    install_hint: str | None = None
    capabilities: Capabilities | None = None
    override: bool = False
    buckets: bool = False

    def __post_init__(self) -> None:
        # Validated here so a plugin author sees the mistake at registration,
        # not later as a confusing selection failure.
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PluginError(
                f"invalid backend name {self.name!r}: use lower case letters, digits, '_', '.' or '-', "
                "starting with a letter"
            )
        if not callable(self.factory):
            raise PluginError(f"backend {self.name!r}: factory must be callable, got {type(self.factory).__name__}")
        if not isinstance(self.buckets, bool):
            raise PluginError(f"backend {self.name!r}: buckets must be True or False, got {self.buckets!r}")
        for field_name, values, pattern in (
            ("schemes", self.schemes, _SCHEME),
            ("requires", self.requires, _MODULE),
        ):
            if not isinstance(values, tuple) or not all(isinstance(v, str) and pattern.match(v) for v in values):
                raise PluginError(
                    f"backend {self.name!r}: {field_name} must be a tuple of "
                    f"{'lower-case URL schemes' if field_name == 'schemes' else 'module names'}, got {values!r}"
                )

    def install_command(self) -> str:
        """The hint shown when ``requires`` is not installed."""
        if self.extra:
            return f"pip install 'trackpoint[{self.extra}]'"
        if self.install_hint:
            return self.install_hint
        return "install the package that provides it (see the plugin's documentation)"


def bundle_backend_spec(
    store: type[ObjectStore],
    *,
    name: str,
    description: str = "",
    schemes: tuple[str, ...] | None = None,
    requires: tuple[str, ...] = (),
    extra: str | None = None,
    install_hint: str | None = None,
    override: bool = False,
) -> BackendSpec:
    """The :class:`BackendSpec` of the TensorBundle format over an object store.

    The factory builds ``store.from_options(options)`` and puts the bundle
    format (:class:`trackpoint.backends.bundle.BundleBackend`) over it; the
    schemes default to ``store.schemes`` and the capabilities are
    ``store.capabilities``; ``buckets`` is set, as object stores address
    ``scheme://bucket/key``. Calling it imports the store's module, so a
    plugin whose module must load light (every process's first checkpoint
    loads every plugin) registers a :class:`BackendSpec` with the schemes
    and capabilities written out and a factory that imports the store, as
    the built-in ``s3`` and ``gcs`` backends do.

    Parameters
    ----------
    store
        A subclass of :class:`trackpoint.backends.stores.ObjectStore`.
    name, description, schemes, requires, extra, install_hint, override
        As in :class:`BackendSpec`.

    Returns
    -------
    BackendSpec
        Pass it to the ``register`` callback of ``trackpoint_register_backends``.
    """

    def factory(url: str, options: CheckpointOptions) -> StorageBackend:
        # Imported on first use, so that registering stays cheap.
        from trackpoint.backends.bundle import BundleBackend

        return BundleBackend(store.from_options(options), options=options)

    return BackendSpec(
        name=name,
        factory=factory,
        schemes=store.schemes if schemes is None else schemes,
        description=description,
        requires=requires,
        extra=extra,
        install_hint=install_hint,
        capabilities=store.capabilities,
        override=override,
        buckets=True,
    )


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """One row of :func:`trackpoint.list_backends`.

    Parameters
    ----------
    name
        Backend name (for a plugin that failed to load: the plugin's name).
    schemes
        URL schemes it serves by default.
    description
        The spec's one-line description.
    plugin
        Name of the plugin that registered it (the entry-point name, or the
        name given to :func:`trackpoint.plugins.register`).
    distribution
        The installed distribution that published the plugin, ``None`` for
        plugins registered at run time.
    version
        That distribution's version, ``None`` likewise.
    available
        Whether the backend can be used now.
    reason
        Why not, when ``available`` is false (a missing module and the command
        that installs it, or the plugin's import error); ``""`` otherwise.
    capabilities
        The spec's declared capabilities, ``None`` if it declared none.
    """

    name: str
    schemes: tuple[str, ...]
    description: str
    plugin: str
    distribution: str | None
    version: str | None
    available: bool
    reason: str
    capabilities: Capabilities | None

    @property
    def urls(self) -> tuple[str, ...]:
        """The served URL forms, for display: ``("(local paths)", "file://")`` for ``bundle``.

        ``schemes`` holds ``""`` for plain local paths, which printed as a
        scheme would read as an empty ``://``.
        """
        return tuple(url_form(s) for s in self.schemes)

    def __str__(self) -> str:
        where = ", ".join(self.urls) or "(no URL scheme; chosen by name)"
        if self.distribution:
            source = f"{self.distribution} {self.version}"
        else:
            source = f"plugin {self.plugin!r}, registered at run time"
        status = "available" if self.available else f"unavailable: {self.reason}"
        return f"{self.name}: {where} [{source}] {status}"

    def __repr__(self) -> str:
        # The schemes are shown as URL forms, so plain local paths never print as ''.
        return (
            f"BackendInfo(name={self.name!r}, urls={self.urls!r}, description={self.description!r}, "
            f"plugin={self.plugin!r}, distribution={self.distribution!r}, version={self.version!r}, "
            f"available={self.available!r}, reason={self.reason!r}, capabilities={self.capabilities!r})"
        )


#: How plain local paths (the scheme ``""``) are shown in listings and messages.
LOCAL_PATHS: Final = "(local paths)"


def url_form(scheme: str) -> str:
    """``"s3://"`` for ``"s3"``; :data:`LOCAL_PATHS` for ``""`` (plain local paths)."""
    return f"{scheme}://" if scheme else LOCAL_PATHS
