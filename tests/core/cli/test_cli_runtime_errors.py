"""Usage banners belong to usage errors: a store that cannot be reached fails with one line, status 4.

``trackpoint convert --backend azure az://c/run/ckpt-1 out/ckpt-1`` without an account configured printed
argparse's usage banner and exit status 2: the refusal was a plain ``BackendError``, and ``--backend azure``
does not serve the local destination, so the command line was blamed. A backend failing on a URL it serves
is the store's failure, whatever else the flag names; every command is checked here, and the advice of a
store's message names the flags (``-o key=...``, ``--backend-option retries``), not the Python API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
import trackpoint.plugins
from trackpoint.errors import BackendError

_REFUSAL = "needy: no endpoint is configured for"


class _NeedyPlugin:
    """A backend whose store needs an endpoint nobody configured, as the azure plugin without an account."""

    @trackpoint.plugins.hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        def factory(url: str, options: tp.CheckpointOptions) -> Any:
            raise BackendError(f"{_REFUSAL} {url!r}; pass -o endpoint_url=URL", backend="needy", url=url)

        register(trackpoint.plugins.BackendSpec("needy", factory, schemes=("needy",)))


@pytest.fixture
def needy() -> Iterator[str]:
    trackpoint.plugins.register(_NeedyPlugin(), "needy-plugin")
    try:
        yield "needy://bucket/run"
    finally:
        trackpoint.plugins.unregister("needy-plugin")


def _one_failure(result: Any, status: int = 4) -> str:
    """The one line of a runtime failure: the status, no usage banner, nothing on stdout."""
    assert (result.returncode, result.stdout) == (status, ""), result.stderr
    assert "usage:" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


@pytest.mark.parametrize("flag", [(), ("--backend", "needy")])
@pytest.mark.parametrize(
    "command",
    [
        ("ls", "{remote}"),
        ("ls", "--all", "{remote}"),
        ("cleanup", "{remote}"),
        ("inspect", "{remote}/ckpt-1"),
        ("inspect", "--tree", "{remote}/ckpt-1"),
        ("diff", "{remote}/ckpt-1", "{local}"),
        ("convert", "{remote}/ckpt-1", "{out}"),
        ("convert", "{remote}/ckpt-1", "{out}.safetensors"),
    ],
)
def test_a_store_without_its_endpoint_is_a_failure_on_every_command(
    tmp_path: Path, cli: Any, needy: str, command: tuple[str, ...], flag: tuple[str, ...]
) -> None:
    local = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))
    args = [a.format(remote=needy, local=local, out=tmp_path / "out" / "ckpt-1") for a in command]
    line = _one_failure(cli(*args, *flag))
    assert line.startswith(f"trackpoint {command[0]}: BackendError: {_REFUSAL} '{needy}")
    failed = cli(*args, *flag, "--json")
    assert failed.returncode == 4 and json.loads(failed.stdout)["error"]["type"] == "BackendError"


def test_a_diff_with_a_local_side_needs_no_endpoint(tmp_path: Path, cli: Any, needy: str) -> None:
    local = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))
    line = _one_failure(cli("diff", local, f"{needy}/ckpt-1"))
    assert line.startswith(f"trackpoint diff: BackendError: {_REFUSAL} '{needy}/ckpt-1")


@pytest.mark.parametrize("flag", [(), ("--backend", "needy")])
def test_verify_reports_a_store_without_its_endpoint_as_unreadable_and_goes_on(
    tmp_path: Path, cli: Any, needy: str, flag: tuple[str, ...]
) -> None:
    """It used to stop at that store, leaving the other checkpoints unverified."""
    local = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))
    paths = [f"{needy}/ckpt-1"] if flag else [f"{needy}/ckpt-1", local]
    result = cli("verify", *paths, *flag)
    assert result.returncode == 4 and "usage:" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"UNREADABLE {needy}/ckpt-1"
    assert lines[1].startswith(f"  (checkpoint): BackendError: {_REFUSAL}")
    if not flag:
        assert lines[2] == f"OK       {local}  (1 tensor, 8 B, bundle)"
    assert result.stderr.startswith("trackpoint verify: could not read 1 of ")
    data = json.loads(cli("verify", *paths, *flag, "--json").stdout)
    assert data["checkpoints"][0]["status"] == "unreadable"


def test_a_copy_to_a_store_without_its_endpoint_is_a_failure(tmp_path: Path, cli: Any, needy: str) -> None:
    local = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))
    line = _one_failure(cli("convert", local, f"{needy}/ckpt-1", "--dst-backend", "needy"))
    assert line.startswith(f"trackpoint convert: BackendError: {_REFUSAL}")


def test_a_backend_that_does_not_serve_a_path_stays_a_usage_error(tmp_path: Path, cli: Any) -> None:
    """The other side of the rule: ``--backend memory`` for an S3 URL is the command line's mistake."""
    result = cli("ls", "s3://bucket/run", "--backend", "memory")
    assert result.returncode == 2 and result.stderr.startswith("usage: trackpoint ls ")


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws_credentials")
def test_an_unreachable_s3_endpoint_says_what_to_do_in_the_flags_terms(cli: Any) -> None:
    endpoint = ["-o", "endpoint_url=http://127.0.0.1:9"]  # the discard port: connection refused
    refused = cli("ls", "s3://bucket/x", *endpoint, "-o", "key=a", "-o", "secret=b", "--backend-option", "retries=0")
    line = _one_failure(refused)
    assert line.startswith("trackpoint ls: TransientStorageError: s3: listing 's3://bucket/x/' ")
    assert "--backend-option retries" in line and "backend_options" not in line
    anonymous = _one_failure(cli("ls", "s3://bucket/x", *endpoint))
    assert anonymous.startswith("trackpoint ls: StoragePermissionError: s3: ")
    assert "-o key=" in anonymous and "storage_options" not in anonymous


def test_the_python_apis_option_names_become_flags() -> None:
    from trackpoint.cli._app import _in_flag_terms

    assert _in_flag_terms(
        "pass storage_options={'key': ..., 'secret': ...} (or 'profile'), or storage_options={'anon': True}; "
        "is storage_options['endpoint_url'] right? raise backend_options['retries'] and "
        "backend_options['retry_deadline']"
    ) == (
        "pass -o key=... -o secret=... (or 'profile'), or -o anon=true; is -o endpoint_url right? raise "
        "--backend-option retries and --backend-option retry_deadline"
    )


def test_a_backend_option_reaches_the_backend_and_a_wrong_one_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    zarr = ("--dst-backend", "zarr")
    local = tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "ckpt-1"))
    wrong = cli("convert", local, str(tmp_path / "z" / "ckpt-1"), *zarr, "--dst-backend-option", "nosuch=1")
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: trackpoint convert ")
    assert "unknown backend option" in wrong.stderr and "nosuch" in wrong.stderr
    done = cli("convert", local, str(tmp_path / "z" / "ckpt-1"), *zarr, "--dst-backend-option", "checksum=false")
    assert done.returncode == 0, done.stderr
