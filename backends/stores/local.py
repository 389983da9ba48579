"""POSIX files as a :class:`~trackpoint.backends.stores.FileLayer`.

:class:`LocalFiles` gives the formats their local disk: sinks write a
temporary file beside the target, fsync it and ``os.replace`` it into place
(or ``os.link`` it for create-only writes, which fails atomically when the
target exists); reads go straight into the caller's buffers with ``preadv``.
The ``bundle`` backend (the bundle format over this store) is registered by
:mod:`trackpoint.backends._builtin`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from itertools import compress, count, pairwise
from operator import add, attrgetter, itemgetter, ne
from typing import Final, NoReturn, cast

from trackpoint import _paths
from trackpoint.backends.stores._base import FileLayer, FileSink, FileSource
from trackpoint.errors import (
    CheckpointExistsError,
    ConcurrentModificationError,
    DataLossError,
    StorageError,
    StoragePermissionError,
    translate_error,
)
from trackpoint.storage import (
    ANY_VERSION,
    MUST_NOT_EXIST,
    Capabilities,
    VersionCondition,
    VersionedBytes,
    version_condition,
)

__all__ = ["LOCAL_CAPABILITIES", "LocalFiles", "exchange_directories"]

#: Linux refuses more buffers per ``preadv`` or ``writev`` call than this.
_IOV_MAX: Final = 1024
_NBYTES: Final = attrgetter("nbytes")
#: A read from a file's start larger than this reads these bytes alone first.
#: Linux sizes a file's first readahead window after the first read and fills
#: it with single pages; later windows, started while the reader is inside the
#: previous one, get ever larger folios. A first read of 16 MiB (a Zarr chunk)
#: put its first 8 MiB into single pages, which a virtio disk (254 segments per
#: request) reads in 1 MiB requests instead of 4 MiB ones: a cold Zarr restore
#: of 1 GiB in 125 files took 1.7x as long as with a small first read
#: (docs/performance.md, Zarr backend).
_FIRST_READ: Final = 128 << 10

#: A sink has the kernel start writing its file to the disk every this many bytes (:func:`_start_writeback`).
#: A cold-cache save of 20,000 tensors (166 MiB) then waited 5-10 ms for its data file's fsync instead of
#: 50-70 ms (docs/performance.md, "Bundle backend": "The disk writes while the save still works").
_WRITEBACK_BYTES: Final = 16 << 20
_SYNC_FILE_RANGE_WRITE: Final = 2

#: What a local (POSIX) file system guarantees; the default of :class:`LocalFiles`.
LOCAL_CAPABILITIES: Final = Capabilities(
    atomic_rename=True, conditional_create=True, ranged_reads=True, parallel_writes=True, listing_consistent=True
)


def _raise(exc: OSError, action: str, path: str) -> NoReturn:
    """Translate an ``OSError`` into the matching trackpoint error, naming the path."""
    msg = f"local: cannot {action} {path!r}: {exc.strerror or exc}"
    error = translate_error(exc, msg, url=path)
    if isinstance(error, StoragePermissionError):
        error = translate_error(exc, msg + " (check file permissions)", url=path)
    raise error from exc


def _not_writable(exc: OSError, directory: str, path: str) -> NoReturn:
    """Explain why ``directory`` could not be created: the location is not writable, and why."""
    # The nearest part of the path that exists tells a file in the way from a
    # refusing file system; os.makedirs reports only the last errno it saw.
    existing = path
    while existing and not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    where = f"local: cannot create directory {directory!r}: the location is not writable"
    if existing and os.path.lexists(existing) and not os.path.isdir(existing):
        raise StorageError(
            f"{where}, because {existing!r} is a file, not a directory; choose a location inside a directory"
        ) from exc
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise StoragePermissionError(
            f"{where} (creating the directory failed: {reason}); check its permissions or choose another location"
        ) from exc
    raise StorageError(
        f"{where} (the file system refused to create the directory under {existing or os.curdir!r}: {reason}); "
        "choose another location"
    ) from exc


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, for the Linux calls ``os`` lacks; ``None`` where it cannot be loaded."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux), or ``None`` where there is none."""
    func = getattr(_libc(), "sync_file_range", None)
    if func is not None:
        func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        func.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int] | None", func)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to the disk, without waiting.

    Written data otherwise waits in the page cache until ``fsync``, and the disk
    idles while a save checksums, encodes and builds its index. Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the range's writeback;
    ``fsync`` in :meth:`_LocalSink.close` still makes the file durable and
    reports any write error, so a failure here is left to it. Where the call
    does not exist, nothing happens.
    """
    func = _sync_file_range()
    if func is not None:
        func(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _version(st: os.stat_result) -> str:
    # The inode changes on every replace, so equal mtimes cannot hide an update.
    return f"{st.st_mtime_ns}:{st.st_ino}:{st.st_size}"


def _temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{uuid.uuid4().hex}")


class _LocalSink(FileSink):
    """A temporary file beside the target, published by ``close``."""

    def __init__(self, path: str, create_only: bool) -> None:
        self._path = path
        self._create_only = create_only
        self._tmp = _temp_name(path)
        # Bytes written, and how many of them the kernel was asked to start writing out.
        self._written = 0
        self._flushed = 0
        try:
            self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            _raise(exc, "create a temporary file for", path)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # docstring inherited
        self.write_many((data,))

    def write_many(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        # docstring inherited
        if self._fd is None:
            raise StorageError(f"local: write to {self._path!r} after the file was closed")
        views = [memoryview(data).cast("B") for data in buffers]
        sizes = list(map(len, views))
        try:
            done = 0
            while done < len(views):
                # writev may write less than asked (one call is capped near 2 GiB).
                n = os.writev(self._fd, views[done : done + _IOV_MAX])
                self._written += n
                done = _step_past(views, sizes, done, n)
        except OSError as exc:
            self.abort()
            _raise(exc, "write", self._path)
        if self._written - self._flushed >= _WRITEBACK_BYTES:
            _start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def close(self) -> None:
        # docstring inherited
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self._unlink_tmp()
            _raise(exc, "fsync", self._path)
        os.close(fd)
        try:
            if self._create_only:
                # link() fails with EEXIST instead of replacing: an atomic create-only publish.
                os.link(self._tmp, self._path)
                self._unlink_tmp()
            else:
                os.replace(self._tmp, self._path)
        except OSError as exc:
            self._unlink_tmp()
            if exc.errno == errno.EEXIST:
                raise CheckpointExistsError(
                    f"local: {self._path!r} exists already and was written create-only"
                ) from exc
            _raise(exc, "publish", self._path)

    def abort(self) -> None:
        # docstring inherited
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._unlink_tmp()

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


def _step_past(bufs: list[memoryview], sizes: list[int], i: int, n: int) -> int:
    """After a vectored call moved ``n`` bytes from buffer ``i`` on: the first buffer not done, trimmed.

    ``sizes`` holds the buffers' byte counts; the buffer the call ended inside
    is replaced by (and its size set to) the part it still has to move.
    """
    while i < len(bufs) and n >= sizes[i]:
        n -= sizes[i]
        i += 1
    if n:
        bufs[i] = bufs[i].cast("B")[n:]
        sizes[i] -= n
    return i


def _preadv_full(fd: int, bufs: list[memoryview], sizes: list[int], offset: int, path: str) -> None:
    """Fill every buffer (``sizes``: their bytes) from ``offset`` on, coping with short reads."""
    i = 0
    while i < len(bufs):
        j = min(i + _IOV_MAX, len(bufs))
        want = sum(sizes[i:j])
        if not want:
            i = j
            continue
        n = os.preadv(fd, bufs[i:j], offset)
        if n == 0:
            raise DataLossError(
                f"local: {path!r} ends at byte {offset}, before the {sum(sizes[i:])} bytes still expected there "
                "(truncated file)"
            )
        offset += n
        if n == want:  # nearly always: no buffer to look at one by one
            i = j
            continue
        if i == 0:
            bufs, sizes = list(bufs), list(sizes)  # the caller's lists stay as they were
        i = _step_past(bufs, sizes, i, n)


class _LocalSource(FileSource):
    """A local file open for reading: ``preadv`` on one descriptor."""

    def __init__(self, os_path: str, path: str) -> None:
        self._path = path
        try:
            self._fd = os.open(os_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            _raise(exc, "open", path)

    def read_ranges(self, ranges: Sequence[tuple[int, memoryview]]) -> None:
        # docstring inherited
        path = self._path
        try:
            # Per range only C-level loops: a restore of 10^5 small tensors passes 10^5 ranges.
            ordered = sorted(ranges, key=itemgetter(0))
            offsets = list(map(itemgetter(0), ordered))
            views = list(map(itemgetter(1), ordered))
            sizes = list(map(_NBYTES, views))
            # A run of adjacent ranges starts wherever a range does not begin at the end of the previous one.
            ends = list(map(add, offsets, sizes))
            starts = [0, *compress(count(1), map(ne, offsets[1:], ends)), len(ordered)]
            for a, b in pairwise(starts):
                if offsets[a] == 0 and ends[b - 1] > _FIRST_READ:
                    # The first _FIRST_READ bytes alone, however many ranges hold them (many small tensors do);
                    # fewer when they are spread over more ranges than one call takes.
                    i = a
                    while ends[i] < _FIRST_READ and i - a < _IOV_MAX - 1:
                        i += 1
                    head = min(ends[i], _FIRST_READ)
                    cut = head - offsets[i]
                    piece = views[i].cast("B")
                    if os.preadv(self._fd, [*views[a:i], piece[:cut]], 0) == head:
                        views[i], sizes[i], offsets[i] = piece[cut:], sizes[i] - cut, head
                        a = i
                    # Else a short file: the read below starts over and says what it still owes.
                _preadv_full(self._fd, views[a:b], sizes[a:b], offsets[a], path)
        except OSError as exc:
            _raise(exc, "read", path)

    def close(self) -> None:
        # docstring inherited
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class LocalFiles(FileLayer):
    """Files on a local (POSIX) file system.

    Parameters
    ----------
    capabilities
        Override the declared capabilities. ``Capabilities(atomic_rename=False,
        conditional_create=True)`` makes the bundle backend use its object-store
        commit strategy on a local disk, which is how that strategy is tested
        without a cloud.

    Notes
    -----
    :meth:`listdir` also lists directories, because the bundle layout keeps
    the pieces of an unfinished save in a ``<prefix>_temp`` directory that
    cleanup must find.
    """

    store_name = "local"
    # Small enough to stay in the CPU cache between the copy and the checksum,
    # large enough that the kernel's readahead keeps the disk busy meanwhile.
    read_chunk_bytes = 4 << 20
    # Writing to the page cache is a copy that one thread keeps up with; a second
    # writer (a second data file, index piece and fsync, and a merged index) was
    # slower below a few hundred MiB (docs/performance.md, the user API).
    min_bytes_per_writer = 256 << 20

    def __init__(self, *, capabilities: Capabilities | None = None) -> None:
        self.capabilities = capabilities or LOCAL_CAPABILITIES

    @staticmethod
    def _p(path: str) -> str:
        """The OS path for ``path``: scheme stripped, NUL bytes refused, ``..`` resolved.

        Resolving ``..`` here, for every operation, keeps ``makedirs`` from
        creating the directories a ``..`` climbs out of (``run/sub/`` of
        ``run/sub/../../up/ckpt``), and makes every later call address the
        same file whether or not those directories exist.
        """
        s, _ = _paths.split_scheme(_paths.check(path))
        if s not in ("", "file"):
            raise StorageError(f"local: {path!r} is not a local path or file:// URL")
        return _paths.normalize_local(_paths.strip_file_scheme(path))

    # ------------------------------------------------------------ primitives
    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        # docstring inherited
        return _LocalSink(self._p(path), create_only)

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        # docstring inherited
        self.read_ranges(path, [(offset, out)])

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each ``(offset, out)``; adjacent ranges are read with one ``preadv``."""
        with closing(_LocalSource(self._p(path), path)) as source:
            source.read_ranges(ranges)

    def open_source(self, path: str) -> FileSource:
        """Open ``path`` once for several reads: one descriptor, and with it one readahead state.

        Linux keeps readahead per open file. A restore that opened the file
        again for each 4 MiB piece started readahead over every time, with
        small pages in its first window, and a virtio disk then read in
        smaller requests: 388 instead of 264 for a cold 1 GiB restore
        (docs/performance.md, the user API).

        A subclass (or a patch) that replaces :meth:`read_ranges` gets the
        default source instead, which calls that :meth:`read_ranges` for every
        read: a store that transforms or counts what it reads keeps seeing
        every read.
        """
        if type(self).read_ranges is not _READ_RANGES:
            return super().open_source(path)
        return _LocalSource(self._p(path), path)

    def size(self, path: str) -> int | None:
        # docstring inherited
        try:
            return os.stat(self._p(path)).st_size
        except (FileNotFoundError, NotADirectoryError):
            # A file where the path needs a directory (``ckpt-1.index/checkpoint``, a file passed for a
            # prefix or a directory): nothing exists there, which callers explain better than the errno.
            return None
        except OSError as exc:
            _raise(exc, "stat", path)

    def modified(self, path: str) -> float | None:
        # docstring inherited
        try:
            return os.stat(self._p(path)).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            _raise(exc, "stat", path)

    def listdir(self, directory: str) -> list[str]:
        # docstring inherited
        try:
            return sorted(os.listdir(self._p(directory) or "."))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            _raise(exc, "list", directory)

    def delete(self, paths: Sequence[str]) -> None:
        # docstring inherited
        for path in paths:
            try:
                os.unlink(self._p(path))
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                _raise(exc, "delete", path)

    def read_versioned(self, path: str) -> VersionedBytes | None:
        # docstring inherited
        try:
            with open(self._p(path), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            _raise(exc, "read", path)
        return VersionedBytes(data, _version(st))

    @contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        # flock on the parent directory serializes check-and-replace across
        # processes without leaving a lock file beside the target.
        directory = os.path.dirname(path) or "."
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            _raise(exc, "open the directory of", path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def write_versioned(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        # docstring inherited
        p = self._p(path)
        if_version = version_condition(if_version)
        with self._locked(p):
            if if_version is not ANY_VERSION:
                try:
                    current: str | None = _version(os.stat(p))
                except FileNotFoundError:
                    current = None
                except OSError as exc:
                    _raise(exc, "stat", path)
                if if_version is MUST_NOT_EXIST and current is not None:
                    raise ConcurrentModificationError(
                        f"local: {path!r} exists already (create-only write); read it and retry with its version"
                    )
                if isinstance(if_version, str) and current != if_version:
                    raise ConcurrentModificationError(
                        f"local: {path!r} changed since version {if_version} was read; re-read it and retry"
                    )
            sink = _LocalSink(p, create_only=False)
            sink.write(data)
            sink.close()
            self.sync_dir(os.path.dirname(p))
            try:
                return _version(os.stat(p))
            except OSError as exc:
                _raise(exc, "stat", path)

    # -------------------------------------------------------------- extras
    def find(self, directory: str) -> list[str]:
        # docstring inherited
        root = self._p(directory) or "."
        found: list[str] = []

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                _raise(exc, "list", directory)

        for here, _dirs, names in os.walk(root, onerror=fail):
            # Paths are returned as the caller spelled the directory.
            rel = os.path.relpath(here, root)
            base = directory if rel == os.curdir else self.join(directory, rel)
            found.extend(self.join(base, n) for n in names)
        return sorted(found)

    def rmtree(self, directory: str) -> None:
        # docstring inherited
        root = self._p(directory) or "."

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                _raise(exc, "list", directory)

        # Bottom-up, so each directory is empty when it is removed; files that
        # vanish meanwhile (another cleanup) are not an error.
        for here, dirs, names in os.walk(root, topdown=False, onerror=fail):
            for name in names:
                self._unlink(os.path.join(here, name), directory)
            for name in dirs:
                self._rmdir(os.path.join(here, name), directory)
        self._rmdir(root, directory)

    @staticmethod
    def _unlink(path: str, directory: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _raise(exc, "delete a file of", directory)

    @staticmethod
    def _rmdir(path: str, directory: str) -> None:
        try:
            if os.path.islink(path):
                os.unlink(path)  # a symlink to a directory: remove the link, never what it points to
            else:
                os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _raise(exc, "remove a directory of", directory)

    def rename(self, src: str, dst: str) -> None:
        # docstring inherited
        try:
            os.replace(self._p(src), self._p(dst))
        except OSError as exc:
            _raise(exc, f"rename {src!r} to", dst)

    def rename_new(self, src: str, dst: str) -> None:
        # docstring inherited: refused in the same step as the move, never after a separate check.
        source, target = self._p(src), self._p(dst)
        if _rename_noreplace(source, target):
            return
        try:
            # Where renameat2 is missing or refused (other kernels, some file systems): a hard link is created
            # only if the name is free, then the source name goes.
            os.link(source, target)
        except FileExistsError:
            raise CheckpointExistsError(f"local: {dst!r} exists; {src!r} was not moved there") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                _raise(exc, f"rename {src!r} to", dst)
            super().rename_new(src, dst)  # a file system without hard links: check, then rename
            return
        try:
            os.unlink(source)
        except OSError as exc:
            _raise(exc, "remove", src)

    def makedirs(self, directory: str) -> None:
        """Create ``directory`` and its parents.

        Raises
        ------
        StoragePermissionError
            The file system refuses to create it (permissions, read-only mount).
        StorageError
            It cannot be created for another reason: a parent is a regular file,
            or the file system does not allow new entries there (``/proc``).
            Either way the message says the location is not writable.
        """
        d = self._p(directory)
        if d:
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as exc:
                _not_writable(exc, directory, d)

    def remove_dir(self, directory: str) -> None:
        """Remove ``directory`` if it is empty; a missing or non-empty one is left alone."""
        try:
            os.rmdir(self._p(directory))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                _raise(exc, "remove directory", directory)

    def sync_dir(self, directory: str) -> None:
        # docstring inherited
        d = self._p(directory) or "."
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # nothing was renamed in a directory that does not exist
        except OSError as exc:
            _raise(exc, "open directory", directory)
        try:
            os.fsync(fd)
        except OSError as exc:
            _raise(exc, "fsync directory", directory)
        finally:
            os.close(fd)


#: The built-in ``read_ranges``, to tell a subclass's or a patch's from it (:meth:`LocalFiles.open_source`).
_READ_RANGES: Final = LocalFiles.read_ranges


def _renameat2(a: str, b: str, flag: int) -> int | None:
    """Linux ``renameat2(a, b, flag)``: 0 when done, else its errno; ``None`` where it is not supported."""
    func = getattr(_libc(), "renameat2", None)
    if func is None:
        return None
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flag) == 0:
        return 0
    err = ctypes.get_errno()
    return None if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP) else err


def _rename_noreplace(src: str, dst: str) -> bool:
    """``renameat2(RENAME_NOREPLACE)``: move ``src`` to ``dst`` unless ``dst`` exists; ``False`` if unsupported.

    Raises
    ------
    CheckpointExistsError
        ``dst`` exists.
    StorageError
        The move failed otherwise.
    """
    err = _renameat2(src, dst, 1)
    if err == errno.EEXIST:
        raise CheckpointExistsError(f"local: {dst!r} exists; {src!r} was not moved there")
    if err:
        raise StorageError(f"local: cannot move {src!r} to {dst!r}: {os.strerror(err)}")
    return err == 0


def exchange_directories(a: str, b: str) -> bool:
    """Atomically swap the local directories ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns ``False`` where the call or the file system does not support it.
    """
    err = _renameat2(a, b, 2)
    if err:
        raise StorageError(f"local: cannot swap {a!r} into place at {b!r}: {os.strerror(err)}")
    return err == 0
