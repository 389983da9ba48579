"""The command line on input it must refuse cleanly: crafted files, wrong options, paths a shell must quote.

Every case here is one a user met: a one-line error of trackpoint's hierarchy and the exit status docs/cli.md
gives, never a traceback; hints that can be pasted into a shell; and listings that tell a checkpoint deleted
meanwhile from a damaged one.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend
from trackpoint.errors import CheckpointNotFoundError
from trackpoint.storage import ShardSpec, WriteItem


def _run_of_two(directory: Path, backend: str | None = None, count: int = 2) -> list[str]:
    """``count`` checkpoints saved by a manager in ``directory`` (on ``backend``); their prefixes."""
    checkpoint = tp.Checkpoint(v=tp.Variable(np.arange(3, dtype=np.float32)))
    options = tp.CheckpointOptions(backend=backend) if backend else None
    manager = tp.CheckpointManager(checkpoint, str(directory), max_to_keep=5, options=options)
    return [manager.save() for _ in range(count)]


def _commands(text: str) -> list[list[str]]:
    """The commands a message tells to run (between backticks), split as a POSIX shell splits them."""
    return [shlex.split(command) for command in re.findall(r"`(trackpoint [^`]*)`", text)]


# ------------------------------------------------------------------ crafted files
def _crafted(path: Path) -> str:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": ["a", 8]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    return str(path)


def test_a_crafted_safetensors_header_is_one_line_and_the_documented_status(tmp_path: Path) -> None:
    """The user's reproduction, run as the user ran it: no traceback, status 4 (verify: 1, damaged)."""
    bad = _crafted(tmp_path / "bad.safetensors")
    done = subprocess.run(
        [sys.executable, "-m", "trackpoint", "diff", bad, bad], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr.splitlines() == [
        f"trackpoint diff: DataLossError: {bad!r} is not a valid safetensors file: tensor 'w' has data_offsets "
        '["a", 8], not a list of two integers; the file is damaged or is no safetensors file: use an intact copy '
        "(or export it again from its checkpoint)"
    ]


def test_every_command_reports_a_crafted_file_by_name(tmp_path: Path, cli: Any) -> None:
    bad = _crafted(tmp_path / "bad.safetensors")
    inspected = cli("inspect", bad)
    assert inspected.returncode == 4 and "Traceback" not in inspected.stderr
    assert inspected.stderr.startswith(f"trackpoint inspect: DataLossError: {bad!r} is not a valid safetensors file")
    verified = cli("verify", bad)
    assert verified.returncode == 1 and verified.stdout.startswith(f"DAMAGED  {bad}\n")
    assert "tensor 'w' has data_offsets" in verified.stdout
    converted = cli("convert", bad, str(tmp_path / "out" / "ckpt-1"))
    assert converted.returncode == 4 and "tensor 'w' has data_offsets" in converted.stderr
    npz = tmp_path / "bad.npz"
    np.savez(npz, w=np.ones(2), __trackpoint_metadata__=np.frombuffer(b'{"trackpoint.ml_dtypes": "[1,2]"}', np.uint8))
    listed = cli("inspect", str(npz))
    assert listed.returncode == 4 and listed.stderr.startswith(
        f"trackpoint inspect: DataLossError: {str(npz)!r}: the metadata entry 'trackpoint.ml_dtypes' of "
        "'__trackpoint_metadata__' is [1, 2], not a JSON object"
    )


# ------------------------------------------------------------------ exit status 2: the command line is wrong
def test_a_misspelt_storage_option_is_a_usage_error(cli: Any) -> None:
    result = cli("ls", "s3://bucket/run", "-o", "endpointurl=http://127.0.0.1:1")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: trackpoint ls ")
    assert result.stderr.splitlines()[-1].startswith("trackpoint ls: error: BackendOptionError: s3: ")
    assert "'endpointurl'" in result.stderr
    assert "'endpoint_url'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ls", "s3://bucket/run", "--backend", "memory"), "memory backend cannot store 's3://bucket/run'"),
        (("ls", "gs://bucket/run", "--backend", "s3"), "s3 cannot address 'gs://bucket/run'"),
        (("inspect", "memory://b/run/ckpt-1", "--backend", "s3"), "s3 cannot address 'memory://b/run/ckpt-1"),
    ],
)
def test_a_backend_that_does_not_serve_the_url_is_a_usage_error(cli: Any, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"usage: trackpoint {args[0]} ")
    assert message in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("backend", ["s3", "gcs"])
def test_an_object_store_backend_for_a_local_path_is_a_usage_error_in_the_flags_terms(
    tmp_path: Path, cli: Any, backend: str
) -> None:
    """``--backend s3 run`` took ``run`` for a bucket; now refused, and the advice names the flag, not the API."""
    result = cli("ls", "run", "--backend", backend)
    assert (result.returncode, result.stdout) == (2, "")
    last = result.stderr.splitlines()[-1]
    assert "cannot address 'run': it has no scheme (a local path, or bucket/key)" in last
    assert "leave --backend unset for the local disk" in last and "CheckpointOptions" not in last


