"""The shell steps of docs/try-locally.md work: its commands start both emulators, and its exports reach them.

tests/test_docs_blocks.py runs the page's Python blocks against the session's
servers. This test covers what it cannot: the ``bash`` block that starts the
emulators is run as written, with one change: the documented ports (those of
the exported endpoints) become free ports, so that the test never collides
with a server already running on this machine. Then each exported endpoint
must answer as its emulator.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from docblocks import blocks, shell_exports
from servers import free_port

pytestmark = [pytest.mark.s3, pytest.mark.gcs, pytest.mark.timeout(60)]

PAGE = "try-locally.md"
#: Exported variable -> a path on that endpoint that answers 200 when the emulator is up.
HEALTH = {"AWS_ENDPOINT_URL": "/moto-api/", "STORAGE_EMULATOR_HOST": "/storage/v1/b"}


def _start_block() -> str:
    (code,) = [b.code for b in blocks(PAGE) if b.lang == "bash" and "moto_server" in b.code]
    return code


def _wait_ok(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the documented start commands exited with code {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f} s")


def test_documented_commands_start_the_emulators_the_exports_point_at(tmp_path: Path) -> None:
    exports = dict(shell_exports(blocks(PAGE)))
    code = _start_block()
    endpoints = {}
    for name in HEALTH:
        documented = urlsplit(exports[name])
        assert documented.hostname == "127.0.0.1" and documented.port, exports[name]
        # The start commands must use the very port the export names.
        assert re.search(rf"\b{documented.port}\b", code), f"{name}={exports[name]} but no server starts on that port"
        port = free_port()
        code = re.sub(rf"\b{documented.port}\b", str(port), code)
        endpoints[name] = f"http://127.0.0.1:{port}"
    # `wait` keeps the shell (and with it the process group) alive while the servers run.
    proc = subprocess.Popen(["bash", "-c", code + "wait\n"], cwd=tmp_path, start_new_session=True)
    try:
        for name, path in HEALTH.items():
            _wait_ok(endpoints[name] + path, proc)
        # fake-gcs-server was given the right -external-url: a bucket made there is listed there.
        requests.post(endpoints["STORAGE_EMULATOR_HOST"] + "/storage/v1/b", json={"name": "probe"}, timeout=5)
        listed = requests.get(endpoints["STORAGE_EMULATOR_HOST"] + "/storage/v1/b", timeout=5).json()
        assert [b["name"] for b in listed["items"]] == ["probe"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    assert (tmp_path / "moto.log").exists()  # the documented redirection
