"""tests/azurite.py: where the emulator comes from, when tests skip, and that it never outlives pytest."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

import azurite as azurite_module
from azurite import Azurite


def test_the_fixture_serves_the_development_account(azurite: Azurite, azurite_container: str) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    assert azurite_container in [c.name for c in service.list_containers()]
    assert azurite.account_url == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"


def test_the_npm_install_is_never_committed() -> None:
    # Worktrees link plugins/azure/node_modules to one shared install. Committed, that link replaced the
    # install itself when a checkout of the commit reached the tree that held it (git deletes ignored files
    # in the way of tracked ones), and every Azurite test failed.
    root = Path(azurite_module.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "plugins/azure/node_modules"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == [], "plugins/azure/node_modules is tracked: run `git rm --cached plugins/azure/node_modules`"
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "plugins/azure/node_modules"], cwd=root)
    assert ignored.returncode == 0, "plugins/azure/.gitignore must ignore node_modules, as a folder and as a link"


def test_skips_without_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="node is not installed"):
        azurite_module.azurite_executable()


def test_fails_with_the_install_command_when_azurite_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    monkeypatch.setenv("PATH", str(Path(node).parent))
    monkeypatch.delenv("AZURITE_BLOB", raising=False)
    monkeypatch.setattr(azurite_module, "_NPM_PREFIX", tmp_path)
    if shutil.which("azurite-blob") is not None:
        pytest.skip("a global azurite-blob sits next to node")
    with pytest.raises(pytest.fail.Exception, match="Azurite is not installed .*npm ci --prefix plugins/azure"):
        azurite_module.azurite_executable()


def test_a_bad_explicit_executable_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    monkeypatch.setenv("AZURITE_BLOB", str(tmp_path / "nothing"))
    with pytest.raises(pytest.fail.Exception, match=r"\$AZURITE_BLOB=.* is not an executable azurite-blob"):
        azurite_module.azurite_executable()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited all the same.
    status = Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split(") ")[-1].startswith("Z")


@pytest.mark.slow
def test_azurite_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    azurite_module.azurite_executable()  # skip here, not in the child, when node is missing
    tests_dir = Path(azurite_module.__file__).parent
    child = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(tests_dir)!r})
        from azurite import start_azurite
        server, proc = start_azurite({str(tmp_path)!r})
        print(proc.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"azurite-blob (pid {pid}) outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
