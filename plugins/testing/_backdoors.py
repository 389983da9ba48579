"""The backdoors of a harness for a backend on an object store, written once: :class:`ObjectStoreBackdoors`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from trackpoint.plugins.testing._base import BackendTestBase
from trackpoint.plugins.testing._file_layer import store_path
from trackpoint.storage import CheckpointOptions, StorageBackend

if TYPE_CHECKING:
    from trackpoint.backends.stores import ObjectStore

__all__ = ["ObjectStoreBackdoors"]


class ObjectStoreBackdoors(BackendTestBase):
    """The backdoors and optional hooks of a harness, for a backend on an object store.

    :meth:`raw_list`, :meth:`raw_read`, :meth:`raw_write`, :meth:`raw_delete`, :meth:`reopen` and
    :meth:`missing_location`, for a backend built on an
    :class:`~trackpoint.backends.stores.ObjectStore` kept as ``backend.files`` (``BundleBackend``,
    ``ZarrBackend``). Mix it in before the kit (``class TestMyStore(ObjectStoreBackdoors, BackendConformance)``) and
    provide the ``backend`` and ``base_url`` fixtures: the backdoors then work through a second
    instance of your store (:meth:`open_store`), made for each test. That instance shares nothing
    with the backend under test but the service: none of its caches, and none of the stand-ins the
    kit puts in place of the backend's client calls to stop it (the crash tests). Its requests go
    through your client calls and the base class's retries like the backend's.

    Raw objects are the store's objects, named by URLs in the spelling of ``base_url`` (a
    ``zarr+<scheme>://`` base URL gives ``zarr+<scheme>://`` paths). :meth:`raw_list` needs the
    optional client call ``object_find`` (a listing at any depth). :meth:`raw_write` writes a whole
    new object with ``object_put`` (unconditional, and with a new write id: the kit never needs an
    object's write id to survive it).
    """

    @pytest.fixture(autouse=True)
    def _backdoor_store(self, backend: StorageBackend) -> Iterator[None]:
        self._backdoor_for = backend
        self._backdoor: ObjectStore | None = None
        yield
        if self._backdoor is not None:
            self._backdoor.close()

    def open_store(self, backend: StorageBackend) -> ObjectStore:
        """A new instance of the object store under ``backend``, configured as that one is.

        The default builds it with the store class's ``from_options`` from the backend's
        :class:`~trackpoint.storage.CheckpointOptions`, which ``BundleBackend`` keeps when its
        factory passes them (``BundleBackend(MyStore.from_options(options), options=options)``).
        Override it when the backend keeps none (``ZarrBackend``): return
        ``MyStore.from_options(<the options your backend fixture opened it with>)``.

        Returns
        -------
        ObjectStore
            A new, open store; the kit closes it after the test.
        """
        store = self._store_of(backend)
        options = getattr(backend, "options", None)
        if not isinstance(options, CheckpointOptions):
            raise NotImplementedError(
                f"{type(self).__name__}.open_store: the backend keeps no CheckpointOptions to build a second "
                f"{type(store).__name__} from; override open_store to return "
                f"{type(store).__name__}.from_options(<the options of your backend fixture>)"
            )
        return type(store).from_options(options)

    @staticmethod
    def _store_of(backend: StorageBackend) -> ObjectStore:
        from trackpoint.backends.stores import ObjectStore

        files = getattr(backend, "files", None)
        if not isinstance(files, ObjectStore):
            raise TypeError(
                f"ObjectStoreBackdoors needs a backend on an ObjectStore kept as backend.files; "
                f"{type(backend).__name__} has {type(files).__name__}"
            )
        return files

    @property
    def backdoor(self) -> ObjectStore:
        """The second instance of the store the backdoors use (made by :meth:`open_store` on first use)."""
        if self._backdoor is None:
            self._backdoor = self.open_store(self._backdoor_for)
        return self._backdoor

    def raw_list(self, directory: str) -> list[str]:
        """Every object at or below ``directory``, by the store's ``object_find``."""
        where = directory.rstrip("/")
        found = self.backdoor.find(store_path(where))
        prefix = store_path(where) + "/"
        # Back to the caller's spelling: the kit matches raw paths against the prefixes it joined.
        return sorted(where + "/" + url[len(prefix) :] for url in found if url.startswith(prefix))

    def raw_read(self, path: str) -> bytes:
        """The whole object, by ``object_get``."""
        return self.backdoor.read(store_path(path))

    def raw_write(self, path: str, data: bytes) -> None:
        """A new object ``path`` holding ``data``, by one unconditional ``object_put``."""
        self.backdoor.put(store_path(path), data)

    def raw_delete(self, path: str) -> None:
        """The object gone, by ``object_delete``."""
        self.backdoor.delete([store_path(path)])

    def reopen(self, backend: StorageBackend) -> StorageBackend | None:
        """The same format on a new instance of the store (:meth:`open_store`), as another process opens it.

        Knows ``BundleBackend`` and ``ZarrBackend``; ``None`` for any other backend.
        """
        from trackpoint.backends.bundle import BundleBackend

        if isinstance(backend, BundleBackend):
            return BundleBackend(self.open_store(backend), options=backend.options)
        try:
            from trackpoint.backends.zarr import ZarrBackend
        except ImportError:  # zarr is optional
            return None
        if isinstance(backend, ZarrBackend):
            return ZarrBackend(self.open_store(backend), backend.options)
        return None

    def missing_location(self, base_url: str) -> str | None:
        """``base_url`` with its bucket replaced by one that does not exist (a random name, valid on S3/GCS/Azure)."""
        scheme, sep, rest = base_url.partition("://")
        if not sep:
            return None
        _, _, path = rest.partition("/")
        bucket = f"trackpoint-absent-{uuid.uuid4().hex[:16]}"
        return f"{scheme}://{bucket}/{path}" if path else f"{scheme}://{bucket}"
