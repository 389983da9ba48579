"""The file layer: byte objects addressed by path, under the checkpoint formats.

The formats (:mod:`trackpoint.backends.bundle`, :mod:`trackpoint.backends.zarr`)
are written once against :class:`FileLayer` and run unchanged on a local disk
(:class:`trackpoint.backends.stores.LocalFiles`) and on object stores
(:class:`trackpoint.backends.stores.ObjectStore`, the base of S3 and GCS). A
third-party plugin that only brings a new store can implement this class (or,
for an object store, subclass :class:`~trackpoint.backends.stores.ObjectStore`)
and reuse a format with ``BundleBackend(MyFiles(...))``.

Only a few methods are abstract; the rest have defaults built on them.
Capabilities (atomic rename, conditional create, ...) are declared, and the
bundle backend picks its commit strategy from them.

Paths are full paths or URLs as the user wrote them; implementations strip
their own scheme.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from trackpoint._units import human_bytes
from trackpoint.errors import CheckpointExistsError
from trackpoint.storage import ANY_VERSION, Capabilities, VersionCondition, VersionedBytes

__all__ = ["OBJECT_STORE_CAPABILITIES", "FileLayer", "FileSink", "FileSource", "UnfinishedUpload"]

#: What an object store can do (:attr:`ObjectStore.capabilities
#: <trackpoint.backends.stores.ObjectStore.capabilities>`): conditional create,
#: no atomic rename. Defined here, away from the object-store layer, so that a
#: plugin registering a backend over an object store can declare them without
#: importing that layer.
OBJECT_STORE_CAPABILITIES: Final = Capabilities(
    atomic_rename=False,
    conditional_create=True,
    ranged_reads=True,
    parallel_writes=True,
    listing_consistent=True,
)


@dataclass(frozen=True, slots=True)
class UnfinishedUpload:
    """An upload that was started and neither completed nor aborted (an S3 incomplete multipart upload).

    Its object does not exist and no listing of objects shows it, but the
    store keeps (and bills) the parts sent so far until it is aborted. A save
    killed while it streamed a large object leaves one behind.

    Parameters
    ----------
    path
        The object the upload was to create, as a URL of the store.
    upload_id
        The store's id of the upload (several may target one path).
    started
        When it was started, seconds since the epoch; ``None`` if unknown.
    modified
        When it last received data (its newest part, else its start), seconds
        since the epoch; ``None`` if unknown. Age-based cleanup judges by this:
        an upload still receiving parts belongs to a running save.
    size
        Bytes in the parts received so far; ``None`` if unknown.
    handle
        What the store needs to abort it (:meth:`FileLayer.abort_uploads`);
        opaque to everyone else.
    """

    path: str
    upload_id: str
    started: float | None = None
    modified: float | None = None
    size: int | None = None
    handle: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """The upload as one line for people (``trackpoint ls --all``): path, id, size, start and newest part.

        Stable while the upload receives nothing, so that what
        :meth:`~trackpoint.storage.StorageBackend.leftovers` lists and what
        :meth:`~trackpoint.storage.StorageBackend.cleanup` reports match.
        """
        facts = [f"id {self.upload_id}"]
        if self.size is not None:
            facts.append(f"{human_bytes(self.size)} in parts")
        if self.started is not None:
            facts.append(f"started {_utc(self.started)}")
        if self.modified is not None and self.modified != self.started:
            facts.append(f"last part {_utc(self.modified)}")
        return f"{self.path} (unfinished upload, {', '.join(facts)})"


def _utc(t: float) -> str:
    import datetime  # only for listing leftovers: not on the import path of every checkpoint

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class FileSink(ABC):
    """A file being written. Nothing is visible at its path before :meth:`close`.

    On a local disk this is a temporary file beside the target that ``close``
    fsyncs and renames; on an object store it is a (multipart) upload that
    ``close`` completes.
    """

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``. Implementations must not keep a reference after returning."""

    def write_many(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        """Append each of ``buffers`` in order: the same bytes as one :meth:`write` per buffer.

        A caller holding many small buffers (a shard of small tensors) hands
        them over together. The default joins them into one buffer and calls
        :meth:`write` once, so a store pays one call and one copy for them; a
        store with a vectored write (``writev``) overrides it to skip the
        copy. Implementations must not keep a reference to any buffer after
        returning.
        """
        if len(buffers) == 1:
            self.write(buffers[0])
        elif buffers:
            self.write(b"".join(buffers))

    @abstractmethod
    def close(self) -> None:
        """Finish: make the file durable and visible under its path."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written; the path is left as it was. Idempotent."""

    def __enter__(self) -> FileSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FileSource(ABC):
    """One file open for several range reads, from :meth:`FileLayer.open_source`.

    A format that reads a data file in many calls (a checkpoint restore reads
    it in pieces of :attr:`FileLayer.read_chunk_bytes`) reads them all through
    one source, so that a store can keep what an open file carries between
    calls: on a local disk, the kernel's readahead state belongs to the open
    file, and reopening the file for every piece starts readahead over each
    time. Close it when done (``with contextlib.closing(files.open_source(path)) as source:``).
    """

    @abstractmethod
    def read_ranges(self, ranges: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each ``(offset, out)`` from this file, as :meth:`FileLayer.read_ranges` does."""

    def close(self) -> None:  # noqa: B027 - a source holding nothing has nothing to release
        """Release what the source holds. Idempotent."""


class _PathSource(FileSource):
    """The default source: every call is one :meth:`FileLayer.read_ranges` of the path."""

    def __init__(self, files: FileLayer, path: str) -> None:
        self._files = files
        self._path = path

    def read_ranges(self, ranges: Sequence[tuple[int, memoryview]]) -> None:
        self._files.read_ranges(self._path, ranges)


class FileLayer(ABC):
    """Byte objects addressed by path.

    Errors are trackpoint errors: a missing path raises
    :class:`~trackpoint.errors.CheckpointNotFoundError`, a create-only write
    onto an existing object :class:`~trackpoint.errors.CheckpointExistsError`,
    a failed version precondition
    :class:`~trackpoint.errors.ConcurrentModificationError`, anything else from
    the store :class:`~trackpoint.errors.StorageError` (chained, naming the path).
    """

    #: Declared abilities of the store.
    capabilities: Capabilities = Capabilities()
    #: Human-readable store name for messages ("local", "s3", "gcs").
    store_name: str = "files"
    #: Formats read a data file in calls of about this many bytes and check each
    #: piece's checksum as soon as it arrived, while it is cache-warm and while
    #: the store keeps reading ahead (the bundle reads a tensor larger than this
    #: in calls of four times it); ``None`` reads all of a file's ranges in
    #: one :meth:`read_ranges` call, which a store that splits it into
    #: concurrent requests needs (object stores).
    read_chunk_bytes: int | None = None
    #: Bytes per writer a save needs before a format writes another shard in
    #: parallel (:attr:`trackpoint.storage.StorageBackend.min_bytes_per_writer`);
    #: ``0``: one writer per CPU whatever the size (object stores, whose requests
    #: wait on the network).
    min_bytes_per_writer: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("unfinished_uploads")
        if own is not None and callable(own) and not takes_keyword(own, "recursive"):
            # Written before the keyword existed: callers may pass it all the same (see unfinished_uploads).
            setattr(cls, "unfinished_uploads", _listing_per_directory(own))  # noqa: B010 - mypy: no method assignment

    # ------------------------------------------------------------ primitives
    @abstractmethod
    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        """Start writing ``path``; with ``create_only``, ``close`` fails if it exists."""

    @abstractmethod
    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``[offset, offset + len(out))`` of ``path``.

        Raises :class:`~trackpoint.errors.DataLossError` when the file ends early.
        """

    @abstractmethod
    def size(self, path: str) -> int | None:
        """Size in bytes, or ``None`` if ``path`` does not exist."""

    @abstractmethod
    def listdir(self, directory: str) -> list[str]:
        """Names (not paths) of the files directly in ``directory``; ``[]`` if absent."""

    @abstractmethod
    def delete(self, paths: Sequence[str]) -> None:
        """Delete files; missing ones are ignored."""

    @abstractmethod
    def read_versioned(self, path: str) -> VersionedBytes | None:
        """Whole contents and a version token (mtime+inode, ETag, generation); ``None`` if absent."""

    @abstractmethod
    def write_versioned(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        """Atomically replace the small file ``path`` under a precondition; return its new version.

        ``if_version`` is as in :meth:`StorageBackend.write_file
        <trackpoint.storage.StorageBackend.write_file>`: :data:`~trackpoint.storage.ANY_VERSION`
        (unconditional), :data:`~trackpoint.storage.MUST_NOT_EXIST` (create-only)
        or a version token from :meth:`read_versioned` (compare-and-swap).
        Implementations call :func:`~trackpoint.storage.version_condition`
        first, which turns the deprecated ``None`` into ``MUST_NOT_EXIST`` with
        a warning.

        Raises
        ------
        ConcurrentModificationError
            The precondition failed (also for ``MUST_NOT_EXIST`` on an existing file).
        """

    # -------------------------------------------------------------- defaults
    def put(self, path: str, data: bytes | bytearray | memoryview, *, create_only: bool = False) -> None:
        """Write a whole file in one go."""
        sink = self.open_sink(path, create_only=create_only)
        try:
            sink.write(data)
        except BaseException:
            sink.abort()
            raise
        sink.close()

    def read(self, path: str) -> bytes:
        """Whole contents of ``path``."""
        n = self.size(path)
        if n is None:
            from trackpoint.errors import CheckpointNotFoundError

            raise CheckpointNotFoundError(f"{self.store_name}: {path!r} does not exist")
        buf = bytearray(n)
        if n:
            self.read_into(path, 0, memoryview(buf))
        return bytes(buf)

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each ``(offset, out)``; object stores override this to read in parallel."""
        for offset, out in ranges:
            self.read_into(path, offset, out)

    def open_source(self, path: str) -> FileSource:
        """Open ``path`` for several :meth:`FileSource.read_ranges` calls.

        Notes for implementers
        ----------------------
        The default opens nothing: each call of the source is one
        :meth:`read_ranges` of ``path``, and a missing file is reported by the
        first read. Override it when a store keeps state per open file that
        later reads benefit from (:class:`~trackpoint.backends.stores.LocalFiles`
        keeps one descriptor, and with it the kernel's readahead).
        """
        return _PathSource(self, path)

    def sizes(self, paths: Sequence[str]) -> list[int | None]:
        """The :meth:`size` of each of ``paths``, in order (``None``: missing).

        Notes for implementers
        ----------------------
        The default asks one path after another. Stores whose every question
        is a round trip override it to ask together
        (:class:`~trackpoint.backends.stores.ObjectStore` does): a reader of a
        checkpoint with many data files asks for all their sizes at once.
        """
        return [self.size(path) for path in paths]

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        return self.size(path) is not None

    def modified(self, path: str) -> float | None:
        """POSIX timestamp of the last modification of ``path`` (a file or a directory).

        Returns
        -------
        float or None
            Seconds since the epoch; ``None`` when the store cannot tell or
            ``path`` does not exist. Callers must treat ``None`` as "unknown",
            never as "old": cleanup keeps a leftover whose age it cannot tell.

        Notes for implementers
        ----------------------
        The default returns ``None``. Stores with a modification time in their
        metadata should override it, or age-based cleanup removes nothing
        unless asked to ignore ages (``min_age=0``).
        """
        return None

    def find(self, directory: str) -> list[str]:
        """Paths of every file under ``directory``, at any depth, sorted; ``[]`` if there are none.

        Notes for implementers
        ----------------------
        The default walks :meth:`listdir` and descends into every entry
        that is not a file (:meth:`size` is ``None``), so it finds nested files
        only on stores whose ``listdir`` names directories (a local disk).
        Object stores list keys by prefix and override it
        (:meth:`ObjectStore.find <trackpoint.backends.stores.ObjectStore.find>`).
        """
        return sorted(self._walk(directory)[0])

    def _walk(self, directory: str) -> tuple[list[str], list[str]]:
        """Files and directories under ``directory`` by :meth:`listdir`; each directory before its children."""
        files: list[str] = []
        directories: list[str] = []
        pending = [directory]
        while pending:
            current = pending.pop()
            directories.append(current)
            for name in self.listdir(current):
                path = self.join(current, name)
                (pending if self.size(path) is None else files).append(path)
        return files, directories

    def rmtree(self, directory: str) -> None:
        """Delete ``directory`` with every file under it; a missing directory is not an error.

        Notes for implementers
        ----------------------
        The default deletes the files :meth:`find` walks to, then removes the
        emptied directories, deepest first (a no-op on object stores). It is
        not atomic: a concurrent writer can add files while it runs, and a
        reader can see the directory half deleted. Callers delete only what
        no save is writing any more.
        """
        files, directories = self._walk(directory)
        if files:
            self.delete(files)
        for d in reversed(directories):
            self.remove_dir(d)

    def cleaning_up(self) -> contextlib.AbstractContextManager[None]:
        """A block whose requests (in the calling thread) clean up after a failed save, under a short budget.

        A format wraps what it removes after a failed save in it (the bundle's
        and Zarr's ``abort``), and a sink its own ``abort``. Such a clean-up
        is best effort: what it does not remove, ``cleanup(directory)``
        removes later. So when the save failed because the store stopped
        answering, the clean-up must not wait out the store's retry limits
        once more per step; inside the block a store gives its requests one
        short budget instead.

        Returns
        -------
        contextlib.AbstractContextManager
            Use with ``with``; nested blocks share the outermost one's budget.

        Notes for implementers
        ----------------------
        The default changes nothing: a local disk answers or fails at once.
        :class:`~trackpoint.backends.stores.ObjectStore` bounds the block's
        requests together by ``TransferOptions.cleanup_deadline``.
        """
        return contextlib.nullcontext()

    def unfinished_uploads(self, directory: str, *, recursive: bool = False) -> list[UnfinishedUpload]:
        """Uploads to objects in ``directory`` that were started and never completed nor aborted.

        Formats list them with their leftovers (``trackpoint ls --all``) and
        abort old ones in ``cleanup``: a save killed while it streamed an
        object leaves one, stored and billed, though no listing of objects
        shows it.

        Parameters
        ----------
        directory
            Where to look.
        recursive
            ``False`` (default): uploads of objects directly in ``directory``.
            ``True``: of objects at any depth below it, also in directories
            that hold no object (a format whose files sit in subdirectories,
            as Zarr's chunks do, lists a killed save's uploads this way).

        Returns
        -------
        list of UnfinishedUpload
            Sorted by path; ``[]`` when the store cannot tell.

        Notes for implementers
        ----------------------
        The default returns ``[]``: stores whose unfinished uploads take no
        space, expire by themselves or cannot be listed have nothing to report.
        :class:`~trackpoint.backends.stores.ObjectStore` implements it through
        the optional client call ``upload_list``.

        An override written before ``recursive`` existed (taking
        ``directory`` alone) keeps working: the class is given a wrapper
        that calls it as it is for ``recursive=False``, and for
        ``recursive=True`` once for ``directory`` and once for every
        directory below it that holds a file (by :meth:`find`). That
        fallback misses uploads in a directory holding no file; accept
        ``recursive`` to find them.
        """
        return []

    def abort_uploads(self, uploads: Sequence[UnfinishedUpload]) -> None:  # noqa: B027 - nothing listed, nothing to abort
        """Abort uploads listed by :meth:`unfinished_uploads`, discarding their parts.

        Uploads that are gone already (completed or aborted since) are not an
        error.

        Notes for implementers
        ----------------------
        The default does nothing, as the default :meth:`unfinished_uploads`
        lists nothing.
        """

    def rename(self, src: str, dst: str) -> None:
        """Atomically move ``src`` over ``dst``; only when ``capabilities.atomic_rename``."""
        raise NotImplementedError(f"{self.store_name} has no atomic rename")

    def backend_option_names(self) -> frozenset[str] | None:
        """The ``backend_options`` keys the store takes, for the formats to refuse the others.

        ``None`` (the default): the store reads none and leaves the check to its backend's factory (the
        local disk's logs options given for it as unread); object stores name theirs.
        """
        return None

    def rename_new(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` only if nothing is at ``dst``; only when ``capabilities.atomic_rename``.

        What a commit with ``overwrite=False`` publishes with: a checkpoint another writer committed at
        ``dst`` is never replaced.

        Raises
        ------
        CheckpointExistsError
            Something is at ``dst``; ``src`` is left where it was.

        Notes
        -----
        For implementers: the default checks, then renames, so a file created at ``dst`` between the two is
        replaced. Override it where the store can refuse in the same step (Linux ``renameat2`` with
        ``RENAME_NOREPLACE``, a hard link then an unlink), as :class:`~trackpoint.backends.stores.LocalFiles`
        does.
        """
        if self.exists(dst):
            raise CheckpointExistsError(f"{self.store_name}: {dst!r} exists; {src!r} was not moved there")
        self.rename(src, dst)

    def makedirs(self, directory: str) -> None:  # noqa: B027 - object stores have no directories
        """Create ``directory`` and parents; a no-op on stores without directories."""

    def remove_dir(self, directory: str) -> None:  # noqa: B027
        """Remove an empty directory; a no-op on stores without directories."""

    def sync_dir(self, directory: str) -> None:  # noqa: B027
        """Make renames inside ``directory`` durable (fsync); a no-op on object stores."""

    def join(self, directory: str, name: str) -> str:
        """``name`` inside ``directory``."""
        from trackpoint import _paths

        return _paths.join(directory, name)

    def dirname(self, path: str) -> str:
        """Directory part of ``path``."""
        from trackpoint import _paths

        return _paths.dirname(path)

    def close(self) -> None:  # noqa: B027
        """Release clients and pools."""


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name`` (a parameter of that name, or ``**kwargs``).

    How the store layer tells an override written before an optional keyword
    existed from one that takes it, so as to call each the way it was
    written. A decorated function is judged by the function it wraps
    (``__wrapped__``); a signature that cannot be read counts as not taking it.
    """
    import inspect  # only for classes that override a listing: not on the import path of every checkpoint

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


def _listing_per_directory(
    listing: Callable[[Any, str], list[UnfinishedUpload]],
) -> Callable[..., list[UnfinishedUpload]]:
    """An ``unfinished_uploads(directory, *, recursive=False)`` around an override taking ``directory`` alone.

    ``recursive=True`` asks ``listing`` for ``directory`` and for every
    directory below it that holds a file: uploads in a directory holding no
    file are missed.
    """
    from trackpoint import _paths

    def unfinished_uploads(self: FileLayer, directory: str, *, recursive: bool = False) -> list[UnfinishedUpload]:
        if not recursive:
            return listing(self, directory)
        directories = {_paths.split_scheme(directory.rstrip("/"))[1]: directory}
        for path in self.find(directory):
            parent = self.dirname(path)
            directories.setdefault(_paths.split_scheme(parent.rstrip("/"))[1], parent)
        found: dict[tuple[str, str], UnfinishedUpload] = {}
        for _, d in sorted(directories.items()):
            for upload in listing(self, d):
                found.setdefault((upload.path, upload.upload_id), upload)
        return sorted(found.values(), key=lambda u: (u.path, u.upload_id))

    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(unfinished_uploads, attribute, getattr(listing, attribute, None))
    return unfinished_uploads
