"""Mistakes of a first command line: a URL scheme or an option nothing takes, a checkpoint's file passed for it,
and the library's warnings, said once and in the command line's terms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp


def _run_of_two(directory: Path) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.arange(3, dtype=np.float32)))
    with tp.CheckpointManager(ckpt, str(directory), max_to_keep=None) as manager:
        manager.save()
        manager.save()


def _command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trackpoint`` in a process of its own: stderr as a user sees it, the library's log included
    (in this process pytest's log capture would take the warnings)."""
    return subprocess.run(
        [sys.executable, "-m", "trackpoint", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# ------------------------------------------------------------------ a path no store can use
@pytest.mark.parametrize("scheme", ["foo", "zarr+foo"])
def test_a_url_scheme_no_backend_serves_is_a_usage_error_naming_the_flag(cli: Any, scheme: str) -> None:
    url = f"{scheme}://bucket/run"
    done = cli("ls", url)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: trackpoint ls ")
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"trackpoint ls: error: UnknownBackendError: no backend serves the URL scheme '{scheme}'")
    assert last.endswith("Install or register a plugin for it, or choose a backend with --backend")
    assert "CheckpointOptions" not in done.stderr
    failure = json.loads(cli("verify", url, "--json").stdout)["error"]
    assert (failure["type"], failure["status"]) == ("UnknownBackendError", 2)


def test_the_json_message_of_a_usage_error_does_not_repeat_its_type(cli: Any, tmp_path: Path) -> None:
    for path in (f"file://server{tmp_path}", "foo://bucket/run"):
        done = cli("ls", path, "--json")
        failure = json.loads(done.stdout)["error"]
        assert failure["status"] == 2
        assert not failure["message"].startswith(failure["type"]), failure
        # stderr still names it, as every failure there does.
        assert done.stderr.splitlines()[-1] == f"trackpoint ls: error: {failure['type']}: {failure['message']}"


# ------------------------------------------------------------------ options nothing takes
@pytest.mark.parametrize(("flag", "kind"), [(["-o", "foo=bar"], "storage"), (["--backend-option", "foo=1"], "backend")])
def test_an_option_no_store_of_a_local_path_takes_is_a_usage_error(
    cli: Any, tmp_path: Path, flag: list[str], kind: str
) -> None:
    given = f"{flag[0]} foo"
    for name in ("ls", "verify", "inspect", "json"):
        # A directory each: the library says this of a location once per process, and each command is one.
        run = tmp_path / name / "run"
        _run_of_two(run)
        command = ["ls", str(run)] if name in ("ls", "json") else [name, str(run / "ckpt-1")]
        if name == "json":
            failure = json.loads(cli(*command, *flag, "--json").stdout)["error"]
            assert (failure["type"], failure["status"]) == ("BackendOptionError", 2)
            continue
        done = cli(*command, *flag)
        assert (done.returncode, done.stdout) == (2, ""), command
        assert done.stderr.startswith(f"usage: trackpoint {command[0]} ")
        errors = [line for line in done.stderr.splitlines() if line.startswith(f"trackpoint {command[0]}:")]
        assert len(errors) == 1, done.stderr  # said once, not once per format
        assert errors[0].startswith(
            f"trackpoint {command[0]}: error: BackendOptionError: {given}: the bundle backend takes no {kind} options "
            "on the local disk"
        )
        assert errors[0].endswith(f"or drop {given}")
        assert "storage_options" not in done.stderr and "backend_options" not in done.stderr


def test_a_zarr_option_for_a_local_directory_is_taken(cli: Any, tmp_path: Path) -> None:
    # Both formats read a local directory: a backend option of Zarr's is not a mistake there.
    run = tmp_path / "run"
    _run_of_two(run)
    done = cli("ls", str(run), "--backend-option", "checksum=false")
    assert (done.returncode, done.stderr) == (0, "")


# ------------------------------------------------------------------ the library's warnings
def test_a_warning_of_the_library_is_said_once_in_the_command_lines_terms(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    (run / "checkpoint").write_bytes(bytes(range(128, 256)))
    done = _command("ls", str(run))
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1].split()[-1] == "latest"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"trackpoint ls: the checkpoint state file {str(run / 'checkpoint')!r} is not a text-format CheckpointState"
    )
    assert lines[0].endswith("delete it or let the next save of a CheckpointManager there write a new one; ignoring it")
    assert "update_checkpoint_state" not in done.stderr


def test_a_backend_chosen_by_the_environment_is_explained_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    zarr = {"TRACKPOINT_BACKEND": "zarr"}
    done = _command("ls", str(run), env=zarr)
    assert done.returncode == 0
    assert done.stdout.startswith(f"no checkpoints in {run} for the zarr backend")
    assert done.stderr == ""  # the listing says it; the library's warning, in the Python API's terms, is not added
    # A zarr checkpoint older than the bundle ones: the library's warning, in the command line's terms.
    tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32))).write(
        str(run / "ckpt-0"), tp.CheckpointOptions(backend="zarr")
    )
    listed = _command("ls", str(run), env=zarr)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[0] == "ckpt-0"
    assert len(listed.stderr.splitlines()) == 1, listed.stderr
    assert "read one of those with --backend <its backend>" in listed.stderr
    assert "drop --backend" in listed.stderr and "CheckpointOptions" not in listed.stderr


# ------------------------------------------------------------------ verify of a foreign file
def test_verify_of_a_foreign_file_says_there_is_no_checkpoint_as_inspect_does(cli: Any, tmp_path: Path) -> None:
    pt = tmp_path / "model.pt"
    with zipfile.ZipFile(pt, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    inspected = cli("inspect", str(pt))
    assert inspected.returncode == 3 and "ForeignCheckpointError" in inspected.stderr
    verified = cli("verify", str(pt))
    assert verified.returncode == 1
    lines = verified.stdout.splitlines()
    assert lines[0] == f"MISSING  {pt}"  # no checkpoint there, as for any path without one: not DAMAGED
    assert lines[1].startswith(f"  (checkpoint): ForeignCheckpointError: no checkpoint at {str(pt)!r}: it is a PyTorch")
    report = json.loads(cli("verify", str(pt), "--json").stdout)["checkpoints"][0]
    assert (report["status"], report["problems"][0]["error"]) == ("missing", "ForeignCheckpointError")
