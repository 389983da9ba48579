"""A :class:`~trackpoint.backends.files.FileLayer` over object stores reached through fsspec.

:class:`FsspecFiles` holds everything S3 and GCS share: the retry policy,
the bridge from the caller's threads onto fsspec's event loop, bounded-memory
streaming uploads, and parallel ranged reads straight into the caller's
buffers. The store dialects (:class:`trackpoint.backends.s3.S3Files`,
:class:`trackpoint.backends.gcs.GCSFiles`) supply a handful of single-attempt
async primitives and a classification of their errors.

Why not fsspec's high-level API (``pipe_file``, ``cat_file``, ``open``)?
It cannot express the preconditions a safe commit needs (create-only
multipart uploads, compare-and-swap on ETag or generation), it reads into
fresh ``bytes`` rather than into a destination buffer, and its retries
(gcsfs sleeps up to 32 s; s3fs retries a fixed list) cannot be bounded by the
caller. The filesystem objects are still what make the connection: they own
the credential chain, the client session and the event loop.

Create-only writes and retries
------------------------------
Every write carries a random *write id* in the object's user metadata. When a
create-only or version-conditioned write fails with "precondition failed"
after an earlier attempt of the same write may have reached the store (a
timeout, a dropped connection), the store may have applied the first attempt
and is now refusing the second. The layer then reads the object's metadata:
if the write id is ours, the write succeeded and the 412 is ours; otherwise
another writer won and the precondition failure is real.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import os
import random
import threading
import time
import uuid
import weakref
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from trackpoint import _paths
from trackpoint.backends.files import FileLayer, FileSink
from trackpoint.errors import (
    BackendError,
    CheckpointError,
    CheckpointExistsError,
    ConcurrentModificationError,
    ErrorKind,
    StorageError,
    translate_error,
)
from trackpoint.storage import ANY_VERSION, Capabilities, VersionedBytes, _AnyVersion

__all__ = [
    "FILESYSTEM_KINDS",
    "WRITE_ID_METADATA_KEY",
    "Condition",
    "ErrorKind",
    "FsspecFiles",
    "HTTPStatusError",
    "ObjectStat",
    "TransferOptions",
    "filesystem",
]

T = TypeVar("T")

#: User-metadata key holding the id of the write that created an object.
WRITE_ID_METADATA_KEY: Final = "trackpoint-write-id"


_MiB: Final = 1 << 20
_DEFAULT_REQUEST_TIMEOUT: Final = 60.0


class HTTPStatusError(Exception):
    """A non-success HTTP answer from a store spoken to directly (not through a client library)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class _PreconditionFailed(Exception):
    """Internal: a conditional write was refused; the caller decides which error it is."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Condition:
    """Precondition of one write: nothing, create-only, or the object still at ``version``."""

    create_only: bool = False
    version: str | None = None

    @staticmethod
    def from_if_version(if_version: str | _AnyVersion | None) -> Condition:
        if if_version is None:
            return Condition(create_only=True)
        if isinstance(if_version, str):
            return Condition(version=if_version)
        return Condition()


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """What a metadata request tells about one object."""

    size: int
    version: str
    write_id: str | None
    #: Last modification, seconds since the epoch (``None`` if the store did not say).
    mtime: float | None = None


def _number(
    options: Mapping[str, Any], name: str, default: float, *, integer: bool = False, zero_ok: bool = False
) -> Any:
    value = options.get(name, default)
    typed = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not typed or value < 0 or (value == 0 and not zero_ok):
        kind = ("a non-negative" if zero_ok else "a positive") + (" integer" if integer else " number")
        raise BackendError(f"backend_options[{name!r}] must be {kind}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """Tuning of one object-store file layer, read from ``CheckpointOptions.backend_options``.

    Parameters
    ----------
    retries
        Retries after the first attempt of a request that failed transiently
        (5xx, throttling, connection reset, timeout).
    retry_base_delay, retry_max_delay
        Backoff: attempt ``n`` sleeps a uniformly random time in
        ``[0, min(retry_max_delay, retry_base_delay * 2**n)]`` ("full jitter").
    retry_deadline
        No retry starts later than this many seconds after the first attempt.
    request_timeout
        Seconds one request may take before it counts as a transient failure.
    part_size
        Bytes per upload part / chunk; also the most one ``FileSink`` buffers
        beyond the parts in flight.
    max_inflight_parts
        Parts of one upload sent concurrently (memory: ``part_size`` times this, plus one).
    read_part_size
        Ranged reads longer than this are split into parallel requests.
    coalesce_gap
        Ranges of one object at most this many bytes apart are fetched with a
        single request (up to ``read_part_size`` in total).
    max_concurrency
        Requests in flight at once per file layer.
    """

    retries: int = 5
    retry_base_delay: float = 0.1
    retry_max_delay: float = 5.0
    retry_deadline: float = 120.0
    request_timeout: float = _DEFAULT_REQUEST_TIMEOUT
    part_size: int = 16 * _MiB
    max_inflight_parts: int = 4
    read_part_size: int = 64 * _MiB
    coalesce_gap: int = 256 * 1024
    max_concurrency: int = 16

    @classmethod
    def from_backend_options(
        cls, options: Mapping[str, Any], *, min_part_size: int, part_alignment: int
    ) -> TransferOptions:
        """Validate the keys this layer understands; other keys are left to other layers."""
        d = cls()
        part_size = _number(options, "part_size", d.part_size, integer=True)
        if part_size < min_part_size or part_size % part_alignment:
            raise BackendError(
                f"backend_options['part_size'] must be at least {min_part_size} bytes and a multiple of "
                f"{part_alignment}, got {part_size}"
            )
        return cls(
            retries=_number(options, "retries", d.retries, integer=True, zero_ok=True),
            retry_base_delay=float(_number(options, "retry_base_delay", d.retry_base_delay)),
            retry_max_delay=float(_number(options, "retry_max_delay", d.retry_max_delay)),
            retry_deadline=float(_number(options, "retry_deadline", d.retry_deadline)),
            request_timeout=float(_number(options, "request_timeout", d.request_timeout)),
            part_size=part_size,
            max_inflight_parts=_number(options, "max_inflight_parts", d.max_inflight_parts, integer=True),
            read_part_size=_number(options, "read_part_size", d.read_part_size, integer=True),
            coalesce_gap=_number(options, "coalesce_gap", d.coalesce_gap, integer=True, zero_ok=True),
            max_concurrency=_number(options, "max_concurrency", d.max_concurrency, integer=True),
        )


# ---------------------------------------------------------------------------
# Building (and closing) every fsspec filesystem trackpoint uses
# ---------------------------------------------------------------------------

#: Store kinds :func:`filesystem` builds.
FILESYSTEM_KINDS: Final = ("s3", "gcs")


@dataclass(frozen=True, slots=True)
class _Built:
    fs: Any
    kind: str
    #: The loop the filesystem's sessions live on; ``None`` for fsspec's own I/O loop.
    loop: asyncio.AbstractEventLoop | None
    pid: int


_FILESYSTEMS: dict[str, _Built] = {}
_FILESYSTEMS_LOCK = threading.Lock()
_WEAKREF_EXIT_HOOK: list[Any] = []


def filesystem(
    kind: str,
    storage_options: Mapping[str, Any],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    retries: Literal["caller", "library"] = "library",
    request_timeout: float = _DEFAULT_REQUEST_TIMEOUT,
) -> Any:
    """The fsspec filesystem for a store: every fsspec filesystem trackpoint uses is built here.

    The bundle backends (``s3``, ``gcs``) and the Zarr backend on S3/GCS get
    the same filesystem class and settings for the same ``storage_options``:

    * S3: ``s3fs.S3FileSystem``; GCS: ``gcsfs.core.GCSFileSystem``, the JSON
      API client, whatever ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` says. The
      experimental subclass that gcsfs exports by default asks a gRPC control
      API for every bucket's storage layout before the first request and does
      not remember a failed answer: against an emulator or a private endpoint
      (no gRPC there) every operation waits out a 60 s retry budget, and a
      principal without the bucket-level permission for that call pays a
      failed call again on every operation that checks the layout, on real
      GCS too. Zonal (Rapid) buckets,
      which need that layer, are not supported.
    * No listing cache (objects written by other processes are visible at
      once) and no fsspec instance cache (this table is the cache).
    * S3: ``connect_timeout`` and ``read_timeout`` from ``request_timeout``.

    Parameters
    ----------
    kind
        ``"s3"`` or ``"gcs"``.
    storage_options
        Passed to the filesystem unchanged (credentials, ``endpoint_url``,
        ...); they key an in-memory table and are never logged.
    loop
        ``None``: a synchronous filesystem whose requests run on fsspec's I/O
        loop. A loop: an ``asynchronous=True`` filesystem whose sessions live
        on that loop (Zarr's); it must only be awaited there.
    retries
        ``"caller"`` when the caller retries requests itself (the bundle file
        layers): botocore then makes one attempt per request, so attempts do
        not multiply. ``"library"`` keeps the client library's retries.
    request_timeout
        Seconds one request may take.

    Returns
    -------
    Any
        One filesystem per process, kind, options and loop, shared by every
        backend asking for it: a client (credential chain, connection pool)
        costs more than a small save. Its sessions are closed on their own
        loop at interpreter exit, so no "Unclosed client session" warning or
        cross-loop error is printed.
    """
    if kind not in FILESYSTEM_KINDS:
        raise BackendError(f"no fsspec filesystem for store kind {kind!r}; expected one of {FILESYSTEM_KINDS}")
    opts = dict(storage_options)
    opts.update(skip_instance_cache=True, use_listings_cache=False, asynchronous=loop is not None)
    if kind == "s3":
        config = dict(opts.pop("config_kwargs", None) or {})
        config.setdefault("connect_timeout", min(10.0, request_timeout))
        config.setdefault("read_timeout", request_timeout)
        if retries == "caller":
            config.setdefault("retries", {"total_max_attempts": 1})
        opts["config_kwargs"] = config
    # The pid is part of the key: a client's sessions belong to the process
    # (and loop) that made them; a forked child builds its own.
    pid = os.getpid()
    key = json.dumps([pid, kind, id(loop) if loop is not None else None, opts], sort_keys=True, default=repr)
    with _FILESYSTEMS_LOCK:
        built = _FILESYSTEMS.get(key)
        if built is None or built.loop is not loop:
            built = _FILESYSTEMS[key] = _Built(_construct(kind, opts), kind, loop, pid)
            _arm_exit_hook()
        return built.fs


def _construct(kind: str, opts: Mapping[str, Any]) -> Any:
    if kind == "s3":
        import s3fs

        return s3fs.S3FileSystem(**opts)
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(**opts)


def _arm_exit_hook() -> None:
    # atexit runs hooks last-registered first, and this one must run while the
    # loops it closes on still run and before the libraries' own fallbacks:
    # zarr stops its loop in an atexit hook registered when zarr is imported,
    # and s3fs/gcsfs close sessions through weakref.finalize, whose exit hook
    # is registered with the first finalizer of the process (gcsfs's fallback
    # closes a session on fsspec's loop even when it lives on zarr's: "attached
    # to a different loop"). So the weakref hook is made to exist first, and
    # this hook moves behind every hook registered so far on each new build.
    if not _WEAKREF_EXIT_HOOK:
        _WEAKREF_EXIT_HOOK.append(weakref.finalize(_arm_exit_hook, int))
    atexit.unregister(_close_filesystems)
    atexit.register(_close_filesystems)


async def _aclose(built: _Built) -> None:
    # The client objects are private attributes: s3fs and gcsfs have no public
    # "close" that works for asynchronous instances (s3fs registers no
    # finalizer for them at all). Both are read without creating a session.
    if built.kind == "s3":
        client = getattr(built.fs, "_s3", None)
        if client is not None:
            await client.close()
    else:
        session = getattr(built.fs, "_session", None)
        if session is not None and not session.closed:
            await session.close()


def _close_filesystems(timeout: float = 5.0) -> None:
    """Close the sessions of every filesystem :func:`filesystem` built in this process, each on its loop."""
    with _FILESYSTEMS_LOCK:
        built = [b for b in _FILESYSTEMS.values() if b.pid == os.getpid()]
        _FILESYSTEMS.clear()
    for b in built:
        loop = b.loop if b.loop is not None else b.fs.loop
        if loop.is_closed() or not loop.is_running():
            continue  # nothing can run there any more; the process is going away
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_aclose(b), loop).result(timeout)


class FsspecFiles(FileLayer):
    """Object-store file layer built on an fsspec async filesystem.

    Subclasses implement the single-attempt primitives (``_a_*`` methods) and
    :meth:`_classify`; this class adds retries, error translation, streaming
    uploads and parallel reads. Instances are thread-safe: every request runs
    on fsspec's I/O event loop, whatever thread asks.

    Parameters
    ----------
    fs
        The fsspec filesystem (created with ``asynchronous=False``; its
        ``loop`` is where requests run).
    transfer
        Retry and transfer tuning.
    """

    capabilities = Capabilities(
        atomic_rename=False,
        conditional_create=True,
        ranged_reads=True,
        parallel_writes=True,
        listing_consistent=True,
    )
    #: URL schemes this layer accepts (the first is used when building URLs).
    schemes: tuple[str, ...] = ()
    #: Whether upload parts must be sent one after another (GCS resumable uploads).
    sequential_parts: bool = False

    def __init__(self, fs: Any, transfer: TransferOptions) -> None:
        self.fs = fs
        self.transfer = transfer
        self._loop: asyncio.AbstractEventLoop = fs.loop
        self._semaphore: asyncio.Semaphore | None = None
        self._closed = False

    # ------------------------------------------------------------ dialect
    @abstractmethod
    def _classify(self, exc: BaseException) -> ErrorKind:
        """How to treat an exception raised by one of the primitives."""

    @abstractmethod
    async def _a_stat(self, bucket: str, key: str) -> ObjectStat | None:
        """Metadata of an object, ``None`` if absent."""

    @abstractmethod
    async def _a_get_into(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        """Fill ``out`` from ``start``; raise :class:`DataLossError` if the object ends early."""

    @abstractmethod
    async def _a_get_versioned(self, bucket: str, key: str) -> VersionedBytes | None:
        """Whole object and its version, ``None`` if absent."""

    @abstractmethod
    async def _a_put(self, bucket: str, key: str, data: bytes | memoryview, cond: Condition, write_id: str) -> str:
        """One-request upload under ``cond``; return the new version."""

    @abstractmethod
    async def _a_list(self, bucket: str, prefix: str) -> list[str]:
        """Keys directly under ``prefix`` (which ends with ``/`` or is empty)."""

    @abstractmethod
    async def _a_delete(self, bucket: str, keys: Sequence[str]) -> None:
        """Delete keys; missing ones are not an error."""

    @abstractmethod
    async def _a_upload_begin(self, bucket: str, key: str, cond: Condition, write_id: str) -> Any:
        """Start a multipart / resumable upload; return its state."""

    @abstractmethod
    async def _a_upload_part(self, state: Any, number: int, offset: int, data: memoryview, total: int | None) -> Any:
        """Upload part ``number`` (0-based) at ``offset``; ``total`` is set on the last part only."""

    @abstractmethod
    async def _a_upload_finish(self, state: Any, parts: list[Any], total: int) -> str:
        """Complete the upload (the precondition is checked here); return the version."""

    @abstractmethod
    async def _a_upload_abort(self, state: Any) -> None:
        """Discard an unfinished upload."""

    # ------------------------------------------------------------ plumbing
    def split(self, path: str) -> tuple[str, str]:
        """``(bucket, key)`` of ``path`` (``s3://bucket/key`` or ``bucket/key``)."""
        sch, rest = _paths.split_scheme(path)
        if sch and sch not in self.schemes:
            raise BackendError(
                f"{self.store_name} cannot address {path!r}: expected a {self.schemes[0]}:// URL "
                "(choose the backend for this URL with CheckpointOptions(backend=...) or its scheme)"
            )
        bucket, _, key = rest.lstrip("/").partition("/")
        if not bucket:
            raise BackendError(
                f"{self.store_name}: {path!r} names no bucket; write {self.schemes[0]}://<bucket>/<path>"
            )
        return bucket, key

    def url(self, bucket: str, key: str) -> str:
        """``scheme://bucket/key``, for messages."""
        return f"{self.schemes[0]}://{bucket}/{key}"

    def _run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        if self._closed:
            raise StorageError(f"{self.store_name}: the file layer was closed; open the checkpoint again")
        # The coroutine runs on fsspec's loop thread; its exception is re-raised here.
        try:
            return self._submit(fn(*args)).result()
        except _PreconditionFailed as exc:
            # Writes interpret preconditions themselves; this guards every other path.
            raise ConcurrentModificationError(
                f"{self.store_name}: a conditional request was refused ({exc}); re-read and retry"
            ) from exc.cause

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _limit(self) -> asyncio.Semaphore:
        # Created on the loop thread at first use, so it binds to that loop.
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.transfer.max_concurrency)
        return self._semaphore

    def _delay(self, attempt: int) -> float:
        cap = min(self.transfer.retry_max_delay, self.transfer.retry_base_delay * (2**attempt))
        return random.uniform(0.0, cap)

    async def _retry(self, what: str, bucket: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` under the retry policy and translate its errors.

        Precondition failures come back as :class:`_PreconditionFailed` for the
        caller to interpret (create-only vs compare-and-swap).
        """
        t = self.transfer
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                async with self._limit():
                    return await asyncio.wait_for(fn(), timeout=t.request_timeout)
            except (CheckpointError, _PreconditionFailed):
                raise
            except Exception as exc:
                kind = "transient" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else self._classify(exc)
                if kind == "precondition":
                    raise _PreconditionFailed(exc) from exc
                if kind == "transient":
                    elapsed = time.monotonic() - started
                    if attempt < t.retries and elapsed < t.retry_deadline:
                        await asyncio.sleep(min(self._delay(attempt), max(0.0, t.retry_deadline - elapsed)))
                        attempt += 1
                        continue
                raise self._translate(exc, kind, what, bucket, key, attempt + 1) from exc

    def _translate(
        self, exc: BaseException, kind: ErrorKind, what: str, bucket: str, key: str, attempts: int
    ) -> CheckpointError:
        where = self.url(bucket, key)
        # Only the exception's type and the store's reason go into messages,
        # never request headers or options, which may hold credentials.
        reason = f"{type(exc).__name__}: {exc}"[:300]
        if kind == "not_found":
            message = f"{self.store_name}: {what} {where!r} failed: it does not exist ({reason})"
        elif kind == "permission":
            message = (
                f"{self.store_name}: {what} {where!r} was refused ({reason}); check the credentials and the "
                f"permissions on bucket {bucket!r}"
            )
        elif kind == "range":
            message = f"{self.store_name}: {what} {where!r}: the object is shorter than expected ({reason})"
        elif kind == "transient":
            message = (
                f"{self.store_name}: {what} {where!r} still failed after {attempts} attempts ({reason}); the store "
                f"may be overloaded or unreachable: retry later or raise backend_options['retries']"
            )
        else:
            message = f"{self.store_name}: {what} {where!r} failed ({reason})"
        return translate_error(kind, message, url=where, key=key)

    # ------------------------------------------------------------ writes
    async def _settled_by_us(self, bucket: str, key: str, write_id: str) -> ObjectStat | None:
        """The object's stat if it carries ``write_id`` (an earlier attempt of ours landed)."""
        stat = await self._retry("inspecting", bucket, key, lambda: self._a_stat(bucket, key))
        return stat if stat is not None and stat.write_id == write_id else None

    def _conflict(self, bucket: str, key: str, cond: Condition, exc: _PreconditionFailed) -> CheckpointError:
        where = self.url(bucket, key)
        if cond.create_only:
            message = (
                f"{self.store_name}: {where!r} already exists (another writer created it first); "
                "choose another path or delete it first"
            )
        else:
            message = (
                f"{self.store_name}: {where!r} changed since version {cond.version} was read; re-read it and retry"
            )
        return translate_error("precondition", message, url=where, key=key, create_only=cond.create_only)

    async def _a_put_checked(self, bucket: str, key: str, data: bytes | memoryview, cond: Condition) -> str:
        write_id = uuid.uuid4().hex
        try:
            return await self._retry("writing", bucket, key, lambda: self._a_put(bucket, key, data, cond, write_id))
        except _PreconditionFailed as exc:
            mine = await self._settled_by_us(bucket, key, write_id)
            if mine is not None:
                return mine.version
            raise self._conflict(bucket, key, cond, exc) from exc.cause

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        bucket, key = self.split(path)
        return _UploadSink(self, bucket, key, Condition(create_only=create_only))

    def put(self, path: str, data: bytes | bytearray | memoryview, *, create_only: bool = False) -> None:
        bucket, key = self.split(path)
        view = memoryview(data).cast("B")
        if view.nbytes <= self.transfer.part_size:
            self._run(self._a_put_checked, bucket, key, view, Condition(create_only=create_only))
            return
        super().put(path, view, create_only=create_only)

    def write_versioned(self, path: str, data: bytes, *, if_version: str | _AnyVersion | None = ANY_VERSION) -> str:
        bucket, key = self.split(path)
        cond = Condition.from_if_version(if_version)
        try:
            return self._run(self._a_put_checked, bucket, key, bytes(data), cond)
        except CheckpointExistsError as exc:
            # A create-only small-file write that lost: for small files that is a lost race.
            raise ConcurrentModificationError(
                f"{self.store_name}: {self.url(bucket, key)!r} exists already (create-only write lost a race); "
                "re-read it and retry"
            ) from exc

    def delete(self, paths: Sequence[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for p in paths:
            b, k = self.split(p)
            by_bucket.setdefault(b, []).append(k)

        for bucket, keys in by_bucket.items():
            self._run(self._a_delete_retrying, bucket, keys)

    async def _a_delete_retrying(self, bucket: str, keys: list[str]) -> None:
        await self._retry("deleting", bucket, keys[0], lambda: self._a_delete(bucket, keys))

    # ------------------------------------------------------------ reads
    def size(self, path: str) -> int | None:
        bucket, key = self.split(path)
        stat = self._run(lambda: self._retry("reading metadata of", bucket, key, lambda: self._a_stat(bucket, key)))
        return None if stat is None else stat.size

    def modified(self, path: str) -> float | None:
        """Last modification from the object's metadata (S3 ``LastModified``, GCS ``updated``)."""
        bucket, key = self.split(path)
        if not key:
            return None
        stat = self._run(lambda: self._retry("reading metadata of", bucket, key, lambda: self._a_stat(bucket, key)))
        # Object stores have no directories: a "directory" has no time of its own.
        return None if stat is None else stat.mtime

    def read_versioned(self, path: str) -> VersionedBytes | None:
        bucket, key = self.split(path)
        return self._run(lambda: self._retry("reading", bucket, key, lambda: self._a_get_versioned(bucket, key)))

    def _plan_reads(
        self, ranges: Sequence[tuple[int, memoryview]]
    ) -> list[tuple[int, int, list[tuple[int, memoryview]]]]:
        """Group ranges into requests ``(start, length, [(offset, view), ...])``.

        Small ranges that lie close together share one GET (a request costs
        far more than the bytes of a small gap); a range longer than
        ``read_part_size`` is split into parts fetched in parallel, each
        straight into its slice of the destination.
        """
        t = self.transfer
        pieces: list[tuple[int, memoryview]] = []
        for offset, out in ranges:
            view = out.cast("B") if out.format != "B" or out.ndim != 1 else out
            for lo in range(0, view.nbytes, t.read_part_size):
                pieces.append((offset + lo, view[lo : lo + t.read_part_size]))
        pieces.sort(key=lambda p: p[0])
        plan: list[tuple[int, int, list[tuple[int, memoryview]]]] = []
        for offset, view in pieces:
            if plan:
                start, length, members = plan[-1]
                end = start + length
                new_end = max(end, offset + view.nbytes)
                if offset - end <= t.coalesce_gap and new_end - start <= t.read_part_size:
                    plan[-1] = (start, new_end - start, [*members, (offset, view)])
                    continue
            plan.append((offset, view.nbytes, [(offset, view)]))
        return plan

    async def _a_read_group(
        self, bucket: str, key: str, start: int, length: int, members: list[tuple[int, memoryview]]
    ) -> None:
        if len(members) == 1:
            view = members[0][1]
            await self._retry("reading", bucket, key, lambda: self._a_get_into(bucket, key, start, view))
            return
        # Several small ranges: one GET into a scratch buffer, then scatter.
        span = bytearray(length)
        await self._retry("reading", bucket, key, lambda: self._a_get_into(bucket, key, start, memoryview(span)))
        for offset, view in members:
            view[:] = span[offset - start : offset - start + view.nbytes]

    async def _a_read_ranges(self, bucket: str, key: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        jobs = [self._a_read_group(bucket, key, *group) for group in self._plan_reads(ranges)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        self.read_ranges(path, [(offset, out)])

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        bucket, key = self.split(path)
        if any(out.nbytes for _, out in ranges):
            self._run(self._a_read_ranges, bucket, key, ranges)

    def listdir(self, directory: str) -> list[str]:
        bucket, key = self.split(directory)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        keys = self._run(lambda: self._retry("listing", bucket, prefix, lambda: self._a_list(bucket, prefix)))
        return sorted(k[len(prefix) :] for k in keys if k != prefix)

    def join(self, directory: str, name: str) -> str:
        return _paths.join(directory, name)

    def close(self) -> None:
        # The filesystem is shared by every layer on the same store (see
        # filesystem()); its session is closed at interpreter exit. Only this
        # layer stops accepting work.
        self._closed = True


class _UploadSink(FileSink):
    """A streaming upload: one request if small, else parts with bounded memory.

    Data is buffered up to ``part_size``. The first full part starts a
    multipart (S3) or resumable (GCS) upload and is sent in the background
    while the caller keeps writing; at most ``max_inflight_parts`` parts are
    in flight (one for stores whose parts must be sequential), so memory stays
    below ``part_size * (max_inflight_parts + 1)``.
    """

    def __init__(self, layer: FsspecFiles, bucket: str, key: str, cond: Condition) -> None:
        self._layer = layer
        self._bucket = bucket
        self._key = key
        self._cond = cond
        self._write_id = uuid.uuid4().hex
        self._buf = bytearray()
        self._offset = 0
        self._state: Any = None
        self._parts: list[concurrent.futures.Future[Any]] = []
        self._lock = threading.Lock()
        self._done = False
        self.version: str | None = None

    def _part_size(self) -> int:
        # S3 allows 10,000 parts: double the part size every 1,000 parts so any
        # object up to S3's 5 TiB limit fits (also harmless on GCS).
        base = self._layer.transfer.part_size
        return int(base * (2 ** (len(self._parts) // 1000)))

    def _where(self) -> str:
        return self._layer.url(self._bucket, self._key)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self._done:
                raise StorageError(f"{self._layer.store_name}: write to {self._where()!r} after close/abort")
            view = memoryview(data).cast("B")
            pos = 0
            while pos < view.nbytes:
                room = self._part_size() - len(self._buf)
                take = min(room, view.nbytes - pos)
                self._buf += view[pos : pos + take]
                pos += take
                if len(self._buf) >= self._part_size():
                    self._send_part(total=None)

    def _send_part(self, total: int | None) -> None:
        layer = self._layer
        if self._state is None:
            self._state = layer._run(self._begin)
        limit = 1 if layer.sequential_parts else layer.transfer.max_inflight_parts
        pending = [f for f in self._parts if not f.done()]
        while len(pending) >= limit:
            pending[0].result()  # surfaces a failed part now rather than at close
            pending = [f for f in self._parts if not f.done()]
        for f in self._parts:
            if f.done():
                f.result()
        data, self._buf = memoryview(self._buf), bytearray()
        number, offset = len(self._parts), self._offset
        self._offset += data.nbytes
        state = self._state
        fut = layer._submit(
            layer._retry(
                f"uploading part {number} of",
                self._bucket,
                self._key,
                lambda: layer._a_upload_part(state, number, offset, data, total),
            )
        )
        self._parts.append(fut)

    def close(self) -> None:
        with self._lock:
            if self._done:
                return
            layer = self._layer
            try:
                if self._state is None:
                    self.version = layer._run(
                        layer._a_put_checked, self._bucket, self._key, memoryview(self._buf), self._cond
                    )
                else:
                    total = self._offset + len(self._buf)
                    self._send_part(total=total)
                    parts = [f.result() for f in self._parts]
                    self.version = layer._run(self._finish, parts, total)
            except BaseException:
                self._abort_locked()
                raise
            self._done = True
            self._buf = bytearray()

    async def _begin(self) -> Any:
        layer = self._layer
        try:
            return await layer._retry(
                "starting an upload of",
                self._bucket,
                self._key,
                lambda: layer._a_upload_begin(self._bucket, self._key, self._cond, self._write_id),
            )
        except _PreconditionFailed as exc:
            # A store may check the precondition as early as the start of the
            # upload; nothing of ours exists yet, so it is always a conflict.
            raise layer._conflict(self._bucket, self._key, self._cond, exc) from exc.cause

    async def _finish(self, parts: list[Any], total: int) -> str:
        layer = self._layer
        try:
            return await layer._retry(
                "completing the upload of",
                self._bucket,
                self._key,
                lambda: layer._a_upload_finish(self._state, parts, total),
            )
        except _PreconditionFailed as exc:
            mine = await layer._settled_by_us(self._bucket, self._key, self._write_id)
            if mine is not None:
                return mine.version
            raise layer._conflict(self._bucket, self._key, self._cond, exc) from exc.cause

    def _abort_locked(self) -> None:
        self._done = True
        self._buf = bytearray()
        # Let parts already sent finish (each is bounded by the request timeout
        # and the retry deadline) instead of cancelling them: cancelling a
        # run_coroutine_threadsafe future marks it done at once while its
        # request may still be in flight, and a part that lands after the abort
        # request can leave the multipart upload behind.
        concurrent.futures.wait(self._parts)
        state, self._state = self._state, None
        if state is not None:
            try:
                self._layer._run(self._layer._a_upload_abort, state)
            except Exception:  # noqa: BLE001 - best effort; the store expires abandoned uploads
                pass

    def abort(self) -> None:
        with self._lock:
            if not self._done:
                self._abort_locked()
