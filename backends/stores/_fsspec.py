"""The one place trackpoint builds fsspec filesystems (S3 through s3fs, GCS through gcsfs).

The bundle stores (:mod:`trackpoint.backends.stores.s3`,
:mod:`trackpoint.backends.stores.gcs`) and the Zarr format on S3/GCS get the
same filesystem class and settings for the same ``storage_options`` from
:func:`filesystem`, which also closes every client it built at interpreter
exit, on the loop the client lives on. The storage libraries are imported
only when a filesystem is built.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from trackpoint.errors import BackendError, BackendOptionError, StoragePermissionError, redact

if TYPE_CHECKING:
    import asyncio  # imported where used (see trackpoint.backends.stores.objectstore)

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "FILESYSTEM_KINDS", "accepted_options", "filesystem"]

#: Seconds one request may take unless ``backend_options['request_timeout']`` says otherwise.
DEFAULT_REQUEST_TIMEOUT: Final = 60.0


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
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_connections: int | None = None,
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
    * S3: ``connect_timeout`` and ``read_timeout`` from ``request_timeout``,
      and a connection pool of ``max_connections`` (botocore's default of 10
      would cap a store that sends 16 requests at once).

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
    max_connections
        S3: connections the client keeps open at most (``None``: botocore's
        default). The caller's ``config_kwargs`` win.

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
        if max_connections is not None:
            config.setdefault("max_pool_connections", max_connections)
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


def _parameters(*functions: Any) -> set[str]:
    """The names of the named parameters of ``functions`` (their ``**kwargs`` aside)."""
    import inspect

    names: set[str] = set()
    for function in functions:
        parameters = inspect.signature(function).parameters.values()
        names.update(p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return names - {"self"}


@functools.lru_cache(maxsize=8)
def accepted_options(filesystem_class: Any, *extra: Any) -> frozenset[str]:
    """The storage options ``filesystem_class`` uses: its constructors' parameters, fsspec's listing cache's,
    and those of ``extra`` (where the class passes its ``**kwargs`` on: botocore's session for S3)."""
    from fsspec.dircache import DirCache

    constructors = [k.__dict__["__init__"] for k in filesystem_class.__mro__ if "__init__" in k.__dict__]
    # Cached: signatures are read by inspect, and every new file system (one per distinct options) asks.
    return frozenset(_parameters(*constructors[:-1], DirCache.__init__, *extra) | {"skip_instance_cache"})


def _construct(kind: str, opts: Mapping[str, Any]) -> Any:
    # A name the file system would not use is refused here, with the closest it would. s3fs hands names it does
    # not know to botocore's session, which refuses them only at the first request, as a failed listing; gcsfs
    # drops them unread: either way a misspelt endpoint_url would send the save to the real service, or fail
    # far from its cause. S3Options and GCSOptions declare no option of their own (every name passes through),
    # so resolving them checks the names only, and the library gets the options exactly as they were given.
    if kind == "s3":
        import s3fs

        from trackpoint.backends.stores.s3 import S3Options

        S3Options.from_storage_options(opts)
        _check_endpoint(kind, opts)
        return s3fs.S3FileSystem(**opts)
    from gcsfs.core import GCSFileSystem

    from trackpoint.backends.stores.gcs import GCSOptions

    GCSOptions.from_storage_options(opts)
    _check_endpoint(kind, opts)

    token = opts.get("token")
    if isinstance(token, str) and token not in _GCS_TOKEN_METHODS and token.endswith(".json"):
        if not os.path.exists(token):
            # gcsfs would take the path for an access token and send it to Google to validate.
            raise StoragePermissionError(
                f"gcs: storage_options['token'] names a file that does not exist: {token!r}; give the path of a "
                f"service-account JSON file, {_GCS_TOKEN_HINT}"
            )
    try:
        return GCSFileSystem(**opts)
    except Exception as exc:
        if token is None:
            raise
        # Setting up the given credentials failed. The client's message may quote the token (it validates
        # one by a request whose URL holds it), so it is shown redacted and not chained.
        raise StoragePermissionError(
            f"gcs: the credentials given by storage_options['token'] could not be set up "
            f"({type(exc).__name__}: {redact(str(exc), opts)[:300]}); give {_GCS_TOKEN_HINT}"
        ) from None


def _check_endpoint(kind: str, opts: Mapping[str, Any]) -> None:
    """Refuse an ``endpoint_url`` without its scheme, which the client libraries take for a bad URL only at a request.

    botocore fails every request with "Invalid endpoint" (after the retries, as a storage failure), and a
    host and port alone (``127.0.0.1:9000``) is the usual slip when pointing a job at a local emulator.
    """
    client_kwargs = opts.get("client_kwargs")
    for name, url in (
        ("['endpoint_url']", opts.get("endpoint_url")),
        (
            "['client_kwargs']['endpoint_url']",
            client_kwargs.get("endpoint_url") if isinstance(client_kwargs, Mapping) else None,
        ),
    ):
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            raise BackendOptionError(
                f"{kind}: storage_options{name} is {url!r}, with no scheme: give the whole URL, "
                f"http://{url} (an emulator on this machine) or https://{url}"
            )


#: gcsfs's names of credential methods, given as ``token``.
_GCS_TOKEN_METHODS: Final = frozenset({"google_default", "cache", "anon", "browser", "cloud"})
_GCS_TOKEN_HINT: Final = (
    "a valid access token or credentials object, 'anon' (public buckets, emulators), 'google_default', 'cache' or "
    "'cloud', or leave 'token' unset for Google's default chain"
)


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
            import asyncio

            asyncio.run_coroutine_threadsafe(_aclose(b), loop).result(timeout)
