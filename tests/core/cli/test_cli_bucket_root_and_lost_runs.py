"""A bucket's root as a run, object-store runs whose indexes are gone, and options no command path uses.

- ``verify`` and ``inspect`` of ``s3://bucket`` holding checkpoints reported it DAMAGED (exit 1) or failed
  (exit 2): the probe of ``s3://bucket`` as a checkpoint prefix read ``s3://bucket.index``, which the store
  refused as a bucket-only path instead of answering "not found", so the directory was never looked at.
- ``verify --latest-good`` took data files of several checkpoints without an index on an object store (a run
  whose indexes and state file were deleted) for the leftovers of interrupted first saves: a first start
  (exit 3) that advised cleanup, where earlier saves had committed (a lost run, exit 1).
- The warning of options a local path takes none of is on the ``trackpoint.options`` logger, which the CLI drops
  by that name (it said so itself before the command ran).
- Zarr's options tune writes: a command that writes no checkpoint refuses them, as a convert source does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
import trackpoint.plugins
from trackpoint.cli._app import EXIT_DIFFERENT, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE


def _flags(options: dict[str, Any]) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _saves(directory: str, count: int, options: tp.CheckpointOptions, *, keep: int | None = None) -> str:
    ckpt = tp.Checkpoint(v=tp.Variable(np.arange(4.0)))
    manager = tp.CheckpointManager(ckpt, directory, max_to_keep=keep, options=options)
    saved = ""
    for _ in range(count):
        saved = str(manager.save())
    return saved


def _delete(paths: list[str], options: tp.CheckpointOptions) -> None:
    backend = trackpoint.plugins.open_backend(paths[0], options)
    try:
        for path in paths:
            backend.delete_file(path)
    finally:
        backend.close()


# ------------------------------------------------------------------ a bucket's root holding checkpoints
@pytest.mark.s3
def test_a_bucket_root_holding_checkpoints_verifies_and_inspects(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    newest = _saves(s3_bucket, 2, options)
    assert newest == f"{s3_bucket}/ckpt-2"
    flags = _flags(s3_storage_options)
    for root in (s3_bucket, f"{s3_bucket}/"):
        for quick in ([], ["--quick"]):
            verified = cli("verify", *quick, root, *flags)
            assert verified.returncode == EXIT_OK, verified.stdout + verified.stderr
            assert verified.stdout.splitlines()[0].split()[:2] == ["OK", newest]
        inspected = cli("inspect", root, *flags)
        assert inspected.returncode == EXIT_OK, inspected.stderr
        assert inspected.stdout.splitlines()[-1].endswith(f"in {newest}")
    latest = cli("verify", "--latest-good", s3_bucket, *flags)
    assert (latest.returncode, latest.stdout) == (EXIT_OK, f"{newest}\n")
    tree = tp.load_tree(s3_bucket, options=options)
    np.testing.assert_array_equal(tree["v"], np.arange(4.0))


# ------------------------------------------------------------------ lost run or first start
@pytest.mark.s3
@pytest.mark.parametrize("where", ["", "/run"])
def test_an_object_store_run_whose_indexes_and_state_are_gone_is_a_lost_run(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any], where: str
) -> None:
    directory = f"{s3_bucket}{where}"
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    _saves(directory, 2, options)
    _delete([f"{directory}/ckpt-1.index", f"{directory}/ckpt-2.index", f"{directory}/checkpoint"], options)
    verified = cli("verify", "--latest-good", directory, *_flags(s3_storage_options))
    assert verified.returncode == EXIT_DIFFERENT, verified.stderr
    assert verified.stdout == ""
    assert "never committed" not in verified.stderr and "cleanup" not in verified.stderr
    assert verified.stderr.splitlines()[-1] == f"trackpoint verify: no intact checkpoint in {directory}"


@pytest.mark.s3
def test_the_data_of_a_later_checkpoint_alone_is_a_lost_run(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    # max_to_keep=1 deleted ckpt-1 whole; ckpt-2's index and the state file are gone: ckpt-2 was no first save.
    directory = f"{s3_bucket}/run"
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    _saves(directory, 2, options, keep=1)
    _delete([f"{directory}/ckpt-2.index", f"{directory}/checkpoint"], options)
    verified = cli("verify", "--latest-good", directory, *_flags(s3_storage_options))
    assert verified.returncode == EXIT_DIFFERENT, verified.stderr


@pytest.mark.s3
def test_the_data_of_a_first_checkpoint_alone_may_never_have_committed(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    directory = f"{s3_bucket}/run"
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    _saves(directory, 1, options)
    _delete([f"{directory}/ckpt-1.index", f"{directory}/checkpoint"], options)
    verified = cli("verify", "--latest-good", directory, *_flags(s3_storage_options))
    assert verified.returncode == EXIT_NOT_FOUND, verified.stderr
    assert verified.stderr.splitlines()[-1].startswith(
        f"trackpoint verify: {directory} holds leftovers of an interrupted save, which may never have committed: "
    )


def test_a_local_save_killed_in_its_commit_never_committed(cli: Any, tmp_path: Path) -> None:
    # Data at final names beside the index-to-be in ckpt-1_temp: that save surely never committed.
    from trackpoint.storage import ShardSpec, WriteItem

    prefix = str(tmp_path / "ckpt-1")
    backend = trackpoint.plugins.open_backend(prefix, tp.CheckpointOptions())
    try:
        backend.begin(prefix, "killed")
        backend.write_shard(prefix, ShardSpec(0, 1, "killed"), [WriteItem("x", np.zeros(3))])
    finally:
        backend.close()
    staging = tmp_path / "ckpt-1_temp"
    data = next(p for p in staging.iterdir() if ".data-" in p.name)
    data.rename(tmp_path / "ckpt-1.data-00000-of-00001")
    verified = cli("verify", "--latest-good", str(tmp_path))
    assert verified.returncode == EXIT_NOT_FOUND, verified.stderr
    assert ", which never committed: " in verified.stderr


# ------------------------------------------------------------------ the unused-options warning
def test_the_unused_options_warning_is_on_its_own_logger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = tp.CheckpointOptions(storage_options={"key": "x"})
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        tp.latest_checkpoint(str(tmp_path / "run"), options=options)
    said = [r for r in caplog.records if "storage_options ['key'] were given for" in r.getMessage()]
    assert said and {r.name for r in said} == {"trackpoint.options"}


def test_the_cli_drops_the_unused_options_warning_of_a_taken_option(cli: Any, tmp_path: Path) -> None:
    # cleanup takes Zarr's cleanup_min_age; the bundle backend, tried at the local path too, warns that it takes
    # no backend options, which the command line does not repeat.
    run = str(tmp_path / "run")
    _saves(run, 1, tp.CheckpointOptions())
    done = cli("cleanup", run, "--backend-option", "cleanup_min_age=0")
    assert (done.returncode, done.stderr) == (EXIT_OK, "")


# ------------------------------------------------------------------ Zarr's write options where nothing is written
@pytest.mark.parametrize(
    ("command", "target", "option"),
    [
        ("ls", "run", "compressor=zstd"),
        ("ls", "run", "checksum=false"),
        ("verify", "run/ckpt-1", "chunk_bytes=1000"),
        ("inspect", "run/ckpt-1", "pack_bytes=0"),
        ("cleanup", "run", "compressor=zstd"),
    ],
)
def test_zarr_write_options_for_a_command_that_writes_nothing_are_refused(
    cli: Any, tmp_path: Path, command: str, target: str, option: str
) -> None:
    _saves(str(tmp_path / "run"), 1, tp.CheckpointOptions())
    path = str(tmp_path / target)
    key = option.split("=")[0]
    done = cli(command, path, "--backend-option", option)
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"trackpoint {command}: error: BackendOptionError: --backend-option {key} ({path!r}): trackpoint {command} "
        f"writes no checkpoint, and the zarr backend's backend options tune only writes; drop --backend-option {key}"
    )


def test_zarr_write_options_for_a_diff_of_local_checkpoints_are_refused(cli: Any, tmp_path: Path) -> None:
    _saves(str(tmp_path / "run"), 2, tp.CheckpointOptions())
    done = cli(
        "diff", str(tmp_path / "run/ckpt-1"), str(tmp_path / "run/ckpt-2"), "--backend-option", "compressor=gzip"
    )
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    assert "trackpoint diff writes no checkpoint" in done.stderr