def test_convert_onto_its_own_source_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    prefixes = _run_of_two(tmp_path / "run")
    for args in (
        (prefixes[0], prefixes[0], "--overwrite"),
        (prefixes[0], prefixes[0]),
        (str(tmp_path / "run"), prefixes[1], "--overwrite"),  # a directory means its latest checkpoint
    ):
        result = cli("convert", *args)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert result.stderr.splitlines()[-1].startswith("trackpoint convert: error: convert: source ")
    # A destination in the way is not the source: --overwrite replaces it, so that is no usage error.
    other = cli("convert", prefixes[0], prefixes[1])
    assert other.returncode == 4 and "pass --overwrite to replace it" in other.stderr
    assert cli("convert", prefixes[0], prefixes[1], "--overwrite").returncode == 0


def test_convert_to_a_device_a_directory_or_a_file_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    """``trackpoint convert run /dev/null`` wrote ``/dev/null.index``; a directory got its checkpoint beside it."""
    prefix = _run_of_two(tmp_path / "run", count=1)[0]
    (tmp_path / "null").symlink_to("/dev/null")  # /dev/null itself, without writing into /dev on old code
    (tmp_path / "backup").mkdir()
    (tmp_path / "notes.txt").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    for dst, message in (
        ("null", "it is a character device, not a checkpoint prefix"),
        ("backup", f"pass a prefix inside it, such as '{tmp_path}/backup/ckpt-1'"),
        ("backup/", f"such as '{tmp_path}/backup/ckpt-1'"),
        ("notes.txt", "it is an existing file that holds no checkpoint"),
    ):
        result = cli("convert", prefix, f"{tmp_path}/{dst}", "--overwrite")
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr.startswith("usage: trackpoint convert ")
        assert message in result.stderr.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert cli("convert", prefix, f"{tmp_path}/backup/ckpt-1").returncode == 0


def test_an_empty_separator_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    np.savez(tmp_path / "w.npz", w=np.ones(2))
    result = cli("convert", str(tmp_path / "w.npz"), str(tmp_path / "out" / "ckpt-1"), "--separator", "")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1].startswith("trackpoint convert: error: --separator must not be empty")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("age", ["nan", "inf", "-inf", "-1"])
def test_cleanup_refuses_an_age_guard_that_is_no_number_of_seconds(tmp_path: Path, cli: Any, age: str) -> None:
    result = cli("cleanup", str(tmp_path), f"--min-age={age}")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        f"trackpoint cleanup: error: --min-age must be a number of seconds >= 0, got {float(age)}"
    )


def test_a_file_url_of_another_host_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    result = cli("ls", f"file://server{tmp_path}")
    assert (result.returncode, result.stdout) == (2, "")
    assert f"InvalidPathError: path 'file://server{tmp_path}' names the host 'server'" in result.stderr
    _run_of_two(tmp_path / "run")
    local = cli("ls", f"file://localhost{tmp_path}/run")
    assert local.returncode == 0 and [line.split()[0] for line in local.stdout.splitlines()[1:]] == [
        "ckpt-1",
        "ckpt-2",
    ]


