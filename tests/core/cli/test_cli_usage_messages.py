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
@pytest.mark.parametrize(
    ("flag", "said"),
    [
        (["-o", "foo=bar"], "-o foo: the bundle and zarr backends take no storage options on the local disk"),
        (["--backend-option", "foo=1"], "--backend-option foo: zarr: unknown backend option(s) foo; valid options:"),
        (
            ["--backend-option", "retries=3"],
            "--backend-option retries: the bundle and zarr backends take no backend options on the local disk",
        ),
    ],
)
def test_an_option_no_store_of_a_local_path_takes_is_a_usage_error(
    cli: Any, tmp_path: Path, flag: list[str], said: str
) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    for command in (["ls", str(run)], ["verify", str(run / "ckpt-1")], ["inspect", str(run / "ckpt-1")]):
        done = cli(*command, *flag)
        assert (done.returncode, done.stdout) == (2, ""), command
        assert done.stderr.startswith(f"usage: trackpoint {command[0]} ")
        errors = [line for line in done.stderr.splitlines() if line.startswith(f"trackpoint {command[0]}:")]
        assert len(errors) == 1, done.stderr  # said once, not once per format
        assert errors[0].startswith(f"trackpoint {command[0]}: error: BackendOptionError: {said}"), errors[0]
        assert "storage_options" not in done.stderr and "backend_options" not in done.stderr
    failure = json.loads(cli("ls", str(run), *flag, "--json").stdout)["error"]
    assert (failure["type"], failure["status"]) == ("BackendOptionError", 2)


def test_options_a_local_path_does_not_take_are_refused_every_time_in_one_process(cli: Any, tmp_path: Path) -> None:
    # Not a warning the library logs once per process: each command line is refused, after a program's use too.
    run = tmp_path / "run"
    _run_of_two(run)
    tp.latest_checkpoint(str(run), tp.CheckpointOptions(storage_options={"key": "x"}, backend="bundle"))
    for backend in ([], [], ["--backend", "bundle"], ["--backend", "bundle"], ["--backend", "zarr"]):
        done = cli("ls", str(run), *backend, "-o", "key=x")
        assert done.returncode == 2, (backend, done.stderr)
        assert "BackendOptionError: -o key: the " in done.stderr.splitlines()[-1]


@pytest.mark.parametrize("setup", ["disable", "level", "filter"])
def test_options_a_local_path_does_not_take_are_refused_whatever_the_logging_configuration(
    cli: Any, tmp_path: Path, setup: str
) -> None:
    import logging

    run = tmp_path / "run"
    _run_of_two(run)
    logger = logging.getLogger("trackpoint")
    level, filters = logger.level, list(logger.filters)
    try:
        if setup == "disable":
            logging.disable(logging.WARNING)
        elif setup == "level":
            logger.setLevel(logging.ERROR)
        else:
            logger.addFilter(lambda record: False)
        done = cli("ls", str(run), "-o", "secret=s")
    finally:
        logging.disable(logging.NOTSET)
        logger.setLevel(level)
        logger.filters[:] = filters
    assert done.returncode == 2, done.stderr
    assert "BackendOptionError: -o secret:" in done.stderr


@pytest.mark.parametrize(
    "path",
    ["zarr+file://{run}", "{run}/ckpt-1", "memory://nothing/run"],
)
def test_a_local_url_takes_no_storage_options(cli: Any, tmp_path: Path, path: str) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    done = cli("ls", path.format(run=run), "-o", "key=x")
    assert done.returncode == 2, done.stderr
    assert "BackendOptionError: -o key: the " in done.stderr


def test_a_flat_file_takes_no_options(cli: Any, tmp_path: Path) -> None:
    # Read without a backend: no library warning would say the options go unused.
    npz = tmp_path / "f.npz"
    np.savez(npz, w=np.arange(3.0))
    for command in (["inspect", str(npz)], ["diff", str(npz), str(npz)]):
        done = cli(*command, "-o", "key=x")
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.splitlines()[-1] == (
            f"trackpoint {command[0]}: error: BackendOptionError: -o key: {str(npz)!r} is a .npz file, read and "
            "written on the local disk without a backend: it takes no storage options; drop -o key"
        )


