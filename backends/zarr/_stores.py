"""Where a Zarr checkpoint lives: a local directory tree or an fsspec object store.

The Zarr format code (:mod:`._backend`) needs, besides Zarr stores for its
arrays, a handful of namespace operations (whole-object reads and create-only
writes of the root ``zarr.json``, listings, recursive deletes, versioned small
files). :class:`Location` is that small interface; :class:`LocalLocation` and
:class:`FsspecLocation` implement it. Every method translates the store's
exceptions into :mod:`trackpoint.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import importlib
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from trackpoint import _paths
from trackpoint.backends.stores import FileLayer
from trackpoint.backends.stores._fsspec import filesystem
from trackpoint.errors import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    StorageError,
    StoragePermissionError,
)
from trackpoint.storage import CheckpointOptions, VersionCondition, VersionedBytes

if TYPE_CHECKING:
    from zarr.abc.store import Store

__all__ = ["FsspecLocation", "LocalLocation", "Location", "os_error", "strict_store", "translate_os_errors"]


def os_error(exc: OSError, store: str, what: str, path: str) -> CheckpointError:
    """The trackpoint error for an ``OSError`` of the store, naming ``path``; raise it ``from exc``."""
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"{store}: permission denied to {what} {path!r}: {exc}")
    if isinstance(exc, FileNotFoundError):
        return CheckpointNotFoundError(f"{store}: cannot {what} {path!r}: it does not exist")
    return StorageError(f"{store}: failed to {what} {path!r}: {exc}")


@contextlib.contextmanager
def translate_os_errors(store: str, what: str, path: str) -> Iterator[None]:
    """Re-raise ``OSError`` and friends of the store as trackpoint storage errors naming ``path``."""
    try:
        yield
    except CheckpointError:
        raise
    except OSError as exc:
        raise os_error(exc, store, what, path) from exc


_STRICT: dict[type[Any], type[Any]] = {}


def strict_store(base: type[Any]) -> type[Any]:
    """A subclass of the Zarr store class ``base`` whose ``get`` raises for a missing key.

    Zarr reads a missing chunk (and an empty shard) as the fill value.
    trackpoint writes every chunk (``write_empty_chunks``), so for its
    checkpoints a missing or emptied chunk is lost data and must fail the read
    instead of restoring zeros.
    """
    cls = _STRICT.get(base)
    if cls is None:

        async def get(self: Any, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            value = await base.get(self, key, prototype, byte_range)
            if value is None:
                raise FileNotFoundError(f"{key!r} is missing from {self}")
            if len(value) == 0:
                # Every stored chunk holds at least its codec output (and a
                # CRC); the sharding codec would read an empty shard as "all
                # fill value", so an emptied object must fail here.
                raise ValueError(f"{key!r} in {self} is empty")
            return value

        cls = type(f"Strict{base.__name__}", (base,), {"get": get, "__module__": __name__})
        _STRICT[base] = cls
    return cls


class Location(ABC):
    """Namespace operations on the store that holds Zarr checkpoints.

    Paths are store paths: absolute local paths, or ``bucket/key`` on object
    stores (see :meth:`resolve`).
    """

    #: ``"local"``, ``"s3"`` or ``"gcs"``; also the name used in messages.
    kind: str

    @abstractmethod
    def resolve(self, url: str) -> str:
        """The store path of a user path or URL (``zarr+s3://b/k`` -> ``b/k``)."""

    @abstractmethod
    def zarr_store(self, path: str, *, read_only: bool, strict: bool = False) -> Store:
        """A Zarr store rooted at ``path``.

        ``strict`` makes reading a missing key an error (see :func:`strict_store`).
        """

    @abstractmethod
    def read_bytes(self, path: str) -> bytes | None:
        """Whole contents of an object, ``None`` if absent."""

    @abstractmethod
    def write_bytes(self, path: str, data: bytes, *, create_only: bool = False) -> None:
        """Write a whole object; with ``create_only`` raise :class:`CheckpointExistsError` if it exists."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether the object ``path`` exists."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names of the entries directly inside ``path``; ``[]`` if absent."""

    @abstractmethod
    def rmtree(self, path: str) -> None:
        """Delete ``path`` and everything below it; missing is fine."""

    @abstractmethod
    def newest_mtime(self, path: str) -> float | None:
        """Newest modification time (epoch seconds) of anything below ``path``; ``None`` if empty."""

    @abstractmethod
    def read_versioned(self, path: str) -> VersionedBytes | None:
        """Whole contents and a version token; ``None`` if absent."""

    @abstractmethod
    def write_versioned(self, path: str, data: bytes, if_version: VersionCondition | None) -> str:
        """Replace a small file under a precondition; return its new version."""

    @abstractmethod
    def delete_file(self, path: str) -> None:
        """Delete one object; missing is fine."""

    def close(self) -> None:  # noqa: B027 - most locations hold nothing
        """Release clients."""


# ---------------------------------------------------------------------------
# Local disk
# ---------------------------------------------------------------------------


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalLocation(Location):
    """A local directory tree; commits by renaming directories."""

    kind = "local"

    def resolve(self, url: str) -> str:
        s, rest = _paths.split_scheme(url)
        if s in ("zarr", "zarr+file", "file"):
            # zarr:///abs, zarr+file:///abs and file:///abs all name /abs; zarr://rel is relative.
            url = rest
        elif s:
            raise StorageError(f"zarr: {url!r} is not a local path; this backend instance stores on local disk")
        return os.path.abspath(url)

    def zarr_store(self, path: str, *, read_only: bool, strict: bool = False) -> Store:
        from zarr.storage import LocalStore

        cls = strict_store(LocalStore) if strict else LocalStore
        return cls(path, read_only=read_only)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise os_error(exc, "zarr/local", "read", path) from exc

    def write_bytes(self, path: str, data: bytes, *, create_only: bool = False, durable: bool = True) -> None:
        """Write a whole file; ``durable=False`` skips the fsync (for records only a live process needs)."""
        with translate_os_errors("zarr/local", "write", path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if create_only else os.O_TRUNC)
            try:
                fd = os.open(path, flags, 0o644)
            except FileExistsError as exc:
                raise CheckpointExistsError(f"zarr/local: {path!r} exists already") from exc
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise os_error(exc, "zarr/local", "list", path) from exc

    def rmtree(self, path: str) -> None:
        with translate_os_errors("zarr/local", "delete", path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=False, onerror=_ignore_missing)
            elif os.path.lexists(path):
                os.remove(path)

    def newest_mtime(self, path: str) -> float | None:
        newest: float | None = None
        for dirpath, _dirs, files in os.walk(path):
            for name in [*files, "."]:
                try:
                    m = os.stat(os.path.join(dirpath, name)).st_mtime
                except FileNotFoundError:
                    continue
                newest = m if newest is None else max(newest, m)
        return newest

    # ---------------------------------------------------------- local only
    def rename(self, src: str, dst: str) -> None:
        """``os.rename`` of a directory; a non-empty ``dst`` raises :class:`CheckpointExistsError`."""
        try:
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise CheckpointExistsError(f"zarr/local: a checkpoint is already committed at {dst!r}") from exc
            raise os_error(exc, "zarr/local", "rename", src) from exc

    def exchange(self, a: str, b: str) -> bool:
        """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``).

        Returns ``False`` where the call or the file system does not support
        it, so the caller can fall back to two renames.
        """
        libc = _libc()
        func = getattr(libc, "renameat2", None) if libc is not None else None
        if func is None:
            return False
        at_fdcwd, rename_exchange = -100, 2
        if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            return False
        raise os_error(OSError(err, os.strerror(err), a), "zarr/local", "swap into place", b)

    def fsync_tree(self, path: str) -> None:
        """Make every file and directory below ``path`` durable before it is renamed into place."""
        with translate_os_errors("zarr/local", "fsync", path):
            for dirpath, _dirs, files in os.walk(path):
                for name in files:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                _fsync_dir(dirpath)

    def fsync_dir(self, path: str) -> None:
        """Make a rename inside ``path`` durable."""
        with translate_os_errors("zarr/local", "fsync", path):
            _fsync_dir(path)

    # ---------------------------------------------------------- small files
    @functools.cached_property
    def files(self) -> FileLayer:
        """The bundle backend's local file layer, for the small versioned files.

        Sharing it means one locking scheme for the ``checkpoint`` state file
        whichever backend writes it (a directory ``flock``, no lock file left
        beside the target) and one atomic-replace implementation.
        """
        from trackpoint.backends.stores import LocalFiles

        return LocalFiles()

    def read_versioned(self, path: str) -> VersionedBytes | None:
        return self.files.read_versioned(path)

    def write_versioned(self, path: str, data: bytes, if_version: VersionCondition | None) -> str:
        self.files.makedirs(os.path.dirname(path) or ".")
        return self.files.write_versioned(path, data, if_version=if_version)

    def delete_file(self, path: str) -> None:
        self.files.delete([path])


def _ignore_missing(func: Any, path: str, exc_info: Any) -> None:
    # Another cleanup may remove the same tree concurrently; that is fine.
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


# ---------------------------------------------------------------------------
# fsspec object stores
# ---------------------------------------------------------------------------


def _mtime(entry: Mapping[str, Any]) -> float | None:
    # s3fs reports LastModified as a datetime, gcsfs "updated" as an ISO string.
    for field in ("LastModified", "updated", "mtime"):
        value = entry.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return None


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


_ZARR_LOOP: dict[int, asyncio.AbstractEventLoop] = {}


def _zarr_loop() -> asyncio.AbstractEventLoop:
    """The event loop zarr runs its store calls on (asked of zarr itself, through its public ``sync``).

    Remembered per process: asking costs a round trip to zarr's I/O thread,
    and the answer only changes after a fork or once zarr closed the loop.
    """
    loop = _ZARR_LOOP.get(os.getpid())
    if loop is None or loop.is_closed():
        from zarr.core.sync import sync

        loop = _ZARR_LOOP[os.getpid()] = sync(_running_loop())
    return loop


class FsspecLocation(Location):
    """An S3 or GCS bucket through fsspec.

    Filesystems come from :func:`trackpoint.backends.stores._fsspec.filesystem`,
    which builds them for every backend with the same settings and shares
    them per process: an ``asynchronous=True`` one bound to Zarr's event loop
    that only Zarr uses, and a synchronous one for namespace operations. Small
    whole objects go through the bundle backends' file layer (:attr:`files`).
    """

    def __init__(self, kind: str, storage_options: Mapping[str, Any]) -> None:
        self.kind = kind
        self._options = dict(storage_options)
        with translate_os_errors(f"zarr/{kind}", "connect to", f"{kind}://"):
            self.fs: Any = filesystem(kind, self._options)

    @property
    def _store_name(self) -> str:
        return f"zarr/{self.kind}"

    def resolve(self, url: str) -> str:
        s, rest = _paths.split_scheme(url)
        expected = {"s3": ("s3", "zarr+s3"), "gcs": ("gs", "gcs", "zarr+gs", "zarr+gcs")}[self.kind]
        if s not in expected:
            raise StorageError(f"zarr: {url!r} is not a {self.kind} URL; this backend instance stores on {self.kind}")
        rest = rest.strip("/")
        if not rest:
            raise StorageError(f"zarr: {url!r} names no bucket")
        return rest

    def zarr_store(self, path: str, *, read_only: bool, strict: bool = False) -> Store:
        from zarr.storage import FsspecStore

        afs = filesystem(self.kind, self._options, loop=_zarr_loop())
        cls = strict_store(FsspecStore) if strict else FsspecStore
        return cls(afs, read_only=read_only, path=path)

    @functools.cached_property
    def files(self) -> FileLayer:
        """The S3/GCS file layer of the bundle backends, for whole-object reads and writes.

        Small objects (the root ``zarr.json`` commit point, the state file) go
        through it rather than through fsspec directly, so they get the same
        create-only and version preconditions (S3 ``If-None-Match``/``If-Match``,
        GCS ``ifGenerationMatch``), retries and error translation as the bundle
        format on the same store.
        """
        module = importlib.import_module(f"trackpoint.backends.stores.{self.kind}")
        layer: FileLayer = module.create_files(CheckpointOptions(storage_options=self._options))
        return layer

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.files.read(path)
        except CheckpointNotFoundError:
            return None

    def write_bytes(self, path: str, data: bytes, *, create_only: bool = False) -> None:
        self.files.put(path, data, create_only=create_only)

    def exists(self, path: str) -> bool:
        with translate_os_errors(self._store_name, "check", path):
            return bool(self.fs.exists(path))

    def listdir(self, path: str) -> list[str]:
        with translate_os_errors(self._store_name, "list", path):
            try:
                entries = self.fs.ls(path, detail=False)
            except FileNotFoundError:
                return []
        base = path.rstrip("/")
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base})

    def rmtree(self, path: str) -> None:
        with translate_os_errors(self._store_name, "delete", path):
            try:
                files = self.fs.find(path)
            except FileNotFoundError:
                return
            if files:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(files)

    def newest_mtime(self, path: str) -> float | None:
        with translate_os_errors(self._store_name, "list", path):
            try:
                found = self.fs.find(path, detail=True)
            except FileNotFoundError:
                return None
        times = [t for t in (_mtime(e) for e in found.values()) if t is not None]
        if found and not times:
            # Unknown age: report "now" so cleanup keeps it (the safe side).
            return time.time()
        return max(times) if times else None

    def read_versioned(self, path: str) -> VersionedBytes | None:
        return self.files.read_versioned(path)

    def write_versioned(self, path: str, data: bytes, if_version: VersionCondition | None) -> str:
        return self.files.write_versioned(path, data, if_version=if_version)

    def delete_file(self, path: str) -> None:
        self.files.delete([path])

    def close(self) -> None:
        # The filesystems are shared by every backend on the same store and
        # closed at interpreter exit (see filesystem()); this location's file
        # layer stops accepting work.
        if "files" in self.__dict__:
            self.files.close()