# ------------------------------------------------------------------ ls while a manager deletes
def test_ls_leaves_out_a_checkpoint_deleted_after_it_was_listed(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefixes = _run_of_two(tmp_path / "run", count=4)
    listed = BundleBackend.list_checkpoints
    doomed: list[str] = []

    def then_deleted(self: BundleBackend, directory: str) -> list[str]:
        found = listed(self, directory)
        while doomed:  # as a CheckpointManager keeping max_to_keep does, between this listing and the reads
            self.delete(doomed.pop())
        return found

    monkeypatch.setattr(BundleBackend, "list_checkpoints", then_deleted)
    doomed.append(prefixes[0])
    result = cli("ls", str(tmp_path / "run"))
    assert (result.returncode, result.stderr) == (0, "")
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["ckpt-2", "ckpt-3", "ckpt-4"]
    doomed.append(prefixes[1])
    data = json.loads(cli("ls", str(tmp_path / "run"), "--json").stdout)
    assert data["ok"] and [c["prefix"] for c in data["checkpoints"]] == prefixes[2:]
    doomed.append(prefixes[2])
    verbose = cli("ls", str(tmp_path / "run"), "-v")
    assert verbose.returncode == 0 and [line.split()[0] for line in verbose.stdout.splitlines()[1:]] == ["ckpt-4"]
    assert verbose.stderr == (
        "trackpoint ls: left out 1 checkpoint deleted while being listed (by another process, such as a "
        f"CheckpointManager removing old ones): {prefixes[2]}\n"
    )


def test_ls_reports_a_committed_checkpoint_a_file_of_which_is_missing_as_damaged(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefixes = _run_of_two(tmp_path / "run")
    opened = BundleBackend.open_reader

    def missing_a_file(self: BundleBackend, prefix: str) -> Any:
        if prefix == prefixes[0]:  # its commit point (the index) is still there
            raise CheckpointNotFoundError(f"bundle: a file of {prefix!r} does not exist")
        return opened(self, prefix)

    monkeypatch.setattr(BundleBackend, "open_reader", missing_a_file)
    result = cli("ls", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "damaged: CheckpointNotFoundError: bundle: a file of" in result.stdout.splitlines()[1]
    assert "(1 damaged)" in result.stderr
    data = json.loads(cli("ls", str(tmp_path / "run"), "--json").stdout)
    assert [c["status"] for c in data["checkpoints"]] == ["damaged", "ok"]


def test_ls_does_not_read_data_files_and_verify_does(tmp_path: Path, cli: Any) -> None:
    """What docs/cli.md says ls checks: each checkpoint's table of contents, not its data."""
    prefixes = _run_of_two(tmp_path / "run")
    Path(f"{prefixes[0]}.data-00000-of-00001").unlink()
    assert cli("ls", str(tmp_path / "run")).returncode == 0
    assert cli("verify", prefixes[0]).returncode == 1
    page = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = page.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    assert "`ls`: a listed checkpoint is damaged" not in table
    assert "reads no tensor data" in page.split("## ls and cleanup", 1)[1].split("\n## ", 1)[0]


# ------------------------------------------------------------------ hints a shell can take
def test_hints_quote_paths_for_a_shell(tmp_path: Path, cli: Any) -> None:
    directory = tmp_path / "my rün $HOME"
    prefixes = _run_of_two(directory)
    Path(f"{prefixes[0]}.index").write_bytes(b"short")
    listing = cli("ls", str(directory))
    assert listing.returncode == 1
    assert _commands(listing.stderr) == [["trackpoint", "verify", prefixes[0]]]
    index = cli("ls", f"{prefixes[1]}.index")
    assert index.returncode == 3
    assert _commands(index.stderr) == [["trackpoint", "ls", str(directory)], ["trackpoint", "inspect", prefixes[1]]]
    key = cli("inspect", prefixes[1], "--key", "nosuch")
    assert key.returncode == 3 and _commands(key.stderr) == [["trackpoint", "inspect", prefixes[1]]]
    from safetensors.numpy import save_file

    foreign = str(directory / "foreign weights.safetensors")
    save_file({"w": np.ones(2, np.float32)}, foreign)
    note = cli("verify", foreign)
    assert note.returncode == 5
    assert shlex.split(note.stdout.splitlines()[1].rsplit(": ", 1)[1]) == ["trackpoint", "diff", "SOURCE", foreign]


# ------------------------------------------------------------------ a Zarr checkpoint's own directory
def test_a_zarr_checkpoints_directory_is_answered_with_its_prefix(tmp_path: Path, cli: Any) -> None:
    prefix = _run_of_two(tmp_path / "z run", backend="zarr")[0]
    stored = f"{prefix}.zarr"
    assert Path(stored).is_dir()
    quoted = shlex.quote(prefix)
    for command in ("ls", "cleanup"):
        for given in (stored, stored + "/"):
            result = cli(command, given)
            assert (result.returncode, result.stdout) == (3, ""), (command, given)
            assert result.stderr == (
                f"trackpoint {command}: CheckpointNotFoundError: {given!r} is the directory the zarr backend stores "
                f"the checkpoint {prefix!r} in, not a directory of checkpoints: `trackpoint {command} "
                f"{shlex.quote(str(tmp_path / 'z run'))}` works on the directory that holds it (`trackpoint inspect "
                f"{quoted}` lists its tensors)\n"
            )
    hint = (
        f"no checkpoint at {stored!r}: it is the directory the zarr backend stores the checkpoint {prefix!r} in; "
        f"pass that prefix, without the '.zarr' suffix (`trackpoint inspect {quoted}` lists its tensors)"
    )
    inspected = cli("inspect", stored)
    assert (inspected.returncode, inspected.stderr) == (3, f"trackpoint inspect: CheckpointNotFoundError: {hint}\n")
    verified = cli("verify", stored)
    assert verified.returncode == 1
    assert verified.stdout.splitlines()[:2] == [
        f"MISSING  {stored}",
        f"  (checkpoint): CheckpointNotFoundError: {hint}",
    ]
    compared = cli("diff", prefix, stored)
    assert (compared.returncode, compared.stderr) == (3, f"trackpoint diff: CheckpointNotFoundError: {hint}\n")
    copied = cli("convert", stored, str(tmp_path / "out.npz"))
    assert (copied.returncode, copied.stderr) == (3, f"trackpoint convert: CheckpointNotFoundError: {hint}\n")
    # The prefix itself is a checkpoint, and its directory lists it.
    assert cli("inspect", prefix).returncode == 0
    assert cli("ls", str(tmp_path / "z run")).returncode == 0


# ------------------------------------------------------------------ cleanup and the age guard
def test_cleanup_says_which_leftovers_the_age_guard_kept(tmp_path: Path, cli: Any) -> None:
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).save(str(tmp_path / "ckpt"))
    backend = tp.plugins.open_backend(str(tmp_path / "ckpt-9"))
    backend.begin(str(tmp_path / "ckpt-9"), "crashed")
    backend.write_shard(str(tmp_path / "ckpt-9"), ShardSpec(0, 1, "crashed"), [WriteItem("x", np.zeros(3))])
    leftovers = json.loads(cli("ls", "--all", str(tmp_path), "--json").stdout)["leftovers"]
    assert len(leftovers) > 1  # the staging directory and the files in it: one interrupted save
    kept = cli("cleanup", str(tmp_path))
    assert (kept.returncode, kept.stderr) == (0, "")
    assert kept.stdout == (
        f"nothing removed in {tmp_path}: 1 leftover is younger than the age guard (10 min); --min-age 0 "
        "removes it if no save is running\n"
    )
    hour = cli("cleanup", str(tmp_path), "--min-age", "3600")
    assert "younger than the age guard (1 h)" in hour.stdout
    data = json.loads(cli("cleanup", str(tmp_path), "--json").stdout)
    assert data == {"directory": str(tmp_path), "removed": [], "kept": leftovers}
    removed = cli("cleanup", str(tmp_path), "--min-age", "0")
    assert removed.stdout.splitlines() == ["removed 1 leftover:", f"  {tmp_path / 'ckpt-9_temp'}  (2 files in it)"]
    assert cli("cleanup", str(tmp_path)).stdout == f"nothing to remove in {tmp_path}\n"


def test_cleanup_prints_what_it_removed_even_if_listing_what_it_kept_fails(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).save(str(tmp_path / "ckpt"))
    backend = tp.plugins.open_backend(str(tmp_path / "ckpt-9"))
    backend.begin(str(tmp_path / "ckpt-9"), "crashed")
    backend.write_shard(str(tmp_path / "ckpt-9"), ShardSpec(0, 1, "crashed"), [WriteItem("x", np.zeros(3))])
    leftovers = backend.leftovers(str(tmp_path))
    assert leftovers

    def unavailable(self: Any, directory: str) -> list[str]:
        raise tp.TransientStorageError("503 SlowDown")

    monkeypatch.setattr(BundleBackend, "leftovers", unavailable)
    removed = cli("cleanup", str(tmp_path), "--min-age", "0")
    assert (removed.returncode, removed.stderr) == (0, "")
    assert removed.stdout.splitlines()[0] == "removed 1 leftover:"


def test_a_backend_failing_on_a_url_it_serves_is_a_failure_not_a_usage_error(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The azure plugin without credentials: its refusal is about the store, whatever the environment chose
    # for other URLs and whatever the destination file is.
    if "azure" not in {row.name for row in tp.plugins.list_backends() if row.available}:
        pytest.skip("the azure plugin is not installed")
    for name in ("CONNECTION_STRING", "ACCOUNT_NAME", "ACCOUNT", "ACCOUNT_KEY", "KEY", "SAS_TOKEN"):
        monkeypatch.delenv(f"AZURE_STORAGE_{name}", raising=False)
    monkeypatch.setenv("TRACKPOINT_BACKEND", "zarr")
    tp.plugins.reset()
    failed = cli("convert", "--backend", "azure", "az://c/run/ckpt-1", str(tmp_path / "out.safetensors"))
    assert failed.returncode == 4, failed.stderr
    assert "no storage account" in failed.stderr


def test_with_json_a_failure_is_json_on_stdout_too(tmp_path: Path, cli: Any) -> None:
    # A script reading --json output reads one stream: a failure there, not only on stderr.
    missing = cli("inspect", str(tmp_path / "ckpt-1"), "--json")
    assert missing.returncode == 3 and "no checkpoint at" in missing.stderr
    error = json.loads(missing.stdout)["error"]
    assert (error["type"], error["status"]) == ("CheckpointNotFoundError", 3)
    assert error["message"].startswith(f"no checkpoint at {str(tmp_path / 'ckpt-1')!r}")
    usage = cli("cleanup", str(tmp_path), "--min-age", "nan", "--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"]["status"] == 2
    assert cli("inspect", str(tmp_path / "ckpt-1")).stdout == ""  # without --json, stdout stays empty
