"""The public base of object stores: :class:`ObjectStore`.

A store for a new kind of object storage subclasses :class:`ObjectStore` and
supplies a few single-attempt *client calls* (stat, ranged get, get, put
under a :class:`Condition`, list, delete, and optionally multipart uploads)
plus :meth:`ObjectStore.classify`, which says what an exception of its client
means. It inherits everything a safe checkpoint store needs on top of them:

* retries of transient failures with full-jitter backoff, bounded by a
  deadline (:class:`TransferOptions`);
* translation of the client's exceptions into trackpoint errors that name
  the store, the URL and what to do;
* recognising its own retried write: every write carries a random *write id*
  in the object's user metadata (:data:`WRITE_ID_METADATA_KEY`). When a
  create-only or version-conditioned write fails with "precondition failed"
  after an earlier attempt of the same write may have reached the store (a
  timeout, a dropped connection), the base reads the object's metadata: if
  the write id is ours, the write succeeded; otherwise another writer won;
* bounded-memory streaming uploads (multipart when the store has it);
* a short, shared budget for the clean-up after a failed save, and for the
  housekeeping after a commit once one of its requests has given up
  (:meth:`ObjectStore.cleaning_up`), so that a store that stopped answering
  is not waited for once more per clean-up step;
* listing and aborting unfinished uploads for ``cleanup`` (when the store
  can list them);
* coalesced, parallel ranged reads straight into the caller's buffers;
* thread safety: requests run on one event loop whatever thread asks.

Client calls may be coroutine functions (``async def``, for asynchronous
clients) or plain functions (for synchronous SDKs); plain ones run in a
thread pool owned by the store, as large as ``TransferOptions.max_concurrency``.

The built-in S3 and GCS stores (:mod:`trackpoint.backends.stores.s3`,
:mod:`trackpoint.backends.stores.gcs`) are subclasses; so is any third-party
object store. ``docs/writing-a-backend.md`` walks through one.

Why not fsspec's high-level API (``pipe_file``, ``cat_file``, ``open``) for
S3 and GCS? It cannot express the preconditions a safe commit needs
(create-only multipart uploads, compare-and-swap on ETag or generation), it
reads into fresh ``bytes`` rather than into a destination buffer, and its
retries (gcsfs sleeps up to 32 s; s3fs retries a fixed list) cannot be
bounded by the caller. The filesystem objects still make the connection:
they own the credential chain, the client session and the event loop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, TypeVar

from trackpoint import _paths
from trackpoint.backends.stores._base import (
    OBJECT_STORE_CAPABILITIES,
    FileLayer,
    FileSink,
    UnfinishedUpload,
    takes_keyword,
)
from trackpoint.backends.stores._fsspec import DEFAULT_REQUEST_TIMEOUT
from trackpoint.errors import (
    REDACTED,
    BackendError,
    BackendOptionError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    ErrorKind,
    InvalidArgumentError,
    StorageError,
    StoragePermissionError,
    redact,
    translate_error,
)
from trackpoint.storage import (
    ANY_VERSION,
    MUST_NOT_EXIST,
    Capabilities,
    CheckpointOptions,
    VersionCondition,
    VersionedBytes,
    version_condition,
)

if TYPE_CHECKING:
    # Imported where used: plugin hosts import store modules to register backends, also for saves that
    # never touch the network, and asyncio (with ssl) is most of what importing them would cost.
    import asyncio

__all__ = [
    "WRITE_ID_METADATA_KEY",
    "Condition",
    "ErrorKind",
    "HTTPStatusError",
    "ObjectStat",
    "ObjectStore",
    "TransferOptions",
    "UploadStat",
]

T = TypeVar("T")

_log = logging.getLogger(__name__)

#: User-metadata key holding the id of the write that created an object.
WRITE_ID_METADATA_KEY: Final = "trackpoint-write-id"

# ErrorKind (what an exception of a store's client means, see ObjectStore.classify) is defined with the
# table that maps it to trackpoint errors, in trackpoint.errors; re-exported here for store authors.

_MiB: Final = 1 << 20
#: Bytes an upload's first full part waits for behind it at least, whatever the store's smallest part: a
#: part's worth of data with a small trailer (a Zarr chunk's 4-byte checksum) then still goes in one request
#: on stores whose parts may be tiny (Azure blocks), where it would otherwise take three.
_HOLD_BACK: Final = 64 << 10
#: Merged reads (scratch buffers of up to ``read_part_size``) in flight at once per store.
_SCRATCH_BUFFERS: Final = 2
#: The most seconds a clean-up (after a failed save, or a commit) gets by default (TransferOptions.cleanup_deadline).
_CLEANUP_CAP: Final = 10.0


class HTTPStatusError(Exception):
    """A non-success HTTP answer from a store spoken to directly (not through a client library).

    Client calls that speak HTTP themselves may raise it and classify it by
    ``status`` in :meth:`ObjectStore.classify`.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class _PreconditionFailed(Exception):
    """Internal: a conditional write was refused; the caller decides which error it is."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _NotAnException(Exception):
    """Internal: a client call raised a ``BaseException`` that is no ``Exception``; see ``ObjectStore._call``."""

    def __init__(self, call: str, cause: BaseException) -> None:
        super().__init__(f"{call} raised {type(cause).__name__}")
        self.call = call
        self.cause = cause


class _CreateOnly:
    """``Condition.create_only()`` on the class, the ``create_only`` flag on an instance."""

    def __get__(self, instance: Condition | None, owner: type[Condition]) -> Any:
        if instance is None:
            return owner._make_create_only
        return instance._create_only


class Condition:
    """Precondition of one write: none, create-only, or "the object is still at this version".

    Build one with :data:`Condition.NONE`, :meth:`Condition.create_only` or
    :meth:`Condition.if_version`; read it through :attr:`create_only` and
    :attr:`version`. Immutable and hashable.

    Attributes
    ----------
    create_only : bool
        The write must fail if the object exists (S3 ``If-None-Match: *``,
        GCS ``ifGenerationMatch=0``, Azure ``If-None-Match: *``). On the
        class, ``Condition.create_only()`` returns such a condition.
    version : str or None
        The write must fail unless the object is at this version (an ETag or
        generation as :meth:`ObjectStore.object_stat` reports it).
    """

    __slots__ = ("_create_only", "version")

    #: No precondition (a plain overwrite). Set below the class.
    NONE: ClassVar[Condition]

    # One name serves both spellings of the design: a factory on the class and
    # a flag on an instance, so a store reads ``cond.create_only`` and a caller
    # writes ``Condition.create_only()``.
    create_only: ClassVar[Any] = _CreateOnly()
    _create_only: bool
    version: str | None

    def __init__(self, *, create_only: bool = False, version: str | None = None) -> None:
        if create_only and version is not None:
            raise ValueError("a condition is create-only or on a version, not both")
        object.__setattr__(self, "_create_only", bool(create_only))
        object.__setattr__(self, "version", version)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Condition is immutable; build a new one instead of setting {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Condition):
            return NotImplemented
        return (self._create_only, self.version) == (other._create_only, other.version)

    def __hash__(self) -> int:
        return hash((self._create_only, self.version))

    def __repr__(self) -> str:
        if self._create_only:
            return "Condition.create_only()"
        if self.version is not None:
            return f"Condition.if_version({self.version!r})"
        return "Condition.NONE"

    @classmethod
    def _make_create_only(cls) -> Condition:
        return cls(create_only=True)

    @classmethod
    def if_version(cls, version: str) -> Condition:
        """The write succeeds only while the object is at ``version``."""
        return cls(version=version)

    @classmethod
    def from_if_version(cls, if_version: VersionCondition) -> Condition:
        """The condition of a ``write_file``/``write_versioned`` precondition."""
        if if_version is MUST_NOT_EXIST:
            return cls(create_only=True)
        if isinstance(if_version, str):
            return cls(version=if_version)
        return cls.NONE


Condition.NONE = Condition()


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """What a metadata request tells about one object.

    Parameters
    ----------
    size
        Bytes in the object.
    version
        The token conditional writes compare against (S3 ETag, GCS
        generation, Azure ETag).
    write_id
        The object's :data:`WRITE_ID_METADATA_KEY` user metadata, ``None``
        if it has none.
    mtime
        Last modification, seconds since the epoch; ``None`` if the store
        did not say (then age-based cleanup keeps the object).
    """

    size: int
    version: str
    write_id: str | None
    mtime: float | None = None


@dataclass(frozen=True, slots=True)
class UploadStat:
    """What a listing of unfinished uploads tells about one (:meth:`ObjectStore.upload_list`).

    Parameters
    ----------
    key
        The object the upload was to create.
    upload_id
        The store's id of the upload (several may target one key).
    state
        What :meth:`ObjectStore.upload_abort` takes to abort it, as
        :meth:`ObjectStore.upload_begin` would have returned it.
    started
        When the upload was started, seconds since the epoch; ``None`` if
        the store did not say.
    modified
        When it last received a part (its start if none), seconds since the
        epoch; ``None`` if the store did not say (then age-based cleanup
        keeps it: it may belong to a save still sending parts).
    size
        Bytes in the parts received so far; ``None`` if unknown.
    """

    key: str
    upload_id: str
    state: Any
    started: float | None = None
    modified: float | None = None
    size: int | None = None


def _number(
    options: Mapping[str, Any], name: str, default: float, *, integer: bool = False, zero_ok: bool = False
) -> Any:
    value = options.get(name, default)
    typed = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not typed or value < 0 or (value == 0 and not zero_ok):
        kind = ("a non-negative" if zero_ok else "a positive") + (" integer" if integer else " number")
        raise BackendOptionError(f"backend_options[{name!r}] must be {kind}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """Tuning of one object store, read from ``CheckpointOptions.backend_options``.

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
        beyond the parts in flight. Read from options, the default is the
        store's :attr:`ObjectStore.default_part_size`.
    max_inflight_parts
        Parts of one upload sent concurrently (memory: ``part_size`` times this, plus one).
    read_part_size
        Ranged reads longer than this are split into parallel requests.
    coalesce_gap
        Ranges of one object at most this many bytes apart are fetched with a
        single request (up to ``read_part_size`` in total).
    max_concurrency
        Requests in flight at once per store (also the size of the thread
        pool that runs synchronous client calls).
    cleanup_deadline
        Seconds the clean-up after a failed save gets in all (aborting its
        uploads, removing what it wrote; see :meth:`ObjectStore.cleaning_up`),
        and so do the steps of the housekeeping after a commit (removing the
        save's staging objects and the data of the checkpoint it replaced)
        that follow a step whose request used up its retries (until then
        the housekeeping has the store's usual retries and timeouts),
        counted from the last request that used up its retries on a transient
        failure (the store stopped answering), else from the clean-up's
        start. Clean-up is best effort: what it does not remove in that time,
        ``cleanup(directory)`` removes later. ``None`` (the default):
        ``request_timeout``, at most 10 s; read it as :attr:`cleanup_budget`.
    """

    retries: int = 5
    retry_base_delay: float = 0.1
    retry_max_delay: float = 5.0
    retry_deadline: float = 120.0
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    part_size: int = 16 * _MiB
    max_inflight_parts: int = 4
    read_part_size: int = 64 * _MiB
    coalesce_gap: int = 256 * 1024
    max_concurrency: int = 16
    cleanup_deadline: float | None = None

    @property
    def cleanup_budget(self) -> float:
        """Seconds a clean-up (after a failed save, or a commit) gets: ``cleanup_deadline``, or its default."""
        if self.cleanup_deadline is not None:
            return self.cleanup_deadline
        # One request's worth: a store that answers cleans up in a fraction of a second, and one that
        # stopped answering has already had its retry deadline; a slow link's longer request_timeout
        # should not make a dead store's clean-up longer than 10 s.
        return min(self.request_timeout, _CLEANUP_CAP)

    @classmethod
    def names(cls) -> frozenset[str]:
        """The ``backend_options`` keys this layer reads."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_backend_options(
        cls,
        options: Mapping[str, Any],
        *,
        min_part_size: int = 5 * _MiB,
        part_alignment: int = 1,
        default_part_size: int | None = None,
    ) -> TransferOptions:
        """Validate the keys this layer understands; other keys are left to other layers.

        ``default_part_size`` is used when ``options`` has no ``part_size``
        (each store chooses its own: see :attr:`ObjectStore.default_part_size`;
        ``None``: this class's default).

        Raises
        ------
        BackendOptionError
            A value has the wrong type or range (the message names the key).
        """
        d = cls()
        part_size = _number(
            options, "part_size", d.part_size if default_part_size is None else default_part_size, integer=True
        )
        if part_size < min_part_size or part_size % part_alignment:
            raise BackendOptionError(
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
            cleanup_deadline=(
                float(_number(options, "cleanup_deadline", _CLEANUP_CAP))
                if options.get("cleanup_deadline") is not None
                else None
            ),
        )


def _body_bytes(data: bytes | memoryview) -> bytes:
    """``data`` as ``bytes`` for a request body, copied only when it is not already a whole ``bytes`` object.

    Upload parts reach :meth:`ObjectStore.upload_part` as views of whole
    ``bytes`` objects, so stores whose clients want ``bytes`` send them without
    another copy.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data.obj, bytes) and data.nbytes == len(data.obj):
        return data.obj
    return bytes(data)


# ---------------------------------------------------------------------------
# trackpoint's own I/O loop, for stores that bring no loop of their own
# ---------------------------------------------------------------------------


class _IOLoop:
    """trackpoint's I/O loop of one process, and the requests waiting on it (their futures, by store name)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = os.getpid()
        self.loop = loop
        self.waiting: dict[concurrent.futures.Future[Any], str] = {}


_IO_LOCK = threading.Lock()
_IO_LOOP: _IOLoop | None = None


def _io_loop() -> _IOLoop:
    """The process-wide event loop thread of stores built without a loop; started on first use.

    A forked child gets a new one: the parent's loop thread does not exist in it.
    So does a process whose loop thread ended (see :func:`_serve`).
    """
    with _IO_LOCK:
        return _io_loop_locked()


def _io_loop_locked() -> _IOLoop:
    import asyncio

    global _IO_LOOP
    io = _IO_LOOP
    if io is not None and io.pid == os.getpid() and not io.loop.is_closed():
        return io
    io = _IOLoop(asyncio.new_event_loop())
    started = threading.Event()
    # A daemon thread: an idle loop must not keep the interpreter alive.
    threading.Thread(target=_serve, args=(io, started), name="trackpoint-io", daemon=True).start()
    started.wait()
    _IO_LOOP = io
    return io


def _io_submit(coro: Coroutine[Any, Any, T], store_name: str) -> concurrent.futures.Future[T]:
    """Run ``coro`` on trackpoint's I/O loop; its future fails, rather than waits for ever, if the loop ends first."""
    import asyncio

    with _IO_LOCK:
        # Under the lock the ending loop takes (_io_loop_ended): a request is either submitted to a loop
        # that has not ended, and known to it when it ends, or to a new loop.
        io = _io_loop_locked()
        fut = asyncio.run_coroutine_threadsafe(coro, io.loop)
        io.waiting[fut] = store_name
    fut.add_done_callback(lambda done: io.waiting.pop(done, None))
    return fut


def _serve(io: _IOLoop, started: threading.Event) -> None:
    """The I/O thread: run ``io.loop`` until it is stopped, then fail the requests still waiting on it."""
    import asyncio

    loop = io.loop
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        while True:
            try:
                loop.run_forever()
            except (KeyboardInterrupt, SystemExit):
                # The only exceptions asyncio lets out of the loop (the task that raised one keeps it as its
                # result: its request fails with it). ObjectStore._call stops a client call's, so a store's own
                # code on the loop (classify, a hook) raised it; the thread is every store's, and goes on.
                _log.warning("an exception left trackpoint's I/O loop; the loop goes on", exc_info=True)
            else:
                return  # stopped: nothing of trackpoint's stops it, but whoever did meant it to end
    finally:
        _io_loop_ended(io)


def _io_loop_ended(io: _IOLoop) -> None:
    """Fail the requests waiting on ``io``, whose thread ends; later ones start a new loop."""
    global _IO_LOOP
    with _IO_LOCK:
        if _IO_LOOP is io:
            _IO_LOOP = None
        waiting = list(io.waiting.items())
        io.waiting.clear()
    for fut, store_name in waiting:
        error = StorageError(
            f"{store_name}: trackpoint's I/O thread (trackpoint-io) ended before a request of this store did; the "
            "request may or may not have reached the store. Retry the operation: later requests start a new "
            "I/O thread"
        )
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # it ended meanwhile after all
            fut.set_exception(error)
    io.loop.close()


#: What the writing requests are called in messages (see ObjectStore._translate).
_WRITES: Final = frozenset({"writing", "starting an upload of", "completing the upload of"})

#: The client calls a store may write as ``async def`` or as plain functions.
_CLIENT_CALLS: Final = (
    "object_stat",
    "object_get_range",
    "object_get_range_vectored",
    "object_get",
    "object_put",
    "object_list",
    "object_find",
    "object_delete",
    "upload_begin",
    "upload_part",
    "upload_finish",
    "upload_abort",
    "upload_list",
)

#: The clean-up budget of the requests made in a :meth:`ObjectStore.cleaning_up` block: the store and
#: the deadline (``time.monotonic``) its requests must end by. A context variable, not a thread-local:
#: the block is entered in the caller's thread and its requests run as tasks on the store's loop.
_CLEANUP: contextvars.ContextVar[tuple[ObjectStore, float] | None] = contextvars.ContextVar(
    "trackpoint_cleanup", default=None
)


class ObjectStore(FileLayer):
    """Public base of object stores: subclass it, supply the client calls, inherit the rest.

    Paths are URLs ``<scheme>://<bucket>/<key>`` (or ``<bucket>/<key>``);
    :meth:`split` and :meth:`url` convert, driven by :attr:`schemes`.

    Parameters
    ----------
    transfer
        Retry and transfer tuning; ``None`` takes the defaults. Stores built
        by :meth:`from_options` read it from ``backend_options``.
    loop
        The event loop requests run on. ``None``: trackpoint's own process-wide
        I/O loop thread (started on first use, re-created in a forked child or if it ended).
        Stores whose client sessions belong to a loop (fsspec filesystems:
        ``fs.loop``) pass that loop.

    Notes for implementers
    ----------------------
    Required: :meth:`classify`, :meth:`object_stat`, :meth:`object_get_range`,
    :meth:`object_get`, :meth:`object_put`, :meth:`object_list`,
    :meth:`object_delete`. Optional: :meth:`object_get_range_vectored` (one
    ranged read into several buffers; without it nearby small ranges are
    read into a scratch buffer and copied out), :meth:`object_find` (nested
    listing, for :meth:`find` and :meth:`rmtree`), the four ``upload_*`` calls (streaming
    multipart uploads; without them a sink buffers the whole object and sends
    it in one :meth:`object_put`, fine for small checkpoints),
    :meth:`upload_list` (unfinished uploads, so that ``cleanup`` can abort
    those a killed save left; without it none are reported), :meth:`aclose`
    or :meth:`close_client` (release clients on :meth:`close`),
    :meth:`explain_error` (store-specific advice in error messages),
    :meth:`describe_error` (how messages quote the client's exceptions).

    Each client call makes **one attempt** and raises its client's own
    exceptions; :meth:`classify` tells the base which are transient (retried)
    and which mean "not found", "precondition failed", "permission denied",
    "range not satisfiable". Never catch and retry inside a client call.

    Instances are thread-safe.
    """

    #: Name of the store in messages ("s3", "gcs", "azure").
    store_name: str = "objects"
    #: URL schemes the store accepts; the first one is used to build URLs.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Declared abilities; object stores have conditional create but no atomic rename.
    capabilities: Capabilities = OBJECT_STORE_CAPABILITIES
    #: Whether upload parts must be sent one after another, in order (GCS resumable uploads).
    sequential_parts: ClassVar[bool] = False
    #: Smallest ``part_size`` the store accepts for all but the last part.
    min_part_size: ClassVar[int] = 5 * _MiB
    #: ``part_size`` must be a multiple of this.
    part_alignment: ClassVar[int] = 1
    #: ``part_size`` when the options give none.
    default_part_size: ClassVar[int] = TransferOptions().part_size
    #: ``backend_options`` keys the store reads itself, beyond :class:`TransferOptions` (in its own
    #: :meth:`from_options`); the formats refuse any key neither names.
    extra_backend_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, transfer: TransferOptions | None = None, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.transfer = transfer if transfer is not None else type(self).transfer_options(CheckpointOptions())
        self._given_loop = loop
        self._semaphore: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._scratch: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
        self._pool_lock = threading.Lock()
        self._closed = False
        cls = type(self)
        # Checked once per class and method: coroutine functions are awaited
        # on the loop, plain functions run in the store's thread pool.
        self._is_async = {name: inspect.iscoroutinefunction(getattr(cls, name)) for name in _CLIENT_CALLS}
        self._multipart = cls.upload_begin is not ObjectStore.upload_begin
        self._lists_uploads = cls.upload_list is not ObjectStore.upload_list
        # When a request last used up its retries on a transient failure, while no request has succeeded
        # since (time.monotonic()); the clean-up after that failure counts its budget from here.
        self._gave_up_at: float | None = None
        self._vectored = cls.object_get_range_vectored is not ObjectStore.object_get_range_vectored
        # Buckets a listing or a write of this store has reached: a later read that finds nothing there
        # missed an object, not the bucket, and needs no request to tell which (see _bucket_missing).
        self._live_buckets: set[str] = set()
        # Per bucket, the store's advice on a "not found" answer that did not come from the store it should
        # be (explain_error: a wrong endpoint answering 404 to everything), worded instead of a missing bucket.
        self._bucket_advice: dict[str, str] = {}

    @classmethod
    def from_options(cls, options: CheckpointOptions) -> ObjectStore:
        """A store configured by ``options``; what a backend factory calls.

        The default passes :meth:`transfer_options` to a constructor taking
        only ``transfer``. Stores that need credentials or clients override
        it and read ``options.storage_options``.
        """
        return cls(cls.transfer_options(options))

    def backend_option_names(self) -> frozenset[str]:
        """The ``backend_options`` keys the store takes: :class:`TransferOptions`' and :attr:`extra_backend_options`."""
        return TransferOptions.names() | type(self).extra_backend_options

    @classmethod
    def transfer_options(cls, options: CheckpointOptions) -> TransferOptions:
        """The :class:`TransferOptions` in ``options.backend_options``, checked against this store's part rules."""
        return TransferOptions.from_backend_options(
            options.backend_options,
            min_part_size=cls.min_part_size,
            part_alignment=cls.part_alignment,
            default_part_size=cls.default_part_size,
        )

    # ------------------------------------------------------------ client calls (required)
    def classify(self, exc: BaseException) -> ErrorKind:
        """What an exception raised by a client call means.

        Return ``"transient"`` for failures worth retrying (5xx, throttling,
        timeouts, dropped connections), ``"not_found"`` (404, missing bucket),
        ``"precondition"`` (a conditional write refused: 412 or the store's
        equivalent), ``"permission"`` (401/403, or no credentials to sign the
        request with), ``"range"`` (416) and
        ``"other"`` for the rest (raised as :class:`~trackpoint.errors.StorageError`).
        Timeouts of the request itself are always transient.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement classify()")

    def object_stat(self, bucket: str, key: str) -> ObjectStat | Awaitable[ObjectStat | None] | None:
        """Metadata of one object; ``None`` when it does not exist (no exception for that)."""
        raise NotImplementedError(f"{type(self).__name__} must implement object_stat()")

    def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> Awaitable[None] | None:
        """Fill ``out`` (a writable byte view) with the object's bytes from ``start`` on.

        Raise :class:`~trackpoint.errors.DataLossError` when the object ends
        before ``out`` is full; raise the client's not-found error for a
        missing object.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement object_get_range()")

    def object_get_range_vectored(
        self, bucket: str, key: str, start: int, outs: Sequence[memoryview]
    ) -> Awaitable[None] | None:
        """Optional: fill the views of ``outs`` one after another with the object's bytes from ``start`` on.

        One request for all of them, as :meth:`object_get_range` for one
        view (and with its errors): a vectored read, as ``preadv``. The base
        uses it for nearby ranges that share a request, so their bytes go
        straight into the destination arrays, without a scratch buffer of the
        request's size and a copy out of it. Stream the response into the
        views: :func:`fill_views` does that for a client whose body has an
        async ``read(n)``, :func:`fill_views_from` for one that iterates
        over chunks.
        """
        raise NotImplementedError(f"{type(self).__name__} has no vectored reads")

    def object_get(self, bucket: str, key: str) -> VersionedBytes | Awaitable[VersionedBytes | None] | None:
        """The whole object and its version, read together; ``None`` when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} must implement object_get()")

    def object_put(
        self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str
    ) -> str | Awaitable[str]:
        """Write a whole object in one request under ``condition``; return its new version.

        Store ``write_id`` as user metadata under :data:`WRITE_ID_METADATA_KEY`,
        so that :meth:`object_stat` reports it. ``condition.create_only``:
        fail if the object exists; ``condition.version``: fail unless the
        object is at that version, *also when it was deleted*. A failed
        condition must raise an exception that :meth:`classify` calls
        ``"precondition"``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement object_put()")

    def object_list(self, bucket: str, prefix: str) -> list[str] | Awaitable[list[str]]:
        """Keys directly under ``prefix`` (which is ``""`` or ends with ``/``), not in "subdirectories".

        Return full keys, every page of them. A missing bucket raises the
        client's not-found error (a configuration mistake is not an empty
        directory).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement object_list()")

    def object_delete(self, bucket: str, keys: Sequence[str]) -> Awaitable[None] | None:
        """Delete the objects; keys that do not exist are not an error."""
        raise NotImplementedError(f"{type(self).__name__} must implement object_delete()")

    # ------------------------------------------------------------ client calls (optional)
    def object_find(self, bucket: str, prefix: str) -> list[str] | Awaitable[list[str]]:
        """Optional: every key starting with ``prefix``, at any depth.

        Enables :meth:`find` and :meth:`rmtree` (used to delete a whole
        checkpoint directory). Without it they raise
        :class:`~trackpoint.errors.StorageError`.
        """
        raise StorageError(
            f"{self.store_name}: this store lists no keys below subdirectories (it does not implement "
            "object_find); finding or deleting a directory tree needs it"
        )

    def upload_begin(self, bucket: str, key: str, condition: Condition, write_id: str) -> object:
        """Optional: start a multipart / resumable upload; return its state (anything).

        The state is passed to the other ``upload_*`` calls. Store
        ``write_id`` as for :meth:`object_put`. The condition may be checked
        here or (usually) when the upload is finished.
        """
        raise NotImplementedError(f"{type(self).__name__} has no multipart uploads")

    def upload_part(
        self, state: Any, number: int, offset: int, data: memoryview, total: int | None
    ) -> object | Awaitable[object]:
        """Optional: send part ``number`` (0-based), the bytes at ``offset``; return what finishing needs.

        ``data`` views a whole ``bytes`` object (``data.obj``): a client that
        wants ``bytes`` can send that without copying. ``total`` is the
        object's size on the last part only (``None`` before). The last part
        may be empty. Parts go out concurrently unless
        :attr:`sequential_parts`; a part may be retried, so sending the same
        part twice must be harmless.
        """
        raise NotImplementedError(f"{type(self).__name__} has no multipart uploads")

    def upload_finish(self, state: Any, parts: list[Any], total: int) -> str | Awaitable[str]:
        """Optional: complete the upload from the parts' results; return the new version.

        The upload's condition is enforced here: a refusal must raise an
        exception :meth:`classify` calls ``"precondition"``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no multipart uploads")

    def upload_abort(self, state: Any) -> Awaitable[None] | None:
        """Optional: discard an unfinished upload.

        ``state`` is what :meth:`upload_begin` returned, or the
        :attr:`UploadStat.state` of an upload :meth:`upload_list` found. An
        upload that no longer exists raises the client's not-found error (or
        nothing). A sink aborting its own upload ignores failures; ``cleanup``
        reports them.
        """
        raise NotImplementedError(f"{type(self).__name__} has no multipart uploads")

    def upload_list(
        self, bucket: str, prefix: str, *, recursive: bool = False
    ) -> list[UploadStat] | Awaitable[list[UploadStat]]:
        """Optional: the unfinished uploads of keys under ``prefix``.

        Uploads that were started and neither finished nor aborted, every page
        of them, with their parts' total size and newest time where the store
        tells (S3: ``ListMultipartUploads``, then ``ListParts`` per upload).

        Parameters
        ----------
        bucket
            The bucket.
        prefix
            ``""`` (the whole bucket) or a prefix ending with ``/``.
        recursive
            ``False``: keys directly under ``prefix``; keys in
            "subdirectories" may be returned too, the base drops them.
            ``True``: keys at any depth under ``prefix`` (S3: the listing
            without a delimiter).

        Returns
        -------
        list of UploadStat
            In any order. A missing bucket raises the client's not-found error.

        Notes for implementers
        ----------------------
        Enables :meth:`unfinished_uploads` and :meth:`abort_uploads`, through
        which ``cleanup`` and ``trackpoint ls --all`` find the uploads a killed
        save left (stored, and on S3 billed, until aborted). Without it a store
        reports none: right for stores whose unfinished uploads expire by
        themselves (GCS resumable uploads, after a week) or hold no data.

        ``recursive`` is passed only to an implementation that declares it (a
        parameter of that name, or ``**kwargs``), and only as ``True``. One
        written before it existed, as ``upload_list(bucket, prefix)``, keeps
        working: for a recursive :meth:`unfinished_uploads` the base calls it
        for ``prefix`` and for every directory below it that holds an object
        (by :meth:`object_find`; without that call, for ``prefix`` alone), and
        keeps whatever it returns below ``prefix``. That misses the uploads in
        a directory holding no object (a Zarr array whose first chunks a
        killed save was still sending); accept ``recursive`` to find them.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list unfinished uploads")

    async def aclose(self) -> None:
        """Optional: close asynchronous clients; runs on the store's loop from :meth:`close`."""

    def close_client(self) -> None:
        """Optional: close synchronous clients; called by :meth:`close` after :meth:`aclose`."""

    # ------------------------------------------------------------ calling the client
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this store's requests run on."""
        return self._given_loop if self._given_loop is not None else _io_loop().loop

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            pid = os.getpid()
            if self._pool is None or self._pool[0] != pid:
                pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.transfer.max_concurrency, thread_name_prefix=f"trackpoint-{self.store_name}"
                )
                self._pool = (pid, pool)
            return self._pool[1]

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """One attempt of the client call ``name``, awaited or run in the thread pool.

        A ``BaseException`` the call raises that is no ``Exception`` (``SystemExit``, ``KeyboardInterrupt``,
        gevent's ``Timeout``) comes back as :class:`_NotAnException`, which :meth:`_retry` fails the request
        with, unretried. Let through, asyncio would re-raise ``KeyboardInterrupt`` and ``SystemExit`` out of
        the loop, ending the thread every store's requests run on.
        """
        import asyncio

        fn = getattr(self, name)
        try:
            if self._is_async[name]:
                return await fn(*args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(
                self._executor(), functools.partial(fn, *args, **kwargs)
            )
        except (Exception, asyncio.CancelledError, GeneratorExit):
            # Cancelled: the request is (a timeout, or its caller gave up); GeneratorExit: the coroutine is closed.
            raise
        except BaseException as exc:
            raise _NotAnException(name, exc) from exc

    # ------------------------------------------------------------ plumbing
    def split(self, path: str) -> tuple[str, str]:
        """``(bucket, key)`` of ``path``, a URL of one of :attr:`schemes` (``s3://bucket/key``).

        Raises
        ------
        BackendError
            ``path`` has another scheme, none (a local path: the store was chosen by name, with
            ``CheckpointOptions(backend=...)`` or ``TRACKPOINT_BACKEND``, for a path it cannot tell from a
            bucket), or names no bucket.
        """
        sch, rest = _paths.split_scheme(path)
        if not sch:
            # Taken as "bucket/key", /tmp/run/ckpt would be written to a bucket named "tmp" without a word.
            raise BackendError(
                f"{self.store_name} cannot address {path!r}: it has no scheme (a local path, or bucket/key), where "
                f"a {self.schemes[0]}:// URL is needed. Write {self.schemes[0]}://<bucket>/<path> for the store, or "
                "leave CheckpointOptions.backend (and TRACKPOINT_BACKEND) unset for the local disk"
            )
        if sch not in self.schemes:
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

    def _split_object(self, path: str, what: str) -> tuple[str, str]:
        """:meth:`split` of ``path``, which must name an object: a key inside a bucket, not the bucket alone.

        Every write and delete of one object goes through it, whatever the backend's spec
        declares (:attr:`~trackpoint.plugins.BackendSpec.buckets`): a checkpoint prefix of only a bucket
        (``s3://bucket``) would otherwise have its files, named by appending to the prefix
        (``bucket-1.index``), written as empty keys of *other* buckets. Reads go through
        :meth:`_object_to_read`, which answers "not found" for such a path instead. Listings of a bucket's root
        (:meth:`listdir`, :meth:`find`) take a bare bucket as the directory it is.

        Raises
        ------
        InvalidArgumentError
            ``path`` names a bucket only (``scheme://bucket`` or ``scheme://bucket/``).
        BackendError
            See :meth:`split`.
        """
        bucket, key = self.split(path)
        if not key.strip("/"):
            scheme = _paths.split_scheme(path)[0]
            raise InvalidArgumentError(
                f"{self.store_name}: cannot {what} {path!r}: it names the bucket {bucket!r}, not a checkpoint prefix "
                "or an object in one (a checkpoint's files are named by appending to its prefix, so a prefix of "
                f"only a bucket would put them in other buckets); give a prefix inside a bucket, such as "
                f"{scheme}://<bucket>/run/ckpt"
            )
        return bucket, key

    def _object_to_read(self, path: str) -> tuple[str, str] | None:
        """:meth:`split` of ``path``, or ``None`` where it names a bucket only: no object to read there.

        An empty key cannot exist, so a read of ``scheme://bucket`` answers as one of a missing object does,
        without a request: looking for ``s3://bucket`` as a checkpoint prefix (its index ``s3://bucket.index``)
        finds nothing, and the caller goes on to the directory ``s3://bucket`` is. Writes and deletes are
        refused instead (:meth:`_split_object`).

        Raises
        ------
        BackendError
            See :meth:`split`.
        """
        bucket, key = self.split(path)
        return None if not key.strip("/") else (bucket, key)

    def _missing(self, path: str) -> CheckpointNotFoundError:
        return CheckpointNotFoundError(f"{self.store_name}: {path!r} does not exist")

    def url(self, bucket: str, key: str) -> str:
        """``scheme://bucket/key``, for messages."""
        return f"{self.schemes[0]}://{bucket}/{key}"

    def _run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        if self._closed:
            raise StorageError(f"{self.store_name}: the file layer was closed; open the checkpoint again")
        coro = fn(*args)
        budget = self._budget()
        if budget is not None:
            # The caller is cleaning up: its requests, which run as a task on the loop thread, carry the budget.
            coro = self._within_budget(budget, coro)
        # The coroutine runs on the store's loop thread; its exception is re-raised here.
        fut = self._submit(coro)
        try:
            return fut.result()
        except _PreconditionFailed as exc:
            # Writes interpret preconditions themselves; this guards every other path.
            raise ConcurrentModificationError(
                f"{self.store_name}: a conditional request was refused ({self._reason(exc.cause)}); re-read and retry"
            ) from exc.cause
        except BaseException:
            # Either the request failed (then it is over, and cancelling does nothing) or the wait was
            # interrupted: Ctrl-C (KeyboardInterrupt), a signal handler's SystemExit. Then the caller gives the
            # request up -- a save aborts -- and its retries must stop with it rather than go on writing in the
            # background; an attempt in flight in a client thread cannot be stopped and ends by itself.
            fut.cancel()
            raise

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        import asyncio

        if self._given_loop is not None:
            return asyncio.run_coroutine_threadsafe(coro, self._given_loop)
        return _io_submit(coro, self.store_name)

    def _limit(self) -> asyncio.Semaphore:
        import asyncio

        # Created on the loop thread at first use, so it binds to that loop
        # (a forked child runs on a new loop and gets a new semaphore).
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore[0] is not loop:
            self._semaphore = (loop, asyncio.Semaphore(self.transfer.max_concurrency))
        return self._semaphore[1]

    def _scratch_slots(self) -> asyncio.Semaphore:
        import asyncio

        # Merged reads pass through a scratch buffer of up to read_part_size;
        # without a bound, every merged group of a restore held one at once
        # (eight 64 MiB buffers, half a GiB, on a 1 GiB checkpoint).
        loop = asyncio.get_running_loop()
        if self._scratch is None or self._scratch[0] is not loop:
            self._scratch = (loop, asyncio.Semaphore(_SCRATCH_BUFFERS))
        return self._scratch[1]

    # ------------------------------------------------------------ clean-up budget
    def cleaning_up(self) -> contextlib.AbstractContextManager[None]:
        """A block whose requests (in the calling thread) clean up after a failed save, under one short budget.

        Also the housekeeping after a commit (docs/writing-a-backend.md, "After the commit point"), from the
        first of its steps that failed because the store stopped answering: the save has succeeded, and a
        store that stopped answering must not hold it up once per remaining step. Until then its steps have
        the store's usual retries and timeouts, so that a store that is slow but answers removes everything.

        Every request made inside the block must end by one deadline:
        ``TransferOptions.cleanup_budget`` seconds (``cleanup_deadline``;
        by default ``request_timeout``, at most 10 s) after the last request
        that used up its retries on a transient failure, if no request has
        succeeded since (the store stopped answering, and the save failed
        for it), else after the block was entered. An attempt is cut off at
        the deadline, no retry starts after it, and once it has passed
        requests fail at once with
        :class:`~trackpoint.errors.TransientStorageError` without being sent.
        So a save whose store stopped answering fails about the clean-up
        budget after its requests gave up, however many steps its clean-up
        has (aborting uploads, listing, deleting); what the clean-up could not
        remove stays for ``cleanup(directory)``. Nested blocks share the
        outermost one's budget.

        Returns
        -------
        contextlib.AbstractContextManager
            Use with ``with``.
        """
        return self._cleanup_scope()

    @contextlib.contextmanager
    def _cleanup_scope(self) -> Iterator[None]:
        scope = _CLEANUP.get()
        if scope is not None and scope[0] is self:
            yield  # nested: the outer block's deadline holds
            return
        now = time.monotonic()
        gave_up = self._gave_up_at
        start = now if gave_up is None else min(now, gave_up)
        token = _CLEANUP.set((self, start + self.transfer.cleanup_budget))
        try:
            yield
        finally:
            _CLEANUP.reset(token)

    def _budget(self) -> float | None:
        """The deadline (``time.monotonic``) of the clean-up the caller is in, ``None`` outside one."""
        scope = _CLEANUP.get()
        return scope[1] if scope is not None and scope[0] is self else None

    def _budget_left(self) -> float | None:
        """Seconds left of the clean-up budget the caller is in (never negative); ``None`` outside one."""
        budget = self._budget()
        return None if budget is None else max(0.0, budget - time.monotonic())

    async def _within_budget(self, budget: float, coro: Coroutine[Any, Any, T]) -> T:
        # The task runs in a context of its own: setting the variable here reaches its requests only.
        _CLEANUP.set((self, budget))
        return await coro

    def _delay(self, attempt: int) -> float:
        cap = min(self.transfer.retry_max_delay, self.transfer.retry_base_delay * (2**attempt))
        return random.uniform(0.0, cap)

    async def _retry(
        self,
        what: str,
        bucket: str,
        key: str,
        fn: Callable[[], Awaitable[T]],
        *,
        stop: Callable[[], bool] | None = None,
    ) -> T:
        """Run ``fn`` under the retry policy and translate its errors.

        Precondition failures come back as :class:`_PreconditionFailed` for the
        caller to interpret (create-only vs compare-and-swap). Inside a
        :meth:`cleaning_up` block the clean-up's deadline bounds the attempts
        too. ``stop`` is asked after a transient failure: when it says so, no
        further attempt is made (the parts of an aborted upload).
        """
        import asyncio

        t = self.transfer
        budget = self._budget()
        started = time.monotonic()
        attempt = 0
        timeouts = 0
        while True:
            timeout = t.request_timeout
            if budget is not None:
                left = budget - time.monotonic()
                if left <= 0:
                    raise translate_error(
                        "transient", self._budget_spent(what, bucket, key, attempt), url=self.url(bucket, key), key=key
                    )
                timeout = min(timeout, left)
            try:
                async with self._limit():
                    result = await asyncio.wait_for(fn(), timeout=timeout)
            except (CheckpointError, _PreconditionFailed):
                raise
            except _NotAnException as exc:
                # Not the store's answer (classify was made for its client's exceptions), and nothing a retry
                # would change.
                raise translate_error(
                    "other", self._not_an_exception(exc, what, bucket, key), url=self.url(bucket, key), key=key
                ) from exc.cause
            except Exception as exc:
                kind = "transient" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else self.classify(exc)
                if kind == "precondition":
                    raise _PreconditionFailed(exc) from exc
                if kind == "transient":
                    timeouts += _timed_out(exc)
                    now = time.monotonic()
                    elapsed = now - started
                    stopped = stop is not None and stop()
                    in_budget = budget is None or now < budget
                    if attempt < t.retries and elapsed < t.retry_deadline and in_budget and not stopped:
                        pause = min(self._delay(attempt), max(0.0, t.retry_deadline - elapsed))
                        if budget is not None:
                            pause = min(pause, max(0.0, budget - now))
                        await asyncio.sleep(pause)
                        stopped = stop is not None and stop()  # asked again: an abort may have come meanwhile
                        if not stopped:
                            attempt += 1
                            continue
                    if not in_budget:
                        message = self._budget_ended(exc, what, bucket, key, attempt + 1, timeouts, elapsed)
                    elif stopped:
                        message = (
                            f"{self.store_name}: {what} {self.url(bucket, key)!r} failed ({self._reason(exc, timeout)})"
                            " and was not retried: its upload was aborted"
                        )
                    else:
                        if budget is None:
                            # The store did not answer within the retry limits: the clean-up after this failure
                            # counts its budget from here (see cleaning_up), not from when it starts.
                            self._gave_up_at = time.monotonic()
                        message = self._gave_up(exc, what, bucket, key, attempt + 1, timeouts, elapsed)
                    raise translate_error(kind, message, url=self.url(bucket, key), key=key) from exc
                missing = kind == "not_found" and await self._bucket_missing(what, bucket, key)
                raise self._translate(exc, kind, what, bucket, key, bucket_missing=missing) from exc
            self._gave_up_at = None  # the store answers
            if what.startswith("listing") or what in _WRITES:
                self._live_buckets.add(bucket)
            return result

    async def _bucket_missing(self, what: str, bucket: str, key: str) -> bool:
        """Whether a "not found" answer to ``what`` on ``bucket``/``key`` means the bucket does not exist.

        Writes, listings and deletions find nothing missing but the bucket
        (objects have no parents; :meth:`object_list` and :meth:`object_delete`
        raise not-found for a missing bucket only). A read may have missed the
        object or the bucket, which most stores answer alike (S3's ``HEAD``
        has no body to say which): one listing under the key tells, asked
        only on this failure path and at most until a request has reached the
        bucket. A listing that fails otherwise (denied, timed out) leaves it
        undecided: ``False``.
        """
        import asyncio

        if what in _WRITES or what.startswith(("listing", "deleting", "uploading part")):
            return True
        if bucket in self._live_buckets:
            return False
        prefix = _dir_prefix(key)
        try:
            async with self._limit():
                await asyncio.wait_for(self._call("object_list", bucket, prefix), timeout=self.transfer.request_timeout)
        except Exception as exc:  # noqa: BLE001 - any other failure leaves the question open
            if isinstance(exc, (TimeoutError, CheckpointError, _NotAnException)) or self.classify(exc) != "not_found":
                return False
            advice = self._explanation(exc, "not_found")
            if advice is not None:
                self._bucket_advice[bucket] = advice
            return True
        self._live_buckets.add(bucket)
        return False

    def explain_error(self, exc: BaseException, kind: ErrorKind) -> str | None:
        """Optional: this store's advice on a failed request, added to the error trackpoint raises.

        Called once per request that failed for good, just before its
        trackpoint error is raised: when :meth:`classify` said the failure is
        not worth retrying, and when a transient failure outlasted the
        retries. Not called for refused preconditions, which trackpoint words
        itself (another writer created the object first, or it changed since
        it was read), nor for client calls that answer "absent" with ``None``.

        Parameters
        ----------
        exc
            The exception the client call raised (on the last attempt), or
            the ``TimeoutError`` of an attempt that outlasted
            ``TransferOptions.request_timeout``.
        kind
            The :data:`ErrorKind` :meth:`classify` gave ``exc`` (a timeout is
            always ``"transient"``); it chooses the error class:
            ``"not_found"``, a missing object or bucket
            (:class:`~trackpoint.errors.CheckpointNotFoundError`);
            ``"permission"``, refused or no credentials to sign with
            (:class:`~trackpoint.errors.StoragePermissionError`);
            ``"range"``, the object is shorter than the read
            (:class:`~trackpoint.errors.DataLossError`); ``"other"``
            (:class:`~trackpoint.errors.StorageError`); ``"transient"``, the
            retries are used up (:class:`~trackpoint.errors.TransientStorageError`).
            Never ``"precondition"``.

        Returns
        -------
        str or None
            What ``exc`` means on this store and what to do about it (which
            credentials are missing and how to give them, say), appended to
            trackpoint's message as ``"<store>: <what> <url> failed
            (<exception>); <advice>"``, in place of the generic advice of
            ``kind`` ("check the credentials and the permissions on bucket
            ..."). After retries it follows trackpoint's advice on the retry
            limits instead. ``None`` (the default) or an empty string leaves
            trackpoint's message as it is. The error's class is ``kind``'s
            whatever the advice.

        Notes
        -----
        It must not raise. An exception it raises anyway is logged as a
        warning (logger ``trackpoint.backends.stores.objectstore``) and the
        original error is raised without advice. It runs on the store's event
        loop: decide from ``exc`` and what the store knows, without requests
        or blocking.

        Messages reach logs and bug reports: never put credentials in the
        advice. Name the option or environment variable to set, not its
        value. Text taken from the client's exception or from
        ``storage_options`` may hold credentials: pass it through
        :func:`trackpoint.errors.redact` with the store's storage options,
        which removes the values of options whose names say they are
        credentials and the secrets of URL queries (``sig=``,
        ``access_token=``, ...).
        """
        return None

    def describe_error(self, exc: BaseException) -> str | None:
        """Optional: the text of ``exc`` as trackpoint's messages quote it, when ``str(exc)`` is not the best.

        Messages quote the exception a client call raised as ``"<type>: <text>"``, the text being
        ``str(exc)`` unless this returns one. Override it when the exception holds what the reader needs
        apart from its text: the service's error code (Azure's ``error_code``), say, which leads it best
        (``"ContainerNotFound: The specified container does not exist."``).

        Parameters
        ----------
        exc
            The exception to quote: one a client call raised, or, when no connection could be made, the
            one of its chain that says so (the transport's, which names the host and port).

        Returns
        -------
        str or None
            The text to quote. ``None`` (the default) or an empty string quotes ``str(exc)``. Either way
            the base quotes its first line only (client libraries append request ids, times and the
            answer's body), with the query of every URL in it and credential parameters (``sig=``,
            ``X-Amz-Signature=``, ``token=``, ...) replaced by ``<redacted>``, and at most 300 characters.

        Notes
        -----
        It must not raise (an exception it raises anyway is logged as a warning and ``str(exc)`` quoted),
        and runs on the store's event loop: decide from ``exc`` alone, without requests or blocking.
        """
        return None

    def _explanation(self, exc: BaseException, kind: ErrorKind) -> str | None:
        """:meth:`explain_error`'s advice, ``None`` when there is none or the hook failed."""
        return self._ask("explain_error", "without the store's advice", exc, kind)

    def _ask(self, hook: str, otherwise: str, exc: BaseException, *args: Any) -> str | None:
        """The text the store's ``hook`` gives for ``exc``, ``None`` when it gives none or failed (then logged)."""
        try:
            answer = getattr(self, hook)(exc, *args)
        except Exception:  # noqa: BLE001 - a failing hook must not replace the error it was to explain
            _log.warning(
                "%s.%s raised explaining %s; the error is raised %s",
                type(self).__qualname__,
                hook,
                type(exc).__name__,
                otherwise,
                exc_info=True,
            )
            return None
        return answer if isinstance(answer, str) and answer.strip() else None

    def _reason(self, exc: BaseException, timeout: float | None = None) -> str:
        """``exc`` for a message: its type and one line of text, an empty timeout as the limit it hit.

        ``timeout`` is the limit of an attempt cut short by a clean-up budget, if shorter than ``request_timeout``.
        The text is :meth:`describe_error`'s or ``str(exc)``, cut and redacted as that hook's docstring says.
        When no connection could be made, the exception of the chain that says so is quoted: a client
        library's outer error tends to quote the request's URL (its query too) before the transport's words.
        """
        if not str(exc).strip() and isinstance(exc, TimeoutError):
            # asyncio.wait_for's timeout says nothing; what the reader needs is which limit it was.
            if timeout is not None and timeout < self.transfer.request_timeout:
                return f"timed out after {timeout:.1f} s, the clean-up budget it had left"
            return f"timed out after {_seconds(self.transfer.request_timeout)} ({_OPTION}['request_timeout'])"
        if (failure := _no_connection(exc)) is not None:
            exc = failure.said
        text = self._ask("describe_error", "quoting the exception's own text", exc) or str(exc)
        # Only the first line: SDKs go on with request ids, times and the answer's XML or JSON, and an HTTP
        # body's trailing newline would end up inside the parentheses.
        line = next(iter(text.strip().splitlines()), "")
        # Only the exception's type and the store's reason go into messages, never request headers or options;
        # a URL in the reason may still carry credentials in its query (a SAS, a presigned URL, an API key).
        # No option values are scrubbed here: the store keeps no storage options (from_options turns them
        # into clients), so a store whose client quotes them redacts them itself, in describe_error.
        return f"{type(exc).__name__}: {redact(_URL_QUERY.sub('?' + REDACTED, line), {})}"[:300]

    def _gave_up(
        self, exc: BaseException, what: str, bucket: str, key: str, attempts: int, timeouts: int, elapsed: float
    ) -> str:
        """The message of a transient failure that outlasted the retries: which limit ended them, what to change.

        Retries end when ``retries`` are used up or at ``retry_deadline``,
        whichever comes first; only raising that limit buys more attempts,
        so the advice names it. When every attempt timed out, the store may
        not be answering at all: then the endpoint is the first suspect and
        ``request_timeout`` the other limit that changes the outcome.
        """
        t = self.transfer
        where = self.url(bucket, key)
        if timeouts == attempts:
            each = "each" if attempts > 1 else "it"
            if elapsed < 0.9 * t.request_timeout:
                # All of them together took less than one request_timeout: a limit of the client library fired
                # first (botocore's read_timeout or connect_timeout, set through storage_options' config_kwargs).
                cause = (
                    f": {each} timed out in {elapsed:.1f} s all told, before {_OPTION}['request_timeout'] "
                    f"({_seconds(t.request_timeout)}): a timeout of the client library fired first (for S3, "
                    "config_kwargs' read_timeout or connect_timeout in storage_options)"
                )
            else:
                cause = f": {each} timed out after {_seconds(t.request_timeout)} ({_OPTION}['request_timeout'])"
        else:
            cause = f" ({self._reason(exc)})"
        left = t.retries - (attempts - 1)
        deadline = f"the retry_deadline of {_seconds(t.retry_deadline)} ({_OPTION}['retry_deadline'])"
        if left > 0:
            stopped = f"{deadline} ended the retries with {left} of {t.retries} left"
            limit = f"{_OPTION}['retry_deadline']"
        elif elapsed >= t.retry_deadline:
            stopped = f"no retry was left ({_OPTION}['retries'] is {t.retries}) and {deadline} had passed"
            limit = f"{_OPTION}['retries'] and {_OPTION}['retry_deadline']"
        else:
            stopped = f"no retry was left ({_OPTION}['retries'] is {t.retries})"
            limit = f"{_OPTION}['retries']"
        if timeouts == attempts:
            advice = (
                f"check that the store's endpoint is up and answers, or raise {_OPTION}['request_timeout'] if its "
                f"answers are slow, or {limit} for more attempts"
            )
        elif (failure := _no_connection(exc)) is not None:
            if failure.unresolved:
                name = f"the host name {failure.host!r}" if failure.host else "the store's host name"
                advice = (
                    f"{name} could not be resolved (DNS): check the host in the store's endpoint or account name, "
                    f"and this machine's DNS, or, for a passing network failure, retry later or raise {limit}"
                )
            else:
                advice = (
                    "nothing accepted a connection there: check that the store's endpoint is right and its server "
                    f"is running, or, for a passing network failure, retry later or raise {limit}"
                )
        else:
            advice = f"the store may be overloaded or unreachable: retry later or raise {limit}"
        tried = f"{attempts} attempt" + ("s" if attempts != 1 else "")
        message = (
            f"{self.store_name}: {what} {where!r} still failed after {tried} in {elapsed:.1f} s{cause}; "
            f"{stopped}; {advice}"
        )
        # The store's advice adds to the limits' (which say what would have bought more attempts).
        explained = self._explanation(exc, "transient")
        return message if explained is None else f"{message}; {explained}"

    def _cleanup_terms(self) -> str:
        """The clean-up budget and what becomes of what it leaves, for the messages of clean-up requests."""
        t = self.transfer
        option = f"{_OPTION}['cleanup_deadline']"
        if t.cleanup_deadline is None:
            option += f", by default request_timeout, at most {_seconds(_CLEANUP_CAP)}"
        return (
            f"the clean-up (after a failed save, or a commit) had used up its {_seconds(t.cleanup_budget)} ({option}), "
            "counted "
            "from the last request that used up its retries (the store stopped answering) or else from its start; "
            "what it did not remove stays until cleanup(directory) or `trackpoint cleanup DIR` removes it once the "
            "store answers"
        )

    def _budget_ended(
        self, exc: BaseException, what: str, bucket: str, key: str, attempts: int, timeouts: int, elapsed: float
    ) -> str:
        """The message of a clean-up request whose budget ran out before it succeeded."""
        tried = f"{attempts} attempt" + ("s" if attempts > 1 else "")
        cause = ": the store did not answer in time" if timeouts == attempts else f" ({self._reason(exc)})"
        return (
            f"{self.store_name}: {what} {self.url(bucket, key)!r} still failed after {tried} in {elapsed:.1f} s"
            f"{cause}, and {self._cleanup_terms()}"
        )

    def _budget_spent(self, what: str, bucket: str, key: str, attempts: int) -> str:
        """The message of a clean-up request not (or no more) sent: the budget had run out."""
        sent = "was not sent" if attempts == 0 else f"was given up after {attempts} attempt" + "s" * (attempts != 1)
        return f"{self.store_name}: {what} {self.url(bucket, key)!r} {sent}: {self._cleanup_terms()}"

    def _not_an_exception(self, exc: _NotAnException, what: str, bucket: str, key: str) -> str:
        """The message of a request whose client call raised a ``BaseException`` that is no ``Exception``."""
        return (
            f"{self.store_name}: {what} {self.url(bucket, key)!r} failed: its client call "
            f"{type(self).__qualname__}.{exc.call} raised a BaseException that is no Exception "
            f"({self._reason(exc.cause)}), so it was not retried. Client calls must raise failures as Exception "
            "subclasses, which classify tells apart: report this to the store's authors"
        )

    def _translate(
        self, exc: BaseException, kind: ErrorKind, what: str, bucket: str, key: str, *, bucket_missing: bool = False
    ) -> CheckpointError:
        """The trackpoint error of a failure that is not retried (see :meth:`_gave_up` for those that were)."""
        where = self.url(bucket, key)
        reason = self._reason(exc)
        explained = self._explanation(exc, kind)
        if explained is not None:
            message = f"{self.store_name}: {what} {where!r} failed ({reason}); {explained}"
        elif kind == "not_found" and bucket_missing:
            message = self._no_bucket(what, bucket, key, reason)
        elif kind == "not_found":
            message = f"{self.store_name}: {what} {where!r} failed: the object does not exist ({reason})"
        elif kind == "permission":
            message = (
                f"{self.store_name}: {what} {where!r} was refused ({reason}); check the credentials and the "
                f"permissions on bucket {bucket!r}"
            )
        elif kind == "range":
            message = f"{self.store_name}: {what} {where!r}: the object is shorter than expected ({reason})"
        else:
            message = f"{self.store_name}: {what} {where!r} failed ({reason})"
        return translate_error(kind, message, url=where, key=key)

    def _no_bucket(self, what: str, bucket: str, key: str, reason: str | None = None) -> str:
        """The message of a request on a bucket that does not exist, reads and writes alike."""
        cause = f" ({reason})" if reason else ""
        advice = self._bucket_advice.get(bucket)
        if advice is not None:
            # Not the bucket: the answer said nothing of it (explain_error on the listing that asked).
            return f"{self.store_name}: {what} {self.url(bucket, key)!r} failed{cause}: {advice}"
        return (
            f"{self.store_name}: {what} {self.url(bucket, key)!r} failed: bucket {bucket!r} does not exist{cause}; "
            "create it or correct the URL"
        )

    # ------------------------------------------------------------ writes
    async def _settled_by_us(self, bucket: str, key: str, write_id: str) -> ObjectStat | None:
        """The object's stat if it carries ``write_id`` (an earlier attempt of ours landed)."""
        stat = await self._retry("inspecting", bucket, key, lambda: self._call("object_stat", bucket, key))
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

    async def _put_checked(self, bucket: str, key: str, data: memoryview, cond: Condition) -> str:
        write_id = uuid.uuid4().hex
        try:
            return await self._retry(
                "writing", bucket, key, lambda: self._call("object_put", bucket, key, data, cond, write_id)
            )
        except _PreconditionFailed as exc:
            mine = await self._settled_by_us(bucket, key, write_id)
            if mine is not None:
                return mine.version
            raise self._conflict(bucket, key, cond, exc) from exc.cause

    def open_sink(self, path: str, *, create_only: bool = False) -> FileSink:
        bucket, key = self._split_object(path, "write")
        return _UploadSink(self, bucket, key, Condition(create_only=create_only))

    def put(self, path: str, data: bytes | bytearray | memoryview, *, create_only: bool = False) -> None:
        bucket, key = self._split_object(path, "write")
        view = memoryview(data).cast("B")
        if view.nbytes <= self.transfer.part_size:
            self._run(self._put_checked, bucket, key, view, Condition(create_only=create_only))
            return
        super().put(path, view, create_only=create_only)

    def write_versioned(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        bucket, key = self._split_object(path, "write")
        cond = Condition.from_if_version(version_condition(if_version))
        try:
            return self._run(self._put_checked, bucket, key, memoryview(bytes(data)), cond)
        except CheckpointExistsError as exc:
            # A create-only small-file write that lost: for small files that is a lost race.
            raise ConcurrentModificationError(
                f"{self.store_name}: {self.url(bucket, key)!r} exists already (create-only write lost a race); "
                "re-read it and retry"
            ) from exc

    def delete(self, paths: Sequence[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for p in paths:
            b, k = self._split_object(p, "delete")
            by_bucket.setdefault(b, []).append(k)

        for bucket, keys in by_bucket.items():
            self._run(self._delete_retrying, bucket, keys)

    async def _delete_retrying(self, bucket: str, keys: list[str]) -> None:
        await self._retry("deleting", bucket, keys[0], lambda: self._call("object_delete", bucket, keys))

    # ------------------------------------------------------------ reads
    def size(self, path: str) -> int | None:
        where = self._object_to_read(path)
        if where is None:
            return None
        bucket, key = where
        stat = self._run(
            lambda: self._retry("reading metadata of", bucket, key, lambda: self._call("object_stat", bucket, key))
        )
        return None if stat is None else stat.size

    def sizes(self, paths: Sequence[str]) -> list[int | None]:
        # docstring inherited: the stats go out together, one round trip for all.
        if not paths:
            return []
        return self._run(self._sizes_async, [self._object_to_read(path) for path in paths])

    async def _sizes_async(self, where: list[tuple[str, str] | None]) -> list[int | None]:
        import asyncio

        async def one(bucket: str, key: str) -> int | None:
            stat = await self._retry("reading metadata of", bucket, key, lambda: self._call("object_stat", bucket, key))
            return None if stat is None else stat.size

        async def none() -> None:
            return None

        return list(await asyncio.gather(*(none() if w is None else one(*w) for w in where)))

    def read(self, path: str) -> bytes:
        # docstring inherited: one GET of the whole object, where asking for its size first is a second
        # round trip (an index opened for every restore).
        got = self.read_versioned(path)
        if got is None:
            where = self._object_to_read(path)
            if where is None:
                raise self._missing(path)
            # object_get answers None for a missing bucket too: tell which is missing.
            bucket, key = where
            if self._run(self._bucket_missing, "reading", bucket, key):
                raise translate_error(
                    "not_found", self._no_bucket("reading", bucket, key), url=self.url(bucket, key), key=key
                )
            raise self._missing(path)
        return got.data

    def modified(self, path: str) -> float | None:
        """Last modification from the object's metadata (S3 ``LastModified``, GCS ``updated``)."""
        bucket, key = self.split(path)
        if not key:
            return None
        stat = self._run(
            lambda: self._retry("reading metadata of", bucket, key, lambda: self._call("object_stat", bucket, key))
        )
        # Object stores have no directories: a "directory" has no time of its own.
        return None if stat is None else stat.mtime

    def read_versioned(self, path: str) -> VersionedBytes | None:
        where = self._object_to_read(path)
        if where is None:
            return None
        bucket, key = where
        got: VersionedBytes | None = self._run(
            lambda: self._retry("reading", bucket, key, lambda: self._call("object_get", bucket, key))
        )
        return got

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
                    members.append((offset, view))  # in place: a group may gather thousands
                    plan[-1] = (start, new_end - start, members)
                    continue
            plan.append((offset, view.nbytes, [(offset, view)]))
        return plan

    async def _read_group(
        self, bucket: str, key: str, start: int, length: int, members: list[tuple[int, memoryview]]
    ) -> None:
        if len(members) == 1:
            view = members[0][1]
            await self._retry("reading", bucket, key, lambda: self._call("object_get_range", bucket, key, start, view))
            return
        views = _consecutive(start, members) if self._vectored else None
        if views is not None:
            await self._retry(
                "reading", bucket, key, lambda: self._call("object_get_range_vectored", bucket, key, start, views)
            )
            return
        # Several small ranges: one GET into a scratch buffer, then scatter.
        async with self._scratch_slots():
            span = memoryview(bytearray(length))
            await self._retry("reading", bucket, key, lambda: self._call("object_get_range", bucket, key, start, span))
            for offset, view in members:
                view[:] = span[offset - start : offset - start + view.nbytes]

    async def _read_ranges_async(self, bucket: str, key: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        import asyncio

        jobs = [self._read_group(bucket, key, *group) for group in self._plan_reads(ranges)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        self.read_ranges(path, [(offset, out)])

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, memoryview]]) -> None:
        where = self._object_to_read(path)
        if where is None:
            raise self._missing(path)
        bucket, key = where
        if any(out.nbytes for _, out in ranges):
            self._run(self._read_ranges_async, bucket, key, ranges)

    def listdir(self, directory: str) -> list[str]:
        bucket, key = self.split(directory)
        prefix = _dir_prefix(key)
        keys = self._run(
            lambda: self._retry("listing", bucket, prefix, lambda: self._call("object_list", bucket, prefix))
        )
        return sorted(k[len(prefix) :] for k in keys if k != prefix)

    def find(self, directory: str) -> list[str]:
        """Every object under ``directory``, at any depth, as URLs; needs :meth:`object_find`."""
        bucket, key = self.split(directory)
        prefix = _dir_prefix(key)
        keys = self._run(
            lambda: self._retry("listing", bucket, prefix, lambda: self._call("object_find", bucket, prefix))
        )
        return sorted(self.url(bucket, k) for k in keys if k != prefix)

    def rmtree(self, directory: str) -> None:
        """Delete every object under ``directory`` (object stores have no directories to remove)."""
        found = self.find(directory)
        if found:
            self.delete(found)

    def unfinished_uploads(self, directory: str, *, recursive: bool = False) -> list[UnfinishedUpload]:
        """Unfinished uploads of objects in ``directory`` (at any depth if ``recursive``), by :meth:`upload_list`.

        ``[]`` when the store does not implement :meth:`upload_list`, and when
        the credentials may not list uploads (logged as a warning, since
        ``cleanup`` and the listing of leftovers must work without that
        permission). A recursive listing is one :meth:`upload_list` call if
        the store's takes ``recursive``; else one per directory holding an
        object, which misses uploads in directories that hold none (see
        :meth:`upload_list`).
        """
        if not self._lists_uploads:
            return []
        bucket, key = self.split(directory)
        prefix = _dir_prefix(key)
        native = recursive and takes_keyword(type(self).upload_list, "recursive")
        prefixes = {prefix}
        if recursive and not native and type(self).object_find is not ObjectStore.object_find:
            # Written before `recursive`: asked in each directory that holds an object (see upload_list).
            prefixes.update(_dir_prefix(self.split(path)[1].rpartition("/")[0]) for path in self.find(directory))
        try:
            found: list[UploadStat] = self._run(self._upload_stats, bucket, sorted(prefixes), native)
        except StoragePermissionError as exc:
            _log.warning(
                "%s; unfinished uploads there are not listed as leftovers nor aborted by cleanup: grant the "
                "permission to list them (S3: s3:ListBucketMultipartUploads and s3:ListMultipartUploadParts), or "
                "let the store expire them (S3: a bucket lifecycle rule AbortIncompleteMultipartUpload)",
                exc,
            )
            return []
        uploads = {
            (u.key, u.upload_id): UnfinishedUpload(
                self.url(bucket, u.key), u.upload_id, u.started, u.modified, u.size, u.state
            )
            for u in found
            if u.key.startswith(prefix) and u.key != prefix and (recursive or "/" not in u.key[len(prefix) :])
        }
        return sorted(uploads.values(), key=lambda u: (u.path, u.upload_id))

    async def _upload_stats(self, bucket: str, prefixes: list[str], recursive: bool) -> list[UploadStat]:
        """What :meth:`upload_list` returns for each of ``prefixes``, asked together."""
        import asyncio

        kwargs = {"recursive": True} if recursive else {}

        async def one(prefix: str) -> list[UploadStat]:
            stats: list[UploadStat] = await self._retry(
                "listing the unfinished uploads in",
                bucket,
                prefix,
                lambda: self._call("upload_list", bucket, prefix, **kwargs),
            )
            return stats

        return [stat for stats in await asyncio.gather(*(one(p) for p in prefixes)) for stat in stats]

    def abort_uploads(self, uploads: Sequence[UnfinishedUpload]) -> None:
        """Abort uploads found by :meth:`unfinished_uploads`, together; ones gone already are skipped.

        Raises
        ------
        CheckpointError
            An abort failed for another reason (the first such failure; the
            others were still tried).
        """
        if uploads:
            self._run(self._abort_uploads_async, list(uploads))

    async def _abort_uploads_async(self, uploads: list[UnfinishedUpload]) -> None:
        import asyncio

        async def one(upload: UnfinishedUpload) -> None:
            bucket, key = self.split(upload.path)
            try:
                await self._retry(
                    "aborting the unfinished upload of", bucket, key, lambda: self._call("upload_abort", upload.handle)
                )
            except CheckpointNotFoundError:
                pass  # completed or aborted since it was listed

        results = await asyncio.gather(*(one(u) for u in uploads), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def join(self, directory: str, name: str) -> str:
        return _paths.join(directory, name)

    def close(self) -> None:
        """Stop accepting work and release the store's clients and thread pool; idempotent.

        Runs :meth:`aclose` on the store's loop and :meth:`close_client`
        (both do nothing unless a store overrides them: the built-in S3 and
        GCS stores share their fsspec filesystem with every store on the same
        bucket options, and that is closed at interpreter exit).
        """
        if self._closed:
            return
        try:
            try:
                if type(self).aclose is not ObjectStore.aclose:
                    self._submit(self.aclose()).result(self.transfer.request_timeout)
            finally:
                # The synchronous clients are released whatever happened to the asynchronous ones.
                self.close_client()
        finally:
            self._closed = True
            with self._pool_lock:
                pool, self._pool = self._pool, None
            if pool is not None and pool[0] == os.getpid():
                pool[1].shutdown(wait=False)


#: How messages name the options of this layer.
_OPTION: Final = "backend_options"


#: Exceptions of client libraries that say no connection could be made, by name (nothing is imported for them):
#: botocore's, aiohttp's, httpx's and urllib3's.
_CONNECT_ERRORS: Final = frozenset(
    {"EndpointConnectionError", "ClientConnectorError", "ConnectError", "NewConnectionError"}
)
#: Those that say a host name could not be resolved: aiohttp's and urllib3's (both also wrap a socket.gaierror).
_DNS_ERRORS: Final = frozenset({"ClientConnectorDNSError", "NameResolutionError"})
#: Attributes where client libraries keep the transport's exception without chaining it: aiohttp's
#: ``os_error`` (ClientConnectorError), azure-core's ``inner_exception`` (ServiceRequestError).
_UNCHAINED: Final = ("os_error", "inner_exception")
#: The query of a URL, absolute or not, up to a space, a quote or a bracket, if any of its parameters has a
#: value (``?a=b&...``, ``?uploads&key=...``, ``?comp=list&sig=...``): messages show none, since client
#: libraries quote the request's URL with its SAS, signature or API key. A query of bare words (``?uploads``)
#: holds no credential and is kept: it says which request it was.
_URL_QUERY: Final = re.compile(r"\?(?=[^\s'\"()<>]*=)[^\s'\"()<>]*")


class _NoConnection(NamedTuple):
    """What :func:`_no_connection` found."""

    #: The host name could not be resolved (``socket.gaierror``: a typo in the endpoint, or DNS), rather than
    #: nothing accepting the connection.
    unresolved: bool
    #: The host the chain names, if any: a resolution failure reads best with the name that failed, and only
    #: the client library's exceptions know it.
    host: str | None
    #: The outermost exception of a client library that says so (its words name the host and port, where outer
    #: ones tend to quote the request's URL), or the exception asked about when only the system's say so.
    said: BaseException


def _no_connection(exc: BaseException) -> _NoConnection | None:
    """What ``exc``, or an exception it was raised from, says of a connection that could not be made.

    ``None`` if no exception of the chain says so. The chain goes on through :data:`_UNCHAINED` attributes
    where an exception has neither a ``__cause__`` nor a ``__context__``.
    """
    import socket

    refused = unresolved = False
    host: str | None = None
    said: BaseException | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        # aiohttp's ClientConnectorError keeps the resolver's error as os_error, whether or not it chains it.
        os_error = getattr(current, "os_error", None)
        if isinstance(current, socket.gaierror) or isinstance(os_error, socket.gaierror) or name in _DNS_ERRORS:
            unresolved = True
        elif isinstance(current, ConnectionRefusedError) or name in _CONNECT_ERRORS:
            refused = True
        if said is None and (name in _DNS_ERRORS or name in _CONNECT_ERRORS):
            said = current
        host = host or _host_named(current)
        current = current.__cause__ or current.__context__ or _unchained(current)
    return _NoConnection(unresolved, host, said or exc) if unresolved or refused else None


def _unchained(exc: BaseException) -> BaseException | None:
    """The transport's exception ``exc`` keeps in one of the :data:`_UNCHAINED` attributes, if any."""
    for name in _UNCHAINED:
        inner = getattr(exc, name, None)
        if isinstance(inner, BaseException):
            return inner
    return None


def _host_named(exc: BaseException) -> str | None:
    """The host ``exc`` says it tried to reach: aiohttp's ``host``, urllib3's ``conn.host``, botocore's URL."""
    from urllib.parse import urlsplit

    for holder in (exc, getattr(exc, "conn", None)):
        host = getattr(holder, "host", None)
        if isinstance(host, str) and host:
            return host
    kwargs = getattr(exc, "kwargs", None)  # botocore's errors keep their format's fields here
    url = kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None
    return urlsplit(url).hostname if isinstance(url, str) else None


def _seconds(value: float) -> str:
    """``value`` seconds for a message: ``"2 s"``, ``"0.5 s"``."""
    return f"{value:g} s"


def _dir_prefix(key: str) -> str:
    """The key prefix of the objects in directory ``key``: ``"a/b/"`` for ``"a/b"``, ``""`` for the bucket."""
    return key.rstrip("/") + "/" if key.strip("/") else ""


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a timeout or was raised for one (botocore's ``ReadTimeoutError`` for aiohttp's)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bound: a chain could loop
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _consecutive(start: int, members: list[tuple[int, memoryview]]) -> list[memoryview] | None:
    """Views covering ``start`` onwards without a gap, the members' own where they are; ``None`` if two overlap.

    The bytes between members (at most ``coalesce_gap`` each) land in one
    throwaway buffer, reused for every gap: nobody reads it.
    """
    views: list[memoryview] = []
    gap: memoryview | None = None
    pos = start
    for offset, view in members:  # by offset (see _plan_reads)
        if offset < pos:
            return None  # the same bytes asked twice: only a scratch buffer can serve both
        if offset > pos:
            if gap is None or gap.nbytes < offset - pos:
                gap = memoryview(bytearray(offset - pos))
            views.append(gap[: offset - pos])
        views.append(view)
        pos = offset + view.nbytes
    return views


class _Cursor:
    """Where the next bytes of a body go among several views, filled in order."""

    def __init__(self, outs: Sequence[memoryview]) -> None:
        self.remaining = sum(out.nbytes for out in outs)
        self.filled = 0
        self._outs = iter(outs)
        self._out = next(self._outs, None)
        self._pos = 0

    def put(self, chunk: bytes | bytearray | memoryview) -> None:
        """Copy ``chunk`` into the views; bytes beyond the last view are dropped."""
        data, at = memoryview(chunk).cast("B"), 0
        while at < data.nbytes and self._out is not None:
            out, pos = self._out, self._pos
            if pos == out.nbytes:
                self._out, self._pos = next(self._outs, None), 0
                continue
            take = min(out.nbytes - pos, data.nbytes - at)
            out[pos : pos + take] = data[at : at + take]
            self._pos, at = pos + take, at + take
        self.filled += at
        self.remaining -= at


async def fill_views(read: Callable[[int], Awaitable[bytes]], outs: Sequence[memoryview], chunk: int = _MiB) -> int:
    """Stream a response body into ``outs``, one view after another; return how many bytes arrived.

    Parameters
    ----------
    read
        The body's read: ``await read(n)`` returns at most ``n`` bytes, and
        ``b""`` at the end (aiohttp's ``StreamReader.read``, aiobotocore's
        ``StreamingBody.read``).
    outs
        Writable byte views, filled in order.
    chunk
        The most bytes asked of ``read`` at once; it is never asked for more
        than the views still hold.

    Returns
    -------
    int
        The bytes written; less than the views' total when the body ended
        early (the caller raises :class:`~trackpoint.errors.DataLossError`).
    """
    cursor = _Cursor(outs)
    while cursor.remaining:
        data = await read(min(chunk, cursor.remaining))
        if not data:
            break
        cursor.put(data)
    return cursor.filled


def fill_views_from(chunks: Iterable[bytes | bytearray | memoryview], outs: Sequence[memoryview]) -> int:
    """:func:`fill_views` for a client that hands a body over as an iterable of chunks (a synchronous SDK).

    Chunks are taken until the views are full or the body ends; the bytes
    written are returned.
    """
    cursor = _Cursor(outs)
    if cursor.remaining:
        for data in chunks:
            cursor.put(data)
            if not cursor.remaining:
                break  # a chunk more would be a request more for a lazy body
    return cursor.filled


class _UploadSink(FileSink):
    """A streaming upload: one request if small, else parts with bounded memory.

    Data is buffered up to ``part_size``. The first full part starts a
    multipart (S3) or resumable (GCS) upload and is sent in the background
    while the caller keeps writing; at most ``max_inflight_parts`` parts are
    in flight (one for stores whose parts must be sequential), so memory stays
    below ``part_size * (max_inflight_parts + 1)`` plus the held-back bytes.

    The first full part is held back until ``min_part_size`` (at least
    64 KiB) more bytes have arrived behind it, so an object a little larger
    than one part (a 16 MiB Zarr chunk with its 4-byte checksum) still goes
    in one request at close, instead of an upload of a full part and a tiny
    one (three or four requests).
    """

    def __init__(self, layer: ObjectStore, bucket: str, key: str, cond: Condition) -> None:
        self._layer = layer
        self._bucket = bucket
        self._key = key
        self._cond = cond
        self._write_id = uuid.uuid4().hex
        self._buf = bytearray()
        self._over = bytearray()  # bytes behind a full first part, before the upload starts
        self._offset = 0
        self._state: Any = None
        self._parts: list[concurrent.futures.Future[Any]] = []
        self._lock = threading.Lock()
        self._done = False
        # Set by abort: parts in flight then make no further attempt.
        self._aborting = threading.Event()
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
            if not self._layer._multipart:
                # No multipart uploads: the whole object goes in one put at close.
                self._buf += view
                return
            pos = 0
            least = max(self._layer.min_part_size, _HOLD_BACK)
            while pos < view.nbytes:
                size = self._part_size()
                if len(self._buf) >= size and (self._state is not None or len(self._over) >= least):
                    # A full part goes once more bytes follow it; the last one goes with close.
                    self._send_part(total=None)
                    continue
                if len(self._buf) < size:
                    take = min(size - len(self._buf), view.nbytes - pos)
                    self._buf += view[pos : pos + take]
                else:
                    # Before the first part only (see the class docstring): the full part waits while up to
                    # the smallest part's worth of bytes (at least _HOLD_BACK) gathers behind it.
                    take = min(least - len(self._over), view.nbytes - pos)
                    self._over += view[pos : pos + take]
                pos += take

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
        # The part becomes bytes here, once, and the buffer is dropped: clients
        # send bytes (S3 and GCS would otherwise copy it per request and hold
        # both copies while the part is in flight).
        data, self._buf, self._over = memoryview(bytes(self._buf)), self._over, bytearray()
        number, offset = len(self._parts), self._offset
        self._offset += data.nbytes
        state = self._state
        fut = layer._submit(
            layer._retry(
                f"uploading part {number} of",
                self._bucket,
                self._key,
                lambda: layer._call("upload_part", state, number, offset, data, total),
                stop=self._aborting.is_set,
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
                    self._buf += self._over
                    self._over = bytearray()
                    self.version = layer._run(
                        layer._put_checked, self._bucket, self._key, memoryview(self._buf), self._cond
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
            self._buf = self._over = bytearray()

    async def _begin(self) -> Any:
        layer = self._layer
        try:
            return await layer._retry(
                "starting an upload of",
                self._bucket,
                self._key,
                lambda: layer._call("upload_begin", self._bucket, self._key, self._cond, self._write_id),
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
                lambda: layer._call("upload_finish", self._state, parts, total),
            )
        except _PreconditionFailed as exc:
            mine = await layer._settled_by_us(self._bucket, self._key, self._write_id)
            if mine is not None:
                return mine.version
            raise layer._conflict(self._bucket, self._key, self._cond, exc) from exc.cause

    def _abort_locked(self) -> None:
        self._done = True
        self._buf = self._over = bytearray()
        self._aborting.set()
        layer = self._layer
        # Parts in flight finish their current attempt (no retry follows: _aborting) before the abort request,
        # rather than being cancelled: cancelling a run_coroutine_threadsafe future marks it done at once
        # while its request may still be in flight, and a part that lands after the abort request can leave
        # the multipart upload behind. While the store answers, that is at most one request_timeout.
        if layer._gave_up_at is None:
            concurrent.futures.wait(self._parts)
        # The rest is clean-up after a failure, under the store's clean-up budget: when the store stopped
        # answering, the request that gave up has waited out the retry limits already, and this must not wait
        # them out again for the other parts and the abort request. Parts still in flight when the budget ends
        # are left to the risk above: a leftover upload is listed and aborted by cleanup(directory), or
        # expired by the store.
        with layer.cleaning_up():
            concurrent.futures.wait(self._parts, timeout=layer._budget_left())
            state, self._state = self._state, None
            if state is not None:
                try:
                    layer._run(
                        layer._retry,
                        "aborting the upload of",
                        self._bucket,
                        self._key,
                        lambda: layer._call("upload_abort", state),
                    )
                except Exception as exc:  # noqa: BLE001 - best effort: cleanup(directory) or the store's expiry gets it
                    _log.debug("%s: the upload of %r was not aborted: %s", layer.store_name, self._where(), exc)

    def abort(self) -> None:
        with self._lock:
            if not self._done:
                self._abort_locked()
