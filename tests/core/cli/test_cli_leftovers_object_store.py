"""Leftovers of an object store's interrupted save: one per save, and no trace of a lost run for verify.

An object store's create-only bundle commit writes the data under final names (``ckpt-2.data-00000-of-00004``)
before the index, with no staging directory. ``ls --all`` and ``cleanup`` counted such a save once per file, and
``verify --latest-good`` took a first save's data files for a checkpoint whose index was lost (exit 1, not 3).
On a local disk, data files at final names without an index or ``_temp`` are still a lost run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import trackpoint as tp
import trackpoint.plugins
from trackpoint.cli._app import EXIT_DIFFERENT, EXIT_NOT_FOUND
from trackpoint.storage import ShardSpec, WriteItem


def _flags(options: dict[str, Any]) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _interrupted_save(prefix: str, shards: int, options: tp.CheckpointOptions) -> None:
    """A save of ``prefix`` that wrote ``shards`` shards and was killed before its commit."""
    backend = trackpoint.plugins.open_backend(prefix, options)
    try:
        backend.begin(prefix, "killed")
        for shard in range(shards):
            backend.write_shard(prefix, ShardSpec(shard, shards, "killed"), [WriteItem(f"x{shard}", np.zeros(3))])
    finally:
        backend.close()


def _index_lost(prefix: str, options: tp.CheckpointOptions) -> None:
    """``prefix`` written and its index deleted: what a kill between an object store's data and index leaves."""
    tp.Checkpoint(v=tp.Variable(np.arange(4, dtype=np.float32))).write(prefix, options)
    backend = trackpoint.plugins.open_backend(prefix, options)
    try:
        backend.delete_file(f"{prefix}.index")
    finally:
        backend.close()


def test_an_interrupted_multi_shard_save_is_one_leftover(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    directory = f"{s3_bucket}/run"
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    tp.Checkpoint(v=tp.Variable(np.ones(3, np.float32))).write(f"{directory}/ckpt-1", options)
    _interrupted_save(f"{directory}/ckpt-2", 4, options)
    flags = _flags(s3_storage_options)
    every = json.loads(cli("ls", "--all", "--json", directory, *flags).stdout)["leftovers"]
    assert len(every) > 4 and all(p.startswith(f"{directory}/ckpt-2.") for p in every)  # --json: every path

    listing = cli("ls", "--all", directory, *flags)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[-2:] == [
        "leftovers of crashed saves (1; `trackpoint cleanup` removes old ones):",
        f"  {directory}/ckpt-2.*  ({len(every)} files)",
    ]
    kept = cli("cleanup", directory, *flags)
    assert kept.stdout.splitlines()[-1].startswith(f"nothing removed in {directory}: 1 leftover is younger")
    removed = cli("cleanup", "--min-age", "0", directory, *flags)
    assert removed.stdout.splitlines() == ["removed 1 leftover:", f"  {directory}/ckpt-2.*  ({len(every)} files)"]


def test_a_single_leftover_file_keeps_its_own_path(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    directory = f"{s3_bucket}/run"
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    _index_lost(f"{directory}/ckpt-1", options)
    listing = cli("ls", "--all", directory, *_flags(s3_storage_options))
    assert listing.stdout.splitlines()[-1] == f"  {directory}/ckpt-1.data-00000-of-00001"


def test_a_first_save_killed_on_an_object_store_is_a_first_start(
    cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    flags = _flags(s3_storage_options)
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    for directory, crash in ((f"{s3_bucket}/lost-index", _index_lost), (f"{s3_bucket}/killed", None)):
        if crash is None:
            _interrupted_save(f"{directory}/ckpt-1", 2, options)
        else:
            crash(f"{directory}/ckpt-1", options)
        verified = cli("verify", "--latest-good", directory, *flags)
        assert verified.returncode == EXIT_NOT_FOUND, (directory, verified.stderr)
        assert "leftovers of an interrupted save, which may never have committed" in verified.stderr


def test_a_local_data_file_whose_index_is_gone_stays_a_lost_run(cli: Any, tmp_path: Path) -> None:
    # On a local disk data files get their final names only in a commit whose index waits in ckpt-1_temp:
    # without either, the index of a committed checkpoint was deleted.
    _index_lost(str(tmp_path / "ckpt-1"), tp.CheckpointOptions())
    assert os.listdir(tmp_path) == ["ckpt-1.data-00000-of-00001"]
    verified = cli("verify", "--latest-good", str(tmp_path))
    assert verified.returncode == EXIT_DIFFERENT, verified.stderr


def test_a_local_save_killed_in_its_commit_is_a_first_start(cli: Any, tmp_path: Path) -> None:
    # Killed between the data renames and the index rename: data at final names, the index-to-be in _temp.
    _interrupted_save(str(tmp_path / "ckpt-1"), 1, tp.CheckpointOptions())
    staging = tmp_path / "ckpt-1_temp"
    pieces = sorted(os.listdir(staging))
    data = [p for p in pieces if ".data-" in p]
    os.rename(staging / data[0], tmp_path / "ckpt-1.data-00000-of-00001")
    verified = cli("verify", "--latest-good", str(tmp_path))
    assert verified.returncode == EXIT_NOT_FOUND, verified.stderr