def test_convert_names_the_destinations_flags(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    for flag, kind in (("--dst-storage-option", "storage"), ("--dst-backend-option", "backend")):
        out = tmp_path / f"out-{kind}" / "ckpt"
        key = "key" if kind == "storage" else "retries"
        done = cli("convert", str(run / "ckpt-1"), str(out), flag, f"{key}=3")
        assert done.returncode == 2, done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"trackpoint convert: error: BackendOptionError: {flag} {key}: the "), last
        assert last.endswith(f"or drop {flag} {key}")
        assert "--backend-option" not in last.replace("--dst-backend-option", "") and " -o " not in last
        assert not out.parent.exists()


@pytest.mark.parametrize("backend", [[], ["--dst-backend", "bundle"]])
def test_a_zarr_option_for_a_bundle_destination_is_refused(cli: Any, tmp_path: Path, backend: list[str]) -> None:
    # The bundle would be written uncompressed: the compression asked for would silently not happen.
    run = tmp_path / "run"
    _run_of_two(run)
    out = tmp_path / "out" / "ckpt"
    done = cli("convert", str(run / "ckpt-1"), str(out), *backend, "--dst-backend-option", "compressor=zstd")
    assert done.returncode == 2, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("trackpoint convert: error: BackendOptionError: --dst-backend-option compressor: the bundle")
    if not backend:
        assert "add --dst-backend zarr" in last
    assert not out.parent.exists()
    # The same source options, which convert's destination takes when it is a Zarr checkpoint.
    for flags in (["--dst-backend", "zarr", "--dst-backend-option", "compressor=zstd"],
                  ["--dst-backend", "zarr", "--backend-option", "compressor=zstd"]):  # fmt: skip
        done = cli("convert", str(run / "ckpt-1"), str(out), *flags, "--overwrite")
        assert (done.returncode, done.stderr) == (0, ""), flags
    assert (tmp_path / "out" / "ckpt.zarr").is_dir()


def test_a_zarr_value_is_refused_with_zarrs_message(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    for backend in ([], ["--backend", "zarr"]):
        done = cli("ls", str(run), *backend, "--backend-option", "compressor=nonsense")
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1].startswith(
            "trackpoint ls: error: BackendOptionError: --backend-option compressor: zarr: unknown compressor "
            "'nonsense'; choose one of zstd, blosc, gzip, none"
        ), done.stderr


def test_a_zarr_option_without_zarr_installed_says_so(cli: Any, tmp_path: Path, monkeypatch: Any) -> None:
    import importlib.util

    run = tmp_path / "run"
    _run_of_two(run)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else find_spec(name, *a))
    done = cli("ls", str(run), "--backend-option", "compressor=zstd")
    assert done.returncode == 2, done.stderr
    assert "an option of the zarr backend, which is not installed (pip install 'trackpoint[zarr]')" in done.stderr


def test_a_zarr_option_for_a_local_directory_is_taken(cli: Any, tmp_path: Path) -> None:
    # Both formats are at a local directory: a backend option of Zarr's that the command uses is not a mistake
    # there (cleanup's age guard; Zarr's write options are refused where nothing is written).
    run = tmp_path / "run"
    _run_of_two(run)
    done = cli("cleanup", str(run), "--backend-option", "cleanup_min_age=0")
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.s3
def test_options_of_another_path_are_noted_once_for_the_local_one(
    cli: Any, tmp_path: Path, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    run = tmp_path / "run"
    _run_of_two(run)
    remote = f"{s3_bucket}/run/ckpt-1"
    tp.convert(str(run / "ckpt-1"), remote, dst_options=tp.CheckpointOptions(storage_options=s3_storage_options))
    flags = [arg for key, value in s3_storage_options.items() for arg in ("-o", f"{key}={value}")]
    for _ in range(2):  # said each time, not once per process
        done = cli("diff", str(run / "ckpt-1"), remote, *flags)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("trackpoint diff: -o ") and f"not used for {str(run / 'ckpt-1')!r}: " in lines[0]


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
