"""Azurite, the Azure Blob Storage emulator, as a session-scoped pytest fixture.

Azurite is an npm package pinned in ``plugins/azure/package.json`` and
installed next to it with ``npm ci --prefix plugins/azure``. The fixture runs
its blob service (``azurite-blob``) in a subprocess on a free port of
127.0.0.1, keeps every blob in memory (``--inMemoryPersistence``), and stops
it at the end of the session; the server also dies with the test process if
that is SIGKILLed (``PR_SET_PDEATHSIG``), so none is ever orphaned.

Use it from a test module or a ``conftest.py`` by importing the fixtures
(``tests/`` is on ``sys.path`` through ``pythonpath`` in ``pyproject.toml``)::

    from azurite import azurite, azurite_container  # noqa: F401 - fixtures

Fixtures
--------
``azurite``            session, an :class:`Azurite` (endpoint, account, key, connection string)
``azurite_container``  function, the name of a fresh empty container, deleted afterwards

Tests are skipped only when ``node`` is not on ``PATH``. When node is there
but Azurite is not installed the fixture fails and says how to install it:
a missing emulator must not turn the Azure tests into silent skips in CI.

The account is Azurite's well-known development account ``devstoreaccount1``
with its published key; nothing here can reach a real Azure account.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port, stop_process

__all__ = [
    "ACCOUNT_KEY",
    "ACCOUNT_NAME",
    "Azurite",
    "azurite",
    "azurite_container",
    "azurite_executable",
    "start_azurite",
]

#: Azurite's built-in development account and its published key.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_ROOT = Path(__file__).resolve().parents[1]
_NPM_PREFIX = _ROOT / "plugins" / "azure"
#: Set to the path of an ``azurite-blob`` executable to use that one instead.
_EXECUTABLE_ENV = "AZURITE_BLOB"
_INSTALL_HINT = f"install it with `npm ci --prefix {_NPM_PREFIX.relative_to(_ROOT)}` from the repository root"
# Node loads a few hundred modules before it listens: 1-6 s measured here.
_STARTUP_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Azurite:
    """A running Azurite blob service.

    Attributes
    ----------
    host, port
        Where it listens (always 127.0.0.1).
    account_name, account_key
        The development account (``devstoreaccount1``) and its key.
    """

    host: str
    port: int
    account_name: str = ACCOUNT_NAME
    account_key: str = ACCOUNT_KEY

    @property
    def account_url(self) -> str:
        """Blob endpoint of the account, path-style: ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://{self.host}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """Connection string for ``BlobServiceClient.from_connection_string`` or ``AZURE_STORAGE_CONNECTION_STRING``."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.account_url};"
        )


def azurite_executable() -> str:
    """Path of ``azurite-blob``: ``$AZURITE_BLOB``, the npm install in ``plugins/azure``, or ``PATH``.

    Skips the calling test when node is not installed; fails when node is but
    Azurite is not, naming the install command.
    """
    if shutil.which("node") is None:
        pytest.skip("node is not installed, so the Azurite emulator cannot run (install Node.js >= 18 and npm)")
    explicit = os.environ.get(_EXECUTABLE_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"${_EXECUTABLE_ENV}={explicit!r} is not an executable azurite-blob; unset it or fix the path")
        return explicit
    local = _NPM_PREFIX / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found is None:
        pytest.fail(f"Azurite is not installed (no {local} and no azurite-blob on PATH); {_INSTALL_HINT}")
    return found


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; the setting survives the exec
    # into node, so the kernel SIGTERMs Azurite when the test process dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite-blob exited with code {proc.returncode} during start-up")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (an unsigned request gets 403) means it is serving
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"azurite-blob did not answer on {url} within {timeout:.0f} s")


def start_azurite(workdir: str) -> tuple[Azurite, subprocess.Popen[bytes]]:
    """Start ``azurite-blob`` on a free port of 127.0.0.1; return it once it answers.

    ``workdir`` becomes its working directory, so nothing it might write lands
    in the repository. The caller stops it with
    :func:`servers.stop_process`.
    """
    port = free_port()
    cmd = [
        azurite_executable(),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--inMemoryPersistence",  # nothing on disk; every session starts empty
        "--skipApiVersionCheck",  # a newer SDK than this Azurite release must still work
        "--disableTelemetry",  # Azurite otherwise tries to send usage data
        "--silent",  # no access log
    ]  # fmt: skip
    # stderr goes to a file, not a pipe: nobody drains a pipe after start-up,
    # and a full or closed one could stall or kill the server mid-session.
    log_path = Path(workdir) / "azurite-stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
    server = Azurite("127.0.0.1", port)
    try:
        _wait_ready(server.account_url + "?comp=list", proc, _STARTUP_TIMEOUT)
    except RuntimeError as exc:
        stop_process(proc)
        err = log_path.read_text("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{exc}; its stderr:\n{err}") from None
    return server, proc


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A session-wide Azurite blob service (one per xdist worker)."""
    with tempfile.TemporaryDirectory(prefix="tp-azurite-") as workdir:
        server, proc = start_azurite(workdir)
        try:
            yield server
        finally:
            stop_process(proc)


@pytest.fixture
def azurite_container(azurite: Azurite) -> Iterator[str]:
    """A fresh, empty container on ``azurite``; deleted (with its blobs) after the test."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = "tp-" + uuid.uuid4().hex[:20]
    service.create_container(name)
    try:
        yield name
    finally:
        # Frees the emulator's memory; a container a test already deleted is fine.
        from azure.core.exceptions import ResourceNotFoundError

        try:
            service.delete_container(name)
        except ResourceNotFoundError:
            pass
        service.close()
